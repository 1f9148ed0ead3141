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

__version__ = "0.1.0"

_LAZY = {
    "load_dataset": "digits.data",
    "Dataset": "digits.data",
    "Split": "digits.data",
    "build_model": "digits.models",
    "Trainer": "digits.trainer",
    "RunDirectory": "digits.trainer",
    "TestResult": "digits.results",
    "DigitsError": "digits.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'digits' has no attribute {name!r}")
