"""One thread beside training for a run's file writes and drawings, done in the order asked.

What an epoch's end hands over here (the resumable state, metrics.json, the confusion-matrix
image) is copied first, on the training thread, so training goes on while it is written: the
files of epoch N are written while epoch N+1 trains (`held` keeps them from starting during
the rest of epoch N's end), and `wait` (which the Trainer calls before a fit returns, before
it writes a final status and before callbacks tear down) leaves nothing in flight. The first
task that fails stops the queue, so nothing written after it can claim more than the files
before it hold (metrics.json never gets ahead of the state); its error is raised in the
training thread, at the next `submit` or `wait`.

Example:
    >>> background = Background()
    >>> background.submit(lambda: write_state(snapshot))   # returns at once
    >>> background.wait()                                   # written, or its error raised here
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
from collections.abc import Callable, Iterator

IDLE_SECONDS = 1.0  # an idle worker ends after this long, so finished Trainers leave no thread


class Background:
    """A single worker thread, started on the first task, that runs tasks first in, first out."""

    def __init__(self, name: str = "digits-background") -> None:
        self.name = name
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._done = threading.Condition()
        self._pending = 0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._open = threading.Event()  # cleared while the training thread is `held`
        self._open.set()

    def submit(self, task: Callable[[], object]) -> None:
        """Queue `task` (no arguments; bind them first). Raises an earlier task's error."""
        self._raise_failure()
        with self._done:
            self._pending += 1
            if self._thread is None:
                # A daemon, so an interpreter that exits without `wait` is not held up (the
                # Trainer always waits; every write is atomic, so a cut one leaves the old file).
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
        self._tasks.put(task)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Start no task inside this block; the tasks queued wait for its end.

        The Trainer holds the thread through each epoch's end, where the callbacks' own
        Python work (saving model.keras, ...) runs: a task started there would take turns with
        it for Python's interpreter lock, while from the next epoch on it overlaps TensorFlow's
        compiled steps, which release it.
        """
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    def wait(self) -> None:
        """Block until every queued task has run; raise the first failure among them."""
        error = self.settle()
        if error is not None:
            raise error

    def settle(self) -> BaseException | None:
        """Wait, then return the first failure (if any) instead of raising it."""
        self._open.set()
        with self._done:
            self._done.wait_for(lambda: self._pending == 0)
            error, self._error = self._error, None
        return error

    def _raise_failure(self) -> None:
        with self._done:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def _work(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._done:
                    if self._pending == 0:  # idle: end; the next `submit` starts another
                        self._thread = None
                        return
                continue
            self._open.wait()
            try:
                if self._error is None:  # after a failure the rest is dropped, in order
                    task()
            except BaseException as e:  # noqa: BLE001 - handed to the training thread
                with self._done:
                    self._error = e
            finally:
                with self._done:
                    self._pending -= 1
                    if self._pending == 0:
                        self._done.notify_all()


class FitWrites:
    """A fit's background writes: on a `Background` thread while a fit runs (`start` ...
    `stop`), at once outside one. Ctrl-C waits while a task is queued and while the writes
    settle, so that no file is cut short."""

    def __init__(self) -> None:
        self.thread: Background | None = None

    def start(self) -> Background:
        self.thread = Background()
        return self.thread

    def submit(self, task: Callable[[], object]) -> None:
        """Run `task` on the fit's background thread (in order), or now outside a fit."""
        if self.thread is None:
            task()
        else:
            with interrupts_deferred():  # a Ctrl-C inside would leave its count off
                self.thread.submit(task)

    def settle(self) -> BaseException | None:
        """Wait for the writes; return (not raise) the first that failed."""
        if self.thread is None:
            return None
        with interrupts_deferred():  # a Ctrl-C now would cut short the last epoch's files
            return self.thread.settle()

    def raise_failure(self) -> None:
        """Wait for the writes; raise the first that failed."""
        failed = self.settle()
        if failed is not None:
            raise failed

    def stop(self) -> None:
        """After a fit, settled: later writes run at once again."""
        self.thread = None


@contextlib.contextmanager
def interrupts_deferred():
    """Hold Ctrl-C until the block is done, so that state being written is written whole."""
    if threading.current_thread() is not threading.main_thread() \
            or not callable(signal.getsignal(signal.SIGINT)):
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            previous(signal.SIGINT, caught[0])
