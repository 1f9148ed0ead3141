"""`python -m digits.predict`: read the digits in your own images, whole numbers included.

Photos of paper, scans, screenshots; dark ink on light paper or light on dark; one digit or
several written in a row, read left to right. Each image is prepared as MNIST was made
(`digits.reading.images`), read by the model (`digits.reading`), and can be shown as the model saw it
(`--explain`).

Example:
    python -m digits.predict --model logs/cnn/version_0/model.keras photo.jpg house.png --json
"""

from __future__ import annotations

import json
import sys

from digits import cli

# Images are found and read this many at a time: one or two model calls per chunk, and never
# more than a chunk's working images in memory (under 0.8 MB each), however many files are named.
CHUNK = 128


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="digits-predict",
        description="Read the digits in each image (PNG, JPEG, BMP, GIF, TIFF, WEBP; any size): "
                    "one digit or a number written in a row, read left to right. Uneven light "
                    "is flattened, the ink found and each digit prepared as MNIST was made.",
        epilog="Exit status: 0 when every image was read; 2 when an image could not be read "
               "or held no digit (each named on stderr; the others are still read and "
               "printed, and in --json such an image has an \"error\" entry in its place).",
    )
    cli.add_saved_model_argument(parser)
    cli.add_model_module_argument(parser)
    parser.add_argument("--json", action="store_true",
                        help="print JSON: per image its text, and per digit the digit, "
                             "probability, top 3, box [x, y, width, height] and uncertain")
    cli.add_min_probability_argument(parser)
    cli.add_tta_argument(parser)
    parser.add_argument("--explain", type=cli.non_empty, default=None, metavar="DIR",
                        help="write DIR/<image>.explain.png per image: the boxes and readings "
                             "on the image, beside the 28x28 inputs the model saw")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit code 0 ok, 2 bad input."""
    return cli.run_main(run, argv)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.import_model_modules(args.model_module)
    from digits.errors import ImageError
    from digits.reading.images import find_digits_in_file

    explain_dir = _explain_directory(args.explain) if args.explain else None
    reader, entries, failed, taken = None, [], 0, set()
    for start in range(0, len(args.images), CHUNK):
        chunk, found, errors = args.images[start: start + CHUNK], [], {}
        for path in chunk:
            try:
                found.append((path, find_digits_in_file(path)))
            except ImageError as e:
                errors[path] = str(e)
        if reader is None and found:
            # The model is loaded once, and only when there is an image to read.
            from digits.reading import Reader

            reader = Reader.load(args.model, min_probability=args.min_probability, tta=args.tta)
        readings = dict(zip([p for p, _ in found], reader.read([f for _, f in found]), strict=True)) \
            if found else {}
        for path in chunk:
            if path in errors:
                failed += 1
                print(f"error: {errors[path]}", file=sys.stderr)
                entries.append({"image": path, "error": errors[path]})
                continue
            reading = readings[path]
            if explain_dir is not None:
                _write_explanation(explain_dir, path, reading, taken)
            if args.json:
                entries.append(reading.to_dict(path))
            else:
                print(f"{path}: {reading.summary()}", flush=True)
        del found, readings  # the working images of this chunk
    if args.json and failed < len(args.images):
        print(json.dumps(entries, indent=2))
    return cli.EXIT_USAGE if failed else 0


def _explain_directory(directory: str):
    from pathlib import Path

    from digits.errors import ConfigError

    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--explain {directory}: not a directory")
    return path  # made when the first picture is written: a refused run leaves nothing


def _write_explanation(directory, image: str, reading, taken: set[str]) -> None:
    from digits.reading.explain import explanation, explanation_path
    from digits.runs.atomic import atomic_path

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from digits.errors import ConfigError

        raise ConfigError(f"--explain {directory}: {e.strerror or e}") from None
    target = explanation_path(directory, image, taken)
    with atomic_path(target, suffix=".png") as tmp:
        explanation(reading, image).save(tmp, format="PNG")


if __name__ == "__main__":
    raise SystemExit(main())
