"""digits.engine.dispatch: hooks in order, through one Keras callback; failures named, not hidden."""

from __future__ import annotations

import keras
import pytest

from digits.callbacks.base import Callback
from digits.engine.dispatch import Dispatcher, check_state_keys, hook_method
from digits.errors import CallbackRaised, ConfigError, TrainingStopped


class Logs(Callback):
    def __init__(self, log, tag):
        super().__init__()
        self.log, self.tag = log, tag

    def on_epoch_end(self, epoch, logs=None):
        self.log.append((self.tag, epoch))

    def on_test_end(self, trainer, result):  # the Trainer's end of a test, not Keras'
        self.log.append((self.tag, "test", result))


class Raises(Callback):
    def __init__(self, error):
        super().__init__()
        self.error = error
        self.name = "raiser"

    def on_epoch_end(self, epoch, logs=None):
        raise self.error

    def on_exception(self, trainer, error):
        raise RuntimeError("cannot clean up")

    def teardown(self, trainer, stage):
        raise OSError("disk gone")


def test_hooks_reach_callbacks_in_order_and_keras_test_end_is_renamed():
    log = []
    dispatcher = Dispatcher([Logs(log, "a"), Logs(log, "b")])
    dispatcher.keras_callback.on_epoch_end(0, {})
    dispatcher.trainer_hook("on_test_end", None, "result")
    assert log == [("a", 0), ("b", 0), ("a", "test", "result"), ("b", "test", "result")]
    # Keras' on_test_end (the end of an evaluation pass) reaches digits callbacks by its
    # other name, so it never calls the Trainer-level on_test_end with Keras' arguments.
    assert hook_method(Logs([], "x"), "on_test_end") is None
    assert hook_method(Logs([], "x"), "on_epoch_end") == "on_epoch_end"
    assert hook_method(keras.callbacks.History(), "on_epoch_end") == "on_epoch_end"


def test_idle_batch_hooks_cost_nothing():
    keras_side = Dispatcher([Logs([], "a")]).keras_callback
    # Keras skips batch hooks a callback leaves to its base class.
    assert type(keras_side).on_train_batch_end is keras.callbacks.Callback.on_train_batch_end


def test_a_raising_callback_is_named_with_its_hook():
    dispatcher = Dispatcher([Raises(ValueError("bad value"))])
    with pytest.raises(CallbackRaised, match="callback 'raiser' failed in on_epoch_end: "
                                             "ValueError: bad value"):
        dispatcher.keras_callback.on_epoch_end(0, {})


@pytest.mark.parametrize("error", [ConfigError("no such metric"), TrainingStopped("nan"),
                                   KeyboardInterrupt()])
def test_input_errors_run_failures_and_ctrl_c_pass_through_unwrapped(error):
    with pytest.raises(type(error)):
        Dispatcher([Raises(error)]).keras_callback.on_epoch_end(0, {})


def test_cleanup_hooks_report_their_problems_instead_of_raising():
    dispatcher = Dispatcher([Raises(ValueError()), Logs([], "quiet")])
    assert dispatcher.on_exception(None, ValueError()) == [
        "Raises.on_exception failed: cannot clean up"]
    assert dispatcher.teardown(None, "fit") == ["Raises.teardown failed: disk gone"]


def test_callbacks_with_a_trainer_slot_are_bound_to_it():
    callback = Logs([], "a")
    trainer = object()
    Dispatcher([callback], trainer=trainer)
    assert callback.trainer is trainer


def test_two_callbacks_keeping_state_under_one_key_are_refused():
    from digits.callbacks.early_stopping import EarlyStopping

    with pytest.raises(ConfigError, match="under the key 'EarlyStopping'"):
        check_state_keys([EarlyStopping(), EarlyStopping(monitor="val_accuracy")])
    check_state_keys([EarlyStopping(), Logs([], "stateless"), Logs([], "stateless too")])


@pytest.mark.parametrize("spec, message", [
    ("tensorboard(histogram_freq=-1)", "histogram_freq must be a whole number >= 0"),
    ("tensorboard(update_freq=0)", "update_freq must be a whole number >= 1"),
    ("embeddings(max_images=0)", "max_images must be"),
    ("pr_curves(every_n_epochs=0)", "every_n_epochs"),
    ("profiler(top=0)", "top must be"),
])
def test_bad_arguments_of_the_tensorboard_views_are_spec_errors(spec, message):
    from digits.callbacks.registry import resolve
    from digits.errors import CallbackSpecError

    with pytest.raises(CallbackSpecError, match=message):
        resolve(specs=[spec], defaults=False)


def test_a_profiler_times_every_hook_of_every_callback():
    from digits.engine.dispatch import HookTimer

    timer = HookTimer()
    dispatcher = Dispatcher([Logs([], "a"), Raises(ValueError())], stage="test", timer=timer)
    dispatcher.trainer_hook("on_test_end", None, "result")
    dispatcher.teardown(None, "test")
    assert timer.calls[("Logs", "test", "on_test_end")] == 1
    assert timer.calls[("raiser", "test", "teardown")] == 1  # timed even when it fails
    assert all(seconds >= 0 for seconds in timer.seconds.values())
