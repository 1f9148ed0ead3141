"""Fused batch normalization computes what Keras' BatchNormalization computes, on real digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digits.speed.fusion import fuse_batch_norm, is_fused, unfuse_batch_norm


def small_bn_model(seed: int = 1, policy: str = "float32"):
    """Conv-BN (4-D), Dense-BN (2-D), a sequence BN (3-D) and a channels-first BN (axis=1)."""
    import keras
    from keras import layers

    keras.mixed_precision.set_dtype_policy(policy)
    keras.utils.set_random_seed(seed)
    try:
        inputs = keras.Input((28, 28, 1))
        x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(4)(x)                      # (7, 7, 8)
        seq = layers.Reshape((49, 8))(x)
        seq = layers.BatchNormalization(name="sequence_bn")(seq)
        first = layers.BatchNormalization(axis=1, name="axis1_bn")(seq)  # not the last axis
        x = layers.Flatten()(first)
        x = layers.Dense(16, use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.8, center=False)(x)
        x = layers.Activation("relu")(x)
        x = layers.Dense(10)(x)
        outputs = layers.Activation("softmax", dtype="float32")(x)
        return keras.Model(inputs, outputs)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def twins(policy: str = "float32"):
    keras_path = small_bn_model(policy=policy)
    fused = small_bn_model(policy=policy)
    fused.set_weights(keras_path.get_weights())
    assert fuse_batch_norm(fused) == 3  # the axis=1 layer keeps Keras' own path
    return keras_path, fused


def train_step(model, x, y):
    import keras
    import tensorflow as tf

    with tf.GradientTape() as tape:
        probabilities = model(x, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probabilities))
    grads = tape.gradient(loss, model.trainable_weights)
    return probabilities.numpy(), float(loss), [g.numpy() for g in grads]


@pytest.fixture(scope="module")
def batch(mnist5k):
    return mnist5k.train.x[:64], mnist5k.train.y[:64]


def test_training_outputs_gradients_and_moving_statistics_match_keras(batch):
    x, y = batch
    keras_path, fused = twins()
    reference = small_bn_model(policy="float64")
    reference.set_weights([w.astype("float64") for w in keras_path.get_weights()])
    initial = [w.numpy().copy() for w in fused.non_trainable_weights]
    p_keras, loss_keras, g_keras = train_step(keras_path, x, y)
    p_fused, loss_fused, g_fused = train_step(fused, x, y)

    np.testing.assert_allclose(p_fused, p_keras, atol=1e-5)
    assert loss_fused == pytest.approx(loss_keras, rel=1e-5)
    # Gradients: as close to a float64 computation as Keras' own float32 path is (a BN
    # layer's gamma gradient is a sum with much cancellation, so neither is exact).
    _, _, g_exact = train_step(reference, x.astype("float64"), y)
    grads = zip(keras_path.trainable_weights, g_keras, g_fused, g_exact, strict=True)
    for w, a, b, exact in grads:
        scale = float(np.abs(exact).max())
        keras_error, fused_error = np.abs(a - exact).max() / scale, np.abs(b - exact).max() / scale
        assert fused_error <= max(10 * keras_error, 1e-4), (w.path, fused_error, keras_error)
    # Moving mean and variance (the biased variance, as Keras averages it) after one step.
    pairs = zip(keras_path.non_trainable_weights, fused.non_trainable_weights, initial,
                strict=True)
    for a, b, start in pairs:
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=5e-5, err_msg=a.path)
        assert not np.allclose(b.numpy(), start), f"{b.path} did not move"


def test_inference_uses_the_moving_statistics_as_keras_does(batch):
    x, y = batch
    keras_path, fused = twins()
    for _ in range(3):  # move the statistics away from their initial values
        train_step(keras_path, x, y)
        train_step(fused, x, y)
    np.testing.assert_allclose(fused(x, training=False).numpy(),
                               keras_path(x, training=False).numpy(), atol=1e-5)


def test_a_frozen_layer_normalizes_with_its_moving_statistics_and_keeps_them(batch):
    x, y = batch
    keras_path, fused = twins()
    for model in (keras_path, fused):
        for layer in model.layers:
            if "batch_normalization" in layer.name:
                layer.trainable = False
    before = {w.path: w.numpy().copy() for w in fused.non_trainable_weights}
    p_keras, _, _ = train_step(keras_path, x, y)
    p_fused, _, _ = train_step(fused, x, y)
    np.testing.assert_allclose(p_fused, p_keras, atol=1e-5)
    frozen = [w for w in fused.non_trainable_weights
              if "batch_normalization" in w.path and "moving" in w.path]
    assert len(frozen) == 4  # the conv's and the dense layer's mean and variance
    for w in frozen:
        np.testing.assert_array_equal(w.numpy(), before[w.path])


def test_mixed_bfloat16_keeps_float32_statistics_and_close_outputs(batch):
    x, y = batch
    keras_path, fused = twins(policy="mixed_bfloat16")
    p_keras, _, _ = train_step(keras_path, x, y)
    p_fused, _, _ = train_step(fused, x, y)
    assert p_fused.dtype == np.float32
    np.testing.assert_allclose(p_fused, p_keras, atol=2e-2)  # bfloat16 has 8 bits of mantissa
    for a, b in zip(keras_path.non_trainable_weights, fused.non_trainable_weights, strict=True):
        assert b.dtype == "float32"
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=2e-2, atol=2e-2, err_msg=a.path)


def test_the_saved_model_is_plain_keras_and_predicts_the_same(batch, tmp_path):
    import keras

    x, y = batch
    keras_path, fused = twins()
    train_step(fused, x, y)
    fused.save(tmp_path / "fused.keras")
    loaded = keras.saving.load_model(tmp_path / "fused.keras")
    kinds = {type(layer) for layer in loaded.layers if "batch" in layer.name or "bn" in layer.name}
    assert kinds == {keras.layers.BatchNormalization}
    assert not any(is_fused(layer) for layer in loaded.layers)
    assert json.dumps(loaded.get_config(), sort_keys=True, default=str) == json.dumps(
        fused.get_config(), sort_keys=True, default=str)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), fused.predict(x, verbose=0),
                               atol=1e-6)


def test_fusing_is_idempotent_retraces_and_can_be_undone(batch):
    x, y = batch
    model = small_bn_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    assert model.train_function is not None
    assert fuse_batch_norm(model) == 3
    assert model.train_function is None  # traced with Keras' path: traced again
    assert fuse_batch_norm(model) == 0
    model.fit(x, y, epochs=1, verbose=0)
    assert unfuse_batch_norm(model) == 3
    assert not any(is_fused(layer) for layer in model.layers)
    assert model.train_function is None


def test_the_trainer_fuses_by_default_and_records_it(small_data, tmp_path):
    import digits

    runs = {}
    for fused in (True, False):
        trainer = digits.Trainer(max_epochs=1, log_dir=tmp_path / str(fused), callbacks=[],
                                 enable_checkpointing=False, fused_batch_norm=fused,
                                 verbose=False)
        # The two-block cnn: one epoch of the three-block default is too early to compare.
        model = trainer.build_model("cnn", conv_blocks=2, dropout=0.25, dense_units=128,
                                    augment=1.0)
        history = trainer.fit(model, small_data)
        bn = [layer for layer in model.layers if "batch_normalization" in layer.name]
        assert bn and all(is_fused(layer) == fused for layer in bn)
        config = json.loads((trainer.run.path / "config.json").read_text())
        assert config["trainer"]["fused_batch_norm"] is fused
        runs[fused] = (history.history, trainer.test(model, small_data).accuracy)
    # The same seed and data: the two paths train alike (float rounding apart).
    (fused_history, fused_acc), (keras_history, keras_acc) = runs[True], runs[False]
    assert fused_history["loss"][0] == pytest.approx(keras_history["loss"][0], rel=0.02)
    assert abs(fused_acc - keras_acc) <= 0.05


def test_trainer_predict_leaves_the_callers_model_as_it_found_it():
    import keras

    import digits

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(8), keras.layers.BatchNormalization(),
                              keras.layers.Dense(10, activation="softmax")])
    probabilities = digits.Trainer(verbose=False).predict(model, np.zeros((4, 28, 28, 1)))
    assert probabilities.shape == (4, 10)
    bn = model.layers[-2]
    assert not is_fused(bn) and "call" not in vars(bn)
