"""An example digits callback plugin: records what the Trainer did, one JSON line per event."""

from __future__ import annotations

import json
import math
import os
import time

from digits.callbacks import Callback

ENV_VAR = "DIGITS_NOTIFY_FILE"


class Notify(Callback):
    """Append a JSON line for fit start, each epoch's metrics, fit end and the test result.

    Args:
        path: the file to append to (default: `$DIGITS_NOTIFY_FILE`, else
            `digits-notify.jsonl` in the run directory).

    Example:
        >>> from digits.callbacks.registry import create
        >>> trainer = Trainer(callbacks=[create('notify(path="events.jsonl")')])
    """

    order = 70

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        self.path = path

    def on_fit_start(self, trainer) -> None:
        self._write("on_fit_start", run=str(trainer.run.path) if trainer.run else None,
                    max_epochs=trainer.max_epochs, resumed_from_epoch=trainer.resumed_from_epoch)

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._write("on_epoch_end", epoch=epoch + 1, logs=_scalars(logs))

    def on_fit_end(self, trainer) -> None:
        self._write("on_fit_end", epochs=trainer.current_epoch, stop_reason=trainer.stop_reason)

    def on_test_end(self, trainer, result) -> None:
        self._write("on_test_end", accuracy=result.accuracy, examples=len(result.y_true))

    def _target(self) -> str:
        if self.path:
            return self.path
        if os.environ.get(ENV_VAR):
            return os.environ[ENV_VAR]
        if self.trainer is not None and self.trainer.run is not None:
            return str(self.trainer.run.file("digits-notify.jsonl"))
        return "digits-notify.jsonl"

    def _write(self, hook: str, **fields) -> None:
        line = json.dumps({"hook": hook, "time": time.time(), **fields})
        with open(self._target(), "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _scalars(logs) -> dict:
    out = {}
    for key, value in (logs or {}).items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        out[key] = value if math.isfinite(value) else None
    return out
