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
                        "--final-compare", "none", "--pruner", "asha", "--pruner-warmup", "0",
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
    assert workers.check() == "worker tuner0: unrecognized arguments: --bogus (see --help)"


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


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding `path`'s flock (as a running search or worker does), its pid in it."""
    code = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, str(os.getpid()).encode())\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_search_of_the_same_project_is_refused_with_one_line(tmp_path):
    from tests.conftest import run_cli

    holder = hold_lock(tmp_path / ".k.chief.lock")
    try:
        result = run_cli("digits.tune", *TINY, "--directory", str(tmp_path), "--project", "k",
                         timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"error: another digits.tune is running the search 'k' in {tmp_path} (pid {holder.pid}): "
        "wait for it to end or stop it, or use another --project"]


def test_a_search_does_not_start_beside_workers_of_an_earlier_run(tmp_path):
    from tests.conftest import run_cli

    holder = hold_lock(tmp_path / ".k.tuner1.lock")
    try:
        result = run_cli("digits.tune", *TINY, "--directory", str(tmp_path), "--project", "k",
                         timeout=120, env={"DIGITS_TUNE_LEFTOVER_WAIT": "1"})
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == [f"waiting up to 1 s for the workers of an earlier run to end (pids {holder.pid})",
                     f"error: workers of an earlier run of the search 'k' are still running "
                     f"(pids {holder.pid}) after 1 s: stop them, then run the command again"]


@pytest.mark.slow
@pytest.mark.parametrize("whom", ["process group"])  # the chief alone: tests/test_kill_matrix.py
def test_workers_end_within_15_seconds_of_their_killed_chief(tmp_path, whom):
    """SIGKILL of the main job (the chief's whole process group): the workers, each in a
    session of its own, used to wait for the dead chief for keras-tuner's hour."""
    import time

    from digits.tuner.project_lock import ProjectLock

    command = [sys.executable, "-m", "digits.tune", *TINY, "--max-trials", "6", "--max-epochs",
               "3", "--final-epochs", "0", "--parallel-trials", "2", "--directory", str(tmp_path),
               "--project", "k"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"}
    with open(tmp_path / "chief.log", "w") as log:
        chief = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    lock = ProjectLock(tmp_path, "k")
    workers = {}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and chief.poll() is None:
            workers = lock.running_workers()
            trials = list((tmp_path / "k").glob("trial_*/trial.json"))
            if len(workers) == 2 and trials:
                break
            time.sleep(0.5)
        assert len(workers) == 2, (tmp_path / "chief.log").read_text()[-3000:]
        if whom == "process group":
            os.killpg(chief.pid, signal.SIGKILL)
        else:
            os.kill(chief.pid, signal.SIGKILL)
        chief.wait()
        killed = time.monotonic()
        while lock.running_workers() and time.monotonic() - killed < 60:
            time.sleep(0.25)
        assert lock.running_workers() == {}, "workers outlived their chief by a minute"
        assert time.monotonic() - killed <= 17  # 2 s poll + 10 s grace + exit, and margin
    finally:
        for pid in workers.values():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    logs = " ".join((tmp_path / "k" / "workers" / f"{w}.log").read_text() for w in workers)
    assert f"its chief (pid {chief.pid}) is gone; stopping" in logs


class ScriptedWorkers:
    """`LocalWorkers` whose processes run a line of Python instead of `digits.tune`."""

    @staticmethod
    def make(code: str, tmp_path: Path, count: int = 1):
        from digits.tuner.distributed import LocalWorkers

        said: list[str] = []

        class Workers(LocalWorkers):
            def _start(self, tuner_id, mode):
                with open(self.log_dir / f"{tuner_id}.log", mode) as log:
                    self._log_start[tuner_id] = log.seek(0, os.SEEK_END)
                    self.processes[tuner_id] = subprocess.Popen(
                        [sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)

        return Workers(count, [], port=1, log_dir=tmp_path, say=said.append), said


def check_until_done(workers) -> str | None:
    for _ in range(200):
        workers.wait(10)
        problem = workers.check()
        if problem or all(p.poll() == 0 for p in workers.processes.values()):
            return problem
    raise AssertionError("the workers never settled")


def test_a_killed_worker_is_started_again_a_bounded_number_of_times(tmp_path):
    workers, said = ScriptedWorkers.make(
        "import os, signal; print('training', flush=True); os.kill(os.getpid(), signal.SIGKILL)",
        tmp_path)
    problem = check_until_done(workers)
    assert len(said) == workers.MAX_REPLACEMENTS == 3
    assert re.fullmatch(r"worker tuner0 \(pid \d+\) was killed \(SIGKILL\); starting it again: "
                        r"its trial resumes from its last finished epoch", said[0])
    assert re.fullmatch(r"worker tuner0 \(pid \d+\) was killed \(SIGKILL\), and workers died 3 "
                        r"times before in this run", problem)


def test_a_worker_that_ends_with_an_error_line_stops_the_search_with_it(tmp_path):
    workers, said = ScriptedWorkers.make(
        "import sys; print('error: No space left on device'); sys.exit(2)", tmp_path)
    assert check_until_done(workers) == \
        "worker tuner0: No space left on device"
    assert said == []
