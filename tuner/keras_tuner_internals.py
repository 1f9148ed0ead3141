"""The one place digits reaches into keras-tuner's private parts.

keras-tuner's public API has no way to serve an oracle while watching its trials, to end a
search cleanly after too many failures, to run a trial through the tuner's own bookkeeping
from a loop of our own, or to silence its tracebacks. Each of those leans on a private name,
and each is here, with the assumption it makes written down and checked by a test of its own
(`tests/test_keras_tuner_internals.py`), so that a keras-tuner release that moves one breaks
one test with a clear message, not a search.
"""

from __future__ import annotations

import threading
import warnings


def quiet_trial_tracebacks() -> None:
    """Keep keras-tuner from printing every failed trial's traceback.

    Assumes: `keras_tuner.src.config.DEBUG` is the flag its tuners read before printing one.
    """
    from keras_tuner.src import config

    config.DEBUG = False


class EachExecution:
    """A mixin for a keras-tuner `Tuner`: `fit_execution(trial, fit, *args, **kwargs)` runs each
    execution of a trial, `fit(*args, **kwargs)` being keras-tuner's own build-and-fit of it.

    keras-tuner's documented override, `run_trial`, would mean copying its loop over
    executions (callback copies, its checkpoint, its TensorBoard folders); this keeps the loop
    and wraps one execution.

    Assumes: `Tuner.run_trial` calls `self._build_and_fit_model(trial, *args, **kwargs)` once
    per execution, and what that returns is the execution's result.
    """

    def _build_and_fit_model(self, trial, *args, **kwargs):
        parent = super()._build_and_fit_model
        return self.fit_execution(trial, lambda *a, **k: parent(trial, *a, **k), *args, **kwargs)

    def fit_execution(self, trial, fit, *args, **kwargs):
        return fit(*args, **kwargs)


def is_failure_limit(error: BaseException) -> bool:
    """Whether `error`, raised by `Tuner.on_trial_end`, is keras-tuner ending the search after
    too many failed trials in a row (the oracle's `max_consecutive_failed_trials`).

    Assumes: the oracle raises a `RuntimeError` whose text says "consecutive failures".
    """
    return isinstance(error, RuntimeError) and "consecutive failures" in str(error)


def run_and_update_trial(tuner, trial, *fit_args, **fit_kwargs) -> None:
    """Run `trial` as keras-tuner's `search` does: build, fit, report to the oracle, record a
    failure as the trial's (`BaseTuner._try_run_and_update_trial`).

    Assumes: the method exists with that name and takes (trial, *fit_args, **fit_kwargs).
    When the trial reported its epochs to the oracle itself (`digits.tuner.pruning.ReportEpochs`),
    keras-tuner keeps those values, scores the trial by their best, and warns that this use is
    deprecated; the warning is ours to silence, as the epochs are the record we want.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The use case of calling",
                                category=DeprecationWarning)
        tuner._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)


def oracle_servicer():
    """keras-tuner's gRPC servicer of an oracle (the chief's side of a distributed search).

    Assumes: `keras_tuner.src.distribute.oracle_chief.OracleServicer(oracle)` with the methods
    `CreateTrial` and `EndTrial`.
    """
    from keras_tuner.src.distribute import oracle_chief

    return oracle_chief.OracleServicer


def grpc_service():
    """(messages module, gRPC module) of keras-tuner's oracle service.

    Assumes: `keras_tuner.src.protos.get_service()` has `CreateTrialResponse` and
    `EndTrialResponse`, and `get_service_grpc()` has `add_OracleServicer_to_server`.
    """
    from keras_tuner.src import protos

    return protos.get_service(), protos.get_service_grpc()


def trial_module():
    """keras-tuner's `Trial` and `TrialStatus` (with `Trial.to_proto`/`from_proto`).

    Assumes: `keras_tuner.src.engine.trial` holds both.
    """
    from keras_tuner.src.engine import trial

    return trial


def oracle_synchronized(function):
    """`function(oracle)` run under the oracle's own lock, as its public methods run.

    Assumes: `keras_tuner.src.engine.oracle.synchronized` decorates functions whose first
    argument is the oracle.
    """
    from keras_tuner.src.engine.oracle import synchronized

    return synchronized(function)


def release_lock_kept_after_raise(oracle) -> None:
    """Release the oracle's lock if this thread still holds it because a `@synchronized`
    method raised (keras-tuner keeps it then, and every other thread would wait forever).

    Assumes: `keras_tuner.src.engine.oracle.THREADS[oracle]` names the thread holding
    `LOCKS[oracle]`, or is None.
    """
    from keras_tuner.src.engine import oracle as oracle_module

    if oracle_module.THREADS[oracle] == threading.current_thread().name:
        oracle_module.THREADS[oracle] = None
        oracle_module.LOCKS[oracle].release()


def save_trial(oracle, trial) -> None:
    """Write `trial` to its `trial.json` (what `end_trial` does before it can raise).

    Assumes: `Oracle._save_trial(trial)`.
    """
    oracle._save_trial(trial)


def skip_in_failure_count(oracle, trial_ids) -> None:
    """Make the oracle's consecutive-failure count pass over the trials `trial_ids()` names
    (pruned trials: neither a failure nor a success).

    Assumes: `Oracle._check_consecutive_failures()` counts over `oracle.end_order` (trial ids in
    the order they ended) and is what `end_trial` calls.
    """
    check = oracle._check_consecutive_failures

    def check_without_skipped():
        order = oracle.end_order
        skipped = trial_ids()
        oracle.end_order = [t for t in order if t not in skipped]
        try:
            check()
        finally:
            oracle.end_order = order

    oracle._check_consecutive_failures = check_without_skipped


def start_from_defaults(oracle, then: tuple[dict, ...] = ()) -> None:
    """Make the oracle's first random point the space's defaults (the hand-picked model, with
    any pins), so that every search measures the default beside what it samples and can only
    choose something else by beating it on the objective at the same budget; then each of
    `then` in turn: the defaults with those values changed (a searched cost's smaller
    versions of the default). A value that a pin fixes, that the space does not hold, or a
    point already tried is left out; the random draws follow.

    Assumes: oracles draw each new random point from `Oracle._random_values()`, a dict of the
    active values or None (RandomSearch, Hyperband's new trials, BayesianOptimization's first
    points; GridSearch walks its grid and does not call it), and `Oracle._duplicate(values)`
    says whether those values were already tried, also after a search is reloaded.
    """
    draw = oracle._random_values

    def planned_first():
        space = oracle.hyperparameters
        defaults = {hp.name: hp.default for hp in space.space if space.is_active(hp)}
        if not defaults:
            return draw()
        searched = {hp.name: hp for hp in space.space if space.is_active(hp)
                    and type(hp).__name__ != "Fixed"}
        for changes in ({}, *then):
            point = dict(defaults)
            point.update((name, value) for name, value in changes.items()
                         if name in searched and _holds(searched[name], value))
            if not oracle._duplicate(point):
                return point
        return draw()

    oracle._random_values = planned_first


def _holds(hp, value) -> bool:
    """Whether keras-tuner hyperparameter `hp` can take `value`."""
    values = getattr(hp, "values", None)
    if values is not None:  # Choice
        return value in values
    if type(hp).__name__ == "Boolean":
        return isinstance(value, bool)
    low, high = getattr(hp, "min_value", None), getattr(hp, "max_value", None)
    return low is not None and high is not None and low <= value <= high


def values_by_name() -> None:
    """Let hyperparameters of one name under different conditions (`learning_rate`: one range
    per optimizer, `digits.tuner.space`) keep the value drawn for the active one.
    keras-tuner's `HyperParameters.ensure_active_values()`, run on each new trial's values,
    drops a name's value when any one of its hyperparameters is inactive, and redraws it,
    unseeded, when another is active: the oracle's drawn rate was replaced (Adam), or no rate
    was left at all (SGD). Here a value is dropped only when no hyperparameter of its name is
    active, as `is_active(name)` already reads it.

    Assumes: `HyperParameters.ensure_active_values(self)` fills and pops `self.values` from
    `self.space`; `is_active(hp)` takes a hyperparameter or a name (true when any
    hyperparameter of that name is active).
    """
    from keras_tuner.src.engine.hyperparameters.hyperparameters import HyperParameters

    if getattr(HyperParameters.ensure_active_values, "digits_by_name", False):
        return

    def ensure_active_values(self):
        for hp in self.space:
            if self.is_active(hp):
                if hp.name not in self.values:
                    self.values[hp.name] = hp.random_sample()
            elif not self.is_active(hp.name):
                self.values.pop(hp.name, None)

    ensure_active_values.digits_by_name = True
    HyperParameters.ensure_active_values = ensure_active_values


def quiet_condition_protos() -> None:
    """Keep keras-tuner from printing a condition's first value each time it is sent.

    keras-tuner 1.4's `conditions.Parent.to_proto` has a stray `print(self.values[0])`: with
    conditional hyperparameters (`learning_rate`, one range per optimizer) every trial that went
    between the chief and its workers printed "sgd" and "adam" lines into the search's console.
    Here that module's `print` is a function that prints nothing; its own code runs as it is.

    Assumes: the stray print is a call of the name `print` looked up in the module
    `keras_tuner.src.engine.conditions`, which prints nothing else.
    """
    from keras_tuner.src.engine import conditions

    def print(*args, **kwargs):  # noqa: A001 - shadows the builtin in that module only
        """keras-tuner's debugging print in `Parent.to_proto`: dropped."""

    if not hasattr(conditions, "print"):
        conditions.print = print


def atomic_state_files() -> None:
    """Make keras-tuner write its state files (`oracle.json`, each `trial.json`, each tuner's
    file) whole or not at all: to a temporary file beside the target, then renamed over it
    (`digits.runs.atomic`). keras-tuner truncates and rewrites them in place, so a kill or a
    full disk in the middle of a write left a file that no rerun could read. Paths with a
    scheme (`gs://...`) keep keras-tuner's own writer.

    Assumes: `Stateful.save(fname)` and the tuner's files go through
    `keras_tuner.src.utils.save_json(path, obj)`, looked up on the module at each call, which
    writes the JSON text of `obj` and returns it.
    """
    import json

    from keras_tuner.src import utils

    if getattr(utils.save_json, "digits_atomic", False):
        return
    original = utils.save_json

    def save_json(path, obj):
        if "://" in str(path):
            return original(path, obj)
        from digits.runs.atomic import atomic_write_text

        text = json.dumps(obj)
        atomic_write_text(path, text)
        return text

    save_json.digits_atomic = True
    utils.save_json = save_json


def retry_queue(oracle) -> list[str]:
    """The ids of the trials waiting to run again (cut off, or failed with retries left).

    Assumes: `Oracle._retry_queue` is that list (keras-tuner's `create_trial` pops it first).
    """
    return list(oracle._retry_queue)


def keep_finished_trials_finished(oracle) -> list[str]:
    """After a reload: take out of the oracle's retry queue each trial that its own file says
    finished (completed, failed for good, or stopped), and return their ids.

    keras-tuner writes a trial's `trial.json` as the trial ends and `oracle.json` just after; a
    search killed between the two, or whose disk filled up there, left `oracle.json` naming the
    finished trial as still running, and the reload queued it to run again.

    Assumes: `Oracle.reload()` moves every trial that `oracle.json` lists as ongoing into
    `oracle._retry_queue` (trial ids) and reads each trial's status from its `trial.json`.
    """
    finished = {"COMPLETED", "FAILED", "STOPPED"}
    queue = oracle._retry_queue
    kept = [t for t in queue if oracle.trials.get(t) is not None
            and oracle.trials[t].status in finished]
    queue[:] = [t for t in queue if t not in kept]
    return kept


def reload_chief(tuner) -> bool:
    """Reload a distributed search's chief from its project, as keras-tuner reloads a tuner
    that runs trials; returns whether it did.

    keras-tuner reloads a tuner (and with it the oracle) only from the tuner's own file,
    `<tuner id>.json`, which a tuner writes when it ends a trial: a chief runs none, so it never
    wrote one, and a rerun chief started an empty oracle beside the finished trials. Here an
    oracle whose project has `oracle.json` but no `chief.json` is reloaded (the file is
    written once the chief serves: `digits.tuner.distributed.serve`).

    Assumes: the files are `<project>/oracle.json` and `<project>/<tuner id>.json`, and
    `Oracle.reload()` reads the trials and the oracle's state from the project.
    """
    from pathlib import Path

    project = Path(tuner.project_dir)
    if not (project / "oracle.json").is_file() or (project / f"{tuner.tuner_id}.json").is_file():
        return False
    tuner.oracle.reload()
    return True
