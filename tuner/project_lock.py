"""Who may run a search's project at once: one process holding its oracle, and never beside the
workers of an earlier run.

The process that holds the oracle (the chief, or a search of one process) holds
`<directory>/.<project>.chief.lock`; each worker that `--parallel-trials` started
`<directory>/.<project>.<tuner id>.lock` (workers started by hand for a distributed search are
the user's to manage, and may start before their chief).
Each is an advisory `flock` that the kernel drops when its process ends, SIGKILL included, so a
killed search never leaves its project locked; the files hold the process ids, for the message.
They sit beside the project, not in it, so that `--overwrite` (which empties the project) keeps
them.

Example:
    >>> lock = ProjectLock(Path("logs/tune"), "hyperband")
    >>> lock.hold_oracle(wait_seconds=20)   # RunDirectoryError if another search runs it
    >>> lock.release()
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from digits.errors import RunDirectoryError

# How long a new search waits for the workers of an earlier run of its project to end (they end
# by themselves within 15 s of their chief: `digits.tuner.distributed.stop_when_chief_dies`).
ENV_LEFTOVER_WAIT = "DIGITS_TUNE_LEFTOVER_WAIT"
LEFTOVER_WAIT_SECONDS = 20.0


class ProjectLock:
    """The locks of the search project `project` in `directory` held by this process."""

    def __init__(self, directory: Path, project: str) -> None:
        self.directory, self.project = Path(directory), project
        self._held: list[int] = []
        self._made_directory = not self.directory.exists()

    def _path(self, who: str) -> Path:
        return self.directory / f".{self.project}.{who}.lock"

    def hold_oracle(self, wait_seconds: float | None = None) -> None:
        """Take the project as the process that holds its oracle: refused (`RunDirectoryError`)
        while another process holds it; waits up to `wait_seconds` (default
        `DIGITS_TUNE_LEFTOVER_WAIT`, 20) for the workers of an earlier run to end, saying so in
        one line, and is refused if any is still running then."""
        if not _try_lock(self._path("chief"), self._held):
            raise RunDirectoryError(
                f"another digits.tune is running the search {self.project!r} in {self.directory} "
                f"(pid {_pid_in(self._path('chief'))}): wait for it to end or stop it, or use "
                "another --project")
        wait = leftover_wait() if wait_seconds is None else wait_seconds
        deadline = time.monotonic() + wait
        said = False
        while leftovers := self.running_workers():
            if time.monotonic() >= deadline:
                self.release()
                raise RunDirectoryError(
                    f"workers of an earlier run of the search {self.project!r} are still running "
                    f"(pids {', '.join(map(str, leftovers.values()))}) after {wait:g} s: stop "
                    "them, then run the command again")
            if not said:
                print(f"waiting up to {wait:g} s for the workers of an earlier run to end (pids "
                      f"{', '.join(map(str, leftovers.values()))})", file=sys.stderr, flush=True)
                said = True
            time.sleep(0.25)

    def hold_worker(self, tuner_id: str) -> None:
        """Mark this process as the project's worker `tuner_id` while it runs."""
        _try_lock(self._path(tuner_id), self._held)

    def running_workers(self) -> dict[str, int | str]:
        """{tuner id: pid} of every worker of this project still running on this host."""
        running = {}
        prefix, suffix = f".{self.project}.", ".lock"
        for path in self.directory.glob(f"{prefix}*{suffix}"):
            who = path.name[len(prefix):-len(suffix)]
            if who != "chief" and _locked_by_another(path):
                running[who] = _pid_in(path)
        return running

    def release(self) -> None:
        """Let the locks go. A directory that holding them created is removed again when
        nothing else landed in it (a search refused for its input leaves nothing behind)."""
        while self._held:
            os.close(self._held.pop())
        if self._made_directory and self.directory.is_dir():
            prefix = f".{self.project}."
            if all(p.name.startswith(prefix) and p.name.endswith(".lock")
                   for p in self.directory.iterdir()):
                for path in self.directory.iterdir():
                    path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.directory.rmdir()


def leftover_wait() -> float:
    value = os.environ.get(ENV_LEFTOVER_WAIT, "")
    try:
        return max(0.0, float(value)) if value else LEFTOVER_WAIT_SECONDS
    except ValueError:
        return LEFTOVER_WAIT_SECONDS


def _try_lock(path: Path, held: list[int]) -> bool:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    held.append(fd)
    return True


def _locked_by_another(path: Path) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _pid_in(path: Path) -> int | str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "unknown"
    return int(text) if text.isdigit() else "unknown"
