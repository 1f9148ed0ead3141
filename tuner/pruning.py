"""Pruning: stop a trial after an epoch when its objective lags the other trials at that epoch.

Both rules are judged on the oracle (the chief's, in a distributed search), from the values
each trial reports after every epoch through `oracle.update_trial`: keras-tuner's own channel
for intermediate results, which carries a worker's report to the chief over gRPC. The oracle
answers with the trial, and a status of "STOPPED" is how an oracle tells a trial to stop early
(keras-tuner's `Oracle.update_trial` says so; none of its own oracles uses it). The trial then
ends after that epoch, its Trainer's stop reason saying why, and is recorded as COMPLETED with
its best score so far: keras-tuner does not run it again on resume, its partial score informs
the Bayesian oracle, and the consecutive-failure limit passes over it (neither a failure nor a
success). Every decision is kept in `<project>/pruned.json`, which a resumed search reloads.

- `MedianStopping` (Google Vizier's median-stopping rule, Optuna's `MedianPruner`): from the
  epoch after `warmup`, a trial whose best value so far is worse than the median of what the
  completed, unpruned trials had reached by the same epoch stops, once `min_trials` of them
  have reached it.
- `SuccessiveHalving` (ASHA, asynchronous successive halving, as Optuna's
  `SuccessiveHalvingPruner`): rungs at epochs `(warmup + 1) * factor**r`; at a rung a trial
  goes on only if its best value so far is among the top `1/factor` of the values every trial
  had at that rung (at least the best one goes on, so the first trial at a rung always does).

Hyperband already stops the weaker trials at each of its rounds, so pruning is refused there.
This module imports no TensorFlow, so the command line checks `--pruner` before it starts; the
trial's side is `digits.tuner.search.ReportEpochs`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from digits.errors import ConfigError
from digits.runs.atomic import atomic_write_json

RECORD = "pruned.json"
PRUNERS = ("none", "median", "asha")


def check_pruner(pruner: str, tuner: str) -> None:
    """Refuse a pruner that does not exist or a search that already prunes (Hyperband)."""
    if pruner not in PRUNERS:
        raise ConfigError(f"unknown pruner {pruner!r}; choose from {', '.join(PRUNERS)}")
    if pruner != "none" and tuner == "hyperband":
        raise ConfigError("hyperband already stops the weaker trials after each of its rounds; "
                          "--pruner works with --tuner random, bayesian or grid")


def best_until(history, step: int, maximise: bool) -> float | None:
    """The best mean value a metric history (keras-tuner's `MetricObservation`s) reached at or
    before `step`; None when it has none there."""
    values = [float(sum(o.value) / len(o.value)) for o in history
              if o.step <= step and o.value]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return None
    return max(values) if maximise else min(values)


def reached(history, step: int) -> bool:
    return any(o.step == step for o in history)


class MedianStopping:
    """Stop a trial whose best so far is worse than the completed trials' median at its epoch.

    Args:
        warmup: epochs never judged (default 1: a trial is judged from its second epoch).
        min_trials: completed trials that must have reached the epoch first (default 3).

    Example:
        >>> MedianStopping().judge(2.0, [1.0, 3.0, 4.0], maximise=True)
        'below the median 3 of 3 completed trials'
    """

    name = "median"

    def __init__(self, warmup: int = 1, min_trials: int = 3) -> None:
        self.warmup, self.min_trials = int(warmup), int(min_trials)

    def due(self, step: int) -> bool:
        return step >= self.warmup

    def peers(self, trial_id: str, trials: dict, pruned: dict) -> list:
        return [t for t in trials.values() if t.trial_id != trial_id
                and t.status == "COMPLETED" and t.trial_id not in pruned]

    def judge(self, value: float, others: list[float], maximise: bool) -> str | None:
        """Why a trial at `value` stops, given its peers' values at the same epoch; or None."""
        if len(others) < self.min_trials:
            return None
        ordered = sorted(others)
        middle = len(ordered) // 2
        median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        worse = value < median if maximise else value > median
        if not worse:
            return None
        side = "below" if maximise else "above"
        return f"{side} the median {median:.4g} of {len(others)} completed trials"


class SuccessiveHalving:
    """ASHA: at each rung only the top `1/factor` of the trials that reached it go on.

    Args:
        warmup: epochs before the first rung (default 1: rungs at epochs 2, 2f, 2f², ...).
        factor: the reduction factor (default 3).

    Example:
        >>> asha = SuccessiveHalving(warmup=1, factor=3)
        >>> [asha.due(step) for step in range(7)]  # steps are 0-based epochs
        [False, True, False, False, False, True, False]
        >>> asha.judge(0.9, [0.95, 0.8], maximise=True)  # 3 at the rung: only the best goes on
        'not in the top 1 of 3 trials at this rung'
    """

    name = "asha"

    def __init__(self, warmup: int = 1, factor: int = 3) -> None:
        if factor < 2:
            raise ConfigError("the successive-halving factor must be at least 2")
        self.warmup, self.factor = int(warmup), int(factor)

    def due(self, step: int) -> bool:
        epoch, rung = step + 1, self.warmup + 1
        while rung < epoch:
            rung *= self.factor
        return rung == epoch

    def peers(self, trial_id: str, trials: dict, pruned: dict) -> list:
        return [t for t in trials.values() if t.trial_id != trial_id
                and t.status in ("RUNNING", "COMPLETED", "STOPPED")]

    def judge(self, value: float, others: list[float], maximise: bool) -> str | None:
        everyone = sorted([value, *others], reverse=maximise)
        keep = max(1, len(everyone) // self.factor)
        threshold = everyone[keep - 1]
        if (value >= threshold) if maximise else (value <= threshold):
            return None
        return f"not in the top {keep} of {len(everyone)} trials at this rung"


def make_pruner(name: str, warmup: int = 1, factor: int = 3):
    """The pruner called `name` ("median" or "asha"), or None for "none"."""
    if name == "none":
        return None
    if name == "median":
        return MedianStopping(warmup=warmup)
    if name == "asha":
        return SuccessiveHalving(warmup=warmup, factor=factor)
    raise ConfigError(f"unknown pruner {name!r}; choose from {', '.join(PRUNERS)}")


def read_pruned(project_dir: str | Path) -> dict:
    """`<project>/pruned.json`: {trial id: {"epoch": 1-based, "rule", "reason"}}; {} if none."""
    try:
        found = json.loads((Path(project_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


class OraclePruning:
    """Judges each epoch a trial reports to `oracle` by `rule`, and remembers the decisions.

    A trial's last epoch (`max_epochs`) is not judged: stopping there saves nothing.

    `install()` wraps the oracle's `update_trial` (under the oracle's own lock, as keras-tuner
    runs it) and makes its consecutive-failure count pass over pruned trials.
    """

    def __init__(self, oracle, rule, project_dir: str | Path, max_epochs: int | None = None
                 ) -> None:
        self.oracle, self.rule = oracle, rule
        self.max_epochs = max_epochs  # a trial's last epoch is never judged: nothing to save
        self.file = Path(project_dir) / RECORD
        self.pruned: dict[str, dict] = read_pruned(project_dir)

    def install(self) -> None:
        from digits.tuner.keras_tuner_internals import (
            oracle_synchronized,
            skip_in_failure_count,
            trial_module,
        )

        update = self.oracle.update_trial

        @oracle_synchronized
        def update_trial(oracle, trial_id, metrics, step=0):
            trial = update(trial_id, metrics, step=step)
            if trial_id not in self.pruned:
                self.decide(trial_id, int(step))
            if trial_id in self.pruned:
                return trial_module().Trial(trial.hyperparameters, trial_id=trial_id,
                                            status="STOPPED")
            return trial

        self.oracle.update_trial = lambda trial_id, metrics, step=0: update_trial(
            self.oracle, trial_id, metrics, step)
        # A pruned trial that went on to fail (it crashed in its last epoch) is a failure.
        skip_in_failure_count(self.oracle, lambda: {
            t for t in self.pruned if self.oracle.trials[t].status != "FAILED"})

    def decide(self, trial_id: str, step: int) -> None:
        if not self.rule.due(step) or (self.max_epochs and step + 1 >= self.max_epochs):
            return
        name = self.oracle.objective.name
        maximise = self.oracle.objective.direction == "max"
        trials = self.oracle.trials
        if not trials[trial_id].metrics.exists(name):
            return
        value = best_until(trials[trial_id].metrics.get_history(name), step, maximise)
        if value is None:
            return
        others = []
        for peer in self.rule.peers(trial_id, trials, self.pruned):
            if not peer.metrics.exists(name):
                continue
            history = peer.metrics.get_history(name)
            if reached(history, step):
                others.append(best_until(history, step, maximise))
        reason = self.rule.judge(value, [v for v in others if v is not None], maximise)
        if reason is None:
            return
        self.pruned[trial_id] = {"epoch": step + 1, "rule": self.rule.name,
                                 "reason": f"{name} {value:.4g} {reason}"}
        atomic_write_json(self.file, self.pruned)
