"""Writing a Keras model as an exported runtime file (SavedModel, ONNX, LiteRT; int8 or float16
quantized), and timing a runtime on one image: what `digits.export` checks and keeps, and what a
multi-objective search measures (`digits.deploy.costs`).
"""

from __future__ import annotations

import time
from pathlib import Path

# Training images the int8 quantizers calibrate their activation ranges on.
CALIBRATION_IMAGES = 500


def write_model(model, fmt: str, path: Path, quantize: str | None, data) -> None:
    """Write `model` to `path` as `fmt`: Keras' own export, then the format's own quantizer
    (int8 calibrated on `data`'s first training images). Nothing is checked here: see `export`."""
    import warnings

    from digits.deploy.runtimes import quiet_native_output
    from digits.speed.fusion import unfuse_batch_norm

    unfuse_batch_norm(model)  # the exporters fold plain BatchNormalization themselves
    model = inference_model(model)
    calibration = data.train.x[:CALIBRATION_IMAGES].astype("float32") if quantize == "int8" \
        else None
    with quiet_native_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx shim probes np.object
        if fmt == "saved_model":
            model.export(str(path), format="tf_saved_model", verbose=False)
        elif fmt == "litert":
            model.export(str(path), format="litert", verbose=False,
                         **_litert_options(quantize, calibration))
        else:
            plain = path if quantize is None else path.with_name("float32.onnx")
            model.export(str(plain), format="onnx", verbose=False)
            if quantize:
                _quantize_onnx(plain, path, quantize, calibration)


def inference_model(model):
    """`model` frozen in inference mode, as a model of its own.

    Keras' exporters trace `model.__call__` without `training=False`, and the traced graph of a
    model with random augmentation layers then kept them random (measured: a SavedModel of the
    default CNN disagreed with its source on 14% of test images, and differed from itself
    between two calls). Calling the model with `training=False` inside a new functional model
    fixes the mode in the graph, so augmentation and dropout are left out of every export.
    """
    import keras
    import numpy as np

    inputs = keras.Input(shape=(28, 28, 1), dtype="float32", name="image")
    frozen = keras.Model(inputs, model(inputs, training=False), name=f"{model.name}_inference")
    frozen(np.zeros((1, 28, 28, 1), np.float32))  # the ONNX exporter wants a model once called
    return frozen


def _litert_options(quantize: str | None, calibration) -> dict:
    import tensorflow as tf

    if quantize is None:
        return {}
    if quantize == "float16":
        return {"optimizations": [tf.lite.Optimize.DEFAULT],
                "target_spec": {"supported_types": [tf.float16]}}

    def representative():
        for k in range(len(calibration)):
            yield [calibration[k: k + 1]]

    # Integer kernels throughout, float32 in and out: callers pass the same images as before.
    return {"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": representative,
            "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}}


def _quantize_onnx(plain: Path, path: Path, quantize: str, calibration) -> None:
    import onnx

    if quantize == "float16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(plain)), keep_io_types=True), str(path))
        return
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = onnx.load(str(plain)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration[k: k + 50] for k in range(0, len(calibration), 50))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {name: batch}

    quantize_static(str(plain), str(path), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)


def latency_ms(runtime, image, calls: int = 50) -> float:
    """Median milliseconds of `runtime.predict` on one image (after a warm-up call)."""
    import statistics

    runtime.predict(image)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        runtime.predict(image)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 3)


def human_size(size: float) -> str:
    """Bytes as a person reads them: 598 KB, 1.2 MB (1,024-based)."""
    return f"{size / 1024:.0f} KB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MB"
