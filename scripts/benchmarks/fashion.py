"""The fashion section (when named): Fashion-MNIST test accuracy of cnn on all 60k images."""

from __future__ import annotations

from benchmarks.accuracy import train_and_test
from benchmarks.common import Bench, Table, progress, seconds, subset


def section_fashion(bench: Bench) -> dict:
    from digits.data import load_dataset

    data = load_dataset("fashion-mnist", announce=False)
    data = subset(data, train=bench.sizes.fashion_train,
                  val=bench.sizes.fashion_train and bench.sizes.fashion_train // 9,
                  test=bench.sizes.fashion_train)
    epochs = bench.args.fashion_epochs or bench.sizes.fashion_epochs
    progress(f"fashion: cnn, {epochs} epochs on {len(data.train):,} images")
    run = train_and_test("cnn", data, epochs, bench.tmp / "fashion")
    return {**run, "dataset": data.description}


def fashion_tables(result: dict) -> list[Table]:
    return [Table("Fashion-MNIST test accuracy", ("model", "train images", "epochs", "test images",
                                                  "accuracy", "time"),
                  [(result["model"], f"{result['train_images']:,}", str(result["epochs"]),
                    f"{result['test_images']:,}", f"{100 * result['accuracy']:.2f}%",
                    seconds(result["seconds"], 0))], [result["dataset"]])]
