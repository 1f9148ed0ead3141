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

from digits.errors import ConfigError, ModelError

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


def setting(default, help: str, flag: str | None = None, metavar: str | None = None,
            parse: str | None = None, label: str | None = None, tune: bool = False,
            none_word: str | None = None, choices: tuple = ()):
    """A `TrainerSettings` field, declared once: everything else is made from this.

    Args:
        default: its value when not given (the Trainer's, the flags', the tuner's).
        help: what it does, in a line: the flag's help and the Trainer's documentation
            (`{default}` is replaced by the default).
        flag: its command-line flag (`--epochs`), or None for a setting the commands do not
            offer; `digits.cli.add_setting_arguments` makes the flag from this declaration.
        metavar: the flag's placeholder (`N`).
        parse: how the flag reads its value: "switch" (present or not), "choice" (one of
            `choices`), "range" (a number in `RANGES[name]`; `label` names it in errors),
            "path" (a file's path, not empty),
            "count" (a whole number >= 1), "auto_or_count" or "batch_range" (`START,STOP`).
        choices: the values a "choice" takes.
        tune: `digits.tune` offers the flag too (its trials and final retraining train with it).
        none_word: the word the flag takes for None (`--strategy none`).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "flag": flag, "metavar": metavar, "parse": parse, "label": label,
        "tune": tune, "none_word": none_word, "choices": tuple(choices)})


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
    """Every setting of a `Trainer` run, checked once (a bad one raises `ConfigError`).

    Each is declared here once (`setting`): its default, its help, its flag. The Trainer takes
    them as keyword arguments (or a whole `TrainerSettings`), `digits.train` and `digits.tune`
    make their flags from them (`digits.cli.add_setting_arguments`) and read them back
    (`digits.cli.settings_from_args`). A new setting is one field here plus its test.
    `fast_dev_run` is resolved here: one epoch and two batches of each stage.
    """

    max_epochs: int = setting(40, "epochs to train (default: {default})", "--epochs", "N",
                              "count")
    learning_rate: float = setting(
        2e-3, "initial learning rate, decayed by a cosine schedule (default: {default:g})",
        "--learning-rate", "LR", "range", "a learning rate in (0, 10]")
    optimizer: str = setting("adam", "optimizer (default: {default})", "--optimizer",
                             parse="choice", choices=OPTIMIZERS)
    batch_size: int = setting(128, "batch size (default: {default})", "--batch-size", "N",
                              "range", "a batch size from 1 to 65536", tune=True)
    label_smoothing: float = setting(
        0.1, "smoothing of the training targets, 0 for plain cross-entropy (default: "
             "{default:g}; it keeps 'best by validation loss' from picking a lucky early epoch)",
        "--label-smoothing", "S", "range", "a label smoothing in [0, 0.5]", tune=True)
    ema_decay: float | None = setting(
        None, "validate, checkpoint and test an exponential moving average of the weights with "
              "this decay, e.g. 0.99 (default: off; digits.callbacks.ema)",
        "--ema", "DECAY", "range", "a decay in (0, 0.9999]", tune=True)
    swa_epochs: int | None = setting(
        None, "stochastic weight averaging: average the weights of the last EPOCHS epochs, "
              "trained at a constant --swa-lr, recompute the batch-norm statistics, keep the "
              "average if validation prefers it (digits.tune: in the final retraining; default: "
              "off; digits.callbacks.swa)", "--swa", "EPOCHS", "count", tune=True)
    swa_lr: float | None = setting(
        None, "with --swa: the learning rate of the averaged epochs (default: half the initial "
              "learning rate)", "--swa-lr", "LR", "range", "a learning rate in (0, 10]",
        tune=True)
    distill_from: str | None = setting(
        None, "knowledge distillation: also learn the predictions of this trained model (a "
              ".keras file trained on the same split: the same --dataset and --seed), "
              "softened, half of the loss (digits.tune: in the final retraining; default: "
              "off; digits.callbacks.distill)", "--distill-from",
        "MODEL.keras", "path", tune=True)
    deterministic: bool = setting(False, "deterministic TensorFlow ops (reproducible, slower)",
                                  "--deterministic", parse="switch", tune=True)
    precision: str = setting(
        "auto", "Keras dtype policy (default: auto = mixed_bfloat16 on a CPU with native "
                "bfloat16, AVX512_BF16 or AMX, else float32)", "--precision", parse="choice",
        tune=True, choices=PRECISIONS)
    steps_per_execution: int | str = setting(
        "auto", "batches per compiled call (default: auto = 32)", "--steps-per-execution", "N",
        "auto_or_count", tune=True)
    limit_train_batches: int | None = setting(
        None, "train on at most N batches per epoch (quick runs, tests)",
        "--limit-train-batches", "N", "count", tune=True)
    limit_val_batches: int | None = setting(None, "validate on at most N batches",
                                            "--limit-val-batches", "N", "count", tune=True)
    profile_batch: tuple[int, int] | None = setting(
        None, "a TensorFlow profiler trace of these training batches (counted from 1) for "
              "TensorBoard's Profile tab (pip install -e '.[profile]')", "--profile-batch",
        "START,STOP", "batch_range", tune=True)
    strategy: str | None = setting(
        None, "mirrored: tf.distribute.MirroredStrategy over this host's GPUs", "--strategy",
        parse="choice", none_word="none", choices=STRATEGIES)
    fast_dev_run: bool = setting(
        False, "a couple of batches of each stage, one epoch, nothing heavy written",
        "--fast-dev-run", parse="switch")
    seed: int = setting(0, "seed of the data split, data order and weights (default: {default})",
                        "--seed", "N", "range", "a seed from 0 to 2147483647")
    lr_schedule: str = setting("cosine", "the learning rate's schedule: cosine (decay to 1% "
                                         "over the run) or constant")
    lr_cycles: int = setting(1, "with the cosine schedule, restart it this many times: equal "
                                "cycles over the run, each from the full learning rate "
                                "(digits.train --snapshots)")
    limit_test_batches: int | None = setting(None, "test on at most N batches")
    fused_batch_norm: bool = setting(
        True, "run BatchNormalization layers on TensorFlow's fused kernel (the same math and "
              "files, 1.1-1.3x faster training of the default cnn on CPU; digits.speed.fusion)")

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
        if self.distill_from is not None:
            from digits.models import check_model_file

            try:  # a file that cannot be a model is refused now, not once the run has started
                check_model_file(self.distill_from)
            except ModelError as e:
                raise ConfigError(f"--distill-from: {e}") from None
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
            **({"distill_from": self.distill_from} if self.distill_from is not None else {}),
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
