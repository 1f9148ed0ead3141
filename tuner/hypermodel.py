"""The keras-tuner HyperModel: builds through `digits`, trains through digits' `Trainer`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import keras
import keras_tuner

from digits.callbacks.base import Callback
from digits.callbacks.hparams import HParams, with_hparams
from digits.errors import ConfigError, ModelError
from digits.tuner import space


class DigitsHyperModel(keras_tuner.HyperModel):
    """The CNN's architecture, optimizer and learning rate as a search space; trials train
    through digits' `Trainer`, so every callback plugin runs inside every trial.

    `build(hp)` declares `digits.tuner.space.SEARCH_SPACE` (conv blocks, filters, kernel size, convs
    per block, BatchNorm, dropouts, dense width, augmentation, optimizer, learning rate) and
    builds with `Trainer.build_model("cnn", ...)`: a searched model is the same kind of object
    as a hand-picked one. `fit(hp, model, data, ...)` trains it with a fresh `Trainer` whose
    optimizer and learning rate come from `hp`, with fresh callback instances from
    `callbacks()` plus keras-tuner's own (`SaveBestEpoch` keeps each trial's best epoch, which
    Hyperband continues from), honouring keras-tuner's `epochs` and `initial_epoch`.

    Each trial's runs land in `<trial dir>/execution_<e>/version_<n>/` (keras-tuner's
    `<directory>/<project>/trial_<id>/`), with an HParams session for TensorBoard. A trial that
    was cut off resumes from its last finished epoch.

    Args:
        callbacks: returns fresh callback instances for one trial (default: the default
            callbacks of `digits.callbacks.registry`).
        trainer_options: more `Trainer` arguments for every trial (`batch_size`,
            `limit_train_batches`, `precision`, ...; not `optimizer`, `learning_rate`,
            `max_epochs`, `callbacks`, `log_dir`, `name` or `seed`, which are the search's).
        seed: seed of the weights, the data order and the dropout; execution e of a trial uses
            `seed + e` (default 0).
        max_epochs: epochs of a trial when keras-tuner passes none (default 10).
        log_dir: where runs go when the tuner gives no trial directory (default "logs/tune").
        costs: what each trial also measures of its model (`digits.deploy.costs.COSTS`:
            "latency", "size", "params"), kept in the trial's metrics as `cost_latency_ms`,
            `cost_size_bytes`, `cost_params` (a multi-objective search's other axes).
        build_model: your own search space instead of the CNN's: a function `hp ->
            keras.Model` (Sequential, functional, a `keras.Model` subclass with its own
            `train_step` or `compute_loss`, compiled by you or not), as keras-tuner's
            `build(hp)` is written. The optimizer and learning rate are read from `hp`'s
            "optimizer" and "learning_rate" where it declares them, else the Trainer's
            defaults (or the model's own, when you compiled it).

    Example:
        >>> hypermodel = DigitsHyperModel(trainer_options={"batch_size": 64})
        >>> search = keras_tuner.RandomSearch(hypermodel, objective="val_accuracy",
        ...                                   max_trials=4, directory="logs/tune")
        >>> search.search(digits.load_dataset("mnist-5k"), epochs=2)

        Your own model:
        >>> def build(hp):
        ...     hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
        ...     return MyModel(units=hp.Int("units", 32, 256, step=32))  # a keras.Model subclass
        >>> hypermodel = DigitsHyperModel(build_model=build)
    """

    def __init__(self, callbacks: Callable[[], list] | None = None,
                 trainer_options: dict | None = None, seed: int = 0, max_epochs: int = 10,
                 log_dir: str | os.PathLike = "logs/tune",
                 build_model: Callable[[keras_tuner.HyperParameters], keras.Model] | None = None,
                 costs: frozenset[str] | set[str] = frozenset()) -> None:
        super().__init__(name="digits-cnn" if build_model is None else "digits-own-model")
        if build_model is not None and not callable(build_model):
            raise ConfigError("build_model must be a function hp -> keras.Model")
        self.build_model = build_model
        self.costs = frozenset(costs)
        reserved = {"optimizer", "learning_rate", "max_epochs", "callbacks", "log_dir", "name",
                    "seed", "resume"} & set(trainer_options or {})
        if reserved:
            raise ConfigError(f"trainer_options may not set {', '.join(sorted(reserved))}: "
                              "the search sets them")
        self.callbacks = callbacks
        self.trainer_options = dict(trainer_options or {})
        self.seed = int(seed)
        self.max_epochs = int(max_epochs)
        self.log_dir = Path(log_dir)
        # Set by the tuner before each build: execution e of a trial starts from seed + e.
        self.execution = 0
        # What the last `fit` did, for the tuner's trial records.
        self.last_runs: list[Path] = []
        self.last_epochs = 0
        self.last_costs: dict[str, float] = {}

    def _trainer(self, **kwargs):
        from digits.engine.trainer import Trainer

        return Trainer(**{**self.trainer_options, **kwargs})

    def build(self, hp):
        if self.build_model is not None:
            # Seeded as the Trainer seeds its own builds: the same initial weights for the same
            # seed, whichever trial came before.
            keras.utils.set_random_seed(self.seed + self.execution)
            model = self.build_model(hp)
            if not isinstance(model, keras.Model):
                raise keras_tuner.errors.FailedTrialError(
                    f"build_model returned {type(model).__name__}, not a keras.Model")
            if not model.built:
                # Built by one call on one blank image, as the Trainer builds it: keras-tuner
                # loads a trial's best weights into a model straight from here.
                import numpy as np

                from digits.models import model_shapes

                model_shapes(model, np.zeros((1, 28, 28, 1), np.float32))
            return model
        hyperparameters, _, _ = space.declare(hp, small=bool(self.costs))
        # The Trainer seeds Keras before building: the same initial weights for the same seed,
        # whichever trial came before.
        trainer = self._trainer(seed=self.seed + self.execution, callbacks=[])
        try:
            return trainer.build_model(space.MODEL, **hyperparameters)
        except ModelError as e:
            # The same values would fail again: no retry.
            raise keras_tuner.errors.FailedTrialError(f"ModelError: {e}") from e

    def fit(self, hp, model, data, *args, callbacks=None, epochs: int | None = None,
            initial_epoch: int = 0, trial_id: str | None = None, execution: int = 0,
            trial_dir: str | os.PathLike | None = None, **kwargs):
        """Train `model` on `data` (a `digits.data.Dataset`) with a fresh Trainer.

        Returns a Keras `History` of every epoch this trial trained, including epochs
        trained before a resume, which keras-tuner reads the objective from.
        """
        from digits.callbacks.registry import default_callbacks
        from digits.errors import CallbackRaised, TrainingStopped

        if self.build_model is None:
            _, optimizer, learning_rate = space.declare(hp, small=bool(self.costs))
            searched = {"optimizer": optimizer, "learning_rate": float(learning_rate)}
        else:  # the user's space: what it declares of these, the rest left to the Trainer
            searched = {k: hp.values[k] for k in ("optimizer", "learning_rate") if k in hp.values}
        fresh = self.callbacks() if self.callbacks is not None else default_callbacks()
        group = f"trial_{trial_id}" if trial_id is not None else None
        keras_tuner_callbacks = list(callbacks or [])
        values = space.searched_values(dict(hp.values))
        trial_callbacks = [*with_hparams(fresh, HParams(values, group=group)),
                           _RestoreBestOnResume(keras_tuner_callbacks), *keras_tuner_callbacks]
        trainer = self._trainer(
            max_epochs=int(epochs or self.max_epochs),
            callbacks=trial_callbacks,
            log_dir=Path(trial_dir) if trial_dir is not None else self.log_dir / "trials",
            name=f"execution_{execution}",
            seed=self.seed + execution,
            resume=True,
            **searched,
        )
        config = {"command": "tune", "trial": trial_id, "execution": execution,
                  "search_values": values}
        self.last_runs, self.last_epochs, self.last_costs = [], 0, {}
        if self.costs:
            # What the architecture costs to run (its weights do not change it), measured on a
            # copy before training; the tuner reports it with every epoch.
            from digits.deploy.costs import measure_costs
            from digits.deploy.runtimes import first_line

            try:
                self.last_costs = measure_costs(self.build(hp), data, self.costs)
            except keras_tuner.errors.FailedTrialError:
                raise
            except Exception as e:  # noqa: BLE001 - an exporter's failure is the trial's
                raise keras_tuner.errors.FailedTrialError(
                    f"cannot measure its costs: {first_line(e)}") from e
        try:
            trainer.fit(model, data, config=config, initial_epoch=int(initial_epoch or 0))
        except (ModelError, ConfigError, TrainingStopped, CallbackRaised) as e:
            # Deterministic failures (a NaN loss, a model the data cannot feed, a failing
            # callback) would fail again on a retry: the trial fails with this reason.
            raise keras_tuner.errors.FailedTrialError(f"{type(e).__name__}: {e}") from e
        finally:
            if trainer.run is not None:
                self.last_runs.append(trainer.run.path)
            self.last_epochs = trainer.current_epoch
        history = keras.callbacks.History()
        history.history = {key: list(series) for key, series in trainer.history.items()}
        return history


class _RestoreBestOnResume(Callback):
    """On a resumed trial, tell keras-tuner's `SaveBestEpoch` the best score of the epochs
    trained before the cut, so it only overwrites the trial's checkpoint with a better one."""

    name = "keras_tuner_resume"
    order = 1

    def __init__(self, keras_tuner_callbacks: list) -> None:
        super().__init__()
        self.keras_tuner_callbacks = keras_tuner_callbacks

    def on_fit_start(self, trainer) -> None:
        if not trainer.resumed_from_epoch:
            return
        epochs = max((len(v) for v in trainer.history.values()), default=0)
        for callback in self.keras_tuner_callbacks:
            # keras-tuner's SaveBestEpoch, by what it has rather than by its internal module.
            if not (hasattr(callback, "objective") and hasattr(callback, "best_value")):
                continue
            objective = callback.objective
            for epoch in range(epochs):
                logs_then = {k: v[epoch] for k, v in trainer.history.items() if epoch < len(v)}
                if objective.has_value(logs_then):
                    value = objective.get_value(logs_then)
                    if objective.better_than(value, callback.best_value):
                        callback.best_value = value
