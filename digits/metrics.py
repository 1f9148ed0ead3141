"""Keras metrics the Trainer compiles in."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


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
