"""Ensembles (`digits.train --ensemble N`): members averaged in one safe-mode model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli


def test_an_ensemble_averages_its_members_and_loads_in_safe_mode(small_data, tmp_path):
    import digits
    from digits.ensemble import build_ensemble
    from digits.errors import ConfigError
    from digits.models import load_model

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
    # The same command again reuses both finished members and trains nothing.
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing" in again.stdout and not (tmp_path / "cnn-member0/version_1").exists()
    evaluated = run_cli("digits.evaluate", "--model", str(ensemble_dir / "model.keras"),
                        "--dataset", "mnist-5k", "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
