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
