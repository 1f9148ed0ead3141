"""The search's live view on a terminal: one display, updated in place, for the whole search.

A table of the trials (running, completed, failed, pruned; the hyperparameters that differ
between them; score, epochs, time), the best so far highlighted; a bar for the search (trials
done of those planned, elapsed time, ETA, and the time budget left); and, for a trial running
in this process, bars for its epochs and for the batches of the current epoch. It fits one
screen: with more trials than rows, the running ones, the best and the latest are shown.

`SearchDisplay` (plain lines) is what a search prints when stdout is not a terminal, or on a
worker; `make_display` chooses. Lines printed while the view is live (a failure's reason, the
time budget running out) appear above it.
"""

from __future__ import annotations

import contextlib
import time

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from digits.callbacks.base import Callback
from digits.callbacks.console import is_plain, make_console, table_box
from digits.tuner.display import SHORT_NAMES, SearchDisplay, format_seconds, format_value
from digits.tuner.space import searched_values


def make_display(objective: str, planned: int | None = None, *, live: bool = True,
                 console: Console | None = None, max_seconds: float | None = None,
                 maximise: bool = True, max_epochs: int | None = None) -> SearchDisplay:
    """The live view on a terminal (when `live`), else plain lines."""
    console = console or make_console()
    if live and not is_plain(console):
        return LiveSearchDisplay(objective, planned, console=console, max_seconds=max_seconds,
                                 maximise=maximise, max_epochs=max_epochs)
    return SearchDisplay(objective, planned, console=console)


class LiveSearchDisplay(SearchDisplay):
    """The search as one live table with progress bars (see the module's docstring).

    Args:
        objective: the objective's name.
        planned: trials planned in all (None when unknown).
        console: a terminal console (default: `make_console()`).
        max_seconds: the search's time budget, shown as time left (None: no budget).
        maximise: whether a higher objective is better (default True).
        max_epochs: a trial's epochs, for "2/4" in a running trial's row (Hyperband's trials
            say their own).

    Example:
        >>> view = LiveSearchDisplay("val_accuracy", planned=3, console=Console(record=True))
        >>> view.trial_started("0", {"filters": 16, "dropout": 0.1})
        >>> view.trial_ended("0", "COMPLETED", score=0.97, seconds=12, epochs=2)
        >>> view.console.print(view.render())
    """

    def __init__(self, objective: str, planned: int | None = None,
                 console: Console | None = None, max_seconds: float | None = None,
                 maximise: bool = True, max_epochs: int | None = None) -> None:
        super().__init__(objective, planned, console)
        self.max_seconds = max_seconds
        self.max_epochs = max_epochs
        self.maximise = maximise
        self.trials: dict[str, dict] = {}
        self.first_started: float | None = None
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(bar_width=30),
                             MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                             console=self.console)
        self.search_task = self.bars.add_task("search", total=planned, note="")
        self.epoch_task = self.bars.add_task("epochs", total=None, note="", visible=False)
        self.batch_task = self.bars.add_task("batches", total=None, note="", visible=False)
        self._live: Live | None = None

    # -- the session ---------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self):
        """Show the view while the search runs; it is replaced by the summary afterwards."""
        with Live(console=self.console, get_renderable=self.render, refresh_per_second=4,
                  transient=True, redirect_stdout=True, redirect_stderr=False) as live:
            self._live = live
            try:
                yield self
            finally:
                self._live = None

    def refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    # -- trial events ----------------------------------------------------------------------

    def trial_started(self, trial_id: str, values: dict, where: str | None = None) -> None:
        now = time.monotonic()
        if self.first_started is None:
            self.first_started = now
        self.trials[str(trial_id)] = {"status": "running", "values": searched_values(values),
                                      "started": now, "where": where, "score": None,
                                      "epochs": None, "seconds": None,
                                      "epochs_planned": values.get("tuner/epochs")}
        self._update_search_bar()
        self.refresh()

    def trial_ended(self, trial_id: str, status: str, score: float | None = None,
                    seconds: float | None = None, epochs: int | None = None,
                    reason: str | None = None, best: tuple[str, float] | None = None,
                    where: str | None = None, retrying: bool = False,
                    pruned: dict | None = None) -> None:
        row = self.trials.setdefault(str(trial_id), {"values": {}, "started": time.monotonic(),
                                                     "where": where})
        if status == "COMPLETED":
            row["status"] = f"pruned@{pruned.get('epoch')}" if pruned else "completed"
        else:
            row["status"] = "retrying" if retrying else "failed"
            # The reason matters more than the row: it stays above the view.
            super().trial_ended(trial_id, status, score=score, seconds=seconds, epochs=epochs,
                                reason=reason, where=where, retrying=retrying)
        row.update(score=score if status == "COMPLETED" else None, seconds=seconds,
                   epochs=epochs)
        self.bars.update(self.epoch_task, visible=False)
        self.bars.update(self.batch_task, visible=False)
        self._update_search_bar()
        self.refresh()

    def trial_callbacks(self) -> list:
        return [TrialProgress(self)]

    def epoch_reported(self, trial_id: str, epoch: int, value: float | None) -> None:
        """A running trial finished `epoch` (1-based) with objective `value` (from the oracle,
        so for a worker's trial too)."""
        row = self.trials.get(str(trial_id))
        if row is None or row["status"] != "running":
            return
        row["epochs"] = epoch
        if value is not None:
            row["score"] = float(value)

    # -- the running trial's epochs (fed by `TrialProgress`) -------------------------------------

    def epoch_started(self, epoch: int, epochs: int | None, steps: int | None) -> None:
        self.bars.update(self.epoch_task, completed=epoch, total=epochs, visible=True,
                         description="epochs")
        self.bars.update(self.batch_task, completed=0, total=steps, visible=True,
                         description=f"epoch {epoch + 1}")

    def batches_done(self, done: int, note: str | None = None) -> None:
        if note is None:
            self.bars.update(self.batch_task, completed=done)
        else:
            self.bars.update(self.batch_task, completed=done, note=note)

    def epoch_ended(self, epoch: int, note: str = "") -> None:
        self.bars.update(self.epoch_task, completed=epoch + 1, note=note)

    # -- rendering ---------------------------------------------------------------------------

    def render(self) -> Group:
        self._update_search_bar()
        return Group(self.table(), self.bars)

    def table(self) -> Table:
        shown, hidden = self._rows_to_show()
        names = self._differing_names()
        table = Table(box=table_box(self.console), title_justify="left",
                      caption=f"{hidden} more trials not shown (running, best and latest are)"
                      if hidden else None)
        for header in ("trial", "status", *(SHORT_NAMES.get(n, n) for n in names),
                       self.objective, "epochs", "time"):
            table.add_column(header, justify="left" if header in ("trial", "status") else "right",
                             no_wrap=True)
        best = self._best_id()
        now = time.monotonic()
        for trial_id in shown:
            row = self.trials[trial_id]
            seconds = row["seconds"] if row["seconds"] is not None else now - row["started"]
            style = {"running": "cyan", "failed": "red", "retrying": "red"}.get(row["status"])
            if row["status"].startswith("pruned"):
                style = "yellow"
            if trial_id == best:
                style = "bold green"
            table.add_row(self.number(trial_id).removeprefix("trial ")
                          + (" *" if trial_id == best else ""),
                          escape(row["status"] + (f" on {row['where']}" if row.get("where")
                                                  and row["status"] == "running" else "")),
                          *(format_value(row["values"].get(n)) for n in names),
                          format_value(row["score"]) if row["score"] is not None else "",
                          self._epochs_text(row),
                          format_seconds(seconds), style=style)
        return table

    def _epochs_text(self, row: dict) -> str:
        if not row["epochs"]:
            return ""
        planned = row.get("epochs_planned") or self.max_epochs
        if row["status"] == "running" and planned:
            return f"{row['epochs']}/{planned}"
        return str(row["epochs"])

    def _rows_to_show(self) -> tuple[list[str], int]:
        order = list(self.trials)
        room = max(5, self.console.height - 9)
        if len(order) <= room:
            return order, 0
        keep = [t for t in order if self.trials[t]["status"] == "running"]
        scored = sorted((t for t in order if self.trials[t]["score"] is not None),
                        key=lambda t: self.trials[t]["score"], reverse=self.maximise)
        for trial_id in [*scored[:max(3, room // 3)], *reversed(order)]:
            if len(keep) >= room:
                break
            if trial_id not in keep:
                keep.append(trial_id)
        shown = [t for t in order if t in keep]
        return shown, len(order) - len(shown)

    def _differing_names(self) -> list[str]:
        seen: dict[str, set] = {}
        for row in self.trials.values():
            for name, value in row["values"].items():
                seen.setdefault(name, set()).add(repr(value))
        differing = [n for n, values in seen.items() if len(values) > 1]
        return differing if differing else list(seen)

    def _best_id(self) -> str | None:
        scored = [(row["score"], t) for t, row in self.trials.items()
                  if row["score"] is not None and row["status"] == "completed"]
        if not scored:
            return None
        return (max if self.maximise else min)(scored)[1]

    def _update_search_bar(self) -> None:
        done = sum(row["status"] not in ("running", "retrying") for row in self.trials.values())
        notes = []
        if self.first_started is not None:
            elapsed = time.monotonic() - self.first_started
            notes.append(f"elapsed {format_seconds(elapsed)}")
            if self.planned and done:
                notes.append(f"eta {format_seconds(elapsed / done * (self.planned - done))}")
            if self.max_seconds is not None:
                notes.append(f"budget left {format_seconds(max(0.0, self.max_seconds - elapsed))}")
        self.bars.update(self.search_task, completed=done, note="  ".join(notes))


class TrialProgress(Callback):
    """In a trial run in this process: feed the live view's epoch and batch bars."""

    name = "search_progress"
    order = 90
    wants_step_counter = True  # the batch bar moves within a compiled multi-step call

    def __init__(self, display: LiveSearchDisplay) -> None:
        super().__init__()
        self.display = display

    def on_train_begin(self, logs=None) -> None:
        if self.trainer is not None:
            self.trainer.step_counter.add_listener(self._step_done)

    def _step_done(self, count: int) -> None:
        self.display.batches_done(self.trainer.step_counter.in_epoch(count))

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.display.epoch_started(epoch, self.params.get("epochs"), self.params.get("steps"))

    def on_train_batch_end(self, batch, logs=None) -> None:
        steps = self.params.get("steps")
        done = batch + 1 if steps is None else min(batch + 1, steps)
        loss = (logs or {}).get("loss")
        self.display.batches_done(done, f"loss {float(loss):.4f}" if loss is not None else "")

    def on_epoch_end(self, epoch, logs=None) -> None:
        value = (logs or {}).get(self.display.objective)
        note = f"{self.display.objective} {float(value):.4f}" if value is not None else ""
        self.display.epoch_ended(epoch, note)
