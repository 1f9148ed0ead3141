"""The per-class classification report: TensorBoard text every epoch and after testing, and a file."""

from __future__ import annotations

import numpy as np

from digits.callbacks.base import EveryNEpochs
from digits.callbacks.tensorboard import close_summary_writers, summary_step, summary_writer
from digits.engine.results import (  # noqa: F401 - public here since digits 0.1
    report_from_confusion_matrix,
    report_markdown,
)
from digits.runs.atomic import atomic_write_text


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

    needs_trainer = True

    order = 25

    def on_due_epoch(self, epoch: int) -> None:
        trainer = self.trainer
        if trainer is None or trainer.run is None:
            return
        matrix = trainer.validation_confusion_matrix()
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
