"""Your own labelled images as a dataset: class folders `0/` ... `9/`, read as `digits.predict`
reads a photo.

Two layouts, as Keras' `image_dataset_from_directory`, torchvision's `ImageFolder` and
Ultralytics' classify datasets have them:

    DIR/0/*.png ... DIR/9/*.png                      (split into train/val/test by digits)
    DIR/train/0/... DIR/val/0/... DIR/test/0/...     (`validation/` is `val/`; any split but
                                                      train may be missing, and is split off)

Every image goes through the reading path of `digits.predict` (`find_digits_in_file`: find the
digit, make it an MNIST-style 28x28 input), so a photo trains as it will be read. A 28x28
greyscale image is taken as such an input already (what `digits.predict --save-digits` and the
server's corrections write reads back bit-identical). An image in which no digit, or more than
one, is found, and a file that is not a readable image, is skipped and named in the report; with
`strict` any skip is an error instead. Hidden files and folders (`.DS_Store`, `.git`, the
server's `.crops`) are passed over. Images are read on all cores, and what was read is cached
by each file's content (`$DIGITS_CACHE`, else `~/.cache/digits`), so the second run on the same
folder starts at once and a changed file is read again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from digits.errors import DatasetError, ImageError

CLASS_FOLDERS = tuple(str(i) for i in range(10))
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
# More files than this in one dataset folder is refused before any is read.
MAX_FILES = 200_000
# Bump when the reading path changes what an image becomes: every cached input is read again.
READER_VERSION = 1
# Fewer uncached images than this are read in this process (a pool costs ~1 s to start).
POOL_THRESHOLD = 64


@dataclasses.dataclass(frozen=True)
class FolderImages:
    """A dataset folder read: per split, MNIST-style inputs and labels, plus what was skipped."""

    splits: dict  # "train" / "val" / "test" -> (x uint8 (N, 28, 28), y int64 (N,))
    skipped: tuple  # (path relative to the folder, why), sorted
    read: int  # images read this time (not from the cache)
    cached: int  # images taken from the cache
    empty_classes: tuple  # (split, class) pairs with no image


def is_image_folder(path: Path) -> bool:
    """Whether `path` is a directory laid out as class folders (or split folders of them)."""
    try:
        if not path.is_dir():
            return False
        names = {p.name for p in path.iterdir() if p.is_dir()}
    except OSError:
        return False
    return bool(names & set(CLASS_FOLDERS)) or bool(names & set(SPLIT_FOLDERS))


def find_files(root: Path) -> tuple[dict, list]:
    """The layout of `root`: {split: [(file, label), ...]} and files skipped while looking.

    Split folders hold class folders; class folders hold image files. A folder that fits
    neither is an error (a typo in a class name must not silently drop a class); a file or
    folder where none is expected, a link that leads out of `root`, is skipped.
    """
    root = Path(root)
    real_root = root.resolve()
    children = _listing(root)
    dirs = [p for p in children if p.is_dir() and not p.name.startswith(".")]
    splits: dict[str, list] = {}
    skipped: list[tuple[str, str]] = []
    if any(p.name in SPLIT_FOLDERS for p in dirs):
        for p in dirs:
            if p.name not in SPLIT_FOLDERS:
                raise DatasetError(f"{p}: a folder beside the split folders; expected only "
                                   "train/, val/ (or validation/) and test/")
            split = SPLIT_FOLDERS[p.name]
            if split in splits:
                raise DatasetError(f"{root}: both val/ and validation/; keep one")
            if not _inside(p, real_root):
                raise DatasetError(f"{p}: a link out of {root}")
            splits[split] = _class_files(p, root, real_root, skipped)
        if "train" not in splits:
            raise DatasetError(f"{root}: split folders without train/")
    else:
        splits["train"] = _class_files(root, root, real_root, skipped)
    for p in children:
        if not p.is_dir() and not p.name.startswith("."):
            skipped.append((_relative(p, root), "not in a class folder"))
    total = sum(len(v) for v in splits.values())
    if total == 0:
        raise DatasetError(f"{root}: no image files in its class folders 0-9")
    if total > MAX_FILES:
        raise DatasetError(f"{root}: more than {MAX_FILES} files; split the folder")
    return splits, skipped


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list: {e.strerror or e}") from None


def _inside(path: Path, real_root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(real_root)
    except (OSError, RuntimeError):  # a link loop
        return False


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


def _class_files(folder: Path, root: Path, real_root: Path, skipped: list) -> list:
    files = []
    for p in _listing(folder):
        if not p.is_dir():
            if folder != root and not p.name.startswith("."):
                skipped.append((_relative(p, root), "not in a class folder"))
            continue
        if p.name.startswith("."):
            continue  # .git, .ipynb_checkpoints, the corrections' .crops
        if p.name not in CLASS_FOLDERS:
            raise DatasetError(f"{p}: class folders must be named 0 to 9 (the digit they hold)")
        if not _inside(p, real_root):
            skipped.append((_relative(p, root), f"a link out of {root}"))
            continue
        label = int(p.name)
        for f in _listing(p):
            if f.name.startswith("."):
                continue  # .DS_Store, editors' swap files
            if f.is_dir():
                skipped.append((_relative(f, root), "a folder inside a class folder"))
            elif not _inside(f, real_root):
                skipped.append((_relative(f, root), f"a link out of {root}"))
            else:
                files.append((f, label))
    return files


def read_folder(root: str | os.PathLike, *, strict: bool = False,
                workers: int | None = None, cache: bool = True) -> FolderImages:
    """Read a class-folder dataset (see the module's docstring).

    `workers`: processes reading images (default: every core). `cache`: keep and use what was
    read, by content. Raises `DatasetError` for a folder that is not a dataset, or (with
    `strict`) for any image that is skipped.
    """
    root = Path(root)
    splits, skipped = find_files(root)
    if len(skipped) and strict:
        where, why = skipped[0]
        raise DatasetError(f"{root / where}: {why} (--strict; {len(skipped)} such)")
    every = [(split, path, label) for split, files in splits.items() for path, label in files]
    keys = [_content_key(path) for _, path, _ in every]
    store = _Cache(root) if cache else None
    known = store.load() if store is not None else {}
    todo = sorted({k for k in keys if isinstance(k, str) and k not in known})
    paths_of = {}
    for (_, path, _), key in zip(every, keys, strict=True):
        paths_of.setdefault(key, path)
    fresh = dict(zip(todo, _read_all([paths_of[k] for k in todo], workers), strict=True))
    if store is not None and fresh:
        store.save({**known, **fresh})
    inputs = {split: [] for split in splits}
    labels = {split: [] for split in splits}
    for (split, path, label), key in zip(every, keys, strict=True):
        outcome = key if not isinstance(key, str) else fresh.get(key, known.get(key))
        if isinstance(outcome, np.ndarray):
            inputs[split].append(outcome)
            labels[split].append(label)
        else:
            skipped.append((_relative(path, root), outcome[1] if isinstance(outcome, tuple)
                            else str(outcome)))
    skipped = tuple(sorted(skipped))
    if skipped and strict:
        where, why = skipped[0]
        raise DatasetError(f"{root / where}: {why} (--strict; {len(skipped)} images skipped)")
    result = {}
    empty = []
    for split in splits:
        y = np.asarray(labels[split], np.int64)
        x = np.stack(inputs[split]) if inputs[split] else np.zeros((0, 28, 28), np.uint8)
        result[split] = (x, y)
        counts = np.bincount(y, minlength=10)
        empty += [(split, c) for c in range(10) if counts[c] == 0]
    if not len(result["train"][1]):
        raise DatasetError(f"{root}: not one training image could be read as a digit "
                           f"({len(skipped)} skipped; the first: {skipped[0][0]}: {skipped[0][1]})")
    cached = sum(1 for k in keys if isinstance(k, str) and k in known)
    return FolderImages(result, skipped, len(fresh), cached, tuple(empty))


def _content_key(path: Path):
    """The file's content hash (with the reader's version), or ("skip", why) for a file that is
    not read at all (too large, unreadable)."""
    from digits.reading.images import MAX_FILE_BYTES

    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return ("skip", f"{size} bytes is too large for a digit image")
        if size == 0:
            return ("skip", "empty file")
        digest = hashlib.blake2b(path.read_bytes(), digest_size=16)
    except OSError as e:
        return ("skip", f"cannot read: {e.strerror or e}")
    digest.update(f"reader {READER_VERSION}".encode())
    return digest.hexdigest()


def read_one(path: str | os.PathLike):
    """One image -> its MNIST-style input as uint8 (28, 28), or ("skip", why)."""
    from digits.reading.images import find_digits_in_file

    try:
        found = find_digits_in_file(path)
    except ImageError as e:
        why = str(e)
        prefix = f"{path}: "
        return ("skip", why[len(prefix):] if why.startswith(prefix) else why)
    if len(found.digits) != 1:
        return ("skip", f"{len(found.digits)} digits found; an image in a class folder "
                        "holds one digit")
    return np.clip(np.rint(found.digits[0].input * 255), 0, 255).astype(np.uint8)


def _read_all(paths: list[Path], workers: int | None) -> list:
    if not paths:
        return []
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < POOL_THRESHOLD:
        return [read_one(p) for p in paths]
    import concurrent.futures
    import multiprocessing

    # Spawned, not forked: the parent may hold TensorFlow's threads, which a fork would copy
    # half-way. Chunks keep the pipe traffic small.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        return list(pool.map(read_one, [str(p) for p in paths],
                             chunksize=max(1, min(256, len(paths) // (4 * workers)))))


class _Cache:
    """What a folder's images became, by content hash, in one .npz per folder (atomic)."""

    def __init__(self, root: Path) -> None:
        base = Path(os.environ.get("DIGITS_CACHE") or Path.home() / ".cache" / "digits")
        name = hashlib.blake2b(str(root.resolve()).encode(), digest_size=12).hexdigest()
        self.path = base / "folders" / f"{name}.npz"

    def load(self) -> dict:
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                keys, inputs = saved["keys"], saved["inputs"]
                skip_keys, reasons = saved["skip_keys"], saved["reasons"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            return {}  # none yet, or damaged: read again
        if inputs.shape != (len(keys), 28, 28) or inputs.dtype != np.uint8:
            return {}
        known = {str(k): x for k, x in zip(keys, inputs, strict=True)}
        known.update((str(k), ("skip", str(r))) for k, r in zip(skip_keys, reasons, strict=False))
        return known

    def save(self, known: dict) -> None:
        good = {k: v for k, v in known.items() if isinstance(v, np.ndarray)}
        bad = {k: v[1] for k, v in known.items() if isinstance(v, tuple)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path.parent, suffix=".tmp",
                                             delete=False) as f:
                np.savez(f, keys=np.asarray(sorted(good), dtype="U32"),
                         inputs=np.stack([good[k] for k in sorted(good)]) if good
                         else np.zeros((0, 28, 28), np.uint8),
                         skip_keys=np.asarray(sorted(bad), dtype="U32"),
                         reasons=np.asarray([bad[k] for k in sorted(bad)], dtype=str))
            os.replace(f.name, self.path)
        except OSError as e:  # a cache that cannot be written costs time, not the run
            print(f"notice: cannot cache what was read ({e.strerror or e}); the next run reads "
                  "the folder again", file=sys.stderr)
            try:
                os.unlink(f.name)
            except (OSError, NameError):
                pass
