"""The checkpoint keeps the best model by validation loss, or by accuracy with ties to the lower loss."""

from __future__ import annotations

from callbacks.checkpoint import Checkpoint


class FakeRun:
    def __init__(self, path):
        self.path = path

    def file(self, name):
        return self.path / name


class FakeTrainer:
    def __init__(self, path):
        self.run, self.fast_dev_run, self.stop_reason = FakeRun(path), False, None


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
