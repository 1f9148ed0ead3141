"""`python -m digits.train`: train a model, test it, and report.

Example:
    python -m digits.train --dataset mnist-5k --test-dataset mnist-test
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from digits import cli
from digits.engine.config import DEFAULTS
from digits.recipes import data_size

DEFAULT_EPOCHS = DEFAULTS.max_epochs  # up to 21,600 training images; fewer beyond (data_size)
# Fine-tuning (--init-from): fewer epochs at a tenth of the learning rate (see docs/your-digits.md).
FINETUNE_EPOCHS = 10
# Chosen on validation (BENCHMARKS.md, 2026-12-07): the highest rate whose fine-tuning on 30
# other writers forgot at most 0.1 point on 10,000 MNIST digits the model never saw (2e-4:
# 0.11, 1e-4: 0.08, 5e-5: 0.04; the writers' held-out third: 99.2, 98.8, 98.7%).
FINETUNE_LEARNING_RATE = 1e-4


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="digits-train",
        description="Train a digit recognizer, test it, and write TensorBoard logs, the model, "
                    "metrics.json and reports under <log-dir>/<name>/version_<n>/.",
        epilog=data_size.HOW_LONG["train"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE.toml",
                        help="TOML file whose keys mirror these flags; flags override it")
    parser.add_argument("--model", default="cnn", metavar="NAME",
                        help="cnn (default), seed-cnn (the notebook's baseline) or mlp")
    parser.add_argument("--hp", type=cli.hyperparameter, action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a model hyperparameter, e.g. --hp filters=48 (repeatable)")
    parser.add_argument("--name", type=cli.name_type, default=None,
                        help="run name under the log dir (default: the model name)")
    cli.add_data_arguments(parser)
    finetune = parser.add_argument_group("fine-tuning (teach a trained model your handwriting)")
    finetune.add_argument("--init-from", type=cli.non_empty, default=None, metavar="MODEL.keras",
                          help="start from a trained model (its architecture and weights; "
                               "--model and --hp do not apply) and fine-tune it on --dataset: "
                               f"then the defaults are --epochs {FINETUNE_EPOCHS} and "
                               f"--learning-rate {FINETUNE_LEARNING_RATE:g}")
    finetune.add_argument("--replay", type=cli.non_empty, default="mnist-5k", metavar="SPEC",
                          help="with --init-from: a dataset whose training digits are replayed "
                               "beside yours, as many as yours, so the model keeps what it "
                               "knew; none to train on yours alone (default: mnist-5k)")
    cli.add_model_module_argument(finetune)
    cli.add_trainer_arguments(parser, None, data_size.HELP + "; with --init-from: "
                              f"{FINETUNE_EPOCHS}")
    recipes = parser.add_argument_group("recipes (see README, \"Training recipes\")")
    cli.add_tta_argument(recipes)
    recipes.add_argument("--refit", action="store_true",
                        help="after training, train a fresh model on training + validation "
                             "images for the epoch count validation chose (the best epoch), "
                             "and test that one too (<name>-refit/version_<n>)")
    recipes.add_argument("--ensemble", type=cli.ensemble_size, default=1, metavar="N",
                        help="train N models from seeds SEED..SEED+N-1 on the same split and "
                             "save one model averaging their probabilities (default: 1)")
    recipes.add_argument("--snapshots", action="store_true",
                        help="with --ensemble N: the members are the ends of N cosine "
                             "learning-rate cycles of one run (EPOCHS/N epochs each) instead "
                             "of N runs")
    cli.add_callback_arguments(parser)
    # Unset until run() knows whether this is a fine-tuning (its own defaults) or not.
    parser.set_defaults(epochs=None, learning_rate=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit code 0 ok, 1 training failed, 2 bad input, 130 interrupted."""
    return cli.run_main(run, argv)


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = cli.parse_with_config(parser, argv)
    if args.list_callbacks:
        from digits.callbacks.listing import main as list_callbacks

        return list_callbacks([])

    # Everything the user gave is checked before a run directory exists, the cheap checks
    # (no TensorFlow yet) first.
    from digits.callbacks.registry import resolve
    from digits.data import load_dataset
    from digits.errors import DatasetError, ModelError
    from digits.models import model_hyperparameters
    from digits.runs.directory import check_writable_dir

    finetuning = args.init_from is not None
    epochs_given = args.epochs is not None
    if finetuning and not epochs_given:
        args.epochs = FINETUNE_EPOCHS
    if args.learning_rate is None:
        args.learning_rate = FINETUNE_LEARNING_RATE if finetuning else DEFAULTS.learning_rate
    if finetuning:
        from digits.errors import ConfigError

        clashes = [flag for flag, on in (("--hp", args.hp), ("--ensemble", args.ensemble > 1),
                                         ("--snapshots", args.snapshots), ("--refit", args.refit),
                                         ("--find-lr", args.find_lr),
                                         ("--learning-rate auto", args.learning_rate == "auto"))
                   if on]
        if clashes:
            raise ConfigError(f"--init-from fine-tunes the model in the file: {clashes[0]} does "
                              "not apply")
        cli.import_model_modules(args.model_module)
    hyperparameters = dict(args.hp)
    accepted = model_hyperparameters(args.model)  # an unknown model fails before loading data
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ModelError(f"model {args.model!r} has no hyperparameter {', '.join(unknown)}; "
                         f"it takes: {', '.join(accepted) or 'none'} (the seed is --seed)")
    default_name = "finetune" if finetuning else args.model
    if not args.fast_dev_run:
        check_writable_dir(Path(args.log_dir) / (args.name or default_name))
    if finetuning:
        from digits.models import load_model

        initial = load_model(args.init_from)  # a bad model file fails before the data is read
    data = load_dataset(args.dataset, test_dataset=args.test_dataset,
                        validation_split=args.validation_split, seed=args.seed, announce=False,
                        strict=args.strict)
    if data.train is None:
        raise DatasetError(f"dataset {args.dataset!r} has no training data, only a test part")
    if finetuning and args.replay != "none":
        data = with_replay(data, args.replay, args.seed)
    if not epochs_given and not finetuning:  # the default follows the data size
        args.epochs = data_size.default_epochs(len(data.train),
                                               args.ensemble if args.snapshots else 1)
        if why := data_size.describe(len(data.train), args.epochs):
            data = dataclasses.replace(data, notices=(*data.notices, why))
    def fresh_callbacks() -> list:  # a second run (a member, the refit) gets its own
        return resolve(args.callbacks, args.callback, defaults=not args.no_default_callbacks)

    callbacks = fresh_callbacks()
    name = args.name or default_name
    learning_rate = args.learning_rate
    if args.find_lr or learning_rate == "auto":
        learning_rate = None if args.find_lr or args.no_resume \
            else earlier_automatic_rate(args.log_dir, name)
        if learning_rate is None:
            sweeping = make_trainer(args, [], name, DEFAULTS.learning_rate)
            found = find_learning_rate(sweeping, args, data, hyperparameters)
            if args.find_lr:
                return 0
            learning_rate = found.suggestion
        else:
            print(f"learning rate {learning_rate:.2g}, as the unfinished run of this command "
                  "found it", file=sys.stderr, flush=True)
    config = {"command": "train", "dataset": args.dataset, "test_dataset": args.test_dataset,
              "validation_split": args.validation_split,
              **({"learning_rate": "auto"} if args.learning_rate == "auto" else {})}
    if finetuning:
        config.update(init_from=str(Path(args.init_from).resolve()),
                      init_from_sha256=file_sha256(args.init_from),
                      replay=args.replay)
    if args.snapshots:
        data.print_notices()
        return train_snapshot_ensemble(args, data, callbacks, name, learning_rate,
                                       hyperparameters, config)
    if args.ensemble > 1:
        data.print_notices()
        return train_ensemble(args, data, fresh_callbacks, name, learning_rate, hyperparameters,
                              config)
    trainer = make_trainer(args, callbacks, name, learning_rate)
    model = initial if finetuning else trainer.build_model(args.model, **hyperparameters)
    data.print_notices()  # only now: a refused input gets its one `error:` line and nothing else
    trainer.fit(model, data, config=config)
    result = trainer.test(trainer.best_model(model), data, tta=args.tta)
    trainer.print_report(result)
    if args.refit:
        refit(args, data, fresh_callbacks, name, learning_rate, hyperparameters, config, trainer)
    return 0


def with_replay(data, spec: str, seed: int):
    """`data` with as many of `spec`'s training digits as `data` has, stratified and drawn with
    `seed`, added to its training split (validation and test stay the user's own)."""
    import numpy as np

    from digits.data import Split, load_dataset, stratified_split

    replay = load_dataset(spec, seed=seed, announce=False).train
    if replay is None:
        from digits.errors import DatasetError

        raise DatasetError(f"--replay {spec}: it has no training digits")
    if len(data.train) < len(replay):
        # As many as the user's, each class in its share (drawn with `seed`).
        replay = stratified_split(replay, len(data.train) / len(replay), seed)[1]
    notice = (f"fine-tuning on {len(data.train):,} of your digits and {len(replay):,} replayed "
              f"from {spec} (--replay none: yours alone)")
    return dataclasses.replace(
        data, train=Split(np.concatenate([data.train.x, replay.x]),
                          np.concatenate([data.train.y, replay.y])),
        description=f"{data.description}; {len(replay)} digits of {spec} replayed",
        notices=(*data.notices, notice))


def file_sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def refit(args, data, callbacks, name: str, learning_rate: float, hyperparameters: dict,
          config: dict, chosen_by) -> None:
    """`--refit`: a fresh model (same seed and settings) trained on the training and the
    validation images together for the epoch count the first run's validation chose, then
    tested and saved as `<name>-refit/version_<n>/model.keras`. Its validation figures are
    not held out (those images are trained on), so it keeps its last epoch, not a "best"."""
    import numpy as np

    from digits.callbacks.checkpoint import Checkpoint
    from digits.data import Dataset, Split
    from digits.runs.atomic import atomic_path

    best = next((c for c in chosen_by.callbacks if isinstance(c, Checkpoint) and c.best_epoch),
                None)
    epochs = best.best_epoch if best is not None else args.epochs
    # Averaged weights are refit as they were chosen; a best single epoch, without them.
    averaging = {} if best is None or best.best_label is not None else \
        {"swa_epochs": None, "swa_lr": None}
    merged = Dataset(Split(np.concatenate([data.train.x, data.val.x]),
                           np.concatenate([data.train.y, data.val.y])),
                     data.val, data.test, data.name, data.description + "; validation images "
                     "trained on too (refit)")
    trainer = make_trainer(args, [c for c in callbacks() if not isinstance(c, Checkpoint)],
                           f"{name}-refit", learning_rate, epochs=epochs,
                           enable_checkpointing=False, **averaging)
    model = trainer.build_model(args.model, **hyperparameters)
    print(f"refit: {epochs} epoch{'s' * (epochs != 1)} (validation's choice) on {len(merged.train):,} images "
          "(training + validation)", flush=True)
    trainer.fit(model, merged, config={**config, "refit_of": str(chosen_by.run.path)
                                       if chosen_by.run is not None else None})
    if trainer.run is not None and not args.fast_dev_run:
        with atomic_path(trainer.run.file("model.keras"), suffix=".keras") as tmp:
            model.save(tmp)
    trainer.print_report(trainer.test(model, merged, tta=args.tta))


def train_ensemble(args, data, callbacks, name: str, learning_rate: float,
                   hyperparameters: dict, config: dict) -> int:
    """`--ensemble N`: N members (seeds SEED..SEED+N-1, one split), each its own resumable run;
    a member already finished with the same configuration is reused; then the averaging
    model, tested and saved under `<name>-ensemble/version_<n>`."""
    from digits.recipes import ensemble

    def member_trainer(k: int):
        return make_trainer(args, callbacks(), ensemble.member_name(name, k), learning_rate,
                            seed=args.seed + k)

    ensemble.train_and_join(
        args.ensemble, member_trainer, lambda trainer: trainer.build_model(args.model,
                                                                            **hyperparameters),
        data, {**config, "split_seed": args.seed},  # every member trains on this one split
        ensemble_name=f"{name}-ensemble", tta=args.tta)
    return 0


def train_snapshot_ensemble(args, data, callbacks: list, name: str, learning_rate: float,
                            hyperparameters: dict, config: dict) -> int:
    """`--ensemble N --snapshots`: one run whose cosine learning rate restarts N times, a
    snapshot at the end of each cycle; their average tested and saved under
    `<name>-ensemble/version_<n>`."""
    from digits.callbacks.snapshots import CycleSnapshots
    from digits.errors import ConfigError
    from digits.models import load_model
    from digits.recipes import ensemble

    if args.ensemble < 2:
        raise ConfigError("--snapshots needs --ensemble N with N >= 2 (the snapshots to average)")
    snapshots = CycleSnapshots(args.ensemble)
    trainer = make_trainer(args, [*callbacks, snapshots], name, learning_rate,
                           lr_cycles=args.ensemble)
    model = trainer.build_model(args.model, **hyperparameters)
    trainer.fit(model, data, config=config)
    # The snapshots are tested quietly; the ensemble's report is the one printed.
    tester = make_trainer(args, [], name, learning_rate, enable_checkpointing=False,
                          verbose=False, resume=False)
    members, results, labels = [], [], []
    for k in range(1, args.ensemble + 1):
        path = snapshots.path(k) if not trainer.fast_dev_run else None
        member = load_model(str(path)) if path is not None and path.is_file() else model
        members.append(member)
        results.append(tester.test(member, data, tta=args.tta))
        labels.append(f"snapshot {k} (epoch {k * args.epochs // args.ensemble})")
    trainer.finish()
    ensemble.join(members, labels, results, data, config, f"{name}-ensemble", trainer, args.tta)
    return 0


def make_trainer(args, callbacks: list, name: str, learning_rate: float,
                 seed: int | None = None, epochs: int | None = None, **more):
    """The Trainer of this command line: every setting its flags give
    (`cli.settings_from_args`), then what this run changes (`learning_rate`, `seed`,
    `epochs`, `more`)."""
    from digits.engine.trainer import Trainer

    return Trainer(callbacks=callbacks, **{
        "log_dir": args.log_dir, "name": name, "resume": not args.no_resume,
        **cli.settings_from_args(args), "learning_rate": learning_rate,
        **({"seed": seed} if seed is not None else {}),
        **({"max_epochs": epochs} if epochs is not None else {}), **more})


def find_learning_rate(trainer, args, data, hyperparameters: dict):
    """The learning-rate range test on a throwaway model; prints what it found and where."""
    from digits.errors import ConfigError
    from digits.recipes import lr_finder

    found, where = lr_finder.run(trainer, trainer.build_model(args.model, **hyperparameters),
                                 data)
    print(lr_finder.describe(found) + (f"; plot: {where.file('lr_finder.png')}" if where else ""),
          flush=True)
    if found.suggestion is None and not args.find_lr:
        raise ConfigError("the learning-rate range test found no learning rate at which the "
                          "loss fell; give one with --learning-rate")
    return found


def earlier_automatic_rate(log_dir: str, name: str) -> float | None:
    """The learning rate an unfinished `--learning-rate auto` run of this name chose, so that
    the same command resumes it instead of sweeping again (a sweep is not bit-reproducible,
    and a different rate would start a new run)."""
    from digits.runs.directory import RunDirectory

    latest = RunDirectory.latest(log_dir, name)
    if latest is None:
        return None
    config = latest.read_json("config.json") or {}
    metrics = latest.read_json("metrics.json") or {}
    if config.get("learning_rate") != "auto" or metrics.get("status") == "finished":
        return None
    rate = (config.get("trainer") or {}).get("learning_rate")
    return float(rate) if isinstance(rate, (int, float)) else None


if __name__ == "__main__":
    raise SystemExit(main())
