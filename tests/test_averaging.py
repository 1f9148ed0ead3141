"""Averaged weights (`ema_decay`, `--ema`): validated, checkpointed, finished with, resumed."""

from __future__ import annotations

import numpy as np
import pytest

from callbacks.base import Callback
from tests.test_resume import CrashAt, fit, make_trainer, op_determinism_off_afterwards  # noqa: F401


class ValidationWeights(Callback):
    """Records, at each epoch's end, the model's weights and the training weights."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        average = self.trainer.weight_average
        self.seen.append((self.model.get_weights()[0].copy(),
                          [a.numpy().copy() for _, a in average.pairs()][0]))


def test_keras_keeps_one_average_per_trainable_variable_among_the_optimizer_variables():
    """What digits.averaging assumes of Keras' private names, and that the run's state (the
    optimizer's variables) holds the averages."""
    import keras

    from digits.averaging import WeightAverage
    from digits.compiling import make_optimizer
    from digits.models import build_model

    model = build_model("cnn", filters=4, dense_units=8)
    model.compile(optimizer=make_optimizer("adam", 1e-3, ema_decay=0.9),
                  loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    average = WeightAverage.of(model)
    pairs = average.pairs()
    assert [v.path for v, _ in pairs] == [v.path for v in model.trainable_variables]
    assert all(a.shape == v.shape for v, a in pairs)
    ids = {id(v) for v in model.optimizer.variables}
    assert all(id(a) in ids for _, a in pairs)
    before = [v.numpy().copy() for v, _ in pairs]
    for (v, a) in pairs:
        a.assign(v.numpy() + 1.0)
    average.use_average()
    assert all(np.array_equal(v.numpy(), b + 1.0) for (v, _), b in zip(pairs, before, strict=True))
    assert all(np.array_equal(a.numpy(), b) for (_, a), b in zip(pairs, before, strict=True))
    average.use_training()  # an exact swap: no rounding either way
    assert all(np.array_equal(v.numpy(), b) for (v, _), b in zip(pairs, before, strict=True))
    plain = build_model("cnn", filters=4, dense_units=8)
    plain.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy")
    assert WeightAverage.of(plain) is None


def test_validation_checkpoint_and_the_final_model_use_the_average(tmp_path, small_data):
    import keras

    watch = ValidationWeights()
    trainer = make_trainer(tmp_path, "ema", [watch], ema_decay=0.9, deterministic=False,
                           label_smoothing=0.0, max_epochs=3)
    model = fit(trainer, small_data, filters=4, dense_units=32)
    # During each epoch's callbacks the model held the average, the optimizer the training
    # weights: different values.
    assert len(watch.seen) == 3
    assert all(not np.array_equal(in_model, kept) for in_model, kept in watch.seen)
    # Training went on from the training weights, not from the average: the average moved
    # towards them (decay 0.9) rather than being overwritten each epoch.
    average = trainer.weight_average
    assert not average.in_model
    # After the fit the model holds the average (Keras' finalize_variable_values) ...
    for (_, a), v in zip(average.pairs(), model.trainable_variables, strict=True):
        np.testing.assert_array_equal(v.numpy(), a.numpy())
    # ... which is what the last validation pass scored.
    last_val_loss = trainer.history["val_loss"][-1]
    assert trainer.validate(model, small_data).loss == pytest.approx(last_val_loss, rel=1e-4)
    # The checkpoint holds an averaged model: its first kernel is the one seen at its epoch.
    best = keras.saving.load_model(trainer.run.file("model.keras"), compile=False)
    checkpoint = next(c for c in trainer.callbacks if type(c).__name__ == "Checkpoint")
    np.testing.assert_array_equal(best.get_weights()[0], watch.seen[checkpoint.best_epoch - 1][0])
    config = trainer.run.read_json("config.json")
    assert config["trainer"]["ema_decay"] == 0.9


def test_a_resumed_run_with_averaged_weights_ends_bit_identical(tmp_path, small_data):
    hps = {"filters": 4, "dense_units": 32}
    straight = fit(make_trainer(tmp_path, "straight", ema_decay=0.95), small_data, **hps)
    from digits.errors import CallbackRaised

    with pytest.raises(CallbackRaised):
        fit(make_trainer(tmp_path, "resumed", [CrashAt(2)], ema_decay=0.95), small_data, **hps)
    trainer = make_trainer(tmp_path, "resumed", ema_decay=0.95)
    resumed = fit(trainer, small_data, **hps)
    assert trainer.resumed_from_epoch == 2
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(straight.optimizer.variables, resumed.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
