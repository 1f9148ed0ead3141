"""Fused batch normalization: the same BatchNormalization math on TensorFlow's fused kernel.

Keras 3 computes `BatchNormalization` from separate ops (a mean, a variance, a subtract, a
multiply, an add) and differentiates each of them; on this project's CPU that made a third
of the default CNN's training step. TensorFlow's `FusedBatchNormV3` (a oneDNN kernel on CPU)
does the forward pass and its gradient in one op each. `fuse_batch_norm(model)` routes every
plain `BatchNormalization` layer of a model through it:

- the same math: batch statistics with the biased variance in training, the moving averages
  updated with the layer's own momentum, the moving statistics at inference (or when the
  layer is frozen), float32 statistics under a mixed-precision policy;
- the same model: weights, config and saved `.keras` files are untouched (the layer's class
  never changes), so a saved model loads anywhere as plain Keras;
- only what it can match exactly: a layer that normalizes another axis than the last, takes a
  mask, uses `synchronized=True`, renormalization or an epsilon below the kernel's 1.001e-5,
  or sees float64 keeps Keras' own path.

The Trainer calls it before training (`Trainer(fused_batch_norm=True)`, the default).
"""

from __future__ import annotations

FUSED_MARK = "_digits_fused_batch_norm"


def fuse_batch_norm(model) -> int:
    """Route each eligible BatchNormalization layer of `model` through the fused kernel.

    Idempotent. Returns how many layers were newly fused; when any were, the model's compiled
    train/test/predict functions are dropped so that the next call traces the fused layers.
    Only the TensorFlow backend has the kernel: on another backend nothing changes.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return 0
    fused = 0
    for layer in _batch_norm_layers(model):
        if is_fused(layer) or not _eligible(layer):
            continue
        # An instance attribute: the layer's class, config and serialization stay Keras'.
        layer.call = _fused_call(layer)
        object.__setattr__(layer, FUSED_MARK, True)
        fused += 1
    if fused:
        _drop_compiled_functions(model)
    return fused


def unfuse_batch_norm(model) -> int:
    """Undo `fuse_batch_norm`: the layers use Keras' own `call` again. Returns how many."""
    restored = 0
    for layer in _batch_norm_layers(model):
        if is_fused(layer):
            del layer.call
            object.__setattr__(layer, FUSED_MARK, False)
            restored += 1
    if restored:
        _drop_compiled_functions(model)
    return restored


def _drop_compiled_functions(model) -> None:
    """Forget the model's traced train/test/predict functions: the next call traces anew."""
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)


def is_fused(layer) -> bool:
    return bool(getattr(layer, FUSED_MARK, False))


def _batch_norm_layers(model):
    import keras

    from digits.keras_internals import all_layers

    layers = all_layers(model)
    # Subclasses may change the math; only Keras' own class is known to be matched.
    return [layer for layer in layers if type(layer) is keras.layers.BatchNormalization]


def _eligible(layer) -> bool:
    """Whether the fused kernel computes exactly what this layer computes (as far as its
    settings and, once built, its input rank tell; the call checks the rest)."""
    if layer.renorm or layer.synchronized or layer.epsilon < 1.001e-5:
        return False
    spec = layer.input_spec
    ndim = getattr(spec, "ndim", None) if spec is not None else None
    return ndim is None or (ndim >= 2 and layer.axis % ndim == ndim - 1)


def _fused_call(layer):
    import tensorflow as tf

    keras_call = type(layer).call

    def call(inputs, training=None, mask=None):
        rank = len(inputs.shape)
        channels = inputs.shape[-1]
        if (mask is not None or rank < 2 or channels is None or layer.axis % rank != rank - 1
                or inputs.dtype == tf.float64):
            return keras_call(layer, inputs, training=training, mask=mask)

        # As Keras: statistics in float32, also for float16/bfloat16 activations. The kernel
        # takes 16-bit activations itself and keeps its statistics, scale and offset in
        # float32, so they stay 16-bit: no casts around it, and Grappler can fuse the ReLU
        # that follows (under mixed_bfloat16 the casts and the unfused ReLU were a third of
        # the step's non-convolution time, BENCHMARKS.md).
        x = inputs if inputs.dtype in (tf.bfloat16, tf.float16) else tf.cast(inputs, tf.float32)
        shape = tf.shape(x)
        # The fused kernel takes NHWC; normalizing the last axis over every other axis is the
        # same over (N*..., 1, 1, C).
        x4 = x if rank == 4 else tf.reshape(x, [-1, 1, 1, channels])
        gamma = tf.cast(layer.gamma, tf.float32) if layer.scale else tf.ones([channels])
        beta = tf.cast(layer.beta, tf.float32) if layer.center else tf.zeros([channels])
        if training and layer.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x4, gamma, beta, epsilon=layer.epsilon, is_training=True)
            # The kernel normalizes with the biased variance but returns the unbiased one
            # (Bessel's n/(n-1)); Keras' moving variance averages the biased one.
            n = tf.cast(tf.size(x4) // channels, tf.float32)
            variance = variance * tf.maximum(n - 1.0, 0.0) / tf.maximum(n, 1.0)
            momentum = layer.momentum
            layer.moving_mean.assign(
                tf.cast(layer.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum))
            layer.moving_variance.assign(
                tf.cast(layer.moving_variance, tf.float32) * momentum
                + variance * (1.0 - momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x4, gamma, beta, mean=tf.cast(layer.moving_mean, tf.float32),
                variance=tf.cast(layer.moving_variance, tf.float32), epsilon=layer.epsilon,
                is_training=False)
        if rank != 4:
            y = tf.reshape(y, shape)
        return tf.cast(y, layer.compute_dtype)

    return call
