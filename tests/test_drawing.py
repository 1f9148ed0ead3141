"""digits.callbacks.drawing and the pictures the callbacks draw (confusion matrix, misclassified
grid, curves), and the summary writers, checked without training (`centroid_result`)."""

from __future__ import annotations

import io
import sys
import time
import types

import numpy as np
import pytest
from PIL import Image

from digits.callbacks.drawing import draw_confusion_matrix, render_confusion_matrix
from digits.callbacks.misclassified import draw_misclassified, worst_errors
from digits.callbacks.plots import plot_curves
from digits.callbacks.tensorboard import close_summary_writers, summary_writer
from digits.data import FASHION_CLASSES
from digits.engine.trainer import RunDirectory


def test_confusion_matrix_image_two_panels_at_least_400_pixels_high(centroid_result):
    image = draw_confusion_matrix(centroid_result.confusion_matrix, centroid_result.class_names,
                                  "test confusion matrix")
    assert image.mode == "RGB" and image.height >= 400 and image.width > 1.5 * image.height
    pixels = np.asarray(image)
    # Both colour scales run from near-white to matplotlib's darkest "Blues" (8, 48, 107).
    dark = np.all(np.abs(pixels.astype(int) - (8, 48, 107)) < 12, axis=-1)
    assert dark[:, : image.width // 2].any() and dark[:, image.width // 2:].any()
    png = render_confusion_matrix(centroid_result.confusion_matrix)
    assert Image.open(io.BytesIO(png)).size == image.size


@pytest.mark.parametrize("n", [2, 10, 30])
def test_confusion_matrix_image_for_any_number_of_classes(n):
    matrix = np.diag(np.full(n, 50)) + 1
    image = draw_confusion_matrix(matrix, [f"class {i}" for i in range(n)])
    assert image.height >= 400


def test_long_class_names_are_drawn_turned_and_fit(centroid_result):
    plain = draw_confusion_matrix(centroid_result.confusion_matrix)
    fashion = draw_confusion_matrix(centroid_result.confusion_matrix, FASHION_CLASSES)
    assert fashion.height > plain.height  # room for the turned column labels
    assert fashion.width > plain.width  # and for the row labels


def test_bad_matrices_are_refused():
    with pytest.raises(ValueError, match="square"):
        draw_confusion_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="class names"):
        draw_confusion_matrix(np.eye(3), ["a", "b"])


def test_drawing_costs_a_small_slice_of_an_epoch(centroid_result):
    # Epochs here take ~10 s; the image must stay well under 5% of that.
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        render_confusion_matrix(centroid_result.confusion_matrix, centroid_result.class_names)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.5, timings


def test_worst_errors_are_the_confident_mistakes_first(centroid_result):
    result = centroid_result
    worst = worst_errors(result.y_true, result.probabilities, 25)
    assert len(worst) == 25
    assert np.all(result.y_pred[worst] != result.y_true[worst])
    confidence = result.probabilities[worst, result.y_pred[worst]]
    assert np.all(np.diff(confidence) <= 0)
    wrong = result.y_pred != result.y_true
    assert confidence[0] == pytest.approx(result.probabilities[wrong].max(axis=1).max())


def test_misclassified_grid(mnist5k, centroid_result):
    result = centroid_result
    worst = worst_errors(result.y_true, result.probabilities, 25)
    image = draw_misclassified(mnist5k.test.x[worst], result.y_true[worst],
                               result.probabilities[worst], result.class_names, "worst")
    assert image.height >= 400 and image.width >= 5 * 112
    # The digits are on show: each tile is a 112x112 upscaled image with white strokes.
    assert (np.asarray(image.convert("L")) > 250).sum() > 25 * 50
    nothing = draw_misclassified(np.zeros((0, 28, 28, 1)), [], np.zeros((0, 10)), "0123456789",
                                 "no errors")
    assert nothing.height >= 400


def test_training_curves_use_no_pyplot():
    had_pyplot = "matplotlib.pyplot" in sys.modules
    history = {"loss": [2.0, 1.0, 0.5], "val_loss": [2.1, 1.2, 0.9]}
    png = plot_curves(history, "loss", "loss")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width >= 600
    assert plot_curves(history, "accuracy", "accuracy") is None
    if not had_pyplot:
        assert "matplotlib.pyplot" not in sys.modules


def test_one_writer_per_run_and_split_until_closed(tmp_path):
    trainer = types.SimpleNamespace(run=RunDirectory(tmp_path))
    validation = summary_writer(trainer, "validation")
    assert summary_writer(trainer, "validation") is validation
    assert summary_writer(trainer, "train") is not validation
    close_summary_writers(trainer)
    assert summary_writer(trainer, "validation") is not validation
    close_summary_writers(trainer)
    with pytest.raises(ValueError):
        summary_writer(trainer, "../elsewhere")
