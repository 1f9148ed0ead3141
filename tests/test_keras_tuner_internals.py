"""Each assumption `tuner/keras_tuner_internals.py` makes about keras-tuner's private parts.

A keras-tuner release that moves one of them fails exactly one of these, naming it.
"""

from __future__ import annotations

import inspect
import json
import threading

import keras_tuner
import pytest

from digits.tuner import keras_tuner_internals as internals


@pytest.fixture
def oracle(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Int("units", 1, 4)
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_loss", "min"), max_trials=2, hyperparameters=hp)
    oracle._set_project_dir(str(tmp_path), "project")
    return oracle


def test_the_debug_flag_is_what_quiets_tracebacks():
    from keras_tuner.src import config

    internals.quiet_trial_tracebacks()
    assert config.DEBUG is False


def test_the_tuner_runs_a_trial_through_try_run_and_update_trial():
    method = keras_tuner.engine.base_tuner.BaseTuner._try_run_and_update_trial
    parameters = list(inspect.signature(method).parameters)
    assert parameters[:2] == ["self", "trial"] and "fit_args" in parameters


def test_the_oracle_servicer_and_its_messages():
    servicer = internals.oracle_servicer()
    assert callable(servicer.CreateTrial) and callable(servicer.EndTrial)
    service, service_grpc = internals.grpc_service()
    assert service.CreateTrialResponse and service.EndTrialResponse
    assert callable(service_grpc.add_OracleServicer_to_server)


def test_trials_go_to_protos_and_back(oracle):
    module = internals.trial_module()
    trial = module.Trial(oracle.get_space(), trial_id="7", status="STOPPED")
    again = module.Trial.from_proto(trial.to_proto())
    assert again.trial_id == "7" and again.status == "STOPPED"
    assert module.TrialStatus.to_proto("RUNNING") is not None


def test_synchronized_runs_under_the_oracles_lock_and_a_kept_lock_is_released(oracle):
    from keras_tuner.src.engine import oracle as oracle_module

    seen = []

    @internals.oracle_synchronized
    def look(o):
        seen.append(oracle_module.THREADS[o])
        return "ran"

    assert look(oracle) == "ran" and seen == [threading.current_thread().name]

    @internals.oracle_synchronized
    def fails(o):
        raise RuntimeError("too many consecutive failures")

    with pytest.raises(RuntimeError):
        fails(oracle)
    internals.release_lock_kept_after_raise(oracle)  # whatever keras-tuner did with the lock
    assert oracle_module.THREADS[oracle] is None
    assert look(oracle) == "ran"  # not deadlocked


def test_save_trial_writes_the_trials_json(oracle, tmp_path):
    trial = oracle.create_trial("tuner0")
    internals.save_trial(oracle, trial)
    assert (tmp_path / "project" / f"trial_{trial.trial_id}" / "trial.json").is_file()


def test_the_failure_count_runs_over_end_order_and_can_skip_trials(oracle):
    oracle.max_consecutive_failed_trials = 2
    oracle.end_order = ["a", "b", "c"]
    oracle.trials = {t: type("T", (), {"status": s, "message": None})()
                     for t, s in zip("abc", ["FAILED", "COMPLETED", "FAILED"], strict=True)}
    oracle._check_consecutive_failures()  # b in between: no two failures in a row
    internals.skip_in_failure_count(oracle, lambda: {"b"})
    with pytest.raises(RuntimeError, match="consecutive failures"):
        oracle._check_consecutive_failures()
    assert oracle.end_order == ["a", "b", "c"]  # restored


def test_epochs_reported_by_the_trial_are_kept_and_the_warning_silenced(oracle, recwarn,
                                                                         tmp_path):
    class Reporting(keras_tuner.engine.base_tuner.BaseTuner):
        def run_trial(self, trial):
            for step, value in enumerate([3.0, 1.0, 2.0]):
                self.oracle.update_trial(trial.trial_id, {"val_loss": value}, step=step)
            return {"val_loss": 2.0}

    # The oracle's own directory (its files stay under tmp_path, not in the working tree).
    tuner = Reporting(oracle=oracle, directory=str(tmp_path), project_name="project")
    trial = oracle.create_trial("tuner0")
    internals.run_and_update_trial(tuner, trial)
    oracle.end_trial(trial)
    history = oracle.trials[trial.trial_id].metrics.get_history("val_loss")
    assert [o.step for o in history] == [0, 1, 2]  # not overwritten by the returned value
    assert oracle.trials[trial.trial_id].score == 1.0 and trial.status == "COMPLETED"
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)
                and "update_trial" in str(w.message)]


def test_the_first_random_point_is_the_spaces_defaults_and_only_once(oracle):
    oracle.hyperparameters.get("units")  # declared in the fixture: Int 1-4, default 1
    oracle.hyperparameters.Choice("act", ["tanh", "relu"], default="relu")
    internals.start_from_defaults(oracle)
    oracle.max_trials = 3
    first = oracle.create_trial("tuner0")
    assert first.hyperparameters.values == {"units": 1, "act": "relu"}
    # Other tuners ask next (one asking again while its trial runs gets the same trial back).
    later = [oracle.create_trial(f"tuner{k}").hyperparameters.values for k in (1, 2)]
    assert {"units": 1, "act": "relu"} not in later  # drawn at random, no repeat of the first


def test_after_the_defaults_come_the_planned_points_then_random_ones(oracle):
    oracle.hyperparameters.Choice("width", [8, 16, 32], default=32)
    oracle.hyperparameters.Fixed("act", "relu")  # a pin: no planned point changes it
    then = ({"width": 16}, {"width": 16, "units": 3}, {"width": 12}, {"act": "tanh"},
            {"width": 8, "units": 9})
    internals.start_from_defaults(oracle, then=then)
    oracle.max_trials = 8
    drawn = [oracle.create_trial(f"tuner{k}").hyperparameters.values for k in range(6)]
    assert drawn[:4] == [
        {"units": 1, "width": 32, "act": "relu"},  # the defaults
        {"units": 1, "width": 16, "act": "relu"},
        {"units": 3, "width": 16, "act": "relu"},
        # width 12 is not in the space and act is pinned: both the defaults again, left out;
        # units 9 is past the range: only width 8 is kept.
        {"units": 1, "width": 8, "act": "relu"},
    ]
    assert len({tuple(sorted(v.items())) for v in drawn}) == 6  # then random, no repeat


def test_run_trial_builds_and_fits_each_execution_through_one_method():
    source = inspect.getsource(keras_tuner.Tuner.run_trial)
    assert "for execution in range(self.executions_per_trial)" in source
    assert "self._build_and_fit_model(trial, *args, **copied_kwargs)" in source


class TinyHyperModel(keras_tuner.HyperModel):
    """A one-unit model whose score is its hyperparameter: trials in milliseconds."""

    def build(self, hp):
        import keras

        hp.Int("units", 1, 4)
        return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

    def fit(self, hp, model, *args, **kwargs):
        return {"val_loss": float(hp.values["units"])}


def test_every_execution_goes_through_fit_execution(tmp_path):
    seen = []

    class Tuner(internals.EachExecution, keras_tuner.RandomSearch):
        def fit_execution(self, trial, fit, *args, **kwargs):
            seen.append(trial.trial_id)
            return fit(*args, **kwargs)

    tuner = Tuner(TinyHyperModel(), objective="val_loss", max_trials=2, executions_per_trial=2,
                  directory=tmp_path, project_name="p")
    tuner.search()
    assert len(seen) == 4 and len(set(seen)) == 2


def test_the_failure_limit_is_a_runtime_error_naming_consecutive_failures(oracle):
    from keras_tuner.src.engine import oracle as oracle_module

    assert "consecutive failures" in inspect.getsource(oracle_module.Oracle._check_consecutive_failures)
    assert internals.is_failure_limit(RuntimeError("Number of consecutive failures exceeded the limit of 3."))
    assert not internals.is_failure_limit(RuntimeError("another problem"))


def test_a_chief_reloads_the_oracle_from_the_projects_files(tmp_path):
    def tuner():
        return keras_tuner.RandomSearch(TinyHyperModel(), objective="val_loss", max_trials=2,
                                        directory=tmp_path, project_name="p")

    tuner().search()
    project = tmp_path / "p"
    assert (project / "oracle.json").is_file() and (project / "tuner0.json").is_file()
    chief = tuner()
    chief.oracle.trials.clear()  # as a chief that found no tuner file of its own starts
    chief.tuner_id = "chief"
    assert internals.reload_chief(chief)
    assert len(chief.oracle.trials) == 2 and not chief.oracle.ongoing_trials
    chief.save()
    assert (project / "chief.json").is_file() and not internals.reload_chief(chief)


def test_state_files_are_written_whole_or_not_at_all(oracle, tmp_path, monkeypatch):
    internals.atomic_state_files()
    internals.atomic_state_files()  # once is enough; twice changes nothing
    oracle.create_trial("tuner0")
    path = tmp_path / "project" / "oracle.json"
    before = path.read_text()
    assert "tuner0" in before  # Oracle.save went through the atomic writer

    from pathlib import Path

    def full_disk(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    oracle.ongoing_trials.clear()
    with pytest.raises(OSError, match="No space left"):
        oracle.save()
    monkeypatch.undo()
    assert path.read_text() == before  # keras-tuner's own writer would have left it empty
    assert [p.name for p in path.parent.iterdir() if ".tmp" in p.name] == []


def test_a_finished_trial_that_the_oracle_still_lists_as_running_is_not_rerun(oracle, tmp_path):
    running = oracle.create_trial("tuner0")
    other = oracle.create_trial("tuner1")
    saved = oracle.get_state()  # as saved before the trial ended
    running.status = "COMPLETED"
    running.score = 0.5
    internals.save_trial(oracle, running)  # the trial's file written, then the search killed
    internals.save_trial(oracle, other)
    from keras_tuner.src import utils

    utils.save_json(str(tmp_path / "project" / "oracle.json"), saved)
    again = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_loss", "min"), max_trials=2,
        hyperparameters=oracle.hyperparameters)
    again._set_project_dir(str(tmp_path), "project")
    again.reload()
    assert sorted(again._retry_queue) == sorted([running.trial_id, other.trial_id])
    assert internals.keep_finished_trials_finished(again) == [running.trial_id]
    assert again._retry_queue == [other.trial_id]
    assert again.create_trial("tuner0").trial_id == other.trial_id


@pytest.mark.parametrize("kind", ["hyperband", "bayesian"])
def test_a_chief_reloads_hyperbands_brackets_and_bayesian_history(tmp_path, kind):
    """What a parallel search's rerun needs of the chief's reload: the oracle's own state
    (Hyperband's brackets, Bayesian optimisation's trials so far), not only the trials."""
    def tuner():
        if kind == "hyperband":
            return keras_tuner.Hyperband(TinyHyperModel(), objective="val_loss", max_epochs=3,
                                         directory=tmp_path, project_name="p", seed=1)
        return keras_tuner.BayesianOptimization(TinyHyperModel(), objective="val_loss",
                                                max_trials=3, directory=tmp_path,
                                                project_name="p", seed=1)

    tuner().search()
    saved = json.loads((tmp_path / "p" / "oracle.json").read_text())
    chief = tuner()
    chief.oracle.trials.clear()
    chief.oracle.set_state({**chief.oracle.get_state(), "ongoing_trials": {}})  # a fresh start
    if kind == "hyperband":
        chief.oracle._brackets = []
    chief.tuner_id = "chief"
    assert internals.reload_chief(chief)
    state = json.loads(json.dumps(chief.oracle.get_state()))
    for key in ("end_order", "seed_state", *(
            ["brackets", "current_iteration"] if kind == "hyperband" else [])):
        assert state[key] == saved[key], key
    # keras-tuner keeps the values it tried as a set: listed in each process's hash order.
    assert sorted(state["tried_so_far"]) == sorted(saved["tried_so_far"])
    assert len(chief.oracle.trials) == len(saved["end_order"])


def test_a_name_under_two_conditions_keeps_the_active_ones_value():
    internals.values_by_name()
    hp = keras_tuner.HyperParameters()
    hp.Choice("optimizer", ["adam", "sgd"])
    for optimizers, low, high in ((["adam"], 1e-4, 1e-2), (["sgd"], 3e-3, 3e-1)):
        with hp.conditional_scope("optimizer", optimizers):
            hp.Float("learning_rate", low, high, sampling="log")
    for values in ({"optimizer": "adam", "learning_rate": 0.001},
                   {"optimizer": "sgd", "learning_rate": 0.05}):
        trial_hp = hp.copy()
        trial_hp.values = dict(values)
        trial_hp.ensure_active_values()
        assert trial_hp.values == values
    # A name none of whose hyperparameters is active is still dropped.
    hp.Choice("extra", [1, 2])
    with hp.conditional_scope("extra", [2]):
        hp.Int("only_with_2", 0, 3)
    trial_hp = hp.copy()
    trial_hp.values = {"optimizer": "adam", "learning_rate": 0.001, "extra": 1, "only_with_2": 3}
    trial_hp.ensure_active_values()
    assert "only_with_2" not in trial_hp.values and trial_hp.values["learning_rate"] == 0.001


def test_conditions_go_to_protos_and_back_without_printing(capsys):
    internals.quiet_condition_protos()
    hp = keras_tuner.HyperParameters()
    parents = {"optimizer": ["sgd"], "batch_norm": [True], "blocks": [2, 3], "rate": [0.5]}
    hp.Choice("optimizer", ["adam", "sgd"])
    hp.Boolean("batch_norm")
    hp.Choice("blocks", [1, 2, 3])
    hp.Choice("rate", [0.25, 0.5])
    for parent, values in parents.items():
        with hp.conditional_scope(parent, values):
            hp.Float(f"under_{parent}", 1e-3, 1e-1, sampling="log")
    capsys.readouterr()
    back = keras_tuner.HyperParameters.from_proto(hp.to_proto())
    assert capsys.readouterr().out == ""  # keras-tuner 1.4 printed "sgd", True, 2, 0.5
    conditions = {h.name: h.conditions for h in back.space}
    assert conditions == {h.name: h.conditions for h in hp.space}
    for parent, values in parents.items():
        [condition] = conditions[f"under_{parent}"]
        assert condition.name == parent and condition.values == values
