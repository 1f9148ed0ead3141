"""Drawing for the callbacks: the confusion-matrix picture, fonts, PNG and TensorBoard images.

It draws with Pillow rather than matplotlib: about a hundred times faster, so an image every
epoch costs a few milliseconds instead of a noticeable slice of a short epoch. Used by the
`confusion_matrix`, `plots` and `misclassified` callbacks.
"""

from __future__ import annotations

import functools
import io

import numpy as np

# matplotlib's "Blues", sampled at nine points: light for few, dark for many.
_BLUES = np.array([
    (247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
    (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107),
], dtype=np.float64)
_INK = (33, 33, 33)
_GRID_PIXELS = 480  # the matrix's side, for 10 classes: 48 px cells


@functools.lru_cache(maxsize=16)
def default_font(size: int):
    """Pillow's bundled scalable font at `size` pixels (cached: loading it takes a while)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _colours(fractions: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 along `_BLUES`."""
    positions = np.clip(fractions, 0.0, 1.0) * (len(_BLUES) - 1)
    low = np.floor(positions).astype(int).clip(0, len(_BLUES) - 2)
    t = (positions - low)[..., None]
    return np.round(_BLUES[low] * (1 - t) + _BLUES[low + 1] * t).astype(np.uint8)


def _is_dark(rgb) -> bool:
    r, g, b = (int(c) for c in rgb)
    return 0.299 * r + 0.587 * g + 0.114 * b < 140


def _rotated_text(text: str, font, fill=_INK):
    """`text` drawn on a transparent image turned 90 degrees (reads bottom to top)."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    label = Image.new("RGBA", (max(1, right - left + 2), max(1, bottom - top + 2)), (0, 0, 0, 0))
    ImageDraw.Draw(label).text((1 - left, 1 - top), text, font=font, fill=fill)
    return label.rotate(90, expand=True)


def _fitting_font(texts: list[str], width: int, largest: int, smallest: int = 8):
    """The largest default font, from `largest` down, in which every text fits `width`."""
    for size in range(largest, smallest - 1, -1):
        font = default_font(size)
        if max(font.getlength(t) for t in texts) <= width:
            return font
    return default_font(smallest)


def draw_confusion_matrix(matrix, class_names=None, title: str = "confusion matrix"):
    """Draw a confusion matrix as two panels: counts, and rows normalised to fractions (recall).

    Rows are true classes and columns predicted ones; each panel has the class names on both
    axes, axis titles, the value in every cell and a colour scale. The image is at least 400
    pixels high (480 px of matrix for 10 classes).

    Args:
        matrix: (n, n) counts, rows = true class, columns = predicted class.
        class_names: the n axis labels (default "0", "1", ...).
        title: the line drawn above both panels.

    Returns:
        A `PIL.Image.Image` (RGB).

    Example:
        >>> image = draw_confusion_matrix(result.confusion_matrix, result.class_names, "test")
        >>> image.save("confusion_matrix.png")
    """
    from PIL import Image, ImageDraw

    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"a confusion matrix must be square, got shape {counts.shape}")
    counts = np.rint(counts).astype(np.int64)
    n = counts.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(n))]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}x{n} confusion matrix")

    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    total = int(counts.sum())
    accuracy = float(np.trace(counts)) / total if total else 0.0
    peak = max(int(counts.max()), 1)
    panels = [
        (f"counts: {total} images, accuracy {accuracy:.1%}", counts / peak,
         [[str(v) for v in row] for row in counts], ("0", str(peak // 2), str(peak))),
        ("normalised by row (recall)", normalised,
         [[_fraction(v) for v in row] for row in normalised], ("0", "0.5", "1")),
    ]

    cell = int(np.clip(_GRID_PIXELS // n, 24, 120))
    grid = n * cell
    title_font, label_font, tick_font = default_font(20), default_font(15), default_font(13)
    value_font = _fitting_font([t for p in panels for row in p[2] for t in row], cell - 4,
                               largest=max(9, min(15, cell // 3)))
    tick_width = int(max(tick_font.getlength(name) for name in names)) + 1
    rotate_ticks = tick_width > cell - 4
    tick_height = tick_font.getbbox("0123456789")[3]
    x_ticks_height = (tick_width if rotate_ticks else tick_height) + 8
    bar_labels = max(tick_font.getlength(label) for p in panels for label in p[3])

    margin, gap = 16, 8
    axis_title = label_font.getbbox("predicted")[3] + 2
    left = margin + axis_title + gap + tick_width + gap
    bar_width = 16
    panel_width = int(left + grid + 14 + bar_width + 6 + bar_labels + margin)
    top = margin + title_font.getbbox(title or "X")[3] + 12 + label_font.getbbox("Xg")[3] + 10
    height = max(400, top + grid + gap + x_ticks_height + gap + axis_title + margin)
    image = Image.new("RGB", (2 * panel_width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((image.width / 2, margin), title, font=title_font, fill=_INK, anchor="mt")

    for index, (subtitle, fractions, texts, bar_ticks) in enumerate(panels):
        x0, y0 = index * panel_width + left, top
        draw.text((x0 + grid / 2, y0 - 8), subtitle, font=label_font, fill=_INK, anchor="mb")
        colours = _colours(fractions)
        cells = np.repeat(np.repeat(colours, cell, axis=0), cell, axis=1)
        image.paste(Image.fromarray(cells, "RGB"), (x0, y0))
        for k in range(n + 1):  # thin white lines between the cells
            draw.line([(x0 + k * cell, y0), (x0 + k * cell, y0 + grid)], fill="white")
            draw.line([(x0, y0 + k * cell), (x0 + grid, y0 + k * cell)], fill="white")
        draw.rectangle([x0 - 1, y0 - 1, x0 + grid, y0 + grid], outline=(120, 120, 120))
        for i in range(n):
            for j in range(n):
                # Zeros in grey, so that the cells that matter (the errors) stand out.
                ink = ("white" if _is_dark(colours[i, j]) else
                       _INK if counts[i, j] else (175, 175, 175))
                draw.text((x0 + j * cell + cell / 2, y0 + i * cell + cell / 2), texts[i][j],
                          font=value_font, fill=ink, anchor="mm")
        _class_ticks(image, draw, (x0, y0), names, cell, gap, tick_font, rotate_ticks)
        axis_y = y0 + grid + gap + x_ticks_height + gap
        draw.text((x0 + grid / 2, axis_y), "predicted", font=label_font, fill=_INK, anchor="mt")
        true_label = _rotated_text("true", label_font)
        image.paste(true_label, (index * panel_width + margin,
                                 int(y0 + grid / 2 - true_label.height / 2)), true_label)

        _colour_bar(image, draw, (x0 + grid + 14, y0), grid, bar_width, bar_ticks, tick_font)
    return image


def _class_ticks(image, draw, origin, names, cell: int, gap: int, font, rotate: bool) -> None:
    """The class names along the left (true) and under (predicted) a panel's grid."""
    x0, y0 = origin
    grid = len(names) * cell
    for k, name in enumerate(names):
        centre = k * cell + cell / 2
        draw.text((x0 - gap, y0 + centre), name, font=font, fill=_INK, anchor="rm")
        if rotate:
            label = _rotated_text(name, font)
            image.paste(label, (int(x0 + centre - label.width / 2), y0 + grid + gap), label)
        else:
            draw.text((x0 + centre, y0 + grid + gap), name, font=font, fill=_INK, anchor="mt")


def _colour_bar(image, draw, origin, height: int, width: int, ticks, font) -> None:
    """The colour scale beside a panel, dark (1) at the top, with its three tick labels."""
    from PIL import Image

    bar_x, y0 = origin
    ramp = _colours(np.linspace(1.0, 0.0, height))[:, None, :].repeat(width, axis=1)
    image.paste(Image.fromarray(np.ascontiguousarray(ramp), "RGB"), (bar_x, y0))
    draw.rectangle([bar_x - 1, y0 - 1, bar_x + width, y0 + height], outline=(120, 120, 120))
    for label, fraction in zip(ticks, (0.0, 0.5, 1.0), strict=True):
        y = y0 + (height - 1) * (1 - fraction)
        draw.line([(bar_x + width, y), (bar_x + width + 3, y)], fill=_INK)
        draw.text((bar_x + width + 6, y), label, font=font, fill=_INK, anchor="lm")


def _fraction(value: float) -> str:
    if value == 0 or value == 1:
        return str(int(value))
    # Never round a fraction short of 1 up to "1.00": that would read as a perfect row.
    return f"{min(value, 0.99):.2f}"


def png_bytes(image) -> bytes:
    """Encode a PIL image as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def render_confusion_matrix(matrix, class_names=None, title: str = "confusion matrix") -> bytes:
    """`draw_confusion_matrix` as PNG bytes, ready for a file.

    Example:
        >>> Path("cm.png").write_bytes(render_confusion_matrix(matrix, [str(i) for i in range(10)]))
    """
    return png_bytes(draw_confusion_matrix(matrix, class_names, title))


def write_image(writer, tag: str, image, step: int) -> None:
    """Write a PIL image as a TensorBoard image summary and flush."""
    import tensorflow as tf

    with writer.as_default():
        tf.summary.image(tag, np.asarray(image, dtype=np.uint8)[None], step=step, max_outputs=1)
    writer.flush()
