"""The main job killed anywhere, then the same command again: nothing finished is lost or redone.

`python -m digits.tune` with its default two trials at a time (a chief and two workers), real
processes and real signals. One search is killed at every stage of the main job in turn (the chief's whole process group
is `tests/test_tune_distributed.py`'s), each
time rerun with the same command, and must end exactly as the same search run straight through
(`--deterministic`: a resumed run trains bit-identically): the same trials with the same
hyperparameters and scores, the same best, the same members and ensemble test results.

| what is killed                      | when                                   |
| ----------------------------------- | -------------------------------------- |
| the chief alone (SIGKILL)           | during a trial: its workers end by themselves within 15 s |
| one worker (SIGKILL)                | during a trial: replaced, the search goes on |
| the chief (SIGTERM)                 | during a trial: exits 143 within seconds |
| everything                          | during the final retraining of a member |
| everything                          | between members                        |
| everything                          | while the ensemble is joined and tested |

A full disk is the other test: a search on a small filesystem stops with one line, and once
there is room the same command finishes it as if nothing had happened.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

FINAL_EPOCHS = 6
# Without --final-compare's second retraining (test_tune covers it; its runs resume as the
# members' do), so that the members' names here do not hang on a validation comparison.
COMMAND = ["--final-ensemble", "2", "--final-compare", "none", "--dataset", "mnist-5k",
           "--tuner", "random", "--limit-train-batches", "12", "--limit-val-batches", "2", "--hp", "filters=8",
           "--hp", "dense_units=32", "--no-default-callbacks", "--callbacks",
           "tensorboard,nan_guard", "--max-trials", "3", "--max-epochs", "2", "--final-epochs",
           str(FINAL_EPOCHS), "--deterministic", "--project", "k"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"}


class Job:
    """`digits.tune COMMAND --directory DIRECTORY` in a session of its own, its output read line
    by line (stdout and stderr together) as it comes."""

    def __init__(self, directory: Path, command: list[str] = COMMAND, env: dict | None = None):
        self.directory = directory
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "digits.tune", *command, "--directory", str(directory)],
            cwd=ROOT, env={**ENV, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL, start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 180) -> str:
        """The first line from now on that matches `pattern` (a regular expression)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        self.kill_all()
        pytest.fail(f"no line matching {pattern!r}:\n" + "\n".join(self.lines[-40:]))

    def finish(self, timeout: float = 240) -> int:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            pytest.fail("the search did not end:\n" + "\n".join(self.lines[-40:]))
        while (line := self._queue.get(timeout=30)) is not None:
            self.lines.append(line)
        return self.proc.returncode

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def workers(self) -> dict:
        from digits.tuner.project_lock import ProjectLock

        return ProjectLock(self.directory, "k").running_workers()

    def kill_all(self) -> None:
        """SIGKILL the chief's process group and every worker's (each has a session of its own)."""
        for pid in [self.proc.pid, *self.workers().values()]:
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, ValueError):
                pass
        self.proc.wait()

    def wait_for_workers_to_end(self, within: float) -> None:
        start = time.monotonic()
        while self.workers() and time.monotonic() - start < within + 30:
            time.sleep(0.25)
        assert not self.workers(), "workers outlived their chief"
        assert time.monotonic() - start <= within, f"workers took over {within} s to end"


def wait_for_epochs(run: Path, epochs: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads((run / "metrics.json").read_text())["epochs_completed"] >= epochs:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    pytest.fail(f"{run} never reached epoch {epochs}")


def outcome(project: Path) -> dict:
    """What a finished search produced: each trial's status, values and score, the best
    hyperparameters, each member's history and test, the ensemble's test."""
    trials = {}
    for path in sorted(project.glob("trial_*/trial.json")):
        trial = json.loads(path.read_text())
        trials[trial["trial_id"]] = (trial["status"], trial["hyperparameters"]["values"],
                                     trial["score"])
    members = {}
    for name in ("best-member0", "best-member1", "best-ensemble"):
        runs = sorted((project / name).glob("version_*"))
        assert [r.name for r in runs] == ["version_0"], f"{name}: {runs}"
        metrics = json.loads((runs[0] / "metrics.json").read_text())
        members[name] = (metrics["status"], metrics.get("history"), metrics["test"]["accuracy"])
    return {"trials": trials,
            "best": json.loads((project / "best_hyperparameters.json").read_text()),
            "members": members}


def started_trials(output: str) -> list[str]:
    return re.findall(r"trial \d+/\d+ \(id (\d+)\) started", output)


def completed_trials(project: Path) -> set[str]:
    return {json.loads(p.read_text())["trial_id"] for p in project.glob("trial_*/trial.json")
            if json.loads(p.read_text())["status"] == "COMPLETED"}


def no_temporaries(project: Path) -> list[Path]:
    return [p for p in project.rglob("*") if ".tmp" in p.name]


@pytest.mark.slow
def test_the_main_job_killed_at_every_stage_resumes_to_the_same_result(tmp_path):
    # Straight through, each worker started afresh after two trials (as after 10 by default).
    first = tmp_path / "straight" / "k"
    straight = Job(tmp_path / "straight", env={"DIGITS_TUNE_TRIALS_PER_PROCESS": "2"})
    assert straight.finish() == 0, straight.output[-3000:]
    assert "running 2 trials at a time, each worker with 1 TensorFlow thread(s)" in straight.output
    expected = outcome(first)
    records = [json.loads(p.read_text()) for p in first.glob("trial_*/digits_trial.json")]
    assert {r["tuner_id"] for r in records} == {"tuner0", "tuner1"}
    logs = [(first / "workers" / f"tuner{i}.log").read_text() for i in (0, 1)]
    assert sum(log.count("ran its share of trials") for log in logs) >= 1, logs
    oracle = json.loads((first / "oracle.json").read_text())
    assert sorted(oracle["end_order"]) == ["0", "1", "2"]  # each ran once
    assert oracle["ongoing_trials"] == {}  # consistent as the search ends

    here = tmp_path / "killed"
    project = here / "k"

    # 1. The chief alone (SIGKILL), during the first trials: its workers, each in a session of
    # its own, notice and stop within 15 s (each keeping its finished epochs).
    job = Job(here)
    job.wait_for(r"trial \d/3 \(id \d\) started")
    time.sleep(1.5)
    assert len(job.workers()) == 2
    os.kill(job.proc.pid, signal.SIGKILL)
    job.proc.wait()
    job.wait_for_workers_to_end(within=17)  # 2 s poll + 10 s grace + exit, and margin

    # 2. One worker during a trial: replaced, its trial resumed. Then SIGTERM to the chief
    # during another trial: it stops its workers and exits 143 within seconds.
    done = completed_trials(project)
    job = Job(here)
    line = job.wait_for(r"trial \d/3 \(id \d\) started on tuner")
    assert all(f"(id {t})" not in line for t in done)
    victim = line.rsplit("started on ", 1)[1].split(":")[0]
    time.sleep(1.0)
    worker_pid = job.workers()[victim]
    os.kill(int(worker_pid), signal.SIGKILL)
    job.wait_for(rf"worker {victim} \(pid {worker_pid}\) was killed \(SIGKILL\); starting it "
                 "again: its trial resumes from its last finished epoch", timeout=30)
    job.wait_for(r"started on tuner")
    time.sleep(1.0)
    sent = time.monotonic()
    job.proc.send_signal(signal.SIGTERM)
    assert job.finish() == 143, job.output[-3000:]
    assert time.monotonic() - sent < 15
    assert "terminated (SIGTERM)" in job.output and "Traceback" not in job.output
    assert not job.workers()
    assert set(started_trials(job.output)).isdisjoint(done), job.output

    # 3. Everything, during the first member's retraining (after two of its epochs).
    done = completed_trials(project)
    job = Job(here)
    job.wait_for(r"member 1 of 2")
    assert set(started_trials(job.output)).isdisjoint(done), job.output
    wait_for_epochs(project / "best-member0" / "version_0", 2)
    job.kill_all()
    # The state's own file says which epoch a rerun resumes from (metrics.json is written
    # after it, so a kill between the two leaves it an epoch behind).
    cut = json.loads((project / "best-member0" / "version_0" / "state" / "trainer.json")
                     .read_text())["epoch"]
    assert 2 <= cut < FINAL_EPOCHS

    # 4. Everything, between members: the first one finished, the second about to start.
    job = Job(here)
    assert "resumed: 3 finished trials reloaded, not rerun" in job.wait_for("resumed:")
    job.wait_for(rf"resumed .*best-member0/version_0 from epoch {cut} of {FINAL_EPOCHS}")
    job.wait_for(r"member 2 of 2")
    job.kill_all()

    # 5. Everything, while the ensemble is being joined and tested.
    job = Job(here)
    job.wait_for(r"best-member1/version_0")
    job.kill_all()

    # The same command once more finishes it; nothing else is retrained.
    job = Job(here)
    assert job.finish() == 0, job.output[-3000:]
    assert not started_trials(job.output)
    assert not re.search(r"resumed .*best-member\d/version_0 from epoch", job.output), job.output
    assert outcome(project) == expected
    assert no_temporaries(project) == []

    # The finished search again: reloaded, nothing run, no worker started.
    again = Job(tmp_path / "straight")
    assert again.finish() == 0, again.output[-3000:]
    assert "resumed: 3 finished trials reloaded, not rerun" in again.output
    assert "chief: every planned trial has ended; no workers are started" in again.output
    assert not started_trials(again.output)
    assert [(first / "workers" / f"tuner{i}.log").read_text() for i in (0, 1)] == logs
    assert outcome(first) == expected
    assert json.loads((first / "oracle.json").read_text())["end_order"] == oracle["end_order"]

    from digits.models import load_model

    model = load_model(str(project / "best-ensemble" / "version_0" / "model.keras"))
    assert model.output_shape[-1] == 10


def mount_small_filesystem(path: Path, size: str) -> None:
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {result.stderr.strip()}")


@pytest.mark.slow
def test_a_full_disk_stops_the_search_with_one_line_and_the_rerun_finishes_it(tmp_path):
    small = tmp_path / "small"
    mount_small_filesystem(small, "4M")  # room for two or three of these trials
    command = [*COMMAND, "--max-trials", "4", "--final-epochs", "0"]  # the last flags win
    try:
        job = Job(small, command)
        code = job.finish()
        assert code == 1, job.output[-3000:]
        errors = [line for line in job.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0], job.output[-3000:]
        assert "Traceback" not in job.output
        done = completed_trials(small / "k")
        assert 0 < len(done) < 4
        records = {t: json.loads((small / "k" / f"trial_{t}" / "trial.json").read_text())
                   for t in done}

        subprocess.run(["mount", "-o", "remount,size=256M", str(small)], check=True)
        job = Job(small, command)
        assert job.finish() == 0, job.output[-3000:]
        assert f"resumed: {len(done)} finished trial" in job.output
        assert set(started_trials(job.output)).isdisjoint(done), job.output
        for t, record in records.items():
            after = json.loads((small / "k" / f"trial_{t}" / "trial.json").read_text())
            assert after["score"] == record["score"] and after["status"] == "COMPLETED"
        assert len(completed_trials(small / "k")) == 4
        assert no_temporaries(small / "k") == []
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
