"""After testing: the classification report and a shaded confusion matrix, as console tables."""

from __future__ import annotations

import numpy as np
from rich import box
from rich.color import Color
from rich.console import Console, Group, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text

from digits.callbacks.base import Callback
from digits.callbacks.console import is_plain, make_console


class RichReport(Callback):
    """Print the test accuracy, the per-class report and a colour-shaded confusion matrix.

    Runs on `Trainer.test`'s result, so nothing is predicted twice. The confusion matrix's
    cells are shaded by their share of the row (the true class): the diagonal green, errors
    red, stronger for more. Plain text (scikit-learn's report layout and a count grid) when
    stdout is not a terminal or `NO_COLOR` is set. `digits.evaluate` prints the same report
    through `print_report`.

    Args:
        console: a rich Console to write to (default: `digits.callbacks.console.make_console()`,
            created when the report is printed, on stdout).
        title: the heading above the report (default "test").

    Example:
        >>> trainer = Trainer(max_epochs=3, callbacks=[RichReport()])
        >>> trainer.fit(model, data)
        >>> trainer.test(model, data)
    """

    order = 80
    console_only = True  # terminal output only: tuner trials leave it out (--trial-console)

    def __init__(self, console: Console | None = None, title: str = "test") -> None:
        super().__init__()
        self.console = console
        self.title = title

    def on_test_end(self, trainer, result) -> None:
        print_report(result, self.console or make_console(), title=self.title)


def print_report(result, console: Console | None = None, title: str = "test") -> None:
    """Print `result` (a `TestResult`) to `console`: tables when it is rich, text when plain.

    Example:
        >>> print_report(trainer.test(model, data))
    """
    console = console or make_console()
    if is_plain(console):
        console.print(Text(report_text(result, title)), soft_wrap=True)
    else:
        console.print(render_report(result, title))


def render_report(result, title: str = "test") -> RenderableType:
    """The accuracy line, the classification report table and the confusion matrix table."""
    return Group(
        Text.assemble((f"{title} accuracy ", "bold"), (f"{result.accuracy:.4f}", _grade(result.accuracy)),
                      f"  loss {result.loss:.4f}  on {len(result.y_true):,} examples"),
        render_classification_report(result),
        render_confusion_matrix(result),
    )


def render_classification_report(result) -> Table:
    """Per-class precision, recall, F1 and support, then the macro and weighted averages."""
    table = Table(title="classification report", title_justify="left", box=box.ROUNDED)
    table.add_column("class", style="cyan", no_wrap=True)
    for name in ("precision", "recall", "f1-score"):
        table.add_column(name, justify="right")
    table.add_column("support", justify="right")
    averages = [k for k in result.report if k.endswith(" avg")]
    for name, row in result.report.items():
        if name in averages:
            continue
        table.add_row(name, *_scores(row), f"{int(row['support']):,}")
    table.add_section()
    table.add_row("accuracy", "", "", Text(f"{result.accuracy:.4f}", style=_grade(result.accuracy)),
                  f"{len(result.y_true):,}", style="bold")
    for name in averages:
        row = result.report[name]
        table.add_row(name, *_scores(row), f"{int(row['support']):,}")
    return table


def render_confusion_matrix(result) -> Table:
    """The confusion matrix, rows true and columns predicted, cells shaded by row share."""
    matrix = np.asarray(result.confusion_matrix)
    names = list(result.class_names)
    short = all(len(n) <= 3 for n in names)
    table = Table(title="confusion matrix (rows: true, columns: predicted; shaded by row share)",
                  title_justify="left", box=box.ROUNDED, padding=(0, 1))
    table.add_column("true \\ pred", style="cyan", no_wrap=True)
    for i, name in enumerate(names):
        table.add_column(name if short else str(i), justify="right")
    table.add_column("recall", justify="right")
    totals = matrix.sum(axis=1)
    for i, name in enumerate(names):
        label = name if short else f"{i} {name}"
        cells = []
        for j in range(len(names)):
            share = matrix[i, j] / totals[i] if totals[i] else 0.0
            cells.append(Text(str(matrix[i, j]), style=_cell_style(share, i == j)))
        recall = matrix[i, i] / totals[i] if totals[i] else 0.0
        table.add_row(label, *cells, Text(f"{recall:.3f}", style=_grade(recall)))
    return table


def report_text(result, title: str = "test") -> str:
    """The whole report as plain text: accuracy, the classification report, the matrix.

    Example:
        >>> print(report_text(trainer.test(model, data)))
    """
    lines = [f"{title} accuracy {result.accuracy:.4f}  loss {result.loss:.4f}  "
             f"on {len(result.y_true):,} examples", "", "classification report", "",
             result.report_text(), "", "confusion matrix (rows: true, columns: predicted)", ""]
    matrix = np.asarray(result.confusion_matrix)
    names = list(result.class_names)
    short = all(len(n) <= 3 for n in names)
    labels = names if short else [f"{i} {n}" for i, n in enumerate(names)]
    heads = names if short else [str(i) for i in range(len(names))]
    corner = "true\\pred"
    first = max(len(corner), *(len(label) for label in labels))
    width = max(4, len(str(int(matrix.max()))) + 1 if matrix.size else 4,
                *(len(h) + 1 for h in heads))
    lines.append(f"{corner:<{first}}" + "".join(f"{h:>{width}}" for h in heads))
    for label, row in zip(labels, matrix, strict=True):
        lines.append(f"{label:<{first}}" + "".join(f"{int(v):>{width}d}" for v in row))
    return "\n".join(lines)


def _scores(row: dict) -> list[Text]:
    return [Text(f"{row[k]:.4f}", style=_grade(row[k])) for k in ("precision", "recall", "f1-score")]


def _grade(value: float) -> str:
    return "green" if value >= 0.98 else "yellow" if value >= 0.9 else "red"


def _cell_style(share: float, diagonal: bool) -> Style:
    if share <= 0:
        return Style(dim=True)
    if diagonal:
        strength, base = share, (0, 135, 0)
    else:
        # Errors are small shares of a row; scale them up so that a 10% confusion glows.
        strength, base = min(1.0, share * 5), (175, 0, 0)
    strength = 0.2 + 0.8 * strength
    background = Color.from_rgb(*(round(c * strength) for c in base))
    return Style(bgcolor=background, color="white", bold=diagonal)
