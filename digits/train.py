"""`python -m digits.train`: train a model, test it, and report.

Example:
    python -m digits.train --dataset mnist-5k --test-dataset ../shared/data/mnist
"""

from __future__ import annotations

import sys
from pathlib import Path

from digits import cli

DEFAULT_EPOCHS = 40


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="digits-train",
        description="Train a digit recognizer, test it, and write TensorBoard logs, the model, "
                    "metrics.json and reports under <log-dir>/<name>/version_<n>/.",
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
    cli.add_trainer_arguments(parser, DEFAULT_EPOCHS)
    cli.add_tta_argument(parser)
    cli.add_callback_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit code 0 ok, 1 training failed, 2 bad input, 130 interrupted."""
    return cli.run_main(run, argv)


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = cli.parse_with_config(parser, argv)
    if args.list_callbacks:
        from digits.callbacks import main as list_callbacks

        return list_callbacks([])

    # Everything the user gave is checked before a run directory exists, the cheap checks
    # (no TensorFlow yet) first.
    from callbacks.registry import resolve
    from digits.data import load_dataset
    from digits.errors import DatasetError, ModelError
    from digits.models import model_hyperparameters
    from digits.run_directory import check_writable_dir
    from digits.trainer import Trainer

    hyperparameters = dict(args.hp)
    accepted = model_hyperparameters(args.model)  # an unknown model fails before loading data
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ModelError(f"model {args.model!r} has no hyperparameter {', '.join(unknown)}; "
                         f"it takes: {', '.join(accepted) or 'none'} (the seed is --seed)")
    if not args.fast_dev_run:
        check_writable_dir(Path(args.log_dir) / (args.name or args.model))
    data = load_dataset(args.dataset, test_dataset=args.test_dataset,
                        validation_split=args.validation_split, seed=args.seed, announce=False)
    if data.train is None:
        raise DatasetError(f"dataset {args.dataset!r} has no training data, only a test part")
    callbacks = resolve(args.callbacks, args.callback, defaults=not args.no_default_callbacks)
    trainer = Trainer(
        max_epochs=args.epochs,
        callbacks=callbacks,
        log_dir=args.log_dir,
        name=args.name or args.model,
        seed=args.seed,
        deterministic=args.deterministic,
        batch_size=args.batch_size,
        precision=args.precision,
        strategy=None if args.strategy == "none" else args.strategy,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        label_smoothing=args.label_smoothing,
        ema_decay=args.ema,
        fast_dev_run=args.fast_dev_run,
        limit_train_batches=args.limit_train_batches,
        limit_val_batches=args.limit_val_batches,
        steps_per_execution=args.steps_per_execution,
        profile_batch=args.profile_batch,
        resume=not args.no_resume,
    )
    model = trainer.build_model(args.model, **hyperparameters)
    data.announce()  # only now: a refused input gets its one `error:` line and nothing else
    config = {"command": "train", "dataset": args.dataset, "test_dataset": args.test_dataset,
              "validation_split": args.validation_split}
    trainer.fit(model, data, config=config)
    result = trainer.test(best_model(trainer, model), data, tta=args.tta)
    report(trainer, result)
    return 0


def best_model(trainer, model):
    """The checkpointed best-by-validation model when there is one, else the final weights."""
    from callbacks.checkpoint import Checkpoint

    for c in trainer.callbacks:
        if isinstance(c, Checkpoint) and c.path is not None and c.path.is_file():
            import keras

            best = keras.saving.load_model(c.path, compile=False, safe_mode=True)
            model.set_weights(best.get_weights())
            break
    return model


def report(trainer, result) -> None:
    """Print the run directory, and the test report unless a rich report already showed it."""
    from callbacks.rich_report import RichReport

    if not any(isinstance(c, RichReport) for c in trainer.callbacks):
        print(result.report_text())
    where = trainer.run.path if not trainer.fast_dev_run else "(fast dev run: nothing kept)"
    print(f"test accuracy {result.accuracy:.4f} on {len(result.y_true)} images; "
          f"run directory: {where}")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
