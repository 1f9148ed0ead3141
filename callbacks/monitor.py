"""One rule for "is this epoch better": the base of every callback that watches a metric.

Keras' `MonitorCallback` is the anchor: a metric name, a direction ("min", "max", or "auto":
"min" for losses, "max" otherwise) and a smallest change that counts. The checkpoint and
early stopping derive from `MonitorCallback`; the tuner takes its objective's direction from
`monitor_mode`. A monitored metric missing from the first epoch's logs is a `MonitorError`
naming the metrics that are there (a typo such as `val_acc` used to train to the end, silently
saving nothing).

Example:
    >>> class BestSoFar(MonitorCallback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         value = self.monitored(logs)
    ...         if self.is_better(value, self.best):
    ...             self.best = value
"""

from __future__ import annotations

import math

from digits.callbacks.base import Callback
from digits.errors import ConfigError

MODES = ("auto", "min", "max")


class MonitorError(ConfigError):
    """A callback monitors a metric the epoch's logs do not have (exit 2: a bad spec)."""


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """The direction in which `monitor` improves: `mode`, or for "auto" "min" for a loss and
    "max" for anything else (accuracy)."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "min" if "loss" in monitor else "max"


class MonitorCallback(Callback):
    """A callback that watches one epoch metric: `monitor`, `mode`, `min_delta`, `best`.

    Args:
        monitor: the epoch log key to watch (e.g. "val_loss", "val_accuracy").
        mode: "min", "max" or "auto" (see `monitor_mode`).
        min_delta: the smallest change that counts as an improvement (default 0).
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0):
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must name a metric, got {monitor!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) \
                or not math.isfinite(min_delta):
            raise ValueError(f"min_delta must be a number, got {min_delta!r}")
        self.monitor = monitor
        self.mode = monitor_mode(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self.best: float | None = None

    def is_better(self, value: float, best: float | None) -> bool:
        """Whether `value` improves on `best` by more than `min_delta` (any finite value
        improves on none)."""
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def monitored(self, logs: dict | None) -> float:
        """The monitored metric in an epoch's `logs`; MonitorError if it is not there."""
        logs = logs or {}
        if self.monitor not in logs:
            who = self.name or type(self).__name__
            raise MonitorError(f"callback {who!r} monitors {self.monitor!r}, which is not among "
                               f"the epoch's metrics: {', '.join(sorted(logs)) or 'none'}")
        return float(logs[self.monitor])
