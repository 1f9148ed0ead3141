"""`python -m digits.export`: a trained `.keras` model as a SavedModel, ONNX or LiteRT file.

Through Keras' own `model.export`; int8 (calibrated on training images) and float16 through
LiteRT's converter and ONNX Runtime's quantizer. Every export is checked before it is kept:
the exported file is loaded back and run on a test split beside the `.keras` model, and the
largest difference of their probabilities, both accuracies, the file sizes and the
single-image latency of each are printed (and stored beside the export, where
`digits.serve`'s `/api/model` reads them). `digits.evaluate`, `digits.predict` and
`digits.serve` read the exported files as they read `.keras` ones (`digits.deploy.runtimes`).

Example:
    python -m digits.export --model logs/cnn/version_0/model.keras --format litert --quantize int8
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from digits import cli
from digits.deploy.writers import human_size, latency_ms, write_model

EXPORT_FORMATS = ("saved_model", "onnx", "litert")
QUANTIZATIONS = ("int8", "float16")


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="digits-export",
        description="Export a .keras model for serving: a TensorFlow SavedModel directory, an "
                    "ONNX file (ONNX Runtime) or a LiteRT .tflite file, optionally quantized. "
                    "The export is loaded back and checked against the .keras model on a test "
                    "split before it is kept.",
        epilog="The exported file is read by digits.evaluate, digits.predict and digits.serve "
               "as a .keras model is. Exit status: 0 exported; 2 bad input (nothing written).",
    )
    parser.add_argument("--model", required=True, metavar="PATH", help="a .keras model file")
    cli.add_model_module_argument(parser)
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    parser.add_argument("--output", type=cli.non_empty, default=None, metavar="PATH",
                        help="where to write (default: beside the model: model.onnx, "
                             "model.int8.tflite, model_saved_model/)")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                        help="int8 (weights and activations, calibrated on training images) "
                             "or float16 weights; onnx and litert only")
    parser.add_argument("--dataset", default="auto", metavar="SPEC",
                        help="whose test split checks the export and whose training images "
                             "calibrate int8 (default: auto)")
    parser.add_argument("--test-dataset", default=None, metavar="SPEC",
                        help="check on this dataset's test images instead (e.g. "
                             "mnist-test, the official 10,000)")
    parser.add_argument("--seed", type=cli.seed_int, default=0, metavar="N",
                        help="seed of the split, for datasets without their own test part")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output (default: refuse)")
    parser.add_argument("--json", action="store_true", help="print the check as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit code 0 ok, 2 bad input."""
    return cli.run_main(run, argv)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.import_model_modules(args.model_module)
    from digits.errors import ConfigError

    if args.quantize and args.format == "saved_model":
        raise ConfigError("--quantize applies to onnx and litert; a SavedModel keeps float32")
    output = Path(args.output) if args.output else default_output(args.model, args.format,
                                                                  args.quantize)
    if output.exists() and not args.overwrite:
        raise ConfigError(f"{output} exists; pass --overwrite to replace it, or --output")
    if output.exists() and output.is_dir() != (args.format == "saved_model"):
        raise ConfigError(f"{output} is a {'directory' if output.is_dir() else 'file'}; "
                          f"a {args.format} export is a {'directory' if args.format == 'saved_model' else 'file'}")
    if args.format != "saved_model" and output.suffix != _suffix(args.format):
        raise ConfigError(f"--output {output}: a {args.format} file must end in {_suffix(args.format)}")

    from digits.data import load_dataset
    from digits.deploy.runtimes import KerasRuntime

    source = KerasRuntime(args.model)
    data = load_dataset(args.dataset, test_dataset=args.test_dataset, seed=args.seed,
                        announce=False)
    from digits.errors import DatasetError

    if data.test is None:
        raise DatasetError(f"dataset {args.dataset!r} has no test split")
    if args.quantize == "int8" and data.train is None:
        raise DatasetError(f"dataset {args.dataset!r} has no training images to calibrate int8 "
                           "on; name one with --dataset (and the test images with --test-dataset)")
    data.print_notices()
    report = export(source, args.format, output, quantize=args.quantize, data=data)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def default_output(model: str, fmt: str, quantize: str | None) -> Path:
    """`model.keras` -> `model.onnx`, `model.int8.tflite`, `model_saved_model/`."""
    path = Path(model)
    stem = path.name[: -len(".keras")] if path.name.endswith(".keras") else path.stem
    if fmt == "saved_model":
        return path.with_name(f"{stem}_saved_model")
    return path.with_name(f"{stem}{'.' + quantize if quantize else ''}{_suffix(fmt)}")


def export(source, fmt: str, output: Path, quantize: str | None, data) -> dict:
    """Write `source` (a KerasRuntime) to `output` as `fmt`, check it on `data.test`, keep it.

    Written beside `output` under a temporary name, loaded back and checked there, and only then
    renamed into place (replacing an old export only once the new one is complete).

    A source that computes in bfloat16 is exported, and checked against, as its float32 copy
    (`digits.speed.precision`): exported runtimes (ONNX Runtime, TFLite) have few bfloat16 kernels,
    and the weights are float32 under every policy, so nothing is rounded.
    """
    from digits.deploy.runtimes import load_runtime, sidecar_path
    from digits.speed.precision import float32_copy

    source.model = float32_copy(source.model)

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.export.tmp")
    _remove(staging)
    work = staging if fmt == "saved_model" else staging / output.name
    try:
        if fmt != "saved_model":
            staging.mkdir()
        started = time.perf_counter()
        try:
            write_model(source.model, fmt, work, quantize, data)
        except Exception as e:  # noqa: BLE001 - a converter's failure is the model's, said once
            from digits.deploy.runtimes import first_line
            from digits.errors import ModelError

            raise ModelError(f"{source.path}: cannot export as {fmt}"
                             f"{' ' + quantize if quantize else ''}: {first_line(e)}") from None
        seconds = time.perf_counter() - started
        exported = load_runtime(work)
        report = parity(source, exported, data, fmt=fmt, quantize=quantize)
        report.update(output=str(output), export_seconds=round(seconds, 2))
        exported.path = str(output)
        description = {key: report[key] for key in
                       ("source", "format", "quantize", "dataset", "dataset_description",
                        "examples", "class_names")}
        description["test_accuracy"] = report["exported"]["accuracy"]
        description["source_test_accuracy"] = report["source_model"]["accuracy"]
        description["max_abs_difference"] = report["max_abs_difference"]
        if fmt == "saved_model":
            (work / sidecar_path(work).name).write_text(json.dumps(description, indent=2))
        else:
            sidecar_path(work).write_text(json.dumps(description, indent=2))
        _move_into_place(work, output, fmt)
    finally:
        _remove(staging)
    return report


def parity(source, exported, data, fmt: str, quantize: str | None) -> dict:
    """The exported model against its source on `data.test`: probabilities, accuracy, size,
    single-image latency."""
    import numpy as np

    from digits.engine.results import TestResult

    x, y = data.test.x, data.test.y
    p_source, p_exported = source.predict(x), exported.predict(x)
    ours = TestResult.from_probabilities(y, p_source, data.class_names)
    theirs = TestResult.from_probabilities(y, p_exported, data.class_names)
    return {
        "source": source.path,
        "format": fmt,
        "quantize": quantize,
        "dataset": data.name,
        "dataset_description": data.description,
        "examples": int(len(y)),
        "class_names": list(data.class_names),
        "max_abs_difference": float(np.abs(p_source - p_exported).max()),
        "agreement": float((p_source.argmax(1) == p_exported.argmax(1)).mean()),
        "source_model": {"accuracy": ours.accuracy, "bytes": source.describe()["bytes"],
                         "latency_ms": latency_ms(source, x[:1])},
        "exported": {"accuracy": theirs.accuracy, "bytes": exported.describe()["bytes"],
                     "latency_ms": latency_ms(exported, x[:1])},
    }


def print_report(report: dict) -> None:
    ours, theirs = report["source_model"], report["exported"]
    kind = report["format"] + (f" ({report['quantize']})" if report["quantize"] else "")
    print(f"exported {report['source']} -> {report['output']}: {kind}, "
          f"{report['export_seconds']:.1f} s")
    print(f"checked on {report['examples']:,} test images ({report['dataset_description']}):")
    print(f"  {'':10} {'accuracy':>9} {'size':>10} {'1 image':>9}")
    for name, row in (("keras", ours), (report["format"], theirs)):
        print(f"  {name:10} {row['accuracy']:>9.2%} {human_size(row['bytes']):>10} "
              f"{row['latency_ms']:>7.2f}ms")
    change = (theirs["accuracy"] - ours["accuracy"]) * 100
    print(f"  largest probability difference {report['max_abs_difference']:.2g}, same class for "
          f"{report['agreement']:.2%} of images, accuracy change {change:+.2f} pt")


def _move_into_place(work: Path, output: Path, fmt: str) -> None:
    """Rename the checked export (and its description) onto `output`, the old one last out."""
    import os

    from digits.deploy.runtimes import sidecar_path

    old = output.with_name(f".{output.name}.old.tmp")
    _remove(old)
    if output.exists():
        os.replace(output, old)
    os.replace(work, output)
    if fmt != "saved_model":
        os.replace(sidecar_path(work), sidecar_path(output))
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _suffix(fmt: str) -> str:
    from digits.deploy.runtimes import SUFFIXES

    return SUFFIXES[fmt]


if __name__ == "__main__":
    raise SystemExit(main())
