"""Shared fixtures: real data (the embedded 5,000 MNIST digits, the official test set)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Under `-n N` the workers (and the commands they start) share the cores: each TensorFlow
    # gets its share instead of every core (with -n 2 on 2 cores: one thread each, a tenth
    # faster than two each; BENCHMARKS.md). Set before anything imports TensorFlow; a
    # command that sets its own threads (the search's workers) still does.
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _share = max(1, (_cores or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(_share))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(_share))

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


@contextlib.contextmanager
def once_per_session(tmp_path_factory, worker_id: str, name: str):
    """A folder for something the whole session makes once: under `-n N` the first worker to
    get here makes it while the others wait on a lock, then all read it (each worker's own
    copy would cost the same training N times). Yields (folder, whether to make it)."""
    if worker_id == "master":  # no xdist: this process is the session
        yield tmp_path_factory.mktemp(name), True
        return
    import fcntl

    shared = tmp_path_factory.getbasetemp().parent / name  # this session's, all workers'
    shared.mkdir(exist_ok=True)
    with open(shared.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done = shared / ".made"
            yield shared, not done.exists()
            done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def reader_model(tmp_path_factory, worker_id, mnist5k):
    """A small CNN trained for four epochs on the embedded digits (their test part held out):
    the model that predict, export and serve are tested with, trained once per session.
    Returns its .keras path."""
    with once_per_session(tmp_path_factory, worker_id, "reader") as (directory, make):
        path = directory / "reader.keras"
        if make:
            import digits

            trainer = digits.Trainer(max_epochs=4, log_dir=directory, callbacks=[],
                                     enable_checkpointing=False, verbose=False, seed=0)
            # A plain small CNN of four epochs (InkVariation off: it converges later than
            # four epochs)
            model = trainer.build_model("cnn", filters=16, ink_augment=0.0)
            trainer.fit(model, mnist5k)
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

