"""A Lightning user's model, the Keras way: a `keras.Model` subclass with its own loss.

`MixupCNN` is a small CNN whose `compute_loss` trains on mixup (Zhang et al. 2018): each batch
is blended with itself in reverse order, images and one-hot labels alike, with a weight drawn
from Beta(alpha, alpha). In Lightning this would be `training_step`; in Keras 3 it is
`compute_loss` (or `train_step`), and digits' Trainer runs it as `model.fit` would, with the
default callbacks, checkpoints, resuming and TensorBoard. Registered for saving, so its
`model.keras` loads in `digits.evaluate`, `digits.predict`, `digits.export` and `digits.serve`
once this module is imported.

Run (a few minutes on 2 CPU cores; Ctrl-C it and run it again: it resumes):
    python examples/lightning-style/mixup_model.py --epochs 10
"""

from __future__ import annotations

import argparse

import keras


@keras.saving.register_keras_serializable(package="digits_examples")
class MixupCNN(keras.Model):
    """Two convolution blocks and a softmax head, trained on mixup of each batch."""

    def __init__(self, alpha: float = 0.2, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.seed = alpha, seed
        self.blocks = [keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
                       keras.layers.MaxPooling2D(), keras.layers.BatchNormalization(),
                       keras.layers.Conv2D(64, 3, activation="relu", padding="same"),
                       keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                       keras.layers.Dropout(0.3)]
        self.head = keras.layers.Dense(10, activation="softmax", dtype="float32")
        self.mix_seed = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        for layer in self.blocks:
            x = layer(x, training=training)
        return self.head(x)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not training or self.alpha <= 0:
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        # Mixup: a convex blend of the batch with its reverse, the labels blended alike.
        ops = keras.ops
        first = keras.random.beta((), self.alpha, self.alpha, seed=self.mix_seed)
        weight = ops.maximum(first, 1.0 - first)  # the batch's own image dominates
        mixed = weight * x + (1.0 - weight) * ops.flip(x, axis=0)
        labels = ops.one_hot(ops.cast(ops.reshape(y, (-1,)), "int32"), 10)
        targets = weight * labels + (1.0 - weight) * ops.flip(labels, axis=0)
        predictions = self(mixed, training=True)
        return ops.mean(keras.losses.categorical_crossentropy(targets, predictions))

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "seed": self.seed}


def main(argv: list[str] | None = None) -> int:
    import digits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--log-dir", default="logs")
    parser.add_argument("--limit-train-batches", type=int, default=None)
    args = parser.parse_args(argv)
    data = digits.load_dataset("mnist-5k", test_dataset="mnist-test")
    trainer = digits.Trainer(max_epochs=args.epochs, log_dir=args.log_dir, name="mixup",
                             limit_train_batches=args.limit_train_batches, resume=True)
    model = MixupCNN(alpha=args.alpha, name="mixup_cnn")
    trainer.fit(model, data)
    result = trainer.test(trainer.best_model(model), data)
    trainer.print_report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
