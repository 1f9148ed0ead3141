#!/usr/bin/env python
"""Does fine-tuning on other writers' digits teach the model their handwriting? Before and after.

Other writers: scikit-learn's 8x8 digits (UCI optdigits' test part, 13 writers, none of MNIST's),
each written as a scan-like PNG (upscaled 4-16x, either polarity, as `scripts/photos.py` makes
them). The first 900 become a class folder that `digits.train --init-from MODEL --dataset
FOLDER` fine-tunes on; the other 897 (read as `digits.predict` reads them: found, made 28x28)
are read before and after, and so is the official MNIST test set (what the model must keep).

With `--writers optdigits.tra` (UCI optdigits' training part: 3,823 digits by 30 writers, none
of scikit-learn's 13; https://archive.ics.uci.edu/dataset/80) those 30 writers are the folder
fine-tuned on and all of scikit-learn's 1,797 are read: the writer-disjoint check of the issue.

Usage:
    python scripts/finetune_writers.py --model logs/cnn/version_0/model.keras [--seeds 0,1,2]
        [--writers optdigits.tra] [--per-class N] [--epochs N] [--learning-rate LR]
        [--replay SPEC] [--json out.json] [--choose]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))
OFFICIAL_MNIST = ROOT / "digits" / "datasets" / "mnist-test"


def write_scans(folder: Path, images, labels, seed: int) -> None:
    from scripts.photos import scan

    rng = np.random.default_rng(seed)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (folder / str(int(label))).mkdir(parents=True, exist_ok=True)
        scan(image, rng)[0].save(folder / str(int(label)) / f"scan{i}.png")


def read_scans(model: str, images, labels, seed: int) -> float:
    """Digit accuracy on the scans read as digits.predict reads them (a refusal is a miss)."""
    from digits.errors import ImageError
    from digits.reading import Reader
    from digits.reading.images import find_digits
    from scripts.photos import gray_levels, scan

    reader, rng, found, truth = Reader.load(model), np.random.default_rng(seed), [], []
    for image, label in zip(images, labels, strict=True):
        picture = scan(image, rng)[0]
        try:
            found.append(find_digits(gray_levels(picture), "scan", original_size=picture.size))
            truth.append(int(label))
        except ImageError:
            continue
    readings = reader.read(found)
    right = sum(r.text == str(t) for r, t in zip(readings, truth, strict=True))
    return right / len(labels)


def official(model: str) -> float:
    import contextlib
    import io

    from digits import evaluate

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        evaluate.main(["--model", model, "--dataset", str(OFFICIAL_MNIST), "--json"])
    return json.loads(out.getvalue())["accuracy"]


FULL_MNIST = ROOT.parent / "shared" / "data" / "mnist-full"


def unseen_mnist(count: int = 10_000):
    """MNIST digits a model trained on the embedded 5,000 never saw, for measuring what
    fine-tuning makes it forget without reading the official test set: `count` drawn (seed 0)
    from full MNIST's 60,000 *training* digits that are not among the embedded 5,000 (where
    `../shared/data/mnist-full` is), else the 500 embedded digits `digits.train --test-dataset
    mnist-test` validates on. Returns (x float32 (N, 28, 28) in [0, 1], y, a description)."""
    import gzip

    from digits.data import load_dataset

    embedded = load_dataset("mnist-5k", test_dataset=str(OFFICIAL_MNIST), announce=False)
    if not (FULL_MNIST / "train-images-idx3-ubyte.gz").exists():
        return embedded.val.x[..., 0], embedded.val.y, f"MNIST validation ({len(embedded.val)})"
    with gzip.open(FULL_MNIST / "train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FULL_MNIST / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    known = {np.rint(image * 255).astype(np.uint8).tobytes()
             for split in (embedded.train, embedded.val, embedded.test) for image in split.x[..., 0]}
    unseen = np.array([i for i in range(len(x)) if x[i].tobytes() not in known])
    keep = np.sort(np.random.default_rng(0).choice(unseen, min(count, len(unseen)), replace=False))
    return x[keep].astype(np.float32) / 255, y[keep], f"unseen MNIST training digits ({len(keep):,})"


def mnist_validation(model: str) -> float:
    """Accuracy on MNIST digits the default model never trained on (`unseen_mnist`)."""
    from digits.reading import Reader

    x, y, _ = unseen_mnist()
    probabilities = Reader.load(model).classify(x)
    return float((probabilities.argmax(axis=1) == y).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--per-class", type=int, default=None,
                        help="only N of each class of the 900 (how many it takes)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--replay", default="mnist-5k")
    parser.add_argument("--json", default=None)
    parser.add_argument("--writers", default=None, metavar="optdigits.tra",
                        help="fine-tune on these 8x8 digits (UCI optdigits' format) and read all "
                             "of scikit-learn's 1,797 (other writers)")
    parser.add_argument("--choose", action="store_true",
                        help="for choosing settings: fine-tune on the first two thirds of the "
                             "fine-tuning digits and read the last third and 10,000 MNIST "
                             "training digits the model never saw (unseen_mnist); the "
                             "held-out scans and the official test set are not read")
    args = parser.parse_args(argv)
    from digits import train
    from scripts.photos import sklearn_digits

    images, labels = sklearn_digits()
    tune_x, tune_y, held_x, held_y = images[:900], labels[:900], images[900:], labels[900:]
    if args.writers:
        from scripts.read_photos import optdigits

        (tune_x, tune_y), held_x, held_y = optdigits(args.writers), images, labels
    if args.choose:
        cut = len(tune_y) * 2 // 3
        tune_x, tune_y, held_x, held_y = tune_x[:cut], tune_y[:cut], tune_x[cut:], tune_y[cut:]
        global official
        official = mnist_validation
    if args.per_class:
        keep = np.concatenate([np.flatnonzero(tune_y == c)[:args.per_class] for c in range(10)])
        tune_x, tune_y = tune_x[keep], tune_y[keep]
    kept = unseen_mnist()[2] if args.choose else "official test"
    before = {"scans": read_scans(args.model, held_x, held_y, 1), "official": official(args.model)}
    print(f"before: other writers {before['scans']:.2%}, {kept} {before['official']:.2%}")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "writers"
        write_scans(folder, tune_x, tune_y, seed=0)
        for seed in [int(s) for s in args.seeds.split(",")]:
            logs = Path(work) / f"logs{seed}"
            flags = ["--init-from", args.model, "--dataset", str(folder), "--seed", str(seed),
                     "--log-dir", str(logs), "--no-default-callbacks", "--callbacks",
                     "checkpoint", "--replay", args.replay, "--test-dataset", "mnist-test"]
            flags += ["--epochs", str(args.epochs)] if args.epochs else []
            flags += ["--learning-rate", str(args.learning_rate)] if args.learning_rate else []
            start = time.perf_counter()
            assert train.main(flags) == 0
            seconds = time.perf_counter() - start
            tuned = str(logs / "finetune" / "version_0" / "model.keras")
            row = {"seed": seed, "scans": read_scans(tuned, held_x, held_y, 1),
                   "official": official(tuned), "seconds": round(seconds, 1)}
            print(f"seed {seed}: other writers {row['scans']:.2%}, {kept} "
                  f"{row['official']:.2%}, fine-tuning {seconds:.0f} s", flush=True)
            rows.append(row)
    summary = {"before": before, "after": rows, "tuned_on": int(len(tune_y)),
               "mean_scans": statistics.mean(r["scans"] for r in rows),
               "mean_official": statistics.mean(r["official"] for r in rows)}
    print(f"mean after: other writers {summary['mean_scans']:.2%}, {kept} "
          f"{summary['mean_official']:.2%} ({len(rows)} seeds, fine-tuned on {len(tune_y)})")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
