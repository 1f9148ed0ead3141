"""scripts/bench.py: the benchmark runs, at --quick sizes, and writes the JSON it promises.

Nothing here checks a time: the machine is shared, and the figures belong in BENCHMARKS.md,
not in a pass or a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "bench.py"


def run_bench(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def load_bench_module(section: str):
    """A module of scripts/benchmarks/, loaded as scripts/bench.py loads it."""
    if "benchmarks" not in sys.modules:
        spec = importlib.util.spec_from_file_location("digits_bench", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    return importlib.import_module(f"benchmarks.{section}")


def test_quick_run_writes_every_measured_section_and_goal_as_json(tmp_path):
    out, markdown = tmp_path / "bench.json", tmp_path / "BENCHMARKS.md"
    # Every section in one run: one start-up and one load of each dataset for all of them.
    proc = run_bench("--quick", "--only", "overhead,callbacks,throughput,startup,scale,accuracy,"
                     "predict,deploy", "--out", str(out), "--markdown", str(markdown))
    assert proc.returncode == 0, proc.stderr[-4000:]

    report = json.loads(out.read_text())
    assert report["sections_run"] == ["overhead", "callbacks", "throughput", "startup", "scale",
                                      "accuracy", "predict", "deploy"]
    assert report["machine"]["cores"] >= 1 and report["machine"]["tensorflow"]
    assert report["command"].startswith("python scripts/bench.py --quick")
    assert len(report["load"]["start"]) == 3

    overhead = report["sections"]["overhead"]
    assert set(overhead["contenders"]) == {"A", "B", "C_keras", "C_trainer"}
    for name in ("B/A", "C"):
        assert overhead["ratios"][name]["of_medians"] > 0
    assert overhead["identical_steps_per_execution"]

    callbacks = report["sections"]["callbacks"]["callbacks"]
    assert {"confusion_matrix", "tensorboard", "checkpoint", "plots", "rich_progress"} <= set(callbacks)
    assert callbacks["confusion_matrix"]["share_of_epoch"] >= 0

    startup = report["sections"]["startup"]
    assert startup["help_imports_tensorflow"] is False
    assert 0 < startup["first_step"]["imported"] < startup["first_step"]["first_step"]

    accuracy = report["sections"]["accuracy"]
    assert [r["model"] for r in accuracy["runs"]] == ["seed-cnn", "cnn"]
    assert all(0 <= r["accuracy"] <= 1 and r["test_images"] == 500 for r in accuracy["runs"])

    predict = report["sections"]["predict"]
    assert predict["read"] == predict["command_images"] == 2 * predict["distinct_images"]
    assert 0 < predict["find_ms"] < predict["find_with_decoding_ms"] * 10
    assert set(predict["find_ms_by_kind"]) == {"photo", "number", "board", "scan"}

    goals = {g["goal"]: g for g in report["goals"]}
    assert any(name.startswith("finding the digits") for name in goals)
    assert any(name.startswith("B/A") for name in goals)
    assert any(name.startswith("C:") for name in goals)
    assert "Goals" in proc.stdout and "Overhead ratios" in proc.stdout

    text = markdown.read_text()
    assert "# Benchmarks" in text and report["command"] in text and "### Overhead ratios" in text

    # throughput and scale
    models = report["sections"]["throughput"]["models"]
    assert set(models) == {"cnn"}  # --quick: the default model alone (all three without it)
    for model in models.values():
        assert model["spe_1"]["steps_per_execution"] == 1
        assert model["spe_auto"]["train_images_per_second"] > 0
    # The cnn (the model with BatchNormalization) is timed with Keras' own BN ops too.
    assert models["cnn"]["spe_auto_keras_bn"]["train_images_per_second"] > 0
    assert models["cnn"]["fused_over_keras_bn_train"] > 0
    # ... and in mixed bfloat16; each row's GFLOP/s is held against the CPU's matmul peak.
    assert models["cnn"]["bf16_over_float32_train"] > 0
    peaks = report["sections"]["throughput"]["peaks"]
    assert set(peaks) == {"float32", "bfloat16"} and peaks["float32"]["gflop_per_second"] > 0
    assert 0 < models["cnn"]["spe_auto"]["share_of_peak"] < 2
    assert overhead["contenders"]["B"]["first_epoch_overhead_seconds"] is None  # 1-epoch fits
    assert report["sections"]["throughput"]["threads"][0]["train_images_per_second"] > 0
    assert report["sections"]["throughput"]["gpu"] is None or report["machine"]["gpus"]
    scale = report["sections"]["scale"]
    assert scale["runs"][0]["train_images"] + scale["runs"][0]["val_images"] == 1_000
    assert scale["peak_rss_bytes"] > 0

    # deploy: the fast path exported, checked and served under load; its goals judged
    deploy = report["sections"]["deploy"]
    export = deploy["exports"]["litert int8"]
    assert export["examples"] == 500 and export["exported"]["bytes"] < deploy["source_bytes"]
    assert deploy["fast_path"] == "litert int8" and set(deploy["served"]) == {"litert int8"}
    for served in deploy["served"].values():
        assert served["requests"] > 0 and served["failures"] == 0
        assert 0 < served["p50_ms"] <= served["p99_ms"] and served["alone"]["p99_ms"] > 0
    judged = {g["goal"] for g in report["goals"]}
    assert any("requests/s" in g for g in judged) and any("p99" in g for g in judged)


def test_markdown_keeps_the_hand_written_notes_below_the_marker(tmp_path):
    bench = load_bench_module("report")
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# old tables\n\n{bench.NOTES_MARKER}\n\n## Notes\n\nkept by hand\n")
    report = {
        "command": "python scripts/bench.py --only startup",
        "machine": {"cpu_model": "a CPU", "cores": 2, "usable_cores": 2, "memory_bytes": 2**33,
                    "gpus": [], "python": "3.11", "tensorflow": "2.x", "keras": "3.x",
                    "tf_enable_onednn_opts": "1"},
        "load": {"start": [1.0, 1.0, 1.0], "end": [2.0, 2.0, 2.0]},
        "started": "2026-01-01T00:00:00+00:00", "seconds": 60.0,
    }
    table = bench.Table("Start-up", ("measurement", "median"), [("--help", "0.30 s")], ["a note"])
    bench.write_markdown(path, report, [table])
    text = path.read_text()
    assert "# old tables" not in text
    assert "| --help | 0.30 s |" in text and "a CPU, 2 cores" in text
    assert text.endswith(f"{bench.NOTES_MARKER}\n\n## Notes\n\nkept by hand\n")


def test_an_unknown_section_is_refused_before_anything_runs():
    proc = run_bench("--only", "overhead,speed")
    assert proc.returncode == 2
    assert "unknown section(s) speed" in proc.stderr



def test_the_peer_section_says_what_is_missing_and_measures_nothing(monkeypatch):
    peer = load_bench_module("peer")
    monkeypatch.setattr(peer, "peers_installed", lambda: ["lightning"])
    result = peer.section_peer(bench=None)  # returns before it touches the bench
    assert result["skipped"].startswith("lightning not installed")
    [table] = peer.peer_tables(result)
    assert table.rows == [(f"skipped: {result['skipped']}",)]
