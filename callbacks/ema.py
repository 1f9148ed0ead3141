"""Averaged weights (`--ema DECAY`, `Trainer(ema_decay=...)`): the optimizer's exponential moving
average of the weights, used to validate, checkpoint and finish.

Keras keeps the average inside the optimizer (`use_ema=True`): after each update the compiled
training step moves `average = decay * average + (1 - decay) * weight`, so it costs no Python
per step. The `EMA` callback asks the Trainer for such an optimizer (`optimizer_options`), puts
the averages into the model as each validation pass begins (`on_evaluate_begin`: the first
callback to act, so the reports and the checkpoint see them through the epoch's callbacks), and
the training weights back just before the run's state is saved (`on_before_state_save`), so
the next epoch trains on them. The swap copies values both ways (Keras' own `SwapEMAWeights`
adds and subtracts, which rounds), so a resumed `--deterministic` run ends bit-identical.
After the last epoch Keras' `fit` leaves the averages in the model (`finalize_variable_values`).

Keras' private names for the averages are read through `digits.keras_internals`.
"""

from __future__ import annotations

from digits.callbacks.base import Callback


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


class EMA(Callback):
    """Validate, checkpoint and finish with the exponential moving average of the weights.

    The Trainer adds one when `ema_decay` is set (`--ema DECAY`), and one without a decay when
    the model arrives compiled with an optimizer that has `use_ema=True` (then that optimizer's
    own average is used). A Keras `SwapEMAWeights` is refused beside it.

    Args:
        decay: the average's decay per step (e.g. 0.99), for the optimizer the Trainer builds;
            None: only a user's optimizer with `use_ema=True` averages.

    Example:
        >>> trainer = Trainer(ema_decay=0.99)      # adds EMA(0.99) at the head of the callbacks
        >>> trainer.fit(model, data)
        >>> ema = next(c for c in trainer.callbacks if isinstance(c, EMA))
        >>> ema.average.pairs()                   # (weight, its average) of every weight
    """

    order = 0  # before every other callback: they see the averages at an epoch's end

    def __init__(self, decay: float | None = None) -> None:
        super().__init__()
        self.decay = decay
        self.average: WeightAverage | None = None
        self._fitting = False

    def optimizer_options(self, trainer, steps_per_epoch: int) -> dict:
        if self.decay is None:
            return {}
        return {"use_ema": True, "ema_momentum": self.decay}

    def on_fit_start(self, trainer) -> None:
        self.average = WeightAverage.of(trainer.model)
        self._fitting = True

    def on_evaluate_begin(self, logs=None) -> None:
        # A fit's validation pass, and the epoch's callbacks after it, see the averages.
        if self._fitting and self.average is not None:
            self.average.use_average()

    def on_before_state_save(self, trainer, epoch: int) -> None:
        # The state holds what trains on, and the next epoch trains on it.
        if self.average is not None:
            self.average.use_training()

    def on_fit_end(self, trainer) -> None:
        self._fitting = False

    def teardown(self, trainer, stage: str) -> None:
        if stage == "fit":
            self._fitting = False
