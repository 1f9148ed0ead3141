"""A trained digit classifier in any of the formats digits writes, behind one `predict`.

`digits.train` saves a `.keras` model; `digits.export` turns it into a TensorFlow SavedModel
(a directory), an ONNX file (`.onnx`, run by ONNX Runtime) or a LiteRT flatbuffer (`.tflite`,
run by LiteRT's interpreter). `load_runtime(path)` recognises each, checks that it takes 28x28x1
images and gives 10 class probabilities, and returns a `Runtime` whose `predict` maps
(N, 28, 28, 1) float32 images in [0, 1] to (N, 10) float32 probabilities. `digits.evaluate`,
`digits.predict` and `digits.serve` read every format through it, so an exported model is
tested, and used, exactly as the model it came from.

Example:
    >>> runtime = load_runtime("logs/cnn/version_0/model.int8.tflite")
    >>> runtime.format, runtime.predict(images).shape
    ('litert', (500, 10))
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from digits.errors import ModelError

FORMATS = ("keras", "saved_model", "onnx", "litert")
SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "litert": ".tflite"}
# The largest model file read (a digits CNN is well under 10 MB; the cap stops a hostile file).
MAX_FILE_BYTES = 512 * 1024 * 1024
# The sidecar `digits.export` writes beside an exported model: its source, classes and parity.
SIDECAR = ".digits.json"
SAVED_MODEL_SIDECAR = "digits.json"


def detect_format(path: str | os.PathLike) -> str:
    """The format of a model path, from its shape on disk: raises ModelError if none fits."""
    # os.path's checks: they answer False, where Path's raise, for a name too long.
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such model file or directory")
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise ModelError(f"{path}: not a file, nor a SavedModel directory (no saved_model.pb)")
    for fmt, suffix in SUFFIXES.items():
        if path.name.endswith(suffix):
            return fmt
    raise ModelError(f"{path}: not a model: expected a .keras, .onnx or .tflite file or a "
                     "SavedModel directory")


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the description of an exported model lies (see `digits.export`)."""
    path = Path(path)
    return path / SAVED_MODEL_SIDECAR if path.is_dir() else path.with_name(path.name + SIDECAR)


class Runtime(abc.ABC):
    """A loaded classifier: `predict` images -> probabilities, whatever the format."""

    format = "keras"
    batch_size = 256
    tta = False  # average over test-time augmented copies (`digits.recipes.tta`)

    def __init__(self, path: str):
        self.path = str(path)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, 28, 28, 1) or (N, 28, 28) float32 images in [0, 1] -> (N, 10) probabilities;
        averaged over `digits.recipes.tta`'s copies of each image when `tta` is set."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if len(x) == 0:
            return np.zeros((0, 10), np.float32)
        if self.tta:
            from digits.recipes import tta

            return tta.averaged(self._predict_once, x)
        return self._predict_once(x)

    def _predict_once(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(self._predict_batch(x[k: k + self.batch_size]),
                                          dtype=np.float32)
                               for k in range(0, len(x), self.batch_size)])

    @abc.abstractmethod
    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        """One batch of at most `batch_size` images -> their probabilities, in the format's
        own runtime."""

    def describe(self) -> dict:
        """What `GET /api/model` and the reports say about it: path, format, size, and the
        export's own description when `digits.export` wrote one."""
        path = Path(self.path)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() \
            else path.stat().st_size
        info = {"path": self.path, "format": self.format, "bytes": int(size)}
        sidecar = sidecar_path(path)
        if sidecar.is_file():
            try:
                info["export"] = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                pass  # a damaged description is not the model's fault: leave it out
        return info

    def _check(self) -> None:
        """Run one blank image: the output must be one row of 10 probabilities."""
        try:
            out = np.asarray(self._predict_batch(np.zeros((1, 28, 28, 1), np.float32)))
        except Exception as e:  # noqa: BLE001 - a model that cannot run is the file's fault
            raise ModelError(f"{self.path}: the model does not run on a 28x28x1 image: "
                             f"{first_line(e)}") from None
        if out.shape != (1, 10):
            raise ModelError(f"{self.path}: the model gives {tuple(out.shape[1:])} for an image; "
                             "expected 10 class probabilities")


class KerasRuntime(Runtime):
    format = "keras"

    def __init__(self, path: str):
        super().__init__(path)
        from digits.models import load_model

        self.model = load_model(path)

    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        # `predict_on_batch`: for the few images of a request or a folder it takes a half to a
        # third of `predict`'s time (measured: 300 inputs, 51 ms against 104 ms).
        return self.model.predict_on_batch(x)


class SavedModelRuntime(Runtime):
    format = "saved_model"

    def __init__(self, path: str):
        super().__init__(path)
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(path)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"{path}: cannot load the SavedModel: {first_line(e)}") from None
        fn = getattr(loaded, "serve", None)
        if fn is None:
            fn = loaded.signatures.get("serving_default") if hasattr(loaded, "signatures") else None
            if fn is None:
                raise ModelError(f"{path}: the SavedModel has no `serve` endpoint or "
                                 "serving_default signature")
            call = fn
            fn = lambda x: next(iter(call(x).values()))  # noqa: E731 - a signature returns a dict
        self._loaded, self._fn, self._tf = loaded, fn, tf
        self._check()

    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        return self._fn(self._tf.constant(x)).numpy()


class OnnxRuntime(Runtime):
    format = "onnx"

    def __init__(self, path: str, threads: int | None = None):
        super().__init__(path)
        _check_size(path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(f"{path}: reading ONNX models needs onnxruntime "
                             "(pip install onnxruntime)") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own types
            raise ModelError(f"{path}: cannot load the ONNX model: {first_line(e)}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{path}: the model has {len(inputs)} inputs and {len(outputs)} "
                             "outputs; expected one image input and one output")
        _check_input_shape(path, inputs[0].shape)
        self._input = inputs[0].name
        self._check()

    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]


class LiteRTRuntime(Runtime):
    format = "litert"

    def __init__(self, path: str, threads: int | None = None):
        super().__init__(path)
        _check_size(path)
        Interpreter = _litert_interpreter()
        try:
            with quiet_native_output():
                self.interpreter = Interpreter(model_path=path, num_threads=threads or None)
        except Exception as e:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError
            raise ModelError(f"{path}: cannot load the LiteRT model: {first_line(e)}") from None
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{path}: the model has {len(inputs)} inputs and {len(outputs)} "
                             "outputs; expected one image input and one output")
        self._in, self._out = inputs[0], outputs[0]
        _check_input_shape(path, list(self._in.get("shape_signature", self._in["shape"])))
        self._batch = None
        with quiet_native_output():
            self._check()

    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        interpreter, index = self.interpreter, self._in["index"]
        if self._batch != len(x):
            interpreter.resize_tensor_input(index, [len(x), 28, 28, 1])
            interpreter.allocate_tensors()
            self._batch = len(x)
        interpreter.set_tensor(index, _quantize(x, self._in))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(self._out["index"]), self._out)


@contextlib.contextmanager
def quiet_native_output():
    """Silence what native code prints straight to the process's stdout and stderr (LiteRT's
    "Created TensorFlow Lite XNNPACK delegate", the converters' progress): Python's own
    exceptions still carry what went wrong."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def load_runtime(path: str | os.PathLike, threads: int | None = None) -> Runtime:
    """Load a model of any format digits writes (see `FORMATS`); ModelError if it is none."""
    path = str(path)
    fmt = detect_format(path)
    if threads and fmt in ("keras", "saved_model"):
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # TensorFlow already ran in this process: it keeps its threads
    if fmt == "keras":
        return KerasRuntime(path)
    if fmt == "saved_model":
        return SavedModelRuntime(path)
    if fmt == "onnx":
        return OnnxRuntime(path, threads=threads)
    return LiteRTRuntime(path, threads=threads)


def _litert_interpreter():
    """LiteRT's own interpreter (ai-edge-litert); TensorFlow's copy where it is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


def _check_size(path: str) -> None:
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise ModelError(f"{path}: {size} bytes, larger than any digits model "
                         f"({MAX_FILE_BYTES} at most)")
    if size == 0:
        raise ModelError(f"{path}: an empty file")


def _check_input_shape(path: str, shape) -> None:
    dims = [int(d) if isinstance(d, (int, np.integer)) and d > 0 else None for d in shape]
    if dims[1:] not in ([28, 28, 1], [28, 28]):
        raise ModelError(f"{path}: the model takes {tuple(shape)[1:]}; expected 28x28x1 images")


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.issubdtype(y.dtype, np.floating):
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]
