"""Every bad input is refused the same way: one `error:` line on stderr, exit code 2, no traceback,
and nothing left behind (no run directory, no partial file).

The corpus thinks as an attacker and as a careless user, input by input: dataset files (IDX and
.npz), images for `digits.predict`, model files, TOML configs, callback specs, numeric flags and
paths that are the wrong kind of thing. Cases that would prove code ran (a pickle, a Lambda
layer, a callback argument) point at a marker file that must never appear.

Each case runs in-process through the CLI's own `main` (the same argument and error layer as
`python -m ...`, without TensorFlow's start-up per case); a representative set also runs as a
real subprocess.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib
import io
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

MARKER = "PWNED"  # a file that only running the attacker's code would create


# ----------------------------------------------------------------------------- builders


def idx(array: np.ndarray, *, magic: bytes = b"\0\0", code: int = 0x08, dims=None) -> bytes:
    """An IDX file: magic, element type, dimension count, big-endian sizes, then the bytes."""
    dims = array.shape if dims is None else dims
    return (magic + bytes([code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
            + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def good_images(n: int = 200) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def good_labels(n: int = 200) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.uint8)


def idx_dir(tmp: Path, images: bytes | None = None, labels: bytes | None = None,
            prefix: str = "train", gz: bool = False) -> str:
    """A dataset directory; `images`/`labels` default to a valid 200-example pair."""
    directory = tmp / "idx"
    directory.mkdir(exist_ok=True)
    files = {f"{prefix}-images-idx3-ubyte": idx(good_images()) if images is None else images,
             f"{prefix}-labels-idx1-ubyte": idx(good_labels()) if labels is None else labels}
    for name, data in files.items():
        if data is not False:
            (directory / (name + ".gz" if gz else name)).write_bytes(data)
    return str(directory)


def npz(tmp: Path, name: str = "data.npz", **arrays) -> str:
    """An .npz; x_train/y_train default to a valid pair, `None` leaves one out."""
    arrays = {"x_train": good_images(), "y_train": good_labels().astype(np.int64), **arrays}
    path = tmp / name
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


def npz_claiming(tmp: Path, shape: tuple) -> str:
    """An .npz whose x_train header claims `shape` over the bytes of 200 real-sized images."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    labels = io.BytesIO()
    np.save(labels, good_labels().astype(np.int64))
    return write(tmp, "data.npz", zip_bytes({"x_train.npy": header.getvalue() + good_images().tobytes(),
                                             "y_train.npy": labels.getvalue()}))


def write(tmp: Path, name: str, data: bytes | str) -> str:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return str(path)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` 8-bit grayscale pixels, with one tiny row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_png() -> bytes:
    image = np.full((64, 64), 255, np.uint8)
    image[8:56, 28:36] = 0  # a "1", dark on light
    return png(image)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def with_claimed_size(archive: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size in every central-directory entry (a zip bomb's claim)."""
    data = bytearray(archive)
    start = 0
    while (at := data.find(b"PK\x01\x02", start)) >= 0:
        struct.pack_into("<I", data, at + 24, size)
        start = at + 4
    return bytes(data)


class Pickled:
    """Unpickling this runs a shell command: what an object array in an .npz can carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickle_npz(tmp: Path) -> str:
    evil = np.empty(1, dtype=object)
    evil[0] = Pickled(tmp / MARKER)
    return npz(tmp, x_train=evil)


def lambda_model(tmp: Path) -> str:
    """A .keras model with a Lambda layer whose code, if ever run, creates PWNED in the cwd."""
    import keras

    path, cwd = tmp / "lambda.keras", os.getcwd()
    os.chdir(tmp)
    try:
        inputs = keras.Input((28, 28, 1))
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Lambda(lambda t: (open("PWNED", "w").close(), t)[1])(x)
        keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)
    finally:
        os.chdir(cwd)
    (tmp / MARKER).unlink()  # building the model called the lambda once; loading must not
    return str(path)


def module_model(tmp: Path) -> str:
    """A .keras whose config asks Keras to import `os` and call `system` while loading."""
    import json

    config = {"module": "os", "class_name": "system", "registered_name": None,
              "config": {"command": f"touch {tmp / MARKER}"}}
    metadata = {"keras_version": "3.15.1", "date_saved": "2026-01-01@00:00:00"}
    return write(tmp, "module.keras", zip_bytes({"config.json": json.dumps(config).encode(),
                                                 "metadata.json": json.dumps(metadata).encode(),
                                                 "model.weights.h5": b""}))


def model_file(tmp: Path, input_shape=(28, 28, 1), name: str = "model.keras",
               classes: int = 10) -> str:
    import keras

    path = tmp / name
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x)).save(path)
    return str(path)


# ----------------------------------------------------------------------------- the corpus


TRAIN_TAIL = ["--model", "mlp", "--epochs", "1", "--limit-train-batches", "1",
              "--limit-val-batches", "1", "--no-default-callbacks", "--log-dir", "logs"]


@dataclasses.dataclass
class Case:
    """One malformed input: the command it goes to, its arguments, and a word of the error."""

    id: str
    module: str
    build: Callable[[Path], list[str]]
    expect: str  # must appear in the error line (so a case cannot pass for the wrong reason)
    subprocess: bool = False  # also run as a real `python -m` subprocess


def train(id, build, expect, subprocess=False, tail=True):
    return Case(id, "digits.train", lambda t: [*build(t), *(TRAIN_TAIL if tail else [])],
                expect, subprocess)


def data(id, build, expect, subprocess=False):
    return train(id, lambda t: ["--dataset", build(t)], expect, subprocess)


def image(id, build, expect, subprocess=False):
    return Case(id, "digits.predict",
                lambda t: ["--model", model_file(t) if not subprocess else "model.keras", build(t)],
                expect, subprocess)


def model(id, build, expect, subprocess=False, module="digits.predict"):
    def argv(t):
        path = build(t)
        if module == "digits.predict":
            return ["--model", path, write(t, "one.png", digit_png())]
        return ["--model", path, "--dataset", "mnist-5k"]

    return Case(id, module, argv, expect, subprocess)


def toml(id, text, expect, subprocess=False):
    """A config file; `{npz}` in it stands for a valid small dataset."""
    return train(id, lambda t: ["--config", write(t, "config.toml", text.replace("{npz}", npz(t)))],
                 expect, subprocess)


def spec(id, text, expect, subprocess=False):
    return train(id, lambda t: ["--dataset", npz(t), "--callback", text], expect, subprocess)


IMAGES_200 = good_images()
CASES = [
    # --- IDX files: every header field, every size, every encoding
    data("idx-bad-magic", lambda t: idx_dir(t, images=idx(IMAGES_200, magic=b"\1\2")), "magic",
         subprocess=True),
    data("idx-float-element-type", lambda t: idx_dir(t, images=idx(IMAGES_200, code=0x0D)),
         "element type"),
    data("idx-unknown-element-type", lambda t: idx_dir(t, images=idx(IMAGES_200, code=0xFF)),
         "element type"),
    data("idx-two-dimensional-images",
         lambda t: idx_dir(t, images=idx(IMAGES_200.reshape(200, 784))), "dimensions"),
    data("idx-zero-dimensions", lambda t: idx_dir(t, images=b"\0\0\x08\x00"), "dimensions"),
    data("idx-wrong-image-size",
         lambda t: idx_dir(t, images=idx(IMAGES_200[:, :27, :])), "expected 28x28"),
    data("idx-no-items", lambda t: idx_dir(t, images=idx(IMAGES_200[:0])), "no items"),
    data("idx-header-cut-short", lambda t: idx_dir(t, images=b"\0\0\x08\x03\0\0\0\xc8\0\0"),
         "truncated IDX header"),
    data("idx-empty-file", lambda t: idx_dir(t, images=b""), "too short"),
    data("idx-truncated-body", lambda t: idx_dir(t, images=idx(IMAGES_200)[:-100]), "truncated",
         subprocess=True),
    data("idx-trailing-bytes", lambda t: idx_dir(t, images=idx(IMAGES_200) + b"extra"),
         "trailing data"),
    data("idx-bomb-header-dims",
         lambda t: idx_dir(t, images=idx(IMAGES_200[:1], dims=(0xFFFFFFFF, 28, 28))), "too large",
         subprocess=True),
    data("idx-header-claims-a-million-images",
         lambda t: idx_dir(t, images=idx(IMAGES_200, dims=(600_000, 28, 28))),
         "600000 images but 200 labels"),
    data("idx-gzip-bomb-with-few-labels", lambda t: idx_dir(t, labels=idx(good_labels(10)), gz=True,
                                                         images=gzip.compress(idx(np.zeros(
                                                             (100_000, 28, 28), np.uint8)), 1)),
         "100000 images but 10 labels"),
    data("idx-label-out-of-range",
         lambda t: idx_dir(t, labels=idx(np.r_[good_labels(199), 10])), "0-9"),
    data("idx-label-255", lambda t: idx_dir(t, labels=idx(np.r_[good_labels(199), 255])), "0-9"),
    data("idx-count-mismatch", lambda t: idx_dir(t, labels=idx(good_labels(199))),
         "200 images but 199 labels"),
    data("idx-labels-file-holds-images", lambda t: idx_dir(t, labels=idx(IMAGES_200)),
         "1 dimension"),
    data("idx-images-file-holds-labels", lambda t: idx_dir(t, images=idx(good_labels())),
         "3 dimensions"),
    data("idx-labels-missing", lambda t: idx_dir(t, labels=False), "is missing"),
    data("idx-empty-directory", lambda t: str((t / "empty").mkdir() or t / "empty"),
         "no MNIST IDX files"),
    data("idx-gzip-garbage",
         lambda t: idx_dir(t, images=b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 300, gz=True),
         "cannot read", subprocess=True),
    data("idx-gzip-truncated",
         lambda t: idx_dir(t, images=gzip.compress(idx(IMAGES_200))[:2000], gz=True),
         "cannot read"),
    data("idx-images-is-a-directory",
         lambda t: (t / "idx" / "train-images-idx3-ubyte").mkdir(parents=True)
         or idx_dir(t, images=False), "not a file"),
    data("idx-test-only-directory", lambda t: idx_dir(t, prefix="t10k"), "no training data"),
    # --- .npz files
    data("npz-not-a-zip", lambda t: write(t, "data.npz", "x_train,y_train\n1,2\n"),
         "not a readable .npz", subprocess=True),
    data("npz-zip-without-arrays", lambda t: write(t, "data.npz", zip_bytes({"a.txt": b"hi"})),
         "expected arrays"),
    data("npz-truncated", lambda t: write(t, "data.npz", Path(npz(t)).read_bytes()[:5000]),
         "not a readable .npz"),
    data("npz-pickled-object-array", pickle_npz, "Python objects", subprocess=True),
    data("npz-raw-bytes-member",
         lambda t: write(t, "data.npz", zip_bytes({"x_train": b"plain bytes", "y_train": b""})),
         "not a valid .npy"),
    data("npz-header-claims-a-terabyte", lambda t: npz_claiming(t, (10**12, 28, 28)), "too large",
         subprocess=True),
    data("npz-shape-larger-than-data", lambda t: npz_claiming(t, (900, 28, 28)), "the file holds"),
    data("npz-zip-bomb-claim",
         lambda t: write(t, "data.npz", with_claimed_size(Path(npz(t)).read_bytes(), 0xFFFFFFF0)),
         "too large"),
    data("npz-complex-pixels", lambda t: npz(t, x_train=good_images().astype(np.complex64)),
         "numeric"),
    data("npz-string-pixels", lambda t: npz(t, x_train=good_images().astype(str)), "numeric"),
    data("npz-boolean-pixels", lambda t: npz(t, x_train=good_images() > 128), "numeric"),
    data("npz-nan-pixels",
         lambda t: npz(t, x_train=np.where(good_images() > 250, np.nan, 0.5).astype(np.float32)),
         "NaN"),
    data("npz-infinite-pixels", lambda t: npz(t, x_train=np.full((200, 28, 28), np.inf)), "NaN"),
    data("npz-negative-pixels", lambda t: npz(t, x_train=good_images().astype(np.int16) - 5),
         "pixel values"),
    data("npz-pixels-above-255", lambda t: npz(t, x_train=good_images().astype(np.int32) * 4),
         "pixel values"),
    data("npz-float-labels", lambda t: npz(t, y_train=good_labels().astype(np.float32)),
         "integers"),
    data("npz-negative-label", lambda t: npz(t, y_train=np.r_[good_labels(199).astype(np.int64), -1]), "0-9"),
    data("npz-label-out-of-range", lambda t: npz(t, y_train=np.r_[good_labels(199).astype(np.int64), 42]), "0-9"),
    data("npz-two-dimensional-labels", lambda t: npz(t, y_train=good_labels().reshape(20, 10)),
         "one-dimensional"),
    data("npz-count-mismatch", lambda t: npz(t, y_train=good_labels(150)),
         "200 images but 150 labels"),
    data("npz-images-without-labels", lambda t: npz(t, y_train=None), "without its pair"),
    data("npz-wrong-image-shape",
         lambda t: npz(t, x_train=np.zeros((200, 32, 32), np.uint8)), "shape"),
    data("npz-scalar-images", lambda t: npz(t, x_train=np.array(7)), "shape"),
    data("npz-no-images",
         lambda t: npz(t, x_train=np.zeros((0, 28, 28), np.uint8), y_train=np.zeros(0, int)),
         "no labels"),
    data("npz-too-few-examples",
         lambda t: npz(t, x_train=good_images(5), y_train=good_labels(5)), "too few"),
    # --- dataset paths that are the wrong kind of thing
    data("dataset-is-a-csv-file-not-kaggles", lambda t: write(t, "digits.csv", "1,2,3\n"),
         "line 1: missing column label; expected the header label,pixel0", subprocess=True),
    data("dataset-is-a-single-idx-file",
         lambda t: write(t, "train-images-idx3-ubyte", idx(IMAGES_200)),
         "directory of IDX files or an .npz"),
    data("dataset-does-not-exist", lambda t: "no/such/dataset", "unknown dataset"),
    data("dataset-name-too-long", lambda t: "d" * 5000, "dataset"),
    data("dataset-empty-string", lambda t: "", "empty"),
    data("dataset-is-dev-null", lambda t: "/dev/null", "directory of IDX files or an .npz"),
    data("dataset-npz-is-a-fifo", lambda t: (os.mkfifo(t / "fifo.npz"), str(t / "fifo.npz"))[1],
         "not a readable .npz"),
    train("test-dataset-is-a-text-file",
          lambda t: ["--dataset", npz(t), "--test-dataset", write(t, "test.npz", "no")],
          "not a readable .npz"),
    # --- images for predict
    image("image-text-file-named-png", lambda t: write(t, "digit.png", "this is not a picture"),
          "not a readable image", subprocess=True),
    image("image-empty-file", lambda t: write(t, "digit.png", b""), "empty file"),
    image("image-decompression-bomb-header", lambda t: write(t, "bomb.png",
                                                             png_claiming(100000, 100000)),
          "refused", subprocess=True),
    image("image-truncated-png", lambda t: write(t, "cut.png", digit_png()[:60]), "cannot decode"),
    image("image-is-a-directory", lambda t: str((t / "dir.png").mkdir() or t / "dir.png"),
          "not a file"),
    image("image-missing", lambda t: str(t / "missing.png"), "no such file"),
    image("image-blank-white", lambda t: write(t, "white.png", png(np.full((28, 28), 255))),
          "blank"),
    image("image-blank-black", lambda t: write(t, "black.png", png(np.zeros((50, 40)))), "blank"),
    image("image-eps-never-reaches-ghostscript",
          lambda t: write(t, "digit.eps", "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n"
                                          f"(touch {t / MARKER}) run\n"), "not a readable image"),
    image("image-svg", lambda t: write(t, "digit.svg", '<svg xmlns="http://www.w3.org/2000/svg"/>'),
          "not a readable image"),
    image("image-over-the-size-limit",
          lambda t: (os.truncate(write(t, "huge.png", digit_png()), 60 * 1024 * 1024),
                     str(t / "huge.png"))[1], "too large"),
    image("image-text-chunk-bomb", lambda t: write(t, "ztxt.png", digit_png()[:33] + png_chunk(
        b"zTXt", b"comment\0\0" + zlib.compress(b"a" * 80_000_000)) + digit_png()[33:]),
        "cannot decode"),
    Case("predict-min-probability-above-one", "digits.predict",
         lambda t: ["--model", model_file(t), "--min-probability", "1.5",
                    write(t, "good.png", digit_png())], "--min-probability"),
    Case("predict-explain-not-made-for-a-refused-image", "digits.predict",
         lambda t: ["--model", model_file(t), "--explain", str(t / "explained"),
                    str(t / "missing.png")], "no such file"),
    Case("predict-explain-is-a-file", "digits.predict",
         lambda t: ["--model", model_file(t), "--explain", write(t, "taken.txt", "mine"),
                    write(t, "good.png", digit_png())], "not a directory"),
    # --- model files
    model("model-missing", lambda t: str(t / "missing.keras"), "no such model file"),
    model("model-is-a-directory", lambda t: str((t / "m.keras").mkdir() or t / "m.keras"),
          "not a file"),
    model("model-garbage-bytes", lambda t: write(t, "m.keras", os.urandom(4096)),
          "not a .keras zip archive", subprocess=True),
    model("model-empty-file", lambda t: write(t, "m.keras", b""), "not a .keras zip archive"),
    model("model-zip-that-is-not-a-model",
          lambda t: write(t, "m.keras", zip_bytes({"hello.txt": b"hello"})), "config.json",
          subprocess=True),
    model("model-wrong-extension", lambda t: write(t, "m.h5", b"\x89HDF\r\n\x1a\n"),
          "expected a .keras"),
    model("model-truncated", lambda t: write(t, "cut.keras", Path(model_file(t)).read_bytes()[:3000]),
          "not a .keras zip archive"),
    model("model-zip-bomb-claim", lambda t: write(t, "m.keras", with_claimed_size(
        zip_bytes({"config.json": b"{}", "metadata.json": b"{}"}), 0xFFFFFFF0)), "too large"),
    model("model-lambda-layer-under-safe-mode", lambda_model, "safe mode", subprocess=True),
    model("model-config-imports-os-system", module_model, "cannot load model"),
    model("model-corrupt-config", lambda t: write(t, "m.keras", zip_bytes(
        {"config.json": b"{not json", "metadata.json": b"{}", "model.weights.h5": b""})),
        "cannot load model"),
    model("model-wrong-input-shape", lambda t: model_file(t, input_shape=(32, 32, 3)),
          "expected 28x28x1"),
    model("model-three-classes", lambda t: model_file(t, classes=3), "10 class scores"),
    model("evaluate-model-eleven-classes", lambda t: model_file(t, classes=11), "10 class scores",
          module="digits.evaluate"),
    model("evaluate-model-missing", lambda t: str(t / "missing.keras"), "no such model file",
          module="digits.evaluate"),
    Case("evaluate-test-images-without-labels", "digits.evaluate",
         lambda t: ["--model", model_file(t), "--dataset", npz(t, x_train=None, y_train=None,
                                                               x_test=good_images(0)[:0])],
         "without its pair"),
    # --- TOML configs
    toml("toml-syntax-error", "epochs = = 3\n", "invalid TOML", subprocess=True),
    toml("toml-unknown-key", "epoch = 3\n", "unknown key 'epoch'"),
    toml("toml-epochs-is-a-string", 'epochs = "ten"\n', "epochs"),
    toml("toml-epochs-is-fractional", "epochs = 1.5\n", "whole number"),
    toml("toml-epochs-negative", "epochs = -1\n", "epochs", subprocess=True),
    toml("toml-epochs-zero", "epochs = 0\n", "epochs"),
    toml("toml-epochs-boolean", "epochs = true\n", "wrong type"),
    toml("toml-epochs-list", "epochs = [1, 2]\n", "wrong type"),
    toml("toml-learning-rate-nan", "learning-rate = nan\n", "finite"),
    toml("toml-learning-rate-inf", "learning-rate = inf\n", "finite"),
    toml("toml-seed-huge", "seed = 99999999999999999999\n", "seed"),
    toml("toml-batch-size-1e99", "batch-size = 1e99\n", "whole number"),
    toml("toml-optimizer-unknown", 'optimizer = "adamax"\n', "must be one of"),
    toml("toml-nested-table", "[trainer]\nepochs = 3\n", "unknown key 'trainer'"),
    toml("toml-deeply-nested", "x = " + "[" * 100_000 + "]" * 100_000 + "\n", "invalid TOML"),
    toml("toml-nul-in-path", 'dataset = "mnist\\u0000-5k"\n', "NUL"),
    toml("toml-callback-not-a-list", 'callback = "nan_guard"\n', "list of strings"),
    toml("toml-callback-carrying-code",
         'dataset = "{npz}"\ncallback = ["confusion_matrix(every_n_epochs=__import__(\'os\').system(\'touch PWNED\'))"]\n',
         "literals"),
    train("toml-binary-garbage", lambda t: ["--config", write(t, "c.toml", b"\xff\xfe\x00\x81" * 64)],
          "not UTF-8"),
    train("toml-missing-file", lambda t: ["--config", str(t / "missing.toml")], "no such config"),
    train("toml-is-a-directory", lambda t: ["--config", str((t / "c.toml").mkdir() or t / "c.toml")],
          "not a file"),
    # --- callback specs
    spec("callback-empty-spec", "", "empty callback spec"),
    spec("callback-unknown-name", "no_such_callback", "unknown callback", subprocess=True),
    spec("callback-os-system", "os:system", "standard-library", subprocess=True),
    spec("callback-subprocess-run", "subprocess:run(args=['touch', 'PWNED'])", "standard-library"),
    spec("callback-plain-function", "digits.data:load_dataset", "not a callback class or factory"),
    spec("callback-class-that-is-not-a-callback", "digits.engine.trainer:RunDirectory",
         "not a callback"),
    spec("callback-code-in-argument",
         "confusion_matrix(every_n_epochs=__import__('os').system('touch PWNED'))", "literals",
         subprocess=True),
    spec("callback-lambda-argument", "confusion_matrix(every_n_epochs=lambda: 1)", "literals"),
    spec("callback-positional-argument", "confusion_matrix(2)", "key=value"),
    spec("callback-star-arguments", "confusion_matrix(**{'every_n_epochs': 2})", "key=value"),
    spec("callback-unbalanced-parenthesis", "confusion_matrix(every_n_epochs=2", "bad callback spec"),
    spec("callback-unknown-argument", "checkpoint(bogus=1)", "bad arguments"),
    spec("callback-bad-argument-value", "checkpoint(mode='sideways')", "bad arguments"),
    spec("callback-path-traversal", "checkpoint(filename='../../escape.keras')", "bad arguments"),
    train("callbacks-empty-list", lambda t: ["--callbacks", ","],
          "comma-separated"),
    # --- averaged weights
    train("swa-longer-than-the-run", lambda t: ["--dataset", npz(t), "--swa", "5"],
          "swa_epochs must be at most the epochs (1)"),
    train("swa-and-ema-together", lambda t: ["--dataset", npz(t), "--swa", "1", "--ema", "0.9"],
          "choose one"),
    Case("tune-swa-longer-than-the-final-retraining", "digits.tune",
         lambda t: ["--swa", "30", "--final-epochs", "20"], "at most --final-epochs (20)"),
    Case("tune-final-compare-unknown-name", "digits.tune",
         lambda t: ["--final-compare", "colour=1"], "--final-compare colour: not a searched"),
    Case("tune-final-compare-out-of-range", "digits.tune",
         lambda t: ["--final-compare", "augment=9"], "augment must be a number in [0.0, 3.0]"),
    # --- distillation
    train("distill-from-a-missing-file", lambda t: ["--dataset", npz(t), "--distill-from",
                                                    str(t / "teacher.keras")],
          "no such model file"),
    train("distill-from-a-file-that-is-not-a-model",
          lambda t: ["--dataset", npz(t), "--distill-from", npz(t, "teacher.keras")],
          "--distill-from"),
    # --- hyperparameters
    train("hp-not-a-literal", lambda t: ["--hp", "hidden_units=__import__('os')"], "literal"),
    train("hp-unknown-name", lambda t: ["--dataset", npz(t), "--hp", "filters=8"],
          "no hyperparameter filters"),
    train("hp-num-classes", lambda t: ["--dataset", npz(t), "--hp", "num_classes=3"],
          "no hyperparameter num_classes"),
    train("hp-out-of-range", lambda t: ["--dataset", npz(t), "--hp", "hidden_units=1e99"],
          "hidden_units"),
    train("hp-negative", lambda t: ["--dataset", npz(t), "--hp", "hidden_layers=-1"],
          "hidden_layers"),
    train("unknown-model", lambda t: ["--dataset", "mnist-5k", "--model", "resnet"],
          "unknown model", tail=False),
    # --- log directories that cannot hold a run
    train("log-dir-is-a-file",
          lambda t: ["--dataset", npz(t), *TRAIN_TAIL, "--log-dir", write(t, "logfile", "x")],
          "is a file", subprocess=True, tail=False),
    train("log-dir-under-a-file",
          lambda t: ["--dataset", npz(t), *TRAIN_TAIL, "--log-dir",
                     str(Path(write(t, "logfile", "x")) / "runs")], "is a file", tail=False),
    train("run-name-directory-is-a-file",
          lambda t: ["--dataset", npz(t), *TRAIN_TAIL, "--log-dir", str(t / "logs2"),
                     "--name", Path(write(t, "logs2/mine", "x")).name], "is a file", tail=False),
    train("log-dir-in-proc", lambda t: ["--dataset", npz(t), *TRAIN_TAIL,
                                        "--log-dir", "/proc/digits-logs"], "not writable",
          tail=False),
    train("log-dir-name-too-long",
          lambda t: ["--dataset", npz(t), *TRAIN_TAIL, "--log-dir", "L" * 5000], "name too long",
          tail=False),
    train("toml-path-too-long", lambda t: ["--config", "c" * 5000 + ".toml"], "name too long"),
    image("image-path-too-long", lambda t: "i" * 5000 + ".png", "name too long"),
    model("model-path-too-long", lambda t: "m" * 5000 + ".keras", "no such model file"),
    train("log-dir-empty-string",
          lambda t: ["--dataset", npz(t), *TRAIN_TAIL, "--log-dir", ""], "empty", tail=False),
    train("run-name-escapes", lambda t: ["--dataset", "mnist-5k", "--name", "../outside"],
          "--name"),
]

# Impossible numbers for every numeric flag.
NUMERIC_FLAGS = {
    "digits.train": ["--epochs", "--batch-size", "--learning-rate", "--validation-split", "--seed",
                     "--limit-train-batches", "--limit-val-batches", "--steps-per-execution"],
    "digits.evaluate": ["--batch-size", "--seed"],
}
VALID_ZERO = {"--seed"}
for module, flags in NUMERIC_FLAGS.items():
    for flag in flags:
        for value in ("0", "-1", "nan", "inf", "1e99", "abc", ""):
            if value == "0" and flag in VALID_ZERO:
                continue
            tail = (TRAIN_TAIL if module == "digits.train"
                    else ["--model", "model.keras", "--dataset", "mnist-5k"])
            CASES.append(Case(
                f"{module.split('.')[1]}{flag}={value or 'empty'}", module,
                lambda t, flag=flag, value=value, tail=tail: [*tail, f"{flag}={value}"], flag,
                subprocess=(flag, value) in {("--epochs", "abc"), ("--learning-rate", "nan"),
                                             ("--batch-size", "0")} and module == "digits.train"))


# ----------------------------------------------------------------------------- the tests


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def check_refused(case: Case, code, err: str, tmp_path: Path, before: set[str]) -> None:
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}; stderr:\n{err[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert "Traceback" not in err
    assert case.expect in lines[0], lines[0]
    assert not (tmp_path / MARKER).exists() and not Path(MARKER).exists(), "attacker code ran"
    assert files_under(tmp_path) == before, "something was left behind"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused(case, tmp_path, monkeypatch, capsys):
    argv = case.build(tmp_path)
    before = files_under(tmp_path)
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    try:
        code = importlib.import_module(case.module).main(argv)
    except SystemExit as e:  # argparse's usage errors leave through SystemExit(2)
        code = e.code
    out, err = capsys.readouterr()
    check_refused(case, code, err, tmp_path, before)
    assert out == ""


SUBPROCESS_CASES = [c for c in CASES if c.subprocess]


@pytest.mark.slow
@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.id for c in SUBPROCESS_CASES])
def test_bad_input_is_refused_by_the_real_command(case, tmp_path):
    argv = case.build(tmp_path)
    before = files_under(tmp_path)
    proc = run_cli(case.module, *argv, cwd=tmp_path)
    check_refused(case, proc.returncode, proc.stderr, tmp_path, before)
    assert proc.stdout == ""


def test_the_corpus_is_large_and_named():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 50


# ----------------------------------------------------------------------------- controls
# The hostile files above are refused for the right reason: the same files, one defect
# removed, load; and the attacker's code in them really would run if it were not refused.


def test_the_valid_idx_directory_and_npz_of_the_corpus_load(tmp_path):
    from digits.data import load_dataset

    (tmp_path / "gz").mkdir()
    for spec in (idx_dir(tmp_path), idx_dir(tmp_path / "gz", gz=True), npz(tmp_path)):
        assert len(load_dataset(spec).train) == 162


def test_the_lambda_model_runs_its_code_when_safe_mode_is_off(tmp_path, monkeypatch):
    import keras

    path = lambda_model(tmp_path)
    assert not (tmp_path / MARKER).exists()
    monkeypatch.chdir(tmp_path)
    keras.saving.load_model(path, safe_mode=False)  # what `digits` never does
    assert (tmp_path / MARKER).exists()


def test_the_pickled_npz_runs_its_code_when_pickles_are_allowed(tmp_path):
    path = pickle_npz(tmp_path)
    with np.load(path, allow_pickle=True) as archive:  # what `digits` never does
        archive["x_train"]
    assert (tmp_path / MARKER).exists()
