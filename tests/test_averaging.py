"""Averaged weights (`ema_decay`, `--ema`): validated, checkpointed, finished with, resumed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from digits.callbacks.base import Callback
from tests.test_resume import CrashAt, fit, make_trainer, op_determinism_off_afterwards  # noqa: F401


def ema_of(trainer):
    """The averages the run's EMA callback swaps (`digits.callbacks.ema`)."""
    from digits.callbacks.ema import EMA

    return next(c for c in trainer.callbacks if isinstance(c, EMA)).average


class ValidationWeights(Callback):
    """Records, at each epoch's end, the model's weights and the training weights."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        average = ema_of(self.trainer)
        self.seen.append((self.model.get_weights()[0].copy(),
                          [a.numpy().copy() for _, a in average.pairs()][0]))


def test_keras_keeps_one_average_per_trainable_variable_among_the_optimizer_variables():
    """What digits.callbacks.ema assumes of Keras' private names, and that the run's state (the
    optimizer's variables) holds the averages."""
    import keras

    from digits.callbacks.ema import WeightAverage
    from digits.engine.compiling import make_optimizer
    from digits.models import build_model

    model = build_model("cnn", filters=4, dense_units=8)
    model.compile(optimizer=make_optimizer("adam", 1e-3, use_ema=True, ema_momentum=0.9),
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
    average = ema_of(trainer)
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


# -- stochastic weight averaging (`swa_epochs`, `--swa`) -------------------------------------


def test_swa_settings_and_schedule():
    """The averaged epochs run at a constant swa_lr (half the rate unless given), reached
    by the cosine as they begin; averaging twice, or with restarts, is refused."""
    from digits import Trainer
    from digits.callbacks.swa import StochasticWeightAveraging
    from digits.engine.config import TrainerSettings
    from digits.errors import ConfigError

    def learning_rate_schedule(config, steps_per_epoch):
        """The schedule the run's SWA callback asks the optimizer for."""
        trainer = Trainer(callbacks=[], **{f.name: getattr(config, f.name) for f in
                                           dataclasses.fields(config)})
        [swa] = [c for c in trainer.callbacks if isinstance(c, StochasticWeightAveraging)]
        return swa.optimizer_options(trainer, steps_per_epoch)["learning_rate"]

    config = TrainerSettings(max_epochs=10, swa_epochs=4, learning_rate=1e-3)
    assert config.swa_lr == pytest.approx(5e-4) and config.swa_start_epoch == 6
    assert config.to_dict()["swa_epochs"] == 4 and "swa_epochs" not in TrainerSettings().to_dict()
    schedule = learning_rate_schedule(config, steps_per_epoch=5)
    rates = [float(schedule(step)) for step in range(0, 51)]
    assert rates[0] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(rates[:30], rates[1:31], strict=True))  # decaying
    assert rates[30:] == pytest.approx([5e-4] * 21)  # epochs 7-10: constant
    constant = learning_rate_schedule(
        TrainerSettings(max_epochs=10, swa_epochs=4, swa_lr=3e-4, lr_schedule="constant"), 5)
    assert [float(constant(s)) for s in (0, 30, 31, 50)] == pytest.approx([2e-3, 2e-3, 3e-4, 3e-4])
    for bad, message in [({"swa_epochs": 11}, "at most the epochs"),
                         ({"swa_epochs": 0}, "swa_epochs must be"),
                         ({"swa_epochs": 2, "ema_decay": 0.9}, "choose one"),
                         ({"swa_epochs": 2, "lr_cycles": 2}, "lr_cycles"),
                         ({"swa_lr": 1e-3}, "needs swa_epochs"),
                         ({"swa_epochs": 2, "swa_lr": 0.0}, "swa_lr must be")]:
        with pytest.raises(ConfigError, match=message):
            TrainerSettings(max_epochs=10, **bad)
    assert TrainerSettings(swa_epochs=5, fast_dev_run=True).swa_epochs == 1


def test_swa_is_the_mean_of_the_epochs_weights_and_batch_norm_is_recomputed_for_it():
    import keras

    from digits.callbacks.swa import StochasticWeightAverage

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.9)(
        keras.layers.Dense(2)(inputs)))
    average = StochasticWeightAverage(model)
    kernel = model.trainable_variables[0]
    seen = []
    for k in range(3):
        kernel.assign(np.full(kernel.shape, float(k + 1), np.float32) + np.eye(3, 2))
        seen.append(kernel.numpy().copy())
        average.update()
    assert average.epochs == 3 and [v.name for v in average.variables][-1] == "swa_count"
    kernel.assign(np.zeros(kernel.shape, np.float32))
    average.apply()
    np.testing.assert_allclose(kernel.numpy(), np.mean(seen, axis=0), rtol=1e-6)
    # Batch norm: the plain mean of each batch's statistics, whatever the layer held before.
    batches = [np.random.default_rng(i).normal(i, 1 + i, (16, 3)).astype(np.float32)
               for i in range(4)]
    norm = model.layers[-1]
    norm.moving_mean.assign(np.full((2,), 100.0, np.float32))
    assert average.recalibrate((x, None) for x in batches) == 4
    dense = model.layers[1]
    activations = [np.asarray(dense(x)) for x in batches]
    np.testing.assert_allclose(norm.moving_mean.numpy(),
                               np.mean([a.mean(axis=0) for a in activations], axis=0), rtol=1e-4)
    np.testing.assert_allclose(norm.moving_variance.numpy(),
                               np.mean([a.var(axis=0) for a in activations], axis=0), rtol=1e-4)
    assert norm.momentum == 0.9  # the layer's own momentum is back


class FailAtFitEnd(Callback):
    """Stands in for a crash after the last epoch was saved, before the fit ended."""

    def on_fit_end(self, trainer):
        raise RuntimeError("crash after the last epoch")


def test_swa_run_keeps_the_average_and_resumes_bit_identical(tmp_path, small_data):
    """Cut off mid-average, and again after its last epoch: the same weights, the same
    averaged model and the same verdict of validation as a run that went straight through."""
    import keras

    from digits.errors import CallbackRaised

    hps = {"filters": 4, "dense_units": 32}
    options = {"swa_epochs": 2, "swa_lr": 5e-4, "limit_val_batches": 4}
    trainer = make_trainer(tmp_path, "straight", **options)
    straight = fit(trainer, small_data, **hps)
    averaged = trainer.averaged
    assert averaged["epochs"] == [3, 4] and averaged["batch_norm_batches"] == 4
    assert set(averaged) >= {"val_loss", "val_accuracy", "kept"}
    assert trainer.run.read_json("metrics.json")["averaged"] == json_round_trip(averaged)
    checkpoint = next(c for c in trainer.callbacks if type(c).__name__ == "Checkpoint")
    saved = keras.saving.load_model(trainer.run.file("model.keras"), compile=False)
    if averaged["kept"]:
        assert checkpoint.best_label == "the mean of epochs 3-4" and checkpoint.best_epoch == 4
        for a, b in zip(saved.get_weights(), straight.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    else:
        assert averaged["val_loss"] >= checkpoint.best and checkpoint.best_label is None
    with pytest.raises(CallbackRaised):
        fit(make_trainer(tmp_path, "resumed", [CrashAt(3)], **options), small_data, **hps)
    with pytest.raises(CallbackRaised):  # resumed from epoch 3, cut off again after epoch 4
        fit(make_trainer(tmp_path, "resumed", [FailAtFitEnd()], **options), small_data, **hps)
    last = make_trainer(tmp_path, "resumed", **options)
    resumed = fit(last, small_data, **hps)
    assert last.resumed_from_epoch == 4
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert {k: v for k, v in last.averaged.items() if k != "seconds"} == \
        {k: v for k, v in averaged.items() if k != "seconds"}


def json_round_trip(value):
    import json

    return json.loads(json.dumps(value))


# -- the hooks averaging uses, open to any callback -------------------------------------------


class Counted(Callback):
    """A plugin keeping a variable in the run's state (`state_variables`) that it advances just
    before each save (`on_before_state_save`), and asking the optimizer for an option."""

    def __init__(self, option: dict | None = None) -> None:
        super().__init__()
        self.option = option or {}
        self.variable = None

    def optimizer_options(self, trainer, steps_per_epoch):
        return self.option

    def state_variables(self, trainer):
        import keras

        self.variable = keras.Variable(0, dtype="int64", trainable=False, name="counted")
        return [self.variable]

    def on_before_state_save(self, trainer, epoch):
        self.variable.assign(self.variable.numpy() * 10 + epoch + 1)


def test_a_plugins_state_variables_are_saved_each_epoch_and_restored_on_resume(tmp_path,
                                                                             small_data):
    from digits.errors import CallbackRaised

    with pytest.raises(CallbackRaised):
        fit(make_trainer(tmp_path, "r", [Counted(), CrashAt(2)]), small_data, filters=4)
    counted = Counted()
    trainer = make_trainer(tmp_path, "r", [counted])
    fit(trainer, small_data, filters=4)
    assert trainer.resumed_from_epoch == 2
    assert int(counted.variable.numpy()) == 1234  # epochs 1-2 saved and restored, 3-4 added


def test_optimizer_options_reach_the_optimizer_and_may_not_clash(tmp_path, small_data):
    from digits.errors import ConfigError

    trainer = make_trainer(tmp_path, "o", [Counted({"weight_decay": 0.01})], max_epochs=1)
    model = fit(trainer, small_data, filters=4)
    assert model.optimizer.weight_decay == pytest.approx(0.01)
    trainer = make_trainer(tmp_path, "o2", [Counted({"clipnorm": 1.0}),
                                            Counted({"clipnorm": 2.0})], max_epochs=1)
    with pytest.raises(ConfigError, match="both set the optimizer's 'clipnorm'"):
        fit(trainer, small_data, filters=4)


def test_a_model_compiled_with_use_ema_is_validated_with_its_averages(tmp_path, small_data):
    import keras

    from digits.callbacks.ema import EMA
    from digits.callbacks.swa import StochasticWeightAveraging
    from digits.errors import ConfigError

    watch = ValidationWeights()
    trainer = make_trainer(tmp_path, "own", [watch], max_epochs=2)
    model = trainer.build_model("cnn", filters=4, dense_units=32)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, use_ema=True, ema_momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    trainer.fit(model, small_data)
    assert [type(c).__name__ for c in trainer.callbacks][0] == "EMA"
    assert all(not np.array_equal(in_model, kept) for in_model, kept in watch.seen)
    with pytest.raises(ConfigError, match="two ways of averaging"):
        _ = make_trainer(tmp_path, "both", [EMA(0.9), StochasticWeightAveraging(1, 1e-3)]).callbacks
