"""The callback dispatcher: runs every hook on the run's callbacks, in their order.

One Keras callback stands for all of them inside `model.fit` (the Keras bridge), so the
Trainer, not Keras' list, owns the order; batch hooks go only to callbacks that override them;
a callback that raises is named (`CallbackRaised`); two callbacks may not keep their state
under one key.
"""

from __future__ import annotations

import collections
import time

from digits.callbacks.registry import label_of
from digits.errors import CallbackRaised, ConfigError, RunFailure

_KERAS_RENAMES = {"on_test_begin": "on_evaluate_begin", "on_test_end": "on_evaluate_end"}
# Keras' base class calls its older names from the newer hooks: a callback that overrides
# `on_batch_end` (Keras' own TerminateOnNaN does) acts in `on_train_batch_end`.
_KERAS_ALIASES = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}


def _digits_base():
    from digits.callbacks.base import Callback

    return Callback


def hook_method(callback, hook: str) -> str | None:
    """The name of `callback`'s method that acts in `hook`, or None when it leaves the hook
    to its base class (a no-op). A hook set on the instance counts, as in Keras. `hook` is a Keras hook ("on_epoch_end", "on_test_end" for the
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
    own = getattr(callback, "__dict__", {})
    if callable(own.get(name)):
        return name  # set on the instance, as Keras' LambdaCallback sets its hooks: Keras calls it
    method = getattr(type(callback), name, None)
    if method is not None and method is not base:
        return name
    alias = _KERAS_ALIASES.get(hook)
    if alias is not None and not digits_callback and (
            callable(own.get(alias)) or getattr(type(callback), alias) is not getattr(keras_base, alias)):
        return name  # Keras' base `on_train_batch_end` calls the callback's `on_batch_end`
    return None


def check_state_keys(callbacks: list) -> None:
    """Two callbacks that keep state must not save it under one key: the second would
    silently overwrite the first's in the run's state (and both would resume from it)."""
    base = _digits_base()
    owners: dict[str, object] = {}
    for c in callbacks:
        if not isinstance(c, base) or type(c).state_dict is base.state_dict:
            continue  # keeps nothing
        key = c.state_key
        if key in owners:
            name = label_of(c)
            raise ConfigError(
                f"two callbacks keep their state under the key {key!r} ({name} twice?): give "
                "one of them its own `state_key` (a property of the callback class)")
        owners[key] = c


class HookTimer:
    """Seconds and calls of every (callback, stage, hook) the dispatcher runs.

    The `profiler` callback turns one on (`Trainer.hook_timer`) and prints it; the bench's
    callback-cost table reads the same numbers. Off, the dispatcher reads no clock.
    """

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str, str], float] = collections.defaultdict(float)
        self.calls: dict[tuple[str, str, str], int] = collections.defaultdict(int)

    def add(self, callback, stage: str, hook: str, seconds: float) -> None:
        key = (label_of(callback), stage, hook)
        self.seconds[key] += seconds
        self.calls[key] += 1


class Dispatcher:
    """Runs each hook on every callback in order, naming the callback when one raises.

    It is handed to `model.fit` as a single Keras callback, so the Trainer, not Keras' list,
    owns the order; batch hooks go only to callbacks that override them, so an idle hook
    costs nothing per batch. With a `timer`, every call is timed under `stage`.
    """

    def __init__(self, callbacks: list, trainer=None, stage: str = "fit",
                 timer: HookTimer | None = None) -> None:
        import keras

        check_state_keys(callbacks)
        self.callbacks = callbacks
        self.stage, self.timer = stage, timer
        for c in callbacks:
            if hasattr(c, "trainer"):
                c.trainer = trainer
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
            def set_model(self, model):
                super().set_model(model)
                for c in dispatcher.callbacks:
                    c.set_model(model)

            def set_params(self, params):
                super().set_params(params)
                for c in dispatcher.callbacks:
                    # The Trainer runs `fit` quietly (its console is rich_progress); a
                    # ProgbarLogger the user passed prints, as in `model.fit(verbose=1)`.
                    shown = isinstance(c, keras.callbacks.ProgbarLogger) and not params.get("verbose")
                    c.set_params({**params, "verbose": 1} if shown else params)

        # The Keras side: a fit's loop subclasses it (`digits.engine.loop.FitLoop`).
        self.keras_class = Keras
        self.keras_callback = Keras()

    def _call_pairs(self, pairs, *args, **kwargs) -> None:
        timer = self.timer
        for callback, hook in pairs:
            try:
                if timer is None:
                    getattr(callback, hook)(*args, **kwargs)
                else:
                    start = time.perf_counter()
                    try:
                        getattr(callback, hook)(*args, **kwargs)
                    finally:
                        timer.add(callback, self.stage, hook, time.perf_counter() - start)
            except BaseException as e:  # noqa: BLE001 - re-raised by _attribute, attributed or as it was
                _attribute(e, callback, hook)

    def collect(self, hook: str, *args) -> list[tuple]:
        """(callback, what it returned) from every digits callback that overrides the
        Trainer-level `hook` (`optimizer_options`, `state_variables`, `offer_weights`), in
        order; a callback that raises is named (`CallbackRaised`)."""
        return collect(self.callbacks, hook, *args)

    def trainer_hook(self, hook: str, *args) -> None:
        """A Trainer-level hook ("setup", "on_fit_start", ...) on every digits callback that
        acts in it (the base class's no-ops are not called, nor timed)."""
        self._call_pairs([(c, hook) for c in self._digits_callbacks() if _overrides(c, hook)],
                         *args)

    def on_exception(self, trainer, error: BaseException) -> list[str]:
        """Every callback's `on_exception`; what fails here is returned, never raised."""
        return self._call_all("on_exception", trainer, error)

    def teardown(self, trainer, stage: str) -> list[str]:
        """Every callback's `teardown`; what fails here is returned, never raised (it must
        not hide the error that ended the stage)."""
        return self._call_all("teardown", trainer, stage)

    def _digits_callbacks(self) -> list:
        return [c for c in self.callbacks if isinstance(c, _digits_base())]

    def _call_all(self, hook: str, *args) -> list[str]:
        problems = []
        for c in self._digits_callbacks():
            start = time.perf_counter()
            try:
                getattr(c, hook)(*args)
            except Exception as e:  # noqa: BLE001 - reported by the caller as a warning
                problems.append(f"{type(c).__name__}.{hook} failed: {e}")
            finally:
                if self.timer is not None:
                    self.timer.add(c, self.stage, hook, time.perf_counter() - start)
        return problems


def collect(callbacks: list, hook: str, *args) -> list[tuple]:
    """`Dispatcher.collect` over `callbacks`, without a dispatcher."""
    base = _digits_base()
    answers = []
    for c in callbacks:
        if not isinstance(c, base) or not _overrides(c, hook):
            continue
        try:
            answers.append((c, getattr(c, hook)(*args)))
        except BaseException as e:  # noqa: BLE001 - re-raised by _attribute, attributed or as it was
            _attribute(e, c, hook)
    return answers


def _attribute(error: BaseException, callback, hook: str):
    """Raise what `callback`'s `hook` raised: as it was for Ctrl-C, a run failure or a
    ConfigError (e.g. a monitored metric that does not exist: the spec's fault, not the
    callback's, so an input error, exit 2), else as `CallbackRaised` naming the callback and
    the hook (SystemExit too: a plugin calling sys.exit() must not end the run silently)."""
    if isinstance(error, (KeyboardInterrupt, RunFailure, ConfigError)) or \
            not isinstance(error, (Exception, SystemExit)):
        raise error
    raise CallbackRaised(callback, hook, error) from error


def _overrides(callback, hook: str) -> bool:
    """Whether a digits callback acts in the Trainer-level `hook` (its class or the instance
    replaces the base class's no-op)."""
    return callable(getattr(callback, "__dict__", {}).get(hook)) or \
        getattr(type(callback), hook) is not getattr(_digits_base(), hook)
