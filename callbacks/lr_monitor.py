"""Record the optimizer's learning rate each epoch, as `learning_rate` in the epoch logs."""

from __future__ import annotations

from digits.callbacks.base import Callback


class LearningRateMonitor(Callback):
    """Put the learning rate of each epoch into its logs as `learning_rate`.

    The value is the rate at the start of the epoch (as Lightning's `LearningRateMonitor`
    logs it): with a schedule that decays every step, the rate the epoch began with. It is
    written into the epoch logs, so Keras' History, the run's metrics.json, TensorBoard
    scalars and the progress line all see it. A `LearningRateSchedule` is evaluated at the
    optimizer's step count.

    Args:
        key: the log key to write (default "learning_rate").

    Example:
        >>> trainer = Trainer(max_epochs=3, callbacks=[LearningRateMonitor()])
        >>> trainer.fit(trainer.build_model("mlp"), load_dataset("mnist-5k"))
        >>> trainer.history["learning_rate"]
        [0.002, 0.00134, 0.000674]
    """

    # Early, so that every later callback in the same epoch sees the rate in the logs.
    order = 5

    def __init__(self, key: str = "learning_rate") -> None:
        super().__init__()
        self.key = key
        self._rate: float | None = None

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._rate = current_learning_rate(getattr(self.model, "optimizer", None))

    def on_epoch_end(self, epoch, logs=None) -> None:
        rate = self._rate
        if rate is None:
            rate = current_learning_rate(getattr(self.model, "optimizer", None))
        if rate is not None and logs is not None:
            logs[self.key] = rate


def current_learning_rate(optimizer) -> float | None:
    """The learning rate `optimizer` would apply at its next step (None without one).

    Example:
        >>> current_learning_rate(keras.optimizers.Adam(1e-3))
        0.001
    """
    import keras

    if optimizer is None:
        return None
    # A loss-scale optimizer (mixed_float16) delegates the rate to the one it wraps.
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    rate = getattr(optimizer, "learning_rate", None)
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        rate = rate(optimizer.iterations)
    elif callable(rate) and not hasattr(rate, "shape"):
        rate = rate()
    if rate is None:
        return None
    return float(keras.ops.convert_to_numpy(rate))
