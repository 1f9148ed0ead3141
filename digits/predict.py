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
    parser.add_argument("--save-digits", type=cli.non_empty, default=None, metavar="DIR",
                        help="write every digit found, as the 28x28 input the model read, to "
                             "DIR/<digit read>/<image>-<k>.png: sort the misread ones into "
                             "their right folder and DIR is a dataset (--dataset DIR)")
    kaggle = parser.add_argument_group("Kaggle's Digit Recognizer")
    kaggle.add_argument("--csv", type=cli.non_empty, default=None, metavar="FILE",
                        help="read the 28x28 digits of a CSV in Kaggle's test.csv layout "
                             "(pixel0,...,pixel783 per row; a label column is ignored) instead "
                             "of images; prints ImageId,Label rows")
    kaggle.add_argument("--submission", type=cli.non_empty, default=None, metavar="FILE",
                        help="with --csv: write the ImageId,Label answers to FILE (atomically) "
                             "instead of printing them")
    parser.add_argument("images", nargs="*", metavar="IMAGE")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit code 0 ok, 2 bad input."""
    return cli.run_main(run, argv)


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.csv is not None:
        if args.images:
            parser.error("give images or --csv, not both")
        cli.import_model_modules(args.model_module)
        return _predict_csv(args)
    if args.submission is not None:
        parser.error("--submission goes with --csv")
    if not args.images:
        parser.error("the following arguments are required: IMAGE (or --csv FILE)")
    cli.import_model_modules(args.model_module)
    from digits.errors import ImageError
    from digits.reading.images import find_digits_in_file

    explain_dir = _explain_directory(args.explain) if args.explain else None
    digits_dir = _explain_directory(args.save_digits, "--save-digits") if args.save_digits else None
    reader, entries, failed, taken, saved = None, [], 0, set(), set()
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
            if digits_dir is not None:
                _save_digits(digits_dir, path, reading, saved)
            if args.json:
                entries.append(reading.to_dict(path))
            else:
                print(f"{path}: {reading.summary()}", flush=True)
        del found, readings  # the working images of this chunk
    if args.json and failed < len(args.images):
        print(json.dumps(entries, indent=2))
    return cli.EXIT_USAGE if failed else 0


def _explain_directory(directory: str, flag: str = "--explain"):
    from pathlib import Path

    from digits.errors import ConfigError

    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {directory}: not a directory")
    return path  # made when the first picture is written: a refused run leaves nothing


def _save_digits(directory, image: str, reading, saved: set) -> None:
    """Each digit's 28x28 input as DIR/<digit>/<image stem>-<k>.png (never over a file)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from digits.errors import ConfigError
    from digits.runs.atomic import atomic_path

    stem = Path(image).stem or "image"
    for k, digit in enumerate(reading.digits):
        folder = directory / str(digit.digit)
        target, n = folder / f"{stem}-{k}.png", 1
        while str(target) in saved or target.exists():
            target, n = folder / f"{stem}-{k}.{n}.png", n + 1
        saved.add(str(target))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(target, suffix=".png") as tmp:
                pixels = np.clip(np.rint(digit.input * 255), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(tmp, format="PNG")
        except OSError as e:
            raise ConfigError(f"--save-digits {directory}: {e.strerror or e}") from None


def _predict_csv(args) -> int:
    """Kaggle's test.csv -> `ImageId,Label` (1-based ids, in the file's order)."""
    from digits.data import load_kaggle_csv
    from digits.reading import Reader

    images = load_kaggle_csv(args.csv, labelled=None)  # test.csv, or train.csv's images
    if args.submission is not None:
        from pathlib import Path

        from digits.errors import ConfigError

        target = Path(args.submission)
        if target.is_dir() or not target.parent.is_dir():
            raise ConfigError(f"--submission {args.submission}: not a file in an existing folder")
    reader = Reader.load(args.model, tta=args.tta)
    labels = reader.classify(images[..., 0]).argmax(axis=1)
    text = "ImageId,Label\n" + "".join(f"{i},{int(label)}\n" for i, label in
                                         enumerate(labels, start=1))
    if args.submission is None:
        sys.stdout.write(text)
    else:
        from digits.runs.atomic import atomic_write_text

        atomic_write_text(args.submission, text)
        print(f"wrote {len(labels)} answers to {args.submission}", file=sys.stderr)
    return 0


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
