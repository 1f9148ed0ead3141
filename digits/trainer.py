"""The Trainer: fit / validate / test / predict, the run directory, resume, callback orchestration.

This is the only place in the project that calls `model.fit`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from digits.atomic import atomic_path, atomic_write_json, remove_stale_temporaries, to_json
from digits.background import Background
from digits.data import Dataset, Split, make_pipeline
from digits.errors import ConfigError, DigitsError, RunDirectoryError
from digits.results import TestResult
from digits.state import SUFFIX as VARIABLES_SUFFIX
from digits.state import check_variables, load_variables, snapshot_variables, write_variables

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = (None, "mirrored")
STATE_DIR = "state"
STATE_FILE = "trainer.json"  # the latest committed epoch
PREVIOUS_STATE_FILE = "trainer.previous.json"  # the one before, until the next is committed


class CallbackFailure(DigitsError):
    """A callback raised: names the callback and the hook. The CLI exits 1 on it."""

    def __init__(self, callback, hook: str, error: BaseException) -> None:
        self.callback_name = getattr(callback, "name", "") or type(callback).__name__
        self.hook = hook
        self.error = error
        super().__init__(
            f"callback {self.callback_name!r} failed in {hook}: {type(error).__name__}: {error}"
        )


class TrainingStopped(DigitsError):
    """Training stopped on a fault (such as a NaN loss) that the run cannot recover from."""


# ----------------------------------------------------------------------------- run directory


class RunDirectory:
    """`<log_dir>/<name>/version_<n>/`: event files, model.keras, config.json, metrics.json.

    Example:
        >>> run = RunDirectory.create("logs", "cnn")
        >>> run.path
        PosixPath('logs/cnn/version_0')
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    @property
    def version(self) -> int:
        return int(self.path.name.split("_")[-1])

    @staticmethod
    def versions(log_dir: str | os.PathLike, name: str) -> list[int]:
        root = Path(log_dir) / name
        if not root.is_dir():
            return []
        found = [re.fullmatch(r"version_(\d+)", p.name) for p in root.iterdir() if p.is_dir()]
        return sorted(int(m.group(1)) for m in found if m)

    @classmethod
    def latest(cls, log_dir: str | os.PathLike, name: str) -> RunDirectory | None:
        versions = cls.versions(log_dir, name)
        return cls(Path(log_dir) / name / f"version_{versions[-1]}") if versions else None

    @classmethod
    def create(cls, log_dir: str | os.PathLike, name: str) -> RunDirectory:
        """Create the next free version directory (safe against concurrent creators)."""
        check_writable_dir(log_dir)
        root = Path(log_dir) / name
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirectoryError(f"cannot create {root}: {e.strerror or e}") from None
        version = (cls.versions(log_dir, name) or [-1])[-1] + 1
        while True:
            path = root / f"version_{version}"
            try:
                path.mkdir()
            except FileExistsError:
                version += 1
                continue
            except OSError as e:
                raise RunDirectoryError(f"cannot create {path}: {e.strerror or e}") from None
            return cls(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str) -> dict | None:
        try:
            return json.loads(self.file(name).read_text())
        except (OSError, ValueError):
            return None

    def write_json(self, name: str, obj) -> None:
        atomic_write_json(self.file(name), obj)

    def try_lock(self) -> bool:
        """Take this run's lock; False when another live process holds it.

        The lock is an advisory `flock` on `<run>/.lock`: the kernel drops it when its process
        ends, SIGKILL included, so a crashed run never stays locked.
        """
        if self._lock_fd is not None:
            return True
        try:
            import fcntl
        except ImportError:  # no flock on this platform: one process per run is on the user
            return True
        fd = os.open(self.file(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        """Release the lock taken by `try_lock` (closing the file releases the flock)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def check_writable_dir(path: str | os.PathLike) -> None:
    """Refuse, before any training, a log directory that cannot be created or written.

    Checks by writing: `os.access` says yes to root on a directory that still refuses files
    (a read-only mount, /proc).
    """
    path = Path(path)
    probe = path
    try:
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        is_dir = probe.is_dir()
    except OSError as e:
        raise RunDirectoryError(f"{str(path)[:200]}: {e.strerror or e}") from None
    if probe.is_file():
        raise RunDirectoryError(f"{probe} is a file, not a directory")
    if not is_dir:
        raise RunDirectoryError(f"{probe} is not a directory")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".digits-write-test-")
    except OSError as e:
        raise RunDirectoryError(f"{probe} is not writable: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(name)


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold Ctrl-C until the block is done, so that state being written is written whole."""
    if threading.current_thread() is not threading.main_thread() \
            or not callable(signal.getsignal(signal.SIGINT)):
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            previous(signal.SIGINT, caught[0])


# ----------------------------------------------------------------------------- dispatch


_KERAS_RENAMES = {"on_test_begin": "on_evaluate_begin", "on_test_end": "on_evaluate_end"}


def _digits_base():
    from callbacks.base import Callback

    return Callback


def hook_method(callback, hook: str) -> str | None:
    """The name of `callback`'s method that acts in `hook`, or None when it leaves the hook
    to its base class (a no-op). `hook` is a Keras hook ("on_epoch_end", "on_test_end" for the
    end of an evaluation pass, ...) or one of the Trainer's ("setup", "on_fit_start", ...).
    What `python -m digits.callbacks --hooks` shows and what the dispatcher calls."""
    import keras

    digits_callback = isinstance(callback, _digits_base())
    keras_base = keras.callbacks.Callback
    if hasattr(keras_base, hook):
        # On digits callbacks `on_test_end` is the Trainer-level hook, so Keras' end of an
        # evaluation pass reaches them as `on_evaluate_begin/_end(logs)` instead.
        name = _KERAS_RENAMES.get(hook, hook) if digits_callback else hook
        base = getattr(_digits_base(), name, None) if name != hook else getattr(keras_base, hook)
    elif digits_callback:
        name, base = hook, getattr(_digits_base(), hook, None)
    else:
        return None
    method = getattr(type(callback), name, None)
    return name if method is not None and method is not base else None


def _check_state_keys(callbacks: list) -> None:
    """Two callbacks that keep state must not save it under one key: the second would
    silently overwrite the first's in the run's state (and both would resume from it)."""
    base = _digits_base()
    owners: dict[str, object] = {}
    for c in callbacks:
        if not isinstance(c, base) or type(c).state_dict is base.state_dict:
            continue  # keeps nothing
        key = c.state_key
        if key in owners:
            name = getattr(c, "name", "") or type(c).__name__
            raise ConfigError(
                f"two callbacks keep their state under the key {key!r} ({name} twice?): give "
                "one of them its own `state_key` (a property of the callback class)")
        owners[key] = c


class _Dispatcher:
    """Runs each hook on every callback in order, naming the callback when one raises.

    It is handed to `model.fit` as a single Keras callback, so the Trainer, not Keras' list,
    owns the order; batch hooks go only to callbacks that override them, so an idle hook
    costs nothing per batch.
    """

    def __init__(self, callbacks: list) -> None:
        import keras

        _check_state_keys(callbacks)
        self.callbacks = callbacks
        self.epoch_variable = None
        self.background = None  # during a fit: held through each epoch's end
        base = keras.callbacks.Callback

        class KerasHooks(base):
            pass

        dispatcher = self
        for hook in (
            "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
            "on_test_begin", "on_test_end", "on_predict_begin", "on_predict_end",
            "on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin",
            "on_test_batch_end", "on_predict_batch_begin", "on_predict_batch_end",
        ):
            takers = [(c, name) for c in callbacks
                      if (name := hook_method(c, hook)) is not None]
            if not takers:
                continue

            def forward(self, *args, _takers=takers, **kwargs):
                dispatcher._call_pairs(_takers, *args, **kwargs)

            setattr(KerasHooks, hook, forward)

        class Keras(KerasHooks):
            def on_epoch_begin(self, epoch, logs=None):
                # The training pipeline draws this epoch's data order from this variable.
                if dispatcher.epoch_variable is not None:
                    dispatcher.epoch_variable.assign(epoch)
                super().on_epoch_begin(epoch, logs)

            def on_epoch_end(self, epoch, logs=None):
                # What the callbacks queue here starts when the next epoch trains.
                held = dispatcher.background.held() if dispatcher.background is not None \
                    else contextlib.nullcontext()
                with held:
                    super().on_epoch_end(epoch, logs)

            def set_model(self, model):
                super().set_model(model)
                for c in dispatcher.callbacks:
                    c.set_model(model)

            def set_params(self, params):
                super().set_params(params)
                for c in dispatcher.callbacks:
                    c.set_params(params)

        self.keras_callback = Keras()

    def _call(self, callbacks, hook: str, *args, **kwargs) -> None:
        self._call_pairs([(c, hook) for c in callbacks], *args, **kwargs)

    def _call_pairs(self, pairs, *args, **kwargs) -> None:
        for callback, hook in pairs:
            try:
                getattr(callback, hook)(*args, **kwargs)
            except (KeyboardInterrupt, CallbackFailure, TrainingStopped, ConfigError):
                # A ConfigError (e.g. a monitored metric that does not exist) is the spec's
                # fault, not the callback's: it leaves as an input error, exit 2.
                raise
            except (Exception, SystemExit) as e:  # noqa: BLE001 - attributed and re-raised
                # SystemExit too: a plugin calling sys.exit() must not end the run silently.
                raise CallbackFailure(callback, hook, e) from e

    def trainer_hook(self, hook: str, *args) -> None:
        self._call([c for c in self.callbacks if isinstance(c, _digits_base())], hook, *args)

    def on_exception(self, trainer, error: BaseException) -> list[str]:
        """Every callback's `on_exception`; failures here are collected, never raised."""
        problems = []
        for c in self.callbacks:
            if isinstance(c, _digits_base()):
                try:
                    c.on_exception(trainer, error)
                except Exception as e:  # noqa: BLE001
                    problems.append(f"{type(c).__name__}.on_exception: {e}")
        return problems


class _RunRecorder:
    """Internal, always last: after each epoch, writes metrics.json and the resumable state."""

    order = 10_000

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.model = None

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        pass

    def on_epoch_end(self, epoch, logs=None):
        trainer = self.trainer
        for key, value in (logs or {}).items():
            if np.ndim(value) == 0:
                trainer.history.setdefault(key, []).append(float(value))
        trainer.current_epoch = epoch + 1
        if not (trainer.stop_reason or "").startswith("fault:"):
            # A faulted epoch (NaN weights) never replaces the last good state.
            trainer._save_state()
        trainer._write_metrics(status="running", background=True)  # after the state, in order


# ----------------------------------------------------------------------------- the Trainer


@dataclasses.dataclass
class _Limits:
    train: int | None
    val: int | None
    test: int | None


class Trainer:
    """Trains, validates, tests and predicts, writing everything under one run directory.

    Args:
        max_epochs: epochs to train (default 40, as `digits.train`).
        callbacks: callback instances (digits or plain Keras). None means the default set
            (TensorBoard scalars, confusion-matrix images, reports, plots, progress, checkpoint).
        log_dir: root of all runs (default "logs").
        name: the run's name; runs land in `<log_dir>/<name>/version_<n>` (default: model name).
        seed: seeds Python, NumPy, TensorFlow and the data order (default 0).
        deterministic: make TensorFlow ops deterministic (slower, reproducible to the bit).
        batch_size: training batch size (default 128).
        precision: "float32", "mixed_float16" or "mixed_bfloat16"; set before the model is built
            (use `trainer.build_model`).
        strategy: None or "mirrored" (one host, many GPUs).
        optimizer: "adam", "adamw", "sgd" or "rmsprop", used when the model is not compiled.
        learning_rate: initial learning rate (default 2e-3).
        lr_schedule: "cosine" (decay to zero over the run, default) or "constant".
        label_smoothing: smoothing of the training targets, in [0, 0.5] (default 0.1; 0 is
            plain cross-entropy). Used when the model is not compiled.
        fast_dev_run: run two batches of each stage, one epoch, and write nothing heavy.
        limit_train_batches / limit_val_batches / limit_test_batches: cap the batches per stage.
        steps_per_execution: batches per compiled call; "auto" picks 32 (1.2x for seed-cnn and
            1.9x for mlp on this project's CPU; about even for the heavier cnn).
        fused_batch_norm: run the model's BatchNormalization layers on TensorFlow's fused
            kernel (`digits.fusion`): the same math, weights and saved files, and 1.1-1.3x faster
            training of the default CNN on CPU (BENCHMARKS.md).
        enable_checkpointing: add the `checkpoint` callback (best model.keras) if none is given.
        resume: resume the latest unfinished run of this name, if there is one.
        verbose: print notices (resume, run directory) to stderr.

    Example:
        >>> data = load_dataset("mnist-5k")          # from digits.data
        >>> trainer = Trainer(max_epochs=5, log_dir="logs")
        >>> model = trainer.build_model("cnn")
        >>> trainer.fit(model, data)
        >>> trainer.test(model, data).accuracy
    """

    def __init__(
        self,
        max_epochs: int = 40,
        callbacks: list | None = None,
        log_dir: str | os.PathLike = "logs",
        name: str | None = None,
        seed: int = 0,
        deterministic: bool = False,
        batch_size: int = 128,
        precision: str = "float32",
        strategy: str | None = None,
        optimizer: str = "adam",
        learning_rate: float = 2e-3,
        lr_schedule: str = "cosine",
        label_smoothing: float = 0.1,
        fast_dev_run: bool = False,
        limit_train_batches: int | None = None,
        limit_val_batches: int | None = None,
        limit_test_batches: int | None = None,
        steps_per_execution: int | str = "auto",
        fused_batch_norm: bool = True,
        enable_checkpointing: bool = True,
        resume: bool = False,
        verbose: bool = True,
    ) -> None:
        _positive_int("max_epochs", max_epochs)
        _positive_int("batch_size", batch_size, upper=65536)
        _non_negative_int("seed", seed, upper=2**31 - 1)
        for label, value in (("limit_train_batches", limit_train_batches),
                             ("limit_val_batches", limit_val_batches),
                             ("limit_test_batches", limit_test_batches)):
            if value is not None:
                _positive_int(label, value)
        if steps_per_execution != "auto":
            _positive_int("steps_per_execution", steps_per_execution, upper=100_000)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be None or 'mirrored', got {strategy!r}")
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
                or not 0 < learning_rate <= 10 or not np.isfinite(learning_rate):
            raise ConfigError(f"learning_rate must be a number in (0, 10], got {learning_rate!r}")
        if lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"lr_schedule must be 'cosine' or 'constant', got {lr_schedule!r}")
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0 <= label_smoothing <= 0.5:
            raise ConfigError(f"label_smoothing must be a number in [0, 0.5], got {label_smoothing!r}")
        if name is not None and (not name or not re.fullmatch(r"[\w.-]+", name) or name in (".", "..")):
            raise ConfigError(f"name must be letters, digits, '.', '_' or '-', got {name!r}")

        self.max_epochs = 1 if fast_dev_run else int(max_epochs)
        self.seed = int(seed)
        self.deterministic = bool(deterministic)
        self.batch_size = int(batch_size)
        self.precision = precision
        self.strategy_name = strategy
        self.optimizer_name = optimizer
        self.learning_rate = float(learning_rate)
        self.lr_schedule = lr_schedule
        self.label_smoothing = float(label_smoothing)
        self.fast_dev_run = bool(fast_dev_run)
        dev = 2 if fast_dev_run else None
        self.limits = _Limits(dev or limit_train_batches, dev or limit_val_batches,
                              dev or limit_test_batches)
        self.steps_per_execution = steps_per_execution
        self.fused_batch_norm = bool(fused_batch_norm)
        self.enable_checkpointing = enable_checkpointing
        self.resume = resume
        self.verbose = verbose
        self.log_dir = Path(log_dir)
        self.name = name
        self._user_callbacks = callbacks

        self.run: RunDirectory | None = None
        self.model = None
        self.data: Dataset | None = None
        self.history: dict[str, list[float]] = {}
        self.current_epoch = 0
        self.resumed_from_epoch: int | None = None
        self.stop_reason: str | None = None
        self.test_result: TestResult | None = None
        self.config: dict = {}
        self._callbacks: list | None = None
        self._strategy = None
        self._background: Background | None = None  # during a fit: the epoch-end writes
        self._started = time.time()
        self._apply_precision()

    # -- setup -------------------------------------------------------------------------

    def _apply_precision(self) -> None:
        import keras

        keras.mixed_precision.set_dtype_policy(self.precision)

    @property
    def strategy(self):
        """The tf.distribute strategy (a default one when `strategy=None`)."""
        if self._strategy is None:
            import tensorflow as tf

            self._strategy = (tf.distribute.MirroredStrategy() if self.strategy_name == "mirrored"
                              else tf.distribute.get_strategy())
        return self._strategy

    def build_model(self, name: str = "cnn", **hyperparameters):
        """Build `digits.build_model(name, ...)` under this Trainer's precision and strategy."""
        from digits.models import build_model

        self._apply_precision()
        hyperparameters.setdefault("seed", self.seed)
        # Initializers without a seed of their own draw from Keras' global generator, which is
        # seeded at random in a fresh process unless it is seeded here.
        self._seed_everything()
        with self.strategy.scope():
            model = build_model(name, **hyperparameters)
        model._digits_spec = {"model": name, "hyperparameters": {
            k: v for k, v in hyperparameters.items() if k != "seed"}}
        return model

    @property
    def callbacks(self) -> list:
        """The resolved, ordered callback list (defaults, user's, checkpoint last)."""
        if self._callbacks is None:
            self._callbacks = self._resolve_callbacks()
        return self._callbacks

    def _resolve_callbacks(self) -> list:
        from callbacks.checkpoint import Checkpoint
        from callbacks.registry import default_callbacks

        chosen = list(default_callbacks()) if self._user_callbacks is None else list(self._user_callbacks)
        if self.enable_checkpointing and not any(isinstance(c, Checkpoint) for c in chosen):
            checkpoint = Checkpoint()
            checkpoint.name = "checkpoint"
            chosen.append(checkpoint)
        if not self.enable_checkpointing:
            chosen = [c for c in chosen if not isinstance(c, Checkpoint)]
        if self.fast_dev_run:
            chosen = [c for c in chosen if not getattr(c, "heavy", False)]
        # A stable sort: equal orders keep the order they were given in.
        return sorted(chosen, key=lambda c: getattr(c, "order", 50))

    def _compile(self, model, steps_per_epoch: int) -> None:
        import keras

        from digits.metrics import SmoothedSparseCrossentropy, compiled_metrics

        spe = self._steps_per_execution(steps_per_epoch)
        self._fuse_batch_norm(model)
        if model.compiled:
            # Keep the user's choices; only the execution grouping is ours to set.
            model.steps_per_execution = spe
            self._build_optimizer(model)
            return
        total_steps = max(1, steps_per_epoch * self.max_epochs)
        lr = (keras.optimizers.schedules.CosineDecay(self.learning_rate, total_steps, alpha=0.01)
              if self.lr_schedule == "cosine" else self.learning_rate)
        with self.strategy.scope():
            optimizer = OPTIMIZERS[self.optimizer_name](lr)  # its variables belong in the scope
            model.compile(
                optimizer=optimizer,
                loss=(SmoothedSparseCrossentropy(self.label_smoothing) if self.label_smoothing
                      else keras.losses.SparseCategoricalCrossentropy()),
                metrics=compiled_metrics(model.output_shape[-1]),
                steps_per_execution=spe,
                jit_compile=False,  # XLA made a small CNN ~9x slower on CPU here
            )
        self._build_optimizer(model)

    def _build_optimizer(self, model) -> None:
        """Create the optimizer's variables now, before Keras traces the training step.

        Left to Keras, the first traced step creates them (Adam's moments), and a traced
        function that creates variables is traced a second time: the default cnn's step was
        traced twice, 0.9 s + 0.6 s, and is now traced once, 0.5 s, in every fit.
        """
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None or optimizer.built or not model.built:
            return
        variables = model.trainable_variables
        if variables:
            with self.strategy.scope():
                optimizer.build(variables)

    def _fuse_batch_norm(self, model) -> None:
        """Put the model's BatchNormalization layers on the fused kernel (idempotent)."""
        if self.fused_batch_norm:
            from digits.fusion import fuse_batch_norm

            fuse_batch_norm(model)

    def _steps_per_execution(self, steps_per_epoch: int) -> int:
        if self.steps_per_execution == "auto":
            return max(1, min(32, steps_per_epoch))
        return int(self.steps_per_execution)

    def _seed_everything(self) -> None:
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(self.seed)
        if self.deterministic:
            tf.config.experimental.enable_op_determinism()

    # -- run directory and state ---------------------------------------------------------

    def _open_run(self, model, config: dict) -> None:
        name = self.name or _safe_name(getattr(model, "name", "model"))
        self.name = name
        if self.fast_dev_run:
            import atexit
            import shutil

            scratch = tempfile.mkdtemp(prefix="digits-fast-dev-run-")
            atexit.register(shutil.rmtree, scratch, ignore_errors=True)  # a dev run keeps nothing
            self.run = RunDirectory(scratch)
            return
        if self.resume:
            latest = RunDirectory.latest(self.log_dir, name)
            # The lock keeps a second identical command from resuming a run that is still alive.
            if latest is not None and latest.try_lock():
                if _resumable(latest, config):
                    for directory in (latest.path, latest.file(STATE_DIR)):
                        remove_stale_temporaries(directory)  # half-written files of the crash
                    self.run = latest
                    return
                latest.unlock()
        self.run = RunDirectory.create(self.log_dir, name)
        self.run.try_lock()

    def _save_state(self) -> None:
        """Variables, then the small JSON that commits them (atomic, in that order).

        The variables file (`digits.state`) holds the model's and the optimizer's variables:
        weights, batch-norm statistics, the iteration count that drives the learning-rate
        schedule, and the random layers' seed-generator states (dropout, augmentation), so a
        resumed `--deterministic` run draws the same masks as one that went straight through.
        """
        if self.run is None or self.fast_dev_run:
            return
        callback_states = {}
        for c in self.callbacks:
            if hasattr(c, "state_dict"):
                try:
                    callback_state = c.state_dict()
                    to_json(callback_state)
                except Exception as e:  # noqa: BLE001 - attributed to the callback
                    raise CallbackFailure(c, "state_dict", e) from e
                callback_states[c.state_key] = callback_state
        state_dir = self.run.file(STATE_DIR)
        weights_name = f"epoch_{self.current_epoch}{VARIABLES_SUFFIX}"
        # Copied now, written on the background thread while the next epoch trains.
        variables = snapshot_variables(self.model)
        commit = json.loads(to_json({
            "epoch": self.current_epoch,
            "weights": weights_name,
            "callbacks": callback_states,
            "history": self.history,
            "stop_reason": self.stop_reason,
        }))

        def write() -> None:
            try:
                state_dir.mkdir(exist_ok=True)
                with atomic_path(state_dir / weights_name) as tmp:
                    write_variables(variables, tmp)
                    check_variables(tmp, len(variables) - 1)  # all but `names`, whole, or it raises
                # The epoch before stays until this one is committed: a damaged latest state
                # (a disk error) then resumes from it instead of not at all.
                kept = {weights_name}
                if (state_dir / STATE_FILE).is_file():
                    previous = self.run.read_json(f"{STATE_DIR}/{STATE_FILE}") or {}
                    os.replace(state_dir / STATE_FILE, state_dir / PREVIOUS_STATE_FILE)
                    kept.add(str(previous.get("weights")))
                atomic_write_json(state_dir / STATE_FILE, commit)
                for pattern in (f"epoch_*{VARIABLES_SUFFIX}", "epoch_*.weights.h5"):
                    for old in state_dir.glob(pattern):
                        if old.name not in kept:
                            old.unlink(missing_ok=True)
            except (OSError, ValueError) as e:
                raise TrainingStopped(
                    f"cannot save the run's state in {state_dir}: "
                    f"{getattr(e, 'strerror', None) or e}") from e

        self._in_background(write)

    def _in_background(self, task) -> None:
        """Run `task` on the fit's background thread (in order), or now outside a fit."""
        if self._background is None:
            task()
        else:
            with _interrupts_deferred():  # a Ctrl-C inside would leave its count off
                self._background.submit(task)

    def _raise_background_failure(self) -> None:
        failed = self._settle_background()
        if failed is not None:
            raise failed

    def _settle_background(self) -> BaseException | None:
        """Wait for the background writes; return (not raise) the first that failed."""
        if self._background is None:
            return None
        with _interrupts_deferred():  # a Ctrl-C now would cut short the last epoch's files
            return self._background.settle()

    def _load_state(self, model) -> dict | None:
        """Restore the latest committed epoch; if its files are damaged, the epoch before
        (with a notice), which the state keeps until the next epoch is committed."""
        if self.run is None:
            return None
        latest = self.run.read_json(f"{STATE_DIR}/{STATE_FILE}")
        previous = self.run.read_json(f"{STATE_DIR}/{PREVIOUS_STATE_FILE}")
        candidates = [s for s in (latest, previous) if s and s.get("epoch")]
        if not candidates:
            return None
        problems = []
        for state in candidates:
            try:
                self._restore_variables(model, state)
            except Exception as e:  # noqa: BLE001 - a damaged state file is reported, not raised
                problems.append(f"epoch {state['epoch']}: {e}")
                continue
            if problems:
                print(f"notice: the saved state of {problems[0]}; resuming from epoch "
                      f"{state['epoch']}, the one saved before it", file=sys.stderr, flush=True)
            break
        else:
            raise RunDirectoryError(
                f"cannot resume {self.run.path} from {'; nor from '.join(problems)}; "
                "start afresh with --no-resume") from None
        for c in self.callbacks:
            if hasattr(c, "load_state_dict") and c.state_key in state.get("callbacks", {}):
                try:
                    c.load_state_dict(state["callbacks"][c.state_key])
                except Exception as e:  # noqa: BLE001 - attributed to the callback
                    raise CallbackFailure(c, "load_state_dict", e) from e
        self.history = {k: list(v) for k, v in state.get("history", {}).items()}
        self.stop_reason = state.get("stop_reason")
        return state

    def _restore_variables(self, model, state: dict) -> None:
        weights = self.run.file(STATE_DIR) / str(state.get("weights"))
        self._build_optimizer(model)  # built in _compile already; loading needs it
        if weights.name.endswith(VARIABLES_SUFFIX):
            load_variables(model, weights)
        else:  # a run saved by digits 0.1's first releases: Keras weights, seeds in JSON
            model.load_weights(weights)
            seeds = state.get("seed_generators") or []
            variables = _seed_states(model)
            if len(seeds) == len(variables):
                for variable, value in zip(variables, seeds, strict=True):
                    variable.assign(np.asarray(value, dtype=variable.dtype))

    def _write_metrics(self, status: str, background: bool = False) -> None:
        """metrics.json, now or (`background`) after the writes queued before it."""
        if self.run is None or self.fast_dev_run:
            return
        metrics = {
            "status": status,
            "epochs_completed": self.current_epoch,
            "max_epochs": self.max_epochs,
            "resumed_from_epoch": self.resumed_from_epoch,
            "stop_reason": self.stop_reason,
            "history": self.history,
        }
        if self.test_result is not None:
            metrics["test"] = self.test_result.to_dict()
        target = self.run.file("metrics.json")
        if not background:
            self.run.write_json("metrics.json", metrics)
            return
        copied = json.loads(to_json(metrics))

        def write() -> None:
            try:
                atomic_write_json(target, copied)
            except OSError as e:
                raise TrainingStopped(f"cannot write {target}: {e.strerror or e}") from e

        self._in_background(write)

    def _notice(self, message: str) -> None:
        if self.verbose:
            print(message, file=sys.stderr, flush=True)

    # -- stages --------------------------------------------------------------------------

    def fit(self, model, data: Dataset, config: dict | None = None, initial_epoch: int = 0):
        """Train `model` on `data.train`, validating on `data.val` every epoch.

        Compiles an uncompiled model (Adam, cross-entropy with `label_smoothing`, accuracy,
        cosine learning-rate decay), creates or resumes the run directory, and runs the callbacks.
        Returns the Keras `History`.

        `initial_epoch` (default 0) is for a model that already holds that many epochs of
        training, as keras-tuner's Hyperband continues a trial: epochs are numbered from there
        and the learning-rate schedule goes on from there. A resumed run starts from its own
        saved epoch instead.
        """
        _non_negative_int("initial_epoch", initial_epoch, upper=self.max_epochs - 1)
        if data.train is None or data.val is None:
            raise ConfigError(f"dataset {data.name!r} has no training data (it is test-only)")
        _check_model_fits_data(model, data)
        if not self.fast_dev_run:
            check_writable_dir(self.log_dir)
        self.model, self.data = model, data
        self.config = self._resolved_config(model, data, config)
        if initial_epoch:
            self.config["trainer"]["initial_epoch"] = int(initial_epoch)
        self._seed_everything()
        train_steps = -(-len(data.train) // self.batch_size)
        if self.limits.train:
            train_steps = min(train_steps, self.limits.train)
        self._compile(model, train_steps)
        self._open_run(model, self.config)
        dispatcher = _Dispatcher([*self.callbacks, _RunRecorder(self)])
        for c in self.callbacks:
            if hasattr(c, "trainer"):
                c.trainer = self
        initial_epoch = int(initial_epoch)
        self._background = dispatcher.background = Background()
        try:
            state = self._load_state(model) if self.resume else None
            if state is None and initial_epoch:
                self.current_epoch = initial_epoch
                model.optimizer.iterations.assign(initial_epoch * train_steps)
            if state is not None:
                initial_epoch = int(state["epoch"])
                self.current_epoch = initial_epoch
                self.resumed_from_epoch = initial_epoch
                self._notice(f"resumed {self.run.path} from epoch {initial_epoch} "
                             f"of {self.max_epochs}")
            elif self.resume and self.run.read_json("config.json") is not None:
                self.resumed_from_epoch = 0
                self._notice(f"resumed {self.run.path} from epoch 0 of {self.max_epochs} "
                             "(it was cut off before its first epoch ended)")
            if not self.fast_dev_run:
                self.run.write_json("config.json", self.config)
            dispatcher.trainer_hook("setup", self, "fit")
            dispatcher.trainer_hook("on_fit_start", self)
            if initial_epoch < self.max_epochs and not (state and state.get("stop_reason")):
                import tensorflow as tf

                epoch_var = tf.Variable(initial_epoch, dtype=tf.int64, trainable=False)
                dispatcher.epoch_variable = epoch_var
                train_ds = make_pipeline(
                    data.train, self.batch_size, shuffle=True, seed=self.seed,
                    epoch=epoch_var, limit_batches=train_steps,
                )
                val_ds = make_pipeline(data.val, self.eval_batch_size, limit_batches=self.limits.val)
                model.fit(
                    train_ds,
                    validation_data=val_ds,
                    epochs=self.max_epochs,
                    initial_epoch=initial_epoch,
                    callbacks=[dispatcher.keras_callback],
                    shuffle=False,  # the pipeline already shuffles, per epoch, from the seed
                    verbose=0,
                )
            self._raise_background_failure()
            if self.stop_reason and self.stop_reason.startswith("fault:"):
                raise TrainingStopped(self.stop_reason.removeprefix("fault: "))
            dispatcher.trainer_hook("on_fit_end", self)
            self._raise_background_failure()  # what on_fit_end queued, too
            self._write_metrics(status="fitted")
        except BaseException as error:
            failed_write = self._settle_background()  # the last epoch's files, whole
            if failed_write is not None and failed_write is not error:
                self._notice(f"warning: {failed_write}")
            problems = dispatcher.on_exception(self, error)
            for p in problems:
                self._notice(f"warning: {p}")
            interrupted = isinstance(error, KeyboardInterrupt)
            try:
                with _interrupts_deferred():
                    self._write_metrics(status="interrupted" if interrupted else "failed")
            except OSError as e:  # the disk that failed the run may fail this too
                self._notice(f"warning: cannot record the run's status: {e.strerror or e}")
            if interrupted and self.run is not None and not self.fast_dev_run:
                saved = (f"epochs 1-{self.current_epoch} are saved in {self.run.path}"
                         if self.current_epoch else f"no epoch had finished ({self.run.path})")
                self._notice(f"\ninterrupted during epoch {self.current_epoch + 1}: {saved}")
            raise
        finally:
            self._background = None  # settled above on every path: nothing outlives the fit
            self._teardown(dispatcher, "fit")
            if self.run is not None:
                self.run.unlock()  # held while training; a later identical command may resume
        return getattr(model, "history", None)

    @property
    def eval_batch_size(self) -> int:
        return max(self.batch_size, 512)

    def _teardown(self, dispatcher: _Dispatcher, stage: str) -> None:
        for c in dispatcher.callbacks:
            if isinstance(c, _digits_base()):
                try:
                    c.teardown(self, stage)
                except Exception as e:  # noqa: BLE001 - teardown must not hide the real error
                    self._notice(f"warning: {type(c).__name__}.teardown failed: {e}")

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for images `x` (float32, (N, 28, 28, 1), [0, 1])."""
        x = np.asarray(x, dtype=np.float32)
        split = Split(x, np.zeros(len(x), dtype=np.int64))
        return self._predict_split(model, split, limit=None)

    def _predict_split(self, model, split: Split, limit: int | None) -> np.ndarray:
        self._fuse_batch_norm(model)
        if limit is not None:
            split = split.take(limit * self.eval_batch_size)
        if len(split) == 0:
            return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
        # Through digits' own pipeline: Keras' pipeline for arrays autotunes, and tearing
        # it down after the pass can stall for seconds (see `make_pipeline`).
        batches = make_pipeline(split, self.eval_batch_size)
        return np.asarray(model.predict(batches, verbose=0), dtype=np.float32)

    def _evaluate(self, model, split: Split | None, stage: str, limit: int | None) -> TestResult:
        if split is None:
            raise ConfigError(f"the dataset has no {stage} split")
        _check_model_fits_data(model, self.data)
        if limit is not None:
            split = split.take(limit * self.eval_batch_size)
        probabilities = self._predict_split(model, split, limit=None)
        names = self.data.class_names if self.data is not None else None
        return TestResult.from_probabilities(split.y, probabilities, names)

    def validate(self, model, data: Dataset) -> TestResult:
        """Evaluate on `data.val` with one prediction pass; returns a `TestResult`."""
        self.data = self.data or data
        result = self._evaluate(model, data.val, "validation", self.limits.val)
        self._announce("validate", "on_validation_end", result)
        return result

    def test(self, model, data: Dataset) -> TestResult:
        """Evaluate on `data.test` with one prediction pass; returns a `TestResult`.

        The result (accuracy, loss, confusion matrix, per-class report) goes to every callback's
        `on_test_end` and into the `test` section of metrics.json.
        """
        self.data = data
        self.model = self.model or model
        result = self._evaluate(model, data.test, "test", self.limits.test)
        self.test_result = result
        self._announce("test", "on_test_end", result)
        self._write_metrics(status="finished")
        return result

    def _announce(self, stage: str, hook: str, result: TestResult) -> None:
        """Hand an evaluation's result to every callback, within the stage's setup/teardown."""
        dispatcher = _Dispatcher(self.callbacks)
        for c in self.callbacks:
            if hasattr(c, "trainer"):
                c.trainer = self
        try:
            dispatcher.trainer_hook("setup", self, stage)
            dispatcher.trainer_hook(hook, self, result)
        except BaseException as error:
            dispatcher.on_exception(self, error)
            raise
        finally:
            self._teardown(dispatcher, stage)

    def finish(self) -> None:
        """Mark the run finished without testing (a later identical command starts afresh)."""
        self._write_metrics(status="finished")

    # -- helpers for callbacks -----------------------------------------------------------

    def run_in_background(self, task, callback=None, hook: str = "on_epoch_end") -> None:
        """Run `task()` off the training thread, after the writes queued before it.

        For a callback's slow work on data it has already copied (drawing an image, writing
        a file): during a fit the next epoch trains meanwhile, and the fit waits for it before
        it returns, before a final status is written and before callbacks tear down. If it
        raises, the fit stops at the next epoch end with the error named after `callback`
        and `hook`. Outside a fit it runs at once.

        Example:
            >>> matrix = self.trainer.validation_confusion_matrix()     # a copy
            >>> self.trainer.run_in_background(lambda: draw(matrix), callback=self)
        """
        def attributed() -> None:
            try:
                task()
            except (Exception, SystemExit) as e:  # noqa: BLE001 - attributed, raised later
                raise CallbackFailure(callback if callback is not None else task, hook, e) from e

        self._in_background(attributed)

    def validation_confusion_matrix(self) -> np.ndarray | None:
        """The confusion matrix of the latest validation pass, collected during `fit` itself.

        Meaningful inside `on_epoch_end`. None when the model was compiled by the user without
        the Trainer's streaming metric.
        """
        from digits.metrics import StreamingConfusionMatrix

        for metric in _flat_metrics(self.model):
            if isinstance(metric, StreamingConfusionMatrix):
                return metric.matrix()
        return None

    def _resolved_config(self, model, data: Dataset, extra: dict | None) -> dict:
        spec = getattr(model, "_digits_spec", {"model": getattr(model, "name", "model")})
        return {
            **spec,
            "trainer": {
                "max_epochs": self.max_epochs, "seed": self.seed,
                "deterministic": self.deterministic, "batch_size": self.batch_size,
                "precision": self.precision, "strategy": self.strategy_name,
                "optimizer": self.optimizer_name, "learning_rate": self.learning_rate,
                "lr_schedule": self.lr_schedule, "label_smoothing": self.label_smoothing,
                "steps_per_execution": self.steps_per_execution,
                "fused_batch_norm": self.fused_batch_norm,
                "limit_train_batches": self.limits.train, "limit_val_batches": self.limits.val,
            },
            "data": data.summary(),
            "callbacks": [getattr(c, "name", "") or type(c).__name__ for c in self.callbacks],
            **(extra or {}),
        }


def _flat_metrics(model):
    stack = list(getattr(model, "metrics", []))
    while stack:
        metric = stack.pop()
        yield metric
        stack.extend(getattr(metric, "metrics", []) or [])
        for attr in ("_flat_metrics",):
            for group in getattr(metric, attr, []) or []:
                stack.extend(getattr(group, "metrics", []) or [])


def _resumable(run: RunDirectory, config: dict) -> bool:
    """An unfinished run of the same configuration whose saved state (if any) is whole.

    Unfinished covers a run cut off at any moment: before its first epoch ended (no
    metrics.json yet), while training ("running"), after a failure or Ctrl-C, and after
    training but before its test ("fitted").
    """
    metrics = run.read_json("metrics.json") or {}
    if metrics.get("status") == "finished":
        return False
    previous = run.read_json("config.json")
    if previous is None:
        return False
    ignore = {"callbacks"}
    same = {k: v for k, v in previous.items() if k not in ignore} == json.loads(
        json.dumps({k: v for k, v in config.items() if k not in ignore}, default=str))
    states = [run.read_json(f"{STATE_DIR}/{name}") for name in (STATE_FILE, PREVIOUS_STATE_FILE)]
    if states == [None, None]:
        return same
    return same and any(isinstance(state, dict) and isinstance(state.get("weights"), str)
                        and run.file(STATE_DIR).joinpath(state["weights"]).is_file()
                        for state in states)


def _seed_states(model) -> list:
    """The state variables of the model's seed generators (dropout, augmentation), in order.

    Keras lists them among `model.variables` but leaves them out of `save_weights`.
    """
    return [v for v in model.variables if v.name == "seed_generator_state"]


def _check_model_fits_data(model, data: Dataset) -> None:
    """Refuse a model whose input or output cannot match the dataset, before any run starts."""
    try:
        inputs, outputs = tuple(model.input_shape[1:]), tuple(model.output_shape[1:])
    except (AttributeError, ValueError, TypeError):
        return  # a subclassed model without static shapes: Keras will say what is wrong
    if inputs not in ((28, 28, 1), (28, 28)):
        raise ConfigError(f"the model takes inputs of shape {inputs}; the images are 28x28x1")
    classes = len(data.class_names)
    if outputs != (classes,):
        raise ConfigError(f"the model outputs shape {outputs}; the dataset has {classes} classes")


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name) or "model"


def _positive_int(label: str, value, upper: int = 1_000_000) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= upper:
        raise ConfigError(f"{label} must be a whole number from 1 to {upper}, got {value!r}")


def _non_negative_int(label: str, value, upper: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= upper:
        raise ConfigError(f"{label} must be a whole number from 0 to {upper}, got {value!r}")


def _optimizer(name):
    def make(lr):
        import keras

        return {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
                "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9,
                                                                  nesterov=True),
                "rmsprop": keras.optimizers.RMSprop}[name](learning_rate=lr)

    return make


OPTIMIZERS = {name: _optimizer(name) for name in ("adam", "adamw", "sgd", "rmsprop")}
