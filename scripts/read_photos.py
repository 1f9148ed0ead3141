#!/usr/bin/env python
"""How well do trained models read photo-like images? Accuracy per kind, mean over models.

The images are made by `scripts/photos.py` from digits that no model trained on: the official MNIST
test set (`--source official`, for the figures we publish; nothing is chosen on them) or the
validation split that `digits.train --test-dataset` holds out of the embedded 5,000
(`--source validation`, for choosing settings). Scans of other writers come from scikit-learn's
8x8 digits: the first 900 for validation, the other 897 for the published figures; or, with
`--scans optdigits.tra`, all of UCI optdigits' training part (3,823 digits by 30 writers, none
of scikit-learn's 13; https://archive.ics.uci.edu/dataset/80).

Usage:
    python scripts/read_photos.py --model A.keras [--model B.keras ...] [--count 300]
                                  [--source official|validation] [--kinds photo,number] [--tta]
                                  [--each-once] [--scans optdigits.tra]
                                  [--markdown] [--json out.json]

Example:
    python scripts/read_photos.py --model logs/cnn/version_0/model.keras --count 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # `scripts.photos`, the photo-like images
OFFICIAL_MNIST = ROOT / "digits" / "datasets" / "mnist-test"  # the `mnist-test` spec
SEED_BASE = {"validation": 10_000, "official": 777_000}
CHUNK = 64


def optdigits(path: str) -> tuple[np.ndarray, np.ndarray]:
    """UCI optdigits as CSV rows of 64 counts (0-16) and the label, a header line or not."""
    rows = [line.split(",") for line in Path(path).read_text().splitlines() if line.strip()]
    if rows and not rows[0][0].strip().isdigit():
        rows = rows[1:]
    try:
        table = np.asarray(rows, dtype=np.int64)
    except ValueError:  # rows of unequal length, or not numbers
        table = np.zeros((0, 0))
    if table.ndim != 2 or table.shape[1] != 65 or len(table) == 0:
        raise SystemExit(f"error: {path}: expected 65 comma-separated numbers per line")
    return table[:, :64].reshape(-1, 8, 8).astype(np.float32), table[:, 64]


def source_digits(source: str, official_dir: Path, scans_path: str | None = None):
    """(x, y) of MNIST digits and (images, labels) of 8x8 scans, none of them trained on."""
    from digits.data import load_dataset
    from scripts.photos import sklearn_digits

    scans = optdigits(scans_path) if scans_path else None
    if source == "official":
        mnist, part = load_dataset(str(official_dir), announce=False).test, slice(900, None)
    else:
        mnist = load_dataset("mnist-5k", test_dataset=str(official_dir), announce=False).val
        part = slice(None, 900)
    if scans is None:
        pictures, labels = sklearn_digits()
        scans = pictures[part], labels[part]
    return (mnist.x, mnist.y), scans


def measure(reader, kind: str, count: int, source: str, mnist, scans,
            each_once: bool = False) -> dict:
    """Read `count` images of `kind`; whole-reading accuracy, digit accuracy, what went wrong.

    Each image draws its digit at random (with replacement); with `each_once`, the scans are
    every digit of the set once, in order (`count` is then the set's size)."""
    from digits.errors import ImageError
    from digits.reading.images import find_digits
    from scripts import photos

    right = digits_right = digits_total = wrong_length = refused = 0
    flagged_wrong = flagged_right = wrong_digits = right_digits = 0
    seconds = []
    once = each_once and kind == "scan"
    if once:
        count = len(scans[1])
    for start in range(0, count, CHUNK):
        found, truths = [], []
        for i in range(start, min(count, start + CHUNK)):
            chosen = (scans[0][i: i + 1], scans[1][i: i + 1]) if once else scans
            sample = photos.make_sample(kind, *mnist, seed=SEED_BASE[source] + i, digits8=chosen)
            gray = photos.gray_levels(sample.image)
            begin = time.perf_counter()
            try:
                found.append(find_digits(gray, f"{kind}-{i}", original_size=sample.image.size))
            except ImageError:
                refused += 1
                continue
            finally:
                seconds.append(time.perf_counter() - begin)
            truths.append(sample.text)
        for reading, truth in zip(reader.read(found), truths, strict=True):
            right += reading.text == truth
            digits_total += len(truth)
            if len(reading.text) != len(truth):
                wrong_length += 1
                continue
            for digit, true in zip(reading.digits, truth, strict=True):
                ok = str(digit.digit) == true
                digits_right += ok
                right_digits += ok
                wrong_digits += not ok
                flagged_right += ok and digit.uncertain
                flagged_wrong += (not ok) and digit.uncertain
    return {"kind": kind, "images": count, "accuracy": right / count,
            "digit_accuracy": digits_right / max(1, digits_total), "wrong_length": wrong_length,
            "refused": refused, "uncertain_of_wrong": flagged_wrong / max(1, wrong_digits),
            "uncertain_of_right": flagged_right / max(1, right_digits),
            "find_ms_median": 1000 * statistics.median(seconds)}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="a .keras model (repeatable)")
    parser.add_argument("--count", type=int, default=300, help="images per kind (default: 300)")
    parser.add_argument("--source", choices=tuple(SEED_BASE), default="official")
    parser.add_argument("--kinds", default=None, help="comma-separated (default: all)")
    parser.add_argument("--min-probability", type=float, default=None)
    parser.add_argument("--each-once", action="store_true",
                        help="scans: read every digit of the set once, in order, instead of "
                             "--count draws with replacement")
    parser.add_argument("--scans", default=None, metavar="CSV",
                        help="other writers' 8x8 digits in UCI optdigits' format (e.g. its "
                             "optdigits.tra: 3,823 digits by 30 writers, none of scikit-learn's "
                             "13), all of them, instead of scikit-learn's")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation (digits.recipes.tta), as digits.predict --tta")
    parser.add_argument("--official", default=str(OFFICIAL_MNIST), help="the official test set")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from digits.reading import MIN_PROBABILITY, Reader
    from scripts.photos import KINDS

    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    mnist, scans = source_digits(args.source, Path(args.official), args.scans)
    threshold = MIN_PROBABILITY if args.min_probability is None else args.min_probability
    results = {}
    for path in args.model:
        reader = Reader.load(path, min_probability=threshold, tta=args.tta)
        results[path] = [measure(reader, kind, args.count, args.source, mnist, scans,
                                 args.each_once) for kind in kinds]
        for r in results[path]:
            print(f"{path}: {r['kind']:7s} {100 * r['accuracy']:6.2f}%  digits "
                  f"{100 * r['digit_accuracy']:6.2f}%  wrong length {r['wrong_length']}  "
                  f"refused {r['refused']}  find {r['find_ms_median']:.1f} ms", flush=True)
    summary = []
    for k, kind in enumerate(kinds):
        runs = [results[path][k] for path in args.model]
        accuracies = [r["accuracy"] for r in runs]
        summary.append({"kind": kind, "mean": statistics.mean(accuracies),
                        "min": min(accuracies), "max": max(accuracies),
                        "digit_accuracy": statistics.mean(r["digit_accuracy"] for r in runs),
                        "uncertain_of_wrong": statistics.mean(r["uncertain_of_wrong"] for r in runs),
                        "uncertain_of_right": statistics.mean(r["uncertain_of_right"] for r in runs)})
    if args.markdown:
        counted = "each scan once" if args.each_once else f"{args.count} images each"
        print(f"\n| kind ({counted}, {args.source} digits) | read right, mean of "
              f"{len(args.model)} | range | digits right | uncertain: of wrong / of right digits |")
        print("| --- | --- | --- | --- | --- |")
        for s in summary:
            print(f"| {s['kind']} | {100 * s['mean']:.1f}% | {100 * s['min']:.1f}-{100 * s['max']:.1f}% "
                  f"| {100 * s['digit_accuracy']:.1f}% | {100 * s['uncertain_of_wrong']:.0f}% / "
                  f"{100 * s['uncertain_of_right']:.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": results,
                                               "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
