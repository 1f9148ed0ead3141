"""The one place digits reaches into Keras' private parts.

Keras' public API has no walk over every nested layer of a model, no list of the metrics a
compiled-metrics wrapper holds, and no handle on the optimizer's moving averages of the weights
(`use_ema=True`). Each of those leans on a private name, and each is here, with the assumption
it makes written down and checked by a test of its own (`tests/test_keras_internals.py`), so
that a Keras release that moves one breaks one test with a clear message, not a run (as
`digits.tuner.keras_tuner_internals` does for keras-tuner).
"""

from __future__ import annotations


def all_layers(model) -> list:
    """Every layer of `model`, those of nested models and layers too, the model itself not.

    Assumes: `Layer._flatten_layers(include_self=False, recursive=True)` walks them so.
    """
    return list(model._flatten_layers(include_self=False, recursive=True))


def grouped_metrics(metric) -> list:
    """The metric groups a compiled-metrics wrapper keeps beside its `metrics` (Keras'
    `CompileMetrics`), each with a `metrics` list of its own; [] for any other metric.

    Assumes: `CompileMetrics._flat_metrics` is that list.
    """
    return list(getattr(metric, "_flat_metrics", None) or [])


def optimizer_averages(optimizer) -> list:
    """(trainable variable, its moving average) for every variable an optimizer built with
    `use_ema=True` averages; [] before it is built, or without averages.

    Assumes: the optimizer keeps the averages in `_model_variables_moving_average`, in the
    order of the variables in `_trainable_variables` (None where a variable is not averaged).
    """
    averages = getattr(optimizer, "_model_variables_moving_average", None) or []
    variables = getattr(optimizer, "_trainable_variables", None) or []
    return [(v, a) for v, a in zip(variables, averages, strict=True) if a is not None]
