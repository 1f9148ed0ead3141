"""Keep the best model of a run, by a monitored metric, as `model.keras` in the run directory."""

from __future__ import annotations

import math

from digits.callbacks.monitor import MonitorCallback
from digits.runs.atomic import atomic_path


class Checkpoint(MonitorCallback):
    """Save the best model by a monitored metric to `<run>/model.keras`, atomically.

    Runs last among the callbacks (the Trainer puts it there), so every other callback has
    seen the epoch before the model is written. Its best score is part of the run's state, so a
    resumed run only overwrites the checkpoint with a better model.

    Args:
        monitor: metric to watch (default "val_loss": on a few hundred validation images,
            accuracy moves in steps of 0.2% and often crowns an early, half-trained epoch; the
            loss is the finer signal). With "val_accuracy", ties go to the lower `val_loss`.
        mode: "max" or "min"; "auto" picks "min" for losses, else "max" (default "auto").
            A monitor missing from the first epoch's metrics is an error that lists them.
        filename: file name inside the run directory (default "model.keras").

    Example:
        >>> Trainer(callbacks=[Checkpoint(monitor="val_loss")])
    """

    needs_trainer = True

    order = 100

    def __init__(self, monitor: str = "val_loss", mode: str = "auto",
                 filename: str = "model.keras") -> None:
        super().__init__(monitor, mode)
        if not filename.endswith(".keras") or "/" in filename:
            raise ValueError(f"filename must be a plain name ending in .keras, got {filename!r}")
        self.filename = filename
        self.tie_breaker = "val_loss"
        self.best_loss: float | None = None
        self.best_epoch: int | None = None
        # What the best model is when no epoch ended with it ("the mean of epochs 31-40").
        self.best_label: str | None = None

    def _better(self, value: float, loss: float | None) -> bool:
        if self.best is None:
            return True
        if value == self.best and self.tie_breaker != self.monitor:
            # Accuracy on a few hundred validation images ties often; the later, better
            # converged model wins a tie when its validation loss is lower.
            return loss is not None and (self.best_loss is None or loss < self.best_loss)
        return self.is_better(value, self.best)

    def on_epoch_end(self, epoch, logs=None):
        stopped = self.trainer.stopped if self.trainer is not None else None
        if stopped is not None and stopped.fault:
            # A model that just went NaN can still score a finite val_accuracy (argmax of NaN
            # is class 0); the last good checkpoint must survive it.
            self.monitored(logs)  # a monitor missing from the metrics is still an error
            return
        self._keep_if_better(logs, epoch + 1, None)

    def offer_weights(self, trainer, logs: dict, label: str) -> bool | None:
        """Weights that no epoch ended with (an average, validated with `logs` after the run's
        epochs): saved, as the best, if its monitored metric is better. Returns whether they
        were kept (None: nothing to compare or nowhere to save)."""
        return self._keep_if_better(logs, trainer.current_epoch, label)

    def _keep_if_better(self, logs, epochs: int, label: str | None) -> bool | None:
        """Save the model if `logs` score better than the best so far; whether it did (None:
        not a finite score, or nowhere to save)."""
        value = self.monitored(logs)
        if not math.isfinite(value) or self.trainer is None or self.trainer.run is None \
                or self.trainer.fast_dev_run:
            return None
        loss = (logs or {}).get(self.tie_breaker)
        loss = float(loss) if loss is not None and math.isfinite(float(loss)) else None
        if not self._better(float(value), loss):
            return False
        self.best, self.best_loss, self.best_epoch = float(value), loss, int(epochs)
        self.best_label = label
        with atomic_path(self.trainer.run.file(self.filename), suffix=".keras") as tmp:
            self.model.save(tmp)
        return True

    @property
    def path(self):
        return self.trainer.run.file(self.filename) if self.trainer and self.trainer.run else None

    def state_dict(self) -> dict:
        return {"best": self.best, "best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "monitor": self.monitor}

    def load_state_dict(self, state: dict) -> None:
        if state.get("monitor") == self.monitor:
            self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
            self.best_loss = state.get("best_loss")
