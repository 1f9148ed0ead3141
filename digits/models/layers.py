"""Keras layers of digits' own, registered so that saved models load in Keras safe mode.

Importing this module imports Keras; `digits.models` imports it only when it builds or loads a
model.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="digits")
class InkVariation(keras.layers.Layer):
    """Random stroke width, blur and contrast of white-on-black digits, in training only.

    What real images bring that MNIST's clean scans lack: a coarse scan (the digit reduced to
    10x10 and enlarged again), a fat marker or a fine pen (strokes dilated or eroded by a
    pixel), a soft focus (a 3x3 Gaussian blur mixed in), and ink that is not saturated or has
    harder edges (a gamma curve). Each sample gets its own draw; at
    inference the layer passes images through unchanged.

    Args:
        strength: 0 turns it off; 1 (default) coarsens 15% of the images, dilates 25% and
            erodes 15%, blurs 30% and changes the contrast of 50%; larger values apply more.
        seed: seed of its random draws (its state is saved with the run, so a resumed run
            draws the same).

    Example:
        >>> layer = InkVariation(strength=1.0, seed=0)
        >>> layer(keras.ops.ones((2, 28, 28, 1)), training=True).shape
        (2, 28, 28, 1)
    """

    def __init__(self, strength: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.strength = float(strength)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training or self.strength <= 0:
            return images
        s = self.strength
        given = images.dtype
        images = ops.cast(images, "float32")  # under mixed precision too: 1e-6 is 0 in float16
        batch = ops.shape(images)[0]
        draws = keras.random.uniform((batch, 5, 1, 1, 1), seed=self.seed_generator)
        thick, blur_draw, gamma_draw, gamma_on, coarse = (draws[:, i] for i in range(5))
        # A coarse scan (other writers' 8x8 or 16x16 digits, upscaled): the digit's 20 pixels
        # seen through 10, then drawn back at full size.
        # (3x3 average pooling rather than an "area" resize, which XLA cannot compile)
        low = ops.image.resize(ops.average_pool(images, 3, strides=3, padding="same"),
                               ops.shape(images)[1:3], interpolation="bilinear")
        low = low / ops.maximum(ops.max(low, axis=(1, 2, 3), keepdims=True), 1e-6)
        images = ops.where(coarse < 0.15 * s, low, images)
        dilated = ops.max_pool(images, 2, strides=1, padding="same")
        eroded = -ops.max_pool(-images, 2, strides=1, padding="same")
        images = ops.where(thick < 0.15 * s, eroded, ops.where(thick > 1 - 0.25 * s, dilated, images))
        kernel = ops.convert_to_tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0
        blurred = ops.depthwise_conv(images, ops.reshape(kernel, (3, 3, 1, 1)), padding="same")
        mix = ops.where(blur_draw < 0.3 * s, blur_draw / (0.3 * s), 0.0)
        images = images + mix * (blurred - images)
        gamma = ops.exp((gamma_draw - 0.5) * 0.8 * s)
        gamma = ops.where(gamma_on < 0.5 * s, gamma, 1.0)
        return ops.cast(ops.power(ops.clip(images, 0.0, 1.0), gamma), given)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "strength": self.strength, "seed": self.seed}


@keras.saving.register_keras_serializable(package="digits")
class ElasticDistortion(keras.layers.Layer):
    """Elastic distortion of images (Simard et al. 2003), in training only.

    Each pixel moves along a smooth random field: uniform noise in [-1, 1] per pixel and
    direction, smoothed by a Gaussian of `sigma` pixels and scaled by `alpha`, as in the
    paper (which used alpha 34 and sigma 4 on 29x29 digits). The fields come from a bank of
    `bank_size` drawn once when the layer is built (from `seed`, not saved with the model: a
    loaded model rebuilds the same bank); each image takes one of them at random, mirrored or
    transposed at random (eight variants of each field), and scaled by a random factor in
    [0, 1], so that small distortions stay common. The image is resampled bilinearly, with
    black outside the frame. At inference the layer passes images through unchanged.

    Args:
        alpha: the field's scale in pixels per unit of smoothed noise (default 34; 0 turns the
            layer off).
        sigma: the Gaussian's standard deviation in pixels (default 4): larger is smoother.
        probability: the share of images distorted (default 1.0).
        bank_size: how many fields are drawn at build time (default 256).
        seed: seed of the bank and of the per-image draws.

    Example:
        >>> layer = ElasticDistortion(alpha=34, sigma=4, seed=0)
        >>> layer(keras.ops.ones((2, 28, 28, 1)), training=True).shape
        (2, 28, 28, 1)
    """

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0, probability: float = 1.0,
                 bank_size: int = 256, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.sigma = float(alpha), float(sigma)
        self.probability, self.bank_size = float(probability), int(bank_size)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._bank = None

    def build(self, input_shape):
        height, width = int(input_shape[1]), int(input_shape[2])
        self._bank = ops.convert_to_tensor(
            elastic_fields(self.bank_size, height, width, self.alpha, self.sigma, self.seed))
        self.built = True

    def call(self, images, training=None):
        if not training or self.alpha <= 0 or self.probability <= 0:
            return images
        given = images.dtype
        images = ops.cast(images, "float32")
        shape = ops.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        pick = keras.random.randint((batch,), 0, self.bank_size, seed=self.seed_generator)
        field = ops.take(self._bank, pick, axis=0)  # (batch, height, width, 2): dy, dx
        draws = keras.random.uniform((batch, 5), seed=self.seed_generator)
        flip_y, flip_x, swap, scale, on = (draws[:, i] for i in range(5))
        # Mirroring a field flips the sign of that displacement; transposing swaps the axes.
        # (square images only for the transpose: the default 28x28 is)
        if self._bank.shape[1] == self._bank.shape[2]:
            transposed = ops.flip(ops.transpose(field, (0, 2, 1, 3)), axis=-1)
            field = ops.where(ops.reshape(swap < 0.5, (-1, 1, 1, 1)), transposed, field)
        sign_y = ops.where(flip_y < 0.5, -1.0, 1.0)
        sign_x = ops.where(flip_x < 0.5, -1.0, 1.0)
        amount = ops.where(on < self.probability, scale, 0.0)
        dy = field[..., 0] * ops.reshape(sign_y * amount, (-1, 1, 1))
        dx = field[..., 1] * ops.reshape(sign_x * amount, (-1, 1, 1))
        rows = ops.reshape(ops.cast(ops.arange(height), "float32"), (1, -1, 1)) + dy
        cols = ops.reshape(ops.cast(ops.arange(width), "float32"), (1, 1, -1)) + dx
        return ops.cast(bilinear_sample(images, rows, cols), given)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "sigma": self.sigma,
                "probability": self.probability, "bank_size": self.bank_size, "seed": self.seed}


def elastic_fields(count: int, height: int, width: int, alpha: float, sigma: float,
                   seed: int | None = None):
    """`count` displacement fields (count, height, width, 2) of (dy, dx) in pixels: uniform
    noise in [-1, 1] smoothed by a Gaussian of `sigma` pixels and scaled by `alpha`, as
    Simard et al. (2003) define them. The same seed gives the same fields."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0 if seed is None else seed)
    noise = rng.uniform(-1.0, 1.0, size=(count, height, width, 2))
    smooth = gaussian_filter(noise, sigma=(0, sigma, sigma, 0), mode="constant")
    return (smooth * alpha).astype("float32")


def bilinear_sample(images, rows, cols):
    """Images (batch, height, width, channels) read at fractional `rows` and `cols` (each
    (batch, height, width)), bilinearly, with zeros outside the frame."""
    shape = ops.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    flat = ops.reshape(images, (-1, channels))
    base = ops.reshape(ops.arange(batch) * height * width, (-1, 1, 1))
    r0, c0 = ops.floor(rows), ops.floor(cols)
    fr, fc = rows - r0, cols - c0
    r0, c0 = ops.cast(r0, "int32"), ops.cast(c0, "int32")
    out = 0.0
    for dr, wr in ((0, 1.0 - fr), (1, fr)):
        for dc, wc in ((0, 1.0 - fc), (1, fc)):
            r, c = r0 + dr, c0 + dc
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            index = base + ops.clip(r, 0, height - 1) * width + ops.clip(c, 0, width - 1)
            values = ops.take(flat, ops.reshape(index, (-1,)), axis=0)
            values = ops.reshape(values, (batch, height, width, channels))
            weight = ops.where(inside, wr * wc, 0.0)
            out = out + values * ops.expand_dims(weight, -1)
    return out
