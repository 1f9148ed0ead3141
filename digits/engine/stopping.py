"""Why a fit stopped before its last epoch: a typed signal, never a string to parse.

A callback stops a run through `Trainer.stop(reason, fault=...)` (Lightning's `should_stop` with
its reason, Keras' `stop_training` with a why): the Trainer keeps the first `Stop`, except that a
fault (NaN weights, say) overrides an ordinary stop, and sets `model.stop_training`. Callbacks
read `trainer.stopped` (a `Stop` or None). A fault fails the fit (`TrainingStopped`), keeps the
last good checkpoint and never replaces the last good saved state; an ordinary stop (early
stopping, a pruned trial) ends the fit as finished.

`str(stop)` is the text saved in `metrics.json` and the run's state ("early stopping: ...",
"fault: loss became NaN ..."), and `Stop.from_text` reads it back, in this module only.
"""

from __future__ import annotations

import dataclasses

FAULT_PREFIX = "fault: "


@dataclasses.dataclass(frozen=True)
class Stop:
    """A stop signal: its `reason` (one line for a person) and whether it is a `fault`.

    Example:
        >>> Stop("loss became NaN at epoch 2", fault=True).text
        'fault: loss became NaN at epoch 2'
        >>> Stop.from_text("fault: loss became NaN at epoch 2").fault
        True
    """

    reason: str
    fault: bool = False

    @property
    def text(self) -> str:
        """The reason as saved: a fault's begins with "fault: "."""
        return FAULT_PREFIX + self.reason if self.fault else self.reason

    def __str__(self) -> str:
        return self.text

    @classmethod
    def from_text(cls, text: str | None) -> Stop | None:
        """What `text` (as saved by an earlier epoch) says, or None for no stop."""
        if not text:
            return None
        if text.startswith(FAULT_PREFIX):
            return cls(text.removeprefix(FAULT_PREFIX), fault=True)
        return cls(text)
