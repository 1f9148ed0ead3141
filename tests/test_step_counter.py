"""The step counter: each training step counted inside Keras' multi-step compiled call."""

from __future__ import annotations

import keras
import numpy as np

from digits.engine.step_counter import StepCounter


def small_model(steps_per_execution: int) -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", steps_per_execution=steps_per_execution)
    return model


def test_every_step_is_counted_inside_a_call_of_eight_and_the_model_is_left_as_it_was():
    x, y = np.random.default_rng(0).normal(size=(64, 4)), np.arange(64) % 3
    model = small_model(steps_per_execution=8)
    counter, heard, hooks = StepCounter(), [], []
    counter.add_listener(heard.append)

    class Hooks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            hooks.append(batch)

    assert StepCounter.supported(model)
    with counter.attached(model):
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[Hooks()])
    assert hooks == [7, 15] * 2  # Keras' batch hooks: once per compiled call
    assert heard == list(range(1, 33)) and counter.value == 32  # ours: every step
    assert "train_step" not in vars(model)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert counter.value == 32  # detached: no longer counted


def test_not_under_xla():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", "mse", jit_compile=True)
    assert not StepCounter.supported(model)
