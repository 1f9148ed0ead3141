"""Per-class precision-recall curves in TensorBoard's PR Curves dashboard."""

from __future__ import annotations

import re

import numpy as np

from digits.callbacks.base import EveryNEpochs
from digits.callbacks.tensorboard import close_summary_writers, summary_step, summary_writer


def curves(counts: np.ndarray) -> dict[str, np.ndarray]:
    """From (classes, thresholds, 2) histograms of negatives/positives per probability bin
    to each class's true/false positive/negative counts, precision and recall at every
    threshold (predicted positive when the probability is >= the threshold)."""
    counts = np.asarray(counts, dtype=np.float64)
    at_or_above = counts[:, ::-1, :].cumsum(axis=1)[:, ::-1, :]  # bins >= t
    tp, fp = at_or_above[..., 1], at_or_above[..., 0]
    positives, negatives = counts[..., 1].sum(axis=1, keepdims=True), counts[..., 0].sum(
        axis=1, keepdims=True)
    fn, tn = positives - tp, negatives - fp
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, positives, out=np.zeros_like(tp), where=positives > 0)
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "precision": precision, "recall": recall}


def tag_of(name: str) -> str:
    """A class's curve name: its name with anything but letters and digits made `_`
    (TensorBoard tags the curve `<that>/pr_curves`)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", str(name)).strip("_") or "class"


def write_pr_curves(writer, counts: np.ndarray, class_names, step: int, prefix: str = "") -> None:
    """One PR curve per class, through TensorBoard's own `pr_curve` summary format."""
    import tensorflow as tf
    from tensorboard.plugins.pr_curve import summary as pr_summary

    found = curves(counts)
    thresholds = counts.shape[1]
    with writer.as_default():
        for index, name in enumerate(class_names):
            proto = pr_summary.raw_data_pb(
                f"{prefix}{tag_of(name)}",
                true_positive_counts=found["tp"][index], false_positive_counts=found["fp"][index],
                true_negative_counts=found["tn"][index], false_negative_counts=found["fn"][index],
                precision=found["precision"][index], recall=found["recall"][index],
                num_thresholds=thresholds, display_name=f"{prefix}{name}",
                description=f"class {name} against the rest: precision and recall at "
                            f"{thresholds} probability thresholds")
            tf.summary.experimental.write_raw_pb(proto.SerializeToString(), step=step)
    writer.flush()


class PRCurves(EveryNEpochs):
    """Ten precision-recall curves (one per class) in TensorBoard's PR Curves tab.

    Every `every_n_epochs` epochs (and after the last), the validation curves, from counts the
    Trainer's streaming metric collected during Keras' own validation pass (no second pass),
    tagged `<class>/pr_curves` in `<run>/validation` at step = epoch index; after
    `Trainer.test`, the test curves from the test's probabilities as `test/<class>/pr_curves`
    in `<run>/test`.

    Args:
        every_n_epochs: write the validation curves every this many epochs (default 1).

    Example:
        >>> trainer = Trainer(callbacks=[PRCurves(every_n_epochs=5)])
    """

    needs_trainer = True

    order = 22

    def on_due_epoch(self, epoch: int) -> None:
        trainer = self.trainer
        if trainer is None or trainer.run is None:
            return
        counts = trainer.validation_pr_counts()
        if counts is None:
            return
        writer, names = summary_writer(trainer, "validation"), trainer.data.class_names
        trainer.run_in_background(lambda: write_pr_curves(writer, counts, names, epoch),
                                  callback=self)

    def on_test_end(self, trainer, result) -> None:
        if trainer.run is None:
            return
        from digits.engine.metrics import pr_counts

        write_pr_curves(summary_writer(trainer, "test"), pr_counts(result.y_true,
                                                                    result.probabilities),
                        result.class_names, summary_step(trainer), prefix="test/")

    def teardown(self, trainer, stage: str) -> None:
        close_summary_writers(trainer)
