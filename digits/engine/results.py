"""What a test produces, as data: accuracy, loss, confusion matrix and the per-class report."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class TestResult:
    """The outcome of testing a model on a labelled split.

    Attributes:
        accuracy: fraction of correct predictions.
        loss: mean sparse categorical cross-entropy.
        confusion_matrix: (10, 10) int64, rows = true class, columns = predicted class.
        report: per-class precision/recall/f1-score/support plus "macro avg" and "weighted avg",
            as scikit-learn's `classification_report(output_dict=True)` lays it out.
        y_true, y_pred: labels and predicted classes.
        probabilities: (N, 10) predicted class probabilities.
        class_names: the display name of each class.
        features: (N, F) what the model computed before its classifier, when a callback
            asked for them (`wants_features`, e.g. the embeddings callback); else None.
        tta_views: the copies of each image whose probabilities were averaged
            (`digits.recipes.tta`), or None when each image was predicted once.
    """

    __test__ = False  # not a pytest test class, despite the name

    accuracy: float
    loss: float
    confusion_matrix: np.ndarray
    report: dict
    y_true: np.ndarray
    y_pred: np.ndarray
    probabilities: np.ndarray
    class_names: tuple[str, ...]
    features: np.ndarray | None = None
    tta_views: tuple[str, ...] | None = None

    @classmethod
    def from_probabilities(cls, y_true: np.ndarray, probabilities: np.ndarray,
                           class_names: tuple[str, ...] | None = None) -> TestResult:
        """Build a result from labels and predicted probabilities (one prediction pass)."""
        y_true = np.asarray(y_true, dtype=np.int64)
        probabilities = np.asarray(probabilities, dtype=np.float64)
        num_classes = probabilities.shape[1]
        names = tuple(class_names or (str(i) for i in range(num_classes)))
        y_pred = probabilities.argmax(axis=1)
        picked = probabilities[np.arange(len(y_true)), y_true]
        loss = float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())
        matrix = confusion_matrix_from_predictions(y_true, y_pred, num_classes)
        return cls(
            accuracy=float((y_pred == y_true).mean()),
            loss=loss,
            confusion_matrix=matrix,
            report=report_from_confusion_matrix(matrix, names),
            y_true=y_true,
            y_pred=y_pred,
            probabilities=probabilities.astype(np.float32),
            class_names=names,
        )

    def to_dict(self) -> dict:
        """JSON-ready summary (no per-example arrays), as stored in metrics.json."""
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "examples": int(len(self.y_true)),
            "confusion_matrix": self.confusion_matrix.tolist(),
            "report": self.report,
            **({"tta": list(self.tta_views)} if self.tta_views else {}),
        }

    def report_markdown(self) -> str:
        """The classification report as a markdown table (for TensorBoard text and files)."""
        return report_markdown(self.report, f"**accuracy** {self.accuracy:.4f} on "
                                            f"{len(self.y_true)} examples, loss {self.loss:.4f}")

    def report_text(self) -> str:
        """The classification report in scikit-learn's plain-text layout."""
        width = max(12, *(len(n) for n in self.report))
        out = [f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
        for name, row in self.report.items():
            if name == "macro avg":
                out.append("")
                out.append(f"{'accuracy':>{width}} {'':>9} {'':>9} {self.accuracy:>9.4f} "
                           f"{len(self.y_true):>9d}")
            out.append(f"{name:>{width}} {row['precision']:>9.4f} {row['recall']:>9.4f} "
                       f"{row['f1-score']:>9.4f} {int(row['support']):>9d}")
        return "\n".join(out)


def confusion_matrix_from_predictions(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts: rows true, columns predicted."""
    flat = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def report_from_confusion_matrix(matrix, class_names=None) -> dict:
    """Per-class precision, recall, f1-score and support from a confusion matrix.

    Laid out as scikit-learn's `classification_report(output_dict=True, zero_division=0)`
    without the "accuracy" entry, computed with NumPy from the counts alone: the one report
    of the project (test results, validation reports, the tuner's).

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
               "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
    }
    total = support.sum()
    weights = support / total if total else np.zeros(n)
    report["macro avg"] = {"precision": float(precision.mean()), "recall": float(recall.mean()),
                           "f1-score": float(f1.mean()), "support": int(total)}
    report["weighted avg"] = {"precision": float(precision @ weights),
                              "recall": float(recall @ weights),
                              "f1-score": float(f1 @ weights), "support": int(total)}
    return report


def report_markdown(report: dict, footer: str = "") -> str:
    """A report dict as a markdown table (TensorBoard's Text tab renders it)."""
    lines = ["| class | precision | recall | f1-score | support |", "|---|---|---|---|---|"]
    for name, row in report.items():
        lines.append(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | "
                     f"{row['f1-score']:.4f} | {int(row['support'])} |")
    if footer:
        lines.append(f"\n{footer}")
    return "\n".join(lines)
