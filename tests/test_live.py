"""The search's live view, rendered by rich's recording console as a terminal would show it.

The table holds every trial with its status, the hyperparameters that differ, score, epochs and
time, the best marked; the bars show the search's trials with elapsed time, ETA and the time
budget left, and the running trial's epochs and batches; with more trials than the screen
holds, the running, best and latest ones are shown. A tiny real search feeds it end to end.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from digits.tuner.display import SearchDisplay
from digits.tuner.live import LiveSearchDisplay, make_display


def terminal(height: int = 40, width: int = 160) -> Console:
    return Console(record=True, force_terminal=True, color_system="truecolor", width=width,
                   height=height, file=io.StringIO())


def screen(view: LiveSearchDisplay) -> str:
    view.console.print(view.render())
    return view.console.export_text()


def test_the_view_shows_trials_their_differences_and_the_bars():
    view = LiveSearchDisplay("val_accuracy", planned=4, console=terminal(), max_seconds=600,
                             max_epochs=2)
    view.trial_started("0", {"filters": 16, "dropout": 0.1, "optimizer": "adam"})
    view.trial_ended("0", "COMPLETED", score=0.9123, seconds=12, epochs=2)
    view.trial_started("1", {"filters": 16, "dropout": 0.3, "optimizer": "adam"})
    view.epoch_started(1, 2, 36)
    view.batches_done(8, "loss 0.4321")
    view.epoch_reported("1", 1, 0.95)  # what the oracle heard of its first epoch
    text = screen(view)
    header = next(line for line in text.splitlines() if "status" in line)
    for column in ("trial", "status", "drop", "val_accuracy", "epochs", "time"):
        assert column in header
    assert "filters" not in header and "opt" not in header  # the same in every trial
    assert "1/4 *" in text and "completed" in text and "0.9123" in text  # the best, marked
    running = next(line for line in text.splitlines() if "running" in line)
    assert "0.95" in running and "1/2" in running and "*" not in running  # not yet a result
    assert "search" in text and "1/4" in text and "budget left" in text
    assert "epoch 2" in text and "8/36" in text and "loss 0.4321" in text and "1/2" in text


def test_pruned_and_failed_trials_and_the_failure_line_above():
    view = LiveSearchDisplay("val_loss", planned=3, console=terminal(), maximise=False)
    view.trial_started("0", {"dropout": 0.1})
    view.trial_ended("0", "COMPLETED", score=0.2, seconds=5, epochs=3)
    view.trial_started("1", {"dropout": 0.2})
    view.trial_ended("1", "COMPLETED", score=0.1, seconds=3, epochs=2,
                     pruned={"epoch": 2, "reason": "val_loss 0.1 above the median"})
    view.trial_started("2", {"dropout": 0.3})
    view.trial_ended("2", "FAILED", seconds=1, reason="FailedTrialError: Oversized model")
    text = screen(view)
    assert "trial 3/3 failed in 1s: FailedTrialError: Oversized model" in text
    assert "pruned@2" in text and "failed" in text
    # A pruned trial's score is where it stopped: the best is the lowest unpruned loss.
    assert "1/3 *" in text and "2/3 *" not in text
    assert "3/3" in text and "eta 0s" in text


def test_more_trials_than_the_screen_holds_keep_the_running_best_and_latest():
    view = LiveSearchDisplay("val_accuracy", planned=40, console=terminal(height=20))
    for n in range(30):
        view.trial_started(str(n), {"dropout": n / 100})
        view.trial_ended(str(n), "COMPLETED", score=0.5 + (0.4 if n == 3 else n / 1000),
                         seconds=1, epochs=1)
    view.trial_started("30", {"dropout": 0.5})
    table = view.table()
    shown = table.columns[0]._cells
    assert len(shown) == 11  # the screen's 20 lines less the bars and the table's frame
    assert "4/40 *" in shown and "31/40" in shown and "30/40" in shown
    assert "more trials not shown" in str(table.caption)


def test_make_display_is_live_only_on_a_terminal():
    assert isinstance(make_display("val_accuracy", 3, console=terminal()), LiveSearchDisplay)
    plain = make_display("val_accuracy", 3, console=Console(file=io.StringIO()))
    assert type(plain) is SearchDisplay
    assert type(make_display("val_accuracy", 3, live=False, console=terminal())) is SearchDisplay


@pytest.mark.slow
def test_a_search_feeds_the_view_from_its_trials(tmp_path):
    from digits.data import load_dataset
    from digits.tuner.hypermodel import DigitsHyperModel
    from digits.tuner.search import make_tuner

    view = LiveSearchDisplay("val_accuracy", planned=2, console=terminal())
    seen = []
    batches_done = view.batches_done
    view.batches_done = lambda done, note=None: (seen.append(done), batches_done(done, note))
    hypermodel = DigitsHyperModel(callbacks=list, trainer_options={
        "limit_train_batches": 12, "limit_val_batches": 1}, log_dir=tmp_path)
    tuner = make_tuner("random", hypermodel, directory=str(tmp_path), project="p", max_trials=2,
                       pins={"filters": 8, "dense_units": 32, "conv_blocks": 1}, display=view)
    with view.session():
        tuner.run_search(load_dataset("mnist-5k"), epochs=1)
    view.console = terminal()  # the last frame alone
    text = screen(view)
    assert "2/2" in text and text.count("completed") == 2 and "drop" in text
    # The batch bar moved batch by batch, within the compiled call of 12 steps.
    assert seen.count(1) == 2 and seen.count(6) >= 2 and max(seen) == 12, seen
