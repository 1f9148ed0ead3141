"""A distributed search on loopback: a chief and two workers, with keras-tuner's gRPC engine.

`scripts/distributed_tune.py` starts the chief and the workers with the same `digits.tune`
arguments; every trial is completed exactly once, both workers take part, and the chief
retrains and tests the best. Too many failed trials in a row stop the workers cleanly and the
chief with the reason. Every wait is bounded, and every process started is killed by its id.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from digits.tuner.distributed import Role, role_from_environment
from tests.conftest import ROOT

LAUNCHER = ROOT / "scripts" / "distributed_tune.py"
TINY = ["--final-ensemble", "1", "--dataset", "mnist-5k", "--tuner", "random",
        "--limit-train-batches", "3", "--limit-val-batches", "1", "--hp", "filters=8", "--hp", "dense_units=32",
        "--no-default-callbacks", "--callbacks", "tensorboard,nan_guard"]


def launch(tune_args: list[str], timeout: float = 480) -> tuple[int, str]:
    """Run the launcher with a chief and two workers; kill everything it started if it hangs."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, str(LAUNCHER), "--workers", "2", "--timeout",
                             str(timeout - 60), "--", *tune_args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the launcher stops its chief and workers
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        kill_started(out)
        pytest.fail(f"the distributed search did not finish in {timeout}s:\n{out[-4000:]}")
    kill_started(out)
    return proc.returncode, out


def kill_started(out: str) -> None:
    """Kill, by pid, any process the launcher reported starting that is still alive."""
    for pid in re.findall(r"\(pid (\d+)\)", out):
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def records(project: Path) -> dict[str, dict]:
    return {p.parent.name.removeprefix("trial_"): json.loads(p.read_text())
            for p in sorted(project.glob("trial_*/digits_trial.json"))}


def test_roles_come_from_keras_tuners_environment_variables():
    assert role_from_environment({}) == Role("single", "tuner0")
    assert role_from_environment({"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "::1",
                                  "KERASTUNER_ORACLE_PORT": "8000"}) == \
        Role("chief", "chief", "[::1]:8000")
    worker = role_from_environment({"KERASTUNER_TUNER_ID": "tuner3",
                                    "KERASTUNER_ORACLE_IP": "10.0.0.5",
                                    "KERASTUNER_ORACLE_PORT": "8000"})
    assert worker == Role("worker", "tuner3", "10.0.0.5:8000")
    assert worker.runs_trials and not worker.holds_oracle


@pytest.mark.slow
def test_a_chief_and_two_workers_complete_every_trial_exactly_once(tmp_path):
    # With ASHA at epoch 1, a trial that lags those before it is pruned: the chief judges the
    # epochs its workers report over gRPC.
    code, out = launch([*TINY, "--max-trials", "4", "--max-epochs", "2", "--final-epochs", "1",
                        "--pruner", "asha", "--pruner-warmup", "0",
                        "--directory", str(tmp_path), "--project", "dist"])
    assert code == 0, out[-5000:]
    project = tmp_path / "dist"
    trials = {p.parent.name: json.loads(p.read_text())
              for p in project.glob("trial_*/trial.json")}
    assert sorted(trials) == ["trial_0", "trial_1", "trial_2", "trial_3"]
    assert {t["status"] for t in trials.values()} == {"COMPLETED"}
    oracle = json.loads((project / "oracle.json").read_text())
    assert sorted(oracle["end_order"]) == ["0", "1", "2", "3"]  # each ended once, no retry
    ran = records(project)
    assert {r["tuner_id"] for r in ran.values()} == {"tuner0", "tuner1"}  # both took part
    for trial_id in ran:
        assert len(list((project / f"trial_{trial_id}").glob("execution_*/version_*"))) == 1
    # The launcher's report, and the chief's: it saw every trial end, then retrained the best.
    assert re.search(r"tuner0: exit code 0, ran [12] trial", out)
    assert re.search(r"tuner1: exit code 0, ran [12] trial", out)
    assert len(re.findall(r"\[   chief\] trial \d/4 (completed|pruned at epoch 1) on tuner\d",
                          out)) == 4
    pruned = json.loads((project / "pruned.json").read_text()) \
        if (project / "pruned.json").exists() else {}
    for trial_id, record in ran.items():
        assert record["pruned"] == pruned.get(trial_id)  # the worker heard the chief's reason
        steps = [o["step"] for o in trials[f"trial_{trial_id}"]["metrics"]["metrics"]
                 ["val_accuracy"]["observations"]]
        assert steps == ([0] if trial_id in pruned else [0, 1])
    assert (project / "best_hyperparameters.json").is_file()
    metrics = json.loads((project / "best" / "version_0" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and "test" in metrics


@pytest.mark.slow
def test_failures_in_a_row_stop_the_workers_and_the_chief_says_why(tmp_path):
    code, out = launch([*TINY, "--max-trials", "8", "--max-epochs", "1", "--final-epochs", "0",
                        "--max-model-size", "1000", "--max-consecutive-failed-trials", "2",
                        "--directory", str(tmp_path), "--project", "failing"], timeout=300)
    assert code == 1, out[-5000:]
    assert re.search(r"\[   chief\] error: the search stopped: 2 trials failed in a row; the "
                     r"last one, trial \d: FailedTrialError: Oversized model", out), out[-3000:]
    assert "tuner0: exit code 0" in out and "tuner1: exit code 0" in out
    assert "chief: exit code 1" in out


def test_parallel_trial_workers_get_the_command_without_the_flag_and_a_share_of_the_cores(
        tmp_path):
    from digits.tuner.distributed import LocalWorkers
    from digits.tuner.distributed import worker_argv as _worker_argv

    assert _worker_argv(["--tuner", "random", "--parallel-trials", "2", "--max-trials=4"]) == \
        ["--tuner", "random", "--max-trials=4"]
    assert _worker_argv(["--parallel-trials=3", "--seed", "1"]) == ["--seed", "1"]
    # A worker that cannot start is the search's failure, named with its error line.
    workers = LocalWorkers(2, ["--bogus"], port=1, log_dir=tmp_path, threads=1)
    codes = workers.wait(60)
    assert codes == {"tuner0": 2, "tuner1": 2}
    assert workers.check() == ("worker tuner0 exited with code 2: error: unrecognized "
                                 "arguments: --bogus (see --help)")


@pytest.mark.slow
def test_parallel_trials_run_two_at_a_time_from_one_command(tmp_path):
    from tests.conftest import run_cli

    # Each worker runs one trial, then exits and is started afresh (as after 10 by default).
    result = run_cli("digits.tune", *TINY, "--max-trials", "4", "--max-epochs", "1",
                     "--final-epochs", "0", "--parallel-trials", "2",
                     "--directory", str(tmp_path), "--project", "par", timeout=400,
                     env={"DIGITS_TUNE_TRIALS_PER_PROCESS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "running 2 trials at a time, each worker with 1 TensorFlow thread(s)" in result.stdout
    ran = records(tmp_path / "par")
    assert sorted(ran) == ["0", "1", "2", "3"]
    assert {r["status"] for r in ran.values()} == {"COMPLETED"}
    assert {r["tuner_id"] for r in ran.values()} == {"tuner0", "tuner1"}
    assert len(re.findall(r"trial \d/4 completed on tuner\d", result.stdout)) == 4
    logs = [(tmp_path / "par" / "workers" / f"tuner{i}.log").read_text() for i in (0, 1)]
    assert sum(log.count("ran its share of trials") for log in logs) >= 2, logs
    oracle = json.loads((tmp_path / "par" / "oracle.json").read_text())
    assert sorted(oracle["end_order"]) == ["0", "1", "2", "3"]  # each ran once
    assert (tmp_path / "par" / "best_hyperparameters.json").is_file()


@pytest.mark.slow
def test_a_time_budget_ends_a_search_of_parallel_trials(tmp_path):
    """The chief's clock stops new trials, and the chief then ends (it once waited forever for
    workers that the budget had turned away)."""
    from tests.conftest import run_cli

    result = run_cli("digits.tune", *TINY, "--max-trials", "8", "--max-epochs", "1",
                     "--final-epochs", "0", "--parallel-trials", "2", "--max-time", "1s",
                     "--directory", str(tmp_path), "--project", "budget", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "time budget of 1s spent: no new trials" in result.stdout
    ran = records(tmp_path / "budget")
    assert 1 <= len(ran) < 8 and {r["status"] for r in ran.values()} == {"COMPLETED"}
    assert "best: trial" in result.stdout
