"""Guards that end a run: NanGuard (a fault) and EarlyStopping (a normal end), with resume."""

from __future__ import annotations

import io
import json

import keras
import numpy as np
import pytest

from digits.callbacks.base import Callback
from digits.callbacks.console import make_console
from digits.callbacks.early_stopping import EarlyStopping
from digits.callbacks.nan_guard import NanGuard
from digits.callbacks.rich_progress import RichProgress
from digits.data import Dataset, Split
from digits.engine.trainer import Trainer
from digits.errors import TrainingStopped


class Diverge(keras.callbacks.Callback):
    """Sends the learning rate through the roof at the start of one epoch."""

    def __init__(self, at_epoch: int) -> None:
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            self.model.optimizer.learning_rate = 1e30


class Interrupt(Callback):
    """Presses Ctrl-C at the end of one epoch, before the Trainer records it."""

    def __init__(self, at_epoch: int) -> None:
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt


class WeightsAtEpochEnd(Callback):
    order = 70  # after EarlyStopping

    def __init__(self) -> None:
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch + 1] = self.model.get_weights()


def read_metrics(trainer) -> dict:
    return json.loads(trainer.run.file("metrics.json").read_text())


# ----------------------------------------------------------------------------- NanGuard


def test_a_diverging_run_stops_as_a_fault_and_keeps_the_last_good_checkpoint(tmp_path, small_data,
                                                                              capsys):
    trainer = Trainer(max_epochs=4, callbacks=[NanGuard(), Diverge(at_epoch=1)], log_dir=tmp_path,
                      name="diverge", optimizer="sgd", lr_schedule="constant", batch_size=32,
                      verbose=False)
    model = trainer.build_model("mlp", hidden_units=32)
    with pytest.raises(TrainingStopped, match=r"^loss became NaN at epoch 2 \(batch \d+\)$"):
        trainer.fit(model, small_data)

    assert trainer.stop_reason.startswith("fault: loss became NaN at epoch 2 (batch ")
    assert "NaN guard: loss became NaN at epoch 2" in capsys.readouterr().err
    metrics = read_metrics(trainer)
    assert metrics["status"] == "failed" and metrics["stop_reason"] == trainer.stop_reason
    assert metrics["epochs_completed"] == 2  # Keras stopped there instead of running on

    # model.keras is still the good model of epoch 1, not the NaN one of epoch 2.
    saved = keras.saving.load_model(trainer.run.file("model.keras"), compile=False)
    assert all(np.isfinite(w).all() for w in saved.get_weights())
    assert not all(np.isfinite(w).all() for w in model.get_weights())


def test_nan_in_the_data_fails_the_first_epoch_and_writes_no_checkpoint(tmp_path, small_data,
                                                                        capsys):
    x = small_data.train.x.copy()
    x[::50, 14, 14, 0] = np.nan  # a few corrupted images
    data = Dataset(Split(x, small_data.train.y), small_data.val, small_data.test, "corrupt", "NaN pixels")
    trainer = Trainer(max_epochs=3, callbacks=[NanGuard()], log_dir=tmp_path, name="corrupt",
                      verbose=False)
    model = trainer.build_model("mlp", hidden_units=32)
    # Which one shows it first depends on the CPU: where oneDNN's ReLU maps NaN to 0, the loss
    # stays finite while the NaN gradient poisons the weights.
    with pytest.raises(TrainingStopped, match=r"(loss|weights) became NaN at epoch 1 \(batch \d+\)"):
        trainer.fit(model, data)

    assert "Check the data" in capsys.readouterr().err
    assert not trainer.run.file("model.keras").exists()
    loss = read_metrics(trainer)["history"]["loss"][0]
    assert np.isnan(loss) or not all(np.isfinite(w).all() for w in model.get_weights())


def test_weights_that_turn_nan_under_a_finite_loss_stop_the_run(tmp_path, small_data, capsys):
    class PoisonWeights(Callback):
        """Puts a NaN in the first layer's kernel after the first reported batches."""

        order = -1  # before the guard looks

        def on_train_batch_end(self, batch, logs=None):
            kernel = self.model.trainable_weights[0]
            kernel.assign(np.where(np.arange(kernel.shape[-1]) == 0, np.nan, kernel.numpy()))

    trainer = Trainer(max_epochs=3, callbacks=[PoisonWeights(), NanGuard()], log_dir=tmp_path,
                      name="poison", verbose=False, limit_train_batches=2)
    with pytest.raises(TrainingStopped, match=r"weights became NaN at epoch 1 \(batch \d+\) "
                                              r"\(layer '.+'\) while loss stayed finite"):
        trainer.fit(trainer.build_model("mlp", hidden_units=16), small_data)
    assert "NaN guard: weights became NaN" in capsys.readouterr().err


# ----------------------------------------------------------------------------- EarlyStopping


def test_early_stopping_ends_a_stalled_run_normally_and_restores_the_best_weights(
        tmp_path, small_data, capsys):
    # min_delta=10 makes any val_loss change too small to count: the run stalls after epoch 1.
    stop = EarlyStopping(monitor="val_loss", patience=2, min_delta=10, restore_best_weights=True)
    seen = WeightsAtEpochEnd()
    trainer = Trainer(max_epochs=10, callbacks=[stop, seen], log_dir=tmp_path, name="stall")
    model = trainer.build_model("mlp", hidden_units=32)
    history = trainer.fit(model, small_data)  # no exception: early stopping is not a fault

    assert len(history.history["loss"]) == 3
    assert (stop.best_epoch, stop.stopped_epoch, stop.wait) == (1, 3, 2)
    assert trainer.stop_reason == (f"early stopping: val_loss did not improve for 2 epochs "
                                   f"(best {stop.best:.4f} at epoch 1)")
    assert "early stopping at epoch 3: val_loss did not improve" in capsys.readouterr().err
    metrics = read_metrics(trainer)
    assert metrics["status"] == "fitted" and metrics["stop_reason"] == trainer.stop_reason
    for restored, best in zip(model.get_weights(), seen.weights[1], strict=True):
        np.testing.assert_array_equal(restored, best)


def test_early_stopping_state_survives_a_json_round_trip():
    stop = EarlyStopping(monitor="val_accuracy", patience=3)
    stop.wait, stop.best, stop.best_epoch, stop.stopped_epoch = 2, 0.9731, 7, 0
    state = json.loads(json.dumps(stop.state_dict()))
    assert state == {"monitor": "val_accuracy", "wait": 2, "best": 0.9731, "best_epoch": 7,
                     "stopped_epoch": 0}

    resumed = EarlyStopping(monitor="val_accuracy", patience=3)
    resumed.load_state_dict(state)
    assert (resumed.wait, resumed.best, resumed.best_epoch, resumed.stopped_epoch) == (2, 0.9731, 7, 0)

    # Patience counted on another metric means nothing for this one.
    other = EarlyStopping(monitor="val_loss")
    other.load_state_dict(state)
    assert (other.wait, other.best, other.best_epoch) == (0, None, 0)


def test_a_resumed_run_resumes_its_patience_and_says_where_it_resumed(tmp_path, small_data):
    def make(callbacks):
        return Trainer(max_epochs=8, callbacks=callbacks, log_dir=tmp_path, name="resume",
                       resume=True, verbose=False)

    # First process: epochs 1 and 2 are recorded (wait is 1 after epoch 2), Ctrl-C in epoch 3.
    seen = WeightsAtEpochEnd()
    first = make([EarlyStopping(patience=3, min_delta=10, restore_best_weights=True), seen,
                  Interrupt(at_epoch=2)])
    with pytest.raises(KeyboardInterrupt):
        first.fit(first.build_model("mlp", hidden_units=32), small_data)
    assert read_metrics(first)["status"] == "interrupted"

    # Second process: patience goes on from wait=1, so the run stops at epoch 4, not epoch 6.
    out = io.StringIO()
    stop = EarlyStopping(patience=3, min_delta=10, restore_best_weights=True)
    second = make([stop, RichProgress(console=make_console(file=out))])
    model = second.build_model("mlp", hidden_units=32)
    second.fit(model, small_data)

    assert second.run.path == first.run.path and second.resumed_from_epoch == 2
    assert (stop.best_epoch, stop.stopped_epoch) == (1, 4)
    # The best epoch was trained by the first process; its weights came back all the same.
    for restored, best in zip(model.get_weights(), seen.weights[1], strict=True):
        np.testing.assert_array_equal(restored, best)
    assert second.stop_reason.startswith("early stopping: val_loss did not improve for 3 epochs")
    lines = out.getvalue().splitlines()
    assert lines[0] == f"resumed {first.run.path} at epoch 3/8 (epochs 1-2 were trained before)"
    assert [line.split()[1] for line in lines[1:]] == ["3/8", "4/8"]


def test_early_stopping_refuses_a_metric_the_logs_do_not_have(tmp_path, small_data):
    from digits.callbacks.monitor import MonitorError

    trainer = Trainer(max_epochs=2, callbacks=[EarlyStopping(monitor="val_acc")], log_dir=tmp_path,
                      verbose=False, limit_train_batches=1)
    # A bad spec (exit 2), naming what is there: no longer a failure of the callback (exit 1).
    with pytest.raises(MonitorError, match="'val_acc', which is not among the epoch's metrics: "
                                           ".*val_accuracy"):
        trainer.fit(trainer.build_model("mlp", hidden_units=8), small_data)


@pytest.mark.parametrize("kwargs", [{"mode": "up"}, {"patience": -1}, {"patience": 1.5},
                                    {"min_delta": float("nan")}])
def test_early_stopping_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        EarlyStopping(**kwargs)
