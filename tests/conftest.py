"""Shared fixtures: real data (the embedded 5,000 MNIST digits, the official test set)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_MNIST = ROOT / "digits" / "datasets" / "mnist-test"  # the `mnist-test` spec


@pytest.fixture(scope="session")
def mnist5k():
    """The embedded 5,000 digits, split 4,050 / 450 / 500 (seed 0)."""
    from digits.data import load_dataset

    return load_dataset("mnist-5k")


@pytest.fixture(scope="session")
def small_data(mnist5k):
    """A small real slice for quick trainings: 512 train, 256 validation, 256 test images."""
    from digits.data import Dataset

    return Dataset(mnist5k.train.take(512), mnist5k.val.take(256), mnist5k.test.take(256),
                   "mnist-5k-small", "a slice of the embedded digits")


@pytest.fixture(scope="session")
def centroid_result(mnist5k):
    """A real test result without training: a nearest-centroid classifier on the 500
    held-out embedded digits (real images, real imperfect predictions, in milliseconds)."""
    import numpy as np

    from digits.engine.results import TestResult

    x_train = mnist5k.train.x.reshape(len(mnist5k.train), -1)
    centroids = np.stack([x_train[mnist5k.train.y == k].mean(axis=0) for k in range(10)])
    x_test = mnist5k.test.x.reshape(len(mnist5k.test), -1)
    distances = ((x_test[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    logits = -distances / 4.0
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return TestResult.from_probabilities(mnist5k.test.y, probabilities)


@pytest.fixture(scope="session")
def reader_model(tmp_path_factory, mnist5k):
    """A small CNN trained for four epochs on the embedded digits (their test part held out):
    the model that predict, export and serve are tested with. Returns its .keras path."""
    import digits

    directory = tmp_path_factory.mktemp("reader")
    trainer = digits.Trainer(max_epochs=4, log_dir=directory, callbacks=[],
                             enable_checkpointing=False, verbose=False, seed=0)
    # A plain small CNN of four epochs (InkVariation off: it converges later than four epochs)
    model = trainer.build_model("cnn", filters=16, ink_augment=0.0)
    trainer.fit(model, mnist5k)
    path = directory / "reader.keras"
    model.save(path)
    return str(path)


@pytest.fixture(scope="session")
def official_test_dir():
    if not (OFFICIAL_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"the official MNIST test set is missing at {OFFICIAL_MNIST}")
    return OFFICIAL_MNIST


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <args>` the way a user would, capturing text output."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=input)


def pytest_terminal_summary(terminalreporter):
    """Name the versions the suite ran with (CI's log then says what passed)."""
    from importlib import metadata

    names = ("tensorflow", "keras", "keras-tuner", "numpy", "scikit-learn", "scikit-image",
             "onnxruntime", "ai-edge-litert", "fastapi", "uvicorn", "selenium")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    terminalreporter.write_line(f"ran with Python {sys.version.split()[0]}: " + ", ".join(found))

