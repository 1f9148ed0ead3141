"""Each assumption `digits/keras_internals.py` makes about Keras' private parts.

A Keras release that moves one of them fails exactly one of these, naming it.
"""

from __future__ import annotations

import keras
import numpy as np

from digits import keras_internals as internals


def nested_model():
    inner = keras.Sequential([keras.layers.Dense(4), keras.layers.BatchNormalization()],
                             name="inner")
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, activation="softmax")(inner(inputs))
    return keras.Model(inputs, outputs, name="outer")


def test_all_layers_walks_nested_models_and_leaves_the_model_out():
    model = nested_model()
    names = [layer.name for layer in internals.all_layers(model)]
    assert "inner" in names and "outer" not in names
    assert any(isinstance(layer, keras.layers.BatchNormalization)
               for layer in internals.all_layers(model))


def test_the_compiled_metrics_wrapper_keeps_its_groups_in_flat_metrics():
    model = nested_model()
    model.compile(loss="sparse_categorical_crossentropy",
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")])
    model.train_on_batch(np.zeros((4, 3), "float32"), np.zeros(4, "int64"))
    groups = [g for m in model.metrics for g in internals.grouped_metrics(m)]
    assert any(metric.name == "acc" for g in groups for metric in g.metrics)
    assert internals.grouped_metrics(keras.metrics.Mean()) == []


def test_the_optimizer_pairs_each_trainable_variable_with_its_average():
    model = nested_model()
    optimizer = keras.optimizers.Adam(0.1, use_ema=True, ema_momentum=0.5)
    assert internals.optimizer_averages(optimizer) == []  # not built yet
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.train_on_batch(np.ones((4, 3), "float32"), np.zeros(4, "int64"))
    pairs = internals.optimizer_averages(optimizer)
    assert [v.path for v, _ in pairs] == [v.path for v in model.trainable_variables]
    assert all(tuple(v.shape) == tuple(a.shape) for v, a in pairs)
    assert internals.optimizer_averages(keras.optimizers.Adam()) == []
