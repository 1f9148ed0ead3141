"""Per-epoch scalars in TensorBoard, in the layout of Keras' own TensorBoard callback.

Also home of `summary_writer`, the one place where TensorBoard writers are created: every
callback of a run that writes summaries into `<run>/<split>` shares one writer for that
directory, so a run directory holds one event file per split and stage, not one per callback.
"""

from __future__ import annotations

import re
import time

import numpy as np

from callbacks.base import Callback
from callbacks.lr_monitor import current_learning_rate


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

    Writers are created once when fitting starts, flushed after every epoch and closed when
    the stage ends (in `teardown`, after every callback's `on_fit_end` has had its say). Other callbacks find them with `summary_writer(trainer, split)` or
    `writers`; `log_dir` is the run directory.

    Args:
        (none)

    Example:
        >>> trainer = Trainer(callbacks=[TensorBoardScalars()], max_epochs=5)
        >>> trainer.fit(trainer.build_model("cnn"), load_dataset("mnist-5k"))
        >>> # then: tensorboard --logdir logs
    """

    order = 10

    def __init__(self) -> None:
        super().__init__()
        self.log_dir: str | None = None
        self._epoch_started: float | None = None
        self._training_ended: float | None = None

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
