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
            as scikit-learn's `classification_report(output_dict=True)` gives it.
        y_true, y_pred: labels and predicted classes.
        probabilities: (N, 10) predicted class probabilities.
        class_names: the display name of each class.
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

    @classmethod
    def from_probabilities(cls, y_true: np.ndarray, probabilities: np.ndarray,
                           class_names: tuple[str, ...] | None = None) -> TestResult:
        """Build a result from labels and predicted probabilities (one prediction pass)."""
        from sklearn.metrics import classification_report, confusion_matrix

        y_true = np.asarray(y_true, dtype=np.int64)
        probabilities = np.asarray(probabilities, dtype=np.float64)
        num_classes = probabilities.shape[1]
        names = tuple(class_names or (str(i) for i in range(num_classes)))
        y_pred = probabilities.argmax(axis=1)
        picked = probabilities[np.arange(len(y_true)), y_true]
        loss = float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())
        labels = list(range(num_classes))
        report = classification_report(
            y_true, y_pred, labels=labels, target_names=list(names), output_dict=True,
            zero_division=0,
        )
        report.pop("accuracy", None)
        return cls(
            accuracy=float((y_pred == y_true).mean()),
            loss=loss,
            confusion_matrix=confusion_matrix(y_true, y_pred, labels=labels).astype(np.int64),
            report=report,
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
        }

    def report_markdown(self) -> str:
        """The classification report as a markdown table (for TensorBoard text and files)."""
        lines = ["| class | precision | recall | f1-score | support |", "|---|---|---|---|---|"]
        for name, row in self.report.items():
            lines.append(
                f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | "
                f"{row['f1-score']:.4f} | {int(row['support'])} |"
            )
        lines.append(f"\n**accuracy** {self.accuracy:.4f} on {len(self.y_true)} examples, "
                     f"loss {self.loss:.4f}")
        return "\n".join(lines)

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
