"""The Trainer: fit / validate / test / predict over named parts.

This is the only place in the project that calls `model.fit`. What it leans on, one file each:

- `digits.engine.config.TrainerSettings`: the settings, checked once;
- `digits.engine.compiling`: optimizer, loss, metrics, fused batch norm, steps per execution;
- `digits.runs.state.RunState`: the run directory opened or resumed, each epoch saved and
  loaded, metrics.json, the background writes;
- `digits.engine.dispatch.Dispatcher`: the callbacks' hooks, in order, through one Keras callback.

Every stage goes through one failure policy (`_stage`): callbacks hear `on_exception`, a fit
records its status, and every callback tears down, whatever happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from digits.callbacks.registry import label_of
from digits.data import Dataset, Split, make_pipeline
from digits.engine.compiling import compile_model, outputs_logits
from digits.engine.config import DEFAULTS, TrainerSettings, check_name
from digits.engine.dispatch import Dispatcher, HookTimer
from digits.engine.results import TestResult
from digits.engine.step_counter import StepCounter
from digits.engine.stopping import Stop
from digits.errors import CallbackRaised, ConfigError, TrainingStopped
from digits.models import check_model_fits_data
from digits.runs.directory import RunDirectory, check_writable_dir  # noqa: F401 - public here too
from digits.runs.state import RunState
from digits.speed.precision import dtype_policy, resolve_precision

SETTINGS = tuple(f.name for f in dataclasses.fields(TrainerSettings))


class Trainer:
    """Trains, validates, tests and predicts, writing everything under one run directory.

    Args:
        settings: a `TrainerSettings` (every setting, checked once); each of its fields may
            also be given as a keyword argument, which wins (listed below).
        callbacks: callback instances (digits or plain Keras). None means the default set
            (TensorBoard scalars, confusion-matrix images, reports, plots, progress, checkpoint).
        log_dir: root of all runs (default "logs").
        name: the run's name; runs land in `<log_dir>/<name>/version_<n>` (default: model name).
        enable_checkpointing: add the `checkpoint` callback (best model.keras) if none is given.
        resume: resume the latest unfinished run of this name, if there is one.
        verbose: print notices (resume, run directory) to stderr.
        **settings: any field of `TrainerSettings` (see below).

    Every setting is also a read-only attribute (`trainer.batch_size`), and all of them
    together are `trainer.settings`. `precision="auto"` (the default) becomes the policy it
    resolves to (`digits.speed.precision`).

    Example:
        >>> from digits import Trainer, load_dataset
        >>> data = load_dataset("mnist-5k")               # the embedded 5,000 digits
        >>> trainer = Trainer(max_epochs=1, limit_train_batches=4, verbose=False)
        >>> model = trainer.build_model("cnn")
        >>> history = trainer.fit(model, data)             # prints the model, progress
        >>> result = trainer.test(model, data)             # prints the report
        >>> str(trainer.run.path), sorted(result.to_dict())
        ('logs/cnn/version_0', ['accuracy', 'confusion_matrix', 'examples', 'loss', 'report'])
    """

    def __init__(
        self,
        settings: TrainerSettings | None = None,
        *,
        callbacks: list | None = None,
        log_dir: str | os.PathLike = "logs",
        name: str | None = None,
        enable_checkpointing: bool = True,
        resume: bool = False,
        verbose: bool = True,
        **setting_values,
    ) -> None:
        unknown = sorted(set(setting_values) - set(SETTINGS))
        if unknown:
            raise TypeError(f"Trainer() got an unexpected keyword argument {unknown[0]!r} (its "
                            f"settings: {', '.join(SETTINGS)})")
        if settings is not None and not isinstance(settings, TrainerSettings):
            raise TypeError(f"Trainer(settings) takes a TrainerSettings, got {settings!r}; "
                            "give settings such as max_epochs as keyword arguments")
        chosen = dataclasses.replace(settings or DEFAULTS, **setting_values)
        self.settings = dataclasses.replace(chosen,
                                            precision=resolve_precision(chosen.precision))
        if name is not None:
            check_name(name)
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
        self.stopped: Stop | None = None  # why the fit stops early (`stop`), if it does
        self.test_result: TestResult | None = None
        self.config: dict = {}
        self.state = RunState(self)
        self.summary_writers: dict = {}  # (run path, split) -> tf.summary writer, for callbacks
        # Every hook call timed, when a callback asks (`wants_timings`, the profiler) or a
        # caller sets one (the bench).
        self.hook_timer: HookTimer | None = None
        # Steps counted inside the compiled loop while a callback asks (`wants_step_counter`:
        # the progress bars), so that they move within a multi-step call; see step_counter.py.
        self.step_counter = StepCounter()
        # What validation said of averaged weights offered after the fit (stochastic weight
        # averaging, `digits.callbacks.swa`); also in metrics.json.
        self.averaged: dict | None = None
        self._state_variables: list = []  # the callbacks' (`Callback.state_variables`)
        self._callbacks: list | None = None
        self._predicted: tuple | None = None  # (step, labels, probabilities) of validation
        self._strategy = None
        self._started = time.time()

    # -- setup -------------------------------------------------------------------------

    @property
    def strategy(self):
        """The tf.distribute strategy (a default one when `strategy=None`)."""
        if self._strategy is None:
            import tensorflow as tf

            self._strategy = (tf.distribute.MirroredStrategy()
                              if self.settings.strategy == "mirrored"
                              else tf.distribute.get_strategy())
        return self._strategy

    def build_model(self, name: str = "cnn", **hyperparameters):
        """Build `digits.build_model(name, ...)` under this Trainer's precision and strategy
        (Keras' global dtype policy is this Trainer's while the model is built, and back to
        what it was after)."""
        from digits.models import build_model

        hyperparameters.setdefault("seed", self.seed)
        # Initializers without a seed of their own draw from Keras' global generator, which is
        # seeded at random in a fresh process unless it is seeded here.
        self._seed_everything()
        with self.strategy.scope(), dtype_policy(self.precision):
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
        from digits.callbacks.checkpoint import Checkpoint
        from digits.callbacks.registry import default_callbacks

        chosen = list(default_callbacks()) if self._user_callbacks is None else list(self._user_callbacks)
        if self.enable_checkpointing and not any(isinstance(c, Checkpoint) for c in chosen):
            checkpoint = Checkpoint()
            checkpoint.name = "checkpoint"
            chosen.append(checkpoint)
        if not self.enable_checkpointing:
            chosen = [c for c in chosen if not isinstance(c, Checkpoint)]
        if self.fast_dev_run:
            chosen = [c for c in chosen if not getattr(c, "heavy", False)]
        if self.profile_batch is not None:
            from digits.callbacks.profiler import ProfileBatches

            chosen.append(ProfileBatches(*self.profile_batch))
        chosen = self._averaging_callbacks(chosen)
        if self.settings.distill_from is not None:
            from digits.callbacks.distill import Distill

            if not any(isinstance(c, Distill) for c in chosen):
                chosen.append(Distill(self.settings.distill_from))
        # A stable sort: equal orders keep the order they were given in.
        return sorted(chosen, key=lambda c: getattr(c, "order", 50))

    def _averaging_callbacks(self, chosen: list) -> list:
        """The callback behind `ema_decay` (`digits.callbacks.ema.EMA`) or `swa_epochs`
        (`digits.callbacks.swa.StochasticWeightAveraging`), unless one was given; one way of
        averaging at a time."""
        from digits.callbacks.ema import EMA
        from digits.callbacks.swa import StochasticWeightAveraging

        settings = self.settings
        if settings.ema_decay is not None and not any(isinstance(c, EMA) for c in chosen):
            chosen = [*chosen, EMA(settings.ema_decay)]
        if settings.swa_epochs is not None and not any(
                isinstance(c, StochasticWeightAveraging) for c in chosen):
            chosen = [*chosen, StochasticWeightAveraging(settings.swa_epochs, settings.swa_lr)]
        kinds = {type(c).__name__ for c in chosen if isinstance(c, (EMA, StochasticWeightAveraging))}
        if len(kinds) > 1:
            raise ConfigError("EMA and StochasticWeightAveraging are two ways of averaging the "
                              "weights; choose one")
        return chosen

    def _seed_everything(self) -> None:
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(self.seed)
        if self.deterministic:
            tf.config.experimental.enable_op_determinism()

    def stop(self, reason: str, fault: bool = False) -> None:
        """Stop the fit once this epoch ends (Keras' `model.stop_training`), for `reason`.

        A callback's way to end a run early: `fault=True` for a run that went wrong (the fit
        then raises `TrainingStopped`, the last good state and checkpoint are kept), else an
        ordinary stop (early stopping, a pruned trial). The first stop is kept, except that a
        fault replaces an ordinary one. `trainer.stopped` holds it (`digits.engine.stopping`).
        """
        if self.stopped is None or (fault and not self.stopped.fault):
            self.stopped = Stop(reason, fault=fault)
        if self.model is not None:
            self.model.stop_training = True

    @property
    def stop_reason(self) -> str | None:
        """Why the fit stopped early, as `metrics.json` records it ("early stopping: ...",
        "fault: loss became NaN ..."), or None."""
        return None if self.stopped is None else self.stopped.text

    def notice(self, message: str) -> None:
        """A line on stderr for the user (resumed from, warnings), unless `verbose=False`."""
        if self.verbose:
            print(message, file=sys.stderr, flush=True)

    def _warn(self, problems: list[str]) -> None:
        for problem in problems:
            self.notice(f"warning: {problem}")

    def _dispatcher(self, stage: str, callbacks: list) -> Dispatcher:
        if self.hook_timer is None and any(getattr(c, "wants_timings", False) for c in callbacks):
            self.hook_timer = HookTimer()
        return Dispatcher(callbacks, trainer=self, stage=stage, timer=self.hook_timer)

    # -- the failure policy ----------------------------------------------------------------

    @contextlib.contextmanager
    def _stage(self, stage: str, dispatcher: Dispatcher):
        """Every stage runs inside this: on any error (Ctrl-C included) the fit's last files
        are settled, every callback hears `on_exception`, a fit records its status, and
        the error is raised as it was; whatever happened, every callback tears down."""
        fitting = stage == "fit"
        try:
            yield
        except BaseException as error:
            if fitting:
                self.state.settle_after(error)
            self._warn(dispatcher.on_exception(self, error))
            if fitting:
                self.state.record_failure(error)
            raise
        finally:
            self._warn(dispatcher.teardown(self, stage))
            for writer in self.summary_writers.values():  # what no teardown closed
                writer.close()
            self.summary_writers.clear()
            if fitting:
                self.state.close()

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
        self._check_fit(model, data, initial_epoch)
        self._meet_learning_rate_callbacks()
        self._say_if_unsaveable(model)
        self.model, self.data = model, data
        self.config = self.resolved_config(model, data, config)
        if initial_epoch:
            self.config["trainer"]["initial_epoch"] = int(initial_epoch)
        self._seed_everything()
        train_steps = self.settings.train_steps(len(data.train))
        self.step_counter = StepCounter(train_steps)
        self.settings.check_profile_range(train_steps)
        self._average_a_compiled_optimizer(model)
        dispatcher = self._dispatcher("fit", self.callbacks)
        compile_model(model, self.settings, train_steps, self.strategy,
                      num_classes=len(data.class_names),
                      optimizer_options=self._optimizer_options(dispatcher, train_steps))
        self.averaged = None
        # Before the state that restores them.
        self._state_variables = [v for _, variables in dispatcher.collect(
            "state_variables", self) for v in variables]
        self.state.open(model, self.config)
        background = self.state.writes.start()
        with self._stage("fit", dispatcher):
            # Callbacks set up after their saved state is back, so setup may read it.
            initial_epoch, stopped = self.state.restore(model, int(initial_epoch), train_steps)
            dispatcher.trainer_hook("setup", self, "fit")
            dispatcher.trainer_hook("on_fit_start", self)
            if initial_epoch < self.max_epochs and not stopped:
                self._fit_epochs(model, data, dispatcher, background, initial_epoch, train_steps)
            self.state.writes.raise_failure()
            if self.stopped is not None and self.stopped.fault:
                raise TrainingStopped(self.stopped.reason)
            dispatcher.trainer_hook("on_fit_end", self)
            self.state.writes.raise_failure()  # what on_fit_end queued, too
            self.state.write_metrics(status="fitted")
        return getattr(model, "history", None)

    def state_variables(self) -> list:
        """Variables the run's state keeps beside the model's and the optimizer's: those the
        callbacks asked for (`Callback.state_variables`, such as stochastic weight averaging's
        running mean)."""
        return self._state_variables

    def offer_weights(self, logs: dict, label: str) -> bool | None:
        """The model holds weights that no epoch ended with (an average, called `label`, such
        as `digits.callbacks.swa`'s), validated with `logs`: every callback may keep them
        (`Callback.offer_weights`; the checkpoint saves them if they are its best). Returns
        whether one kept them (None: no callback compared them)."""
        from digits.engine.dispatch import collect

        answers = [kept for _, kept in collect(self.callbacks, "offer_weights", self, logs, label)
                   if kept is not None]
        return any(answers) if answers else None

    def _optimizer_options(self, dispatcher: Dispatcher, train_steps: int) -> dict:
        """What the callbacks ask of the optimizer the Trainer builds (`optimizer_options`)."""
        options: dict = {}
        owners: dict = {}
        for callback, asked in dispatcher.collect("optimizer_options", self, train_steps):
            for key, value in (asked or {}).items():
                if key in options:
                    raise ConfigError(f"{label_of(owners[key])} and {label_of(callback)} both "
                                      f"set the optimizer's {key!r}: use one of them")
                options[key], owners[key] = value, callback
        return options

    def _average_a_compiled_optimizer(self, model) -> None:
        """A model compiled with an optimizer that keeps weight averages (`use_ema=True`) is
        validated, checkpointed and finished with them as `ema_decay` would (an `EMA`
        callback without a decay of its own)."""
        from digits.callbacks.ema import EMA, optimizer_with_averages

        if optimizer_with_averages(model) is not None and not any(
                isinstance(c, EMA) for c in self.callbacks):
            self._callbacks = sorted([EMA(), *self.callbacks],
                                     key=lambda c: getattr(c, "order", 50))

    def _say_if_unsaveable(self, model) -> None:
        """A `keras.Model` subclass that Keras cannot rebuild from a file (not registered with
        `keras.saving.register_keras_serializable`) still trains and resumes (from its saved
        variables), but its `model.keras` will not load anywhere else: said once, before the
        first epoch, with the fix."""
        import keras

        cls = type(model)
        if not self.enable_checkpointing or cls in (keras.Model, keras.Sequential) \
                or cls.__module__.startswith("keras."):
            return
        if keras.saving.get_registered_name(cls) == cls.__name__:
            self.notice(f"notice: {cls.__name__} is a keras.Model subclass that Keras cannot "
                        "load from a file: its model.keras will not load in digits.evaluate, "
                        "predict, export or serve. Decorate the class with "
                        "@keras.saving.register_keras_serializable() and give it get_config() "
                        "(the run still resumes from its saved variables)")

    def _meet_learning_rate_callbacks(self) -> None:
        """A callback that sets the learning rate (Keras' `ReduceLROnPlateau` and
        `LearningRateScheduler`, or any with `sets_learning_rate = True`) needs a rate it can
        set, which a schedule is not: the run then trains at a constant rate, settable, and
        says so once."""
        import keras

        kinds = (keras.callbacks.ReduceLROnPlateau, keras.callbacks.LearningRateScheduler)
        setters = [c for c in self.callbacks
                   if isinstance(c, kinds) or getattr(c, "sets_learning_rate", False)]
        if not setters or self.settings.lr_schedule == "constant":
            return
        names = ", ".join(label_of(c) for c in setters)
        if self.settings.swa_epochs is not None or self.settings.lr_cycles != 1:
            raise ConfigError(f"{names} sets the learning rate, which swa_epochs and lr_cycles "
                              "schedule themselves: use one or the other")
        schedule = self.settings.lr_schedule
        self.settings = dataclasses.replace(self.settings, lr_schedule="constant")
        self.notice(f"notice: {names} sets the learning rate, so this run trains at a constant "
                    f"rate from {self.settings.learning_rate:g} instead of the {schedule} "
                    "schedule (as with --lr-schedule constant)")

    def _check_fit(self, model, data: Dataset, initial_epoch: int) -> None:
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) \
                or not 0 <= initial_epoch < self.max_epochs:
            raise ConfigError(f"initial_epoch must be a whole number from 0 to "
                              f"{self.max_epochs - 1}, got {initial_epoch!r}")
        if data.train is None or data.val is None:
            raise ConfigError(f"dataset {data.name!r} has no training data (it is test-only)")
        check_model_fits_data(model, data)
        import keras

        if any(isinstance(c, keras.callbacks.SwapEMAWeights) for c in self.callbacks):
            raise ConfigError("Keras' SwapEMAWeights: the Trainer averages the weights itself; "
                              "use ema_decay (--ema DECAY), which validates, checkpoints and "
                              "tests the averaged weights")
        if not self.fast_dev_run:
            check_writable_dir(self.log_dir)

    def _fit_epochs(self, model, data: Dataset, dispatcher: Dispatcher, background,
                    initial_epoch: int, train_steps: int) -> None:
        """Keras' `fit` over digits' pipelines, from `initial_epoch` to `max_epochs`, each
        epoch's edges run by the fit loop (`digits.engine.loop`)."""
        import tensorflow as tf

        from digits.engine.loop import FitLoop

        # The training pipeline draws each epoch's data order from this variable.
        epoch_variable = tf.Variable(initial_epoch, dtype=tf.int64, trainable=False)
        loop = FitLoop(self, dispatcher, epoch_variable, background)
        train_ds = make_pipeline(data.train, self.batch_size, shuffle=True, seed=self.seed,
                                 epoch=epoch_variable, limit_batches=train_steps)
        val_ds = make_pipeline(data.val, self.eval_batch_size,
                               limit_batches=self.limit_val_batches)
        counting = any(getattr(c, "wants_step_counter", False) for c in self.callbacks) \
            and StepCounter.supported(model)
        with self.step_counter.attached(model) if counting else contextlib.nullcontext():
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=self.max_epochs,
                initial_epoch=initial_epoch,
                callbacks=[loop.keras_callback()],
                shuffle=False,  # the pipeline already shuffles, per epoch, from the seed
                verbose=0,
            )

    @property
    def eval_batch_size(self) -> int:
        return self.settings.eval_batch_size

    def validate(self, model, data: Dataset, tta: bool = False) -> TestResult:
        """Evaluate on `data.val` with one prediction pass (one per view of `digits.recipes.tta`
        with `tta=True`); returns a `TestResult`."""
        self.data = self.data or data
        result = self._evaluate(model, data.val, "validation", self.limit_val_batches, tta)
        self._hand_to_callbacks("validate", "on_validation_end", result)
        return result

    def test(self, model, data: Dataset, tta: bool = False) -> TestResult:
        """Evaluate on `data.test` with one prediction pass; returns a `TestResult`.

        With `tta=True` each image's probabilities are averaged over the copies of
        `digits.recipes.tta.VIEWS` (one prediction pass each). The result (accuracy, loss, confusion
        matrix, per-class report) goes to every callback's `on_test_end` and into the `test`
        section of metrics.json.
        """
        self.data = data
        self.model = self.model or model
        result = self._evaluate(model, data.test, "test", self.limit_test_batches, tta)
        self.test_result = result
        self._hand_to_callbacks("test", "on_test_end", result)
        self.state.write_metrics(status="finished")
        return result

    def best_model(self, model):
        """`model` with the weights of the checkpointed best-by-validation model, when this
        fit checkpointed one; else `model` as it is (its final weights)."""
        from digits.callbacks.checkpoint import Checkpoint

        for c in self.callbacks:
            if isinstance(c, Checkpoint) and c.path is not None and c.path.is_file():
                # The weights alone: the model in hand knows its own class, so an unregistered
                # subclass (which Keras cannot rebuild from the file) is restored as well.
                model.load_weights(c.path)
                break
        return model

    def print_report(self, result: TestResult) -> None:
        """Print the run directory, and the test report unless a rich report already showed it."""
        from digits.callbacks.rich_report import RichReport

        if not any(isinstance(c, RichReport) for c in self.callbacks):
            print(result.report_text())
        where = self.run.path if not self.fast_dev_run else "(fast dev run: nothing kept)"
        print(f"test accuracy {result.accuracy:.4f} on {len(result.y_true)} images; "
              f"run directory: {where}")
        sys.stdout.flush()

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for images `x` (float32, (N, 28, 28, 1), [0, 1]).

        The model is used as it is and left as it was found: unlike `fit`, `validate` and
        `test`, `predict` does not route a caller's batch norm through the fused kernel.
        """
        x = np.asarray(x, dtype=np.float32)
        return self._predict_split(model, Split(x, np.zeros(len(x), dtype=np.int64)), fuse=False)

    def _fuse(self, model) -> None:
        """The model's batch norm on the fused kernel, as `fit` compiles it (idempotent)."""
        if self.fused_batch_norm:
            from digits.speed.fusion import fuse_batch_norm

            fuse_batch_norm(model)

    def _predict_split(self, model, split: Split, fuse: bool = True) -> np.ndarray:
        if fuse:
            self._fuse(model)
        if len(split) == 0:
            return np.zeros((0, self._classes(model)), dtype=np.float32)
        # Through digits' own pipeline: Keras' pipeline for arrays autotunes, and tearing
        # it down after the pass can stall for seconds (see `make_pipeline`).
        batches = make_pipeline(split, self.eval_batch_size)
        outputs = np.asarray(model.predict(batches, verbose=0), dtype=np.float32)
        return _softmax(outputs) if outputs_logits(model) else outputs

    def _classes(self, model) -> int:
        if self.data is not None:
            return len(self.data.class_names)
        return int(model.output_shape[-1])

    def _evaluate(self, model, split: Split | None, stage: str, limit: int | None,
                  tta: bool = False) -> TestResult:
        if split is None:
            raise ConfigError(f"the dataset has no {stage} split")
        check_model_fits_data(model, self.data)
        if limit is not None:
            split = split.take(limit * self.eval_batch_size)
        features = None
        if stage == "test" and any(getattr(c, "wants_features", False) for c in self.callbacks):
            features, probabilities = self.features_and_probabilities(model, split)
        if tta:
            from digits.recipes import tta as augmentation

            # The features' pass gave the images' own probabilities: one view fewer to predict.
            self._fuse(model)  # as fit and test compute: `predict` leaves a model as it is
            probabilities = augmentation.averaged(lambda x: self.predict(model, x), split.x,
                                                  identity=probabilities if features is not None
                                                  else None)
        elif features is None:
            probabilities = self._predict_split(model, split)
        names = self.data.class_names if self.data is not None else None
        result = TestResult.from_probabilities(split.y, probabilities, names)
        result.features = features
        if tta:
            result.tta_views = augmentation.VIEWS
        return result

    def features_and_probabilities(self, model, split: Split):
        """One prediction pass that returns what the model computed before its classifier
        (the input of its last Dense layer, (N, F)) and the class probabilities (N, classes).
        Features are None for a model without such a layer (probabilities then too)."""
        import keras

        self._fuse(model)
        dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        try:
            both = keras.Model(model.inputs, [dense[-1].input, *model.outputs])
        except (IndexError, AttributeError, ValueError, TypeError):
            return None, None  # a subclassed model, or no Dense layer: nothing to show
        if len(split) == 0:
            return (np.zeros((0, both.outputs[0].shape[-1]), np.float32),
                    np.zeros((0, self._classes(model)), np.float32))
        features, probabilities = both.predict(make_pipeline(split, self.eval_batch_size),
                                               verbose=0)
        probabilities = np.asarray(probabilities, np.float32)
        return (np.asarray(features, np.float32).reshape(len(split), -1),
                _softmax(probabilities) if outputs_logits(model) else probabilities)

    def _hand_to_callbacks(self, stage: str, hook: str, result: TestResult) -> None:
        """Hand an evaluation's result to every callback, within the stage's setup/teardown."""
        dispatcher = self._dispatcher(stage, self.callbacks)
        with self._stage(stage, dispatcher):
            dispatcher.trainer_hook("setup", self, stage)
            dispatcher.trainer_hook(hook, self, result)

    def finish(self) -> None:
        """Mark the run finished without testing (a later identical command starts afresh)."""
        self.state.write_metrics(status="finished")

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
                raise CallbackRaised(callback if callback is not None else task, hook, e) from e

        self.state.writes.submit(attributed)

    def validation_confusion_matrix(self) -> np.ndarray | None:
        """The confusion matrix of the latest validation pass; meaningful in `on_epoch_end`.

        Read from the streaming metric that collected it during Keras' own validation pass.
        Only for a model the user compiled without that metric does this predict the
        validation split: once per epoch, however many callbacks ask. None before a fit.
        """
        from digits.engine.metrics import StreamingConfusionMatrix
        from digits.engine.results import confusion_matrix_from_predictions

        metric = self._streaming_metric(StreamingConfusionMatrix)
        if metric is not None:
            return metric.matrix()
        predicted = self._validation_predictions()
        if predicted is None:
            return None
        y, probabilities = predicted
        return confusion_matrix_from_predictions(y, probabilities.argmax(axis=1),
                                                 probabilities.shape[1])

    def validation_pr_counts(self) -> np.ndarray | None:
        """Per class, the latest validation pass's positives and negatives in each probability
        bin (`digits.engine.metrics.StreamingPRCounts.counts`): every class's precision-recall curve.
        From the streaming metric, or one shared prediction pass, as the confusion matrix."""
        from digits.engine.metrics import StreamingPRCounts, pr_counts

        metric = self._streaming_metric(StreamingPRCounts)
        if metric is not None:
            return metric.counts()
        predicted = self._validation_predictions()
        return None if predicted is None else pr_counts(*predicted)

    def _streaming_metric(self, kind):
        from digits.engine.metrics import flat_metrics

        return next((m for m in flat_metrics(self.model) if isinstance(m, kind)), None)

    def _validation_predictions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(labels, probabilities) of the validation split, predicted once per training step."""
        model, data = self.model, self.data
        if model is None or data is None or data.val is None:
            return None
        step = int(np.asarray(model.optimizer.iterations)) \
            if getattr(model, "optimizer", None) is not None else -1
        if self._predicted is None or self._predicted[0] != step:
            split = data.val
            if self.limit_val_batches is not None:
                split = split.take(self.limit_val_batches * self.eval_batch_size)
            self._fuse(model)
            self._predicted = (step, split.y, self.predict(model, split.x))
        return self._predicted[1:]

    def resolved_config(self, model, data: Dataset, extra: dict | None = None) -> dict:
        """What `fit` records in config.json (and compares to resume): the model's spec, the
        settings, the data's summary, the callbacks, and `extra`."""
        spec = getattr(model, "_digits_spec", {"model": getattr(model, "name", "model")})
        return {
            **spec,
            "trainer": self.settings.to_dict(),
            "data": data.summary(),
            "callbacks": [label_of(c) for c in self.callbacks],
            **(extra or {}),
        }


def _setting(name: str) -> property:
    return property(lambda self: getattr(self.settings, name),
                    doc=f"The `{name}` setting (read-only; see `Trainer.settings`).")


def _declare_settings() -> None:
    """Every setting, as declared once in `TrainerSettings`: a read-only attribute, a keyword
    argument in `Trainer`'s signature (for `help()` and editors) and a line of its docstring."""
    import inspect
    import textwrap

    fields = dataclasses.fields(TrainerSettings)
    for field in fields:
        if field.name != "strategy":  # `Trainer.strategy` is the tf.distribute strategy itself
            setattr(Trainer, field.name, _setting(field.name))
    lines = ["", "    Settings (keyword arguments; each declared once, in `TrainerSettings`):"]
    for field in fields:
        text = field.metadata["help"].format(default=field.default)
        flag = f" [{field.metadata['flag']}]" if field.metadata["flag"] else ""
        lines += textwrap.wrap(f"{field.name}={field.default!r}{flag}: {text}", 96,
                               initial_indent=" " * 8, subsequent_indent=" " * 12)
    Trainer.__doc__ += "\n".join(lines) + "\n"
    init = inspect.signature(Trainer.__init__)
    kept = [p for p in init.parameters.values() if p.kind is not p.VAR_KEYWORD]
    Trainer.__init__.__signature__ = init.replace(parameters=[*kept, *(
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                          annotation=f.type) for f in fields)])


_declare_settings()


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
