"""The test images in TensorBoard's Embedding Projector, each shown as its own digit.

After `Trainer.test`, the features the model computed just before its classifier (the input
of its last Dense layer, collected in the test's one prediction pass) go to TensorBoard's
Projector with a sprite of the 28x28 images and, per image, its true class, the prediction,
whether it was right and the confidence. Colour by `correct` or search `predicted` and the
errors stand out in the wrong cluster.
"""

from __future__ import annotations

import math

import numpy as np

from digits.callbacks.base import EveryNEpochs
from digits.callbacks.drawing import png_bytes
from digits.callbacks.tensorboard import close_summary_writers, summary_step, summary_writer
from digits.runs.atomic import atomic_write_bytes, atomic_write_text

PROJECTOR_CONFIG = "projector_config.pbtxt"  # what TensorBoard's Projector looks for in a run
ASSETS = "projector"
SPRITE_LIMIT = 8192  # the Projector's largest sprite side, in pixels


def sprite(images: np.ndarray) -> np.ndarray:
    """Images (N, h, w[, 1]) in [0, 1] tiled row by row into one square uint8 sheet, dark ink
    on white (the Projector's own background), as the Projector's sprites are laid out."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    count, height, width = images.shape
    side = max(1, math.ceil(math.sqrt(count)))
    sheet = np.full((side * height, side * width), 255, dtype=np.uint8)
    ink = 255 - np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    for index in range(count):
        row, column = divmod(index, side)
        sheet[row * height:(row + 1) * height, column * width:(column + 1) * width] = ink[index]
    return sheet


def metadata_tsv(y_true, probabilities, class_names) -> str:
    """One row per image (true class, prediction, right or wrong, confidence), with a header:
    the Projector's labels and colours."""
    predicted = np.asarray(probabilities).argmax(axis=1)
    confidence = np.asarray(probabilities)[np.arange(len(predicted)), predicted]
    rows = ["digit\tpredicted\tcorrect\tconfidence"]
    for truth, guess, p in zip(np.asarray(y_true), predicted, confidence, strict=True):
        rows.append(f"{class_names[int(truth)]}\t{class_names[int(guess)]}\t"
                    f"{'yes' if truth == guess else 'no'}\t{p:.3f}")
    return "\n".join(rows) + "\n"


def tensor_bytes(features: np.ndarray) -> bytes:
    """The features as the Projector's binary tensor file (float32, row-major).

    TensorBoard tries a tensor file as text first; bytes that happen to be valid UTF-8 would
    be misread, so such (rare) tensors are written as tab-separated text instead.
    """
    data = np.ascontiguousarray(features, dtype="<f4").tobytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    return "\n".join("\t".join(f"{v:.6g}" for v in row) for row in features).encode() + b"\n"


def write_projector(directory, name: str, features, images, y_true, probabilities,
                    class_names, limit: int) -> int:
    """Write one embedding (tensor, sprite, metadata) and its entry in the directory's
    `projector_config.pbtxt`, keeping the other entries there. Returns how many images."""
    from PIL import Image
    from tensorboard.plugins import projector

    count = min(len(features), limit)
    features = np.asarray(features[:count], dtype=np.float32).reshape(count, -1)
    assets = directory / ASSETS
    assets.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(assets / f"{name}.tensor.bin", tensor_bytes(features))
    atomic_write_text(assets / f"{name}.metadata.tsv",
                      metadata_tsv(y_true[:count], probabilities[:count], class_names))
    atomic_write_bytes(assets / f"{name}.sprite.png",
                       png_bytes(Image.fromarray(sprite(images[:count]), "L")))

    config = projector.ProjectorConfig()
    config_path = directory / PROJECTOR_CONFIG
    if config_path.is_file():
        from google.protobuf import text_format

        text_format.Parse(config_path.read_text(), config)
    kept = [e for e in config.embeddings if e.tensor_name != name]
    del config.embeddings[:]
    config.embeddings.extend(kept)
    embedding = config.embeddings.add()
    embedding.tensor_name = name
    embedding.tensor_path = f"{ASSETS}/{name}.tensor.bin"
    embedding.tensor_shape.extend(features.shape)
    embedding.metadata_path = f"{ASSETS}/{name}.metadata.tsv"
    embedding.sprite.image_path = f"{ASSETS}/{name}.sprite.png"
    embedding.sprite.single_image_dim.extend([images.shape[2], images.shape[1]])
    atomic_write_text(config_path, str(config))
    return count


class Embeddings(EveryNEpochs):
    """The test images in TensorBoard's Projector, as digits, coloured by right and wrong.

    After `Trainer.test`, the features before the classifier of up to `max_images` test
    images (all 10,000 of the official test set by default) are written to `<run>/test` for
    TensorBoard's Projector tab, with a sprite of the images and metadata (true digit,
    predicted digit, correct, confidence). They come from the test's own prediction pass.
    With `every_n_epochs`, the validation images' features are written too, every that many
    epochs, as `validation_epoch_<n>` in `<run>/validation` (that costs one prediction pass
    over the validation images each time).

    Args:
        max_images: at most this many images (default 10,000; the sprite stays within the
            Projector's 8192 px).
        every_n_epochs: also project the validation images every this many epochs (default:
            never).

    Example:
        >>> trainer = Trainer(callbacks=[Embeddings(max_images=2000)])
        >>> trainer.fit(model, data); trainer.test(model, data)
        >>> # tensorboard --logdir logs, then the Projector tab
    """

    needs_trainer = True

    order = 35
    heavy = True
    wants_features = True  # the Trainer's test pass then collects them

    def __init__(self, max_images: int = 10_000, every_n_epochs: int | None = None) -> None:
        super().__init__(every_n_epochs or 1)
        if isinstance(max_images, bool) or not isinstance(max_images, int) \
                or not 1 <= max_images <= (SPRITE_LIMIT // 28) ** 2:
            raise ValueError(f"max_images must be a whole number from 1 to "
                             f"{(SPRITE_LIMIT // 28) ** 2}, got {max_images!r}")
        if every_n_epochs is not None and (isinstance(every_n_epochs, bool)
                                           or not isinstance(every_n_epochs, int)
                                           or every_n_epochs < 1):
            raise ValueError(f"every_n_epochs must be a whole number >= 1, got {every_n_epochs!r}")
        self.max_images = max_images
        self.validation = every_n_epochs is not None

    def on_due_epoch(self, epoch: int) -> None:
        trainer = self.trainer
        if not self.validation or trainer is None or trainer.run is None or trainer.fast_dev_run:
            return
        split = trainer.data.val.take(self.max_images)
        features, probabilities = trainer.features_and_probabilities(self.model, split)
        if features is None:
            return
        names = trainer.data.class_names
        directory = trainer.run.path / "validation"
        summary_writer(trainer, "validation")  # the directory is a run TensorBoard lists
        trainer.run_in_background(lambda: write_projector(
            directory, f"validation_epoch_{epoch + 1}", features, split.x, split.y,
            probabilities, names, self.max_images), callback=self)

    def on_test_end(self, trainer, result) -> None:
        if trainer.run is None or trainer.fast_dev_run or result.features is None:
            return
        images = trainer.data.test.x[: len(result.y_true)]
        writer = summary_writer(trainer, "test")  # makes <run>/test a run TensorBoard lists
        count = write_projector(trainer.run.path / "test", "test", result.features, images,
                                result.y_true, result.probabilities, result.class_names,
                                self.max_images)
        import tensorflow as tf

        with writer.as_default():
            tf.summary.text("test/embeddings", f"{count} test images in the Projector tab "
                            f"({result.features.shape[1]} features each)",
                            step=summary_step(trainer))
        writer.flush()

    def teardown(self, trainer, stage: str) -> None:
        close_summary_writers(trainer)
