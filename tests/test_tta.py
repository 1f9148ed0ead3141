"""Test-time augmentation (`--tta`): shifted and turned copies, averaged, in every reader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digits.recipes import tta
from tests.conftest import run_cli


def test_each_view_moves_the_digit_as_named(mnist5k):
    x = mnist5k.test.x[:16]
    rows = lambda im: (im[..., 0].sum(axis=2) * np.arange(28)).sum(axis=1) / im.sum(axis=(1, 2, 3))  # noqa: E731
    cols = lambda im: (im[..., 0].sum(axis=1) * np.arange(28)).sum(axis=1) / im.sum(axis=(1, 2, 3))  # noqa: E731
    np.testing.assert_allclose(rows(tta.view(x, "down")) - rows(x), 1.0, atol=0.05)
    np.testing.assert_allclose(rows(tta.view(x, "up")) - rows(x), -1.0, atol=0.05)
    np.testing.assert_allclose(cols(tta.view(x, "right")) - cols(x), 1.0, atol=0.05)
    np.testing.assert_allclose(cols(tta.view(x, "left")) - cols(x), -1.0, atol=0.05)
    for name in ("turn-left", "turn-right"):
        turned = tta.view(x, name)
        assert turned.shape == x.shape and turned.dtype == x.dtype
        assert 0.0 <= turned.min() and turned.max() <= 1.0
        assert np.abs(turned - x).mean() > 0.01  # it turned ...
        np.testing.assert_allclose(turned.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)), rtol=0.1)
    assert tta.view(x, "identity") is x
    assert np.array_equal(tta.view(x, "down")[:, 0], np.zeros_like(x[:, 0]))  # black fills in
    with pytest.raises(ValueError, match="unknown view"):
        tta.view(x, "sideways")


def test_probabilities_are_the_mean_over_the_views():
    x = np.random.default_rng(0).random((5, 28, 28, 1)).astype(np.float32)
    seen = []

    def predict(images):
        seen.append(images.copy())
        p = np.zeros((len(images), 10), np.float32)
        p[:, len(seen) - 1] = 1.0  # view k votes for class k
        return p

    p = tta.averaged(predict, x)
    assert len(seen) == len(tta.VIEWS)
    np.testing.assert_allclose(p[:, : len(tta.VIEWS)], 1.0 / len(tta.VIEWS))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert np.array_equal(seen[0], x)


def test_evaluate_and_predict_with_tta_on_a_trained_model(reader_model, mnist5k, tmp_path):
    plain = run_cli("digits.evaluate", "--model", reader_model, "--dataset", "mnist-5k", "--json",
                    "--no-tta")
    averaged = run_cli("digits.evaluate", "--model", reader_model, "--dataset", "mnist-5k",
                       "--json", "--tta")
    assert plain.returncode == 0 and averaged.returncode == 0, averaged.stderr[-2000:]
    plain, averaged = json.loads(plain.stdout), json.loads(averaged.stdout)
    assert "tta" not in plain and averaged["tta"] == list(tta.VIEWS)
    # The same model, a different and still good reading of the 500 held-out digits.
    assert averaged["loss"] != plain["loss"]
    assert abs(averaged["accuracy"] - plain["accuracy"]) < 0.03 and averaged["accuracy"] > 0.9
    from PIL import Image

    path = tmp_path / "seven.png"
    seven = mnist5k.test.x[mnist5k.test.y == 7][0, ..., 0]
    Image.fromarray(255 - (seven * 255).astype(np.uint8)).resize((112, 112)).save(path)
    read = run_cli("digits.predict", "--model", reader_model, "--json", "--tta", str(path))
    assert read.returncode == 0, read.stderr[-2000:]
    assert json.loads(read.stdout)[0]["text"] == "7"


def test_known_identity_probabilities_are_not_predicted_again():
    x = np.random.default_rng(1).random((4, 28, 28, 1)).astype(np.float32)
    calls = []

    def predict(images):
        calls.append(images)
        return np.full((len(images), 10), 0.1, np.float32)

    known = np.zeros((4, 10), np.float32)
    known[:, 3] = 1.0
    p = tta.averaged(predict, x, identity=known)
    assert len(calls) == len(tta.VIEWS) - 1 and not any(c is x for c in calls)
    expected = (known + (len(tta.VIEWS) - 1) * 0.1) / len(tta.VIEWS)
    np.testing.assert_allclose(p, expected, rtol=1e-6)


def test_the_trainers_test_with_features_and_tta_predicts_each_view_once(tmp_path, small_data):
    """The embeddings callback's pass (features and probabilities) is the identity view."""
    from digits.callbacks.embeddings import Embeddings
    from digits.engine.trainer import Trainer

    trainer = Trainer(max_epochs=1, callbacks=[Embeddings()], log_dir=tmp_path,
                      limit_train_batches=1, limit_val_batches=1, verbose=False)
    model = trainer.build_model("cnn", filters=4, conv_blocks=1, dense_units=16)
    trainer.fit(model, small_data)
    predicted = []
    plain = trainer.predict
    trainer.predict = lambda m, x: predicted.append(len(x)) or plain(m, x)
    result = trainer.test(model, small_data, tta=True)
    assert predicted == [len(small_data.test)] * (len(tta.VIEWS) - 1)
    assert result.features is not None and result.tta_views == tta.VIEWS
