"""Photo-like images of handwritten digits, built from real digits, for measuring `digits.predict`.

MNIST's own images are the easy case. Users bring photos of paper: a light grey page under a
gradient of light, sensor noise, a little blur, JPEG, the digit anywhere and at any size, ruled
lines and dust; chalk on a dark board; other writers' scans at low resolution; whole numbers.
These builders make such images from real digits (the embedded 5,000, a validation split, the
official test set) with the true reading attached, so the tests, the benchmark and users can
measure how well a model and the image pipeline read them.

Kinds (`KINDS`):
    photo     one dark digit on lit paper, a tenth to most of the frame, off-centre, JPEG or PNG
    ruled     the same on ruled paper with dust specks
    board     one light digit on a dark board (light-on-dark)
    scan      another writer's digit: scikit-learn's 8x8 scans (UCI), upscaled, either polarity
    number    3-5 digits on lit paper, read left to right, gaps from touching to wide

Example:
    >>> from digits.data import load_mnist_5k
    >>> digits5k = load_mnist_5k()
    >>> sample = make_sample("number", digits5k.x, digits5k.y, seed=3)
    >>> sample.image.size, sample.text
    ((733, 412), '4081')
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np

KINDS = ("photo", "ruled", "board", "scan", "number")


@dataclasses.dataclass
class Sample:
    """One made image: `image` (a PIL image), `text` (its true reading) and how it was saved."""

    image: object
    text: str
    kind: str
    format: str  # "JPEG" or "PNG"
    boxes: list[tuple[int, int, int, int]]  # each digit's ink, [x, y, width, height], left to right

    def save(self, path: str | Path) -> Path:
        path = Path(path).with_suffix(".jpg" if self.format == "JPEG" else ".png")
        self.image.save(path, format=self.format, **({"quality": 85} if self.format == "JPEG" else {}))
        return path


def ink_crop(digit: np.ndarray) -> tuple[np.ndarray, int]:
    """A 28x28 digit in [0, 1] (white on black) cut to its ink plus a margin, and the ink's height."""
    rows = np.flatnonzero(digit.max(axis=1) > 0.1)
    cols = np.flatnonzero(digit.max(axis=0) > 0.1)
    if rows.size == 0:
        return digit, digit.shape[0]
    padded = np.pad(digit, 2)
    return padded[rows[0]: rows[-1] + 5, cols[0]: cols[-1] + 5], int(rows[-1] - rows[0] + 1)


def pen_strokes(digit: np.ndarray, height: int, rng: np.random.Generator) -> np.ndarray:
    """The digit's ink as a pen would lay it, `height` pixels tall: smooth edges, full strength."""
    from PIL import Image

    ink, ink_height = ink_crop(np.asarray(digit, np.float32).reshape(28, 28))
    h, w = ink.shape
    scale = height / ink_height
    layer = Image.fromarray(ink.astype(np.float32), mode="F").resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    angle = rng.uniform(-6, 6)
    layer = layer.rotate(angle, resample=Image.BICUBIC, expand=True)
    strokes = np.asarray(layer, np.float32)
    # Bicubic upscaling of 28 pixels leaves soft ramps; a pen's edge is sharper than that.
    return np.clip((strokes - 0.2) / 0.5, 0.0, 1.0)


def lit_paper(height: int, width: int, rng: np.random.Generator, dark: bool = False) -> np.ndarray:
    """An RGB page (float, 0-1) under uneven light: a tint, a linear gradient and a soft spot."""
    base = rng.uniform(0.12, 0.3) if dark else rng.uniform(0.72, 0.93)
    tint = 1.0 + rng.uniform(-0.04, 0.04, size=3)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height)
    ramp = ramp - ramp.mean()
    light = 1.0 + rng.uniform(0.15, 0.45) * ramp
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    spot = np.exp(-(((ys - cy) / height) ** 2 + ((xs - cx) / width) ** 2) / rng.uniform(0.1, 0.5))
    light = light * (1.0 + rng.uniform(0.0, 0.15) * (spot - spot.mean()))
    return np.clip(base * light[..., None] * tint, 0.0, 1.0)


def photograph(page: np.ndarray, ink: np.ndarray, ink_color: np.ndarray, rng: np.random.Generator,
               fmt: str | None = None) -> tuple[object, str]:
    """Lay `ink` (coverage 0-1, page-sized) on `page`, then blur, noise and encode like a camera."""
    from PIL import Image, ImageFilter

    image = page * (1.0 - ink[..., None]) + ink_color * ink[..., None]
    picture = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), mode="RGB")
    picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.4)))
    pixels = np.asarray(picture, np.float32) / 255.0
    pixels = pixels + rng.normal(0.0, rng.uniform(0.005, 0.03), size=pixels.shape).astype(np.float32)
    picture = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="RGB")
    fmt = fmt or ("JPEG" if rng.random() < 0.7 else "PNG")
    if fmt == "JPEG":  # the artefacts are part of the photo: encode and decode once
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=int(rng.integers(60, 95)))
        picture = Image.open(io.BytesIO(buffer.getvalue()))
        picture.load()
    return picture, fmt


def frame_size(rng: np.random.Generator) -> tuple[int, int]:
    """A photo's (height, width): 0.08 to 0.8 megapixels, landscape or portrait."""
    long_side = int(rng.integers(360, 1025))
    short_side = int(long_side * rng.uniform(0.6, 0.8))
    return (short_side, long_side) if rng.random() < 0.7 else (long_side, short_side)


def place(canvas_shape: tuple[int, int], layer: np.ndarray,
          rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """`layer` at a random position fully inside a zero canvas, and its (top, left)."""
    canvas = np.zeros(canvas_shape, np.float32)
    h, w = layer.shape
    top = int(rng.integers(0, canvas_shape[0] - h + 1))
    left = int(rng.integers(0, canvas_shape[1] - w + 1))
    canvas[top: top + h, left: left + w] = layer
    return canvas, (top, left)


def ink_box(ink: np.ndarray, top: int = 0, left: int = 0) -> tuple[int, int, int, int]:
    """[x, y, width, height] of the pen's ink (coverage above one half) in a layer."""
    rows = np.flatnonzero((ink > 0.5).any(axis=1))
    cols = np.flatnonzero((ink > 0.5).any(axis=0))
    if rows.size == 0:
        return (left, top, 0, 0)
    return (left + int(cols[0]), top + int(rows[0]), int(cols[-1] - cols[0] + 1),
            int(rows[-1] - rows[0] + 1))


def ruled_lines(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Faint horizontal rules every 6-12% of the page, and dust specks."""
    h, w = shape
    lines = np.zeros(shape, np.float32)
    spacing = max(8, int(h * rng.uniform(0.06, 0.12)))
    thickness = max(1, h // 300)
    for y in range(int(rng.integers(0, spacing)), h, spacing):
        lines[y: y + thickness] = rng.uniform(0.15, 0.35)
    ys = rng.integers(0, h, size=int(rng.integers(3, 15)))
    xs = rng.integers(0, w, size=ys.size)
    for y, x in zip(ys, xs, strict=True):
        r = int(rng.integers(1, max(2, h // 250) + 1))
        lines[max(0, y - r): y + r, max(0, x - r): x + r] = rng.uniform(0.3, 0.8)
    return lines


def single_digit(kind: str, digit: np.ndarray, rng: np.random.Generator):
    """A `photo`, `ruled` or `board` image of one 28x28 digit."""
    height, width = frame_size(rng)
    size = max(12, int(min(height, width) * rng.uniform(0.1, 0.85)))
    strokes = pen_strokes(digit, size, rng)
    while strokes.shape[0] > height or strokes.shape[1] > width:  # rotated or wide: fit the frame
        size = int(size * 0.9)
        strokes = pen_strokes(digit, size, rng)
    ink, _ = place((height, width), strokes, rng)
    boxes = [ink_box(ink)]
    dark = kind == "board"
    page = lit_paper(height, width, rng, dark=dark)
    if kind == "ruled":
        ink = np.maximum(ink, ruled_lines((height, width), rng))
    color = rng.uniform(0.8, 0.95, size=3) if dark else rng.uniform(0.05, 0.3) * np.array(
        [1.0, 1.0, rng.uniform(1.0, 2.5)])  # grey to blue ink
    return (*photograph(page, ink, color, rng), boxes)


def number(digits_x: np.ndarray, rng: np.random.Generator):
    """Several digits written in a row on lit paper."""
    height, width = frame_size(rng)
    if height > width:
        height, width = width, height
    count = len(digits_x)
    digit_height = int(min(height * rng.uniform(0.15, 0.5), width * 0.9 / (count * 0.8)))
    digit_height = max(16, digit_height)
    pieces = [pen_strokes(d, max(12, int(digit_height * rng.uniform(0.9, 1.1))), rng)
              for d in digits_x]
    # pieces carry a margin of 0.1 x their height each side: ink gaps run from touching to 0.6
    gaps = [int(digit_height * rng.uniform(-0.3, 0.4)) for _ in pieces[1:]]
    row_width = sum(p.shape[1] for p in pieces) + sum(gaps)
    row_height = max(p.shape[0] for p in pieces) + digit_height // 8
    row = np.zeros((row_height, max(row_width, 1)), np.float32)
    x, boxes = 0, []
    for i, piece in enumerate(pieces):
        y = int(rng.integers(0, row_height - piece.shape[0] + 1))
        h, w = piece.shape
        row[y: y + h, x: x + w] = np.maximum(row[y: y + h, x: x + w], piece[:, : row.shape[1] - x])
        boxes.append(ink_box(piece, y, x))
        x += w + (gaps[i] if i < len(gaps) else 0)
    scale = 1.0
    if row.shape[1] > width - 4 or row.shape[0] > height - 4:
        scale = min((width - 4) / row.shape[1], (height - 4) / row.shape[0])
        from PIL import Image

        row = np.asarray(Image.fromarray(row, mode="F").resize(
            (max(1, int(row.shape[1] * scale)), max(1, int(row.shape[0] * scale))), Image.BILINEAR))
    ink, (top, left) = place((height, width), row, rng)
    boxes = [(left + round(bx * scale), top + round(by * scale), round(bw * scale), round(bh * scale))
             for bx, by, bw, bh in boxes]
    page = lit_paper(height, width, rng)
    color = rng.uniform(0.05, 0.3) * np.array([1.0, 1.0, rng.uniform(1.0, 2.5)])
    return (*photograph(page, ink, color, rng), boxes)


def scan(digit8: np.ndarray, rng: np.random.Generator):
    """scikit-learn's 8x8 digit (values 0-16) upscaled as a user would, in either polarity."""
    from PIL import Image

    scale = int(rng.integers(4, 17))
    resample = [Image.NEAREST, Image.BILINEAR, Image.BICUBIC][int(rng.integers(0, 3))]
    pixels = (np.asarray(digit8, np.float32).reshape(8, 8) / 16.0 * 255).astype(np.uint8)
    if rng.random() < 0.5:
        pixels = 255 - pixels
    big = Image.fromarray(pixels, mode="L").resize((8 * scale, 8 * scale), resample)
    return big, "PNG", [(0, 0, 8 * scale, 8 * scale)]


def make_sample(kind: str, x: np.ndarray, y: np.ndarray, seed: int,
                digits8: tuple[np.ndarray, np.ndarray] | None = None) -> Sample:
    """One image of `kind` from the digits `x` (N, 28, 28[, 1]) in [0, 1] with labels `y`.

    `scan` takes its digits from `digits8` (images, labels), scikit-learn's 8x8 set by default.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    if kind == "scan":
        images, labels = digits8 if digits8 is not None else sklearn_digits()
        i = int(rng.integers(0, len(labels)))
        image, fmt, boxes = scan(images[i], rng)
        return Sample(image, str(int(labels[i])), kind, fmt, boxes)
    x = np.asarray(x, np.float32).reshape(-1, 28, 28)
    if kind == "number":
        picks = rng.integers(0, len(y), size=int(rng.integers(3, 6)))
        image, fmt, boxes = number(x[picks], rng)
        return Sample(image, "".join(str(int(y[i])) for i in picks), kind, fmt, boxes)
    i = int(rng.integers(0, len(y)))
    image, fmt, boxes = single_digit(kind, x[i], rng)
    return Sample(image, str(int(y[i])), kind, fmt, boxes)


def gray_levels(image) -> np.ndarray:
    """A PIL image as float32 grey levels in [0, 1], as `digits.reading.images.find_digits` takes them."""
    return np.asarray(image.convert("L"), np.float32) / 255.0


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits (UCI optdigits' test part: 13 writers, none of them
    MNIST's): images, labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target
