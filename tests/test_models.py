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

    from digits.models import load_model
    from digits.models.layers import InkVariation

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


def test_elastic_fields_are_smooth_bounded_and_follow_simard():
    import numpy as np

    from digits.models.layers import elastic_fields

    fields = elastic_fields(64, 28, 28, alpha=34.0, sigma=4.0, seed=0)
    assert fields.shape == (64, 28, 28, 2) and fields.dtype == np.float32
    assert np.array_equal(fields, elastic_fields(64, 28, 28, alpha=34.0, sigma=4.0, seed=0))
    rms = float(np.sqrt((fields ** 2).mean()))
    # Uniform noise in [-1, 1] smoothed by a Gaussian of sigma 4 keeps ~1/14 of its spread:
    # about a pixel and a quarter of displacement at alpha 34, never more than a few pixels.
    assert 0.8 < rms < 2.0 and np.abs(fields).max() < 8.0
    # Smooth: neighbouring pixels move almost together (far less than the fields' spread).
    for axis in (1, 2):
        assert np.abs(np.diff(fields, axis=axis)).mean() < 0.2 * rms
    rough = elastic_fields(64, 28, 28, alpha=34.0, sigma=1.0, seed=0)
    assert np.abs(np.diff(rough, axis=1)).mean() > 2 * np.abs(np.diff(fields, axis=1)).mean()


def test_elastic_distortion_moves_strokes_in_training_only_and_loads_in_safe_mode(small_data,
                                                                                 tmp_path):
    import keras
    import numpy as np

    from digits.models import load_model
    from digits.models.layers import ElasticDistortion

    x = small_data.train.x[:64]
    layer = ElasticDistortion(34.0, seed=3)
    moved = np.asarray(layer(x, training=True))
    assert moved.shape == x.shape and np.isfinite(moved).all()
    assert 0.0 <= moved.min() and moved.max() <= 1.0 + 1e-6
    assert np.abs(moved - x).mean() > 0.01  # strokes moved ...
    ink_before, ink_after = x.sum(axis=(1, 2, 3)), moved.sum(axis=(1, 2, 3))
    assert np.median(np.abs(ink_after / ink_before - 1)) < 0.15  # ... but stayed strokes
    assert np.array_equal(np.asarray(layer(x, training=False)), x)
    assert np.array_equal(np.asarray(ElasticDistortion(0.0)(x, training=True)), x)
    # A zero field is the identity: bilinear sampling at the pixels themselves.
    from digits.models.layers import bilinear_sample

    rows = np.broadcast_to(np.arange(28, dtype=np.float32)[None, :, None], (64, 28, 28))
    cols = np.broadcast_to(np.arange(28, dtype=np.float32)[None, None, :], (64, 28, 28))
    np.testing.assert_allclose(np.asarray(bilinear_sample(x, rows, cols)), x, atol=1e-6)
    model = build_model("cnn", filters=4, dense_units=16, augment=0.0, ink_augment=0.0,
                        elastic=1.0, seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True)
    model.fit(x, small_data.train.y[:64], batch_size=32, epochs=1, verbose=0)  # XLA too
    model.save(tmp_path / "elastic.keras")
    loaded = load_model(str(tmp_path / "elastic.keras"))
    assert loaded.get_layer("elastic_distortion").alpha == 34.0
    np.testing.assert_allclose(np.asarray(loaded(x[:8])), np.asarray(model(x[:8])), atol=1e-6)
    keras.backend.clear_session()
