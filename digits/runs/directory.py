"""The run directory: `<log_dir>/<name>/version_<n>/`, its creation, lock and JSON files."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from digits.errors import RunDirectoryError
from digits.runs.atomic import atomic_write_json


class RunDirectory:
    """`<log_dir>/<name>/version_<n>/`: event files, model.keras, config.json, metrics.json.

    Example:
        >>> run = RunDirectory.create("logs", "cnn")
        >>> run.path
        PosixPath('logs/cnn/version_0')
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    @property
    def version(self) -> int:
        return int(self.path.name.split("_")[-1])

    @staticmethod
    def versions(log_dir: str | os.PathLike, name: str) -> list[int]:
        root = Path(log_dir) / name
        if not root.is_dir():
            return []
        found = [re.fullmatch(r"version_(\d+)", p.name) for p in root.iterdir() if p.is_dir()]
        return sorted(int(m.group(1)) for m in found if m)

    @classmethod
    def latest(cls, log_dir: str | os.PathLike, name: str) -> RunDirectory | None:
        versions = cls.versions(log_dir, name)
        return cls(Path(log_dir) / name / f"version_{versions[-1]}") if versions else None

    @classmethod
    def create(cls, log_dir: str | os.PathLike, name: str) -> RunDirectory:
        """Create the next free version directory (safe against concurrent creators)."""
        check_writable_dir(log_dir)
        root = Path(log_dir) / name
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirectoryError(f"cannot create {root}: {e.strerror or e}") from None
        version = (cls.versions(log_dir, name) or [-1])[-1] + 1
        while True:
            path = root / f"version_{version}"
            try:
                path.mkdir()
            except FileExistsError:
                version += 1
                continue
            except OSError as e:
                raise RunDirectoryError(f"cannot create {path}: {e.strerror or e}") from None
            return cls(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str) -> dict | None:
        try:
            return json.loads(self.file(name).read_text())
        except (OSError, ValueError):
            return None

    def write_json(self, name: str, obj) -> None:
        atomic_write_json(self.file(name), obj)

    def try_lock(self) -> bool:
        """Take this run's lock; False when another live process holds it.

        The lock is an advisory `flock` on `<run>/.lock`: the kernel drops it when its process
        ends, SIGKILL included, so a crashed run never stays locked.
        """
        if self._lock_fd is not None:
            return True
        try:
            import fcntl
        except ImportError:  # no flock on this platform: one process per run is on the user
            return True
        fd = os.open(self.file(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        """Release the lock taken by `try_lock` (closing the file releases the flock)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def check_writable_dir(path: str | os.PathLike) -> None:
    """Refuse, before any training, a log directory that cannot be created or written.

    Checks by writing: `os.access` says yes to root on a directory that still refuses files
    (a read-only mount, /proc).
    """
    path = Path(path)
    probe = path
    try:
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        is_dir = probe.is_dir()
    except OSError as e:
        raise RunDirectoryError(f"{str(path)[:200]}: {e.strerror or e}") from None
    if probe.is_file():
        raise RunDirectoryError(f"{probe} is a file, not a directory")
    if not is_dir:
        raise RunDirectoryError(f"{probe} is not a directory")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".digits-write-test-")
    except OSError as e:
        raise RunDirectoryError(f"{probe} is not writable: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(name)


def safe_name(name: str) -> str:
    """`name` with every character a run name cannot hold replaced by `_`."""
    return re.sub(r"[^\w.-]", "_", name) or "model"
