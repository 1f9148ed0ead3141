"""Which Keras dtype policy a run computes in, and float32 copies of mixed-precision models.

`precision="auto"` (the Trainer's and the command lines' default) trains in `mixed_bfloat16`
on a CPU that computes bfloat16 natively (AVX512_BF16 or AMX: oneDNN's convolutions then run
about 3x faster than in float32, and the default CNN's steady epoch 2.0x; BENCHMARKS.md) and
in float32 everywhere else, a GPU included (its mixed precision is not measured here). The
weights stay float32 under either policy; only the layers' computations change.

A model file keeps the policy it was trained with. `float32_copy` gives the same model
computing in float32, for a machine without native bfloat16 and for exports, whose runtimes
(ONNX Runtime, TFLite) have few bfloat16 kernels.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

# The CPU flags (Linux /proc/cpuinfo names) of native bfloat16 arithmetic.
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them; empty where /proc/cpuinfo is not there."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX)."""
    return any(flag in cpu_flags() for flag in BFLOAT16_FLAGS)


def tensorflow_sees_gpu() -> bool:
    """Whether TensorFlow (imported here) has a GPU to compute on."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(precision: str) -> str:
    """The dtype policy for `precision`: itself, or for "auto" `mixed_bfloat16` on a CPU-only
    machine with native bfloat16 and float32 otherwise.

    Example:
        >>> resolve_precision("float32")
        'float32'
        >>> resolve_precision("auto") in ("float32", "mixed_bfloat16")
        True
    """
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if native_bfloat16() and not tensorflow_sees_gpu() else "float32"


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy set to `name` inside the block, and back to what it was."""
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def is_mixed(model) -> bool:
    """Whether any layer of `model` computes in another dtype than float32."""
    return any(layer.dtype_policy.compute_dtype != "float32" for layer in _layers(model))


def float32_copy(model):
    """`model` rebuilt with every layer computing in float32, holding the same weights (the
    weights of a mixed-precision model are float32 already: nothing is rounded). A model that
    computes in float32 already is returned as it is.

    Example:
        >>> import keras
        >>> with dtype_policy("mixed_bfloat16"):
        ...     inputs = keras.Input((4,))
        ...     mixed = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        >>> is_mixed(mixed), is_mixed(float32_copy(mixed))
        (True, False)
    """
    if not is_mixed(model):
        return model
    config = _float32_config(model.get_config())
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def for_this_machine(model):
    """`model` as this machine runs it best: a model that computes in bfloat16, loaded on a
    CPU without native bfloat16 (where TensorFlow emulates it slowly, if at all), becomes its
    float32 copy; any other model is returned as it is."""
    computes_bfloat16 = any(layer.dtype_policy.compute_dtype == "bfloat16"
                            for layer in _layers(model))
    return float32_copy(model) if computes_bfloat16 and not native_bfloat16() else model


def _layers(model):
    """Every layer of `model`, nested models' too (Keras' own walk, as `digits.speed.fusion`)."""
    from digits.keras_internals import all_layers

    return all_layers(model)


def _float32_config(value):
    """A layer config with every dtype policy replaced by float32 (nested models included)."""
    if isinstance(value, dict):
        if value.get("class_name") == "DTypePolicy" or (
                value.get("class_name") == "DTypePolicyMap"):
            return "float32"
        return {key: ("float32" if key == "dtype" and isinstance(item, str)
                      and item.startswith("mixed_") else _float32_config(item))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_float32_config(item) for item in value]
    return value
