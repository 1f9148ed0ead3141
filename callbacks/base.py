"""The callback base class: every moment a plugin can act on, each a documented no-op.

A `Callback` is a `keras.callbacks.Callback`, so every Keras hook (`on_epoch_end`,
`on_train_batch_end`, ...) works, and plain Keras callbacks can be passed to the Trainer as
well. It adds Trainer-level hooks that receive the Trainer itself, an explicit `order`, and
`state_dict` / `load_state_dict` so that a resumed run resumes its callbacks too.
"""

from __future__ import annotations

import functools

import keras


class Callback(keras.callbacks.Callback):
    """Base class for digits callbacks.

    Hooks run in ascending `order` (ties keep the order they were given in); the Trainer puts
    checkpointing last. Override only the hooks you need.

    Class attributes:
        order: lower runs first. Built-ins use 0-90; checkpointing uses 100.
        name: the registered name (set by the registry; informational).

    Example:
        >>> class PrintAccuracy(Callback):
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         print(epoch, logs["val_accuracy"])
    """

    order: int = 50
    name: str = ""
    # True for a callback that cannot work without a Trainer (it reads the run, the data, the
    # Trainer's predictions): passed to a plain `model.fit`, it says so instead of failing later.
    needs_trainer: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.trainer = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # Keras calls `on_test_end(logs)` at the end of every evaluation pass; here that is the
        # Trainer-level `on_test_end(trainer, result)`. A subclass's own is made to tell the two
        # apart, so that in a plain `model.fit` Keras' call reaches `on_evaluate_end(logs)`.
        own = cls.__dict__.get("on_test_end")
        if own is not None and not getattr(own, "_digits_two_way", False):
            cls.on_test_end = _two_way_test_end(own)

    def set_model(self, model) -> None:
        if self.needs_trainer and self.trainer is None:
            raise TypeError(
                f"{type(self).__name__} is a digits callback that needs the Trainer: pass it to "
                "digits.Trainer(callbacks=[...]), not to a plain model.fit")
        super().set_model(model)

    @property
    def state_key(self) -> str:
        """Identifies this callback's state in a saved run; override if one run has two."""
        return type(self).__qualname__

    # --- Keras' evaluation-pass hooks, renamed: `on_test_end` is the Trainer-level hook ----

    def on_evaluate_begin(self, logs=None) -> None:
        """Called when a Keras evaluation pass (the validation of an epoch) begins."""

    def on_evaluate_end(self, logs=None) -> None:
        """Called when a Keras evaluation pass ends, with its logs (`loss`, `accuracy`, ...)."""

    # --- Trainer-level hooks -------------------------------------------------------------

    def setup(self, trainer, stage: str) -> None:
        """Called when a stage ("fit", "validate", "test", "predict") begins, before anything runs."""

    def on_fit_start(self, trainer) -> None:
        """Called once at the start of `Trainer.fit`, after the model is compiled and the run
        directory exists, before the first epoch (also when resuming)."""

    def on_fit_end(self, trainer) -> None:
        """Called once when `Trainer.fit` finishes normally (also after early stopping)."""

    # --- what changes the weights themselves (`EMA`, `StochasticWeightAveraging`) ----------

    def optimizer_options(self, trainer, steps_per_epoch: int) -> dict:
        """Keyword arguments for the optimizer the Trainer builds for an uncompiled model (Keras'
        `use_ema`, or a `learning_rate` schedule of its own); default: none. Asked once per fit,
        before compiling; two callbacks may not set the same argument."""
        return {}

    def state_variables(self, trainer) -> list:
        """Keras variables the run's state keeps beside the model's and the optimizer's, saved
        at every epoch's end and restored to the bit on resume; default: none. Asked once per
        fit, after compiling, before the saved state is restored (`trainer.model` is set)."""
        return []

    def on_before_state_save(self, trainer, epoch: int) -> None:
        """Called at the end of every epoch (`epoch` from 0), after every callback's
        `on_epoch_end` and the history, just before the run's state is saved (also after a
        fault, when nothing is saved): put into the model what the state must hold."""

    def offer_weights(self, trainer, logs: dict, label: str) -> bool | None:
        """The model holds weights that no epoch ended with (an average, called `label`),
        validated with `logs`: keep them if they are better, as the checkpoint does. Returns
        whether they were kept (None: not this callback's concern). See `Trainer.offer_weights`."""
        return None

    def on_validation_end(self, trainer, result) -> None:
        """Called after `Trainer.validate` with its `TestResult` on the validation split."""

    def on_test_end(self, trainer, result=None) -> None:
        """Called after `Trainer.test` with its `TestResult`: predictions, confusion matrix and
        per-class report, so that no callback recomputes them. (In a plain `model.fit`, Keras'
        `on_test_end(logs)` goes to `on_evaluate_end`.)"""
        if result is None and (trainer is None or isinstance(trainer, dict)):
            self.on_evaluate_end(trainer)  # Keras' end of an evaluation pass

    on_test_end._digits_two_way = True

    def on_exception(self, trainer, error: BaseException) -> None:
        """Called when any stage fails (including Ctrl-C), before the Trainer saves its state
        and re-raises. Release resources here; do not raise."""

    def teardown(self, trainer, stage: str) -> None:
        """Called when a stage ends, whether it succeeded or failed."""

    # --- state, saved with the run so that a resumed run resumes its callbacks -------------

    def state_dict(self) -> dict:
        """JSON-serialisable state to save with the run (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned (called before `on_fit_start` on resume)."""


def _two_way_test_end(method):
    """`method(self, trainer, result)`, also callable by Keras as `on_test_end(logs)`, which
    then goes to `self.on_evaluate_end(logs)`."""

    @functools.wraps(method)
    def on_test_end(self, *args, **kwargs):
        if _keras_evaluation_end(args, kwargs):
            return self.on_evaluate_end(*args, **kwargs)
        return method(self, *args, **kwargs)

    on_test_end._digits_two_way = True
    return on_test_end


def _keras_evaluation_end(args: tuple, kwargs: dict) -> bool:
    """Whether a call of `on_test_end` is Keras' (`logs`: one dict or None), not the Trainer's
    (`trainer, result`)."""
    values = [*args, *kwargs.values()]
    return len(values) == 1 and (values[0] is None or isinstance(values[0], dict))


class EveryNEpochs(Callback):
    """A callback that acts on the validation pass every `every_n_epochs` epochs.

    `on_due_epoch(epoch)` runs at every n-th epoch and after the last one; when training stops
    early between two due epochs, it runs once more at fit end, so the final model is always
    covered. Subclasses override `on_due_epoch`.

    Args:
        every_n_epochs: act every this many epochs (default 1).
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        super().__init__()
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) \
                or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a whole number >= 1, got {every_n_epochs!r}")
        self.every_n_epochs = every_n_epochs
        self._last_epoch: int | None = None
        self._done_epoch: int | None = None

    def on_due_epoch(self, epoch: int) -> None:
        """Called at each due epoch (0-based `epoch`), after Keras' validation pass: the
        Trainer's `validation_confusion_matrix()` then holds that pass. A no-op here."""

    def _due(self, epoch: int) -> bool:
        last = self.trainer is not None and epoch + 1 >= self.trainer.max_epochs
        return (epoch + 1) % self.every_n_epochs == 0 or last

    def on_fit_start(self, trainer) -> None:
        self._last_epoch = self._done_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        if self._due(epoch):
            self._run_due(epoch)

    def on_fit_end(self, trainer) -> None:
        # Stopped early between two due epochs: the final model still gets its turn.
        if self._last_epoch is not None and self._last_epoch != self._done_epoch:
            self._run_due(self._last_epoch)

    def _run_due(self, epoch: int) -> None:
        self.on_due_epoch(epoch)
        self._done_epoch = epoch
