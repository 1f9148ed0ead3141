"""Found digits + a classifier -> the reading of each image: its digits left to right.

`digits.reading.images` finds the marks in an image and prepares each as a 28x28 input; a mark as wide
as two digits also comes with ways to cut it in two. Here a classifier decides: every input of
every image is classified in one batch, then every cut in a second, and a mark is read as two
digits when both halves are read with more confidence than the whole (touching digits are
recognised by being recognisable). No TensorFlow here: `classify` is any function from
(N, 28, 28) float32 inputs to (N, 10) probabilities.

Example:
    >>> found = [find_digits_in_file("2026.jpg")]
    >>> [reading.text for reading in read_digits(found, classify)]
    ['2026']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from digits.reading.images import FoundDigit, FoundDigits

# A digit read with less probability than this is marked uncertain (`--min-probability`).
# Chosen on photo-like images made from the validation digits (BENCHMARKS.md, "Your own digits").
MIN_PROBABILITY = 0.5
# A mark is read as two digits when both halves are read at least this surely, and their
# geometric mean beats the whole mark's probability by this margin. Chosen on photo-like images
# of the embedded training digits: of 22 marks holding two touching digits, 18 were cut, and
# none of 253 single digits wide enough to be tried (0.5 and no margin: 20 and 6).
SPLIT_CONFIDENCE = 0.7
SPLIT_MARGIN = 0.1

Classifier = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class DigitReading:
    """One digit as read: the best class, its probability, the top three, its box and input."""

    digit: int
    probability: float
    top3: list[tuple[int, float]]
    box: tuple[int, int, int, int]
    input: np.ndarray
    uncertain: bool

    def to_dict(self) -> dict:
        return {"digit": self.digit, "probability": self.probability,
                "top3": [{"digit": d, "probability": p} for d, p in self.top3],
                "box": list(self.box), "uncertain": self.uncertain}


@dataclasses.dataclass
class ImageReading:
    """An image's reading: its digits left to right, and what was found in it."""

    digits: list[DigitReading]
    found: FoundDigits

    @property
    def text(self) -> str:
        """The reading as a string of digits, e.g. "2026"."""
        return "".join(str(d.digit) for d in self.digits)

    @property
    def uncertain(self) -> bool:
        return any(d.uncertain for d in self.digits)

    def to_dict(self, image: str) -> dict:
        """The JSON contract of `digits.predict --json` (and of the server's answers)."""
        entry = {"image": image, "text": self.text, "uncertain": self.uncertain,
                 "digits": [d.to_dict() for d in self.digits]}
        if len(self.digits) == 1:
            only = self.digits[0]
            entry.update(digit=only.digit, probability=only.probability,
                         top3=entry["digits"][0]["top3"])
        return entry

    def summary(self) -> str:
        """The reading in one line: `2026  (98%, 99%, 97%, 99%)`; an uncertain digit is a `?`
        in the reading and named with its probability, e.g. `20?6  (98%, 99%, 41% for 7, 99%)`."""
        text = "".join("?" if d.uncertain else str(d.digit) for d in self.digits)
        shares = [f"{percent(d.probability)} for {d.digit}" if d.uncertain
                  else percent(d.probability) for d in self.digits]
        return f"{text}  ({', '.join(shares)})"


def read_digits(found: Sequence[FoundDigits], classify: Classifier,
                min_probability: float = MIN_PROBABILITY) -> list[ImageReading]:
    """Read every image's digits with two calls of `classify`, whatever the number of images."""
    marks = [digit for image in found for digit in image.digits]
    whole = _classify_marks(classify, marks)
    cuts = [(m, left, right) for m in marks for left, right in m.splits]
    halves = _classify_marks(classify, [half for _, left, right in cuts for half in (left, right)])
    best_cut: dict[int, tuple[float, list]] = {}
    for k, (mark, left, right) in enumerate(cuts):
        p_left, p_right = halves[2 * k], halves[2 * k + 1]
        sure_left, sure_right = float(p_left.max()), float(p_right.max())
        score = float(np.sqrt(sure_left * sure_right))
        if min(sure_left, sure_right) >= SPLIT_CONFIDENCE and \
                score > best_cut.get(id(mark), (0.0, None))[0]:
            best_cut[id(mark)] = (score, [(left, p_left), (right, p_right)])
    readings, position = [], 0
    for image in found:
        digits = []
        for mark in image.digits:
            probabilities = whole[position]
            position += 1
            cut = best_cut.get(id(mark))
            if cut is not None and cut[0] > float(probabilities.max()) + SPLIT_MARGIN:
                digits.extend(_reading(half, p, min_probability) for half, p in cut[1])
            else:
                digits.append(_reading(mark, probabilities, min_probability))
        readings.append(ImageReading(digits, image))
    return readings


def percent(probability: float) -> str:
    """`0.997` -> `"99%"`: rounded down, since a digit read at 99.7% is not "100%" sure."""
    return f"{int(probability * 100)}%"


class Reader:
    """A loaded model that reads images: the one path `digits.predict` and `digits.serve` share.

    The model is any `digits.deploy.runtimes.Runtime`: a `.keras` file, or its SavedModel, ONNX or
    LiteRT export.

    Example:
        >>> reader = Reader.load("logs/cnn/version_0/model.keras")
        >>> reader.read([find_digits_in_file("2026.jpg")])[0].text
        '2026'
    """

    def __init__(self, runtime, min_probability: float = MIN_PROBABILITY):
        self.runtime = runtime
        self.min_probability = min_probability

    @classmethod
    def load(cls, path: str, threads: int | None = None, tta: bool = False, **kwargs) -> Reader:
        """A Reader of the model at `path` (any format); `tta` averages each digit's
        probabilities over `digits.recipes.tta`'s copies."""
        from digits.deploy.runtimes import load_runtime

        runtime = load_runtime(path, threads=threads)
        runtime.tta = tta
        return cls(runtime, **kwargs)

    def classify(self, inputs: np.ndarray) -> np.ndarray:
        """(N, 28, 28) inputs -> (N, 10) probabilities."""
        return self.runtime.predict(inputs)

    def read(self, found: Sequence[FoundDigits]) -> list[ImageReading]:
        return read_digits(found, self.classify, self.min_probability)


def _classify_marks(classify: Classifier, marks: list[FoundDigit]) -> np.ndarray:
    """Each mark's probabilities: its input's, averaged with its variants' (one call)."""
    variants = [(k, v) for k, m in enumerate(marks) for v in m.variants]
    probabilities = _classify(classify, [m.input for m in marks] + [v for _, v in variants])
    mine = probabilities[:len(marks)].copy()
    if variants:
        counts = np.ones(len(marks))
        for (k, _), p in zip(variants, probabilities[len(marks):], strict=True):
            mine[k] += p
            counts[k] += 1
        mine /= counts[:, None]
    return mine


def _classify(classify: Classifier, inputs: list[np.ndarray]) -> np.ndarray:
    if not inputs:
        return np.zeros((0, 10), np.float64)
    probabilities = np.asarray(classify(np.stack(inputs).astype(np.float32)), dtype=np.float64)
    if probabilities.shape != (len(inputs), 10):
        raise ValueError(f"the classifier returned shape {probabilities.shape} for "
                         f"{len(inputs)} inputs; expected ({len(inputs)}, 10)")
    return probabilities


def _reading(mark: FoundDigit, probabilities: np.ndarray, min_probability: float) -> DigitReading:
    top = np.argsort(probabilities)[::-1][:3]
    best = float(probabilities[top[0]])
    return DigitReading(int(top[0]), best, [(int(k), float(probabilities[k])) for k in top],
                        mark.box, mark.input, best < min_probability)
