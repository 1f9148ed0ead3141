"""`python -m digits.tune` end to end, on the embedded digits, as a user runs it.

A tiny random search (3 trials of 2 epochs on a few batches) writes keras-tuner's records, one
digits run per trial with its HParams session and confusion-matrix images, the best
hyperparameters, and a retrained, tested best model; running the same command again redoes
nothing. A Hyperband search continues trials from their best epoch, and a search killed in the
middle of a trial resumes that trial from its last finished epoch. Failing trials are recorded
with their reason; too many in a row stop the search. Bad input is one error line and exit 2.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digits.callbacks.base import Callback
from digits.tuner.space import SEARCH_SPACE
from tests.conftest import ROOT, run_cli

# Real data, tiny work: a few batches per epoch, a small pinned architecture, few callbacks.
# One trial at a time: these check what a single process prints and keeps.
TINY = ["--final-ensemble", "1", "--parallel-trials", "1",
        "--dataset", "mnist-5k", "--limit-train-batches", "3", "--limit-val-batches", "1",
        "--hp", "filters=8", "--hp", "dense_units=32", "--no-default-callbacks",
        "--callbacks", "tensorboard,confusion_matrix,nan_guard,rich_summary,rich_report"]
SPACE = {"conv_blocks", "filters", "kernel_size", "convs_per_block", "batch_norm", "dropout",
         "dense_units", "dense_dropout", "augment", "optimizer", "learning_rate"}


class HoldsOnce(Callback):
    """Before epoch `at_epoch` (1-based), writes `marker` and waits there (up to two minutes)
    to be killed; once `marker` exists it does nothing. A 3-batch epoch is over faster than a
    test can be sure to poll for it."""

    def __init__(self, marker: str, at_epoch: int = 3) -> None:
        super().__init__()
        self.marker, self.at_epoch = Path(marker), at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.at_epoch and not self.marker.exists():
            self.marker.write_text("holding")
            time.sleep(120)


def trials(project: Path) -> dict[str, dict]:
    """keras-tuner's own trial records, by trial id."""
    found = {}
    for path in sorted(project.glob("trial_*/trial.json")):
        record = json.loads(path.read_text())
        found[record["trial_id"]] = record
    return found


def runs(project: Path, trial_id: str) -> list[Path]:
    return sorted((project / f"trial_{trial_id}").glob("execution_*/version_*"))


def event_tags(directory: Path) -> tuple[dict, object]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator.Tags(), accumulator


def hparams_session(run: Path):
    """The HParams session start info written into a run directory (None when absent)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    tags, accumulator = event_tags(run)
    if "_hparams_/session_start_info" not in tags["tensors"]:
        return None
    content = accumulator.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    return plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info


def hparam_value(value):
    kind = value.WhichOneof("kind")
    return getattr(value, kind)


# ----------------------------------------------------------------------------- the story


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A 3-trial random search, retrained for 1 epoch, then the same command again."""
    directory = tmp_path_factory.mktemp("tune")
    argv = ["digits.tune", *TINY, "--tuner", "random", "--max-trials", "3", "--max-epochs", "2",
            "--final-epochs", "1", "--directory", str(directory), "--project", "story"]
    first = run_cli(*argv)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = run_cli(*argv)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return directory / "story", first, second, argv


@pytest.mark.slow
@pytest.mark.xdist_group("tune-search")  # its module fixture, made once
def test_three_trials_complete_each_in_its_own_run(search):
    project, first, _, _ = search
    recorded = trials(project)
    assert sorted(recorded) == ["0", "1", "2"]
    assert {r["status"] for r in recorded.values()} == {"COMPLETED"}
    assert (project / "oracle.json").is_file()
    for trial_id, record in recorded.items():
        assert set(record["hyperparameters"]["values"]) == SPACE
        [run] = runs(project, trial_id)
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "fitted" and len(metrics["history"]["val_accuracy"]) == 2
        assert (project / f"trial_{trial_id}" / "checkpoint.weights.h5").is_file()
        assert f"trial {int(trial_id) + 1}/3 (id {trial_id}) started" in first.stdout
    assert "3 trials planned" in first.stdout
    # Piped, a trial is two lines: it started, it ended. The trials' console callbacks (model
    # summary, epoch lines, report) are left out; the final retraining keeps them.
    lines = first.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "trial 1/3 (id 0) started" in line)
    end = next(i for i, line in enumerate(lines) if line.startswith("trial 3/3 completed"))
    trial_lines = lines[start:end + 1]
    assert len(trial_lines) == 6, "\n".join(trial_lines)
    assert [("started" in line, "completed" in line) for line in trial_lines] == [
        (True, False), (False, True)] * 3
    # The final runs: as searched and each contender of --final-compare (two or three).
    steps = json.loads((project / "final_choice.json").read_text())["steps"]
    assert sum(line.strip().startswith("model cnn") for line in lines) == len(steps) + 1
    # What mattered: the history picture and the importance table in TensorBoard's Text tab.
    from PIL import Image

    assert Image.open(project / "search_history.png").format == "PNG"
    tags, _ = event_tags(project / "search")
    assert "search/what_mattered" in tags["tensors"]


@pytest.mark.slow
@pytest.mark.xdist_group("tune-search")  # its module fixture, made once
def test_each_trial_fills_the_hparams_dashboard_and_gets_its_images(search):
    project, _, _, _ = search
    for trial_id, record in trials(project).items():
        [run] = runs(project, trial_id)
        session = hparams_session(run)
        assert session is not None, f"no HParams session in {run}"
        assert session.group_name == f"trial_{trial_id}"
        values = {k: hparam_value(v) for k, v in session.hparams.items()}
        # The searched values, and the columns a hand-run digits.train row has too.
        assert SPACE | {"model", "batch_size", "dataset", "seed"} <= set(values)
        assert values["model"] == "cnn"
        expected = record["hyperparameters"]["values"]
        assert values["optimizer"] == expected["optimizer"]
        assert values["batch_norm"] == expected["batch_norm"]
        assert values["learning_rate"] == pytest.approx(expected["learning_rate"])
        assert values["conv_blocks"] == expected["conv_blocks"]
        validation, _ = event_tags(run / "validation")
        assert "confusion_matrix" in validation["tensors"]
        assert "epoch_accuracy" in validation["tensors"]


@pytest.mark.slow
@pytest.mark.xdist_group("tune-search")  # its module fixture, made once
def test_best_hyperparameters_are_written_retrained_and_tested(search):
    project, first, _, _ = search
    best = json.loads((project / "best_hyperparameters.json").read_text())
    recorded = trials(project)
    scores = {i: r["score"] for i, r in recorded.items()}
    assert best["trial_id"] == max(scores, key=scores.get)
    assert best["score"] == pytest.approx(max(scores.values()))
    assert best["objective"] == {"name": "val_accuracy", "direction": "max"}
    assert set(best["hyperparameters"]) == SPACE
    assert best["train_command"].startswith("python -m digits.train --model cnn")
    assert best["trials"] == {"completed": 3, "failed": 0}

    # Before the final model, full-length comparisons on validation (--final-compare's
    # default): with the hand-picked default (the space's defaults and the pins) where the
    # search picked another, then with augmentation off (never 0 in the search). Each step's
    # first candidate is the one kept so far; only the last one kept saw the test split.
    choice = json.loads((project / "final_choice.json").read_text())
    assert choice["epochs"] == 1
    default = {**{d.name: d.default for d in SEARCH_SPACE}, "filters": 8, "dense_units": 32}
    wanted = ["default"] if best["hyperparameters"] != default else []
    assert [step["compared"] for step in choice["steps"]] == [*wanted, {"augment": 0.0}]
    kept = {"run": "best", "hyperparameters": best["hyperparameters"]}
    candidates = {}
    for step in choice["steps"]:
        first_one, contender = step["candidates"]
        assert first_one["run"] == kept["run"]
        assert first_one["hyperparameters"] == kept["hyperparameters"]
        if step["compared"] == "default":
            assert contender["run"] == f"{kept['run']}-default"
            assert contender["hyperparameters"] == default
        else:
            assert contender["run"] == f"{kept['run']}-augment0"
            assert contender["hyperparameters"] == {**kept["hyperparameters"], "augment": 0.0}
        kept = contender if contender["val_accuracy"] > first_one["val_accuracy"] else first_one
        assert step["kept"] == kept["run"]
        candidates.update({first_one["run"]: first_one, contender["run"]: contender})
    assert choice["kept"] == kept["run"] and choice["hyperparameters"] == kept["hyperparameters"]
    assert len(candidates) == len(choice["steps"]) + 1
    for candidate in candidates.values():
        run = project / candidate["run"] / "version_0"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "finished" and len(metrics["history"]["val_accuracy"]) == 1
        config = json.loads((run / "config.json").read_text())
        assert config["hyperparameters"] == {k: v for k, v in candidate["hyperparameters"].items()
                                             if k not in ("optimizer", "learning_rate")}
        assert config["trainer"]["optimizer"] == candidate["hyperparameters"]["optimizer"]
        # Validation chose; only the kept one saw the test split.
        assert ("test" in metrics) == (candidate["run"] == kept["run"])
        # What the checkpoint kept is what was compared: its best epoch's validation accuracy.
        assert max(metrics["history"]["val_accuracy"]) == pytest.approx(
            candidate["val_accuracy"], abs=0.02)
    final = project / kept["run"] / "version_0"
    metrics = json.loads((final / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert (final / "model.keras").is_file()
    assert f"run directory: {final}" in first.stdout
    # The summary table: a header, then the three trials, best first.
    assert "best 3 of 3 completed trials" in first.stdout
    assert "val_accuracy" in first.stdout and "optimizer" in first.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("tune-search")  # its module fixture, made once
def test_running_the_same_command_again_redoes_nothing(search):
    project, first, second, _ = search
    assert "resumed: 3 finished trials reloaded, not rerun" in second.stdout
    assert " started" not in second.stdout
    assert "already retrained and tested" in second.stdout
    for trial_id in trials(project):
        assert len(runs(project, trial_id)) == 1
    choice = json.loads((project / "final_choice.json").read_text())
    names = {c["run"] for step in choice["steps"] for c in step["candidates"]}
    for name in names:
        assert [p.name for p in (project / name).iterdir()] == ["version_0"]
    # The comparisons are made again from the runs' models: none trains.
    assert second.stdout.count("final comparison") == len(choice["steps"])
    # A candidate announced as it starts training: "best-default: conv_blocks=3 ...".
    training = re.compile(r"^best(?:-default|-augment0)*: (?:as searched|\w+=)", re.MULTILINE)
    assert len(training.findall(first.stdout)) == len(names) and not training.search(second.stdout)


@pytest.mark.slow
@pytest.mark.xdist_group("tune-search")  # its module fixture, made once
def test_final_ensemble_retrains_the_best_twice_and_tests_their_average(search):
    project, _, _, argv = search
    proc = run_cli(*argv, "--final-ensemble", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " started" not in proc.stdout  # the search itself is done
    assert "1 epoch, 2 times (an ensemble)" in proc.stdout
    # Decided again on the first members, the same seed as before, which the others follow.
    choice = json.loads((project / "final_choice.json").read_text())
    assert choice["steps"][0]["candidates"][0]["run"] == "best-member0"
    assert all(c["run"].endswith("-member0") for s in choice["steps"] for c in s["candidates"])
    kept = choice["kept"].removesuffix("-member0")
    seeds = [json.loads((project / f"{kept}-member{k}/version_0/config.json").read_text())
             ["trainer"]["seed"] for k in (0, 1)]
    assert seeds == [0, 1]
    metrics = json.loads((project / "best-ensemble/version_0/metrics.json").read_text())
    assert len(metrics["members"]) == 2 and metrics["test"]["examples"] == 500
    assert f"ensemble of 2: test accuracy {metrics['test']['accuracy']:.4f}" in proc.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("tune-search")  # its module fixture, made once
def test_other_settings_on_the_same_project_are_refused(search):
    project, _, _, argv = search
    changed = [a if a != "random" else "grid" for a in argv]
    proc = run_cli(*changed)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "other settings" in lines[0] and "tuner was 'random', now 'grid'" in lines[0]
    assert json.loads((project / "search.json").read_text())["tuner"] == "random"


# ----------------------------------------------------------------------------- hyperband, resume


@pytest.mark.slow
def test_hyperband_continues_a_trial_and_a_killed_trial_resumes_from_its_epoch(tmp_path):
    """Hyperband with --max-epochs 3, capped at 4 trials: three 1-epoch trials, then the best
    one continued for epochs 2-3 as trial 3. The search is killed during that trial's last
    epoch; the same command restarts it, and it resumes after epoch 2 instead of starting
    over."""
    marker = tmp_path / "holding"
    argv = [sys.executable, "-m", "digits.tune", *TINY, "--max-epochs", "3", "--max-trials", "4",
            "--final-epochs", "0", "--directory", str(tmp_path), "--project", "hb",
            "--callback", f"tests.test_tune:HoldsOnce(marker={str(marker)!r})"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"}
    project = tmp_path / "hb"
    state = project / "trial_3" / "execution_0" / "version_0" / "state" / "trainer.json"
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 540
        while time.monotonic() < deadline and proc.poll() is None and not marker.exists():
            time.sleep(0.05)
        while time.monotonic() < deadline and proc.poll() is None:
            try:  # epoch 2's state is written in the background
                if json.loads(state.read_text())["epoch"] == 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, "the search ended before trial 3 could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    assert "epochs 2-3, continuing trial" in out
    assert trials(project)["3"]["status"] == "RUNNING"

    again = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resumed: 3 finished trials reloaded, not rerun" in again.stdout
    assert "trial 3 was cut off" in again.stdout
    assert "from epoch 2 of 3" in again.stderr
    recorded = trials(project)
    assert {r["status"] for r in recorded.values()} == {"COMPLETED"}
    values = recorded["3"]["hyperparameters"]["values"]
    assert (values["tuner/initial_epoch"], values["tuner/epochs"]) == (1, 3)
    [run] = runs(project, "3")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 2 and metrics["epochs_completed"] == 3
    assert len(metrics["history"]["val_accuracy"]) == 2  # epochs 2 and 3: it continued epoch 1
    for trial_id in ("0", "1", "2"):
        assert f"(id {trial_id}) started" not in again.stdout


# ----------------------------------------------------------------------------- failures


@pytest.mark.slow
def test_a_failing_trial_is_recorded_with_its_reason_and_the_search_goes_on(tmp_path):
    # With this seed the first two sampled models have ~51k parameters, the third ~37k.
    proc = run_cli("digits.tune", *TINY, "--tuner", "random", "--max-trials", "3",
                   "--max-epochs", "1", "--final-epochs", "0", "--max-model-size", "40000",
                   "--directory", str(tmp_path), "--project", "p")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recorded = trials(tmp_path / "p")
    statuses = sorted(r["status"] for r in recorded.values())
    assert statuses == ["COMPLETED", "FAILED", "FAILED"]
    for trial_id, record in recorded.items():
        if record["status"] == "FAILED":
            ours = json.loads((tmp_path / "p" / f"trial_{trial_id}" / "digits_trial.json")
                              .read_text())
            assert ours["reason"].startswith("FailedTrialError: Oversized model:")
            assert "Oversized model" in record["message"]
    assert "failed in" in proc.stdout and "Oversized model" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_failures_in_a_row_stop_the_search_and_overwrite_starts_it_over(tmp_path):
    argv = ["digits.tune", *TINY, "--tuner", "random", "--max-trials", "5", "--max-epochs", "1",
            "--final-epochs", "0", "--max-model-size", "40000",
            "--max-consecutive-failed-trials", "2", "--directory", str(tmp_path),
            "--project", "p"]
    proc = run_cli(*argv)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The first trial is the space's defaults (with the pins: a model that fits); the two
    # random ones after it are too big.
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: the search stopped: 2 trials failed in a row; the last one, trial 2: "
        "FailedTrialError: Oversized model:")
    recorded = trials(tmp_path / "p")
    assert sorted(recorded) == ["0", "1", "2"]
    assert [recorded[t]["status"] for t in "012"] == ["COMPLETED", "FAILED", "FAILED"]

    # The same command continues: the failed trials are kept, and the next one (a model
    # that fits) completes; then the next two fail in a row again.
    again = run_cli(*argv)
    assert "resumed: 1 finished trial reloaded, not rerun; 2 failed trials kept as failed" \
        in again.stdout, again.stdout[-3000:]
    assert "(id 0) started" not in again.stdout and "(id 3) started" in again.stdout
    assert trials(tmp_path / "p")["3"]["status"] == "COMPLETED"

    # --overwrite starts over: the same first three trials, and nothing else.
    fresh = run_cli(*argv, "--overwrite")
    assert fresh.returncode == 1 and "resumed" not in fresh.stdout
    assert sorted(trials(tmp_path / "p")) == ["0", "1", "2"]


# ----------------------------------------------------------------------------- bad input


def tune_main(argv: list[str]) -> int:
    """`digits.tune` in this process, as its console script runs it (argparse exits itself)."""
    from digits.tune import main

    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("args, message", [
    (["--tuner", "annealing"], "--tuner: invalid choice"),
    (["--max-trials", "0"], "--max-trials"),
    (["--objective", "val_f1"], "--objective: invalid choice"),
    (["--hp", "depth=3"], "not a searched hyperparameter"),
    (["--hp", "conv_blocks=1.5"], "must be a whole number"),
    (["--hp", "optimizer=lbfgs"], "optimizer must be one of"),
    (["--hp", "conv_blocks=9"], "conv_blocks must be a number in [1, 3]"),
    (["--hp", "learning_rate=20"], "learning_rate must be a number in (0, 10]"),
    (["--project", "../elsewhere"], "--project"),
    (["--factor", "1"], "--factor"),
    (["--callback", "no_such_callback"], "unknown callback"),
    (["--config", "missing.toml"], "no such config file"),
    (["--parallel-trials", "0"], "--parallel-trials"),
    (["--pruner", "sometimes"], "--pruner: invalid choice"),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys, args, message):
    code = tune_main(["--dataset", "mnist-5k", "--directory", str(tmp_path / "d"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("env, message", [
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1"}, "KERASTUNER_ORACLE_PORT is not"),
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "99999",
      "KERASTUNER_TUNER_ID": "chief"}, "port number"),
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"},
     "KERASTUNER_TUNER_ID is not"),
])
def test_bad_distributed_environment_is_one_error_line(tmp_path, capsys, monkeypatch, env,
                                                        message):
    for key in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = tune_main(["--directory", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_parallel_trials_are_refused_to_a_chief_with_workers_of_its_own(tmp_path, capsys,
                                                                       monkeypatch):
    import os

    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    code = tune_main(["--directory", str(tmp_path / "d"), "--parallel-trials", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--parallel-trials starts its own workers" in err[0]
    for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(key)
    # Alone, auto runs two at a time here; the chief's environment is this search's only.
    before = dict(os.environ)
    code = tune_main(["--directory", str(tmp_path / "d"), "--hp", "depth=3"])
    assert code == 2 and dict(os.environ) == before


def test_auto_parallel_trials_is_two_on_a_cpu_and_one_with_a_gpu():
    from digits.tuner.distributed import auto_parallel_trials

    assert auto_parallel_trials(2, gpu=False) == 2 and auto_parallel_trials(64, gpu=False) == 2
    assert auto_parallel_trials(1, gpu=False) == 1 and auto_parallel_trials(8, gpu=True) == 1


def test_a_config_file_mirrors_the_flags_and_flags_win(tmp_path):
    from digits import cli
    from digits.tune import build_parser

    config = tmp_path / "search.toml"
    config.write_text('tuner = "random"\nmax-trials = 4\nhp = ["optimizer=sgd", "filters=8"]\n'
                      'callbacks = ["early_stopping"]\nfinal-epochs = 0\n')
    args = cli.parse_with_config(build_parser(), ["--config", str(config), "--max-trials", "6"])
    assert (args.tuner, args.max_trials, args.final_epochs) == ("random", 6, 0)
    assert args.hp == [("optimizer", "sgd"), ("filters", 8)]
    assert args.callbacks == ["early_stopping"]


def test_bad_flags_answer_as_a_subprocess_too():
    proc = run_cli("digits.tune", "--max-epochs", "zero")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: argument --max-epochs: expected a whole number >= 1, got 'zero' (see --help)"]


@pytest.mark.slow
def test_a_time_budget_lets_the_running_trial_finish_and_starts_no_other(tmp_path):
    argv = ["digits.tune", *TINY, "--tuner", "random", "--max-trials", "5", "--max-epochs", "1",
            "--final-epochs", "0", "--max-time", "1s", "--directory", str(tmp_path),
            "--project", "p"]
    proc = run_cli(*argv)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recorded = trials(tmp_path / "p")
    assert list(recorded) == ["0"] and recorded["0"]["status"] == "COMPLETED"
    assert "time budget of 1s spent: no new trials" in proc.stdout
    record = json.loads((tmp_path / "p" / "trial_0" / "digits_trial.json").read_text())
    assert record["rss_bytes"] > 100 * 2**20  # TensorFlow and a model: well over 100 MiB


@pytest.mark.parametrize("text", ["0s", "20x", "m", "-5m", "9999h"])
def test_a_malformed_time_budget_is_one_error_line(text):
    proc = run_cli("digits.tune", "--max-time", text)
    assert proc.returncode == 2 and proc.stderr.startswith("error: argument --max-time")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_each_final_comparison_is_skipped_where_there_is_nothing_to_decide(capsys):
    # The same values already, a pinned name (the user's), the default beside --choose (it
    # would break the constraint), turned off, or no validation split.
    from digits.tune import _final_steps, build_parser
    from digits.tuner.final_choice import Step, check, parse

    searched = {**{d.name: d.default for d in SEARCH_SPACE}, "filters": 16, "augment": 1.0}
    default, off = parse("default,augment=0")
    assert (default, off) == (Step(), Step("augment", 0)) and check((off,)) == (
        Step("augment", 0.0),)
    assert default.contender(searched, {}, choose=False) == {**searched, "filters": 32,
                                                             "augment": 0.5}
    assert default.contender(searched, {"filters": 16}, choose=False) == {**searched,
                                                                          "augment": 0.5}
    assert default.contender(searched, {}, choose=True) is None
    assert default.contender({**searched, "filters": 32, "augment": 0.5}, {}, False) is None
    assert off.contender(searched, {}, False) == {**searched, "augment": 0}
    assert off.contender(searched, {"augment": 1.0}, False) is None
    assert off.contender({**searched, "augment": 0.0}, {}, False) is None
    assert parse("none") == () and parse("optimizer=sgd") == (Step("optimizer", "sgd"),)
    assert [s.label for s in parse("default,augment=0.5,batch_norm=False")] == [
        "default", "augment0.5", "batch_normFalse"]

    class Data:
        def __init__(self, val):
            self.val = val

    args = build_parser().parse_args([])
    assert _final_steps(args, Data([1, 2])) == (default, off)
    capsys.readouterr()
    assert _final_steps(args, Data([])) == ()
    assert "no validation split, so --final-compare has nothing to decide on" in \
        capsys.readouterr().err
    assert _final_steps(build_parser().parse_args(["--final-compare", "none"]), Data([1])) == ()


def test_the_final_comparisons_keep_the_more_accurate_on_validation_a_tie_the_first(tmp_path):
    # Each step against the one kept so far, named after it; what is written, and a step that
    # has nothing to compare; no step at all still leaves a record (none from an earlier run).
    from types import SimpleNamespace

    from digits.tuner.final_choice import compare, parse

    searched = {**{d.name: d.default for d in SEARCH_SPACE}, "filters": 16, "augment": 1.0}
    scores = {"best": 0.90, "best-default": 0.95, "best-default-augment0": 0.95}
    trained = []

    def candidate(name, values):
        trained.append(name)
        return {"run": name, "validation": SimpleNamespace(accuracy=scores[name], loss=0.3),
                "fitted": None}

    lines = []
    name, kept, candidates = compare(parse("default,augment=0,filters=32"), searched, candidate,
                                     pins={}, choose=False, epochs=40, tta=True,
                                     project_dir=tmp_path, say=lambda *a, **k: lines.append(a[0]))
    default = {**searched, "filters": 32, "augment": 0.5}
    assert (name, kept) == ("best-default", default)  # the tie with augment 0 keeps the first
    assert trained == ["best", "best-default", "best-default-augment0"]  # filters=32: the same
    assert [c["name"] for c in candidates] == trained
    assert lines == [
        "final comparison, validation after 40 epochs: the search's pick 90.00% (loss 0.3000); "
        "the hand-picked default 95.00% (loss 0.3000): keeping the hand-picked default",
        "final comparison, validation after 40 epochs: augment 0.5 95.00% (loss 0.3000); "
        "augment 0 95.00% (loss 0.3000): keeping augment 0.5"]
    record = json.loads((tmp_path / "final_choice.json").read_text())
    assert [s["kept"] for s in record["steps"]] == ["best-default", "best-default"]
    assert record["kept"] == "best-default" and record["hyperparameters"] == default
    assert record["steps"][1]["candidates"][1]["hyperparameters"] == {**default, "augment": 0}

    assert compare((), searched, candidate, pins={}, choose=False, epochs=40, tta=True,
                   project_dir=tmp_path, say=print)[:2] == ("best", searched)
    record = json.loads((tmp_path / "final_choice.json").read_text())
    assert record["steps"] == [] and record["kept"] is None
    assert record["hyperparameters"] == searched
