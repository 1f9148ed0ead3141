"""The fit loop: what happens as each epoch starts and ends, in one place, in a stated order.

Keras' `fit` runs the batches and the validation pass; the one Keras callback the Trainer hands
it is this loop's (Lightning's `FitLoop.on_advance_end`, Keras' own epoch loop in
`keras/src/backend/tensorflow/trainer.py`). The steps of an epoch's end are `EPOCH_END`, run by
`FitLoop.on_epoch_end` in that order; to change the order, change it there.
`python -m digits.callbacks --hooks` prints the same steps.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

# What `FitLoop.on_epoch_end` does, in order (its docstring, and --hooks, show this).
EPOCH_END = (
    ("validation per dataset", "with mixed datasets: val_accuracy_<name> of each one's "
                               "validation images into the epoch's logs"),
    ("on_epoch_end", "every callback's on_epoch_end, in their order"),
    ("history", "the epoch's logs into trainer.history; trainer.current_epoch advances"),
    ("on_before_state_save", "every callback's on_before_state_save"),
    ("state_dict", "the run's state saved: variables and every callback's state_dict "
                   "(not after a fault: the last good state is kept)"),
    ("metrics.json", "metrics.json written (status running)"),
)
# Its line in the profiler's table and the bench's callback table: the Trainer's own work.
BOOKKEEPING = "trainer: state + metrics.json"


class FitLoop:
    """One fit's epochs: hands Keras' `fit` the Keras callback that runs every hook.

    Args:
        trainer: the Trainer whose fit this is (its history, epoch count, stop, state).
        dispatcher: runs the callbacks' hooks (`digits.engine.dispatch.Dispatcher`).
        epoch_variable: the variable the training pipeline draws each epoch's order from.
        background: the fit's background writer (`digits.runs.background`), or None.

    What each epoch's end does, in order, is `EPOCH_END`. While the callbacks and the state
    write their files on the background thread, those writes wait until the whole end of the
    epoch has queued them (`FitWrites.held`), so they run beside the next epoch's training.
    Weight averaging acts through the callbacks' hooks (`digits.callbacks.ema`,
    `digits.callbacks.swa`): the loop knows nothing of it.
    """

    def __init__(self, trainer, dispatcher, epoch_variable, background=None) -> None:
        self.trainer = trainer
        self.dispatcher = dispatcher
        self.epoch_variable = epoch_variable
        self.background = background
        self.name = BOOKKEEPING

    def keras_callback(self):
        """The Keras callback for `model.fit`: the dispatcher's bridge, with the epoch's edges
        run by this loop."""
        loop = self

        class Loop(self.dispatcher.keras_class):
            def on_epoch_begin(self, epoch, logs=None):
                loop.epoch_variable.assign(epoch)  # this epoch's data order
                super().on_epoch_begin(epoch, logs)

            def on_epoch_end(self, epoch, logs=None):
                loop.on_epoch_end(epoch, logs, lambda: super(Loop, self).on_epoch_end(epoch, logs))

        return Loop()

    def on_epoch_end(self, epoch: int, logs: dict | None, callbacks_on_epoch_end) -> None:
        """The end of epoch `epoch` (0-based): `EPOCH_END`, in that order."""
        trainer = self.trainer
        state = trainer.state
        # What is queued here starts when the next epoch trains.
        with self.background.held() if self.background is not None else contextlib.nullcontext():
            self._per_dataset(logs)
            callbacks_on_epoch_end()
            with self._timed("on_epoch_end"):
                self._record(epoch, logs)
            self.dispatcher.trainer_hook("on_before_state_save", trainer, epoch)
            with self._timed("on_epoch_end"):
                if trainer.stopped is None or not trainer.stopped.fault:
                    # A faulted epoch (NaN weights) never replaces the last good state.
                    state.save()
                state.write_metrics(status="running", background=True)  # after the state

    def _per_dataset(self, logs: dict | None) -> None:
        """Each mixed dataset's validation accuracy, as `val_accuracy_<name>` in `logs`, so the
        console, history, metrics.json and TensorBoard show it beside the whole's."""
        trainer = self.trainer
        sources = getattr(trainer.data, "val_sources", ())
        if not sources or logs is None:
            return
        predicted = trainer._validation_predictions()
        if predicted is None:
            return
        labels, probabilities = predicted
        right = probabilities.argmax(axis=1) == labels
        for name, first, end in sources:
            end = min(end, len(right))  # --limit-val-batches may cut the split short
            if end > first:
                logs[f"val_accuracy_{name}"] = float(right[first:end].mean())

    def _record(self, epoch: int, logs: dict | None) -> None:
        trainer = self.trainer
        for key, value in (logs or {}).items():
            if np.ndim(value) == 0:
                trainer.history.setdefault(key, []).append(float(value))
        trainer.current_epoch = epoch + 1

    @contextlib.contextmanager
    def _timed(self, hook: str):
        timer = self.dispatcher.timer
        start = time.perf_counter() if timer is not None else 0.0
        try:
            yield
        finally:
            if timer is not None:
                timer.add(self, self.dispatcher.stage, hook, time.perf_counter() - start)
