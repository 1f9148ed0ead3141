"""Test-time augmentation: a model's probabilities averaged over a few shifted copies of each
image.

A digit one pixel off where the model expects it, or a few degrees tilted, is still the same
digit; averaging the model's answers over such copies smooths out the answers that hinge on
exact placement. Each copy is made from the 28x28 inputs (after `digits.reading.images` has found and
normalised a digit), so it works the same for every saved format (`digits.deploy.runtimes`) and
costs one extra prediction per copy. Nothing here imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# The copies averaged: the image itself, shifted one pixel each way, and turned a little each
# way (BENCHMARKS.md, "Test-time augmentation", has what each set measured on validation).
VIEWS = ("identity", "up", "down", "left", "right", "turn-left", "turn-right")
TURN_DEGREES = 8.0


def view(images: np.ndarray, name: str) -> np.ndarray:
    """One copy of (N, 28, 28, 1) images: "identity", a one-pixel shift ("up", "down",
    "left", "right", filling with black) or a turn of TURN_DEGREES ("turn-left", "turn-right")
    about the centre."""
    if name == "identity":
        return images
    if name in ("up", "down", "left", "right"):
        axis, step = {"up": (1, -1), "down": (1, 1), "left": (2, -1), "right": (2, 1)}[name]
        moved = np.roll(images, step, axis=axis)
        edge = [slice(None)] * images.ndim
        edge[axis] = 0 if step > 0 else -1
        moved[tuple(edge)] = 0.0
        return moved
    if name in ("turn-left", "turn-right"):
        from scipy.ndimage import rotate

        angle = TURN_DEGREES if name == "turn-left" else -TURN_DEGREES
        turned = rotate(images, angle, axes=(2, 1), reshape=False, order=1, mode="constant")
        return np.clip(turned, 0.0, 1.0).astype(images.dtype)
    raise ValueError(f"unknown view {name!r}; views: {', '.join(VIEWS)}")


def averaged(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
             views: tuple[str, ...] = VIEWS, identity: np.ndarray | None = None) -> np.ndarray:
    """`predict`'s probabilities (N, classes) averaged over `views` of `images` (N, 28, 28, 1).

    `identity`: the probabilities of the images as they are, where the caller has them already
    (the Trainer's test pass that also collects features): that view is not predicted again.

    Example:
        >>> probabilities = averaged(runtime.predict, images)
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if len(images) == 0 or tuple(views) == ("identity",):
        return predict(images)
    total = None
    for name in views:
        known = identity if name == "identity" else None
        p = np.asarray(predict(view(images, name)) if known is None else known, dtype=np.float64)
        total = p if total is None else total + p
    return (total / len(views)).astype(np.float32)
