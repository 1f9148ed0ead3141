"""The Trainer's settings: one dataclass that checks every value once.

The command lines take their choices and ranges from here (`digits.cli` builds its argument
types from `RANGES`), so a flag and the Trainer argument behind it cannot drift apart. Nothing
here imports TensorFlow or NumPy: `--help` stays instant.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re

from digits.errors import ConfigError

# "auto": mixed_bfloat16 on a CPU with native bfloat16, else float32 (`digits.speed.precision`).
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = (None, "mirrored")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LR_SCHEDULES = ("cosine", "constant")
NAME_PATTERN = r"[\w.-]{1,100}"
# Stochastic weight averaging's learning rate, as a share of the initial one, unless given
# (validation preferred 0.5 to 0.25 and 0.1, BENCHMARKS.md).
SWA_LR_FRACTION = 0.5
FAST_DEV_RUN_BATCHES = 2


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts: [lo, hi], or (lo, hi] with `lo_open`."""

    kind: type
    lo: float
    hi: float
    lo_open: bool = False

    def contains(self, value) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if self.kind is float and (not isinstance(value, numbers.Real) or not math.isfinite(value)):
            return False
        return (self.lo < value if self.lo_open else self.lo <= value) and value <= self.hi

    def describe(self) -> str:
        if self.kind is int:
            return f"a whole number from {self.lo} to {self.hi}"
        return f"a number in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"

    def check(self, label: str, value) -> None:
        if not self.contains(value):
            raise ConfigError(f"{label} must be {self.describe()}, got {value!r}")


COUNT = Range(int, 1, 1_000_000)
RANGES = {
    "max_epochs": COUNT,
    "batch_size": Range(int, 1, 65536),
    "seed": Range(int, 0, 2**31 - 1),
    "learning_rate": Range(float, 0.0, 10.0, lo_open=True),
    "label_smoothing": Range(float, 0.0, 0.5),
    "ema_decay": Range(float, 0.0, 0.9999, lo_open=True),
    "swa_lr": Range(float, 0.0, 10.0, lo_open=True),
    "steps_per_execution": Range(int, 1, 100_000),
    "limit_batches": COUNT,
}


def check_choice(label: str, value, choices) -> None:
    if value not in choices:
        shown = ", ".join(str(c) for c in choices)
        raise ConfigError(f"{label} must be one of {shown}, got {value!r}")


def check_profile_batch(value) -> None:
    """Two whole numbers, START <= STOP, counting training batches from 1 over the run."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2
            and all(COUNT.contains(b) for b in value) and value[0] <= value[1]):
        raise ConfigError(f"profile_batch must be two whole numbers 1 <= START <= STOP, got "
                          f"{value!r}")


def check_name(value) -> None:
    if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value) or value in (".", ".."):
        raise ConfigError(f"name must be 1-100 letters, digits, '.', '_' or '-', got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
    """Every setting of a `Trainer` run, checked once (a bad one raises `ConfigError`).

    `fast_dev_run` is resolved here: one epoch and two batches of each stage.
    """

    max_epochs: int = 40
    seed: int = 0
    deterministic: bool = False
    batch_size: int = 128
    precision: str = "auto"
    strategy: str | None = None
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"
    lr_cycles: int = 1
    label_smoothing: float = 0.1
    ema_decay: float | None = None
    swa_epochs: int | None = None
    swa_lr: float | None = None
    fast_dev_run: bool = False
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    limit_test_batches: int | None = None
    steps_per_execution: int | str = "auto"
    fused_batch_norm: bool = True
    profile_batch: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size", "seed", "learning_rate", "label_smoothing"):
            RANGES[name].check(name, getattr(self, name))
        for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
            if getattr(self, name) is not None:
                RANGES["limit_batches"].check(name, getattr(self, name))
        if self.ema_decay is not None:
            RANGES["ema_decay"].check("ema_decay", self.ema_decay)
            object.__setattr__(self, "ema_decay", float(self.ema_decay))
        self._check_swa()
        if self.steps_per_execution != "auto":
            RANGES["steps_per_execution"].check("steps_per_execution", self.steps_per_execution)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        COUNT.check("lr_cycles", self.lr_cycles)
        if self.max_epochs % self.lr_cycles:
            raise ConfigError(f"lr_cycles must divide the epochs ({self.max_epochs}) into equal "
                              f"cycles, got {self.lr_cycles!r}")
        if self.profile_batch is not None:
            check_profile_batch(self.profile_batch)
            object.__setattr__(self, "profile_batch", tuple(int(b) for b in self.profile_batch))
        set_ = object.__setattr__  # frozen: resolve the numbers once, here
        for name in ("max_epochs", "batch_size", "seed"):
            set_(self, name, int(getattr(self, name)))
        for name in ("learning_rate", "label_smoothing"):
            set_(self, name, float(getattr(self, name)))
        for name in ("deterministic", "fast_dev_run", "fused_batch_norm"):
            set_(self, name, bool(getattr(self, name)))
        if self.fast_dev_run:
            set_(self, "max_epochs", 1)
            if self.swa_epochs is not None:
                set_(self, "swa_epochs", 1)
            for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
                set_(self, name, FAST_DEV_RUN_BATCHES)

    def to_dict(self) -> dict:
        """The settings as `config.json` records them under "trainer" (those that can change
        what a run computes; `profile_batch` only observes it)."""
        return {
            "max_epochs": self.max_epochs, "seed": self.seed,
            "deterministic": self.deterministic, "batch_size": self.batch_size,
            "precision": self.precision, "strategy": self.strategy,
            "optimizer": self.optimizer, "learning_rate": self.learning_rate,
            "lr_schedule": self.lr_schedule, "label_smoothing": self.label_smoothing,
            **({"lr_cycles": self.lr_cycles} if self.lr_cycles != 1 else {}),
            **({"ema_decay": self.ema_decay} if self.ema_decay is not None else {}),
            **({"swa_epochs": self.swa_epochs, "swa_lr": self.swa_lr}
               if self.swa_epochs is not None else {}),
            "steps_per_execution": self.steps_per_execution,
            "fused_batch_norm": self.fused_batch_norm,
            "limit_train_batches": self.limit_train_batches,
            "limit_val_batches": self.limit_val_batches,
        }

    def _check_swa(self) -> None:
        """Stochastic weight averaging: the last `swa_epochs` epochs (1 to all of them) at
        `swa_lr` (default: half the learning rate), one averaging scheme at a time."""
        if self.swa_epochs is None:
            if self.swa_lr is not None:
                raise ConfigError("swa_lr needs swa_epochs (the epochs to average)")
            return
        COUNT.check("swa_epochs", self.swa_epochs)
        if self.swa_epochs > self.max_epochs and not self.fast_dev_run:
            raise ConfigError(f"swa_epochs must be at most the epochs ({self.max_epochs}), "
                              f"got {self.swa_epochs!r}")
        if self.ema_decay is not None:
            raise ConfigError("ema_decay and swa_epochs are two ways of averaging the weights; "
                              "choose one")
        if self.lr_cycles != 1:
            raise ConfigError("swa_epochs sets the schedule's end itself; it cannot be combined "
                              "with lr_cycles")
        swa_lr = self.learning_rate * SWA_LR_FRACTION if self.swa_lr is None else self.swa_lr
        RANGES["swa_lr"].check("swa_lr", swa_lr)
        object.__setattr__(self, "swa_epochs", int(self.swa_epochs))
        object.__setattr__(self, "swa_lr", float(swa_lr))

    @property
    def swa_start_epoch(self) -> int | None:
        """The epochs trained before the first averaged one (None without averaging)."""
        return None if self.swa_epochs is None else max(0, self.max_epochs - self.swa_epochs)

    @property
    def eval_batch_size(self) -> int:
        """Batches for validation, test and prediction: no gradients, so larger."""
        return max(self.batch_size, 512)

    def train_steps(self, train_images: int) -> int:
        """Batches per training epoch, after `limit_train_batches`."""
        steps = -(-train_images // self.batch_size)
        return min(steps, self.limit_train_batches) if self.limit_train_batches else steps

    def check_profile_range(self, train_steps: int) -> None:
        """A profile range must end within the run's training batches."""
        total = train_steps * self.max_epochs
        if self.profile_batch is not None and self.profile_batch[1] > total:
            raise ConfigError(
                f"profile_batch {self.profile_batch[0]},{self.profile_batch[1]} ends past the "
                f"run's {total} training batches ({self.max_epochs} epochs of {train_steps})")

    def steps_per_execution_for(self, steps_per_epoch: int) -> int:
        """"auto" is 32 batches per compiled call, or the whole epoch if it is shorter."""
        if self.steps_per_execution == "auto":
            return max(1, min(32, steps_per_epoch))
        return int(self.steps_per_execution)


DEFAULTS = TrainerSettings()
