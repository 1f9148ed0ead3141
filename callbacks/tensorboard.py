"""Per-epoch scalars in TensorBoard, in the layout of Keras' own TensorBoard callback.

Also home of `summary_writer`, the one place where TensorBoard writers are created: every
callback of a run that writes summaries into `<run>/<split>` shares one writer for that
directory, so a run directory holds one event file per split and stage, not one per callback.
"""

from __future__ import annotations

import re
import time

import numpy as np

from digits.callbacks.base import Callback
from digits.callbacks.lr_monitor import current_learning_rate


def _writers(trainer) -> dict:
    """The trainer's open writers: (resolved run directory, split) -> tf.summary writer."""
    writers = getattr(trainer, "summary_writers", None)
    if writers is None:  # a trainer-like object of a plugin's own
        writers = trainer.summary_writers = {}
    return writers


def summary_writer(trainer, split: str):
    """The tf.summary writer of `<run>/<split>`, created on first use and shared by all callbacks.

    Args:
        trainer: the Trainer whose run directory (`trainer.run.path`) the writer belongs to.
        split: the subdirectory: "train", "validation" or "test" (a plain name).

    Example:
        >>> with summary_writer(trainer, "validation").as_default():
        ...     tf.summary.scalar("epoch_custom", 1.0, step=epoch)
    """
    if not re.fullmatch(r"[\w.-]+", split) or split in (".", ".."):
        raise ValueError(f"split must be a plain directory name, got {split!r}")
    if trainer.run is None:
        raise ValueError("the trainer has no run directory yet (summaries are written during fit "
                         "or test)")
    key = (str(trainer.run.path.resolve()), split)
    writers = _writers(trainer)
    writer = writers.get(key)
    if writer is None:
        import tensorflow as tf

        writer = writers[key] = tf.summary.create_file_writer(str(trainer.run.path / split))
    return writer


def close_summary_writers(trainer) -> None:
    """Flush and close every writer of the trainer's run; a later `summary_writer` opens anew.

    Each callback that writes summaries calls this in `teardown`; closing is idempotent, so
    the first caller closes the writers and the others find nothing left to close.
    """
    if trainer is None or trainer.run is None:
        return
    run, writers = str(trainer.run.path.resolve()), _writers(trainer)
    for key in [k for k in writers if k[0] == run]:
        writers.pop(key).close()


def summary_step(trainer) -> int:
    """The step of a test summary: the index of the last trained epoch, as validation uses."""
    return max(int(getattr(trainer, "current_epoch", 0) or 0) - 1, 0)


class TensorBoardScalars(Callback):
    """Write each epoch's loss, accuracy, learning rate and speed as TensorBoard scalars.

    Training metrics go to `<run>/train` and validation metrics (the `val_` logs, prefix
    dropped) to `<run>/validation`, tagged `epoch_<metric>` at step = epoch index, as Keras'
    TensorBoard callback lays them out. `train/` also gets `epoch_learning_rate` (the logs'
    `learning_rate` when a callback such as `lr_monitor` put one there, else read from the
    optimizer, so schedules show their current value), `epoch_time_seconds` (the whole epoch,
    validation included) and `epoch_images_per_second` (training images over training time).

    After `Trainer.test`, `<run>/test` gets `test/accuracy` and `test/loss` (the HParams table's
    test columns). When fitting starts, a Custom Scalars layout puts train and validation loss
    and accuracy, the learning rate and the throughput on one page.

    Writers are created once when fitting starts, flushed after every epoch and closed when
    the stage ends (in `teardown`, after every callback's `on_fit_end` has had its say).
    Other callbacks find them with `summary_writer(trainer, split)` or `writers`; `log_dir` is
    the run directory.

    Args:
        update_freq: also write `batch_loss`, `batch_accuracy` (and the other training logs)
            in `<run>/train` every this many training batches, at step = batches trained so
            far (default: never). Keras reports batches once per compiled call
            (`steps_per_execution`, 32 by default), so that is the finest it can be.
        histogram_freq: every this many epochs, histograms of every trainable weight
            (`weights/<name>`) and of its gradient on one training batch, in inference mode
            (`gradients/<name>`), in `<run>/train` (default 0: never).

    Example:
        >>> trainer = Trainer(callbacks=[TensorBoardScalars()], max_epochs=5)
        >>> trainer.fit(trainer.build_model("cnn"), load_dataset("mnist-5k"))
        >>> # then: tensorboard --logdir logs
    """

    needs_trainer = True

    order = 10

    def __new__(cls, update_freq: int | None = None, histogram_freq: int = 0):
        # Batch hooks only when asked for: the Trainer passes a batch hook only to the
        # callbacks whose class defines one.
        if update_freq is not None and cls is TensorBoardScalars:
            cls = _TensorBoardScalarsWithBatches
        return super().__new__(cls)

    def __init__(self, update_freq: int | None = None, histogram_freq: int = 0) -> None:
        super().__init__()
        for label, value, low in (("update_freq", update_freq, 1),
                                  ("histogram_freq", histogram_freq, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not low <= value <= 1_000_000):
                raise ValueError(f"{label} must be a whole number >= {low}, got {value!r}")
        self.update_freq = update_freq
        self.histogram_freq = histogram_freq
        self.log_dir: str | None = None
        self._epoch_started: float | None = None
        self._training_ended: float | None = None
        self._batches_written = 0

    @property
    def writers(self) -> dict:
        """The open writers of the current run, by split (empty before fitting and after)."""
        if self.trainer is None or self.trainer.run is None:
            return {}
        run = str(self.trainer.run.path.resolve())
        return {split: writer for (path, split), writer in _writers(self.trainer).items()
                if path == run}

    def on_fit_start(self, trainer) -> None:
        self.log_dir = str(trainer.run.path)
        for split in ("train", "validation"):
            summary_writer(trainer, split)
        write_layout(summary_writer(trainer, "train"))

    def on_test_end(self, trainer, result) -> None:
        if trainer.run is None:
            return
        import tensorflow as tf

        writer = summary_writer(trainer, "test")
        with writer.as_default():
            tf.summary.scalar("test/accuracy", result.accuracy, step=summary_step(trainer))
            tf.summary.scalar("test/loss", result.loss, step=summary_step(trainer))
        writer.flush()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()
        self._training_ended = None

    def on_evaluate_begin(self, logs=None):
        if self._epoch_started is not None and self._training_ended is None:
            self._training_ended = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        now = time.perf_counter()
        train, validation = {}, {}
        for key, value in (logs or {}).items():
            if np.ndim(value) != 0:
                continue
            if key.startswith("val_"):
                validation[key[4:]] = float(value)
            else:
                train[key] = float(value)
        if "learning_rate" not in train:
            # The logs' value wins when there is one (the lr_monitor callback puts the rate the
            # epoch began with there), so TensorBoard and metrics.json agree.
            learning_rate = current_learning_rate(getattr(self.model, "optimizer", None))
            if learning_rate is not None:
                train["learning_rate"] = learning_rate
        if self._epoch_started is not None:
            train["time_seconds"] = now - self._epoch_started
            training_seconds = (self._training_ended or now) - self._epoch_started
            images = self._training_images()
            if images and training_seconds > 0:
                train["images_per_second"] = images / training_seconds
        for split, scalars in (("train", train), ("validation", validation)):
            if not scalars:
                continue
            writer = summary_writer(self.trainer, split)
            with writer.as_default():
                for name, value in scalars.items():
                    tf.summary.scalar(f"epoch_{name}", value, step=epoch)
            writer.flush()
        if self.histogram_freq and (epoch + 1) % self.histogram_freq == 0:
            self._write_histograms(epoch)

    def _write_histograms(self, epoch: int) -> None:
        """Every trainable weight, and its gradient on the first training batch, as histograms.

        The gradient is taken in inference mode: a training-mode call would draw from the
        dropout and augmentation generators and move the batch-norm statistics, and so change
        the run it observes."""
        import tensorflow as tf

        trainer, model = self.trainer, self.model
        batch = trainer.data.train.take(min(len(trainer.data.train), trainer.batch_size))
        x, y = tf.constant(batch.x), tf.constant(batch.y)
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=False), training=False)
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        with summary_writer(trainer, "train").as_default():
            for variable, gradient in zip(variables, gradients, strict=True):
                name = variable.path.replace(":", "_")
                tf.summary.histogram(f"weights/{name}", variable, step=epoch)
                if gradient is not None:
                    tf.summary.histogram(f"gradients/{name}", gradient, step=epoch)

    def _training_images(self) -> int | None:
        """Images in one training epoch: the training split, cut by `limit_train_batches`."""
        trainer = self.trainer
        if trainer is None or trainer.data is None or trainer.data.train is None:
            return None
        images = len(trainer.data.train)
        steps = (self.params or {}).get("steps")
        if steps:
            images = min(images, int(steps) * trainer.batch_size)
        return images

    def teardown(self, trainer, stage: str) -> None:
        close_summary_writers(trainer)


class _TensorBoardScalarsWithBatches(TensorBoardScalars):
    """`TensorBoardScalars(update_freq=N)`: the training logs every N batches too."""

    def on_train_batch_end(self, batch, logs=None):
        import tensorflow as tf

        trainer = self.trainer
        steps = (self.params or {}).get("steps") or 0
        done = trainer.current_epoch * steps + batch + 1
        if trainer.run is None or done - self._batches_written < self.update_freq:
            return
        self._batches_written = done
        writer = summary_writer(trainer, "train")
        with writer.as_default():
            for key, value in (logs or {}).items():
                if np.ndim(value) == 0:
                    tf.summary.scalar(f"batch_{key}", float(value), step=done)


def write_layout(writer) -> None:
    """The Custom Scalars page: train and validation loss and accuracy, learning rate and
    throughput, each chart over every run that has the tag (TensorBoard merges the layouts
    of all runs, dropping repeats)."""
    import tensorflow as tf
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import summary as custom_scalar

    charts = [("loss: train and validation", r"^epoch_loss$"),
              ("accuracy: train and validation", r"^epoch_accuracy$"),
              ("learning rate", r"^epoch_learning_rate$"),
              ("images per second (training)", r"^epoch_images_per_second$")]
    layout = layout_pb2.Layout(category=[layout_pb2.Category(
        title="digits: a run at a glance",
        chart=[layout_pb2.Chart(title=title,
                                multiline=layout_pb2.MultilineChartContent(tag=[regex]))
               for title, regex in charts])])
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(custom_scalar.pb(layout).SerializeToString(),
                                             step=0)
    writer.flush()
