"""Stochastic weight averaging (`--swa EPOCHS`, `Trainer(swa_epochs=...)`; Izmailov et al. 2018):
the plain mean of the weights at the end of each of the run's last epochs, its batch-norm
statistics recomputed, validated, and kept by the checkpoint if validation prefers it.

The `StochasticWeightAveraging` callback (Lightning's name; the Trainer adds one when
`swa_epochs` is set):
- asks the Trainer for a learning rate that decays by a cosine to `swa_lr` as the averaged
  epochs begin and stays there (`optimizer_options`): a constant rate for the averaged epochs,
  so that they explore around the minimum instead of settling into one point (an average of
  near-identical weights changes nothing);
- keeps the running mean and its count as variables of the run's state (`state_variables`), so
  a resumed run ends with the same average, to the bit;
- takes in each averaged epoch's weights just before the state is saved
  (`on_before_state_save`; never after a fault);
- after the last epoch (`on_fit_end`) puts the mean into the model, gives its batch norms the
  statistics of the mean's own activations (the ones the layers kept belong to the training
  weights), validates it as the epochs were, and offers it to the checkpoint
  (`Trainer.offer_weights`). Unlike Lightning's, the averaged model is kept only if validation
  prefers it to every epoch. What validation said is `trainer.averaged` (and `averaged` in
  metrics.json).
"""

from __future__ import annotations

import time

import numpy as np

from digits.callbacks.base import Callback


class StochasticWeightAverage:
    """The running mean of a model's trainable weights, and the batch-norm recalibration.

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


def swa_schedule(learning_rate: float, swa_lr: float, start_step: int, constant: bool):
    """The learning rate of a run whose averaged epochs begin at `start_step`: a cosine from
    `learning_rate` reaching `swa_lr` there (Keras' `CosineDecay` holds its floor past its
    steps), or `learning_rate` held until then (`constant`), then `swa_lr`."""
    import keras

    if constant:
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [start_step], [learning_rate, swa_lr])
    return keras.optimizers.schedules.CosineDecay(learning_rate, max(1, start_step),
                                                  alpha=swa_lr / learning_rate)


class StochasticWeightAveraging(Callback):
    """Average the weights of a run's last `epochs` epochs, trained at the constant `swa_lr`.

    Args:
        epochs: the epochs to average, the last of the run (1 to all of them).
        swa_lr: their learning rate (`TrainerSettings` defaults it to half the learning rate).

    Example:
        >>> trainer = Trainer(max_epochs=40, swa_epochs=10)   # adds this callback
        >>> trainer.fit(model, data)                           # 'averaged weights, the mean
        >>> trainer.averaged["val_accuracy"]                   #  of epochs 31-40: ...'
    """

    order = 0  # first: its end puts the mean into the model before the others' on_fit_end

    def __init__(self, epochs: int, swa_lr: float) -> None:
        super().__init__()
        self.epochs, self.swa_lr = int(epochs), float(swa_lr)
        self.average: StochasticWeightAverage | None = None

    def start_epoch(self, trainer) -> int:
        """The epochs trained before the first averaged one."""
        return max(0, trainer.max_epochs - self.epochs)

    def optimizer_options(self, trainer, steps_per_epoch: int) -> dict:
        settings = trainer.settings
        return {"learning_rate": swa_schedule(
            settings.learning_rate, self.swa_lr, steps_per_epoch * self.start_epoch(trainer),
            constant=settings.lr_schedule == "constant")}

    def state_variables(self, trainer) -> list:
        self.average = StochasticWeightAverage(trainer.model)
        return self.average.variables

    def on_before_state_save(self, trainer, epoch: int) -> None:
        # A faulted epoch (NaN weights) never joins the average.
        faulted = trainer.stopped is not None and trainer.stopped.fault
        if epoch >= self.start_epoch(trainer) and not faulted:
            self.average.update()

    def on_fit_end(self, trainer) -> None:
        """The mean into the model, its batch-norm statistics recomputed, validated as the
        epochs were, and offered to the checkpoint. It depends only on the saved state (the
        mean, the seed generators), so a run resumed after its last epoch ends the same way."""
        if self.average is None or not self.average.epochs:
            return
        import tensorflow as tf

        from digits.data import make_pipeline

        model, data = trainer.model, trainer.data
        self.average.apply()
        start = time.perf_counter()
        # Shuffled (a class-sorted dataset would give one-class batches), in an order drawn
        # from the seed and the epoch after the last: the same on every resume.
        batches = make_pipeline(data.train, trainer.batch_size, shuffle=True, seed=trainer.seed,
                                epoch=tf.constant(trainer.max_epochs, tf.int64),
                                limit_batches=trainer.settings.train_steps(len(data.train)))
        recalibrated = self.average.recalibrate(batches)
        val = make_pipeline(data.val, trainer.eval_batch_size,
                            limit_batches=trainer.limit_val_batches)
        logs = {f"val_{k}": float(v)
                for k, v in model.evaluate(val, verbose=0, return_dict=True).items()
                if np.ndim(v) == 0}
        first = self.start_epoch(trainer) + 1
        last = first + self.average.epochs - 1
        label = f"the mean of epochs {first}-{last}" if last > first else f"epoch {first}"
        kept = trainer.offer_weights(logs, label)
        trainer.averaged = {"epochs": [first, last], "batch_norm_batches": recalibrated,
                            "seconds": round(time.perf_counter() - start, 3), **logs,
                            **({"kept": kept} if kept is not None else {})}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in logs.items() if k in ("val_loss",
                                                                            "val_accuracy"))
        verdict = "" if kept is None else (" (kept by the checkpoint)" if kept else
                                           " (the checkpoint keeps its best epoch)")
        trainer.notice(f"averaged weights, {label}: {shown}{verdict}")
