"""Callbacks for the digits Trainer: the plugin base class, the registry, and the built-ins.

Write your own by subclassing `digits.callbacks.Callback` (or `digits.callbacks.EveryNEpochs` for work on
every n-th epoch's validation pass); register it under the `digits.callbacks`
entry-point group to make it available by name (`--callbacks NAME`).

`Callback` is imported lazily, so the registry and the console helpers (and with them
`python -m digits.callbacks` and every `--help`) stay free of TensorFlow.
"""

from __future__ import annotations

__all__ = ["Callback", "EveryNEpochs"]


def __getattr__(name: str):
    if name in __all__:
        import digits.callbacks.base

        return getattr(digits.callbacks.base, name)
    raise AttributeError(f"module 'digits.callbacks' has no attribute {name!r}")
