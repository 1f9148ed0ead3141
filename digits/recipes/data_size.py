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


# How long the commands take with their defaults on this project's 2-core machines (no GPU),
# measured (BENCHMARKS.md): for --help, so that a user knows before pressing Enter.
HOW_LONG = {
    "train": (
        "how long, on 2 CPU cores with the defaults (measured; BENCHMARKS.md):\n"
        "  the embedded 5,000 digits (mnist-5k), 40 epochs:  1m40s with native bfloat16\n"
        "    (Intel AMX, AMD AVX512_BF16), 3m20s in float32 there, 8m40s on an AVX2-only CPU\n"
        "  full MNIST (auto with internet; 54,000 training digits), 16 epochs:  12m10s with\n"
        "    AVX512_BF16, 35m20s on an AVX2-only CPU (2.5 GB peak memory)\n"
        "  the progress bar's ETA holds from the first epoch on; --epochs scales it"),
    "tune": (
        "how long, on 2 CPU cores with the defaults (measured; BENCHMARKS.md):\n"
        "  the main job on the embedded digits (a 10-trial search, then 4 runs of 40 epochs: one\n"
        "    without augmentation to compare, 3 averaged; --final-compare none: one run less):\n"
        "    11-12 minutes with AMD AVX512_BF16 (about 6 on an Intel AMX before the comparison),\n"
        "    an estimated 36 minutes on an AVX2-only CPU\n"
        "  on full MNIST (--dataset mnist): not yet run whole; every epoch is 12 times the\n"
        "    embedded digits' (38-51 s with AVX512_BF16, 104-124 s AVX2-only) and the 4 runs\n"
        "    train 16 epochs: an estimated hour and a quarter with AVX512_BF16, three hours\n"
        "    AVX2-only"),
}
