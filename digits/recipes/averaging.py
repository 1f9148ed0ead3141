"""Averaged weights: the optimizer's exponential moving average, used to validate and save,
and stochastic weight averaging over a run's last epochs (`StochasticWeightAverage`).

Keras keeps the average inside the optimizer (`use_ema=True`): after each update the compiled
training step moves `average = decay * average + (1 - decay) * weight`, so it costs no Python
per step. During a fit the Trainer puts the averages into the model for each validation pass
and keeps them there through the epoch's callbacks (the checkpoint saves them, the reports
show them), then puts the training weights back before the run's state is saved and the next
epoch trains. The swap copies values both ways (Keras' own `SwapEMAWeights` adds and
subtracts, which rounds), so a resumed `--deterministic` run ends bit-identical. After the
last epoch Keras' `fit` leaves the averages in the model (`finalize_variable_values`).

Keras' private names for the averages are read through `digits.keras_internals`.
"""

from __future__ import annotations

import numpy as np


def optimizer_with_averages(model):
    """The model's optimizer that keeps weight averages (inside a loss-scale wrapper too), or
    None when it keeps none."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if optimizer is None or not getattr(optimizer, "use_ema", False):
        return None
    return optimizer


class WeightAverage:
    """Swaps a model's training weights and its optimizer's moving averages, exactly.

    Example:
        >>> average = WeightAverage.of(model)     # None unless the optimizer has use_ema
        >>> average.use_average()                  # the model now holds the averages
        >>> average.use_training()                 # and its training weights again
    """

    def __init__(self, optimizer) -> None:
        self.optimizer = optimizer
        self.in_model = False

    @classmethod
    def of(cls, model) -> WeightAverage | None:
        optimizer = optimizer_with_averages(model)
        return None if optimizer is None else cls(optimizer)

    def pairs(self) -> list:
        """(model variable, its average) for every averaged variable; empty before the
        optimizer is built."""
        from digits.keras_internals import optimizer_averages

        return optimizer_averages(self.optimizer)

    def use_average(self) -> None:
        """Put the averages into the model (and its training weights where they were)."""
        if not self.in_model:
            self._swap()
            self.in_model = True

    def use_training(self) -> None:
        """Put the training weights back into the model."""
        if self.in_model:
            self._swap()
            self.in_model = False

    def _swap(self) -> None:
        for variable, average in self.pairs():
            training = variable.numpy().copy()
            variable.assign(average.numpy())
            average.assign(training)


class StochasticWeightAverage:
    """Stochastic weight averaging (Izmailov et al. 2018): the plain mean of the weights at
    the end of each of the run's last epochs, then batch-norm statistics recomputed for it.

    The Trainer makes one for a fit with `swa_epochs`: `update` at the end of each averaged
    epoch (before the run's state is saved: the running mean and its count are variables of
    the state, `variables`, so a resumed run ends with the same average), and after the last
    epoch `apply` puts the mean into the model and `recalibrate` gives its batch norms the
    statistics of the mean's own activations (the ones the layers kept belong to the
    training weights). Lightning's `StochasticWeightAveraging` is the anchor; unlike it,
    the Trainer validates the averaged model and keeps it only if validation prefers it.

    Example:
        >>> average = StochasticWeightAverage(model)
        >>> average.update()                      # after each averaged epoch
        >>> average.apply(); average.recalibrate(batches)
    """

    def __init__(self, model) -> None:
        import keras

        self.model = model
        self.weights = list(model.trainable_variables)
        self.means = [keras.Variable(np.zeros(tuple(v.shape), np.float32), trainable=False,
                                     name=f"swa_mean_{i}") for i, v in enumerate(self.weights)]
        self.count = keras.Variable(0, dtype="int64", trainable=False, name="swa_count")

    @property
    def variables(self) -> list:
        """What a resumed run needs: the running means and how many epochs they hold."""
        return [*self.means, self.count]

    @property
    def epochs(self) -> int:
        return int(self.count.numpy())

    def update(self) -> None:
        """Add the model's current weights to the mean (in float32, whatever they train in)."""
        n = self.epochs
        for mean, weight in zip(self.means, self.weights, strict=True):
            value = np.asarray(weight.numpy(), np.float32)
            if n:
                so_far = mean.numpy()
                value = so_far + (value - so_far) / (n + 1)
            mean.assign(value)
        self.count.assign(n + 1)

    def apply(self) -> None:
        """Put the mean into the model (nothing changes before the first `update`)."""
        if self.epochs:
            for mean, weight in zip(self.means, self.weights, strict=True):
                weight.assign(mean.numpy().astype(weight.dtype))

    def recalibrate(self, batches) -> int:
        """Recompute every batch norm's moving statistics as the mean of the batch statistics
        over `batches` (an iterable of (x, y), in training mode: the augmentation and
        dropout that the training weights saw, as Lightning's `bn_update`). Returns the
        number of batches seen (0: a model without batch norm is left as it is)."""
        import keras
        import tensorflow as tf

        from digits.keras_internals import all_layers

        layers = [layer for layer in all_layers(self.model)
                  if isinstance(layer, keras.layers.BatchNormalization)]
        if not layers:
            return 0
        momenta = [layer.momentum for layer in layers]
        statistics = [(layer.moving_mean, layer.moving_variance) for layer in layers]
        sums = [[np.zeros(tuple(v.shape), np.float64) for v in pair] for pair in statistics]
        seen = 0
        try:
            for layer in layers:
                layer.momentum = 0.0  # each pass leaves exactly its batch's statistics
            forward = tf.function(lambda x: self.model(x, training=True))  # traced once
            for x, _ in batches:
                forward(x)
                for total, pair in zip(sums, statistics, strict=True):
                    for accumulated, variable in zip(total, pair, strict=True):
                        accumulated += variable.numpy()
                seen += 1
        finally:
            for layer, momentum in zip(layers, momenta, strict=True):
                layer.momentum = momentum
        if seen:  # the plain mean of the batches' statistics (PyTorch's momentum=None)
            for total, pair in zip(sums, statistics, strict=True):
                for accumulated, variable in zip(total, pair, strict=True):
                    variable.assign((accumulated / seen).astype(np.float32))
        return seen
