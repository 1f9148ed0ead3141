"""The per-class classification report: TensorBoard text every epoch and after testing, and a file."""

from __future__ import annotations

import numpy as np

from callbacks.base import EveryNEpochs
from callbacks.confusion_matrix import validation_confusion_matrix
from callbacks.tensorboard import close_summary_writers, summary_step, summary_writer
from digits.atomic import atomic_write_text


def report_from_confusion_matrix(matrix, class_names=None) -> dict:
    """Per-class precision, recall, f1-score and support from a confusion matrix.

    Laid out as scikit-learn's `classification_report(output_dict=True)` without the
    "accuracy" entry (as in `TestResult.report`), computed with NumPy from the counts alone.

    Example:
        >>> report_from_confusion_matrix([[5, 1], [0, 7]], ["cat", "dog"])["cat"]["recall"]
        0.8333333333333334
    """
    counts = np.asarray(matrix, dtype=np.float64)
    n = counts.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(n))]
    true_positives = np.diag(counts)
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    precision = np.divide(true_positives, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(true_positives, support, out=np.zeros(n), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(n), where=both > 0)
    report = {
        name: {"precision": float(p), "recall": float(r), "f1-score": float(f),
               "support": float(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
    }
    total = support.sum()
    weights = support / total if total else np.zeros(n)
    report["macro avg"] = {"precision": float(precision.mean()), "recall": float(recall.mean()),
                           "f1-score": float(f1.mean()), "support": float(total)}
    report["weighted avg"] = {"precision": float(precision @ weights),
                              "recall": float(recall @ weights),
                              "f1-score": float(f1 @ weights), "support": float(total)}
    return report


def report_markdown(report: dict, footer: str = "") -> str:
    """A report dict as the markdown table `TestResult.report_markdown` writes."""
    lines = ["| class | precision | recall | f1-score | support |", "|---|---|---|---|---|"]
    for name, row in report.items():
        lines.append(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | "
                     f"{row['f1-score']:.4f} | {int(row['support'])} |")
    if footer:
        lines.append(f"\n{footer}")
    return "\n".join(lines)


def _write_text(writer, tag: str, text: str, step: int) -> None:
    import tensorflow as tf

    with writer.as_default():
        tf.summary.text(tag, text, step=step)
    writer.flush()


class ClassificationReport(EveryNEpochs):
    """Write the per-class precision/recall/f1 report to TensorBoard's Text tab and to a file.

    Every `every_n_epochs` epochs (and after the last one, also when stopped early) the
    validation report, derived from the validation confusion matrix Keras' own validation
    pass collected (no second pass), goes to `<run>/validation` as text tagged
    `classification_report`. After
    `Trainer.test`, the test report goes to `<run>/test` as `test/classification_report` and,
    in scikit-learn's plain-text layout, to `<run>/classification_report.txt` (atomically).
    The `test` section of metrics.json is the Trainer's own.

    Args:
        every_n_epochs: write the validation report every this many epochs (default 1).

    Example:
        >>> trainer = Trainer(callbacks=[ClassificationReport()], max_epochs=3)
        >>> trainer.fit(model, data)
        >>> trainer.test(model, data)
        >>> print((trainer.run.path / "classification_report.txt").read_text())
    """

    order = 25

    def on_due_epoch(self, epoch: int) -> None:
        trainer = self.trainer
        if trainer is None or trainer.run is None:
            return
        matrix = validation_confusion_matrix(trainer, self.model)
        if matrix is None:
            return
        total = int(matrix.sum())
        accuracy = np.trace(matrix) / total if total else 0.0
        text = report_markdown(
            report_from_confusion_matrix(matrix, trainer.data.class_names),
            f"**validation accuracy** {accuracy:.4f} on {total} examples, epoch {epoch + 1}",
        )
        _write_text(summary_writer(trainer, "validation"), "classification_report", text, epoch)

    def on_test_end(self, trainer, result) -> None:
        if trainer.run is None:
            return
        _write_text(summary_writer(trainer, "test"), "test/classification_report",
                    result.report_markdown(), summary_step(trainer))
        if not trainer.fast_dev_run:
            atomic_write_text(trainer.run.file("classification_report.txt"),
                              result.report_text() + "\n")

    def teardown(self, trainer, stage: str) -> None:
        close_summary_writers(trainer)
