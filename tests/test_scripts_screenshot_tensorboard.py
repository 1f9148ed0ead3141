"""scripts/screenshot_tensorboard.py: TensorBoard's images dashboard, shot by headless Chromium.

Given a run directory holding a confusion-matrix image (written by the confusion_matrix
callback from a real, imperfect classifier), the script starts TensorBoard, screenshots the
Images dashboard and stops it; the PNG shows TensorBoard with the matrix in it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digits.callbacks.confusion_matrix import ConfusionMatrixImages
from digits.engine.results import TestResult
from digits.engine.trainer import RunDirectory

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "screenshot_tensorboard.py"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def run_with_confusion_matrix(tmp_path, mnist5k):
    """A run directory whose test/ holds the confusion matrix of a nearest-centroid classifier."""
    x_train = mnist5k.train.x.reshape(len(mnist5k.train), -1)
    centroids = np.stack([x_train[mnist5k.train.y == k].mean(axis=0) for k in range(10)])
    x_test = mnist5k.test.x.reshape(len(mnist5k.test), -1)
    nearest = ((x_test[:, None, :] - centroids[None]) ** 2).sum(axis=-1).argmin(axis=1)
    result = TestResult.from_probabilities(mnist5k.test.y, np.eye(10)[nearest])
    run = RunDirectory(tmp_path / "digits" / "version_0")
    run.path.mkdir(parents=True)
    trainer = types.SimpleNamespace(run=run, current_epoch=3)
    callback = ConfusionMatrixImages()
    callback.on_test_end(trainer, result)
    callback.teardown(trainer, "test")
    return run.path


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")
def test_screenshot_shows_the_confusion_matrix(run_with_confusion_matrix, tmp_path):
    output = tmp_path / "shots" / "tensorboard.png"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(run_with_confusion_matrix), "--output", str(output)],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert str(output) in done.stdout

    image = Image.open(output)
    assert image.format == "PNG" and image.size == (2800, 2000)  # 1400x1000 at 2x
    pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.std() > 20, "the screenshot is blank"
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    tensorboard_orange = (r > 230) & (np.abs(g - 124) < 20) & (b < 30)
    assert tensorboard_orange.sum() > 10_000, "no TensorBoard header"
    matrix_blue = (b > 90) & (b > r + 60) & (r < 80)
    assert matrix_blue.sum() > 2_000, "no confusion matrix in the images dashboard"


def test_usage_errors_exit_2_before_starting_anything(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a directory" in done.stderr
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--chromium",
                           str(tmp_path / "no-chromium")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Chromium not found" in done.stderr
