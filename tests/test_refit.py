"""`digits.train --refit`: the epoch count validation chose, trained on train + validation."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_refit_trains_on_training_and_validation_for_the_chosen_epochs(tmp_path):
    proc = run_cli("digits.train", "--dataset", "mnist-5k", "--refit", "--epochs", "3",
                   "--limit-train-batches", "3", "--hp", "filters=8", "--no-default-callbacks",
                   "--log-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, refit = tmp_path / "cnn" / "version_0", tmp_path / "cnn-refit" / "version_0"
    chosen = json.loads((first / "state" / "trainer.json").read_text())
    best = chosen["callbacks"]["Checkpoint"]["best_epoch"]
    config = json.loads((refit / "config.json").read_text())
    first_config = json.loads((first / "config.json").read_text())
    assert config["trainer"]["max_epochs"] == best
    assert config["data"]["train"] == first_config["data"]["train"] + first_config["data"]["val"]
    assert config["refit_of"] == str(first)
    metrics = json.loads((refit / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == best
    assert metrics["test"]["examples"] == 500
    assert (refit / "model.keras").is_file()
    assert f"refit: {best} epoch" in proc.stdout and f"run directory: {refit}" in proc.stdout


def test_refit_averages_weights_only_when_the_average_was_kept(tmp_path):
    proc = run_cli("digits.train", "--dataset", "mnist-5k", "--refit", "--epochs", "2",
                   "--swa", "1", "--limit-train-batches", "3", "--hp", "filters=8",
                   "--no-default-callbacks", "--no-tta", "--log-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, refit = tmp_path / "cnn" / "version_0", tmp_path / "cnn-refit" / "version_0"
    averaged = json.loads((first / "metrics.json").read_text())["averaged"]
    assert averaged["epochs"] == [2, 2] and "averaged weights, epoch 2:" in proc.stderr
    trainer = json.loads((refit / "config.json").read_text())["trainer"]
    if averaged["kept"]:  # the average is the model validation chose: refit it as it was made
        assert (trainer["max_epochs"], trainer["swa_epochs"]) == (2, 1)
    else:  # an epoch won: refit that many epochs, plainly
        assert "swa_epochs" not in trainer
    refit_metrics = json.loads((refit / "metrics.json").read_text())
    assert ("averaged" in refit_metrics) == bool(averaged["kept"])
