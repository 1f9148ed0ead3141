"""Models: every named model builds from hyperparameters; bad hyperparameters are refused."""

from __future__ import annotations

import pytest

from digits.errors import ModelError
from digits.models import MODELS, build_model, model_hyperparameters


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_maps_images_to_ten_probabilities(name, small_data):
    import numpy as np

    model = build_model(name)
    out = np.asarray(model(small_data.val.x[:4], training=False))
    assert out.shape == (4, 10)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_seed_cnn_is_the_notebook_architecture():
    model = build_model("seed-cnn")
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds == ["Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout",
                     "Dense", "Activation"]
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")] == [32, 64]


def test_cnn_has_batchnorm_augmentation_dropout_and_its_hyperparameters_apply():
    model = build_model("cnn", conv_blocks=3, filters=8, augment=0.5)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"BatchNormalization", "RandomRotation", "RandomTranslation", "RandomZoom",
            "Dropout"} <= kinds
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")][::2] == [8, 16, 32]
    for layer in model.layers:
        if hasattr(layer, "fill_mode"):
            assert layer.fill_mode == "constant"  # reflect would paint ghost strokes
    assert "RandomRotation" not in {type(la).__name__ for la in build_model("cnn", augment=0).layers}


@pytest.mark.parametrize("kwargs, message", [
    ({"conv_blocks": 4}, "conv_blocks"),
    ({"filters": 0}, "filters"),
    ({"dropout": 1.5}, "dropout"),
    ({"conv_blocks": 2.5}, "whole number"),
    ({"filterz": 3}, "no hyperparameter"),
    ({"batch_norm": "yes"}, "batch_norm"),
])
def test_bad_hyperparameters_are_refused(kwargs, message):
    with pytest.raises(ModelError, match=message):
        build_model("cnn", **kwargs)


def test_unknown_model_lists_the_names():
    with pytest.raises(ModelError, match="seed-cnn"):
        model_hyperparameters("resnet")


def test_ink_variation_changes_training_images_only_and_compiles_with_xla(small_data, tmp_path):
    import keras
    import numpy as np

    from digits.layers import InkVariation
    from digits.models import load_model

    x = small_data.train.x[:64]
    layer = InkVariation(1.0, seed=3)
    changed = np.asarray(layer(x, training=True))
    assert changed.shape == x.shape and np.isfinite(changed).all()
    assert 0.0 <= changed.min() and changed.max() <= 1.0 and np.abs(changed - x).mean() > 0.005
    assert np.array_equal(np.asarray(layer(x, training=False)), x)
    # Every op has an XLA kernel: Keras compiles with XLA by default on a GPU.
    model = build_model("cnn", filters=4, dense_units=16, augment=0.0, seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True)
    model.fit(x, small_data.train.y[:64], batch_size=32, epochs=1, verbose=0)
    model.save(tmp_path / "ink.keras")
    loaded = load_model(str(tmp_path / "ink.keras"))  # safe mode: a registered layer, no code
    assert loaded.get_layer("ink_variation").strength == 1.0
    keras.backend.clear_session()
