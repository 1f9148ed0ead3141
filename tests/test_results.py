"""digits.engine.results: a test's outcome, and the one classification report of the project."""

from __future__ import annotations

import numpy as np
import pytest

from digits.engine.results import (
    TestResult,
    confusion_matrix_from_predictions,
    report_from_confusion_matrix,
    report_markdown,
)


def test_the_report_from_the_matrix_is_scikit_learns(centroid_result):
    from sklearn.metrics import classification_report, confusion_matrix

    result = centroid_result
    assert 0.5 < result.accuracy < 1.0  # a real, imperfect classifier
    labels = list(range(10))
    assert np.array_equal(result.confusion_matrix,
                          confusion_matrix(result.y_true, result.y_pred, labels=labels))
    theirs = classification_report(result.y_true, result.y_pred, labels=labels,
                                   target_names=list(result.class_names), output_dict=True,
                                   zero_division=0)
    theirs.pop("accuracy")
    assert list(result.report) == list(theirs)
    for name, row in theirs.items():
        for key in ("precision", "recall", "f1-score", "support"):
            assert result.report[name][key] == pytest.approx(row[key], abs=1e-12), (name, key)
        assert type(result.report[name]["support"]) is int
    # What the validation report shows is the same table as the test report's.
    derived = report_from_confusion_matrix(result.confusion_matrix, result.class_names)
    assert report_markdown(derived) == result.report_markdown().split("\n\n")[0]


def test_report_of_a_class_never_predicted_is_zero_not_nan():
    report = report_from_confusion_matrix([[3, 0], [2, 0]], ["a", "b"])
    assert report["b"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 2}
    assert report["weighted avg"]["support"] == 5


def test_the_text_report_is_laid_out_as_scikit_learns(centroid_result):
    text = centroid_result.report_text().splitlines()
    assert text[0].split() == ["precision", "recall", "f1-score", "support"]
    accuracy = next(line for line in text if line.strip().startswith("accuracy"))
    assert accuracy.split() == ["accuracy", f"{centroid_result.accuracy:.4f}", "500"]
    assert centroid_result.to_dict()["examples"] == 500


def test_loss_and_matrix_come_from_the_probabilities():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    result = TestResult.from_probabilities(np.array([0, 1, 1]), probabilities, ("a", "b"))
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.loss == pytest.approx(-np.log([0.9, 0.8, 0.4]).mean())
    assert result.confusion_matrix.tolist() == [[1, 0], [1, 1]]
    assert confusion_matrix_from_predictions([0, 1, 1], [0, 1, 0], 2).tolist() == [[1, 0], [1, 1]]
