"""A stop is a typed signal (`Trainer.stop`, `trainer.stopped`), saved and read back as text."""

from __future__ import annotations

from digits.engine.stopping import Stop
from digits.engine.trainer import Trainer


def test_the_first_stop_is_kept_and_a_fault_replaces_an_ordinary_one():
    trainer = Trainer(verbose=False)
    assert trainer.stopped is None and trainer.stop_reason is None
    trainer.stop("early stopping: val_loss did not improve for 5 epochs")
    trainer.stop("pruned at epoch 3: worse than the median")
    assert trainer.stopped == Stop("early stopping: val_loss did not improve for 5 epochs")
    trainer.stop("loss became NaN at epoch 4 (batch 32)", fault=True)
    trainer.stop("weights became NaN at epoch 4", fault=True)
    assert trainer.stopped == Stop("loss became NaN at epoch 4 (batch 32)", fault=True)
    assert trainer.stop_reason == "fault: loss became NaN at epoch 4 (batch 32)"


def test_the_saved_text_reads_back_as_the_same_stop():
    for stop in (Stop("early stopping: patience ran out"), Stop("loss became NaN", fault=True)):
        assert Stop.from_text(stop.text) == stop
    assert Stop.from_text(None) is None and Stop.from_text("") is None
