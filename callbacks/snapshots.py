"""Save the model at the end of each learning-rate cycle: the members of a snapshot ensemble."""

from __future__ import annotations

from digits.callbacks.base import Callback
from digits.runs.atomic import atomic_path


class CycleSnapshots(Callback):
    """Write `snapshot_<k>.keras` into the run directory at the end of each of `cycles` equal
    cycles of the run (the last epoch of each cosine cycle when the Trainer's `lr_cycles`
    is the same number), for `digits.train --ensemble N --snapshots`.

    A resumed run keeps the snapshots already written; each is written atomically.

    Args:
        cycles: how many equal cycles the run's epochs make (>= 1).

    Example:
        >>> trainer = Trainer(max_epochs=60, lr_cycles=3, callbacks=[CycleSnapshots(3)])
        >>> trainer.fit(model, data)     # -> snapshot_1.keras, snapshot_2.keras, snapshot_3.keras
    """

    needs_trainer = True

    order = 95  # before the checkpoint (100); the run's state is saved after every callback

    def __init__(self, cycles: int) -> None:
        super().__init__()
        self.cycles = int(cycles)

    def on_epoch_end(self, epoch, logs=None):
        trainer = self.trainer
        if trainer is None or trainer.run is None or trainer.fast_dev_run:
            return
        length = trainer.max_epochs // self.cycles
        if (epoch + 1) % length == 0:
            with atomic_path(self.path((epoch + 1) // length), suffix=".keras") as tmp:
                self.model.save(tmp)

    def path(self, k: int):
        """Where snapshot `k` (1-based) of this run lies."""
        return self.trainer.run.file(f"snapshot_{k}.keras")
