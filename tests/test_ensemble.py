"""Ensembles (`digits.train --ensemble N`): members averaged in one safe-mode model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli


def test_an_ensemble_averages_its_members_and_loads_in_safe_mode(small_data, tmp_path):
    import digits
    from digits.errors import ConfigError
    from digits.models import load_model
    from digits.recipes.ensemble import build_ensemble

    members = []
    for seed in (0, 1):
        trainer = digits.Trainer(max_epochs=1, limit_train_batches=3, callbacks=[], seed=seed,
                                 enable_checkpointing=False, verbose=False, log_dir=tmp_path)
        model = trainer.build_model("cnn", filters=4, dense_units=16)
        trainer.fit(model, small_data)
        members.append(model)
    x = small_data.val.x[:32]
    each = [np.asarray(m.predict(x, verbose=0)) for m in members]
    assert not np.allclose(each[0], each[1], atol=1e-3)  # two different members
    ensemble = build_ensemble(members)
    np.testing.assert_allclose(np.asarray(ensemble.predict(x, verbose=0)),
                               (each[0] + each[1]) / 2, atol=1e-6)
    ensemble.save(tmp_path / "ensemble.keras")
    loaded = load_model(str(tmp_path / "ensemble.keras"))  # safe mode: no Lambda anywhere
    np.testing.assert_allclose(np.asarray(loaded.predict(x, verbose=0)),
                               (each[0] + each[1]) / 2, atol=1e-6)
    with pytest.raises(ConfigError, match="at least two"):
        build_ensemble(members[:1])


def test_train_ensemble_reports_each_member_saves_one_model_and_reuses_finished_members(
        tmp_path):
    args = ["digits.train", "--dataset", "mnist-5k", "--ensemble", "2", "--epochs", "1",
            "--limit-train-batches", "2", "--hp", "filters=8", "--no-default-callbacks",
            "--log-dir", str(tmp_path)]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "member 1 of 2 (seed 0)" in first.stdout and "member 2 of 2 (seed 1)" in first.stdout
    assert "member cnn-member1 (seed 1): test accuracy" in first.stdout
    ensemble_dir = tmp_path / "cnn-ensemble" / "version_0"
    metrics = json.loads((ensemble_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and len(metrics["members"]) == 2
    assert f"ensemble of 2: test accuracy {metrics['test']['accuracy']:.4f}" in first.stdout
    for k in (0, 1):
        member = json.loads((tmp_path / f"cnn-member{k}/version_0/config.json").read_text())
        assert member["trainer"]["seed"] == k and member["split_seed"] == 0  # one split
        own = json.loads((tmp_path / f"cnn-member{k}/version_0/metrics.json").read_text())
        assert f"member cnn-member{k} (seed {k}): test accuracy {own['test']['accuracy']:.4f}" \
            in first.stdout
    # The same command again trains and tests nothing: the finished members and ensemble are
    # reported from their runs.
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"ensemble of 2 was already joined and tested: test accuracy " \
           f"{metrics['test']['accuracy']:.4f}" in again.stdout, again.stdout[-2000:]
    assert "(seed 0): test accuracy" in again.stdout and "epoch 1/" not in again.stdout
    assert not (tmp_path / "cnn-member0/version_1").exists()
    assert not (tmp_path / "cnn-ensemble/version_1").exists()
    evaluated = run_cli("digits.evaluate", "--model", str(ensemble_dir / "model.keras"),
                        "--dataset", "mnist-5k", "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def test_cosine_cycles_restart_the_learning_rate():
    from digits.engine.compiling import compile_model
    from digits.engine.config import TrainerSettings
    from digits.models import build_model

    model = build_model("cnn", filters=4, dense_units=8)
    compile_model(model, TrainerSettings(max_epochs=4, lr_cycles=2, learning_rate=1e-3), 10)
    schedule = model.optimizer.learning_rate if callable(model.optimizer.learning_rate) \
        else model.optimizer._learning_rate  # noqa: SLF001 - Keras keeps the schedule here
    rates = [float(schedule(step)) for step in (0, 19, 20, 39)]
    assert rates[0] == pytest.approx(1e-3) and rates[2] == pytest.approx(1e-3)  # full rate again
    assert rates[1] < 2e-5 and rates[3] < 2e-5  # and decays to 1% by its end


def test_snapshot_ensemble_averages_the_ends_of_one_runs_cycles(tmp_path):
    proc = run_cli("digits.train", "--dataset", "mnist-5k", "--ensemble", "2", "--snapshots",
                   "--epochs", "2", "--limit-train-batches", "3", "--hp", "filters=8",
                   "--no-default-callbacks", "--log-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "cnn" / "version_0"
    assert (run / "snapshot_1.keras").is_file() and (run / "snapshot_2.keras").is_file()
    assert json.loads((run / "config.json").read_text())["trainer"]["lr_cycles"] == 2
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"
    metrics = json.loads((tmp_path / "cnn-ensemble/version_0/metrics.json").read_text())
    assert len(metrics["members"]) == 2
    assert "member snapshot 1 (epoch 1): test accuracy" in proc.stdout
    odd = run_cli("digits.train", "--dataset", "mnist-5k", "--ensemble", "3", "--snapshots",
                  "--epochs", "4", "--log-dir", str(tmp_path))
    assert odd.returncode == 2 and "lr_cycles must divide the epochs (4)" in odd.stderr
