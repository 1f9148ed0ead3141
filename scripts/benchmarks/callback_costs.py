"""The callbacks section: each default callback's time per epoch as a share of B's epoch."""

from __future__ import annotations

import collections
import time

from benchmarks.common import (
    EPOCH_HOOKS,
    Bench,
    HookTimes,
    Table,
    median,
    percent,
    progress,
    ratio,
    seconds,
    steady_epoch,
    subset,
    trainer_defaults,
)
from benchmarks.overhead import run_trainer


def streaming_metric_seconds(updates: int, batch: int) -> float:
    """Seconds the compiled-in confusion-matrix metric adds to `updates` batches, in-graph."""
    import numpy as np
    import tensorflow as tf

    from digits.engine.metrics import StreamingConfusionMatrix

    metric = StreamingConfusionMatrix(10)
    rng = np.random.default_rng(0)
    y = tf.constant(rng.integers(0, 10, batch))
    p = tf.constant(rng.random((batch, 10), dtype=np.float32))

    @tf.function
    def run(n):
        for _ in tf.range(n):
            metric.update_state(y, p)
        return metric.counts

    run(tf.constant(1))
    start = time.perf_counter()
    run(tf.constant(updates))
    return time.perf_counter() - start


def section_callbacks(bench: Bench) -> dict:
    timings = bench.callback_timings
    if timings is None:
        progress("callbacks: timing the default callbacks inside two Trainer fits")
        hooks = HookTimes()
        data = subset(bench.data.mnist5k(), train=bench.sizes.overhead_train,
                      val=bench.sizes.overhead_train and max(64, bench.sizes.overhead_train // 9))
        log_dir = bench.tmp / "callbacks"
        if bench.sizes.warm_up:
            run_trainer(subset(data, 256, 128, 128), 1, log_dir, True, test=True)
        runs = [run_trainer(data, bench.sizes.epochs, log_dir, True, hooks, test=(i == 1))
                for i in range(2)]
        test_seconds = {k: v for k, v in hooks.seconds.items() if k[1] == "test"}
        timings = {"fit": {k: v for k, v in hooks.seconds.items() if k[1] != "test"},
                   "test": test_seconds, "fit_runs": 2, "epochs": bench.sizes.epochs,
                   "epoch_seconds": median(steady_epoch(r["epoch_seconds"]) for r in runs),
                   "test_seconds": runs[1].get("test_seconds"), "data": data,
                   "steps_per_execution": runs[0]["steps_per_execution"]}
    fits, epochs = timings["fit_runs"], timings["epochs"]
    epoch_seconds = timings["epoch_seconds"]
    per: dict[str, dict] = collections.defaultdict(
        lambda: {"epoch": 0.0, "fit": 0.0, "test": 0.0, "background": 0.0})
    for (label, phase, hook), value in timings["fit"].items():
        if phase == "fit":
            per[label]["epoch" if hook in EPOCH_HOOKS or label.startswith("trainer") else "fit"] \
                += value
        elif phase == "background":
            per[label]["background"] += value
    for (label, _, _), value in timings["test"].items():
        per[label]["test"] += value
    data = timings["data"]
    batch = trainer_defaults()["batch_size"]
    updates = -(-len(data.train) // batch) + -(-len(data.val) // max(batch, 512))
    in_graph = streaming_metric_seconds(updates, batch)
    callbacks = {}
    for label, spent in per.items():
        per_epoch = spent["epoch"] / (fits * epochs)
        once = spent["fit"] / fits
        callbacks[label] = {
            "seconds_per_epoch": per_epoch,
            "share_of_epoch": ratio(per_epoch, epoch_seconds),
            "seconds_once_per_fit": once,
            "share_of_fit_spread_over_epochs": ratio(per_epoch + once / epochs, epoch_seconds),
            "seconds_per_test": spent["test"],
            "background_seconds_per_epoch": spent["background"] / (fits * epochs),
        }
    if "confusion_matrix" in callbacks:
        cm = callbacks["confusion_matrix"]
        cm["in_graph_metric_seconds_per_epoch"] = in_graph
        cm["share_with_metric"] = ratio(cm["seconds_per_epoch"] + in_graph, epoch_seconds)
        # Its whole cost, wherever it runs: the hooks, the in-graph metric and the drawing
        # done beside training (which takes CPU from training on a 2-core machine).
        cm["share_all_work"] = ratio(cm["seconds_per_epoch"] + in_graph
                                     + cm["background_seconds_per_epoch"], epoch_seconds)
    total = sum(v["seconds_per_epoch"] for k, v in callbacks.items() if not k.startswith("trainer"))
    return {
        "epoch_seconds": epoch_seconds,
        "epochs_per_fit": epochs,
        "fits": fits,
        "test_seconds": timings["test_seconds"],
        "callbacks": dict(sorted(callbacks.items(), key=lambda kv: -kv[1]["seconds_per_epoch"])),
        "all_callbacks_share_of_epoch": ratio(total, epoch_seconds),
    }


def callback_tables(result: dict) -> list[Table]:
    rows = []
    for label, c in result["callbacks"].items():
        share = c["share_of_epoch"]
        if "share_all_work" in c:
            share_text = (f"{percent(share)} ({percent(c['share_all_work'])} with its metric "
                          "and the drawing beside training)")
        elif "share_with_metric" in c:
            share_text = f"{percent(share)} ({percent(c['share_with_metric'])} with its metric)"
        else:
            share_text = percent(share)
        beside = c.get("background_seconds_per_epoch") or 0.0
        rows.append((label, f"{1000 * c['seconds_per_epoch']:.0f} ms", share_text,
                     f"{1000 * beside:.0f} ms" if beside else "",
                     f"{1000 * c['seconds_once_per_fit']:.0f} ms",
                     f"{1000 * c['seconds_per_test']:.0f} ms"))
    rows.append(("all callbacks", "", percent(result["all_callbacks_share_of_epoch"]), "", "",
                 ""))
    notes = [f"Timed inside B's fits: {result['fits']} fits of {result['epochs_per_fit']} epochs; "
             f"the epoch (its steady epoch) took {seconds(result['epoch_seconds'])}. 'per epoch' "
             "is the epoch and batch hooks; 'once per fit' is setup, fit start/end, train "
             "begin/end and teardown; 'per test' is one `Trainer.test` on the held-out images. "
             "The confusion matrix's metric runs inside the compiled steps; its cost is timed "
             "separately on the same number of batches. 'beside training' is work the Trainer "
             "runs on its background thread while the next epoch trains (writing the state "
             "and metrics.json, drawing the confusion matrix): not on the training thread, so "
             "not in 'share', but its CPU time is shared with training and so in B's "
             "wall-clock time."]
    return [Table("Callbacks: cost per epoch as a share of the epoch",
                  ("callback", "per epoch", "share", "beside training", "once per fit",
                   "per test"), rows, notes)]
