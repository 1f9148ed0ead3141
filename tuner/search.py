"""Search runs: keras-tuner's tuners around `DigitsHyperModel`, their trials, their results.

keras-tuner keeps its records where it always does (`<directory>/<project>/oracle.json`,
`trial_<id>/trial.json`, `trial_<id>/checkpoint.weights.h5`); a search here adds, in the same
project directory:

- `search.json`: the settings that define the search, so that rerunning the command with
  different ones is refused instead of silently mixing two searches;
- `trial_<id>/digits_trial.json`: who ran the trial, how long it took, its epochs, its run
  directories and, for a failed trial, the reason (keras-tuner does not send failure messages
  from a worker to the chief);
- `trial_<id>/execution_<e>/version_<n>/`: each trial's digits run (TensorBoard events with an
  HParams session, metrics.json, model.keras, ...);
- `best_hyperparameters.json`, written by `write_best_hyperparameters`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import keras_tuner

from digits.callbacks.base import Callback
from digits.deploy.costs import COSTS
from digits.errors import ConfigError
from digits.runs.atomic import atomic_write_json
from digits.tuner import space
from digits.tuner.display import format_seconds
from digits.tuner.distributed import Role, SearchStopped, settle_after_failure_limit
from digits.tuner.keras_tuner_internals import (
    EachExecution,
    atomic_state_files,
    is_failure_limit,
    keep_finished_trials_finished,
    quiet_condition_protos,
    reload_chief,
    retry_queue,
    run_and_update_trial,
    start_from_defaults,
    trial_module,
    values_by_name,
)
from digits.tuner.pruning import read_pruned
from digits.tuner.records import RECORD, failure_limit_message, read_record, short_reason

SETTINGS = "search.json"
BEST = "best_hyperparameters.json"


def objective_direction(name: str) -> str:
    """The objective's direction, by the callbacks' own rule (`digits.callbacks.monitor`)."""
    from digits.callbacks.monitor import monitor_mode

    return monitor_mode(name)


class _TrialsThroughDigits(EachExecution):
    """Mixed into each keras-tuner tuner: per-trial lines, trial records, trial directories.

    keras-tuner runs the trial (`run_trial`, `SaveBestEpoch`, Hyperband's continuation); this
    adds the trial's id and directory to the `fit` arguments (so the trial's runs land in the
    trial's own directory), prints each trial, and writes `digits_trial.json`.
    """

    def __init__(self, *args, display=None, role: Role | None = None, idle_seconds: float = 1.0,
                 **kwargs) -> None:
        self.display = display
        self._pruned: dict | None = None
        self.role = role or Role("single", "tuner0")
        self.idle_seconds = idle_seconds
        self._trial_started = time.monotonic()
        self._execution = 0
        self._runs: list[Path] = []
        self._epochs = 0
        # keras-tuner announces a reload on stdout; the search reports it in its own words.
        with contextlib.redirect_stdout(io.StringIO()):
            super().__init__(*args, **kwargs)
        if isinstance(self.oracle, keras_tuner.Oracle):
            self.oracle.verbose = 0  # keras-tuner's own trial tables; ours are printed instead

    # -- the loop ------------------------------------------------------------------------

    def run_search(self, data, epochs: int, max_trials: int | None = None) -> bool:
        """Ask the oracle for trials and run them until it says stop (keras-tuner's `search`,
        waiting a second when the oracle has nothing to hand out yet instead of spinning).

        With `max_trials`, stop after running that many, before asking for another (a worker
        that is then restarted, see `LocalWorkers`). Returns True when the oracle said stop.
        """
        self.on_search_begin()
        ran = 0
        while True:
            if max_trials is not None and ran >= max_trials:
                return False
            self.pre_create_trial()
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == "STOPPED":
                break
            if trial.status == "IDLE":
                time.sleep(self.idle_seconds)
                continue
            self.on_trial_begin(trial)
            run_and_update_trial(self, trial, data, epochs=epochs)
            self.on_trial_end(trial)
            ran += 1
        self.on_search_end()
        return True

    # -- keras-tuner hooks -----------------------------------------------------------------

    def on_trial_begin(self, trial) -> None:
        super().on_trial_begin(trial)
        self._trial_started = time.monotonic()
        self._execution = 0
        self._runs, self._epochs = [], 0
        self._pruned = None
        self.hypermodel.last_runs, self.hypermodel.last_epochs = [], 0
        self.hypermodel.last_costs = {}
        if self.display is not None:
            where = self.tuner_id if self.role.kind == "worker" else None
            self.display.trial_started(trial.trial_id, dict(trial.hyperparameters.values),
                                       where=where)

    def fit_execution(self, trial, fit, *args, **kwargs):
        execution = self._execution
        self._execution += 1
        self.hypermodel.execution = execution
        kwargs.update(trial_id=trial.trial_id, execution=execution,
                      trial_dir=self.get_trial_dir(trial.trial_id))
        # Every epoch goes to the oracle (the chief's, from a worker): the pruner judges it
        # there, and the chief's live view shows each running trial's epoch.
        report = ReportEpochs(self.oracle, trial.trial_id, self.project_dir,
                              extra=lambda: self.hypermodel.last_costs)
        shown = self.display.trial_callbacks() if self.display is not None else []
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), *shown, report]
        try:
            return fit(*args, **kwargs)
        finally:
            self._runs.extend(self.hypermodel.last_runs)
            self._epochs = max(self._epochs, self.hypermodel.last_epochs)
            if report.pruned is not None:
                self._pruned = report.pruned

    def on_trial_end(self, trial) -> None:
        seconds = time.monotonic() - self._trial_started
        message = trial.message  # the oracle's copy of a worker's trial has none
        # Written before the chief hears of the end, so that it can print the time and reason
        # (keras-tuner sends neither), then again with the oracle's score.
        self._write_record(trial, seconds, message)
        stopped = False
        try:
            super().on_trial_end(trial)  # reports to the oracle (or the chief) and saves
        except RuntimeError as e:
            if not is_failure_limit(e):
                raise
            settle_after_failure_limit(self.oracle, trial.trial_id)
            stopped = True
        ended = self.oracle.get_trial(trial.trial_id)
        self._write_record(ended, seconds, message)
        self.report_trial_end(trial.trial_id, where=self.tuner_id
                              if self.role.kind == "worker" else None)
        if stopped:
            raise SearchStopped(failure_limit_message(self.oracle, Path(self.project_dir),
                                                      trial.trial_id))

    # -- records and lines -------------------------------------------------------------------

    def _write_record(self, trial, seconds: float, message: str | None) -> None:
        project = Path(self.project_dir)
        runs = []
        for run in self._runs:
            try:
                runs.append(str(Path(run).relative_to(project)))
            except ValueError:
                runs.append(str(run))
        atomic_write_json(Path(self.get_trial_dir(trial.trial_id)) / RECORD, {
            "trial_id": trial.trial_id,
            "tuner_id": self.tuner_id,
            "status": trial.status,
            "score": trial.score,
            "seconds": round(seconds, 3),
            "epochs": self._epochs,
            "runs": runs,
            "reason": short_reason(message) if trial.status != "COMPLETED" else None,
            "traceback": message if trial.status != "COMPLETED" else None,
            "hyperparameters": dict(trial.hyperparameters.values),
            "rss_bytes": rss_bytes(),  # this process's memory after the trial
            "pruned": self._pruned,  # {"epoch", "rule", "reason"} when the pruner stopped it
            "costs": dict(self.hypermodel.last_costs) or None,  # with cost objectives
        })

    def report_trial_end(self, trial_id: str, where: str | None = None) -> None:
        """Print how trial `trial_id` ended, with the best score so far."""
        if self.display is None:
            return
        trial = self.oracle.get_trial(trial_id)
        record = read_record(Path(self.project_dir), trial_id) or {}
        best = [t for t in self.oracle.get_best_trials(1) if t.status == "COMPLETED"]
        if where is None and self.role.kind == "chief":
            where = record.get("tuner_id")
        self.display.trial_ended(
            trial_id, trial.status, score=trial.score, seconds=record.get("seconds"),
            epochs=record.get("epochs"), reason=record.get("reason"),
            pruned=record.get("pruned"),
            best=(best[0].trial_id, best[0].score) if best else None, where=where,
            retrying=trial.status == "INVALID")


class ReportEpochs(Callback):
    """In a trial: report each epoch's metrics to the oracle, and stop when it says so (the
    pruner's answer, see `digits.tuner.pruning`).

    Args:
        oracle: the search's oracle (a worker's `OracleClient` reaches the chief's).
        trial_id: the trial being trained.
        project_dir: where the oracle's holder keeps `pruned.json` (the reason is read there).
        extra: more metrics for every report (the trial's costs, with cost objectives).
    """

    name = "report_epochs"
    order = 95  # after the callbacks that add to the epoch's logs, before checkpointing

    def __init__(self, oracle, trial_id: str, project_dir: str | Path,
                 extra: Callable[[], dict] | None = None) -> None:
        super().__init__()
        self.oracle, self.trial_id, self.project_dir = oracle, trial_id, Path(project_dir)
        self.extra = extra
        self.pruned: dict | None = None

    def on_epoch_end(self, epoch, logs=None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if hasattr(v, "__float__")}
        if self.oracle.objective.name not in metrics:
            return
        if self.extra is not None:
            metrics.update(self.extra())  # the trial's costs, with cost objectives
        trial = self.oracle.update_trial(self.trial_id, metrics, step=int(epoch))
        if getattr(trial, "status", None) != "STOPPED":
            return
        decision = read_pruned(self.project_dir).get(self.trial_id) or {}
        self.pruned = {"epoch": int(decision.get("epoch", epoch + 1)),
                       "rule": decision.get("rule"),
                       "reason": decision.get("reason") or "the oracle stopped it"}
        self.model.stop_training = True
        trainer = self.trainer
        if trainer is not None:
            trainer.stop(f"pruned at epoch {self.pruned['epoch']}: {self.pruned['reason']}")


class HyperbandSearch(_TrialsThroughDigits, keras_tuner.Hyperband):
    """keras-tuner's Hyperband, training through digits' Trainer."""


class RandomSearch(_TrialsThroughDigits, keras_tuner.RandomSearch):
    """keras-tuner's random search, training through digits' Trainer."""


class BayesianSearch(_TrialsThroughDigits, keras_tuner.BayesianOptimization):
    """keras-tuner's Bayesian optimisation (a Gaussian process), training through digits' Trainer."""


class GridSearch(_TrialsThroughDigits, keras_tuner.GridSearch):
    """keras-tuner's grid search, training through digits' Trainer."""


TUNERS = {"hyperband": HyperbandSearch, "random": RandomSearch, "bayesian": BayesianSearch,
          "grid": GridSearch}


def rss_bytes() -> int | None:
    """This process's resident memory now (Linux), else its peak; None where neither is known."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except (ImportError, OSError):
            return None


def make_tuner(kind: str, hypermodel, *, directory: str, project: str, objective: str = "val_accuracy",
               max_trials: int | None = None, max_epochs: int = 10, factor: int = 3,
               hyperband_iterations: int = 1, seed: int = 0, executions_per_trial: int = 1,
               overwrite: bool = False, pins: dict | None = None, max_retries_per_trial: int = 0,
               max_consecutive_failed_trials: int = 3, max_model_size: int | None = None,
               display=None, role: Role | None = None, max_seconds: float | None = None,
               pruner: str = "none", pruner_warmup: int = 1, first_points: tuple[dict, ...] = ()):
    """Build the keras-tuner tuner `kind` ("hyperband", "random", "bayesian" or "grid").

    `pins` fix hyperparameters (`{"batch_norm": True}`); `seed` seeds the oracle's sampling.
    With `overwrite=False` an existing project is reloaded: its finished trials are kept.
    `max_seconds`: a time budget (see `TimeBudget`). `pruner`: "median" or "asha" stops trials
    that lag the others after an epoch (see `digits.tuner.pruning`); not with Hyperband.
    The first trial is the space's defaults, then come `first_points` (the defaults with
    some values changed: `space.SMALL_LADDER` in a search with cost objectives), then random
    draws (not with GridSearch, which walks its grid).
    """
    from digits.tuner.pruning import OraclePruning, check_pruner, make_pruner

    if kind not in TUNERS:
        raise ConfigError(f"unknown tuner {kind!r}; choose from {', '.join(TUNERS)}")
    check_pruner(pruner, kind)
    hyperparameters = keras_tuner.HyperParameters()
    for name, value in (pins or {}).items():
        hyperparameters.Fixed(name, value)
    common = dict(
        hypermodel=hypermodel,
        objective=keras_tuner.Objective(objective, objective_direction(objective)),
        # keras-tuner reads a seed of 0 as "no seed", so --seed 0 becomes 1 here.
        seed=seed + 1,
        hyperparameters=hyperparameters,
        max_retries_per_trial=max_retries_per_trial,
        max_consecutive_failed_trials=max_consecutive_failed_trials,
        executions_per_trial=executions_per_trial,
        max_model_size=max_model_size,
        directory=str(directory),
        project_name=project,
        overwrite=overwrite,
        display=display,
        role=role,
    )
    atomic_state_files()  # before the tuner writes or reloads anything
    values_by_name()  # before the oracle draws a trial
    quiet_condition_protos()  # before a trial goes between the chief and a worker
    if kind == "hyperband":
        tuner = HyperbandSearch(max_epochs=max_epochs, factor=factor,
                                hyperband_iterations=hyperband_iterations, **common)
        if max_trials and isinstance(tuner.oracle, keras_tuner.Oracle):
            tuner.oracle.max_trials = max_trials  # a cap on top of Hyperband's own schedule
    else:
        tuner = TUNERS[kind](max_trials=max_trials, **common)
    if role is not None and role.kind == "chief" and not overwrite:
        reload_chief(tuner)  # keras-tuner reloads only tuners that ran trials themselves
    if isinstance(tuner.oracle, keras_tuner.Oracle) and not overwrite:
        keep_finished_trials_finished(tuner.oracle)
    if isinstance(tuner.oracle, keras_tuner.Oracle):
        # The first trial is the hand-picked model, then `first_points`.
        start_from_defaults(tuner.oracle, then=first_points)
    if max_seconds is not None and isinstance(tuner.oracle, keras_tuner.Oracle):
        TimeBudget(tuner.oracle, max_seconds, display).install()
    if pruner != "none" and isinstance(tuner.oracle, keras_tuner.Oracle):
        OraclePruning(tuner.oracle, make_pruner(pruner, warmup=pruner_warmup),
                      tuner.project_dir, max_epochs=max_epochs).install()
    if display is not None and isinstance(tuner.oracle, keras_tuner.Oracle):
        watch_epochs(tuner.oracle, display)
    return tuner


def watch_epochs(oracle, display) -> None:
    """Tell `display.epoch_reported(trial_id, epoch, value)` of each epoch a trial reports to
    `oracle` (a worker's arrive on the chief's gRPC thread)."""
    update = oracle.update_trial
    name = oracle.objective.name

    def update_trial(trial_id, metrics, step=0):
        trial = update(trial_id, metrics, step=step)
        display.epoch_reported(trial_id, int(step) + 1, metrics.get(name))
        return trial

    oracle.update_trial = update_trial


class TimeBudget:
    """No new trial once `seconds` have passed since the first trial was handed out.

    It sits on the oracle (the chief's, in a distributed search), so every worker's request
    for a trial is judged by one clock; a trial that is running finishes and is recorded.
    """

    def __init__(self, oracle, seconds: float, display=None) -> None:
        self.oracle, self.seconds, self.display = oracle, seconds, display
        self.started: float | None = None
        self.spent = False

    def install(self) -> None:
        create = self.oracle.create_trial

        def create_trial(tuner_id):
            if self.started is not None and time.monotonic() - self.started >= self.seconds:
                if not self.spent and self.display is not None:
                    self.display.line(f"time budget of {format_seconds(self.seconds)} spent: "
                                      "no new trials")
                self.spent = True
                # As the oracle's own STOPPED answer does: a distributed chief waits until every
                # tuner that asked has been told to stop.
                tuner_ids = getattr(self.oracle, "tuner_ids", None)
                if tuner_ids is not None:
                    tuner_ids.discard(tuner_id)
                return trial_module().Trial(self.oracle.get_space(), status="STOPPED")
            trial = create(tuner_id)
            if self.started is None and trial.status == "RUNNING":
                self.started = time.monotonic()
            return trial

        self.oracle.create_trial = create_trial


def planned_trials(kind: str, max_trials: int | None, max_epochs: int, factor: int = 3,
                   hyperband_iterations: int = 1) -> int | None:
    """How many trials a search runs (Hyperband's schedule, as keras-tuner computes it).

    Example:
        >>> planned_trials("hyperband", None, max_epochs=10)
        30
    """
    if kind != "hyperband":
        return max_trials
    brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    last_round_size = math.ceil(1 + math.log(max_epochs, factor))
    total = sum(math.ceil(last_round_size / (b + 1) * factor ** (b - r))
                for b in range(brackets) for r in range(b + 1)) * hyperband_iterations
    return min(total, max_trials) if max_trials else total


# ----------------------------------------------------------------------------- settings


def check_settings(project_dir: Path, settings: dict) -> None:
    """Refuse to continue the search in `project_dir` when it was made with other settings.

    Settings that define the search (tuner, objective, data, seed, pins, epochs, ...) must
    match those in its `search.json`; a project without one is a new search.
    """
    file = Path(project_dir) / SETTINGS
    try:
        previous = json.loads(file.read_text())
    except (OSError, ValueError):
        return
    normalised = json.loads(json.dumps(settings))
    changed = [k for k in sorted(set(previous) | set(normalised))
               if previous.get(k) != normalised.get(k)]
    if changed:
        what = "; ".join(f"{k} was {previous.get(k)!r}, now {normalised.get(k)!r}"
                         for k in changed)
        raise ConfigError(f"{project_dir} holds a search with other settings ({what}); rerun "
                          "with --overwrite to start it over, or pick another --project")


def write_settings(project_dir: Path, settings: dict) -> None:
    atomic_write_json(Path(project_dir) / SETTINGS, settings)


def search_is_over(oracle, planned: int | None) -> bool:
    """Whether a reloaded search has no trial left to run: its `planned` trials have all ended
    (completed, pruned or failed for good), none is running and none waits to run again."""
    if planned is None or not isinstance(oracle, keras_tuner.Oracle):
        return False
    ended = [t for t in oracle.trials.values() if t.status in ("COMPLETED", "FAILED")]
    return len(ended) >= planned and not oracle.ongoing_trials and not retry_queue(oracle)


def reload_report(oracle) -> dict:
    """What a reloaded project holds: finished, failed and interrupted trials, by id."""
    by_status: dict[str, list[str]] = {}
    for trial in oracle.trials.values():
        by_status.setdefault(trial.status, []).append(trial.trial_id)
    return {
        "completed": sorted(by_status.get("COMPLETED", [])),
        "failed": sorted(by_status.get("FAILED", [])),
        # RUNNING on disk: the trial was running when the search was stopped; INVALID:
        # it crashed and waits for a retry. keras-tuner runs both again.
        "restarted": sorted(by_status.get("RUNNING", []) + by_status.get("INVALID", [])),
    }


# ----------------------------------------------------------------------------- results


def trial_rows(oracle, project_dir: Path, top: int | None = None) -> list[dict]:
    """The completed trials, best first: id, score, epochs, seconds and searched values."""
    direction = objective_direction(oracle.objective.name)
    completed = [t for t in oracle.trials.values() if t.status == "COMPLETED"
                 and t.score is not None and not math.isnan(t.score)]
    # Equal scores go to the earlier trial: the oracle's order of its trials is not the same
    # after a reload, and a rerun must find the same best (and not retrain another).
    completed.sort(key=lambda t: (-t.score if direction == "max" else t.score, t.trial_id))
    rows = []
    for trial in completed[:top]:
        record = read_record(project_dir, trial.trial_id) or {}
        values = dict(trial.hyperparameters.values)
        rows.append({"trial_id": trial.trial_id, "score": trial.score,
                     "epochs": record.get("epochs") or values.get("tuner/epochs"),
                     "seconds": record.get("seconds"),
                     "pruned": bool(record.get("pruned")),
                     "values": space.searched_values(values),
                     # What it costs to run, with cost objectives (the oracle's own record).
                     "costs": {name: trial.metrics.get_last_value(metric)
                               for name, metric in COSTS.items()
                               if trial.metrics.exists(metric)}})
    return rows


def failed_trials(oracle, project_dir: Path) -> list[tuple[str, str]]:
    """(trial id, reason) of each trial that failed for good."""
    failed = []
    for trial in sorted(oracle.trials.values(), key=lambda t: t.trial_id):
        if trial.status == "FAILED":
            record = read_record(project_dir, trial.trial_id) or {}
            failed.append((trial.trial_id, record.get("reason") or short_reason(trial.message)
                           or "no reason recorded"))
    return failed


def best_record(oracle, project_dir: Path, kind: str, trial_id: str | None = None,
                chosen_by: str | None = None) -> dict | None:
    """The best trial (or trial `trial_id`, picked `chosen_by` a constraint) as
    `best_hyperparameters.json` holds it (None when none completed)."""
    rows = trial_rows(oracle, project_dir)
    if trial_id is not None:
        rows = [r for r in rows if r["trial_id"] == trial_id]
    if not rows:
        return None
    best = rows[0]
    values = best["values"]
    counts = reload_report(oracle)
    return {
        "objective": {"name": oracle.objective.name,
                      "direction": objective_direction(oracle.objective.name)},
        "score": best["score"],
        "trial_id": best["trial_id"],
        "epochs": best["epochs"],
        "tuner": kind,
        "model": space.MODEL,
        "hyperparameters": values,
        "trials": {"completed": len(counts["completed"]), "failed": len(counts["failed"])},
        "train_command": train_command(values, best["epochs"]),
        **({"costs": best["costs"]} if best["costs"] else {}),
        **({"chosen_by": chosen_by} if chosen_by else {}),
    }


def train_command(values: dict, epochs: int | None = None) -> str:
    """The `python -m digits.train` command line that trains these hyperparameters by hand."""
    words = ["python", "-m", "digits.train", "--model", space.MODEL]
    for name, value in values.items():
        if name == "optimizer":
            words += ["--optimizer", str(value)]
        elif name == "learning_rate":
            words += ["--learning-rate", f"{value:.6g}"]
        elif name in space.DIMENSIONS:
            words += ["--hp", f"{name}={value!r}"]
    if epochs:
        words += ["--epochs", str(epochs)]
    return shlex.join(words)


def write_best_hyperparameters(project_dir: Path, record: dict) -> Path:
    """Write `<project>/best_hyperparameters.json` atomically; returns its path."""
    path = Path(project_dir) / BEST
    atomic_write_json(path, record)
    return path
