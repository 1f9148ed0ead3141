"""The checkpoint keeps the best model by validation loss, or by accuracy with ties to the lower loss."""

from __future__ import annotations

from digits.callbacks.checkpoint import Checkpoint


class FakeRun:
    def __init__(self, path):
        self.path = path

    def file(self, name):
        return self.path / name


class FakeTrainer:
    def __init__(self, path):
        self.run, self.fast_dev_run, self.stopped = FakeRun(path), False, None


def test_equal_accuracy_with_lower_loss_replaces_the_checkpoint(tmp_path):
    saved = []

    class Model:
        def save(self, path):
            saved.append(epoch)
            path.write_bytes(b"model")

    checkpoint = Checkpoint(monitor="val_accuracy")
    checkpoint.trainer = FakeTrainer(tmp_path)
    checkpoint.set_model(Model())
    for epoch, (acc, loss) in enumerate([(0.98, 0.05), (0.99, 0.04), (0.99, 0.03), (0.99, 0.035),
                                         (0.985, 0.01)]):
        checkpoint.on_epoch_end(epoch, {"val_accuracy": acc, "val_loss": loss})
    assert saved == [0, 1, 2]
    assert checkpoint.state_dict() == {"best": 0.99, "best_loss": 0.03, "best_epoch": 3,
                                       "monitor": "val_accuracy"}
    assert (tmp_path / "model.keras").read_bytes() == b"model"


def test_by_default_the_lowest_validation_loss_wins(tmp_path):
    saved = []

    class Model:
        def save(self, path):
            saved.append(epoch)
            path.write_bytes(b"model")

    checkpoint = Checkpoint()
    checkpoint.trainer = FakeTrainer(tmp_path)
    checkpoint.set_model(Model())
    for epoch, (acc, loss) in enumerate([(0.99, 0.05), (0.992, 0.06), (0.988, 0.03)]):
        checkpoint.on_epoch_end(epoch, {"val_accuracy": acc, "val_loss": loss})
    assert saved == [0, 2] and checkpoint.best_epoch == 3


def test_a_monitor_missing_from_the_epoch_is_an_input_error_that_lists_the_metrics(
        tmp_path, capsys):
    """`checkpoint(monitor='val_acc')` used to train to the end, say nothing, save no model."""
    from digits import train

    code = train.main(["--dataset", "mnist-5k", "--model", "mlp", "--epochs", "2",
                       "--limit-train-batches", "1", "--limit-val-batches", "1",
                       "--no-default-callbacks", "--callback", "checkpoint(monitor='val_acc')",
                       "--log-dir", str(tmp_path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert lines[-1].startswith("error: callback 'checkpoint' monitors 'val_acc', which is not "
                                "among the epoch's metrics:"), lines
    assert "val_accuracy" in lines[-1] and "val_loss" in lines[-1]


def test_monitors_share_one_rule_for_better():
    from digits.callbacks.early_stopping import EarlyStopping
    from digits.callbacks.monitor import MonitorCallback, monitor_mode
    from digits.tuner.search import objective_direction

    assert [monitor_mode(m) for m in ("val_loss", "loss", "val_accuracy")] == ["min", "min", "max"]
    assert objective_direction("val_loss") == "min" and objective_direction("val_accuracy") == "max"
    stop = EarlyStopping(monitor="val_accuracy", min_delta=0.01)
    assert isinstance(stop, MonitorCallback) and isinstance(Checkpoint(), MonitorCallback)
    assert stop.is_better(0.5, None) and not stop.is_better(float("nan"), None)
    assert stop.is_better(0.92, 0.9) and not stop.is_better(0.905, 0.9)
    assert Checkpoint(mode="max", monitor="val_loss").is_better(0.2, 0.1)


def test_two_stateful_callbacks_may_not_share_a_state_key(tmp_path, small_data):
    """The second's state used to overwrite the first's in the run's state, silently."""
    import pytest

    from digits.callbacks.early_stopping import EarlyStopping
    from digits.engine.trainer import Trainer
    from digits.errors import ConfigError

    trainer = Trainer(max_epochs=1, log_dir=tmp_path, verbose=False, limit_train_batches=1,
                      callbacks=[EarlyStopping(patience=3), EarlyStopping(monitor="val_accuracy")])
    with pytest.raises(ConfigError, match="under the key 'EarlyStopping'"):
        trainer.fit(trainer.build_model("mlp", hidden_units=8), small_data)

    class Distinct(EarlyStopping):
        @property
        def state_key(self):
            return "EarlyStopping.accuracy"

    trainer = Trainer(max_epochs=1, log_dir=tmp_path, verbose=False, limit_train_batches=1,
                      callbacks=[EarlyStopping(patience=3), Distinct(monitor="val_accuracy")])
    trainer.fit(trainer.build_model("mlp", hidden_units=8), small_data)
