"""Pruning: the two rules, their judgement on a real keras-tuner oracle, and a pruned search.

On the oracle: trials report their epochs through `update_trial`, a lagging one is answered
"STOPPED", the decision lands in `pruned.json` and survives a reload, and the failure limit
passes over pruned trials. End to end: an ASHA search on the embedded digits stops trials after
their second epoch, says why, records them as pruned, and a rerun does not train them again.
"""

from __future__ import annotations

import json

import keras_tuner
import pytest

from digits.errors import ConfigError
from digits.tuner.pruning import (
    MedianStopping,
    OraclePruning,
    SuccessiveHalving,
    best_until,
    check_pruner,
    read_pruned,
)
from tests.conftest import run_cli


def test_the_median_rule_stops_only_below_the_median_of_enough_trials():
    rule = MedianStopping(warmup=1, min_trials=3)
    assert not rule.due(0) and rule.due(1)
    assert rule.judge(0.5, [0.9, 0.8], maximise=True) is None  # two peers: too few to judge
    assert rule.judge(0.85, [0.9, 0.8, 0.7], maximise=True) is None  # above the median 0.8
    assert rule.judge(0.75, [0.9, 0.8, 0.7, 0.6], maximise=True) is None  # at the median
    assert rule.judge(0.74, [0.9, 0.8, 0.7, 0.6], maximise=True).startswith("below the median")
    assert rule.judge(0.3, [0.1, 0.2, 0.25], maximise=False) == \
        "above the median 0.2 of 3 completed trials"


def test_successive_halving_keeps_the_top_third_at_each_rung():
    rule = SuccessiveHalving(warmup=0, factor=3)
    assert [step + 1 for step in range(30) if rule.due(step)] == [1, 3, 9, 27]
    assert rule.judge(0.5, [], maximise=True) is None  # the first at a rung goes on
    assert rule.judge(0.5, [0.6], maximise=True) is not None
    assert rule.judge(0.7, [0.6, 0.5, 0.4, 0.3, 0.2], maximise=True) is None  # top 2 of 6
    assert rule.judge(0.45, [0.6, 0.5, 0.4, 0.3, 0.2], maximise=True) == \
        "not in the top 2 of 6 trials at this rung"
    with pytest.raises(ConfigError):
        SuccessiveHalving(factor=1)


def test_hyperband_and_unknown_pruners_are_refused():
    check_pruner("median", "random")
    with pytest.raises(ConfigError, match="hyperband already stops"):
        check_pruner("asha", "hyperband")
    with pytest.raises(ConfigError, match="unknown pruner"):
        check_pruner("bogus", "random")


@pytest.fixture
def oracle(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Int("units", 1, 100)
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=20,
        hyperparameters=hp, max_consecutive_failed_trials=2, seed=1)
    oracle._set_project_dir(str(tmp_path), "project")
    return oracle


def run_trial(oracle, values, status="COMPLETED"):
    """One trial reporting `values` epoch by epoch; returns (trial id, epochs run)."""
    trial = oracle.create_trial("tuner0")
    epochs = 0
    for step, value in enumerate(values):
        answer = oracle.update_trial(trial.trial_id, {"val_accuracy": value, "loss": 1 - value},
                                     step=step)
        epochs += 1
        if answer.status == "STOPPED":
            break
    trial.status = status
    oracle.end_trial(trial)
    return trial.trial_id, epochs


def test_the_oracle_stops_a_trial_below_the_median_and_remembers_why(oracle, tmp_path):
    project = tmp_path / "project"
    OraclePruning(oracle, MedianStopping(warmup=1, min_trials=3), project).install()
    for good in ([0.5, 0.7, 0.8], [0.6, 0.8, 0.9], [0.4, 0.6, 0.7]):
        assert run_trial(oracle, good)[1] == 3  # too few peers yet: none judged
    weak, epochs = run_trial(oracle, [0.3, 0.4, 0.5])
    assert epochs == 2  # judged at its second epoch: 0.4 is below the median 0.7
    decision = read_pruned(project)[weak]
    assert decision == {"epoch": 2, "rule": "median",
                        "reason": "val_accuracy 0.4 below the median 0.7 of 3 completed trials"}
    # keras-tuner keeps it as a completed trial, scored by its best epoch so far.
    assert oracle.trials[weak].status == "COMPLETED" and oracle.trials[weak].score == 0.4
    strong, epochs = run_trial(oracle, [0.3, 0.75, 0.95])
    assert epochs == 3 and strong not in read_pruned(project)
    # A reloaded search knows what was pruned (the rule's peers leave pruned trials out).
    again = OraclePruning(oracle, MedianStopping(), project)
    assert set(again.pruned) == {weak}


def test_a_trials_last_epoch_is_never_judged(oracle, tmp_path):
    OraclePruning(oracle, SuccessiveHalving(warmup=0, factor=3), tmp_path / "project",
                  max_epochs=1).install()
    run_trial(oracle, [0.9])
    assert run_trial(oracle, [0.1])[1] == 1 and not read_pruned(tmp_path / "project")


def test_pruned_trials_are_neither_failures_nor_successes_for_the_failure_limit(oracle, tmp_path):
    OraclePruning(oracle, SuccessiveHalving(warmup=0, factor=3), tmp_path / "project").install()
    run_trial(oracle, [0.9, 0.95])
    run_trial(oracle, [], status="FAILED")
    _, epochs = run_trial(oracle, [0.2, 0.3])  # pruned at its first rung
    assert epochs == 1
    # Failed, pruned, failed: two failures in a row once the pruned trial is passed over.
    with pytest.raises(RuntimeError, match="consecutive failures"):
        run_trial(oracle, [], status="FAILED")


def test_best_until_takes_the_best_mean_up_to_a_step():
    from keras_tuner.src.engine.metrics_tracking import MetricObservation

    history = [MetricObservation([0.5, 0.7], step=0), MetricObservation([0.4], step=1),
               MetricObservation([0.9], step=2)]
    assert best_until(history, 1, maximise=True) == pytest.approx(0.6)
    assert best_until(history, 1, maximise=False) == pytest.approx(0.4)
    assert best_until(history, -1, maximise=True) is None


# One trial at a time: these check what a single process prints and keeps.
TINY = ["--parallel-trials", "1",
        "--dataset", "mnist-5k", "--tuner", "random", "--limit-train-batches", "3",
        "--limit-val-batches", "1", "--hp", "filters=8", "--hp", "dense_units=32",
        "--no-default-callbacks", "--callbacks", "tensorboard,nan_guard"]


@pytest.mark.slow
def test_an_asha_search_prunes_lagging_trials_and_a_rerun_keeps_them(tmp_path):
    command = ["digits.tune", *TINY, "--max-trials", "4", "--max-epochs", "3", "--pruner",
               "asha", "--final-epochs", "0", "--directory", str(tmp_path), "--project", "p"]
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    project = tmp_path / "p"
    pruned = read_pruned(project)
    assert pruned, result.stdout  # with this seed, two of the four lag at the rung (epoch 2)
    for trial_id, decision in pruned.items():
        assert decision["epoch"] == 2 and decision["rule"] == "asha"
        record = json.loads((project / f"trial_{trial_id}" / "digits_trial.json").read_text())
        assert record["pruned"] == decision and record["epochs"] == 2
        assert record["status"] == "COMPLETED"
        run = next((project / f"trial_{trial_id}").glob("execution_0/version_*"))
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["stop_reason"] == f"pruned at epoch 2: {decision['reason']}"
        assert "pruned at epoch 2 in" in result.stdout
    kept = [t for t in ("0", "1", "2", "3") if t not in pruned]
    for trial_id in kept:
        record = json.loads((project / f"trial_{trial_id}" / "digits_trial.json").read_text())
        assert record["pruned"] is None and record["epochs"] == 3
    assert " pruned " in result.stdout.split("best 4 of 4")[1]  # the table marks them
    # Every trial told the oracle each epoch it trained.
    trial = json.loads((project / "trial_0" / "trial.json").read_text())
    steps = [o["step"] for o in trial["metrics"]["metrics"]["val_accuracy"]["observations"]]
    assert steps == [0, 1, 2]

    again = run_cli(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed: 4 finished trials reloaded, not rerun" in again.stdout
    assert f"{len(pruned)} pruned" in again.stdout
    assert "started" not in again.stdout
    assert read_pruned(project) == pruned


def test_pruning_a_hyperband_search_is_one_error_line():
    result = run_cli("digits.tune", "--pruner", "median")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: hyperband already stops the weaker trials after each of its rounds; --pruner "
        "works with --tuner random, bayesian or grid"]
