"""The predict section: finding digits in photo-like images, and `digits.predict` on 1,000."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time

from benchmarks.common import ROOT, Bench, Table, median, progress

PREDICT_KINDS = {"photo": 0.4, "number": 0.3, "board": 0.15, "scan": 0.15}  # share of the images


def section_predict(bench: Bench) -> dict:
    from digits.models import build_model
    from digits.reading.images import find_digits, find_digits_in_file, read_image
    from scripts import photos

    directory = bench.tmp / "predict"
    directory.mkdir(parents=True, exist_ok=True)
    test = bench.data.mnist5k().test
    count = bench.sizes.predict_images
    progress(f"predict: making {count} photo-like images")
    files = []
    for kind, share in PREDICT_KINDS.items():
        for i in range(max(1, round(count * share))):
            sample = photos.make_sample(kind, test.x, test.y, seed=500 + i)
            files.append((kind, sample.save(directory / f"{kind}-{i:04d}"), sample.image.size))
    # Speed does not depend on what the weights learned: an untrained default cnn reads as fast.
    model_path = directory / "cnn.keras"
    build_model("cnn", seed=0).save(model_path)
    for _, path, _ in files[:5]:
        find_digits_in_file(path)  # warm imports and caches
    with_decoding, pipeline_only, by_kind = [], [], collections.defaultdict(list)
    for kind, path, _ in files:
        start = time.perf_counter()
        find_digits_in_file(path)
        with_decoding.append(time.perf_counter() - start)
        gray, size = read_image(path)
        start = time.perf_counter()
        find_digits(gray, str(path), original_size=size)
        pipeline_only.append(time.perf_counter() - start)
        by_kind[kind].append(pipeline_only[-1])
    paths = [str(path) for _, path, _ in files] * bench.sizes.predict_repeats
    progress(f"predict: python -m digits.predict on {len(paths):,} images, and on one")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "digits.predict", "--model", str(model_path), "--json"]
    start = time.perf_counter()
    subprocess.run([*command, paths[0]], capture_output=True, env=env, cwd=ROOT, check=True)
    one_seconds = time.perf_counter() - start
    start = time.perf_counter()
    many = subprocess.run([*command, *paths], capture_output=True, env=env, cwd=ROOT, check=True)
    many_seconds = time.perf_counter() - start
    read = len(json.loads(many.stdout))
    megapixels = [w * h / 1e6 for _, _, (w, h) in files]
    return {
        "distinct_images": len(files), "command_images": len(paths), "read": read,
        "megapixels_median": median(megapixels), "megapixels_max": max(megapixels),
        "find_ms": 1000 * median(pipeline_only),
        "find_ms_p90": 1000 * sorted(pipeline_only)[int(0.9 * (len(pipeline_only) - 1))],
        "find_with_decoding_ms": 1000 * median(with_decoding),
        "find_ms_by_kind": {k: 1000 * median(v) for k, v in by_kind.items()},
        "command_seconds": many_seconds, "one_image_seconds": one_seconds,
        "images_per_second": len(paths) / many_seconds,
        "marginal_images_per_second": (len(paths) - 1) / max(1e-9, many_seconds - one_seconds),
    }


def predict_tables(result: dict) -> list[Table]:
    kinds = ", ".join(f"{k} {v:.1f} ms" for k, v in result["find_ms_by_kind"].items())
    rows = [
        ("finding the digits (no decoding), median", f"{result['find_ms']:.1f} ms",
         f"p90 {result['find_ms_p90']:.1f} ms; by kind: {kinds}"),
        ("reading the file and finding the digits, median",
         f"{result['find_with_decoding_ms']:.1f} ms", "decoding included (JPEG at reduced scale)"),
        (f"`digits.predict --json` on {result['command_images']:,} images",
         f"{result['images_per_second']:.0f} images/s",
         f"{result['command_seconds']:.1f} s in all, start-up and model load included"),
        ("the same, beyond the command's start-up", f"{result['marginal_images_per_second']:.0f} images/s",
         f"one image alone took {result['one_image_seconds']:.1f} s"),
    ]
    return [Table("Reading your own images", ("what", "speed", "notes"), rows,
                  [f"{result['distinct_images']} distinct photo-like images (photos of paper, "
                   f"numbers, boards, 8x8 scans; {result['megapixels_median']:.2f} megapixels "
                   f"median, {result['megapixels_max']:.2f} largest), each named "
                   f"{result['command_images'] // max(1, result['distinct_images'])} times on "
                   "the command line. Accuracy per kind: scripts/read_photos.py, in "
                   "BENCHMARKS.md's \"Your own digits\"."])]
