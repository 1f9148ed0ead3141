"""Epoch and batch progress bars with ETA and live metrics; one line per epoch in the scrollback."""

from __future__ import annotations

import math
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
from rich.text import Text

from digits.callbacks.base import Callback
from digits.callbacks.console import is_plain, make_console

# The epoch line shows these, in this order, when the logs have them.
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


class RichProgress(Callback):
    """Show training progress: a bar for the run and one for the epoch, with ETA and metrics.

    While an epoch runs, the bars show the batches done, the time left and the running loss and
    accuracy. When it ends, one line stays in the scrollback: `epoch 3/10  loss 0.1234
    accuracy 0.9650  val_loss 0.0890  val_accuracy 0.9720  4.2s`. When stdout is not a
    terminal, or `NO_COLOR` is set, only those lines are printed, as plain text, so that CI
    logs stay readable. The Trainer runs `steps_per_execution` batches per compiled call; the
    batch bar still moves batch by batch, from the Trainer's `step_counter` (a plain Keras
    `fit` without the Trainer moves it once per call).

    Args:
        console: a rich Console to write to (default: `digits.callbacks.console.make_console()`,
            created when fitting starts, on stdout).
        metrics: the log keys shown on each epoch line, in order, when present (default:
            loss, accuracy, val_loss, val_accuracy, learning_rate).

    Example:
        >>> trainer = Trainer(max_epochs=3, callbacks=[RichProgress()])
        >>> trainer.fit(trainer.build_model("mlp"), load_dataset("mnist-5k"))
        epoch 1/3  loss 0.5210  accuracy 0.8451  val_loss 0.2803  val_accuracy 0.9180  2.1s
        ...
    """

    order = 90
    console_only = True  # terminal output only: tuner trials leave it out (--trial-console)
    wants_step_counter = False  # True on a terminal: the batch bar moves within a compiled call

    def __init__(self, console: Console | None = None,
                 metrics: tuple[str, ...] | list[str] = EPOCH_METRICS) -> None:
        super().__init__()
        self.console = console
        self.metrics = tuple(metrics)
        self._console: Console | None = None
        self._progress: Progress | None = None
        self._run_task = None
        self._epoch_task = None
        self._epoch_started = 0.0
        self._max_epochs: int | None = None

    # -- fit ------------------------------------------------------------------------------

    def on_fit_start(self, trainer) -> None:
        self._console = self.console or make_console()
        self.wants_step_counter = not is_plain(self._console)
        self._max_epochs = trainer.max_epochs
        done = trainer.resumed_from_epoch or 0
        if trainer.resumed_from_epoch:
            before = "epoch 1 was" if done == 1 else f"epochs 1-{done} were"
            where = f"at epoch {done + 1}/{trainer.max_epochs}" if done < trainer.max_epochs \
                else "with nothing left to train"
            self._print(f"resumed {trainer.run.path} {where} ({before} trained before)",
                        style="yellow")

    def on_train_begin(self, logs=None) -> None:
        if self._console is None:  # used as a plain Keras callback, without the Trainer
            self._console = self.console or make_console()
        if self._max_epochs is None:
            self._max_epochs = self.params.get("epochs")
        if is_plain(self._console):
            return
        done = (self.trainer.resumed_from_epoch or 0) if self.trainer is not None else 0
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _TimesColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self._console,
            transient=True,
        )
        self._run_task = self._progress.add_task("training", total=self._max_epochs, completed=done,
                                                 metrics="", start_completed=done,
                                                 started=time.monotonic())
        self._epoch_task = self._progress.add_task("epoch", total=self.params.get("steps"),
                                                   metrics="", start_completed=0,
                                                   started=time.monotonic())
        if self.trainer is not None:
            self.trainer.step_counter.add_listener(self._step_done)
        self._progress.start()

    def _step_done(self, count: int) -> None:
        """Called on TensorFlow's thread after each training step (see `digits.engine.step_counter`)."""
        progress = self._progress
        if progress is not None:
            progress.update(self._epoch_task, completed=self.trainer.step_counter.in_epoch(count))

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch_started = time.monotonic()
        if self._progress is not None:
            self._progress.reset(self._epoch_task, total=self.params.get("steps"),
                                 description=f"epoch {epoch + 1}/{self._max_epochs}",
                                 metrics="", started=self._epoch_started)

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self._progress is None:
            return
        steps = self.params.get("steps")
        # Keras reports the last batch of each compiled group; the final group may overshoot.
        done = batch + 1 if steps is None else min(batch + 1, steps)
        self._progress.update(self._epoch_task, completed=done,
                              metrics=_format(logs, ("loss", "accuracy")))

    def on_evaluate_begin(self, logs=None) -> None:
        if self._progress is not None:
            self._progress.update(self._epoch_task, metrics="validating...")

    def on_epoch_end(self, epoch, logs=None) -> None:
        seconds = time.monotonic() - self._epoch_started
        # Mixed datasets: each one's validation accuracy after the whole's.
        shown = (*self.metrics, *(k for k in (logs or {})
                                  if k.startswith("val_accuracy_") and k not in self.metrics))
        line = f"epoch {epoch + 1}/{self._max_epochs}  {_format(logs, shown)}  " \
               f"{_duration(seconds)}"
        self._print(line)
        if self._progress is not None:
            self._progress.update(self._epoch_task, metrics=_format(logs, ("loss", "accuracy")))
            self._progress.update(self._run_task, completed=epoch + 1,
                                  metrics=_format(logs, ("val_loss", "val_accuracy")))

    def on_train_end(self, logs=None) -> None:
        self._stop()

    def on_exception(self, trainer, error: BaseException) -> None:
        self._stop()

    def teardown(self, trainer, stage: str) -> None:
        self._stop()

    # -- output -----------------------------------------------------------------------------

    def _print(self, line: str, style: str | None = None) -> None:
        console = self._console or make_console()
        if is_plain(console):
            style = None
        # Printed through the Progress' console, the line lands above the live bars.
        console.print(Text(line, style=style or ""), soft_wrap=True)

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class _TimesColumn(ProgressColumn):
    """Elapsed and remaining time of a task, from its own start (so a resumed run's ETA
    counts only the epochs this process has trained)."""

    def render(self, task) -> Text:
        elapsed = time.monotonic() - task.fields.get("started", time.monotonic())
        done = task.completed - task.fields.get("start_completed", 0)
        text = _clock(elapsed)
        if task.total is not None and done > 0:
            remaining = elapsed / done * (task.total - task.completed)
            text += f" eta {_clock(remaining)}"
        return Text(text, style="progress.remaining")


def _format(logs, keys) -> str:
    parts = []
    for key in keys:
        value = (logs or {}).get(key)
        if value is None:
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        text = f"{value:.3g}" if key == "learning_rate" else f"{value:.4f}"
        parts.append(f"{key} {text}")
    return "  ".join(parts)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else _clock(seconds)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "-:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
