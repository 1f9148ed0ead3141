"""Your own digit images -> MNIST-style 28x28 arrays, the way MNIST itself was made.

Grayscale; invert when the digit is dark on a light background; crop to the ink; scale the
ink into a 20x20 box keeping its aspect ratio; centre it by centre of mass on a 28x28 canvas.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from digits.errors import ImageError

# Pillow's decompression-bomb guard, made strict: 40 megapixels is far more than a photo of a
# digit needs, and anything above is refused rather than warned about.
MAX_PIXELS = 40_000_000
MAX_FILE_BYTES = 50 * 1024 * 1024
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")


def load_digit_image(path: str | Path) -> np.ndarray:
    """Read an image file as a float32 (28, 28) array in [0, 1], white digit on black.

    Example:
        >>> load_digit_image("seven.png").shape
        (28, 28)
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        if not path.is_file():
            raise ImageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        size = path.stat().st_size
    except OSError as e:
        raise ImageError(f"{str(path)[:200]}: {e.strerror or e}") from None
    if size == 0:
        raise ImageError(f"{path}: empty file")
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{path}: {size} bytes is too large for a digit image")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only these decoders may even look at the file: EPS (Ghostscript) and the rest of
            # Pillow's formats are never tried on a file that merely claims to be an image.
            with Image.open(path, formats=FORMATS) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(f"{path}: {width}x{height} pixels exceeds the limit "
                                     f"of {MAX_PIXELS}")
                image.seek(0)
                image = ImageOps.exif_transpose(image)
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    rgba = image.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, rgba)
                gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image (supported: {', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: refused: {e}") from None
    except Exception as e:  # noqa: BLE001 - a hostile file breaks decoders in many ways
        raise ImageError(f"{path}: cannot decode image: {type(e).__name__}: {e}") from None
    return to_mnist(gray, str(path))


def to_mnist(gray: np.ndarray, where: str = "image") -> np.ndarray:
    """A grayscale array in [0, 1] (any size) -> float32 (28, 28), MNIST-style."""
    from PIL import Image

    if gray.ndim != 2 or min(gray.shape) < 1:
        raise ImageError(f"{where}: not a two-dimensional image")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:  # dark ink on light paper: invert to MNIST's white on black
        gray = 1.0 - gray
    gray = gray - np.median(border if np.median(border) <= 0.5 else 1.0 - border)
    gray = np.clip(gray, 0.0, None)
    peak = gray.max()
    if peak < 0.1:
        raise ImageError(f"{where}: no digit found (the image is blank)")
    gray = gray / peak
    rows = np.where(gray.max(axis=1) > 0.2)[0]
    cols = np.where(gray.max(axis=0) > 0.2)[0]
    ink = gray[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    h, w = ink.shape
    scale = 20.0 / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = Image.fromarray((ink * 255).astype(np.uint8)).resize((new_w, new_h), Image.LANCZOS)
    box = np.asarray(resized, dtype=np.float32) / 255.0
    canvas = np.zeros((28, 28), dtype=np.float32)
    top, left = (28 - new_h) // 2, (28 - new_w) // 2
    canvas[top: top + new_h, left: left + new_w] = box
    total = canvas.sum()
    if total > 0:
        ys, xs = np.indices(canvas.shape)
        dy = int(round(13.5 - (ys * canvas).sum() / total))
        dx = int(round(13.5 - (xs * canvas).sum() / total))
        canvas = _shift(canvas, dy, dx)
    return np.clip(canvas, 0.0, 1.0)


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(image)
    h, w = image.shape
    src = image[max(0, -dy): h - max(0, dy), max(0, -dx): w - max(0, dx)]
    out[max(0, dy): max(0, dy) + src.shape[0], max(0, dx): max(0, dx) + src.shape[1]] = src
    return out
