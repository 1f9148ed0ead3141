"""The command lines end to end, as a user runs them: train, then evaluate and predict."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli

CLIS = ["digits.train", "digits.evaluate", "digits.predict", "digits.tune", "digits.export",
        "digits.serve"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short real training through the CLI; later tests use its run directory."""
    logs = tmp_path_factory.mktemp("logs")
    proc = run_cli("digits.train", "--dataset", "mnist-5k", "--epochs", "2", "--hp", "filters=8",
                   "--limit-train-batches", "8", "--log-dir", str(logs), "--name", "story")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return logs / "story" / "version_0", proc


@pytest.mark.parametrize("module", CLIS)
def test_help_answers_without_importing_tensorflow(module):
    import subprocess

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if "|" in line}
    assert not imported & {"tensorflow", "keras", "keras_tuner", "sklearn"}, imported


@pytest.mark.xdist_group("cli-trained")  # its module fixture, made once
def test_train_writes_the_run_and_prints_the_report(trained):
    run, proc = trained
    assert {"model.keras", "config.json", "metrics.json"} <= {p.name for p in run.iterdir()}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and len(metrics["history"]["val_accuracy"]) == 2
    assert 0.0 < metrics["test"]["accuracy"] <= 1.0
    assert f"run directory: {run}" in proc.stdout
    assert re.search(r"precision\s+recall\s+f1-score\s+support", proc.stdout)
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "mnist-5k" and config["hyperparameters"] == {"filters": 8}


@pytest.mark.xdist_group("cli-trained")  # its module fixture, made once
def test_evaluate_reports_on_the_official_test_set(trained, official_test_dir):
    run, _ = trained
    proc = run_cli("digits.evaluate", "--model", str(run / "model.keras"), "--dataset",
                   str(official_test_dir), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["examples"] == 10000
    assert np.array(report["confusion_matrix"]).sum(axis=1).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert report["report"]["7"]["support"] == 1028
    plain = run_cli("digits.evaluate", "--model", str(run / "model.keras"), "--dataset", "mnist-5k")
    assert plain.returncode == 0 and "accuracy" in plain.stdout and "\x1b[" not in plain.stdout


@pytest.mark.xdist_group("cli-trained")  # its module fixture, made once
def test_predict_reads_users_images_of_any_size_and_polarity(trained, tmp_path, mnist5k):
    from PIL import Image

    run, _ = trained
    paths = []
    for i in range(3):
        digit = (mnist5k.test.x[i, ..., 0] * 255).astype(np.uint8)
        big = Image.fromarray(255 - digit).resize((140, 200))  # dark ink on white paper
        path = tmp_path / f"digit{i}.{['png', 'jpg', 'bmp'][i]}"
        big.convert("RGB").save(path)
        paths.append(str(path))
    proc = run_cli("digits.predict", "--model", str(run / "model.keras"), "--json", *paths)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert [r["image"] for r in rows] == paths
    for row in rows:
        assert row["text"] == str(row["digit"]) and len(row["digits"]) == 1
        assert 0 <= row["digit"] <= 9 and len(row["top3"]) == 3
        assert row["top3"][0]["probability"] >= row["top3"][1]["probability"]
    plain = run_cli("digits.predict", "--model", str(run / "model.keras"), paths[0])
    # "seven.png: 7  (97%)", or with an uncertain reading "seven.png: ?  (41% for 7)"
    assert re.fullmatch(rf"{re.escape(paths[0])}: (\d  \(\d+%|\?  \(\d+% for \d)\)\n", plain.stdout)


def test_config_file_keys_mirror_flags_and_flags_win(tmp_path):
    from digits.cli import parse_with_config
    from digits.train import build_parser

    config = tmp_path / "run.toml"
    config.write_text('epochs = 7\nbatch-size = 64\nmodel = "mlp"\ncallbacks = ["early_stopping"]\n')
    args = parse_with_config(build_parser(), ["--config", str(config), "--epochs", "3"])
    assert (args.epochs, args.batch_size, args.model, args.callbacks) == (3, 64, "mlp", ["early_stopping"])


@pytest.mark.parametrize("content, message", [
    ("epochs = 'ten'", "epochs"),
    ("epochz = 3", "unknown key 'epochz'"),
    ("epochs = 2.5", "whole number"),
    ("deterministic = 1", "true or false"),
    ("[[broken", "invalid TOML"),
])
def test_bad_config_files_are_one_error_line(tmp_path, content, message):
    config = tmp_path / "bad.toml"
    config.write_text(content)
    proc = run_cli("digits.train", "--config", str(config), "--log-dir", str(tmp_path / "logs"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists()



def test_import_digits_turns_onednn_on_unless_the_user_chose():
    import os
    import platform
    import subprocess

    probe = "import os, digits; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    chosen = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert chosen == ("1" if x86 else "None")
    given = subprocess.run([sys.executable, "-c", probe], env={**env, "TF_ENABLE_ONEDNN_OPTS": "0"},
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert given == "0"
