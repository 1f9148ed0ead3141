"""The search space: the CNN's architecture, its optimizer and its learning rate, as data.

Each `Dimension` declares itself on a keras-tuner `HyperParameters` object. The space is plain
data (no TensorFlow, no keras-tuner import), so `--help` can list it and pinned values
(`--hp filters=32`) are checked before anything heavy starts. Every default is the hand-picked
`build_model("cnn")` default, so the hand-picked model is a point of the space.
"""

from __future__ import annotations

import dataclasses

from digits.engine.config import OPTIMIZERS as TRAINER_OPTIMIZERS
from digits.errors import ConfigError

MODEL = "cnn"
OPTIMIZERS = tuple(sorted(TRAINER_OPTIMIZERS))  # the order of the search's choice


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter.

    Args:
        name: the hyperparameter's name: a `build_model("cnn", ...)` argument, or `optimizer` /
            `learning_rate` (which go to the Trainer).
        kind: "int" (a whole-number range), "choice" (listed values), "boolean", or "log"
            (a float range sampled on a log scale).
        values: the choices, or (low, high) for "int" and "log".
        default: the value of the hand-picked model.
        help: what it changes, in a few words.
        by_optimizer: a "log" dimension's own range and default for some optimizers,
            `((optimizers, (low, high), default), ...)`: declared as keras-tuner conditional
            hyperparameters of the same name, one per range, active for their optimizers (the
            others keep `values` and `default`).
    """

    name: str
    kind: str
    values: tuple
    default: object
    help: str
    by_optimizer: tuple = ()

    def ranges(self) -> tuple[tuple[tuple[str, ...], tuple, object], ...]:
        """Each range with its optimizers and default: `by_optimizer`, then the others."""
        named = {o for optimizers, _, _ in self.by_optimizer for o in optimizers}
        rest = tuple(o for o in OPTIMIZERS if o not in named)
        return (*self.by_optimizer, *(((rest, self.values, self.default),) if rest else ()))

    def declare(self, hp):
        """Register this dimension on a keras-tuner `HyperParameters` and return its value.

        With `by_optimizer`, one conditional hyperparameter per range, unless this name is
        already declared unconditionally (a pin, `--hp learning_rate=0.01`, or a project from
        before the ranges): then that one, as before."""
        if self.by_optimizer and not any(h.name == self.name and not h.conditions
                                         for h in hp.space):
            value = None
            for optimizers, (low, high), default in self.ranges():
                with hp.conditional_scope("optimizer", list(optimizers)):
                    drawn = hp.Float(self.name, low, high, sampling="log", default=default)
                value = drawn if drawn is not None else value
            return value
        if self.kind == "int":
            return hp.Int(self.name, self.values[0], self.values[1], default=self.default)
        if self.kind == "boolean":
            return hp.Boolean(self.name, default=self.default)
        if self.kind == "log":
            return hp.Float(self.name, self.values[0], self.values[1], sampling="log",
                            default=self.default)
        ordered = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values)
        return hp.Choice(self.name, list(self.values), ordered=ordered, default=self.default)

    def describe(self) -> str:
        if self.by_optimizer:
            return "; ".join(f"{', '.join(optimizers)} {low:g} to {high:g}"
                             for optimizers, (low, high), _ in self.ranges()) + ", log scale"
        if self.kind in ("int", "log"):
            low, high = self.values
            scale = ", log scale" if self.kind == "log" else ""
            return f"{low:g} to {high:g}{scale}"
        if self.kind == "boolean":
            return "True or False"
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.values)

    def check_pin(self, value, flag: str = "--hp") -> object:
        """Check the type of a pinned value (`--hp NAME=VALUE`, or `flag`'s); the model checks
        its range."""
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise ConfigError(f"{flag} {self.name} must be True or False, got {value!r}")
            return value
        if self.name == "optimizer":
            if value not in OPTIMIZERS:
                raise ConfigError(f"{flag} optimizer must be one of {', '.join(OPTIMIZERS)}, "
                                  f"got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{flag} {self.name} must be a number, got {value!r}")
        whole = self.kind == "int" or all(isinstance(v, int) for v in self.values)
        if whole:
            if not float(value).is_integer():
                raise ConfigError(f"{flag} {self.name} must be a whole number, got {value!r}")
            return int(value)
        return float(value)


SEARCH_SPACE: tuple[Dimension, ...] = (
    Dimension("conv_blocks", "int", (1, 3), 3, "conv blocks (each halves the image)"),
    # 64 would mean 256 filters in a third block: ~10x the default's epoch time, for digits.
    Dimension("filters", "choice", (16, 24, 32, 48), 32, "filters of the first block, doubling"),
    Dimension("kernel_size", "choice", (3, 5), 3, "convolution kernel size"),
    Dimension("convs_per_block", "int", (1, 2), 2, "convolutions before each pooling"),
    Dimension("batch_norm", "boolean", (True, False), True, "BatchNormalization after each conv"),
    Dimension("dropout", "choice", (0.0, 0.1, 0.25, 0.4), 0.0, "dropout after each block"),
    Dimension("dense_units", "choice", (64, 128, 256, 512), 256, "width of the dense layer"),
    Dimension("dense_dropout", "choice", (0.0, 0.2, 0.4, 0.5), 0.4, "dropout before the output"),
    # No 0: trials of a few epochs always score an unaugmented model higher, and it then tests
    # worse once retrained for the full run (98.6% against 99.0%+ here). The final retraining
    # tries it at full length instead (digits.tuner.final_choice); --hp augment=0 pins it off.
    Dimension("augment", "choice", (0.5, 1.0, 1.5), 0.5, "augmentation strength"),
    Dimension("optimizer", "choice", OPTIMIZERS, "adam", "the optimizer"),
    # Each optimizer its own range: SGD with Nesterov momentum wants rates far above Adam's (4
    # epochs on the embedded digits, validation: 0.003 95.3%, 0.01 97.1%, 0.03 97.6%, 0.1
    # 97.8%, 0.3 97.1%; Adam at 0.002 98.0%), and in the one shared range most SGD draws could
    # not learn in a trial (0.00015: 22%). BENCHMARKS.md, "Each optimizer its own rates". From
    # 0.01: every SGD draw below it that the main job's searches tried (0.0037-0.0059, without
    # batch norm) reached 20-70% in its trial and ended 92-96% after 40 epochs, against 98-99%
    # for the others (BENCHMARKS.md, "The small end trained longer").
    Dimension("learning_rate", "log", (1e-4, 1e-2), 2e-3, "initial learning rate (cosine decay)",
              by_optimizer=((("sgd",), (1e-2, 3e-1), 0.05),)),
)

# A search with cost objectives (`digits.tune --objectives val_accuracy,latency`) reaches down
# to small models too, so that its Pareto front has a cheap end: narrower convolutions and heads,
# and depthwise-separable convolutions.
SMALL_END = {"filters": (4, 8, 16, 24, 32, 48), "dense_units": (16, 32, 64, 128, 256, 512)}
SEPARABLE = Dimension("separable", "boolean", (True, False), False,
                      "depthwise-separable convolutions after the first (with cost objectives)")

# ... and, right after the default, its smaller versions: planned trials, so that the front's
# cheap end holds well-made models instead of what a few random draws of a large space happen to
# hit (a default narrowed is what a person would try first). Measured at 40 epochs on the
# embedded digits over three seeds: BENCHMARKS.md ("The small end planned, and distilled").
SMALL_LADDER: tuple[dict, ...] = (
    {"filters": 16, "dense_units": 64},  # 110k parameters (the default: 586k)
    {"filters": 16, "dense_units": 32},  # 91k
    {"filters": 32, "separable": True, "dense_units": 32},  # 74k
    {"filters": 16, "separable": True, "dense_units": 32},  # 29k
)


def search_space(small: bool = False) -> tuple[Dimension, ...]:
    """The space: `SEARCH_SPACE`, or with `small` its small end added (`SMALL_END`,
    `SEPARABLE`). The defaults are the same: the hand-picked model is a point of both."""
    if not small:
        return SEARCH_SPACE
    dimensions = [dataclasses.replace(d, values=SMALL_END[d.name]) if d.name in SMALL_END else d
                  for d in SEARCH_SPACE]
    dimensions.insert([d.name for d in dimensions].index("batch_norm"), SEPARABLE)
    return tuple(dimensions)


DIMENSIONS = {d.name: d for d in search_space(small=True)}  # every name --hp may pin
TRAINER_HYPERPARAMETERS = ("optimizer", "learning_rate")


def declare(hp, small: bool = False) -> tuple[dict, str, float]:
    """Declare the whole space on `hp` (with `small`, its small end too); return (model
    hyperparameters, optimizer, learning rate). A pinned `separable` counts in either space."""
    values = {d.name: d.declare(hp) for d in search_space(small)}
    if not small and SEPARABLE.name in hp.values:
        values[SEPARABLE.name] = hp.values[SEPARABLE.name]
    optimizer = values.pop("optimizer")
    learning_rate = values.pop("learning_rate")
    return values, optimizer, learning_rate


def check_pins(pins: dict, flag: str = "--hp") -> dict:
    """Check `--hp` pins (or `flag`'s NAME=VALUE): known names and the right types. Returns the
    pins, normalised."""
    checked = {}
    for name, value in pins.items():
        if name not in DIMENSIONS:
            raise ConfigError(f"{flag} {name}: not a searched hyperparameter; the search space is: "
                              f"{', '.join(DIMENSIONS)}")
        checked[name] = DIMENSIONS[name].check_pin(value, flag)
    return checked


def searched_values(values: dict) -> dict:
    """Only the search space's own entries of a trial's values, in the space's order (without
    keras-tuner's `tuner/epochs`, `tuner/trial_id`, ... bookkeeping)."""
    ordered = {d.name: values[d.name] for d in SEARCH_SPACE if d.name in values}
    ordered.update((k, v) for k, v in values.items()
                   if k not in ordered and not k.startswith("tuner/"))
    return ordered


def space_help() -> str:
    """One line per dimension, for `--help`, and the small end."""
    width = max(len(d.name) for d in DIMENSIONS.values())
    small = "; ".join(f"{name} also {', '.join(map(str, values[:2]))}"
                      for name, values in SMALL_END.items())
    return "\n".join(f"  {d.name:<{width}}  {d.describe()} (default {d.default}): {d.help}"
                     for d in SEARCH_SPACE) + (
        f"\n  with cost objectives (--objectives), the small end too: {small}; "
        f"{SEPARABLE.name} True or False (default False)")
