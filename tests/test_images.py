"""Your own images -> 28x28 inputs: photos of paper, boards, scans and numbers, made from real digits.

The images come from `scripts/photos.py` (the embedded MNIST digits on lit paper, with noise, blur
and JPEG) and know where each digit is, so the tests check the boxes as well as the inputs.
The classifier for the reading tests is a nearest-neighbour vote over the embedded digits:
real, imperfect and without TensorFlow.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from digits.errors import ImageError
from digits.reading import images, read_digits
from scripts import photos


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / float(aw * ah + bw * bh - w * h)


def gray_of(sample) -> np.ndarray:
    return photos.gray_levels(sample.image)


@pytest.fixture(scope="module")
def digits5k():
    """The embedded digits, shuffled (they are stored sorted by class): the first 4,000 are
    the classifier's, the last 1,000 the images'."""
    from digits.data import Split, load_mnist_5k

    data = load_mnist_5k()
    order = np.random.default_rng(0).permutation(len(data.y))
    return Split(data.x[order], data.y[order])


@pytest.fixture(scope="module")
def knn(digits5k):
    """A 10-nearest-neighbour vote over 4,000 embedded digits: (N, 28, 28) -> (N, 10)."""
    reference = digits5k.x[:4000].reshape(4000, -1)
    labels = digits5k.y[:4000]

    def classify(inputs: np.ndarray) -> np.ndarray:
        flat = inputs.reshape(len(inputs), -1)
        distances = (flat ** 2).sum(1)[:, None] - 2 * flat @ reference.T + (reference ** 2).sum(1)
        nearest = np.argsort(distances, axis=1)[:, :10]
        votes = np.stack([np.bincount(labels[row], minlength=10) for row in nearest])
        return (votes + 0.5) / 15.0  # smoothed: ten votes of ten is 0.7 sure, not certain

    return classify


@pytest.mark.parametrize("kind", ["photo", "ruled", "board", "number"])
def test_digits_on_lit_paper_are_found_where_they_are(kind, digits5k):
    for seed in range(6):
        sample = photos.make_sample(kind, digits5k.x[4000:], digits5k.y[4000:], seed=seed)
        found = images.find_digits(gray_of(sample))
        assert len(found.digits) == len(sample.text), (seed, sample.text)
        for digit, truth in zip(found.digits, sample.boxes, strict=True):
            assert iou(digit.box, truth) > 0.6, (seed, digit.box, truth)
        assert found.dark_ink == (kind != "board")


def test_the_input_is_made_as_mnist_was(digits5k):
    from PIL import Image

    original = digits5k.x[4321, ..., 0]
    paper = 255 - (original * 255).astype(np.uint8)  # dark ink on white, ten times larger
    big = np.asarray(Image.fromarray(paper).resize((280, 280), Image.BICUBIC), np.float32) / 255
    digit = images.find_digits(big).digits[0].input
    ys, xs = np.indices(digit.shape)
    centre = ((ys * digit).sum() / digit.sum(), (xs * digit).sum() / digit.sum())
    assert np.allclose(centre, (14, 14), atol=0.5)
    rows, cols = np.flatnonzero(digit.max(1) > 0.1), np.flatnonzero(digit.max(0) > 0.1)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (20, 21, 22)
    similarity = (digit * original).sum() / np.linalg.norm(digit) / np.linalg.norm(original)
    assert similarity > 0.85 and digit.max() == pytest.approx(1.0)


def test_dark_on_light_and_light_on_dark_give_the_same_input(digits5k):
    rng = np.random.default_rng(11)
    strokes = np.pad(photos.pen_strokes(digits5k.x[1234], 90, rng), 40)
    gray = (0.8 - 0.6 * strokes + rng.normal(0, 0.01, strokes.shape)).astype(np.float32)
    dark, light = images.find_digits(gray), images.find_digits(1.0 - gray)
    assert dark.dark_ink and not light.dark_ink
    assert np.abs(dark.digits[0].input - light.digits[0].input).mean() < 0.02


def test_a_lit_page_without_ink_is_blank_not_a_digit():
    rng = np.random.default_rng(0)
    page = photos.lit_paper(480, 640, rng).mean(axis=2)
    page = np.clip(page + rng.normal(0, 0.02, page.shape), 0, 1).astype(np.float32)
    with pytest.raises(ImageError, match="no digit found"):
        images.find_digits(page, "page.jpg")
    with pytest.raises(ImageError, match="no digit found"):
        images.find_digits(np.full((50, 40), 0.8, np.float32), "grey.png")


def test_ruled_lines_and_dust_are_not_digits(digits5k):
    rng = np.random.default_rng(5)
    page = photos.lit_paper(600, 800, rng).mean(axis=2)
    lines = photos.ruled_lines((600, 800), rng)
    strokes = photos.pen_strokes(digits5k.x[7], 150, rng)
    ink = np.zeros((600, 800), np.float32)
    ink[200: 200 + strokes.shape[0], 300: 300 + strokes.shape[1]] = strokes
    gray = page * (1 - np.maximum(ink, lines)) + 0.1 * np.maximum(ink, lines)
    found = images.find_digits(gray.astype(np.float32))
    assert len(found.digits) == 1
    assert iou(found.digits[0].box, photos.ink_box(ink)) > 0.7


def test_scans_of_other_writers_fill_their_frame_and_are_still_found():
    pictures, labels = photos.sklearn_digits()
    for seed in range(8):
        sample = photos.make_sample("scan", None, None, seed=seed, digits8=(pictures, labels))
        found = images.find_digits(gray_of(sample))
        assert len(found.digits) == 1, seed
        x, y, w, h = found.digits[0].box
        assert h >= 0.7 * sample.image.height  # the digit spans the scan, as it was drawn


def test_touching_digits_are_read_as_two_when_both_halves_are_digits(digits5k, knn):
    rng = np.random.default_rng(2)
    zero, one = digits5k.x[4000:][digits5k.y[4000:] == 0][3], digits5k.x[4000:][digits5k.y[4000:] == 7][5]
    left, right = photos.pen_strokes(zero, 120, rng), photos.pen_strokes(one, 120, rng)
    # Slide the 7 into the 0 until they make one mark that a straight cut can part (where the
    # 7's bar overlaps the 0's side, no vertical cut can: that stays one digit).
    for overlap in range(20, 80, 2):
        at = left.shape[1] - overlap
        row = np.zeros((max(left.shape[0], right.shape[0]) + 10, at + right.shape[1]), np.float32)
        row[: left.shape[0], : left.shape[1]] = left
        row[10: 10 + right.shape[0], at:] = np.maximum(row[10: 10 + right.shape[0], at:], right)
        found = images.find_digits((0.9 - 0.75 * np.pad(row, 40)).astype(np.float32))
        if len(found.digits) == 1 and found.digits[0].splits:
            break
    assert len(found.digits) == 1 and found.digits[0].splits, overlap  # one mark, with cuts
    reading = read_digits([found], knn)[0]
    assert reading.text == "07"
    assert reading.digits[0].box[0] < reading.digits[1].box[0]


def test_zeros_are_not_cut_in_two(digits5k, knn):
    zeros, found = digits5k.x[4000:][digits5k.y[4000:] == 0][:30], []
    for k, zero in enumerate(zeros):
        strokes = photos.pen_strokes(zero, 100, np.random.default_rng(k))
        found.append(images.find_digits((0.85 - 0.7 * np.pad(strokes, 30)).astype(np.float32)))
    counts = [len(reading.digits) for reading in read_digits(found, knn)]
    # A closed 0 offers no cut (any column through it crosses two strokes); an open one may,
    # and then the 10-NN vote, surer than a CNN, can take its halves for two 1s.
    assert counts.count(1) >= 28, counts


def test_numbers_are_found_left_to_right_as_inputs_a_classifier_reads(digits5k, knn):
    inputs, truth = [], ""
    for seed in range(20):
        sample = photos.make_sample("number", digits5k.x[4000:], digits5k.y[4000:], seed=seed)
        found = images.find_digits(photos.gray_levels(sample.image))
        assert len(found.digits) == len(sample.text), seed
        xs = [d.box[0] for d in found.digits]
        assert xs == sorted(xs)
        inputs.append(found.inputs())
        truth += sample.text
    votes = knn(np.concatenate(inputs)).argmax(axis=1)
    # A 10-NN vote on 4,000 digits reads ~90% of clean MNIST; the inputs must read as well.
    assert np.mean(votes == np.array([int(c) for c in truth])) > 0.85


def test_the_json_contract(digits5k, knn):
    sample = photos.make_sample("number", digits5k.x, digits5k.y, seed=3)
    reading = read_digits([images.find_digits(gray_of(sample))], knn, min_probability=0.95)[0]
    entry = reading.to_dict("2026.jpg")
    assert entry["image"] == "2026.jpg" and entry["text"] == reading.text
    assert set(entry) == {"image", "text", "uncertain", "digits"}  # several digits: no "digit"
    for d in entry["digits"]:
        assert set(d) == {"digit", "probability", "top3", "box", "uncertain"}
        assert len(d["top3"]) == 3 and d["top3"][0]["digit"] == d["digit"]
        assert d["uncertain"] == (d["probability"] < 0.95) and len(d["box"]) == 4
    single = read_digits([images.find_digits(gray_of(photos.make_sample(
        "photo", digits5k.x, digits5k.y, seed=4)))], knn)[0].to_dict("7.png")
    assert {"digit", "probability", "top3"} <= set(single) and len(single["digits"]) == 1


def test_large_photos_are_reduced_and_boxes_are_in_the_photos_pixels(tmp_path, digits5k):
    from PIL import Image

    sample = photos.make_sample("number", digits5k.x, digits5k.y, seed=8)
    big = sample.image.resize((sample.image.width * 4, sample.image.height * 4), Image.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "big.jpg"
    big.transpose(Image.Transpose.ROTATE_90).save(path, quality=90, exif=exif)
    gray, size = images.read_image(path)
    assert size == big.size and max(gray.shape) == images.WORK_SIDE
    found = images.find_digits_in_file(path)
    assert len(found.digits) == len(sample.text)
    for digit, (x, y, w, h) in zip(found.digits, sample.boxes, strict=True):
        assert iou(digit.box, (4 * x, 4 * y, 4 * w, 4 * h)) > 0.6


def test_an_image_of_text_is_refused_rather_than_read_as_dozens_of_digits():
    rng = np.random.default_rng(0)
    page = np.full((400, 600), 0.9, np.float32)
    for y in range(20, 380, 30):
        for x in range(15, 585, 14):
            page[y: y + 12, x: x + 6] = 0.1 if rng.random() < 0.8 else 0.9
    with pytest.raises(ImageError, match="separate marks"):
        images.find_digits(page, "letter.png")


def test_transparent_png_is_read_over_white(tmp_path, digits5k):
    from PIL import Image

    alpha = (digits5k.x[9, ..., 0] * 255).astype(np.uint8)
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = alpha  # black ink where opaque, fully transparent elsewhere
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").resize((140, 140)).save(buffer, format="PNG")
    path = tmp_path / "ink.png"
    path.write_bytes(buffer.getvalue())
    found = images.find_digits_in_file(path)
    assert found.dark_ink and len(found.digits) == 1


def test_a_pixelated_enlargement_is_enlarged_again_smoothly():
    from PIL import Image

    pictures, _ = photos.sklearn_digits()
    low = (pictures[5] / 16.0).astype(np.float32)
    blocky = np.repeat(np.repeat(low, 9, axis=0), 9, axis=1)  # 72x72, nearest neighbour
    smooth = images.smooth_pixelation(blocky)
    expected = np.asarray(Image.fromarray(low, mode="F").resize((72, 72), Image.BICUBIC))
    assert np.allclose(smooth, np.clip(expected, 0, 1), atol=1e-6)
    noisy = np.clip(blocky + np.random.default_rng(0).normal(0, 0.01, blocky.shape), 0, 1)
    noisy = noisy.astype(np.float32)  # a camera's noise: no longer exact blocks, left alone
    assert images.smooth_pixelation(noisy) is noisy


def test_a_fat_marker_digit_is_read_both_redrawn_and_as_drawn(digits5k):
    """Strokes far wider than MNIST's are redrawn at its width for `input`; the strokes as drawn
    stay a variant, and the reading averages the classifier's probabilities over both."""
    from scipy import ndimage

    strokes = photos.pen_strokes(digits5k.x[4321], 120, np.random.default_rng(5)) > 0.3
    fat = ndimage.binary_dilation(strokes, iterations=10).astype(np.float32)  # a fat marker
    found = images.find_digits((0.85 - 0.7 * np.pad(fat, 40)).astype(np.float32))
    (digit,) = found.digits
    assert len(digit.variants) == 1
    redrawn, as_drawn = digit.input, digit.variants[0]
    assert (as_drawn > 0.5).sum() > 1.3 * (redrawn > 0.5).sum()  # the same digit, fatter
    # A digit with MNIST's own strokes is read once, as it is.
    normal = images.find_digits(0.85 - 0.7 * np.pad(strokes.astype(np.float32), 40))
    assert normal.digits[0].variants == []
    # The reading: the mean of the two inputs' probabilities.
    seen = []

    def classify(inputs):  # the redrawn input: a sure 3; any other: 8, unsure (no cut wins)
        seen.append(len(inputs))
        out = np.zeros((len(inputs), 10))
        for k, x in enumerate(inputs):
            if np.array_equal(x, redrawn):
                out[k, 3] = 1.0
            else:
                out[k, 8] = 0.6
        return out

    (reading,) = read_digits([found], classify)
    assert seen[0] == 2  # both inputs in one call (then the halves of the cuts it may offer)
    (read,) = reading.digits
    assert (read.digit, read.probability) == (3, pytest.approx(0.5))
    assert read.top3[1] == (8, pytest.approx(0.3))
