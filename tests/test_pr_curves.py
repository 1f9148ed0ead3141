"""digits.callbacks.pr_curves and digits.engine.metrics.StreamingPRCounts: every class's precision-recall
curve, from counts collected in the graph or from a test's probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from digits.callbacks.pr_curves import curves, tag_of
from digits.engine.metrics import StreamingPRCounts, pr_counts


def test_the_streaming_counts_are_the_numpy_counts(centroid_result):
    metric = StreamingPRCounts(10)
    y, p = centroid_result.y_true, centroid_result.probabilities
    for start in range(0, len(y), 128):  # batch by batch, as Keras' validation pass
        metric.update_state(y[start:start + 128], p[start:start + 128])
    assert np.array_equal(metric.counts(), pr_counts(y, p))
    assert metric.result() == {}  # nothing in the logs
    metric.reset_state()
    assert metric.counts().sum() == 0


def test_each_curve_is_scikit_learns_at_the_thresholds(centroid_result):
    from sklearn.metrics import precision_score, recall_score

    y, p = centroid_result.y_true, centroid_result.probabilities
    found = curves(pr_counts(y, p))
    for digit in (0, 5, 8):
        positives = (y == digit).sum()
        assert found["tp"][digit][0] + found["fn"][digit][0] == positives
        assert found["recall"][digit][0] == 1.0  # threshold 0: every image is predicted positive
        for index in (10, 25, 40):
            predicted = p[:, digit] >= np.float32(index / 50)
            assert found["recall"][digit][index] == pytest.approx(
                recall_score(y == digit, predicted))
            assert found["precision"][digit][index] == pytest.approx(
                precision_score(y == digit, predicted, zero_division=0))


def test_class_names_become_tags():
    assert tag_of("7") == "7"
    assert tag_of("T-shirt/top") == "T_shirt_top"
