"""Callbacks for the digits Trainer: the plugin base class, the registry, and the built-ins.

Write your own by subclassing `callbacks.Callback`; register it under the `digits.callbacks`
entry-point group to make it available by name (`--callbacks NAME`).

`Callback` is imported lazily, so the registry and the console helpers (and with them
`python -m digits.callbacks` and every `--help`) stay free of TensorFlow.
"""

from __future__ import annotations

__all__ = ["Callback"]


def __getattr__(name: str):
    if name == "Callback":
        from callbacks.base import Callback

        return Callback
    raise AttributeError(f"module 'callbacks' has no attribute {name!r}")
