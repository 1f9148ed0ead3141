"""Atomic file writes: write beside the target, fsync, then rename over it.

A kill at any moment leaves either the old file or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Every temporary file `atomic_path` makes has this in its name (".metrics.json.k2j4.tmp").
TMP_MARK = ".tmp"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it onto `target`.

    `suffix` keeps writers that insist on an extension happy (Keras wants `.weights.h5`).

    Example:
        >>> with atomic_path("model.keras", suffix=".keras") as tmp:
        ...     model.save(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_MARK + suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); the result should be an ordinary file.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
        _fsync_directory(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete what `atomic_path` left in `directory` when its process was killed mid-write.

    Only call this while no other process can be writing there (the Trainer holds the run's
    lock). Returns the removed paths.
    """
    removed = []
    for stale in Path(directory).glob(f".*{TMP_MARK}*"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def _read_umask() -> int:
    # Read once, at import: os.umask can only be read by setting it, which is not thread-safe.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable across a power cut; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike, obj) -> None:
    """Write `obj` as indented JSON to `target` atomically."""
    atomic_write_text(target, to_json(obj))


def to_json(obj) -> str:
    """`obj` as the indented JSON text that `atomic_write_json` writes (NumPy values allowed)."""
    return json.dumps(obj, indent=2, default=_json_default) + "\n"


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")
