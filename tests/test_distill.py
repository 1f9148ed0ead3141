"""Knowledge distillation (`--distill-from`, `digits.callbacks.distill`): a model learns a
trained teacher's predictions, on real digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_a_model_learns_from_the_teacher_alone_when_every_label_is_wrong(reader_model, mnist5k,
                                                                           tmp_path):
    import digits
    from digits.callbacks.distill import Distill
    from digits.data import Dataset, Split

    # Every training label moved to another class: only the teacher can teach the digits.
    wrong = Split(mnist5k.train.x, (mnist5k.train.y + 1) % 10)
    assert not (wrong.y == mnist5k.train.y).any()
    data = Dataset(wrong, mnist5k.val, mnist5k.test, "wrong-labels", "every label wrong")

    def fit(callbacks):
        trainer = digits.Trainer(max_epochs=3, log_dir=tmp_path, callbacks=callbacks,
                                 enable_checkpointing=False, verbose=False, seed=0)
        model = trainer.build_model("mlp", hidden_units=128)
        trainer.fit(model, data)
        return trainer.test(model, data), model

    taught, model = fit([Distill(reader_model, weight=1.0, temperature=2.0)])
    alone, _ = fit([])
    assert taught.accuracy > 0.85, taught.accuracy  # the teacher's digits
    assert alone.accuracy < 0.05, alone.accuracy  # the wrong labels, learnt
    assert "compute_loss" not in vars(model)  # the model is the student alone again
    assert model.count_params() == digits.build_model("mlp", hidden_units=128).count_params()


@pytest.mark.slow
def test_the_command_distills_and_records_its_teacher(reader_model, tmp_path):
    done = run_cli("digits.train", "--dataset", "mnist-5k", "--hp", "filters=8",
                   "--hp", "dense_units=16", "--epochs", "1", "--limit-train-batches", "4",
                   "--limit-val-batches", "1", "--no-default-callbacks", "--no-tta",
                   "--distill-from", reader_model, "--log-dir", str(tmp_path), "--name", "small")
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = (tmp_path / "small").glob("version_*")
    config = json.loads((run / "config.json").read_text())
    assert config["trainer"]["distill_from"] == reader_model
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["val_loss"]).all()
