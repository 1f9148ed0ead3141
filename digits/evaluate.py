"""`python -m digits.evaluate`: report a saved model on a dataset's test split.

Example:
    python -m digits.evaluate --model logs/cnn/version_0/model.keras --dataset mnist-test
"""

from __future__ import annotations

import json

from digits import cli


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="digits-evaluate",
        description="Report accuracy, the confusion matrix and the classification report of a "
                    "saved model on a dataset's test split: a .keras file (Keras safe mode on) "
                    "or its export by digits.export (SavedModel directory, .onnx, .tflite).",
    )
    cli.add_saved_model_argument(parser)
    cli.add_model_module_argument(parser)
    parser.add_argument("--dataset", default="auto", metavar="SPEC",
                        help="dataset whose test split to use: mnist-5k (its held-out part), "
                             "mnist, fashion-mnist, a directory of IDX files, an .npz "
                             "(default: auto)")
    parser.add_argument("--seed", type=cli.seed_int, default=0, metavar="N",
                        help="seed of the split, for datasets without their own test part")
    parser.add_argument("--batch-size", type=cli.batch_int, default=512, metavar="N")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    cli.add_tta_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit code 0 ok, 2 bad input."""
    return cli.run_main(run, argv)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.import_model_modules(args.model_module)
    from digits.data import load_dataset
    from digits.deploy.runtimes import KerasRuntime, load_runtime

    runtime = load_runtime(args.model)
    data = load_dataset(args.dataset, seed=args.seed, announce=False)
    if data.test is None:
        from digits.errors import DatasetError

        raise DatasetError(f"dataset {args.dataset!r} has no test split")
    data.print_notices()
    if isinstance(runtime, KerasRuntime):
        from digits.engine.trainer import Trainer

        trainer = Trainer(callbacks=[], batch_size=args.batch_size, enable_checkpointing=False,
                          verbose=False)
        result = trainer.test(runtime.model, data, tta=args.tta)
    else:
        from digits.engine.results import TestResult

        runtime.batch_size = args.batch_size
        runtime.tta = args.tta
        result = TestResult.from_probabilities(data.test.y, runtime.predict(data.test.x),
                                               data.class_names)
    if args.json:
        print(json.dumps({"model": args.model, "format": runtime.format,
                          "dataset": data.summary(), **result.to_dict()}, indent=2))
    else:
        from digits.callbacks.rich_report import print_report

        print_report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
