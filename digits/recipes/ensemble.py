"""Ensembles: several models trained alike, their probabilities averaged, saved as one model.

`digits.train --ensemble N` trains N members on the same training and validation split, each
from its own seed (its weights, data order, dropout and augmentation), each a run of its own
(`<name>-member<k>/version_<n>`, resumable like any run, and a member that already finished
with the same configuration is reused, so an interrupted ensemble command carries on where it
stopped). The members' best-by-validation models are then joined into one Keras model that
averages their probabilities (the members as nested models and Keras' `Average` layer: no
Lambda, so it loads in safe mode), tested, and saved as `<name>-ensemble/version_<n>/model.keras`
beside a metrics.json holding each member's test result and the ensemble's.

With `--snapshots` the members are instead snapshots of one run whose cosine learning rate
restarts N times (Huang et al. 2017, "Snapshot ensembles"): the last epoch of each cycle
(`digits.callbacks.snapshots.CycleSnapshots`), N members for the price of one run; BENCHMARKS.md
("Training recipes") has which wins.
"""

from __future__ import annotations

from digits.errors import ConfigError


def member_name(name: str, index: int) -> str:
    return f"{name}-member{index}"


def build_ensemble(members: list, name: str = "ensemble"):
    """One Keras model averaging the probabilities of `members` (models of one input shape
    and one output shape).

    Example:
        >>> ensemble = build_ensemble([model_a, model_b])
        >>> ensemble.save("ensemble.keras")         # loads with safe_mode=True
    """
    import keras

    if len(members) < 2:
        raise ConfigError("an ensemble needs at least two members")
    inputs = keras.Input(members[0].input_shape[1:], name="image")
    outputs = []
    for k, member in enumerate(members):
        # A fresh functional wrapper names each member uniquely within the ensemble.
        wrapped = keras.Model(member.input, member.output, name=f"member_{k}")
        outputs.append(wrapped(inputs))
    averaged = keras.layers.Average(name="average", dtype="float32")(outputs)
    return keras.Model(inputs, averaged, name=name)


def finished_member(log_dir, name: str, config: dict):
    """The latest finished run of `name` with this configuration (its model is reused), or
    None."""
    from digits.runs.directory import RunDirectory
    from digits.runs.state import same_configuration

    latest = RunDirectory.latest(log_dir, name)
    if latest is None or not latest.file("model.keras").is_file():
        return None
    finished = (latest.read_json("metrics.json") or {}).get("status") == "finished"
    return latest if finished and same_configuration(latest, config) else None


def _ensemble_config(config: dict, count: int) -> dict:
    """An ensemble's config.json: its command's configuration and its member count, as JSON
    reads it back."""
    import json

    return json.loads(json.dumps({**config, "members": count}))


def finished_ensemble(log_dir, name: str, config: dict, count: int):
    """The latest run of ensemble `name` when it joined and tested `count` members of this
    configuration (its model and metrics written whole), else None."""
    from digits.runs.directory import RunDirectory

    latest = RunDirectory.latest(log_dir, name)
    if latest is None or not latest.file("model.keras").is_file():
        return None
    metrics = latest.read_json("metrics.json") or {}
    finished = metrics.get("status") == "finished" and "test" in metrics \
        and len(metrics.get("members", [])) == count
    same = latest.read_json("config.json") == _ensemble_config(config, count)
    return latest if finished and same else None


def report_finished(run, trainers: list) -> None:
    """Print what a finished ensemble's run holds: each member's and the ensemble's test."""
    metrics = run.read_json("metrics.json")
    for trainer, member in zip(trainers, metrics["members"], strict=True):
        print(f"member {trainer.name} (seed {trainer.seed}): test accuracy "
              f"{member['test']['accuracy']:.4f} (tested before)")
    test = metrics["test"]
    print(f"ensemble of {len(trainers)} was already joined and tested: test accuracy "
          f"{test['accuracy']:.4f} on {test['examples']} images; run directory: {run.path}",
          flush=True)


def save(model, result, member_results: list, log_dir, name: str, config: dict):
    """Write the ensemble's model.keras and metrics.json (each member's test and the
    ensemble's) into a run directory `<log_dir>/<name>/version_<n>`; returns its path.

    The latest version is written again when it holds the same configuration, or none yet
    (a join cut off before it wrote one): rerunning a finished command joins its members
    again into the same directory instead of adding a version each time."""
    from digits.runs.atomic import atomic_path
    from digits.runs.directory import RunDirectory

    wanted = _ensemble_config(config, len(member_results))
    latest = RunDirectory.latest(log_dir, name)
    same = latest is not None and latest.read_json("config.json") in (None, wanted)
    run = latest if same else RunDirectory.create(log_dir, name)
    with atomic_path(run.file("model.keras"), suffix=".keras") as tmp:
        model.save(tmp)
    run.write_json("config.json", wanted)
    run.write_json("metrics.json", {
        "status": "finished",
        "members": [{"test": {"accuracy": r.accuracy, "loss": r.loss}} for r in member_results],
        "test": result.to_dict(),
    })
    return run.path


def train_and_join(count: int, member_trainer, build, data, config: dict, ensemble_name: str,
                   tta: bool = False):
    """Train (or reuse) `count` members and save their average; what `digits.train
    --ensemble` and `digits.tune --final-ensemble` share. `member_trainer(k)` gives member k's
    Trainer (its own name and seed), `build(trainer)` its fresh model. Prints each member's
    report and test accuracy, and the ensemble's; returns the ensemble's `TestResult`. When
    every member and the ensemble itself were finished, joined and tested by an earlier run of
    the same configuration, their stored results are printed instead and None is returned:
    nothing is trained or tested again."""
    from digits.models import load_model

    planned = []
    for k in range(count):
        trainer = member_trainer(k)
        model = build(trainer)
        done = None if trainer.fast_dev_run else finished_member(
            trainer.log_dir, trainer.name, trainer.resolved_config(model, data, config))
        planned.append((trainer, model, done))
    if all(done is not None for _, _, done in planned):
        joined = finished_ensemble(planned[0][0].log_dir, ensemble_name, config, count)
        if joined is not None:
            report_finished(joined, [t for t, _, _ in planned])
            return None
    members, results, trainers = [], [], []
    for k, (trainer, model, done) in enumerate(planned):
        if done is not None:
            print(f"member {k + 1} of {count}: reusing {done.path}", flush=True)
            model = load_model(str(done.file("model.keras")))
            result = trainer.test(model, data, tta=tta)
        else:
            print(f"member {k + 1} of {count} (seed {trainer.seed})", flush=True)
            trainer.fit(model, data, config=config)
            result = trainer.test(trainer.best_model(model), data, tta=tta)
            trainer.print_report(result)
        members.append(model)
        results.append(result)
        trainers.append(trainer)
    labels = [f"{trainer.name} (seed {trainer.seed})" for trainer in trainers]
    return join(members, labels, results, data, config, ensemble_name, trainers[0], tta)


def join(members: list, labels: list[str], results: list, data, config: dict,
         ensemble_name: str, like, tta: bool = False):
    """The model averaging `members`, tested on `data.test` and saved as
    `<log_dir>/<ensemble_name>/version_<n>` (nothing with fast_dev_run), with each member's
    result (`labels` name them) printed beside it; `like` is a member's Trainer (log dir,
    batch size, precision). Returns the ensemble's `TestResult`."""
    import sys

    from digits.engine.trainer import Trainer

    averaged = build_ensemble(members, name="ensemble")
    # A tester of its own: a member's Trainer would write the ensemble's test into its run.
    tester = Trainer(callbacks=[], enable_checkpointing=False, verbose=False,
                     batch_size=like.batch_size, precision=like.precision)
    result = tester.test(averaged, data, tta=tta)
    where = None if like.fast_dev_run else save(averaged, result, results, like.log_dir,
                                                ensemble_name, config)
    print(result.report_text())
    for label, r in zip(labels, results, strict=True):
        print(f"member {label}: test accuracy {r.accuracy:.4f}")
    print(f"ensemble of {len(members)}: test accuracy {result.accuracy:.4f} on "
          f"{len(result.y_true)} images; run directory: {where or '(fast dev run: nothing kept)'}")
    sys.stdout.flush()
    return result
