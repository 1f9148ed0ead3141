"""digits.tuner.importance: fANOVA on a random forest says which hyperparameter explains the
objective, with shares adding up to 100% and their spread; the history picture shows it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sklearn.tree import DecisionTreeRegressor

from digits.tuner.importance import MIN_TRIALS, history_png, importance, importance_text, main_effects


def sampled(n: int, seed: int = 0, effect=lambda values: 0.0, noise: float = 0.005):
    """n trials of a three-hyperparameter space, scored by `effect` plus noise."""
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(n):
        values = {"optimizer": str(rng.choice(["adam", "sgd"])),
                  "learning_rate": float(10 ** rng.uniform(-4, -1)),
                  "filters": int(rng.choice([16, 32, 64])),
                  "batch_norm": bool(rng.integers(2))}
        trials.append((values, 0.9 + effect(values) + rng.normal(0, noise)))
    return trials


def test_the_hyperparameter_that_drives_the_score_comes_first_and_shares_add_up():
    found = importance(sampled(40, effect=lambda v: 0.05 * (v["optimizer"] == "adam")))
    first, *rest = found.shares
    assert first.name == "optimizer" and first.share > 0.8 and first.values == 2
    assert all(s.share < 0.1 for s in rest)  # noise explains next to nothing
    assert sum(s.share for s in found.shares) == pytest.approx(1.0)
    assert found.main_effects > 0.8  # one main effect, no interaction
    assert "| optimizer |" in importance_text(found)
    assert found.line().startswith("what mattered (fANOVA") and "optimizer 9" in found.line()


def test_a_number_on_a_log_scale_and_an_interaction_is_not_a_main_effect():
    # The learning rate matters through its logarithm; two switches matter only together.
    found = importance(sampled(60, seed=1, effect=lambda v: 0.02 * np.log10(v["learning_rate"])))
    assert found.shares[0].name == "learning_rate" and found.shares[0].share > 0.7
    both = importance(sampled(
        80, seed=2, noise=0.001,
        effect=lambda v: 0.05 * ((v["optimizer"] == "adam") == v["batch_norm"])))
    assert both.main_effects < 0.5  # the forest sees it, as an interaction


def test_with_few_trials_the_spread_is_wide_and_below_the_minimum_nothing_is_claimed():
    few = importance(sampled(MIN_TRIALS, seed=3, effect=lambda v: 0.01 * (v["filters"] / 64)))
    assert few.shares and max(s.spread for s in few.shares) > 0.1
    below = importance(sampled(MIN_TRIALS - 1))
    assert below.shares == () and below.line() == (
        f"what mattered: too few trials to say ({MIN_TRIALS - 1} unpruned, at least "
        f"{MIN_TRIALS} needed)")
    flat = importance([({"a": i % 2, "b": i}, 0.9) for i in range(10)])
    assert flat.shares == () and "scored the same" in flat.reason
    one_value = importance([({"a": 1}, 0.9 + i / 100) for i in range(10)])
    assert one_value.shares == () and "no hyperparameter varied" in one_value.reason


def test_main_effects_of_one_tree_by_hand():
    # f(x, y) = x on the unit square (a tree splitting x at 0.5): all the variance is x's.
    x = np.array([[0.1, 0.2], [0.2, 0.9], [0.8, 0.1], [0.9, 0.7]])
    tree = DecisionTreeRegressor(max_depth=1).fit(x, [0.0, 0.0, 1.0, 1.0]).tree_
    effects, total = main_effects(tree, np.array([[0.0, 1.0], [0.0, 1.0]]))
    t = tree.threshold[0]  # 0.5, between 0.2 and 0.8: 0 below it, 1 above
    assert t == pytest.approx(0.5) and total == pytest.approx(t * (1 - t))
    assert effects[1] == pytest.approx(0.0) and effects[0] == pytest.approx(total)


def test_the_history_picture_with_what_mattered_beside_it():
    history = [(1, 0.9), (2, 0.95), (3, 0.93)]
    alone = Image.open(io.BytesIO(history_png(history, "val_accuracy", maximise=True)))
    assert alone.format == "PNG" and alone.size == (700, 400)
    found = importance(sampled(12, effect=lambda v: 0.05 * (v["optimizer"] == "adam")))
    for what in (found, importance(sampled(3))):
        image = Image.open(io.BytesIO(history_png(history, "val_accuracy", True, what)))
        assert image.size == (1200, 400)
        pixels = np.asarray(image.convert("L"))
        assert (pixels[:, 750:] < 200).sum() > 500  # something drawn on the right
