"""Where a run's time went among the callbacks: every callback's every hook, timed.

Lightning's SimpleProfiler for digits: the Trainer's dispatcher times each hook call (the
profiler turns that on; without it no clock is read), and at the end of each stage this
callback prints the table, writes `<run>/profile.txt` and puts it in TensorBoard's Text tab.
The bench's callback-cost table reads the same timings.
"""

from __future__ import annotations

import time

from digits.callbacks.base import Callback
from digits.callbacks.console import make_console, table_box
from digits.callbacks.tensorboard import summary_step, summary_writer
from digits.runs.atomic import atomic_write_text


def rows(timer, stage: str) -> list[tuple[str, str, int, float]]:
    """(callback, hook, calls, seconds) of one stage, the costliest first."""
    found = [(label, hook, timer.calls[(label, s, hook)], seconds)
             for (label, s, hook), seconds in timer.seconds.items() if s == stage]
    return sorted(found, key=lambda row: -row[3])


def table_text(found: list, stage_seconds: float | None) -> str:
    """The rows as a plain-text table, with each row's share of the stage."""
    lines = [f"{'callback':<34} {'hook':<24} {'calls':>6} {'total ms':>10} {'mean ms':>9} "
             f"{'share':>6}"]
    for label, hook, calls, seconds in found:
        share = f"{seconds / stage_seconds:6.1%}" if stage_seconds else "     -"
        lines.append(f"{label[:34]:<34} {hook[:24]:<24} {calls:>6} {seconds * 1e3:>10.1f} "
                     f"{seconds * 1e3 / max(calls, 1):>9.2f} {share:>6}")
    total = sum(row[3] for row in found)
    lines.append(f"{'all callbacks':<34} {'':<24} {sum(r[2] for r in found):>6} "
                 f"{total * 1e3:>10.1f} {'':>9} "
                 f"{(f'{total / stage_seconds:6.1%}' if stage_seconds else '     -'):>6}")
    return "\n".join(lines)


class Profiler(Callback):
    """Print, after each stage, how long every callback spent in every hook.

    At the end of `fit` and of `test` (and `validate`): a table of callback, hook, calls,
    total and mean milliseconds and the share of the stage's wall time, costliest first,
    printed (rich on a terminal, plain in logs), written to `<run>/profile.txt` (every stage
    so far) and to TensorBoard's Text tab as `profile/<stage>`. Work a callback hands to the
    background thread (drawing, writing) is not in its hooks' time, nor are the other
    callbacks' `teardown`s (they come after this one's).

    Args:
        top: rows shown on the console (default 15; the file has them all).

    Example:
        >>> trainer = Trainer(callbacks=[*default_callbacks(), Profiler()])
        >>> # python -m digits.train --callbacks profiler
    """

    needs_trainer = True

    order = 1  # its setup starts the clock first; it tears down while the writers are open
    wants_timings = True  # the Trainer then times every hook call

    def __init__(self, top: int = 15) -> None:
        super().__init__()
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ValueError(f"top must be a whole number >= 1, got {top!r}")
        self.top = top
        self._started: dict[str, float] = {}
        self._reports: dict[str, str] = {}

    def setup(self, trainer, stage: str) -> None:
        self._started[stage] = time.perf_counter()

    def teardown(self, trainer, stage: str) -> None:
        timer = trainer.hook_timer
        if timer is None:
            return
        found = rows(timer, stage)
        seconds = time.perf_counter() - self._started.get(stage, time.perf_counter())
        text = table_text(found, seconds)
        self._reports[stage] = f"{stage}: {seconds:.2f} s\n{text}"
        self._print(stage, found, seconds)
        if trainer.run is None or trainer.fast_dev_run:
            return
        atomic_write_text(trainer.run.file("profile.txt"), "\n\n".join(self._reports.values())
                          + "\n")
        import tensorflow as tf

        writer = summary_writer(trainer, "test" if stage == "test" else "train")
        with writer.as_default():
            tf.summary.text(f"profile/{stage}", "```\n" + self._reports[stage] + "\n```",
                            step=summary_step(trainer))
        writer.flush()

    def _print(self, stage: str, found: list, seconds: float) -> None:
        from rich.table import Table

        console = make_console()
        table = Table(title=f"callback hooks during {stage} ({seconds:.2f} s)",
                      box=table_box(console))
        for column in ("callback", "hook"):
            table.add_column(column)
        for column in ("calls", "total ms", "mean ms", "share"):
            table.add_column(column, justify="right")
        for label, hook, calls, spent in found[: self.top]:
            table.add_row(label, hook, str(calls), f"{spent * 1e3:.1f}",
                          f"{spent * 1e3 / max(calls, 1):.2f}",
                          f"{spent / seconds:.1%}" if seconds else "-")
        console.print(table)


class ProfileBatches(Callback):
    """Record a TensorFlow profiler trace of training batches `start` to `stop` (counted from
    1 over the whole run) for TensorBoard's Profile tab (`pip install -e ".[profile]"`).

    The trace lands in `<run>/plugins/profile/<time>/`. Keras reports batches once per
    compiled call (`steps_per_execution`), so the trace covers whole calls: from the one
    that holds batch `start` to the one that holds batch `stop`. `Trainer(profile_batch=...)`
    and `--profile-batch START,STOP` add this callback and check the range first.

    Example:
        >>> trainer = Trainer(profile_batch=(10, 20))
    """

    order = 0

    def __init__(self, start: int, stop: int) -> None:
        super().__init__()
        if not (isinstance(start, int) and isinstance(stop, int) and 1 <= start <= stop):
            raise ValueError(f"a profile range is two whole numbers 1 <= START <= STOP, got "
                             f"{start!r}, {stop!r}")
        self.start, self.stop = start, stop
        self.tracing = False
        self.traced: tuple[int, int] | None = None  # the batches the trace covers

    def _batches_before(self) -> int:
        return self.trainer.current_epoch * int((self.params or {}).get("steps") or 0)

    def on_train_batch_begin(self, batch, logs=None):
        first = self._batches_before() + batch + 1
        if self.tracing or self.traced is not None or self.trainer.run is None:
            return
        steps = getattr(self.model, "steps_per_execution", 1) or 1
        if first + int(steps) - 1 >= self.start:  # this call holds batch `start`
            import tensorflow as tf

            tf.profiler.experimental.start(str(self.trainer.run.path))
            self.tracing, self.traced = True, (first, first)

    def on_train_batch_end(self, batch, logs=None):
        if not self.tracing:
            return
        last = self._batches_before() + batch + 1
        self.traced = (self.traced[0], last)
        if last >= self.stop:
            self._stop()

    def on_train_end(self, logs=None):
        self._stop()

    def on_exception(self, trainer, error):
        self._stop()

    def _stop(self) -> None:
        if self.tracing:
            import tensorflow as tf

            self.tracing = False
            tf.profiler.experimental.stop()
