"""`python -m digits.tune`: search the CNN's architecture with keras-tuner, retrain the best.

Every trial trains through digits' `Trainer` with the callbacks of the command line, into its
own run under `<directory>/<project>/trial_<id>/`; `tensorboard --logdir <directory>` shows
one run per trial, with the HParams dashboard filled. Then the best hyperparameters go to
`<directory>/<project>/best_hyperparameters.json`, and are retrained, tested and reported as
`digits.train` does, in `<directory>/<project>/best/version_<n>/`.

Rerunning the same command continues the search: finished trials are kept, and a trial that
was cut off is restarted from its last finished epoch. `--overwrite` starts over.

With `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` set, the same
command is the chief or a worker of a distributed search (see docs/distributed.md).

Example:
    python -m digits.tune --dataset mnist-5k --tuner random --max-trials 10 --max-epochs 5
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from digits import cli
from digits.engine.config import DEFAULTS
from digits.recipes import data_size
from digits.tuner import final_choice
from digits.tuner.pruning import PRUNERS, check_pruner
from digits.tuner.space import MODEL, TRAINER_HYPERPARAMETERS, check_pins, space_help

TUNERS = ("hyperband", "random", "bayesian", "grid")
OBJECTIVES = ("val_accuracy", "val_loss", "accuracy", "loss")
DEFAULT_MAX_TRIALS = 10
DEFAULT_MAX_EPOCHS = 4
DEFAULT_FINAL_EPOCHS = DEFAULTS.max_epochs  # as digits.train: fewer beyond 21,600 images
# Three retrained models averaged: on validation (500 images a seed, seeds 0-2) 99.13% and a
# lower loss on every seed, against 98.98% for one of them; official test 99.54% against 99.46%
# (BENCHMARKS.md, 2026-12-05). About 2 minutes more per extra member on 2 cores in bfloat16.
DEFAULT_FINAL_ENSEMBLE = 3
DEFAULT_TOP = 10


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="digits-tune",
        description="Search the CNN's architecture, optimizer and learning rate with keras-tuner "
                    "(every trial trains through digits' Trainer and its callbacks), then retrain "
                    "the best hyperparameters, test them and report, as digits-train does.",
        epilog="search space (pin any of these with --hp NAME=VALUE):\n" + space_help()
               + "\n\ndistributed: set KERASTUNER_TUNER_ID (chief, tuner0, ...), "
                 "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT; see docs/distributed.md"
               + "\n\n" + data_size.HOW_LONG["tune"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE.toml",
                        help="TOML file whose keys mirror these flags; flags override it")
    search = parser.add_argument_group("search")
    search.add_argument("--tuner", choices=TUNERS, default="hyperband",
                        help="the search algorithm (default: hyperband)")
    search.add_argument("--max-trials", type=cli.positive_int, default=None, metavar="N",
                        help=f"trials in all (default: {DEFAULT_MAX_TRIALS}; hyperband: its "
                             "schedule, set by --max-epochs and --factor, capped by this if given)")
    search.add_argument("--max-time", type=cli.duration, default=None, metavar="TIME",
                        help="a time budget, e.g. 20m or 1h30m: no new trial starts once this "
                             "long has passed since the first one started; a running trial "
                             "finishes and is recorded; the final retraining comes after")
    search.add_argument("--pruner", choices=PRUNERS, default="none",
                        help="stop a trial after an epoch when it lags the others: median (below "
                             "the completed trials' median at that epoch) or asha (successive "
                             "halving); random, bayesian and grid searches (default: none)")
    search.add_argument("--pruner-warmup", type=cli.non_negative_int, default=1, metavar="N",
                        help="epochs of each trial the pruner never judges (default: 1)")
    search.add_argument("--max-epochs", type=cli.positive_int, default=DEFAULT_MAX_EPOCHS,
                        metavar="N", help="epochs per trial; hyperband's most epochs for one model "
                                          f"(default: {DEFAULT_MAX_EPOCHS})")
    search.add_argument("--factor", type=cli.number_type(int, 2, 100, label="a whole number >= 2"),
                        default=3, metavar="N",
                        help="hyperband: keep 1/N of the models in each round (default: 3)")
    search.add_argument("--hyperband-iterations", type=cli.positive_int, default=1, metavar="N",
                        help="hyperband: times to run its whole schedule (default: 1)")
    search.add_argument("--executions-per-trial", type=cli.positive_int, default=1, metavar="N",
                        help="trainings per trial from different seeds, averaged (default: 1)")
    search.add_argument("--objective", choices=OBJECTIVES, default=None,
                        help="what the search maximises (accuracy) or minimises (loss) "
                             "(default: val_accuracy)")
    search.add_argument("--objectives", default=None, metavar="LIST",
                        help="a multi-objective search: the objective and what a model costs "
                             "to run, e.g. val_accuracy,latency,size (latency: one image, int8 "
                             "ONNX on one thread; size: that file; params). Each trial measures "
                             "its costs, the space reaches down to small models, and the search "
                             "ends with its Pareto front (a table, pareto.json, pareto.png)")
    search.add_argument("--choose", default=None, metavar="COST<=VALUE",
                        help="with --objectives: retrain the most accurate trial within this, "
                             "e.g. latency<=0.5ms, size<=100KB (KB = 1,024 bytes), params<=50k "
                             "(default: the most accurate trial)")
    search.add_argument("--hp", type=pin, action="append", default=[],
                        metavar="NAME=VALUE",
                        help="pin a hyperparameter instead of searching it, e.g. --hp batch_norm=True "
                             "(repeatable)")
    search.add_argument("--max-model-size", type=cli.positive_int, default=None, metavar="N",
                        help="fail trials whose model has more than N trainable parameters")
    search.add_argument("--max-retries-per-trial", type=cli.non_negative_int, default=0, metavar="N",
                        help="retry a crashed trial up to N times (default: 0)")
    search.add_argument("--max-consecutive-failed-trials", type=cli.positive_int, default=3,
                        metavar="N", help="stop the search after N failed trials in a row "
                                          "(default: 3)")
    search.add_argument("--parallel-trials", type=cli.auto_or_positive_int, default="auto",
                        metavar="N", help="run N trials at a time on this host, each in a worker "
                        "process with its share of the cores (keras-tuner's distributed mode on "
                        "127.0.0.1; this process holds the search); auto: 2 on a CPU with 2 or "
                        "more cores, 1 with a GPU (default: auto)")
    output = parser.add_argument_group("output")
    output.add_argument("--directory", default="logs/tune", metavar="DIR",
                        help="root of all searches (default: logs/tune)")
    output.add_argument("--project", type=cli.name_type, default=None, metavar="NAME",
                        help="the search's name: it lives in <directory>/<project> "
                             "(default: the tuner's name)")
    output.add_argument("--overwrite", action="store_true",
                        help="start the search over instead of continuing it")
    output.add_argument("--top", type=cli.positive_int, default=DEFAULT_TOP, metavar="N",
                        help=f"trials in the summary table (default: {DEFAULT_TOP})")
    output.add_argument("--final-epochs", type=cli.non_negative_int, default=None,
                        metavar="N", help="retrain the best hyperparameters for N epochs, then test "
                                          f"({data_size.HELP}; 0: skip)")
    cli.add_tta_argument(output)
    output.add_argument("--final-ensemble", type=cli.ensemble_size,
                        default=None, metavar="N",
                        help="retrain the best hyperparameters N times (seeds SEED..SEED+N-1) "
                             f"and test the model averaging them (default: {DEFAULT_FINAL_ENSEMBLE}; "
                             "with --choose 1, so that the model costs what was chosen)")
    output.add_argument("--final-compare", type=final_choice.parse, default=final_choice.DEFAULT,
                        metavar="STEPS",
                        help="before the final model, settle at full length on validation what "
                             "2-4-epoch trials cannot: each step retrains a contender (one "
                             "model, or an ensemble's first member; same seed) beside the model "
                             "kept so far and keeps the more accurate (a tie: the one kept). "
                             "default: the hand-picked default architecture, when the search "
                             "picked another (not with --choose); NAME=VALUE: the kept model "
                             "with it. Comma-separated, in order; none: no comparison "
                             f"(default: {final_choice.DEFAULT})")
    # The main job runs on the embedded digits unless told otherwise: "auto" would download
    # the full 60,000 where it can, which makes a default search about 13 times longer.
    cli.add_data_arguments(parser, default_dataset="mnist-5k")
    training = parser.add_argument_group("training (every trial and the final retraining)")
    cli.add_shared_training_arguments(training)
    cli.add_callback_arguments(parser)
    output.add_argument("--trial-console", action="store_true",
                        help="print each trial's model summary, progress and report too "
                             "(default: one line when a trial starts and one when it ends; "
                             "their TensorBoard and file outputs are written either way)")
    return parser


def pin(text: str) -> tuple[str, object]:
    """`NAME=VALUE` for `--hp`: VALUE a Python literal, or a bare word (`optimizer=sgd`)."""
    try:
        return cli.hyperparameter(text)
    except argparse.ArgumentTypeError:
        key, _, raw = text.partition("=")
        if key.isidentifier() and raw.isidentifier():
            return key, raw
        raise


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit code 0 ok, 1 the search or training failed, 2 bad input,
    130 interrupted."""
    return cli.run_main(run, argv)


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = cli.parse_with_config(parser, argv)
    if args.list_callbacks:
        from digits.callbacks.listing import main as list_callbacks

        return list_callbacks([])

    # The cheap checks first, before TensorFlow starts.
    from digits.errors import ConfigError

    _check_swa(args)  # again once the data gives the default --final-epochs
    if args.swa_lr is not None and args.swa is None:
        raise ConfigError("--swa-lr needs --swa EPOCHS")
    _resolve_objectives(args)
    args.final_compare = final_choice.check(args.final_compare)
    from digits.tuner.distributed import (
        local_chief,
        parallel_trials,
        role_from_environment,
        stop_when_chief_dies,
    )

    role = role_from_environment()
    args.parallel_trials = parallel_trials(args.parallel_trials, role)
    if role.kind == "worker":
        stop_when_chief_dies(role.address)
    elif args.parallel_trials > 1:
        with local_chief() as chief:
            return _run_search(args, argv, chief)
    return _run_search(args, argv, role)


def _resolve_objectives(args) -> None:
    """`--objectives` and `--choose` read and checked: `args.objectives` becomes an
    `Objectives` (or None), `args.choose` a `Constraint` (or None), `args.objective` the
    metric either way, `args.final_ensemble` its default (one model for a chosen point)."""
    from digits.errors import ConfigError
    from digits.tuner.pareto import parse_constraint, parse_objectives

    objectives = parse_objectives(args.objectives, OBJECTIVES) if args.objectives else None
    if objectives is not None and args.objective not in (None, objectives.metric):
        raise ConfigError(f"--objective {args.objective} and --objectives {args.objectives} "
                          "disagree: give the objective once, in --objectives")
    args.objective = objectives.metric if objectives else (args.objective or "val_accuracy")
    args.objectives = objectives
    if args.choose is not None and objectives is None:
        raise ConfigError(f"--choose {args.choose} picks from a multi-objective search: add "
                          "--objectives, e.g. --objectives val_accuracy,latency")
    args.choose = parse_constraint(args.choose, objectives) if args.choose else None
    # An ensemble of N costs N times one model: the point --choose picked is one model.
    if args.final_ensemble is None:
        args.final_ensemble = 1 if args.choose else DEFAULT_FINAL_ENSEMBLE
    elif args.choose and args.final_ensemble > 1:
        print(f"notice: --final-ensemble {args.final_ensemble} averages {args.final_ensemble} "
              f"models of the chosen point: about {args.final_ensemble} times its latency, size "
              f"and parameters, beyond {args.choose.text} (--final-ensemble 1 keeps to it)",
              file=sys.stderr, flush=True)


def _run_search(args, argv, role) -> int:
    from digits.runs.directory import check_writable_dir

    check_pruner(args.pruner, args.tuner)
    pins = check_pins(dict(args.hp))
    if role.holds_oracle:  # built by the final retraining only: an error at its end, unless now
        for step in args.final_compare:
            if step.key is not None:
                _check_pinned_values({step.key: step.value})
    project = args.project or args.tuner
    project_dir = Path(args.directory) / project
    check_writable_dir(project_dir)
    from digits.tuner.distributed import started_by_local_chief
    from digits.tuner.project_lock import ProjectLock

    # One process holds the oracle of a project at a time, never beside the workers that an
    # earlier run's --parallel-trials left (a hand-started worker is the user's to manage).
    lock = ProjectLock(Path(args.directory), project)
    if role.holds_oracle:
        lock.hold_oracle()
    elif started_by_local_chief():
        lock.hold_worker(role.tuner_id)
    try:
        return _run_project(args, argv, role, pins, project, project_dir)
    finally:
        lock.release()


def _run_project(args, argv, role, pins: dict, project: str, project_dir: Path) -> int:
    max_trials = args.max_trials or (None if args.tuner == "hyperband" else DEFAULT_MAX_TRIALS)

    # Every trial builds a new model, so TensorFlow's "retracing" notices are expected noise.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from digits.speed.precision import resolve_precision

    # The search records the policy its trials compute in, not "auto".
    args.precision = resolve_precision(args.precision)
    from digits.callbacks.registry import resolve
    from digits.data import load_dataset
    from digits.errors import DatasetError
    from digits.tuner.hypermodel import DigitsHyperModel
    from digits.tuner.keras_tuner_internals import quiet_trial_tracebacks
    from digits.tuner.live import make_display
    from digits.tuner.search import objective_direction, planned_trials

    def run_callbacks() -> list:
        return resolve(args.callbacks, args.callback, defaults=not args.no_default_callbacks)

    def trial_callbacks() -> list:
        """A trial's callbacks: the console ones only with --trial-console, so that the
        search's own lines (trial started, trial ended) are what a search prints."""
        chosen = run_callbacks()
        return chosen if args.trial_console else [
            c for c in chosen if not getattr(c, "console_only", False)]

    run_callbacks()  # a bad callback spec fails here, before any data is loaded
    quiet_trial_tracebacks()
    _check_pinned_values(pins)
    data = load_dataset(args.dataset, test_dataset=args.test_dataset,
                        validation_split=args.validation_split, seed=args.seed,
                        strict=args.strict)
    if data.train is None:
        raise DatasetError(f"dataset {args.dataset!r} has no training data, only a test part")
    if args.final_epochs is None:  # the default follows the data size, as digits.train's
        args.final_epochs = data_size.default_epochs(len(data.train))
        _check_swa(args)
        if role.holds_oracle and (why := data_size.describe(len(data.train), args.final_epochs,
                                                            "--final-epochs")):
            print(why, file=sys.stderr, flush=True)

    # Every trial trains with the settings the flags give, but stochastic weight averaging
    # (trials are too short to average) and distillation: they are the final retraining's.
    trainer_options = {k: v for k, v in cli.settings_from_args(args).items()
                       if k not in ("seed", "swa_epochs", "swa_lr", "distill_from")}
    hypermodel = DigitsHyperModel(callbacks=trial_callbacks, trainer_options=trainer_options,
                                  seed=args.seed, max_epochs=args.max_epochs,
                                  log_dir=args.directory,
                                  costs=frozenset(args.objectives.costs) if args.objectives
                                  else frozenset())
    planned = planned_trials(args.tuner, max_trials, args.max_epochs, args.factor,
                             args.hyperband_iterations)
    # The live view on a terminal, for the process that holds the search; a trial's own console
    # output (--trial-console) and the workers' lines print as lines instead.
    display = make_display(args.objective, planned, live=role.holds_oracle and not args.trial_console,
                           max_seconds=args.max_time, max_epochs=args.max_epochs,
                           maximise=objective_direction(args.objective) == "max")
    settings = _search_settings(args, pins)
    overwrite = args.overwrite and role.holds_oracle  # a worker never deletes the chief's files
    if role.holds_oracle and not overwrite:
        from digits.tuner.search import check_settings

        check_settings(project_dir, settings)
    tuner = _make_tuner(args, hypermodel, project, max_trials, pins, overwrite, display, role)
    # A rerun of a search whose trials have all ended goes straight to its summary and final
    # retraining: no worker is started only to hear that there is nothing to run.
    from digits.tuner.search import search_is_over

    over = role.kind == "chief" and search_is_over(tuner.oracle, planned)
    if role.holds_oracle:
        _print_search_start(args, tuner, role, display, project_dir, planned, settings, over)
    else:
        display.line(f"worker {role.tuner_id}: asking the chief at {role.address} for trials")
    workers = None
    if role.kind == "chief" and args.parallel_trials > 1 and not over:
        from digits.tuner.distributed import (
            TRIALS_PER_PROCESS,
            LocalWorkers,
            trials_per_process,
            worker_argv,
        )

        workers = LocalWorkers(args.parallel_trials, worker_argv(argv),
                               port=int(role.address.rsplit(":", 1)[1]),
                               log_dir=project_dir / "workers",
                               trials_per_process=trials_per_process() or TRIALS_PER_PROCESS,
                               say=display.line)
        display.line(f"running {args.parallel_trials} trials at a time, each worker with "
                     f"{workers.threads} TensorFlow thread(s); their logs in {workers.log_dir}")
    try:
        return _search(args, tuner, display, role, project_dir, data, run_callbacks, workers,
                       serve_trials=not over)
    finally:
        if workers is not None:
            workers.stop()


def _search(args, tuner, display, role, project_dir: Path, data, run_callbacks,
            workers=None, serve_trials: bool = True) -> int:
    """Run this process's part of the search, then (the chief, or a lone search) sum it up
    and retrain the best; the command's exit code. A chief with `serve_trials=False` (every
    trial has ended) serves none."""
    from digits.tuner.distributed import SearchStopped

    try:
        with display.session():
            if role.kind == "chief" and not serve_trials:
                pass
            elif role.kind == "chief":
                from digits.tuner.distributed import serve

                serve(tuner, display, role.address,
                      watch=workers.check if workers is not None else None)
            else:
                from digits.tuner.distributed import trials_per_process

                finished = tuner.run_search(data, epochs=args.max_epochs, max_trials=(
                    trials_per_process() if role.kind == "worker" else None))
                if not finished:
                    from digits.tuner.distributed import EXIT_RECYCLE

                    display.line(f"worker {role.tuner_id}: ran its share of trials; the chief "
                                 "starts it afresh (TensorFlow keeps each trial's graph)")
                    return EXIT_RECYCLE
    except SearchStopped as e:
        _summarize(args, tuner, display, project_dir)
        print(f"error: the search stopped: {e} (--max-consecutive-failed-trials "
              f"{args.max_consecutive_failed_trials}); fix the cause, then rerun with "
              "--overwrite", file=sys.stderr)
        return cli.EXIT_FAILURE

    if role.kind == "worker":
        display.line(f"worker {role.tuner_id}: the chief has no more trials; done")
        return 0
    record = _summarize(args, tuner, display, project_dir)
    if record is None:
        print("error: no trial completed, so there are no best hyperparameters",
              file=sys.stderr)
        return cli.EXIT_FAILURE
    if args.final_epochs:
        retrain_best(args, data, record, project_dir, run_callbacks)
    return 0


def _check_swa(args) -> None:
    from digits.errors import ConfigError

    if args.swa is not None and args.final_epochs is not None and args.swa > args.final_epochs:
        raise ConfigError(f"--swa {args.swa} averages the final retraining's last epochs: at "
                          f"most --final-epochs ({args.final_epochs})")


def _make_tuner(args, hypermodel, project, max_trials, pins, overwrite, display, role):
    from digits.errors import ConfigError
    from digits.tuner.search import make_tuner
    from digits.tuner.space import SMALL_LADDER

    try:
        return make_tuner(
            args.tuner, hypermodel, directory=args.directory, project=project,
            objective=args.objective, max_trials=max_trials, max_epochs=args.max_epochs,
            factor=args.factor, hyperband_iterations=args.hyperband_iterations, seed=args.seed,
            executions_per_trial=args.executions_per_trial, overwrite=overwrite, pins=pins,
            max_retries_per_trial=args.max_retries_per_trial,
            max_consecutive_failed_trials=args.max_consecutive_failed_trials,
            max_model_size=args.max_model_size, display=display, role=role,
            max_seconds=args.max_time, pruner=args.pruner, pruner_warmup=args.pruner_warmup,
            # With cost objectives, the default scaled down comes right after the default.
            first_points=SMALL_LADDER if args.objectives else ())
    except RuntimeError as e:
        # keras-tuner cannot reload a project made by another kind of search.
        raise ConfigError(f"cannot continue the search in {Path(args.directory) / project}: "
                          f"{str(e).splitlines()[0]}; rerun with --overwrite to start over, or "
                          "pick another --project") from None


def _search_settings(args, pins: dict) -> dict:
    """What defines a search: rerunning with other values of these is refused."""
    return {
        "tuner": args.tuner, "objective": args.objective, "model": MODEL,
        "dataset": args.dataset, "test_dataset": args.test_dataset,
        "validation_split": args.validation_split, "seed": args.seed, "pins": pins,
        "max_epochs": args.max_epochs,
        "factor": args.factor if args.tuner == "hyperband" else None,
        "hyperband_iterations": args.hyperband_iterations if args.tuner == "hyperband" else None,
        "executions_per_trial": args.executions_per_trial, "batch_size": args.batch_size,
        "limit_train_batches": args.limit_train_batches,
        "limit_val_batches": args.limit_val_batches, "precision": args.precision,
        "label_smoothing": args.label_smoothing, "max_model_size": args.max_model_size,
        **({"ema_decay": args.ema} if args.ema is not None else {}),
        # Absent from searches made before these existed, which is the same as none.
        **({"objectives": list(args.objectives.names)} if args.objectives else {}),
        **({"pruner": args.pruner, "pruner_warmup": args.pruner_warmup}
           if args.pruner != "none" else {}),
    }


def _check_pinned_values(pins: dict) -> None:
    """Build the pinned architecture values once and check the pinned optimizer settings, so a
    value out of range is an input error now rather than a failed trial later."""
    from digits.engine.trainer import Trainer
    from digits.models import build_model

    model_pins = {k: v for k, v in pins.items() if k not in TRAINER_HYPERPARAMETERS}
    if model_pins:
        build_model(MODEL, **model_pins)
    trainer_pins = {k: v for k, v in pins.items() if k in TRAINER_HYPERPARAMETERS}
    if trainer_pins:
        Trainer(callbacks=[], **trainer_pins)


def _print_search_start(args, tuner, role, display, project_dir, planned, settings,
                        over: bool = False) -> None:
    from digits.tuner.display import plural
    from digits.tuner.search import objective_direction, reload_report, write_settings

    write_settings(project_dir, settings)
    how = f"{plural(planned, 'trial')} planned" if planned else "trials until the space is exhausted"
    direction = objective_direction(args.objective)
    display.line(f"search: {args.tuner} over the CNN's architecture, optimizer and learning rate; "
                 f"objective {args.objective} ({direction}); {how}; in {project_dir}")
    report = reload_report(tuner.oracle)
    if report["completed"] or report["failed"] or report["restarted"]:
        from digits.tuner.pruning import read_pruned

        pruned = len(set(read_pruned(project_dir)) & set(report["completed"]))
        parts = [f"{plural(len(report['completed']), 'finished trial')} reloaded, not rerun"
                 + (f" ({pruned} pruned)" if pruned else "")]
        if report["failed"]:
            parts.append(f"{plural(len(report['failed']), 'failed trial')} kept as failed")
        if report["restarted"]:
            parts.append(f"trial {', '.join(report['restarted'])} was cut off (running or "
                         "crashed): keras-tuner restarts it, and it resumes from its last "
                         "finished epoch")
        display.line("resumed: " + "; ".join(parts), style="yellow")
    if role.kind == "chief" and over:
        display.line("chief: every planned trial has ended; no workers are started")
    elif role.kind == "chief":
        display.line("chief: holds the search and runs no trials itself; the workers run them")


def _summarize(args, tuner, display, project_dir) -> dict | None:
    """The table of the best trials, failed trials, and best_hyperparameters.json."""
    from digits.tuner.display import format_values
    from digits.tuner.search import (
        best_record,
        failed_trials,
        trial_rows,
        write_best_hyperparameters,
    )
    from digits.tuner.space import search_space

    oracle = tuner.oracle
    rows = trial_rows(oracle, project_dir, top=args.top)
    completed = len(trial_rows(oracle, project_dir))
    pins = dict(args.hp)
    if rows:
        pinned = f"; pinned: {format_values(pins)}" if pins else ""
        names = [d.name for d in search_space(small=args.objectives is not None)]
        display.summary_table(rows, [name for name in names if name not in pins],
                              f"best {len(rows)} of {completed} completed trials by "
                              f"{args.objective} ({project_dir}){pinned}")
    for trial_id, reason in failed_trials(oracle, project_dir):
        display.line(f"trial {trial_id} failed: {reason}", style="red")
    _what_mattered(args, oracle, display, project_dir, pins)
    chosen = _pareto(args, oracle, display, project_dir) if args.objectives else None
    record = best_record(oracle, project_dir, args.tuner, trial_id=chosen,
                         chosen_by=args.choose.text if args.choose else None)
    if record is None:
        return None
    path = write_best_hyperparameters(project_dir, record)
    how = f"chosen ({args.choose.text})" if args.choose else "best"
    display.line(f"{how}: trial {record['trial_id']}, {args.objective} {record['score']:.4f}: "
                 f"{format_values(record['hyperparameters'])}", style="bold")
    display.line(f"best hyperparameters written to {path}; by hand: {record['train_command']}")
    return record


def _pareto(args, oracle, display, project_dir: Path) -> str | None:
    """The Pareto front of a multi-objective search: printed, `pareto.json`, `pareto.png` and
    TensorBoard (`<project>/search`); the id of the trial `--choose` picks (None without it).
    A constraint no trial meets is an input error (the search is kept: rerun with another)."""
    from digits.deploy.costs import LATENCY_CALLS
    from digits.errors import ConfigError
    from digits.runs.atomic import atomic_write_bytes, atomic_write_json
    from digits.tuner.pareto import choose, describe, front, pareto_png
    from digits.tuner.search import objective_direction, trial_rows

    objectives = args.objectives
    maximise = objective_direction(objectives.metric) == "max"
    # A pruned trial's score is where it was stopped, not what it would have reached.
    points = [{"trial_id": r["trial_id"], objectives.metric: r["score"],
               **{c: r["costs"][c] for c in objectives.costs if c in r["costs"]},
               "hyperparameters": r["values"]}
              for r in trial_rows(oracle, project_dir) if not r["pruned"]]
    kept = front(points, objectives, maximise)
    chosen = choose(points, objectives, args.choose, maximise) if args.choose else None
    display.line(f"Pareto front ({objectives.metric} against "
                 f"{', '.join(objectives.costs)}): {len(kept)} of {len(points)} trials",
                 style="bold")
    for p in kept:
        costs = "  ".join(f"{c} {describe(c, p[c])}" for c in objectives.costs)
        mark = "  <- chosen" if chosen is not None and p["trial_id"] == chosen["trial_id"] else ""
        display.line(f"  trial {p['trial_id']}  {objectives.metric} "
                     f"{p[objectives.metric]:.4f}  {costs}{mark}")
    atomic_write_json(project_dir / "pareto.json", {
        "objectives": list(objectives.names),
        "directions": {objectives.metric: "max" if maximise else "min",
                       **{c: "min" for c in objectives.costs}},
        "costs_measured_as": {"latency": "milliseconds, one image, int8 ONNX Runtime on one "
                                         f"thread, median of {LATENCY_CALLS} calls",
                              "size": "bytes of the int8 ONNX file", "params": "parameters"},
        "front": [p["trial_id"] for p in kept],
        "constraint": args.choose.text if args.choose else None,
        "chosen": chosen["trial_id"] if chosen else None,
        "trials": [{**p, "on_front": p in kept} for p in points],
    })
    picture = pareto_png(points, kept, objectives, maximise, chosen)
    atomic_write_bytes(project_dir / "pareto.png", picture)
    import tensorflow as tf

    table = [f"| trial | {objectives.metric} | " + " | ".join(objectives.costs) + " |",
             "|---" * (2 + len(objectives.costs)) + "|"]
    table += [f"| {p['trial_id']} | {p[objectives.metric]:.4f} | "
              + " | ".join(describe(c, p[c]) for c in objectives.costs) + " |" for p in kept]
    writer = tf.summary.create_file_writer(str(project_dir / "search"))
    with writer.as_default():
        tf.summary.text("search/pareto_front", "\n".join(table), step=0)
        tf.summary.image("search/pareto", tf.io.decode_png(picture, channels=3)[None], step=0)
    writer.close()
    if args.choose is None:
        return None
    if chosen is None:
        cheapest = min(kept, key=lambda p: p[args.choose.cost], default=None)
        least = (f"; the least on the front: {describe(args.choose.cost, cheapest[args.choose.cost])}"
                 f" (trial {cheapest['trial_id']})" if cheapest else "")
        raise ConfigError(f"--choose {args.choose.text}: no completed trial is within it{least}; "
                          "rerun with another --choose (the search is kept)")
    return chosen["trial_id"]


def _what_mattered(args, oracle, display, project_dir: Path, pins: dict) -> None:
    """What mattered (each hyperparameter's share, fANOVA on a random forest: a console line
    and TensorBoard text) and `search_history.png` (each trial's score, the best so far and
    what mattered)."""
    from digits.runs.atomic import atomic_write_bytes
    from digits.tuner.importance import history_png, importance, importance_text
    from digits.tuner.search import objective_direction, trial_rows

    rows = trial_rows(oracle, project_dir)
    if not rows:
        return
    # A pruned trial's score is where it was stopped, not what it would have reached.
    unpruned = [r for r in rows if not r["pruned"]]
    # Hyperband's trials train for different budgets: a factor of its own, so that the longer
    # trials' higher scores are not credited to the hyperparameters promoted to them.
    budgets = len({r["epochs"] for r in unpruned}) > 1
    values = [({**{k: v for k, v in r["values"].items() if k not in pins},
                **({"(trial epochs)": r["epochs"]} if budgets else {})}, r["score"])
              for r in unpruned]
    found = importance(values)
    display.line(found.line())
    order = sorted((int(r["trial_id"]) + 1, r["score"]) for r in rows)
    maximise = objective_direction(args.objective) == "max"
    atomic_write_bytes(project_dir / "search_history.png",
                       history_png(order, args.objective, maximise, found))
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(project_dir / "search"))
    with writer.as_default():
        tf.summary.text("search/what_mattered", importance_text(found), step=0)
    writer.close()


def retrain_best(args, data, record: dict, project_dir: Path, run_callbacks) -> None:
    """Retrain the best hyperparameters for --final-epochs, test and report as digits.train does.

    The final model trains on the same training split the trials trained on, and is checked
    on the same validation split every epoch, so its validation curves, best-epoch checkpoint
    and early stopping mean what they mean in `digits.train`; the test split stays unseen by
    the search and by the retraining. It lands in `<project>/best/version_<n>/`. When the
    latest such run already trained and tested these hyperparameters, it is reported instead
    of trained again.

    `--final-compare` (default: the hand-picked default, then augmentation off) first retrains
    contenders beside it (`<project>/best-default/`, `best-augment0/`, ...; of an ensemble, the
    first member) and keeps the more accurate on validation at each step
    (`digits.tuner.final_choice`, `final_choice.json`): the final model, or the ensemble's other
    members, are the kept one's.
    """
    from digits.callbacks.hparams import HParams, with_hparams
    from digits.engine.trainer import Trainer
    from digits.models import load_model
    from digits.recipes import ensemble
    from digits.runs.directory import RunDirectory
    from digits.tuner.display import format_values, plural

    values = dict(record["hyperparameters"])
    config = {"command": "tune", "dataset": args.dataset, "test_dataset": args.test_dataset,
              "validation_split": args.validation_split}
    if args.final_ensemble > 1:
        config["split_seed"] = args.seed

    def final_of(values: dict) -> dict:
        return {"best_trial": record["trial_id"], "hyperparameters": values,
                "epochs": args.final_epochs,
                **({"swa_epochs": args.swa, "swa_lr": args.swa_lr} if args.swa else {}),
                **({"distill_from": args.distill_from} if args.distill_from else {})}

    def final_trainer(values: dict, name: str, member: int | None = None):
        return Trainer(
            callbacks=with_hparams(run_callbacks(), HParams(values, group=name)),
            log_dir=project_dir,
            name=name if member is None else ensemble.member_name(name, member),
            resume=True,
            **{**cli.settings_from_args(args), "max_epochs": args.final_epochs,
               "seed": args.seed + (member or 0), "optimizer": values["optimizer"],
               "learning_rate": float(values["learning_rate"])},
        )

    def build(trainer, values: dict):
        return trainer.build_model(MODEL, **{k: v for k, v in values.items()
                                             if k not in TRAINER_HYPERPARAMETERS})

    members = f", {args.final_ensemble} times (an ensemble)" if args.final_ensemble > 1 else ""
    which = "chosen" if record.get("chosen_by") else "best"
    steps = _final_steps(args, data)
    pins, choose = dict(args.hp), args.choose is not None
    said = [s.text for s in steps if s.contender(values, pins, choose) is not None]
    compare = f", first compared at full length on validation with {' then '.join(said)}" \
        if said else ""
    print(f"retraining the {which} hyperparameters (trial {record['trial_id']}) for "
          f"{plural(args.final_epochs, 'epoch')}{members} on the same training split"
          f"{compare}, then testing", flush=True)
    member = 0 if args.final_ensemble > 1 else None

    def candidate(name: str, hyper: dict) -> dict:
        """Train (or reuse, when an earlier run finished it) one candidate; validate it."""
        trainer = final_trainer(hyper, name, member)
        model = build(trainer, hyper)
        run_config = {**config, "tune_final": final_of(hyper)}
        done = ensemble.finished_member(trainer.log_dir, trainer.name,
                                        trainer.resolved_config(model, data, run_config))
        if done is not None:
            model = load_model(str(done.file("model.keras")))
        else:
            print(f"{trainer.name}: {format_values(_differences(hyper, values)) or 'as searched'}",
                  flush=True)
            trainer.fit(model, data, config=run_config)
            model = trainer.best_model(model)
        tester = Trainer(callbacks=[], enable_checkpointing=False, verbose=False,
                         batch_size=trainer.batch_size, precision=trainer.precision)
        return {"run": trainer.name, "validation": tester.validate(model, data, tta=args.tta),
                "fitted": None if done is not None else (trainer, model)}

    fitted = None
    name, kept, candidates = final_choice.compare(
        steps, values, candidate, pins=pins, choose=choose,
        epochs=args.final_epochs, tta=args.tta, project_dir=project_dir)
    for c in candidates:
        if c["fitted"] is None:
            continue
        trainer, model = c["fitted"]
        if c["name"] != name:
            trainer.finish()  # kept as it is, for a rerun to reuse; never tested
        elif member is None:
            fitted = c["fitted"]
        else:  # the ensemble's first member: tested as the others will be
            trainer.print_report(trainer.test(model, data, tta=args.tta))
    values = kept
    config = {**config, "tune_final": final_of(values)}
    if args.final_ensemble > 1:
        ensemble.train_and_join(args.final_ensemble, lambda k: final_trainer(values, name, k),
                                lambda trainer: build(trainer, values), data, config,
                                ensemble_name="best-ensemble", tta=args.tta)
        return
    latest = RunDirectory.latest(project_dir, name)
    if latest is not None:
        metrics = latest.read_json("metrics.json") or {}
        if metrics.get("status") == "finished" and "test" in metrics \
                and (latest.read_json("config.json") or {}).get("tune_final") \
                == json.loads(json.dumps(config["tune_final"])):
            print(f"the {which} hyperparameters were already retrained and tested: test accuracy "
                  f"{metrics['test']['accuracy']:.4f}; run directory: {latest.path}")
            return
    trainer, model = fitted or (None, None)
    if trainer is None:
        trainer = final_trainer(values, name)
        model = build(trainer, values)
        trainer.fit(model, data, config=config)
        model = trainer.best_model(model)
    result = trainer.test(model, data, tta=args.tta)
    trainer.print_report(result)


def _final_steps(args, data) -> tuple:
    """--final-compare's steps, none where there is no validation split to decide on."""
    if args.final_compare and (data.val is None or not len(data.val)):
        print("notice: no validation split, so --final-compare has nothing to decide on: the "
              "search's hyperparameters are retrained alone", file=sys.stderr)
        return ()
    return args.final_compare


def _differences(values: dict, searched: dict) -> dict:
    """What a candidate changes in the search's hyperparameters."""
    return {k: v for k, v in values.items() if searched.get(k) != v}


if __name__ == "__main__":
    raise SystemExit(main())
