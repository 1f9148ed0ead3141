"""digits: a Keras 3 trainer for handwritten digit recognition, with pluggable callbacks.

The public names are imported lazily, so `import digits` (and every `--help`) stays free of
TensorFlow until a model is actually built or trained.

Example:
    >>> import digits
    >>> data = digits.load_dataset("mnist-5k")
    >>> trainer = digits.Trainer(max_epochs=3)
    >>> model = trainer.build_model("cnn")
    >>> trainer.fit(model, data)
    >>> print(trainer.test(model, data).accuracy)
"""

from __future__ import annotations

import importlib
import os
import platform
import sys

__version__ = "0.2.0"

# oneDNN's CPU kernels train the CNN ~1.4x faster on the project's 2-core AVX2 machine, but
# TensorFlow only turns them on by itself on some x86 CPUs. TensorFlow reads the switch once,
# when it is imported, so it can only be defaulted here, before that; an explicit setting wins.
# (scripts/bench.py measures it: the "Threads and oneDNN" table.)
if "tensorflow" not in sys.modules and platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

_LAZY = {
    "load_dataset": "digits.data",
    "Dataset": "digits.data",
    "Split": "digits.data",
    "build_model": "digits.models",
    "Trainer": "digits.engine.trainer",
    "RunDirectory": "digits.runs.directory",
    "TestResult": "digits.engine.results",
    "DigitsError": "digits.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'digits' has no attribute {name!r}")
