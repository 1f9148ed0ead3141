"""digits.runs.state: which runs resume.

The end-to-end stories (kill, resume, damaged files, full disk) are in test_resume.py and
test_state.py; these are the rules underneath, without training.
"""

from __future__ import annotations

import pytest

from digits.runs.directory import RunDirectory
from digits.runs.state import PREVIOUS_STATE_FILE, STATE_DIR, STATE_FILE, resumable

CONFIG = {"model": "cnn", "trainer": {"max_epochs": 3, "seed": 0}, "callbacks": ["a"]}


def a_run(tmp_path, status="running", config=CONFIG, states=(("epoch_2.digits-state", 2),)):
    run = RunDirectory.create(tmp_path, "cnn")
    run.write_json("config.json", config)
    if status is not None:
        run.write_json("metrics.json", {"status": status})
    (run.path / STATE_DIR).mkdir()
    for name, (weights, epoch) in zip((STATE_FILE, PREVIOUS_STATE_FILE), states, strict=False):
        run.write_json(f"{STATE_DIR}/{name}", {"epoch": epoch, "weights": weights})
        (run.path / STATE_DIR / weights).write_bytes(b"variables")
    return run


@pytest.mark.parametrize("status", [None, "running", "fitted", "failed", "interrupted"])
def test_an_unfinished_run_of_the_same_configuration_resumes(tmp_path, status):
    assert resumable(a_run(tmp_path, status), CONFIG)


def test_a_finished_or_different_run_does_not(tmp_path):
    assert not resumable(a_run(tmp_path, "finished"), CONFIG)
    changed = {**CONFIG, "trainer": {"max_epochs": 4, "seed": 0}}
    assert not resumable(a_run(tmp_path), changed)
    # The callbacks may change between the two commands (a progress bar added, say).
    assert resumable(a_run(tmp_path), {**CONFIG, "callbacks": ["a", "b"]})


def test_a_run_whose_state_files_are_all_gone_does_not_resume(tmp_path):
    run = a_run(tmp_path)
    (run.path / STATE_DIR / "epoch_2.digits-state").unlink()
    assert not resumable(run, CONFIG)


def test_the_epoch_before_is_enough_to_resume(tmp_path):
    run = a_run(tmp_path, states=(("epoch_3.digits-state", 3), ("epoch_2.digits-state", 2)))
    (run.path / STATE_DIR / "epoch_3.digits-state").unlink()
    assert resumable(run, CONFIG)
