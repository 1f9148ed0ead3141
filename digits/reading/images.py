"""Your own images -> the digits in them, each as an MNIST-style 28x28 input, left to right.

A photo of paper is not MNIST: the page is grey and lit unevenly, the ink is a small part of the
frame, there may be ruled lines, dust and several digits. The steps, each one a measured choice:

1. Read safely (`read_image`): only raster decoders, a pixel and byte limit, EXIF orientation,
   transparency over white; large photos are decoded and reduced to at most `WORK_SIDE` pixels
   on the long side (JPEG's own reduced decoding first), since a digit needs no more.
2. Flatten the light (`flatten`): whether the ink is darker or lighter than the page is read
   from the frame's corners (paper, even in a scan the digit fills) and the farther extreme;
   the paper's brightness is fitted by a quadratic surface in x and y (robustly, the ink left
   out) and divided out, so a gradient or a soft spot of light becomes flat paper, whatever the
   stroke width. The sensor's noise comes from neighbouring pixels' differences.
3. Find the marks (`binarise`): Otsu's threshold (scikit-image) among the pixels clearly above
   the noise, with hysteresis; ruled lines taken out; components labelled (SciPy); specks, lines
   across the page and the table beyond its edge dropped.
4. Group marks into digits (`group_digits`): pieces that overlap horizontally are one digit (a
   4 in two strokes); a small piece joins the nearest digit (the detached bar of a 5) or is
   dust; a mark as wide as two digits also gets ways to cut it in two, which the classifier
   judges (`digits.reading`).
5. Normalise each digit as MNIST was made (`to_mnist_input`): its ink, with anti-aliased grey
   edges, scaled so the longer side is 20 pixels, keeping the aspect ratio, strokes far outside
   MNIST's widths redrawn, and placed on 28x28 with its centre of mass at (14, 14) (measured on
   the embedded MNIST digits: 13.99, 14.00). A digit whose strokes were redrawn keeps its
   strokes as drawn as a second input (`FoundDigit.variants`); `digits.reading` averages both.

Example:
    >>> found = find_digits_in_file("house_number.jpg")
    >>> [d.box for d in found.digits], found.inputs().shape
    ([(40, 52, 61, 98), (118, 50, 58, 101)], (2, 28, 28))
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from digits.errors import ImageError

# Pillow's decompression-bomb guard, made strict: 40 megapixels is far more than a photo of a
# digit needs, and anything above is refused rather than warned about.
MAX_PIXELS = 40_000_000
MAX_FILE_BYTES = 50 * 1024 * 1024
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")

# The long side of the image the digits are found in. A digit a tenth of a frame's short side
# is still ~30 pixels tall here, more than MNIST's 20-pixel box needs.
WORK_SIDE = 512
# The background surface is fitted on an image this small (its long side): light varies slowly.
FIT_SIDE = 64
MNIST_BOX = 20
# A digit's stroke width is measured, and redrawn if need be, this many times finer than the box.
FINE = 4
# Stroke widths in the 20-pixel box left alone (MNIST's 5th percentile is 2.0, its median 3.25
# and its 95th percentile 5.0 on the embedded 5,000; above 4.5 is thinned, see BENCHMARKS.md).
STROKE_RANGE = (2.0, 4.5)
THIN_TO = 3.5
MNIST_CENTRE = 14.0
MAX_DIGITS = 32
# A mark at least this wide for its height may be two digits (95% of MNIST's are narrower
# than 1.18; a touching pair is rarely narrower than this).
WIDE = 0.9


@dataclasses.dataclass
class FoundDigit:
    """One digit found in an image: its 28x28 input and its box in the original image's pixels."""

    input: np.ndarray  # float32 (28, 28) in [0, 1], white on black
    box: tuple[int, int, int, int]  # x, y, width, height
    # For a mark as wide as two digits: ways to read it as two touching digits, left and right.
    # Which reading wins is for the classifier to say (`digits.reading`).
    splits: list[tuple[FoundDigit, FoundDigit]] = dataclasses.field(default_factory=list)
    # Other inputs of the same digit, read too, their probabilities averaged with `input`'s: the
    # strokes as drawn, when `input` has them redrawn at MNIST's width (a coarse scan, a fat
    # marker). Either alone misreads some digits the average reads (BENCHMARKS.md).
    variants: list[np.ndarray] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FoundDigits:
    """What `find_digits` saw in one image: the digits left to right, and the image it looked at."""

    digits: list[FoundDigit]
    size: tuple[int, int]  # the original image's width and height (EXIF orientation applied)
    gray: np.ndarray  # the working image, float32 in [0, 1], at most WORK_SIDE on its long side
    scale: float  # original pixels per working pixel
    dark_ink: bool

    def inputs(self) -> np.ndarray:
        """The digits' inputs as one (N, 28, 28) float32 array."""
        return np.stack([d.input for d in self.digits]) if self.digits \
            else np.zeros((0, 28, 28), np.float32)

    def working_box(self, box: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
        """A box in the original image's pixels as (x, y, width, height) in `gray`'s."""
        return tuple(v / self.scale for v in box)

    def crop(self, box: tuple[int, int, int, int], side: int) -> np.ndarray:
        """The part of the image a digit was found in (its box and a margin of a quarter of its
        size), as the image showed it, at most `side` pixels on its long side: float32 in [0, 1]."""
        from PIL import Image

        x, y, w, h = self.working_box(box)
        margin = max(w, h) / 4
        left, top = max(0, int(x - margin)), max(0, int(y - margin))
        right = max(left + 1, min(self.gray.shape[1], int(np.ceil(x + w + margin))))
        bottom = max(top + 1, min(self.gray.shape[0], int(np.ceil(y + h + margin))))
        crop = self.gray[top:bottom, left:right]
        longest = max(crop.shape)
        if longest <= side:
            return crop
        size = (max(1, round(crop.shape[1] * side / longest)),
                max(1, round(crop.shape[0] * side / longest)))
        image = Image.fromarray(np.clip(crop * 255, 0, 255).astype(np.uint8))
        return np.asarray(image.resize(size, Image.Resampling.BOX), np.float32) / 255


# ----------------------------------------------------------------------------- reading


def read_image(path: str | Path, max_side: int = WORK_SIDE,
               data: bytes | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image file as float32 grey levels in [0, 1], reduced to at most `max_side`.

    Returns the array and the original (width, height) after EXIF orientation. Anything that is
    not a readable raster image within the limits is an `ImageError` naming the file. With
    `data`, the image is those bytes (an upload) and `path` only names it in messages.

    Example:
        >>> gray, (width, height) = read_image("photo.jpg")
    """
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if data is None:
        try:
            if not path.is_file():
                raise ImageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
            size = path.stat().st_size
        except OSError as e:
            raise ImageError(f"{str(path)[:200]}: {e.strerror or e}") from None
    else:
        size = len(data)
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
            with Image.open(path if data is None else io.BytesIO(data), formats=FORMATS) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(f"{path}: {width}x{height} pixels exceeds the limit "
                                     f"of {MAX_PIXELS}")
                image.seek(0)
                original = _oriented_size(image)
                longest = max(width, height)
                if image.format == "JPEG" and longest > max_side:
                    # JPEG decodes at 1/2, 1/4 or 1/8 scale directly: a 12-megapixel photo
                    # costs a fraction of a full decode.
                    factor = max_side / longest
                    image.draft("RGB" if image.mode != "L" else "L",
                                (max(1, int(width * factor)), max(1, int(height * factor))))
                image = ImageOps.exif_transpose(image)
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    rgba = image.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, rgba)
                gray = image.convert("L")
                if max(gray.size) > max_side:
                    factor = max_side / max(gray.size)
                    gray = gray.resize((max(1, round(gray.width * factor)),
                                        max(1, round(gray.height * factor))), Image.BOX)
                pixels = np.asarray(gray, dtype=np.float32) / 255.0
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image (supported: {', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: refused: {e}") from None
    except Exception as e:  # noqa: BLE001 - a hostile file breaks decoders in many ways
        raise ImageError(f"{path}: cannot decode image: {type(e).__name__}: {e}") from None
    return pixels, original


def _oriented_size(image) -> tuple[int, int]:
    """The image's (width, height) as a viewer shows it, after its EXIF orientation."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as exif_transpose does
        orientation = 1
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


# ----------------------------------------------------------------------------- finding digits


def find_digits_in_file(path: str | Path, data: bytes | None = None) -> FoundDigits:
    """Read an image file (or its bytes, `data`, named `path`) and find the digits in it (see
    `find_digits`)."""
    gray, size = read_image(path, data=data)
    if size == (28, 28) and gray.shape == (28, 28):
        return mnist_style_digit(gray, str(path))
    return find_digits(gray, str(path), original_size=size)


def mnist_style_digit(gray: np.ndarray, where: str = "image") -> FoundDigits:
    """A 28x28 image is an MNIST-style input already (MNIST's own, or one digits wrote with
    `--save-digits` or a correction): taken as it is, so it reads back bit-identical; a dark
    digit on a light ground (its border is light) is inverted."""
    gray = np.asarray(gray, np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    dark = bool(border.mean() > 0.5)
    digit = 1.0 - gray if dark else gray
    if float(digit.max()) - float(np.median(border if not dark else 1.0 - border)) < 0.2:
        raise ImageError(f"{where}: no digit found (a blank 28x28 image)")
    return FoundDigits([FoundDigit(digit, (0, 0, 28, 28))], (28, 28), gray, 1.0, dark)


def find_digits(gray: np.ndarray, where: str = "image",
                original_size: tuple[int, int] | None = None) -> FoundDigits:
    """The digits in a grey image (float in [0, 1], any size), left to right.

    Raises `ImageError` when nothing digit-like is there (a blank page, pure noise).

    Example:
        >>> found = find_digits(np.asarray(Image.open("2026.png").convert("L")) / 255)
        >>> len(found.digits)
        4
    """
    if original_size is None and np.ndim(gray) == 2:
        original_size = (np.shape(gray)[1], np.shape(gray)[0])
    gray, ink, dark, labels, components = _marks(gray, where)
    scale = max(original_size) / max(gray.shape)
    groups = group_digits(labels, components)
    if not groups:
        raise ImageError(f"{where}: no digit found (nothing digit-like in the image)")
    if len(groups) > MAX_DIGITS:
        raise ImageError(f"{where}: {len(groups)} separate marks found; expected at most "
                         f"{MAX_DIGITS} digits (is it a page of text or a textured surface?)")

    def digit(box, part, splits=()):
        first, *others = to_mnist_inputs(_digit_ink(ink, box, part))
        return FoundDigit(first, _scale_box(box, scale, original_size),
                          [(digit(*left), digit(*right)) for left, right in splits], others)

    return FoundDigits([digit(*group) for group in groups], original_size, gray, scale, dark)


def _digit_ink(ink: np.ndarray, box: tuple[int, int, int, int], part: np.ndarray) -> np.ndarray:
    """The ink of one digit: its pixels and a margin around them (the strokes' soft edges,
    which the threshold cut off; without them strokes come out thinner than MNIST's)."""
    from scipy import ndimage

    x0, y0, x1, y1 = box
    margin = max(1, round((y1 - y0) / 25))
    h, w = ink.shape
    top, left = min(margin, y0), min(margin, x0)
    bottom, right = min(margin, h - y1), min(margin, w - x1)
    grown = np.zeros((part.shape[0] + top + bottom, part.shape[1] + left + right), bool)
    grown[top: top + part.shape[0], left: left + part.shape[1]] = part
    # Within `margin` steps (4 ways) of the ink: binary_dilation's `iterations=margin`, in one pass.
    grown = ndimage.distance_transform_cdt(~grown, metric="taxicab") <= margin
    return np.where(grown, ink[y0 - top: y1 + bottom, x0 - left: x1 + right], 0.0)


def _marks(gray: np.ndarray, where: str):
    """Steps 2-3: (working image, ink, dark_ink, component labels, candidate components)."""
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise ImageError(f"{where}: not a two-dimensional image")
    if max(gray.shape) > WORK_SIDE:
        gray = _resize(gray, _scaled(gray.shape, WORK_SIDE / max(gray.shape)))
    gray = smooth_pixelation(gray)
    ink, dark, noise = flatten(gray)
    marks = binarise(ink, noise)
    if marks is None:
        raise ImageError(f"{where}: no digit found (the image is blank)")
    labels, slices = marks
    components = _candidate_components(labels, slices, labels.shape)
    if not components:
        raise ImageError(f"{where}: no digit found (nothing digit-like in the image)")
    return gray, ink, dark, labels, components


def smooth_pixelation(gray: np.ndarray) -> np.ndarray:
    """A small image enlarged by repeating pixels (a scan or an icon blown up k times, exactly
    k x k blocks) is enlarged again from its own pixels, smoothly (bicubic): its blocks' stairs
    would otherwise be taken for the strokes' shape. (Scikit-learn's 8x8 scans read 90.1% blown
    up that way and 95.0% bicubically, with the same model; BENCHMARKS.md.)"""
    from PIL import Image

    h, w = gray.shape
    if min(h, w) < 4 or not np.array_equal(gray[:, 0], gray[:, 1]) \
            or not np.array_equal(gray[0], gray[1]):
        return gray
    for k in range(min(16, h, w), 1, -1):
        if h % k or w % k:
            continue
        low = gray[::k, ::k]
        if np.array_equal(np.repeat(np.repeat(low, k, axis=0), k, axis=1), gray):
            return np.clip(np.asarray(Image.fromarray(low, mode="F").resize((w, h), Image.BICUBIC),
                                      dtype=np.float32), 0.0, 1.0)
    return gray


def flatten(gray: np.ndarray) -> tuple[np.ndarray, bool, float]:
    """Ink strength with the paper's light divided out: 0 on paper, larger where ink is.

    Decides whether the ink is darker or lighter than the page (the corners' level against the
    image's extremes), fits the page's brightness as a quadratic surface on a small copy
    (iteratively leaving out what lies on the ink's side of it) and divides it out. Returns
    (ink, dark_ink, noise), the noise in ink's units. A gradient or soft spot of light becomes a
    flat zero.
    """
    small = _resize(gray, _scaled(gray.shape, min(1.0, FIT_SIDE / max(gray.shape))))
    ys, xs = np.mgrid[0:small.shape[0], 0:small.shape[1]].astype(np.float32)
    ys, xs = ys / max(small.shape), xs / max(small.shape)
    design = np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys], axis=-1).reshape(-1, 6)
    values = small.reshape(-1)
    # Which way does the ink go? The paper's level is the median of the frame's four corners
    # (paper in a photo; background even when the digit fills the frame, as in a scan, and
    # robust to one corner holding ink); the ink is the extreme that lies farther from it than
    # the other extreme does (a gradient of light moves both extremes much less than ink does).
    cy, cx = max(1, gray.shape[0] // 8), max(1, gray.shape[1] // 8)
    corners = np.stack([gray[rows, cols].ravel() for rows in (slice(0, cy), slice(-cy, None))
                        for cols in (slice(0, cx), slice(-cx, None))])
    paper = float(np.median(np.median(corners, axis=1)))
    low, high = np.percentile(gray[::3, ::3], [0.05, 99.95], method="nearest")
    dark = paper - low >= high - paper
    # The sensor's noise, from neighbouring pixels' differences (their median ignores the few
    # that straddle an edge): however much of the frame the digit covers, and whatever light.
    steps = np.abs(np.diff(gray[::4], axis=1)).ravel()
    noise = 1.4826 * float(np.partition(steps, steps.size // 2)[steps.size // 2]) / np.sqrt(2) \
        if steps.size else 0.0
    # Then the page's light: a quadratic surface fitted to the pixels that lie on the paper's
    # side of the last fit or near it (the ink all lies beyond, on the other side).
    side = 1.0 if dark else -1.0
    midway = (paper + (low if dark else high)) / 2
    inliers = side * (values - midway) > 0  # to start with: nearer the paper than the ink
    if inliers.sum() < design.shape[1] * 4:
        inliers = np.ones(values.shape, bool)
    fit = _NormalEquations(design, values)
    for _ in range(4):
        coef = fit.solve(inliers)
        residual = side * (values - design @ coef)  # > 0: towards the paper, < 0: towards the ink
        # (0.01: two grey levels of light the quadratic cannot follow, e.g. a soft spot)
        inliers = residual > -2.5 * max(noise, 0.01)
        if inliers.sum() < design.shape[1] * 4:
            break
    background = _surface(coef, gray.shape, small.shape)
    ink = np.subtract(background, gray) if dark else np.subtract(gray, background)
    # Light is multiplicative: ink on brightly lit paper and on shaded paper differs in
    # absolute grey level, but not as a fraction of the paper's own brightness.
    np.maximum(ink, 0.0, out=ink)
    ink /= np.maximum(background, 0.1, out=background)
    typical = float(np.median(np.maximum(design @ coef, 0.1)))  # the paper's level, on the fit
    return ink, bool(dark), noise / typical


class _NormalEquations:
    """Least squares of `values` on `design`'s columns over a chosen subset of rows, through
    the normal equations: a 6x6 solve (lstsq's SVD costs 10x more), the subset as 0/1 weights
    (gathering the rows for each of the four fits cost more than the fits)."""

    def __init__(self, design: np.ndarray, values: np.ndarray) -> None:
        self.design = design.astype(np.float64)
        self.values = values.astype(np.float64)

    def solve(self, rows: np.ndarray) -> np.ndarray:
        weighted = self.design * rows[:, None]
        gram = weighted.T @ self.design
        try:
            return np.linalg.solve(gram + 1e-9 * np.eye(len(gram)), weighted.T @ self.values)
        except np.linalg.LinAlgError:
            return np.linalg.lstsq(self.design[rows], self.values[rows], rcond=None)[0]


def _surface(coef: np.ndarray, shape: tuple[int, int], fit_shape: tuple[int, int]) -> np.ndarray:
    """The fitted quadratic evaluated on every pixel of an image of `shape` (float32)."""
    h, w = shape
    factor = max(fit_shape) / max(shape)  # fit pixels per working pixel
    y = (((np.arange(h, dtype=np.float32) + 0.5) * factor - 0.5) / max(fit_shape))[:, None]
    x = (((np.arange(w, dtype=np.float32) + 0.5) * factor - 0.5) / max(fit_shape))[None, :]
    c0, cx, cy, cxx, cxy, cyy = (np.float32(c) for c in coef)
    surface = (cxy * y) * x  # the one term that is not a row plus a column
    surface += c0 + cx * x + cxx * x * x
    surface += cy * y + cyy * y * y
    return surface


def binarise(ink: np.ndarray, noise: float) -> tuple[np.ndarray, list] | None:
    """Label the ink: (labels, each label's slices or None), or None when nothing stands above
    the noise.

    The threshold is Otsu's (scikit-image) among the pixels that stand clearly above the noise,
    with hysteresis: a mark is every pixel above half that threshold that connects (8 ways) to
    one above it, so that a faint or blurred stretch of a stroke does not break it. Ruled lines
    are taken out before the marks are labelled (scipy.ndimage).
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    floor = max(5 * noise, 0.06)
    candidates = ink[ink > floor]
    if candidates.size < 12:
        return None
    threshold = max(float(threshold_otsu(candidates)) if np.ptp(candidates) > 0 else floor, floor)
    weak = ink > max(floor, threshold / 2)
    weak &= ~ruled_lines(weak)
    labels, count = ndimage.label(weak, structure=np.ones((3, 3), bool))
    strong = np.zeros(count + 1, bool)
    strong[labels[ink > threshold]] = True  # (a label of 0 there is paper: set, then cleared)
    faint = np.flatnonzero(~strong[1:]) + 1  # weak marks with no strong pixel: paper
    if faint.size > 64:  # many (a grainy page): one pass over the image is quicker
        labels = np.where(strong[labels], labels, 0)
        return labels, ndimage.find_objects(labels, max_label=count)
    slices = ndimage.find_objects(labels)
    for index in faint:
        inside = labels[slices[index - 1]]
        inside[inside == index] = 0  # (in place, within its box: not a pass over the image)
        slices[index - 1] = None
    return labels, slices


def ruled_lines(mask: np.ndarray) -> np.ndarray:
    """The pixels of ruled lines: horizontal runs of ink across a quarter of the frame or more,
    in bands no thicker than 3% of its height (a digit's bar, even in a digit that fills the
    frame, is thicker). Found row by row in linear time, and only in rows with that much ink;
    the digits they cross stay whole enough, since grouping joins the parts above and below."""
    from scipy import ndimage

    h, w = mask.shape
    length = max(20, w // 4)
    runs = np.zeros_like(mask)
    rows = np.flatnonzero(np.count_nonzero(mask, axis=1) >= length)
    if rows.size == 0:
        return runs
    padded = np.pad(mask[rows], ((0, 0), (1, 1))).astype(np.int8)
    steps = np.diff(padded, axis=1)
    starts, ends = np.nonzero(steps == 1), np.nonzero(steps == -1)  # row-major: they pair up
    long = (ends[1] - starts[1]) >= length
    for row, a, b in zip(rows[starts[0][long]], starts[1][long], ends[1][long], strict=True):
        runs[row, a:b] = True
    if not runs.any():
        return runs
    top = int(rows[0])  # the bands lie between the first and the last row with runs
    band_rows = runs[top: int(rows[-1]) + 1]
    bands, count = ndimage.label(band_rows)
    for index, (ys, xs) in enumerate(ndimage.find_objects(bands), start=1):
        # A rule has paper above and below it, except where it crosses a digit's strokes; the
        # widest row of a digit that fills the frame has more of the digit on either side.
        y0, y1 = top + ys.start, top + ys.stop
        beside = [mask[row, xs].mean() for row in (y0 - 2, y1 + 1) if 0 <= row < h]
        if y1 - y0 > max(2, 0.03 * h) or max(beside, default=0.0) > 0.5:
            band_rows[bands == index] = False  # (a view: clears them in `runs`)
    return runs


def _candidate_components(labels: np.ndarray, slices: list, shape: tuple[int, int]) -> list:
    """Components that may be (part of) a digit, as (label, box, area): no specks, rules or
    page edges. `slices` are the labels' boxes (`ndimage.find_objects`; None: no such label)."""
    areas = np.zeros(len(slices) + 1, np.int64)
    for index, sl in enumerate(slices, start=1):
        if sl is not None:  # counted within its box: a few boxes, not a pass over the image
            areas[index] = np.count_nonzero(labels[sl] == index)
    if not areas.any():
        return []
    h, w = shape
    largest = areas[1:].max()
    kept = []
    for index, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        if areas[index] < max(4, 0.01 * largest):  # dust and sensor specks
            continue
        edges = (y0 == 0) + (y1 == h) + (x0 == 0) + (x1 == w)
        bw, bh = x1 - x0, y1 - y0
        runs_across = (x0 <= 0.03 * w and x1 >= 0.97 * w and bh < 0.2 * h) or \
                      (y0 <= 0.03 * h and y1 >= 0.97 * h and bw < 0.05 * w)
        if runs_across:  # a ruled line or a margin; a digit that fills a scan is not this thin
            continue
        if edges >= 3 and areas[index] > 0.85 * bw * bh:
            continue  # a solid strip along the frame: the table beyond the paper's edge
        kept.append((index, (x0, y0, x1, y1), int(areas[index])))
    return kept


def group_digits(labels: np.ndarray, components: list) -> list:
    """Components -> digits left to right, as [(box, mask within the box, splits)].

    Pieces that overlap horizontally are one digit (a 4 drawn in two strokes). A piece much
    smaller than the digits around it (the detached bar of a 5, the tail of a 2) joins the digit
    whose ink is nearest, if it is near; otherwise it is dust. A group as wide as two digits also
    gets `splits`: ways to cut it into two (see `two_digit_splits`).
    """
    groups = [{"labels": [index], "box": box, "area": area} for index, box, area in components]
    groups = _merge_overlapping(groups)
    if not groups:
        return []
    heights = np.array([g["box"][3] - g["box"][1] for g in groups])
    areas = np.array([g["area"] for g in groups])
    tall = heights >= 0.5 * heights.max()
    line_height = float(np.median(heights[tall]))
    typical_area = float(np.median(areas[tall]))
    small = (heights < 0.55 * line_height) | (areas < 0.15 * typical_area)
    digits = [g for g, s in zip(groups, small, strict=True) if not s]
    if not digits:  # only small marks: the largest is the digit
        digits = [groups[int(np.argmax(areas))]]
    for group, is_small in zip(groups, small, strict=True):
        if not is_small or group in digits:
            continue
        distances = [_ink_distance(labels, group, d) for d in digits]
        nearest = int(np.argmin(distances))
        if distances[nearest] <= 0.35 * line_height:
            digits[nearest]["labels"] += group["labels"]
            digits[nearest]["box"] = _union(digits[nearest]["box"], group["box"])
    result = []
    for group in sorted(digits, key=lambda g: g["box"][0]):
        x0, y0, x1, y1 = group["box"]
        inside = labels[y0:y1, x0:x1]
        inside = np.where(_of(inside, group["labels"]), inside, 0)
        result.append((group["box"], inside > 0, two_digit_splits(inside, group["box"])))
    return result


def _of(labels: np.ndarray, chosen: list) -> np.ndarray:
    """Where `labels` is one of `chosen` (np.isin, without its sort for a single label)."""
    return labels == chosen[0] if len(chosen) == 1 else np.isin(labels, chosen)


def _merge_overlapping(groups: list[dict]) -> list[dict]:
    """Merge groups whose horizontal extents overlap by a quarter of the narrower one's width."""
    merged = True
    while merged:
        merged = False
        groups.sort(key=lambda g: g["box"][0])
        for i, a in enumerate(groups):
            for b in groups[i + 1:]:
                overlap = min(a["box"][2], b["box"][2]) - max(a["box"][0], b["box"][0])
                narrower = min(a["box"][2] - a["box"][0], b["box"][2] - b["box"][0])
                if overlap > 0.25 * narrower:
                    a["labels"] += b["labels"]
                    a["box"] = _union(a["box"], b["box"])
                    a["area"] += b["area"]
                    groups.remove(b)
                    merged = True
                    break
            if merged:
                break
    return groups


def _ink_distance(labels: np.ndarray, a: dict, b: dict) -> float:
    """The shortest distance in pixels between the ink of two groups."""
    def points(group):
        x0, y0, x1, y1 = group["box"]
        ys, xs = np.nonzero(_of(labels[y0:y1, x0:x1], group["labels"]))
        step = max(1, ys.size // 400)  # a few hundred points of each are plenty
        return np.stack([ys[::step] + y0, xs[::step] + x0], axis=1).astype(np.float32)

    pa, pb = points(a), points(b)
    return float(np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1).min()))


def two_digit_splits(inside: np.ndarray, box: tuple[int, int, int, int]) -> list:
    """Ways to cut a mark that may be two touching or overlapping digits into a left and a right
    digit, each as (box, mask): between its components (ordered by their centres), and through
    the ink at its thinnest column in the middle. Only for marks at least `WIDE` times as wide
    as tall (95% of MNIST's digits are narrower than 1.18: measured on the embedded 5,000), and
    only cuts that leave two digit-sized pieces.
    """
    h, w = inside.shape
    if w < WIDE * h:
        return []
    part = inside > 0
    candidates = []
    ids = [i for i in np.unique(inside) if i]
    if 2 <= len(ids) <= 6:  # between pieces that overlap a little (kerned), not nested ones
        columns = {i: np.nonzero((inside == i).any(axis=0))[0] for i in ids}
        ordered = sorted(ids, key=lambda i: columns[i].mean())
        for k in range(1, len(ordered)):
            left = np.isin(inside, ordered[:k])
            right = part & ~left
            lx, rx = np.nonzero(left.any(axis=0))[0], np.nonzero(right.any(axis=0))[0]
            overlap = lx[-1] + 1 - rx[0]
            if overlap <= 0.5 * min(lx[-1] + 1 - lx[0], rx[-1] + 1 - rx[0]):
                candidates.append((left, right))
    # through the ink where a single stroke joins the two halves (any cut through a 0 crosses
    # two): the three thinnest such columns in the middle half, a tenth of the width apart
    lo, hi = int(0.25 * w), int(0.75 * w)
    middle = part[:, lo: hi + 1].astype(np.int8)
    runs = np.count_nonzero(np.diff(middle, axis=0) == 1, axis=0) + middle[0]
    order = np.argsort(middle.sum(axis=0), kind="stable")
    cuts: list[int] = []
    for column in order[runs[order] == 1]:
        if all(abs(lo + column - other) >= w / 10 for other in cuts):
            cuts.append(lo + int(column))
        if len(cuts) == 3:
            break
    for cut in cuts:
        left = part.copy()
        left[:, cut:] = False
        candidates.append((left, part & ~left))
    total = part.sum()
    splits = []
    for left, right in candidates:
        pieces = []
        for piece in (left, right):
            if piece.sum() < 0.1 * total:
                break
            (px0, py0, px1, py1), tight = _tight(piece, box)
            if py1 - py0 < 0.5 * h or px1 - px0 < 0.1 * h:
                break
            pieces.append(((px0, py0, px1, py1), tight))
        if len(pieces) == 2:
            splits.append(tuple(pieces))
    return splits


def _tight(part: np.ndarray, box: tuple[int, int, int, int]):
    """Shrink a box and its mask to the ink inside."""
    x0, y0, _, _ = box
    rows = np.flatnonzero(part.any(axis=1))
    cols = np.flatnonzero(part.any(axis=0))
    part = part[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    return (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1), part


def _union(a, b):
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _scale_box(box, scale: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    left, top = int(np.floor(x0 * scale)), int(np.floor(y0 * scale))
    right, bottom = min(size[0], int(np.ceil(x1 * scale))), min(size[1], int(np.ceil(y1 * scale)))
    return left, top, max(1, right - left), max(1, bottom - top)


# ----------------------------------------------------------------------------- MNIST's format


def to_mnist_input(ink: np.ndarray) -> np.ndarray:
    """A digit's ink (any size, larger = more ink) -> float32 (28, 28), as MNIST was made.

    The ink is scaled to full strength and fitted into a 20x20 box keeping its aspect ratio, with
    anti-aliasing (Lanczos). Strokes far thinner or wider than MNIST's are redrawn at a normal
    width (see `normalise_stroke_width`). The box is placed on 28x28 with its centre of
    mass at (14, 14).
    """
    return to_mnist_inputs(ink)[0]


def to_mnist_inputs(ink: np.ndarray) -> list[np.ndarray]:
    """`to_mnist_input`'s input, then, when it redrew the strokes at a normal width, the digit
    with its strokes as they were: the classifier reads both and averages (`FoundDigit`)."""
    ink = np.asarray(ink, dtype=np.float32)
    strong = ink[ink > 0]
    if strong.size == 0:
        return [np.zeros((28, 28), np.float32)]
    # Full strength at the strokes' cores: MNIST's ink is saturated (half its ink pixels > 0.9).
    level = _upper_quartile(strong)
    ink = np.clip(ink / max(level, 1e-6), 0.0, 1.0)
    h, w = ink.shape
    size = (max(1, round(w * MNIST_BOX / max(h, w))), max(1, round(h * MNIST_BOX / max(h, w))))
    box = np.clip(_resize(ink, size, smooth=True), 0.0, 1.0)
    fine = _resize(ink, (size[0] * FINE, size[1] * FINE), smooth=True) > 0.5
    if fine.any():
        adjusted = normalise_stroke_width(fine)
        if adjusted is not fine:  # outside MNIST's range: the corrected shape, averaged down
            return [_on_canvas(_resize(adjusted.astype(np.float32), size)), _on_canvas(box)]
    return [_on_canvas(box)]


def _on_canvas(box: np.ndarray) -> np.ndarray:
    """A digit scaled into its box -> 28x28, full strength, its centre of mass at (14, 14)."""
    peak = box.max()
    if peak > 0:
        box = box / peak
    canvas = np.zeros((28, 28), np.float32)
    bh, bw = box.shape
    top, left = (28 - bh) // 2, (28 - bw) // 2
    canvas[top: top + bh, left: left + bw] = box
    total = canvas.sum()
    if total > 0:
        ys, xs = np.indices(canvas.shape)
        dy = int(round(MNIST_CENTRE - (ys * canvas).sum() / total))
        dx = int(round(MNIST_CENTRE - (xs * canvas).sum() / total))
        canvas = _shift(canvas, dy, dx)
    return canvas


def _upper_quartile(values: np.ndarray) -> float:
    """np.percentile(values, 75) (linear interpolation) by one partial sort: a fifth of the
    time on a digit's few thousand pixels."""
    position = 0.75 * (values.size - 1)
    lo = int(position)
    hi = min(lo + 1, values.size - 1)
    part = np.partition(values, (lo, hi) if hi != lo else lo)
    low, high, fraction = float(part[lo]), float(part[hi]), position - lo
    return low + (high - low) * fraction


def stroke_width(shape: np.ndarray) -> float:
    """The mean width of a binary shape's strokes, in its pixels: area / skeleton length."""
    from skimage.morphology import skeletonize

    length = int(skeletonize(shape).sum())
    return float(shape.sum()) / max(length, 1)


def normalise_stroke_width(shape: np.ndarray) -> np.ndarray:
    """Thin strokes that are wider than MNIST's, thicken those that are thinner.

    `shape` is a digit drawn FINE times finer than MNIST's 20-pixel box. MNIST's strokes are
    2.0-5.0 pixels wide in that box (5th-95th percentile, median 3.25; the embedded 5,000). A
    fat marker or a coarse scan wider than 4.5 is thinned to 3.5, a hairline (a fine pen in a
    large photo) thickened to 2.5. (On 900 upscaled 8x8 scans of the validation half, thinning
    read 93.9% against 91.8% without; thinning to 4.0 above 5.0, 93.4%; BENCHMARKS.md.)
    """
    from scipy import ndimage

    width = stroke_width(shape) / FINE
    if width > STROKE_RANGE[1]:
        inside = ndimage.distance_transform_edt(shape)
        thinner = inside > (width - THIN_TO) / 2 * FINE
        return thinner if thinner.any() else shape
    if width < STROKE_RANGE[0]:
        outside = ndimage.distance_transform_edt(~shape)
        return outside <= (2.5 - width) / 2 * FINE
    return shape


def _scaled(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """(width, height) of an image of `shape` (rows, columns) scaled by `factor`."""
    return max(1, round(shape[1] * factor)), max(1, round(shape[0] * factor))


def _resize(image: np.ndarray, size: tuple[int, int], smooth: bool = False) -> np.ndarray:
    """Resize a float image to `size` = (width, height): area averaging, or Lanczos (`smooth`)."""
    from PIL import Image

    if size == (image.shape[1], image.shape[0]):
        return image
    resample = Image.LANCZOS if smooth else Image.BOX
    return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize(size, resample),
                      dtype=np.float32)


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(image)
    h, w = image.shape
    src = image[max(0, -dy): h - max(0, dy), max(0, -dx): w - max(0, dx)]
    out[max(0, dy): max(0, dy) + src.shape[0], max(0, dx): max(0, dx) + src.shape[1]] = src
    return out
