"""The accuracy section: official MNIST test accuracy of models trained on the embedded digits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import digits
from benchmarks.common import Bench, Table, progress, quiet_stdout, seconds, subset


def train_and_test(name: str, data, epochs: int, log_dir: Path) -> dict:

    trainer = digits.Trainer(max_epochs=epochs, log_dir=log_dir, callbacks=[],
                             enable_checkpointing=False, verbose=False)
    model = trainer.build_model(name)
    start = time.perf_counter()
    with quiet_stdout():
        trainer.fit(model, data)
        result = trainer.test(model, data)
    return {"model": name, "epochs": epochs, "accuracy": result.accuracy, "loss": result.loss,
            "train_images": len(data.train), "test_images": len(result.y_true),
            "seconds": time.perf_counter() - start}


def section_accuracy(bench: Bench) -> dict:
    sizes = bench.sizes
    data = subset(bench.data.mnist5k_official(bench.args.mnist_test), train=sizes.accuracy_train,
                  test=sizes.accuracy_test)
    results = []
    for name in ("seed-cnn", "cnn"):
        progress(f"accuracy: {name}, {sizes.accuracy_epochs} epochs on {len(data.train):,} images")
        results.append(train_and_test(name, data, sizes.accuracy_epochs, bench.tmp / "accuracy"))
    tuned = None
    if bench.args.tune_metrics:
        tuned = read_tune_metrics(Path(bench.args.tune_metrics))
    return {"runs": results, "tuner_best": tuned, "test_dataset": str(bench.args.mnist_test)}


def read_tune_metrics(path: Path) -> dict:
    """The test accuracy (and what was trained) of a finished run's metrics.json."""
    metrics = json.loads(path.read_text())
    test = metrics.get("test") or {}
    config = {}
    config_path = path.with_name("config.json")
    if config_path.is_file():
        config = json.loads(config_path.read_text())
    return {"path": str(path), "accuracy": test.get("accuracy"), "test_images": test.get("examples"),
            "epochs": metrics.get("epochs_completed"), "model": config.get("model"),
            "hyperparameters": config.get("hyperparameters"),
            "train_images": (config.get("data") or {}).get("train")}


def accuracy_tables(result: dict) -> list[Table]:
    rows = [(r["model"], f"{r['train_images']:,} (mnist-5k)", str(r["epochs"]),
             f"{r['test_images']:,}", f"{100 * r['accuracy']:.2f}%", seconds(r["seconds"], 0))
            for r in result["runs"]]
    tuned = result.get("tuner_best")
    if tuned:
        rows.append((f"tuner's best {tuned.get('hyperparameters') or ''}".strip(),
                     f"{tuned['train_images'] or '?'}", str(tuned.get("epochs") or "?"),
                     f"{tuned.get('test_images') or '?'}",
                     "-" if tuned["accuracy"] is None else f"{100 * tuned['accuracy']:.2f}%", ""))
    else:
        rows.append(("tuner's best", "not given: --tune-metrics PATH", "", "", "", ""))
    return [Table("Accuracy on the official MNIST test set", ("model", "trained on", "epochs",
                  "test images", "accuracy", "time"), rows,
                  [f"Test set: {result['test_dataset']}. Trained with the Trainer's defaults, "
                   "no callbacks; the final weights are tested."])]
