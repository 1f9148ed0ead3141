"""Confusion-matrix images in TensorBoard: the validation matrix every few epochs, and the test one.

The picture itself is drawn by `digits.callbacks.drawing` (shared with the `plots` callback, which
writes it as `confusion_matrix.png`).
"""

from __future__ import annotations

import numpy as np

from digits.callbacks.base import EveryNEpochs
from digits.callbacks.drawing import (  # noqa: F401 - public here since digits 0.1
    default_font,
    draw_confusion_matrix,
    png_bytes,
    render_confusion_matrix,
    write_image,
)
from digits.callbacks.tensorboard import close_summary_writers, summary_step, summary_writer
from digits.engine.results import confusion_matrix_from_predictions  # noqa: F401 - public here too


def validation_confusion_matrix(trainer, model=None) -> np.ndarray | None:
    """The validation confusion matrix of the epoch that just ended (`Trainer`'s, which
    reads the streaming metric, or predicts once per epoch for a model compiled without it)."""
    return trainer.validation_confusion_matrix()


class ConfusionMatrixImages(EveryNEpochs):
    """Show the validation confusion matrix in TensorBoard every few epochs, and the test one.

    Every `every_n_epochs` epochs (and after the last one, also when stopped early) the
    validation confusion matrix
    becomes an image tagged `confusion_matrix` in `<run>/validation` at step = epoch index,
    under TensorBoard's Images tab. The matrix comes from the validation pass Keras already
    ran: no second prediction pass. After `Trainer.test`, the test matrix is written as
    `test/confusion_matrix` in `<run>/test`. Each image shows counts and row-normalised
    fractions side by side.

    Args:
        every_n_epochs: draw the validation matrix every this many epochs (default 1).

    Example:
        >>> trainer = Trainer(callbacks=[TensorBoardScalars(), ConfusionMatrixImages(every_n_epochs=2)])
        >>> trainer.fit(model, data)
        >>> trainer.test(model, data)
    """

    needs_trainer = True

    order = 20
    heavy = True

    def on_due_epoch(self, epoch: int) -> None:
        trainer = self.trainer
        if trainer is None or trainer.run is None:
            return
        matrix = validation_confusion_matrix(trainer, self.model)
        if matrix is None:
            return
        matrix = np.array(matrix, copy=True)
        names, writer = trainer.data.class_names, summary_writer(trainer, "validation")

        def draw_and_write() -> None:  # ~45 ms, while the next epoch trains
            image = draw_confusion_matrix(matrix, names,
                                          f"validation confusion matrix, epoch {epoch + 1}")
            write_image(writer, "confusion_matrix", image, epoch)

        trainer.run_in_background(draw_and_write, callback=self)

    def on_test_end(self, trainer, result) -> None:
        if trainer.run is None:
            return
        image = draw_confusion_matrix(result.confusion_matrix, result.class_names,
                                      "test confusion matrix")
        write_image(summary_writer(trainer, "test"), "test/confusion_matrix", image,
                    summary_step(trainer))

    def teardown(self, trainer, stage: str) -> None:
        close_summary_writers(trainer)
