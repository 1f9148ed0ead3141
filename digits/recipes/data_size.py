"""Defaults that follow the data size: how many epochs a run trains when the user gives none.

The 40-epoch default was chosen on the embedded 5,000 digits (4,500 training images: 180,000
images seen). On full MNIST's 54,000 training images the same 40 epochs see 2.16 million for
no measured gain: 16 epochs read 99.72% on the official test set and 40 read 99.70% (one seed
each, BENCHMARKS.md 2026-12-06): 2.5 times the work for nothing it could show. So a run sees
about `IMAGES_PER_RUN` training images: 40 epochs up to 21,600 images, fewer beyond, never
fewer than `MIN_EPOCHS`. A user's `--epochs` (or `--final-epochs`) always wins.
"""

from __future__ import annotations

from digits.engine.config import DEFAULTS

DEFAULT_EPOCHS = DEFAULTS.max_epochs  # the small-data recipe's 40
IMAGES_PER_RUN = 864_000  # 16 epochs of full MNIST's 54,000 training images
MIN_EPOCHS = 10  # fewer has never been measured


def default_epochs(train_images: int, multiple_of: int = 1) -> int:
    """The epochs a run on `train_images` training images trains by default (a multiple of
    `multiple_of`, for a cosine schedule restarted that many times)."""
    epochs = DEFAULT_EPOCHS if train_images <= IMAGES_PER_RUN // DEFAULT_EPOCHS \
        else max(MIN_EPOCHS, round(IMAGES_PER_RUN / train_images))
    return -(-epochs // multiple_of) * multiple_of


def describe(train_images: int, epochs: int, flag: str = "--epochs") -> str:
    """The notice saying why a run trains `epochs` epochs ("" when it is the usual 40)."""
    if epochs == DEFAULT_EPOCHS:
        return ""
    return (f"notice: {train_images:,} training images: {epochs} epochs, the default for this "
            f"many (about {IMAGES_PER_RUN:,} images seen; {DEFAULT_EPOCHS} epochs up to "
            f"{IMAGES_PER_RUN // DEFAULT_EPOCHS:,} images); {flag} N to choose")


HELP = (f"default: {DEFAULT_EPOCHS} up to {IMAGES_PER_RUN // DEFAULT_EPOCHS:,} training images, "
        f"then as many as see about {IMAGES_PER_RUN:,} images, at least {MIN_EPOCHS} "
        "(16 for full MNIST's 54,000)")
