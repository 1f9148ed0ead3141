"""The scale section: one epoch of Fashion-MNIST at growing sizes: images/s and peak RSS."""

from __future__ import annotations

import math
import statistics
import time

import digits
from benchmarks.common import (
    Bench,
    Table,
    gigabytes,
    make_epoch_clock,
    peak_rss_bytes,
    per_second,
    progress,
    quiet_stdout,
    run_worker,
    seconds,
    subset,
)


def section_scale(bench: Bench) -> dict:
    runs = []
    for total in bench.sizes.scale_sizes:
        progress(f"scale: one epoch of Fashion-MNIST on {total:,} images, in a subprocess")
        runs.append(run_worker("scale", {"images": total, "log_dir": str(bench.tmp / "scale")},
                               timeout=1800))
    fit = None
    if len(runs) >= 2:
        xs = [r["train_images"] + r["val_images"] for r in runs]
        ys = [r["epoch_seconds"] for r in runs]
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        slope = (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
                 / sum((x - mean_x) ** 2 for x in xs))
        intercept = mean_y - slope * mean_x
        deviation = max(abs(y - (intercept + slope * x)) / y for x, y in zip(xs, ys, strict=True))
        fit = {"fixed_seconds": intercept, "ms_per_image": 1000 * slope,
               "max_deviation": deviation,
               "exponent": math.log(ys[-1] / ys[0]) / math.log(xs[-1] / xs[0])}
    return {"runs": runs, "linear_fit": fit,
            "peak_rss_bytes": max((r["peak_rss_bytes"] for r in runs), default=None)}


def scale_tables(result: dict) -> list[Table]:
    rows = [(f"{r['train_images']:,} + {r['val_images']:,}", seconds(r["epoch_seconds"], 1),
             per_second(r["train_images_per_second"]), per_second(r["steady_images_per_second"]),
             gigabytes(r["rss_after_load_bytes"]), gigabytes(r["peak_rss_bytes"]))
            for r in result["runs"]]
    notes = ["One epoch with the default Trainer and callbacks, each size in a fresh process; "
             "'steady' leaves out the first compiled call, which traces the graph. Peak RSS is "
             "the process's ru_maxrss (goal <= 3 GB)."]
    fit = result["linear_fit"]
    if fit:
        notes.append(f"Epoch time = {fit['fixed_seconds']:.1f} s + {fit['ms_per_image']:.2f} ms "
                     f"per image (largest deviation from the line {100 * fit['max_deviation']:.0f}%"
                     f"; log-log slope {fit['exponent']:.2f}, 1 is proportional).")
    return [Table("Scale: Fashion-MNIST, one epoch", ("train + validation images", "epoch",
                  "train img/s", "steady img/s", "RSS after loading", "peak RSS"), rows, notes)]


def worker_scale(args: dict) -> dict:
    """One epoch of the default Trainer on the first `images` of Fashion-MNIST (9:1 split)."""
    import keras

    from digits.callbacks.registry import default_callbacks
    from digits.data import load_dataset

    full = load_dataset("fashion-mnist", announce=False)
    total = args["images"]
    n_train = min(len(full.train), round(total * 0.9))
    n_val = min(len(full.val), total - n_train)
    data = subset(full, train=n_train, val=n_val)
    rss_after_load = peak_rss_bytes()
    clock = make_epoch_clock()
    steps: list[tuple[int, float]] = []

    class StepTimes(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append((batch + 1, time.perf_counter()))

    trainer = digits.Trainer(max_epochs=1, log_dir=args["log_dir"], verbose=False,
                             callbacks=[*default_callbacks(), clock, StepTimes()])
    model = trainer.build_model("cnn")
    with quiet_stdout():
        trainer.fit(model, data)
    epoch = clock.epoch_seconds()[0]
    training = clock.training_seconds()[0]
    batch = trainer.batch_size
    steady = None
    if len(steps) >= 2:
        (first_batch, first_time) = steps[0]
        train_end = clock.epoch_starts[0] + training
        later = min(len(data.train), steps[-1][0] * batch) - first_batch * batch
        if later > 0 and train_end > first_time:
            steady = later / (train_end - first_time)
    return {"train_images": len(data.train), "val_images": len(data.val),
            "epoch_seconds": epoch, "training_seconds": training,
            "train_images_per_second": len(data.train) / training,
            "steady_images_per_second": steady,
            "rss_after_load_bytes": rss_after_load, "peak_rss_bytes": peak_rss_bytes()}
