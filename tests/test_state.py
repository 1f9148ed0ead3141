"""The resumable state's variables file: every variable back, exactly, or nothing changed."""

from __future__ import annotations

import numpy as np
import pytest

from digits.runs.variables import load_variables, save_variables, training_variables

SMALL = {"filters": 4, "dense_units": 16}


def trained(data, tmp_path, **hyperparameters):
    from digits.engine.trainer import Trainer

    trainer = Trainer(max_epochs=1, log_dir=tmp_path, batch_size=64, limit_train_batches=3,
                      limit_val_batches=1, verbose=False, callbacks=[])
    model = trainer.build_model("cnn", **{**SMALL, **hyperparameters})
    trainer.fit(model, data)
    return trainer, model


def fresh_like(trainer, **hyperparameters):
    from digits.engine.compiling import compile_model

    model = trainer.build_model("cnn", **{**SMALL, **hyperparameters})
    compile_model(model, trainer.settings, steps_per_epoch=3)  # compiles, builds the optimizer
    return model


def values(model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in training_variables(model)]


def test_every_variable_of_a_trained_model_and_its_optimizer_comes_back(tmp_path, small_data):
    trainer, model = trained(small_data, tmp_path)
    names = [v.path for v in training_variables(model)]
    # The weights, batch-norm statistics, seed states and Adam's moments and step count.
    assert any("moving_variance" in n for n in names)
    assert any(v.name == "seed_generator_state" for v in training_variables(model))
    assert any("iteration" in n for n in names)
    assert len(training_variables(model)) > len(model.weights)
    path = tmp_path / "s.state.npz"
    save_variables(model, path)

    other = fresh_like(trainer)
    assert not all(np.array_equal(a, b) for a, b in zip(values(model), values(other), strict=True))
    load_variables(other, path)
    for a, b in zip(values(model), values(other), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(other.optimizer.iterations.numpy()) == 3
    x = small_data.test.x[:64]
    np.testing.assert_array_equal(model.predict(x, verbose=0), other.predict(x, verbose=0))


def test_a_file_of_another_model_is_refused_and_changes_nothing(tmp_path, small_data):
    trainer, model = trained(small_data, tmp_path)
    path = tmp_path / "s.state.npz"
    save_variables(model, path)
    wider = fresh_like(trainer, dense_units=24)
    before = values(wider)
    with pytest.raises(ValueError, match=r"float32\[.*16\].*float32\[.*24\]"):
        load_variables(wider, path)
    for a, b in zip(before, values(wider), strict=True):
        np.testing.assert_array_equal(a, b)
    deeper = fresh_like(trainer, conv_blocks=2)  # other layers: another count
    with pytest.raises(ValueError, match="it holds .* variables, the model and optimizer have"):
        load_variables(deeper, path)


def test_variables_numpy_cannot_store_keep_their_bits(tmp_path):
    import keras

    def model():
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(3, dtype="bfloat16")(inputs))

    source, target = model(), model()
    source.layers[-1].kernel.assign(np.arange(12, dtype=np.float32).reshape(4, 3) / 7)
    path = tmp_path / "b.state.npz"
    save_variables(source, path)
    load_variables(target, path)
    assert str(target.layers[-1].kernel.dtype) == "bfloat16"
    np.testing.assert_array_equal(np.asarray(source.layers[-1].kernel.numpy(), np.float32),
                                  np.asarray(target.layers[-1].kernel.numpy(), np.float32))
