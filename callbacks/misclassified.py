"""The test images the model got most confidently wrong, as a labelled grid."""

from __future__ import annotations

import math

import numpy as np

from digits.callbacks.base import Callback
from digits.callbacks.drawing import default_font, png_bytes, write_image
from digits.callbacks.tensorboard import close_summary_writers, summary_step, summary_writer
from digits.runs.atomic import atomic_write_bytes

_SCALE = 4  # 28 px digits drawn at 112 px
_TILE_WIDTH = 148
_RIGHT = (46, 125, 50)
_WRONG = (198, 40, 40)
_INK = (33, 33, 33)


def worst_errors(y_true, probabilities, count: int) -> np.ndarray:
    """Indices of the `count` wrong predictions made with the highest confidence, worst first."""
    probabilities = np.asarray(probabilities)
    y_pred = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != np.asarray(y_true))
    confidence = probabilities[wrong, y_pred[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:count]]


def _fit(text: str, font, width: int) -> str:
    while font.getlength(text) > width and len(text) > 2:
        text = text[:-2] + "…"
    return text


def draw_misclassified(images, y_true, probabilities, class_names, title: str):
    """A grid of tiles: each image enlarged, its true and predicted label and the confidence.

    Args:
        images: (k, 28, 28[, 1]) floats in [0, 1] (or uint8), the images to show, in order.
        y_true: their k true labels.
        probabilities: their (k, classes) predicted probabilities.
        class_names: display names of the classes.
        title: the line drawn above the grid.

    Returns:
        A `PIL.Image.Image` (RGB), at least 400 pixels high.

    Example:
        >>> worst = worst_errors(result.y_true, result.probabilities, 25)
        >>> draw_misclassified(x[worst], result.y_true[worst], result.probabilities[worst],
        ...                    result.class_names, "worst test errors").save("errors.png")
    """
    from PIL import Image, ImageDraw

    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    if images.dtype != np.uint8:
        images = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    k = len(images)
    columns = max(1, min(8, math.ceil(math.sqrt(k)))) if k else 1
    rows = max(1, math.ceil(k / columns))
    title_font, font = default_font(18), default_font(12)
    line = font.getbbox("Xg")[3] + 3
    side = images.shape[1] * _SCALE if k else 112
    tile_height = side + 8 + 2 * line + 8
    top = 14 + title_font.getbbox(title or "X")[3] + 14
    width = max(columns * _TILE_WIDTH + 16, 420)
    height = max(400, top + rows * tile_height + 10)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((width / 2, 14), title, font=title_font, fill=_INK, anchor="mt")
    if not k:
        draw.text((width / 2, height / 2), "no misclassified images", font=default_font(16), fill=_INK,
                  anchor="mm")
        return canvas
    left = (width - columns * _TILE_WIDTH) // 2
    for index in range(k):
        row, column = divmod(index, columns)
        x = left + column * _TILE_WIDTH + (_TILE_WIDTH - side) // 2
        y = top + row * tile_height
        digit = Image.fromarray(images[index], "L").resize((side, side), Image.Resampling.NEAREST)
        canvas.paste(digit.convert("RGB"), (x, y))
        draw.rectangle([x - 1, y - 1, x + side, y + side], outline=_WRONG)
        predicted = int(np.argmax(probabilities[index]))
        confidence = float(probabilities[index][predicted])
        centre = x + side / 2
        true_text = _fit(f"true {class_names[int(y_true[index])]}", font, _TILE_WIDTH - 6)
        # Shorten the name, never the confidence.
        suffix = f" ({confidence:.0%})"
        pred_text = _fit(f"pred {class_names[predicted]}", font,
                         _TILE_WIDTH - 6 - int(font.getlength(suffix))) + suffix
        draw.text((centre, y + side + 5), true_text, font=font, fill=_RIGHT, anchor="mt")
        draw.text((centre, y + side + 5 + line), pred_text, font=font, fill=_WRONG, anchor="mt")
    return canvas


class MisclassifiedImages(Callback):
    """Show the test images the model got most confidently wrong, in TensorBoard and a file.

    After `Trainer.test`, the `count` wrong predictions with the highest confidence become one
    grid image: each tile shows the digit enlarged, its true label, the predicted label and
    the confidence. It is written as `test/misclassified` in `<run>/test` and as
    `<run>/misclassified.png`. Uses the test result's probabilities: no extra prediction pass.

    Args:
        count: how many errors to show, worst first (default 25).

    Example:
        >>> trainer = Trainer(callbacks=[MisclassifiedImages(count=16)])
        >>> trainer.fit(model, data)
        >>> trainer.test(model, data)   # -> <run>/misclassified.png
    """

    order = 30
    heavy = True

    def __init__(self, count: int = 25) -> None:
        super().__init__()
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 400:
            raise ValueError(f"count must be a whole number from 1 to 400, got {count!r}")
        self.count = count

    def on_test_end(self, trainer, result) -> None:
        if trainer.run is None or trainer.data is None or trainer.data.test is None:
            return
        # The result covers the first len(y_true) test images (fewer under limit_test_batches).
        images = trainer.data.test.x[: len(result.y_true)]
        worst = worst_errors(result.y_true, result.probabilities, self.count)
        wrong = int((result.y_pred != result.y_true).sum())
        title = (f"{len(worst)} most confident of {wrong} test errors "
                 f"(of {len(result.y_true)} images)")
        image = draw_misclassified(images[worst], result.y_true[worst],
                                   result.probabilities[worst], result.class_names, title)
        write_image(summary_writer(trainer, "test"), "test/misclassified", image,
                    summary_step(trainer))
        atomic_write_bytes(trainer.run.file("misclassified.png"), png_bytes(image))

    def teardown(self, trainer, stage: str) -> None:
        close_summary_writers(trainer)
