"""The callback registry: entry points in the `digits.callbacks` group, and callback specs.

Every callback, built-in or third-party, is found the same way: an installed distribution
declares `name = package.module:ClassOrFactory` under `[options.entry_points] digits.callbacks`,
where a factory is a function marked `__digits_callback_factory__ = True` (no other function is
ever called).

A spec, as given to `--callback`, is `NAME`, `package.module:Class`, or either followed by
keyword arguments as Python literals: `confusion_matrix(every_n_epochs=2)`. Arguments are
parsed with `ast.literal_eval`; nothing is ever evaluated as code.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import sys
from importlib import metadata

from digits.errors import CallbackSpecError

GROUP = "digits.callbacks"

# The callbacks that `digits.train` and every tuner trial use unless told otherwise.
DEFAULT_NAMES = (
    "rich_summary",
    "rich_progress",
    "tensorboard",
    "hparams",
    "confusion_matrix",
    "pr_curves",
    "classification_report",
    "misclassified",
    "embeddings",
    "lr_monitor",
    "nan_guard",
    "plots",
    "rich_report",
    "checkpoint",
)

_SPEC = re.compile(r"^\s*(?P<target>[A-Za-z_][\w.]*(?::[A-Za-z_][\w.]*)?)\s*(?:\((?P<args>.*)\))?\s*$",
                   re.S)


@dataclasses.dataclass(frozen=True)
class Registered:
    """One registered callback: its name, where it comes from, and its entry point."""

    name: str
    value: str
    distribution: str
    entry_point: metadata.EntryPoint

    def load(self):
        try:
            return self.entry_point.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin is reported, not raised through
            raise CallbackSpecError(
                f"callback {self.name!r} ({self.value}) failed to import: {type(e).__name__}: {e}"
            ) from None


def registered() -> dict[str, Registered]:
    """Every callback registered in the `digits.callbacks` entry-point group, by name."""
    found = {}
    for ep in metadata.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        found.setdefault(ep.name, Registered(ep.name, ep.value, dist.name if dist else "?", ep))
    if not found:
        raise CallbackSpecError(
            "no callbacks are registered: install digits itself (pip install -e .) so that its "
            "entry points exist"
        )
    return dict(sorted(found.items()))


def describe(target) -> str:
    """The first line of a callback's docstring."""
    doc = inspect.getdoc(target) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def parse_spec(spec: str) -> tuple[str, dict]:
    """`'name(a=1, b="x")'` -> `('name', {'a': 1, 'b': 'x'})`, with literals only."""
    if not isinstance(spec, str) or not spec.strip():
        raise CallbackSpecError("empty callback spec")
    match = _SPEC.match(spec)
    if not match:
        raise CallbackSpecError(
            f"bad callback spec {spec!r}: expected NAME, module:Class, or either with "
            "(key=value, ...) arguments"
        )
    target, args = match.group("target"), match.group("args")
    kwargs = {}
    if args is not None and args.strip():
        try:
            call = ast.parse(f"f({args})", mode="eval").body
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            raise CallbackSpecError(f"bad arguments in callback spec {spec!r}") from None
        if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
            raise CallbackSpecError(
                f"bad arguments in callback spec {spec!r}: only key=value arguments are allowed"
            )
        for keyword in call.keywords:
            try:
                kwargs[keyword.arg] = ast.literal_eval(keyword.value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise CallbackSpecError(
                    f"bad value for {keyword.arg!r} in callback spec {spec!r}: "
                    "values must be Python literals (numbers, strings, lists, ...)"
                ) from None
    return target, kwargs


def _import_target(target: str):
    module_name, _, attr = target.partition(":")
    # No standard-library module holds a callback, and importing some of them does things
    # (`antigravity` opens a browser); `os:system` and friends are refused before any import.
    if module_name.partition(".")[0] in sys.stdlib_module_names:
        raise CallbackSpecError(f"{target!r} is not a callback: {module_name!r} is a standard-library "
                            "module")
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's spec at fault
        raise CallbackSpecError(f"cannot import {module_name!r} for callback {target!r}: "
                            f"{type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CallbackSpecError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _instantiate(target, label: str, kwargs: dict):
    # Only a class, or a function that declares itself a callback factory, is ever called:
    # `shutil:rmtree(path=...)` must not run just to find out that it returns no callback.
    if not isinstance(target, type) and not getattr(target, "__digits_callback_factory__", False):
        raise CallbackSpecError(f"{label} is not a callback class or factory")
    import keras

    if isinstance(target, type) and not issubclass(target, keras.callbacks.Callback):
        raise CallbackSpecError(f"{label} is a class but not a callback (keras.callbacks.Callback)")
    try:
        inspect.signature(target).bind(**kwargs)
    except TypeError as e:
        raise CallbackSpecError(f"bad arguments for callback {label}: {e}") from None
    except ValueError:
        pass
    try:
        instance = target(**kwargs)
    except CallbackSpecError:
        raise
    except (TypeError, ValueError) as e:
        raise CallbackSpecError(f"bad arguments for callback {label}: {e}") from None
    if not isinstance(instance, keras.callbacks.Callback):
        raise CallbackSpecError(f"{label} did not produce a callback (got {type(instance).__name__})")
    return instance


def create(spec: str):
    """Instantiate a callback from a spec: a registered name or `module:Class`, with arguments.

    Example:
        >>> create("confusion_matrix(every_n_epochs=2)")
        <digits.callbacks.confusion_matrix.ConfusionMatrixImages object at ...>
    """
    target, kwargs = parse_spec(spec)
    if ":" in target:
        instance = _instantiate(_import_target(target), target, kwargs)
        instance.name = getattr(instance, "name", "") or target
        return instance
    available = registered()
    if target not in available:
        raise CallbackSpecError(f"unknown callback {target!r}; available: {', '.join(available)}")
    instance = _instantiate(available[target].load(), target, kwargs)
    try:
        instance.name = target
    except AttributeError:
        pass
    return instance


def default_callbacks() -> list:
    """Fresh instances of the default callbacks, in registry order."""
    return [create(name) for name in DEFAULT_NAMES]


def resolve(names: list[str] | None = None, specs: list[str] | None = None,
            defaults: bool = True) -> list:
    """The callback list for a command line: defaults (unless dropped) + names + specs."""
    chosen: dict[str, object] = {}
    for spec in [*(DEFAULT_NAMES if defaults else ()), *(names or []), *(specs or [])]:
        target, _ = parse_spec(spec)
        # A later spec for the same callback replaces the earlier one (e.g. a default with
        # new arguments) rather than running it twice.
        chosen.pop(target, None)
        chosen[target] = create(spec)
    return list(chosen.values())


def label_of(callback) -> str:
    """A callback's name in tables, listings and errors: its `name`, else its class name."""
    return getattr(callback, "name", "") or type(callback).__name__
