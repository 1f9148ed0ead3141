"""LearningRateMonitor: the learning rate of every epoch, in the logs, History and metrics.json."""

from __future__ import annotations

import json

import keras
import pytest

from digits.callbacks.base import Callback
from digits.callbacks.lr_monitor import LearningRateMonitor, current_learning_rate
from digits.engine.trainer import Trainer


class LogsSeen(Callback):
    order = 50  # after the monitor (5)

    def __init__(self) -> None:
        super().__init__()
        self.rates = []

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(logs.get("learning_rate"))


def test_every_epoch_records_its_learning_rate_for_everyone_downstream(tmp_path, small_data):
    seen = LogsSeen()
    trainer = Trainer(max_epochs=3, callbacks=[LearningRateMonitor(), seen], log_dir=tmp_path,
                      name="lr", learning_rate=0.004, verbose=False)  # cosine decay by default
    history = trainer.fit(trainer.build_model("mlp", hidden_units=32), small_data)

    rates = history.history["learning_rate"]
    assert rates[0] == pytest.approx(0.004)  # the rate each epoch started with
    assert rates[0] > rates[1] > rates[2] > 0
    assert seen.rates == rates
    metrics = json.loads(trainer.run.file("metrics.json").read_text())
    assert metrics["history"]["learning_rate"] == pytest.approx(rates)


def test_a_schedule_is_read_at_the_optimizer_step():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    assert current_learning_rate(optimizer) == pytest.approx(0.1)
    optimizer.iterations.assign(20)
    assert current_learning_rate(optimizer) == pytest.approx(0.025)


def test_a_constant_rate_and_no_optimizer():
    assert current_learning_rate(keras.optimizers.Adam(learning_rate=3e-4)) == pytest.approx(3e-4)
    assert current_learning_rate(None) is None
