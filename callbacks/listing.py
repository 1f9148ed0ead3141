"""What `python -m digits.callbacks` prints: every registered callback, where it comes from, what it does.

`python -m digits.callbacks --hooks [--callbacks ...] [--callback SPEC] [--no-default-callbacks]`
shows instead, for the callbacks such a `digits.train` run would use, every hook of a run in the
order it happens and which callbacks act in it, in their order (fastai's `show_training_loop`):
a plugin author's first question.

`digits-train --list-callbacks` prints the same list. Descriptions are read from the source
when possible, so listing does not import TensorFlow; a callback whose source cannot be read is
imported to get its docstring, and one that fails to import is listed with the error.

Example:
    $ python -m digits.callbacks
    name            from                                        description
    checkpoint      digits (digits.callbacks.checkpoint:Checkpoint)  Save the best model by ...
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import sys

from digits.callbacks.registry import label_of
from digits.errors import DigitsError


@dataclasses.dataclass(frozen=True)
class CallbackListing:
    """One row of the list: the callback's name, its distribution, its target, its summary."""

    name: str
    distribution: str
    target: str
    description: str


def registered_callbacks() -> list[CallbackListing]:
    """Every callback in the `digits.callbacks` entry-point group, sorted by name.

    Example:
        >>> [c.name for c in registered_callbacks()][:2]
        ['checkpoint', 'classification_report']
    """
    from digits.callbacks.registry import registered

    rows = []
    for name, entry in registered().items():
        rows.append(CallbackListing(name, entry.distribution, entry.value, _description(entry)))
    return rows


def print_callbacks(console=None) -> None:
    """Print the list: a rich table on a terminal, aligned plain lines otherwise."""
    from rich.table import Table

    from digits.callbacks.console import is_plain, make_console, table_box

    console = console or make_console()
    rows = registered_callbacks()
    if is_plain(console):
        name_width = max(len("name"), *(len(r.name) for r in rows))
        source = [f"{r.distribution} ({r.target})" for r in rows]
        source_width = max(len("from"), *(len(s) for s in source))
        lines = [f"{'name':<{name_width}}  {'from':<{source_width}}  description"]
        for row, src in zip(rows, source, strict=True):
            lines.append(f"{row.name:<{name_width}}  {src:<{source_width}}  {row.description}")
        console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(title="registered callbacks (entry-point group digits.callbacks)",
                  title_justify="left", box=table_box(console))
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("from", style="dim", overflow="fold")
    table.add_column("description")
    for row in rows:
        table.add_row(row.name, f"{row.distribution}\n{row.target}", row.description)
    console.print(table)


# A run's hooks in the order they happen: (moment, [hooks]). Keras' end of an evaluation pass
# is `on_test_end` to Keras; digits callbacks take it as `on_evaluate_end`. An epoch's end is
# the fit loop's steps (`digits.engine.loop.EPOCH_END`), the callbacks' among them.
EPOCH_ENDS = "each epoch ends (then the run's state is saved)"
CALLBACK_STEPS = ("on_epoch_end", "on_before_state_save", "state_dict")  # the loop's, theirs
TRAINER_HOOKS = ("optimizer_options", "state_variables", "setup", "on_fit_start",
                 "on_before_state_save", "on_fit_end", "offer_weights", "teardown",
                 "on_exception")
RUN_HOOKS = (
    ("fit starts", ("optimizer_options", "state_variables", "setup", "on_fit_start",
                    "on_train_begin")),
    ("each epoch starts", ("on_epoch_begin",)),
    ("each training batch", ("on_train_batch_begin", "on_train_batch_end")),
    ("each validation pass", ("on_test_begin", "on_test_batch_begin", "on_test_batch_end",
                              "on_test_end")),
    (EPOCH_ENDS, CALLBACK_STEPS),  # shown as the loop's steps
    ("fit ends", ("on_train_end", "on_fit_end", "offer_weights", "teardown")),
    ("test", ("setup", "on_test_end", "teardown")),
    ("a resumed run, before fit starts", ("load_state_dict",)),
    ("anything raised", ("on_exception",)),
)


def hook_rows(callbacks: list) -> list[tuple[str, str, list[str]]]:
    """(moment, hook as the callbacks name it, names of the callbacks acting in it, in order)."""
    from digits.engine.loop import EPOCH_END

    steps = dict(EPOCH_END)
    rows = []
    for moment, hooks in RUN_HOOKS:
        for hook in (steps if moment == EPOCH_ENDS else hooks):
            if hook not in CALLBACK_STEPS and moment == EPOCH_ENDS:
                rows.append((moment, hook, [f"(the trainer: {steps[hook]})"]))
                continue
            if hook in ("state_dict", "load_state_dict"):
                from digits.callbacks.base import Callback

                acting = [c for c in callbacks if getattr(type(c), hook, None) not in
                          (None, getattr(Callback, hook))]
                shown = hook
            else:
                trainer_level = moment == "test" or hook in TRAINER_HOOKS
                acting = [c for c in callbacks if _acts(c, hook, trainer_level)]
                shown = "on_evaluate_" + hook[len("on_test_"):] \
                    if moment == "each validation pass" and hook in ("on_test_begin", "on_test_end") \
                    else hook
            rows.append((moment, shown, [label_of(c) for c in acting]))
    return rows


def _acts(callback, hook: str, trainer_level: bool) -> bool:
    from digits.callbacks.base import Callback
    from digits.engine.dispatch import hook_method

    if trainer_level:  # the Trainer's own hooks reach digits callbacks only
        return isinstance(callback, Callback) and \
            getattr(type(callback), hook, None) is not getattr(Callback, hook)
    return hook_method(callback, hook) is not None


def print_hooks(callbacks: list) -> None:
    """The run's hooks, moment by moment, with the callbacks that act in each."""
    print("callbacks, in the order they run: " + ", ".join(label_of(c) for c in callbacks))
    moment = None
    width = max(len(shown) for _, shown, _ in hook_rows(callbacks))
    for when, shown, acting in hook_rows(callbacks):
        if when != moment:
            print(f"\n{when}")
            moment = when
        print(f"  {shown:<{width}}  {', '.join(acting) if acting else '-'}")


def main(argv: list[str] | None = None) -> int:
    """List the registered callbacks (or a run's hooks); exit 2 with one line on error."""
    from digits import cli

    parser = argparse.ArgumentParser(
        prog="python -m digits.callbacks",
        description="List every callback registered under the digits.callbacks entry-point "
                    "group: built-in and installed plugins, usable by name with --callbacks. "
                    "With --hooks: which callbacks act in each hook of a run, in order.",
    )
    parser.add_argument("--hooks", action="store_true",
                        help="show every hook of a digits.train run with the callbacks "
                             "(chosen as digits.train chooses them) that act in it")
    cli.add_callback_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if args.hooks:
            from digits.callbacks.registry import resolve
            from digits.engine.trainer import Trainer

            chosen = resolve(args.callbacks, args.callback, defaults=not args.no_default_callbacks)
            print_hooks(Trainer(callbacks=chosen, verbose=False).callbacks)
        else:
            print_callbacks()
    except DigitsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _description(entry) -> str:
    module, _, attr = entry.value.partition(":")
    doc = _docstring_from_source(module.strip(), attr.strip())
    if doc is not None:
        return doc
    from digits.callbacks.registry import describe

    try:
        return describe(entry.load())
    except DigitsError as e:
        return f"(failed to import: {e})"


def _docstring_from_source(module: str, attr: str) -> str | None:
    """The first docstring line of `module:attr`, read without importing anything.

    None when the source cannot be found or `attr` is not a class or function defined at the
    top of that module (re-exported, made by a factory, ...): the caller then imports it.
    """
    path = _module_file(module)
    if path is None or "." in attr or not attr:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == attr:
            doc = (ast.get_docstring(node) or "").strip()
            return doc.splitlines()[0] if doc else ""
    return None


def _module_file(module: str) -> str | None:
    # `importlib.util.find_spec("a.b")` would import package `a` (and with it TensorFlow), so
    # walk the package path one part at a time instead.
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
        for i in range(1, len(parts)):
            if spec is None or not spec.submodule_search_locations:
                return None
            spec = _find_spec(".".join(parts[: i + 1]), list(spec.submodule_search_locations))
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return spec.origin


def _find_spec(name: str, path: list[str]):
    # What `import` asks, without executing the parents: every finder on sys.meta_path in turn,
    # so a package mapped to another folder (`digits.callbacks` is the checkout's `callbacks/`,
    # found by setuptools' editable finder) is found as well as one inside its parent.
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        spec = find_spec(name, path) if find_spec is not None else None
        if spec is not None:
            return spec
    return None
