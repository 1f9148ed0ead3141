"""Stop training as a fault when the loss or the weights become NaN or infinite."""

from __future__ import annotations

import math
import sys

from digits.callbacks.base import Callback


class NanGuard(Callback):
    """Stop training when the loss or the weights become NaN or infinite, and fail the run.

    Checks the running loss and the trainable weights each time Keras reports training
    batches (every `steps_per_execution` batches under the Trainer, so "batch B" is the first
    report that saw it), and the epoch's `loss` and `val_loss`. The weights are checked because
    the loss alone can miss a dead model: where oneDNN's ReLU maps NaN to 0 (seen on an AVX-512
    CPU), a NaN pixel poisons the weights through its gradient while the loss stays finite.
    It then stops the run as a fault (`trainer.stop(..., fault=True)`: "loss became NaN at
    epoch E (batch B)" or "weights became ..."), which makes `Trainer.fit` raise
    `TrainingStopped` once Keras has stopped. The checkpoint is not
    overwritten by the broken model: the last good one is kept.

    Args:
        monitor: the log key to check (default "loss"); its `val_` counterpart is checked at
            the end of each epoch too.

    Example:
        >>> trainer = Trainer(learning_rate=10, optimizer="sgd", callbacks=[NanGuard()])
        >>> trainer.fit(trainer.build_model("mlp"), load_dataset("mnist-5k"))
        Traceback (most recent call last):
        digits.engine.trainer.TrainingStopped: loss became NaN at epoch 1 (batch 32)
    """

    # First, so that the stop reason is set before any other callback sees the epoch.
    order = 0

    def __init__(self, monitor: str = "loss") -> None:
        super().__init__()
        self.monitor = monitor
        self.fault: str | None = None
        self._epoch = 0

    def on_train_begin(self, logs=None) -> None:
        self.fault = None

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None) -> None:
        steps = self.params.get("steps") if self.params else None
        # Keras reports the last batch of each compiled group; the final group may overshoot.
        number = batch + 1 if not steps else min(batch + 1, steps)
        self._check(self.monitor, logs, self._epoch, f" (batch {number})")
        self._check_weights(self._epoch, f" (batch {number})")

    def on_epoch_end(self, epoch, logs=None) -> None:
        for key in (self.monitor, f"val_{self.monitor}"):
            self._check(key, logs, epoch, "")
        self._check_weights(epoch, "")

    def _check(self, key: str, logs, epoch: int, where: str) -> None:
        if self.fault is not None:
            return
        value = (logs or {}).get(key)
        if value is None:
            return
        value = float(value)
        if math.isfinite(value):
            return
        kind = "NaN" if math.isnan(value) else "infinite"
        self._stop(f"{key} became {kind} at epoch {epoch + 1}{where}")

    def _check_weights(self, epoch: int, where: str) -> None:
        if self.fault is not None or self.model is None:
            return
        import numpy as np

        for weight in self.model.trainable_weights:
            values = np.asarray(weight)
            if not np.isfinite(values).all():
                kind = "NaN" if np.isnan(values).any() else "infinite"
                self._stop(f"weights became {kind} at epoch {epoch + 1}{where} (layer "
                           f"{weight.path.split('/')[0]!r}) while {self.monitor} stayed finite")
                return

    def _stop(self, fault: str) -> None:
        self.fault = fault
        self.model.stop_training = True
        trainer = self.trainer
        if trainer is not None:
            trainer.stop(self.fault, fault=True)
        print(f"NaN guard: {self.fault}; training stopped. {self._advice()}",
              file=sys.stderr, flush=True)

    def _advice(self) -> str:
        trainer = self.trainer
        kept = ""
        if trainer is not None and trainer.run is not None and not trainer.fast_dev_run:
            from digits.callbacks.checkpoint import Checkpoint

            for c in trainer.callbacks:
                if isinstance(c, Checkpoint) and c.path is not None and c.path.is_file():
                    kept = f"The last good checkpoint is kept: {c.path} (epoch {c.best_epoch}). "
        return kept + "Check the data for NaN or infinite values, or lower the learning rate."
