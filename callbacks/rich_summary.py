"""The model summary as a table, and the run's directory, data and settings, at fit start."""

from __future__ import annotations

import math

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from digits.callbacks.base import Callback
from digits.callbacks.console import is_plain, make_console, table_box


class RichSummary(Callback):
    """Print the model's layers and parameter counts, and where and on what the run trains.

    At the start of `fit`: a table of layers (name, type, output shape, parameters) with the
    total, trainable and non-trainable counts, then a panel with the run directory, the dataset
    and its split sizes, and the Trainer's settings. Plain text when stdout is not a terminal
    or `NO_COLOR` is set.

    Args:
        console: a rich Console to write to (default: `digits.callbacks.console.make_console()`,
            created when fitting starts, on stdout).
        layers: include the per-layer table; False prints only the totals and the panel
            (default True).

    Example:
        >>> trainer = Trainer(callbacks=[RichSummary()])
        >>> trainer.fit(trainer.build_model("cnn"), load_dataset("mnist-5k"))
    """

    order = 10
    console_only = True  # terminal output only: tuner trials leave it out (--trial-console)

    def __init__(self, console: Console | None = None, layers: bool = True) -> None:
        super().__init__()
        self.console = console
        self.layers = layers

    def on_fit_start(self, trainer) -> None:
        console = self.console or make_console()
        console.print(render_model_summary(trainer.model, layers=self.layers, console=console))
        console.print(render_run_panel(trainer, console=console))


def render_model_summary(model, layers: bool = True, console: Console | None = None) -> Table:
    """A table of `model`'s layers (name, type, output shape, parameters) with its totals."""
    plain = console is not None and is_plain(console)
    table = Table(title=f"model {model.name}", box=table_box(console) if console else None,
                  show_footer=False, title_justify="left")
    table.add_column("layer", style="cyan", no_wrap=True)
    table.add_column("type")
    table.add_column("output shape", no_wrap=True)
    table.add_column("params", justify="right")
    trainable = _count(model.trainable_weights)
    non_trainable = _count(model.non_trainable_weights)
    if layers:
        for layer in model.layers:
            table.add_row(layer.name, type(layer).__name__, _output_shape(layer),
                          f"{_count(layer.weights):,}")
        table.add_section()
    style = None if plain else "bold"
    table.add_row("total", "", "", f"{trainable + non_trainable:,}", style=style)
    table.add_row("trainable", "", "", f"{trainable:,}")
    table.add_row("non-trainable", "", "", f"{non_trainable:,}")
    return table


def render_run_panel(trainer, console: Console | None = None) -> Panel:
    """The run directory, the dataset with its split sizes, and the Trainer's settings."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold" if not (console and is_plain(console)) else "", no_wrap=True)
    grid.add_column()
    if trainer.run is not None:
        grid.add_row("run", str(trainer.run.path))
    if trainer.resumed_from_epoch:
        grid.add_row("resumed", f"after epoch {trainer.resumed_from_epoch} of {trainer.max_epochs}")
    if trainer.data is not None:
        data = trainer.data.summary()
        grid.add_row("data", f"{data['name']}: {data['description']}")
        grid.add_row("examples", f"train {data['train']:,}  val {data['val']:,}  "
                                 f"test {data['test']:,}")
    settings = trainer.config.get("trainer", {}) if trainer.config else {}
    shown = {
        "epochs": settings.get("max_epochs", trainer.max_epochs),
        "batch size": settings.get("batch_size", trainer.batch_size),
        "optimizer": _optimizer(trainer),
        "lr schedule": settings.get("lr_schedule", trainer.lr_schedule),
        "precision": settings.get("precision", trainer.precision),
        "strategy": settings.get("strategy") or "default",
        "steps/execution": getattr(trainer.model, "steps_per_execution", None)
        or settings.get("steps_per_execution"),
        "seed": settings.get("seed", trainer.seed),
    }
    limits = {k: v for k, v in (("train", settings.get("limit_train_batches")),
                                ("val", settings.get("limit_val_batches"))) if v}
    if limits:
        shown["batch limits"] = ", ".join(f"{k} {v}" for k, v in limits.items())
    if trainer.fast_dev_run:
        shown["fast_dev_run"] = "on (nothing heavy is written)"
    for key, value in shown.items():
        grid.add_row(key, str(value))
    from digits.callbacks.registry import label_of

    names = [label_of(c) for c in trainer.callbacks]
    grid.add_row("callbacks", ", ".join(names))
    return Panel(Group(grid), title="run", title_align="left",
                 box=table_box(console) if console else None, expand=False)


def _optimizer(trainer) -> str:
    from digits.callbacks.lr_monitor import current_learning_rate

    optimizer = getattr(trainer.model, "optimizer", None)
    if optimizer is None:
        return f"{trainer.optimizer}, learning rate {trainer.learning_rate:g}"
    name = type(getattr(optimizer, "inner_optimizer", optimizer)).__name__
    rate = current_learning_rate(optimizer)
    return f"{name}, learning rate {rate:g}" if rate is not None else name


def _count(weights) -> int:
    return int(sum(math.prod(w.shape) for w in weights))


def _output_shape(layer) -> str:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"
