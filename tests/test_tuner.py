"""The tuner package's parts: the search space, pins, Hyperband's plan, records and tables."""

from __future__ import annotations

import pytest
from rich.console import Console

from digits.errors import ConfigError
from digits.tuner import space
from digits.tuner.display import SearchDisplay, format_value, plain_table
from digits.tuner.search import planned_trials, short_reason, train_command


def test_the_hand_picked_cnn_is_a_point_of_the_search_space():
    from digits.models import model_hyperparameters

    defaults = model_hyperparameters("cnn")
    for dimension in space.SEARCH_SPACE:
        if dimension.name in space.TRAINER_HYPERPARAMETERS:
            continue
        assert dimension.default == defaults[dimension.name], dimension.name
        if dimension.kind in ("choice", "boolean"):
            assert dimension.default in dimension.values
        else:
            assert dimension.values[0] <= dimension.default <= dimension.values[1]


def test_declaring_the_space_gives_model_optimizer_and_learning_rate():
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    model_values, optimizer, learning_rate = space.declare(hp)
    assert set(model_values) == {d.name for d in space.SEARCH_SPACE} - {"optimizer",
                                                                         "learning_rate"}
    assert optimizer == "adam" and learning_rate == pytest.approx(2e-3)
    assert {p.name for p in hp.space} == {d.name for d in space.SEARCH_SPACE}
    # With cost objectives, the small end: the same defaults, smaller choices, separable convs.
    small = keras_tuner.HyperParameters()
    model_values, _, _ = space.declare(small, small=True)
    assert model_values["separable"] is False and model_values["filters"] == 32
    assert {p.name for p in small.space} == set(space.DIMENSIONS)
    assert small.get("filters") == 32 and 4 in space.DIMENSIONS["filters"].values
    pinned = keras_tuner.HyperParameters()
    pinned.Fixed("separable", True)
    assert space.declare(pinned)[0]["separable"] is True  # a pin counts in the default space


def test_each_optimizer_draws_its_learning_rate_from_its_own_range(tmp_path):
    import keras_tuner

    from digits.tuner.keras_tuner_internals import values_by_name

    values_by_name()  # as make_tuner does
    dimension = space.DIMENSIONS["learning_rate"]
    ranges = {o: rng for optimizers, rng, _ in dimension.ranges() for o in optimizers}
    assert set(ranges) == set(space.OPTIMIZERS) and ranges["sgd"][0] > ranges["adam"][0]

    def trials(hp, n, kind=keras_tuner.oracles.RandomSearchOracle, **options):
        space.declare(hp)
        oracle = kind(objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=n,
                      hyperparameters=hp, seed=7, **options)
        oracle._set_project_dir(str(tmp_path / kind.__name__), f"p{len(list(tmp_path.iterdir()))}")
        drawn = []
        for i in range(n):
            trial = oracle.create_trial("tuner0")
            drawn.append(dict(trial.hyperparameters.values))
            oracle.update_trial(trial.trial_id, {"val_accuracy": i / n})
            oracle.end_trial(trial)
        return drawn

    # Random draws (and Bayesian optimization's, past its random start): each rate in its
    # optimizer's range, as the oracle drew it (keras-tuner alone redrew or dropped it).
    for kind, options in ((keras_tuner.oracles.RandomSearchOracle, {}),
                          (keras_tuner.oracles.BayesianOptimizationOracle,
                           {"num_initial_points": 3})):
        drawn = trials(keras_tuner.HyperParameters(), 16, kind, **options)
        for values in drawn:
            low, high = ranges[values["optimizer"]]
            assert low <= values["learning_rate"] <= high, values
        assert {v["optimizer"] for v in drawn} == set(space.OPTIMIZERS), kind
    # The hand-picked model's rate, and SGD's own default where SGD is pinned.
    assert space.declare(keras_tuner.HyperParameters())[2] == pytest.approx(2e-3)
    sgd = keras_tuner.HyperParameters()
    sgd.Fixed("optimizer", "sgd")
    assert space.declare(sgd)[2] == dict((o, d) for os, _, d in dimension.ranges()
                                         for o in os)["sgd"]
    # A pinned rate holds under every optimizer (one unconditional value, as before).
    pinned = keras_tuner.HyperParameters()
    pinned.Fixed("learning_rate", 0.05)
    drawn = trials(pinned, 8)
    assert {v["learning_rate"] for v in drawn} == {0.05}
    assert len({v["optimizer"] for v in drawn}) > 1


def test_pins_are_checked_by_name_and_type():
    assert space.check_pins({"filters": 8.0, "batch_norm": False, "optimizer": "sgd",
                             "learning_rate": 1}) == {
        "filters": 8, "batch_norm": False, "optimizer": "sgd", "learning_rate": 1.0}
    with pytest.raises(ConfigError, match="not a searched hyperparameter"):
        space.check_pins({"depth": 3})
    with pytest.raises(ConfigError, match="True or False"):
        space.check_pins({"batch_norm": 1})
    with pytest.raises(ConfigError, match="whole number"):
        space.check_pins({"conv_blocks": 2.5})
    with pytest.raises(ConfigError, match="must be a number"):
        space.check_pins({"dropout": "lots"})


@pytest.mark.parametrize("max_epochs, factor, iterations", [(10, 3, 1), (3, 3, 1), (27, 3, 2),
                                                            (8, 2, 1), (1, 3, 1)])
def test_planned_trials_follow_keras_tuners_hyperband_schedule(max_epochs, factor, iterations):
    from keras_tuner.src.tuners.hyperband import HyperbandOracle

    oracle = HyperbandOracle(objective="val_accuracy", max_epochs=max_epochs, factor=factor,
                             hyperband_iterations=iterations)
    expected = iterations * sum(oracle._get_size(b, r)
                                for b in range(oracle._get_num_brackets()) for r in range(b + 1))
    assert planned_trials("hyperband", None, max_epochs, factor, iterations) == expected
    assert planned_trials("hyperband", 4, max_epochs, factor, iterations) == min(4, expected)
    assert planned_trials("random", 7, max_epochs) == 7


def test_a_failed_trials_reason_is_the_last_line_of_its_traceback():
    message = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
               "keras_tuner.src.errors.FailedTrialError: Oversized model: 5 parameters.\n")
    assert short_reason(message) == "FailedTrialError: Oversized model: 5 parameters."
    assert short_reason("ValueError: bad thing: here") == "ValueError: bad thing: here"
    assert short_reason(None) is None


def test_the_train_command_reproduces_the_values_by_hand():
    command = train_command({"conv_blocks": 2, "batch_norm": False, "optimizer": "sgd",
                             "learning_rate": 0.0123456789, "dropout": 0.25}, epochs=10)
    assert command == ("python -m digits.train --model cnn --hp conv_blocks=2 "
                       "--hp batch_norm=False --optimizer sgd --learning-rate 0.0123457 "
                       "--hp dropout=0.25 --epochs 10")


def test_plain_table_pads_columns_under_their_headers():
    text = plain_table(["#", "score"], [["1", "0.9812"], ["10", "0.5"]])
    assert text.splitlines() == [" #   score", "--  ------", " 1  0.9812", "10     0.5"]
    assert format_value(0.000803081) == "0.0008031" and format_value(True) == "True"


def test_trial_lines_are_plain_and_unwrapped_off_a_terminal():
    console = Console(width=40, force_terminal=False, color_system=None, record=True)
    display = SearchDisplay("val_accuracy", planned=10, console=console)
    display.trial_started("03", {"conv_blocks": 2, "optimizer": "adam", "tuner/epochs": 4,
                                 "tuner/initial_epoch": 2, "tuner/trial_id": "01"})
    display.trial_ended("03", "COMPLETED", score=0.98765, seconds=75, epochs=4,
                        best=("01", 0.99))
    display.trial_ended("04", "FAILED", seconds=1, reason="FailedTrialError: [too big]")
    lines = console.export_text().splitlines()
    assert lines == [
        "trial 4/10 (id 03) started: conv_blocks=2 optimizer=adam; epochs 3-4, continuing "
        "trial 01",
        "trial 4/10 completed in 1m15s (4 epochs): val_accuracy 0.9877; best so far 0.99 "
        "(trial 01)",
        "trial 5/10 failed in 1s: FailedTrialError: [too big]",
    ]


def test_equal_scores_go_to_the_earlier_trial_whatever_the_oracles_order(tmp_path):
    # After a reload the oracle's trials come in another order; the best must not change.
    from types import SimpleNamespace

    import keras_tuner

    from digits.tuner.search import trial_rows

    class Metrics:
        def exists(self, name):
            return False

    def trial(trial_id, score):
        return SimpleNamespace(trial_id=trial_id, score=score, status="COMPLETED",
                               hyperparameters=keras_tuner.HyperParameters(), metrics=Metrics())

    for order in (["0006", "0005", "0001"], ["0005", "0001", "0006"]):
        scores = {"0005": 0.98, "0006": 0.98, "0001": 0.5}
        oracle = SimpleNamespace(objective=SimpleNamespace(name="val_accuracy"),
                                 trials={t: trial(t, scores[t]) for t in order})
        assert [r["trial_id"] for r in trial_rows(oracle, tmp_path)] == ["0005", "0006", "0001"]
        oracle.objective.name = "val_loss"
        assert [r["trial_id"] for r in trial_rows(oracle, tmp_path)] == ["0001", "0005", "0006"]
