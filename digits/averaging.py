"""Averaged weights: the optimizer's exponential moving average, used to validate and save.

Keras keeps the average inside the optimizer (`use_ema=True`): after each update the compiled
training step moves `average = decay * average + (1 - decay) * weight`, so it costs no Python
per step. During a fit the Trainer puts the averages into the model for each validation pass
and keeps them there through the epoch's callbacks (the checkpoint saves them, the reports
show them), then puts the training weights back before the run's state is saved and the next
epoch trains. The swap copies values both ways (Keras' own `SwapEMAWeights` adds and
subtracts, which rounds), so a resumed `--deterministic` run ends bit-identical. After the
last epoch Keras' `fit` leaves the averages in the model (`finalize_variable_values`).

This module is the one place that reads Keras' private names for the averages
(`_model_variables_moving_average`, `_trainable_variables`); `tests/test_averaging.py` checks
that assumption.
"""

from __future__ import annotations


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
        averages = getattr(self.optimizer, "_model_variables_moving_average", None) or []
        variables = getattr(self.optimizer, "_trainable_variables", None) or []
        return [(v, a) for v, a in zip(variables, averages, strict=True) if a is not None]

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
