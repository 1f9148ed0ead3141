"""digits.tuner.importance: which hyperparameter explains the objective's spread, and the history."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from digits.tuner.importance import groups_of, history_png, importance, importance_text


def test_the_hyperparameter_that_drives_the_score_comes_first():
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(40):
        values = {"optimizer": str(rng.choice(["adam", "sgd"])),
                  "learning_rate": float(10 ** rng.uniform(-4, -1)),
                  "filters": int(rng.choice([16, 32, 64]))}
        score = 0.9 + (0.05 if values["optimizer"] == "adam" else 0.0) + rng.normal(0, 0.005)
        trials.append((values, score))
    found = importance(trials)
    assert found[0][0] == "optimizer" and found[0][1] > 0.8
    assert all(share < 0.1 for name, share, _ in found[1:])  # noise explains next to nothing
    assert "| optimizer |" in importance_text(found, 40)


def test_small_or_flat_searches_claim_nothing():
    assert importance([({"a": 1}, 0.9), ({"a": 2}, 0.8)]) == []  # too few trials
    one_each = [({"a": i}, 0.9 + i / 100) for i in range(3)]
    assert importance(one_each) == []  # one trial per value: no within-group spread
    assert importance([({"a": 1, "b": i % 2}, 0.9) for i in range(6)]) == []  # flat score


def test_many_numbers_go_to_quantile_bins_on_a_log_scale():
    rates = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2]
    assert groups_of(rates).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert groups_of(["adam", "sgd", "adam"]).tolist() == [0, 1, 0]


def test_the_history_picture():
    image = Image.open(io.BytesIO(history_png([(1, 0.9), (2, 0.95), (3, 0.93)],
                                              "val_accuracy", maximise=True)))
    assert image.format == "PNG" and image.size == (700, 400)
