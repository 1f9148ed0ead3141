"""The Keras loss and metrics the Trainer compiles in."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from digits.keras_internals import grouped_metrics


@keras.saving.register_keras_serializable(package="digits")
class StreamingConfusionMatrix(keras.metrics.Metric):
    """Accumulates a confusion matrix over the batches Keras already evaluates.

    Compiled into the model by the Trainer, it collects the validation confusion matrix during
    the validation pass of `fit`, so no callback runs a second prediction pass. It reports
    nothing into the logs (its `result()` is empty); read it with `matrix()` in `on_epoch_end`,
    when it holds the validation pass of that epoch.

    Args:
        num_classes: number of classes (default 10).
        name: metric name (default "confusion_matrix").
    """

    def __init__(self, num_classes: int = 10, name: str = "confusion_matrix", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.counts = self.add_variable(
            shape=(num_classes * num_classes,), initializer="zeros", dtype="float32", name="counts"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        n = self.num_classes
        true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        pred = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        flat = ops.bincount(true * n + pred, minlength=n * n)
        self.counts.assign_add(ops.cast(flat[: n * n], "float32"))

    def result(self):
        return {}

    def reset_state(self):
        self.counts.assign(ops.zeros((self.num_classes * self.num_classes,), "float32"))

    def matrix(self) -> np.ndarray:
        """The accumulated (num_classes, num_classes) matrix: rows true, columns predicted."""
        counts = np.asarray(keras.ops.convert_to_numpy(self.counts))
        return counts.reshape(self.num_classes, self.num_classes).round().astype(np.int64)

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name}


PR_THRESHOLDS = 51  # 0.00, 0.02, ..., 1.00: TensorBoard's PR Curves dashboard's default


@keras.saving.register_keras_serializable(package="digits")
class StreamingPRCounts(keras.metrics.Metric):
    """Per class, how many positives and negatives scored in each probability bin, over the
    batches Keras already evaluates: the precision-recall curve of every class at once.

    Like `StreamingConfusionMatrix`, compiled in by the Trainer, silent in the logs, read in
    `on_epoch_end` with `counts()`: (num_classes, num_thresholds, 2) counts of negatives
    ([..., 0]) and positives ([..., 1]) whose probability for the class lies in
    [t / (T - 1), (t + 1) / (T - 1)), so "probability >= threshold t" holds for bins >= t.

    Args:
        num_classes: number of classes (default 10).
        num_thresholds: evenly spaced thresholds from 0 to 1 (default 51).
        name: metric name (default "pr_counts").
    """

    def __init__(self, num_classes: int = 10, num_thresholds: int = PR_THRESHOLDS,
                 name: str = "pr_counts", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes, self.num_thresholds = num_classes, num_thresholds
        self.size = num_classes * num_thresholds * 2
        self.histogram = self.add_variable(shape=(self.size,), initializer="zeros",
                                           dtype="float32", name="histogram")

    def update_state(self, y_true, y_pred, sample_weight=None):
        classes, thresholds = self.num_classes, self.num_thresholds
        true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        positive = ops.cast(ops.one_hot(true, classes), "int32")
        bins = ops.cast(ops.floor(ops.cast(y_pred, "float32") * (thresholds - 1)), "int32")
        bins = ops.clip(bins, 0, thresholds - 1)
        index = (ops.arange(classes, dtype="int32")[None, :] * thresholds + bins) * 2 + positive
        flat = ops.bincount(ops.reshape(index, (-1,)), minlength=self.size)
        self.histogram.assign_add(ops.cast(flat[: self.size], "float32"))

    def result(self):
        return {}

    def reset_state(self):
        self.histogram.assign(ops.zeros((self.size,), "float32"))

    def counts(self) -> np.ndarray:
        counts = np.asarray(keras.ops.convert_to_numpy(self.histogram)).round().astype(np.int64)
        return counts.reshape(self.num_classes, self.num_thresholds, 2)

    def get_config(self):
        return {"num_classes": self.num_classes, "num_thresholds": self.num_thresholds,
                "name": self.name}


def pr_counts(y_true, probabilities, num_thresholds: int = PR_THRESHOLDS) -> np.ndarray:
    """`StreamingPRCounts.counts()` computed with NumPy from labels and probabilities."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    classes = probabilities.shape[1]
    positive = np.eye(classes, dtype=np.int64)[np.asarray(y_true, np.int64)]
    bins = np.clip(np.floor(probabilities * np.float32(num_thresholds - 1)).astype(np.int64),
                   0, num_thresholds - 1)
    index = (np.arange(classes)[None, :] * num_thresholds + bins) * 2 + positive
    size = classes * num_thresholds * 2
    return np.bincount(index.ravel(), minlength=size).reshape(classes, num_thresholds, 2)


@keras.saving.register_keras_serializable(package="digits")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against label-smoothed targets.

    Keras' `SparseCategoricalCrossentropy` has no label smoothing and its
    `CategoricalCrossentropy` wants one-hot labels; this takes the integer labels the data
    pipeline gives and smooths them: the true class gets `1 - s + s/K`, every other `s/K`.
    On a few hundred validation images, smoothing keeps the validation loss from rising with
    the model's confidence late in training, so "best by validation loss" picks a converged
    epoch rather than a lucky early one.

    Args:
        label_smoothing: s, from 0 (plain cross-entropy) to below 1 (default 0.1).
        from_logits: whether the predictions are logits rather than probabilities (default
            False).

    Example:
        >>> model.compile(optimizer="adam", loss=SmoothedSparseCrossentropy(0.1))
    """

    def __init__(self, label_smoothing: float = 0.1, name: str = "smoothed_sparse_crossentropy",
                 from_logits: bool = False, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        classes = y_pred.shape[-1]
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        targets = ops.one_hot(labels, classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(targets, y_pred, from_logits=self.from_logits,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        config = {**super().get_config(), "label_smoothing": self.label_smoothing}
        return {**config, "from_logits": True} if self.from_logits else config


def compiled_metrics(num_classes: int, confusion_matrix: bool = True) -> list:
    """The metrics the Trainer compiles: accuracy, and (`confusion_matrix`) the streaming
    confusion matrix and precision-recall counts that the callbacks read after validation.

    As objects, not the string "accuracy": Keras builds a metric named by a string inside the
    first traced training step, and a step that creates variables makes TensorFlow trace it a
    second time (about 0.5-0.8 s of every fit for the default cnn on 2 cores). Objects are
    built here, so the step is traced once. Create them inside the strategy's scope.
    """
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if confusion_matrix:
        metrics += [StreamingConfusionMatrix(num_classes), StreamingPRCounts(num_classes)]
    return metrics


def flat_metrics(model):
    """Every metric of a compiled model, nested ones (Keras' compile-metrics wrapper) too."""
    stack = list(getattr(model, "metrics", []))
    while stack:
        metric = stack.pop()
        yield metric
        stack.extend(getattr(metric, "metrics", []) or [])
        for group in grouped_metrics(metric):
            stack.extend(getattr(group, "metrics", []) or [])
