"""digits.engine.compiling: how the Trainer compiles a model (the bench's contenders compile alike)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from digits.engine.compiling import build_optimizer, compile_model, make_optimizer
from digits.engine.config import TrainerSettings
from digits.engine.trainer import Trainer
from digits.models import build_model


def small_model():
    return build_model("mlp", hidden_units=16)


def test_an_uncompiled_model_gets_the_runs_optimizer_schedule_loss_and_metrics():
    model = small_model()
    spe = compile_model(model, TrainerSettings(max_epochs=5, learning_rate=0.01), steps_per_epoch=10)
    assert spe == 10 and model.steps_per_execution == 10
    assert isinstance(model.optimizer, keras.optimizers.Adam) and model.optimizer.built
    schedule = model.optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert (schedule.initial_learning_rate, schedule.decay_steps) == (0.01, 50)  # the whole run
    assert model.loss.label_smoothing == 0.1
    metrics = [m["class_name"] for m in model.get_compile_config()["metrics"]]
    assert metrics == ["SparseCategoricalAccuracy", "StreamingConfusionMatrix", "StreamingPRCounts"]
    no_matrix = small_model()
    compile_model(no_matrix, TrainerSettings(), 4, confusion_matrix=False)  # XLA cannot take it
    assert len(no_matrix.get_compile_config()["metrics"]) == 1


def test_label_smoothing_zero_compiles_plain_cross_entropy():
    model = small_model()
    compile_model(model, TrainerSettings(label_smoothing=0.0, lr_schedule="constant"), 4)
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    assert float(model.optimizer.learning_rate) == pytest.approx(2e-3)


def test_a_model_the_user_compiled_keeps_their_choices():
    model = small_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    compile_model(model, TrainerSettings(steps_per_execution=3), steps_per_epoch=10)
    assert isinstance(model.optimizer, keras.optimizers.SGD) and model.optimizer.built
    assert model.loss == "sparse_categorical_crossentropy" and model.steps_per_execution == 3


@pytest.mark.parametrize("name, kind", [("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD"),
                                        ("rmsprop", "RMSprop")])
def test_every_optimizer_the_settings_offer_can_be_made(name, kind):
    optimizer = make_optimizer(name, 0.01)
    assert type(optimizer).__name__ == kind
    if name == "sgd":
        assert optimizer.momentum == 0.9 and optimizer.nesterov
    build_optimizer(small_model())  # no optimizer: nothing to build, no error


def test_the_smoothed_loss_is_keras_cross_entropy_of_smoothed_one_hot_targets():
    from digits.engine.metrics import SmoothedSparseCrossentropy

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), size=64).astype("float32")
    labels = rng.integers(0, 10, size=64)
    one_hot = np.eye(10, dtype="float32")[labels]
    for s in (0.0, 0.1, 0.3):
        ours = float(SmoothedSparseCrossentropy(s)(labels, probabilities))
        keras_own = float(keras.losses.CategoricalCrossentropy(label_smoothing=s)(one_hot,
                                                                                 probabilities))
        assert ours == pytest.approx(keras_own, rel=1e-5)
    plain = float(keras.losses.SparseCategoricalCrossentropy()(labels, probabilities))
    assert float(SmoothedSparseCrossentropy(0.0)(labels, probabilities)) == pytest.approx(plain,
                                                                                         rel=1e-5)
    # Smoothing raises the loss of confident, right predictions: the late-training effect.
    confident = np.eye(10, dtype="float32")[labels] * 0.999 + 0.0001
    assert float(SmoothedSparseCrossentropy(0.1)(labels, confident)) > \
        float(SmoothedSparseCrossentropy(0.0)(labels, confident))
    restored = keras.losses.deserialize(keras.losses.serialize(SmoothedSparseCrossentropy(0.2)))
    assert restored.label_smoothing == 0.2


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
@pytest.mark.parametrize("compiled_by", ["trainer", "user"])
def test_the_training_step_is_traced_once_per_fit(tmp_path, small_data, precision, compiled_by):
    """The optimizer's variables exist before Keras traces the step (else it traces it twice).

    A metric given as a string ("accuracy") is built inside the first trace and costs a second
    one too, so the Trainer compiles metric objects; a user's own compile keeps its choice.
    """
    try:
        trainer = Trainer(max_epochs=2, callbacks=[], log_dir=tmp_path, precision=precision,
                          batch_size=64, limit_train_batches=3, limit_val_batches=1,
                          verbose=False)
        model = trainer.build_model("cnn", filters=4, dense_units=16)
        if compiled_by == "user":
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                          metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        traced = {"train": 0, "test": 0}
        train_step, test_step = model.train_step, model.test_step

        def counted(kind, step):
            def run(data):
                traced[kind] += 1  # Python runs only while TensorFlow traces
                return step(data)
            return run

        model.train_step = counted("train", train_step)
        model.test_step = counted("test", test_step)
        trainer.fit(model, small_data)
        assert traced == {"train": 1, "test": 1}
        steps = int(model.optimizer.iterations.numpy())
        if precision == "mixed_float16":
            # A step whose scaled gradients overflow float16 is skipped and the loss scale
            # halved from its initial 2**15: dynamic loss scaling at work, not a lost step.
            steps += round(math.log2(2**15 / float(model.optimizer.dynamic_scale.numpy())))
        assert model.optimizer.built and steps == 6
        assert trainer.history["accuracy"] and trainer.history["val_accuracy"]
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
