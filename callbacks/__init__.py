"""Callbacks for the digits Trainer: the plugin base class, the registry, and the built-ins.

Write your own by subclassing `callbacks.Callback`; register it under the `digits.callbacks`
entry-point group to make it available by name (`--callbacks NAME`).
"""

from callbacks.base import Callback

__all__ = ["Callback"]
