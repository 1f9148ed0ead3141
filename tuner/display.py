"""What a search prints: one line per trial event, and the table of the best trials.

On a terminal the lines are coloured and the table is a rich Table; when stdout is not a
terminal (or `NO_COLOR` is set) they are plain lines and a plain text table, never wrapped, so
logs stay greppable. On a terminal the search shows the live view of `digits.tuner.live` instead of
the per-trial lines.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from digits.callbacks.console import is_plain, make_console, table_box
from digits.tuner.space import searched_values

# Short column headers for the summary table, in the search space's order.
SHORT_NAMES = {
    "conv_blocks": "blocks", "filters": "filters", "kernel_size": "kernel",
    "convs_per_block": "convs", "batch_norm": "bn", "dropout": "drop",
    "dense_units": "dense", "dense_dropout": "d.drop", "augment": "aug",
    "optimizer": "opt", "learning_rate": "lr",
}


def format_value(value) -> str:
    """A hyperparameter or score, short: 0.001234 -> '0.001234', 0.25 -> '0.25'."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def format_values(values: dict) -> str:
    """`name=value ...` of the searched values, in the search space's order."""
    return " ".join(f"{k}={format_value(v)}" for k, v in searched_values(values).items())


def plural(n: int, word: str) -> str:
    """'1 epoch', '3 epochs'."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class SearchDisplay:
    """Prints a search's events for one process (a lone search, the chief, or a worker).

    Args:
        objective: the objective's name (e.g. "val_accuracy").
        planned: trials planned in all (None when unknown).
        console: where to write (default: `digits.callbacks.console.make_console()`).

    Example:
        >>> display = SearchDisplay("val_accuracy", planned=10)
        >>> display.trial_started("03", {"filters": 32}, where="tuner0")
    """

    def __init__(self, objective: str, planned: int | None = None,
                 console: Console | None = None) -> None:
        self.objective = objective
        self.planned = planned
        self.console = console or make_console()
        self.plain = is_plain(self.console)

    def session(self):
        """A context around the search (the live view's; plain lines need none)."""
        return contextlib.nullcontext(self)

    def trial_callbacks(self) -> list:
        """Callbacks a trial run in this process adds for this display (the live view's bars)."""
        return []

    def epoch_reported(self, trial_id: str, epoch: int, value: float | None) -> None:
        """A running trial finished `epoch` (1-based): lines print nothing for it."""

    def line(self, text: str, style: str | None = None) -> None:
        """Print one line (markup allowed; escape user text), never wrapped."""
        self.console.print(text, style=None if self.plain else style, soft_wrap=True,
                           highlight=False)

    def number(self, trial_id: str) -> str:
        """'trial 3/10' for trial id '02' (keras-tuner numbers trials from 0)."""
        try:
            n = int(trial_id) + 1
        except (TypeError, ValueError):
            return f"trial {trial_id}"
        return f"trial {n}/{self.planned}" if self.planned else f"trial {n}"

    def trial_started(self, trial_id: str, values: dict, where: str | None = None) -> None:
        epochs = ""
        if "tuner/epochs" in values:
            start, end = values.get("tuner/initial_epoch", 0), values["tuner/epochs"]
            epochs = f"; epochs {start + 1}-{end}" if end > start + 1 else f"; epoch {end}"
            if values.get("tuner/trial_id") is not None:
                epochs += f", continuing trial {values['tuner/trial_id']}"
        on = f" on {escape(where)}" if where else ""
        self.line(f"[bold]{self.number(trial_id)}[/] (id {escape(str(trial_id))}) started{on}: "
                  f"{escape(format_values(values))}{escape(epochs)}")

    def trial_ended(self, trial_id: str, status: str, score: float | None = None,
                    seconds: float | None = None, epochs: int | None = None,
                    reason: str | None = None, best: tuple[str, float] | None = None,
                    where: str | None = None, retrying: bool = False,
                    pruned: dict | None = None) -> None:
        on = f" on {escape(where)}" if where else ""
        took = f" in {format_seconds(seconds)}" if seconds is not None else ""
        if epochs:
            took += f" ({plural(epochs, 'epoch')})"
        head = f"[bold]{self.number(trial_id)}[/]"
        if status == "COMPLETED" and pruned:
            text = (f"{head} [yellow]pruned[/] at epoch {pruned.get('epoch')}{on}{took}: "
                    f"{escape(str(pruned.get('reason')))}")
        elif status == "COMPLETED":
            text = (f"{head} completed{on}{took}: {self.objective} "
                    f"[green]{format_value(score)}[/]")
        else:
            what = "failed, to be retried" if retrying else "failed"
            text = f"{head} [red]{what}[/]{on}{took}: {escape(reason or 'no reason given')}"
        if best is not None:
            text += f"; best so far {format_value(best[1])} (trial {escape(str(best[0]))})"
        self.line(text)

    def summary_table(self, rows: Sequence[dict], names: Sequence[str], title: str) -> None:
        """The best trials: rank, trial, score, epochs, time, then one column per hyperparameter
        (or, on a terminal too narrow for those, one wrapping column of them all).

        Each row: {"trial_id", "score", "epochs", "seconds", "values": {name: value}}.
        """
        headers = ["#", "trial", self.objective, "epochs", "time"]
        firsts = [[str(rank), str(row["trial_id"]), format_value(row["score"]),
                   (str(row["epochs"]) if row.get("epochs") else "?")
                   + (" pruned" if row.get("pruned") else ""),
                   format_seconds(row.get("seconds"))] for rank, row in enumerate(rows, 1)]
        values = [[format_value(row["values"].get(n)) for n in names] for row in rows]
        if self.plain:
            self.console.print(title, soft_wrap=True, highlight=False, markup=False)
            table = plain_table([*headers, *(SHORT_NAMES.get(n, n) for n in names)],
                                [a + b for a, b in zip(firsts, values, strict=True)])
            self.console.print(table, soft_wrap=True, highlight=False, markup=False)
            return
        wide = self._table(title, headers)
        for name in names:
            wide.add_column(SHORT_NAMES.get(name, name), justify="right", no_wrap=True)
        for first, rest in zip(firsts, values, strict=True):
            wide.add_row(*first, *rest)
        unbounded = self.console.options.update(max_width=100_000)
        if Measurement.get(self.console, unbounded, wide).maximum <= self.console.width:
            self.console.print(wide)
            return
        narrow = self._table(title, headers)
        narrow.add_column("hyperparameters", overflow="fold", ratio=1)
        for first, rest in zip(firsts, values, strict=True):
            narrow.add_row(*first, "  ".join(f"{SHORT_NAMES.get(n, n)}={v}"
                                             for n, v in zip(names, rest, strict=True)))
        self.console.print(narrow)

    def _table(self, title: str, headers: Sequence[str]) -> Table:
        table = Table(title=title, box=table_box(self.console), title_justify="left")
        for i, header in enumerate(headers):
            table.add_column(header, justify="left" if i == 1 else "right",
                             style="green" if i == 2 else None, no_wrap=True)
        return table


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: columns padded to their widest cell, a rule under the header."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(str(h).rjust(w) for h, w in zip(headers, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
