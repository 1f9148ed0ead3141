"""The epoch-end writes run beside training, in order, and are whole when a fit returns."""

from __future__ import annotations

import json
import threading
import time

import pytest

from digits.callbacks import Callback
from digits.runs import background as background_module
from digits.runs.background import Background


def test_tasks_run_in_order_on_another_thread_and_wait_waits_for_them():
    done, threads = [], set()
    work = Background()

    def task(i):
        time.sleep(0.02)
        done.append(i)
        threads.add(threading.current_thread().name)

    for i in range(5):
        work.submit(lambda i=i: task(i))
    assert len(done) < 5  # submit returned before the work was done
    work.wait()
    assert done == [0, 1, 2, 3, 4]
    assert threads == {"digits-background"}


def test_a_failure_drops_the_tasks_after_it_and_is_raised_once_in_the_caller():
    done = []
    work = Background()
    work.submit(lambda: done.append("state"))
    work.submit(lambda: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    work.submit(lambda: done.append("metrics.json"))  # must not claim what was not written
    with pytest.raises(OSError, match="No space left"):
        work.wait()
    assert done == ["state"]
    work.submit(lambda: done.append("later"))  # the failure was reported; the queue goes on
    work.wait()
    assert done == ["state", "later"]


def test_nothing_starts_while_held_and_wait_opens_the_gate():
    ran = []
    work = Background()
    with work.held():
        work.submit(lambda: ran.append(1))
        time.sleep(0.2)
        assert ran == []
    work.wait()
    assert ran == [1]
    with work.held():
        work.submit(lambda: ran.append(2))
        work.wait()  # never deadlocks on its own gate
    assert ran == [1, 2]


def test_an_earlier_failure_is_raised_by_the_next_submit():
    work = Background()
    work.submit(lambda: 1 / 0)
    assert work.settle().__class__ is ZeroDivisionError  # settle returns it instead
    work.submit(lambda: 1 / 0)
    time.sleep(0.2)
    with pytest.raises(ZeroDivisionError):
        work.submit(lambda: None)


def test_an_idle_worker_thread_ends_and_a_new_task_starts_another(monkeypatch):
    monkeypatch.setattr(background_module, "IDLE_SECONDS", 0.05)
    work = Background(name="digits-background-idle-test")
    work.submit(lambda: None)
    work.wait()
    deadline = time.monotonic() + 5
    while any(t.name == work.name for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(t.name == work.name for t in threading.enumerate())
    ran = []
    work.submit(lambda: ran.append(1))
    work.wait()
    assert ran == [1]


class EpochStarts(Callback):
    def __init__(self):
        super().__init__()
        self.starts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append(time.perf_counter())


def test_the_state_of_an_epoch_is_written_while_the_next_trains_and_whole_at_the_end(
        tmp_path, small_data, monkeypatch):
    from digits.engine.trainer import Trainer
    from digits.runs import state as run_state

    writes = []  # (epoch file, thread, finished at)
    real_write = run_state.write_variables

    def slow_write(snapshot, path):
        time.sleep(0.5)  # a slow disk
        real_write(snapshot, path)
        writes.append((path, threading.current_thread(), time.perf_counter()))

    monkeypatch.setattr(run_state, "write_variables", slow_write)
    starts = EpochStarts()
    trainer = Trainer(max_epochs=3, log_dir=tmp_path, name="bg", batch_size=64,
                      limit_train_batches=2, limit_val_batches=1, callbacks=[starts],
                      verbose=False)
    trainer.fit(trainer.build_model("mlp"), small_data)

    assert len(writes) == 3
    assert all(thread is not threading.main_thread() for _, thread, _ in writes)
    assert starts.starts[1] < writes[0][2]  # epoch 2 began before epoch 1's state was on disk
    run = trainer.run.path  # ... and fit returned only once everything was
    state = json.loads((run / "state" / "trainer.json").read_text())
    assert state["epoch"] == 3 and (run / "state" / state["weights"]).is_file()
    previous = json.loads((run / "state" / "trainer.previous.json").read_text())
    assert previous["epoch"] == 2  # kept until the next epoch is committed, then dropped
    assert sorted(p.name for p in (run / "state").glob("epoch_*")) == sorted(
        [previous["weights"], state["weights"]])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "fitted" and metrics["epochs_completed"] == 3
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]


class FailsInBackground(Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            self.trainer.run_in_background(lambda: 1 / 0, callback=self)


def test_a_callbacks_failing_background_task_stops_the_fit_named_and_keeps_the_last_state(
        tmp_path, small_data):
    from digits.engine.trainer import Trainer
    from digits.errors import CallbackRaised

    trainer = Trainer(max_epochs=4, log_dir=tmp_path, name="bg", batch_size=64,
                      limit_train_batches=2, limit_val_batches=1,
                      callbacks=[FailsInBackground()], verbose=False)
    with pytest.raises(CallbackRaised,
                       match="'FailsInBackground' failed in on_epoch_end: ZeroDivisionError"):
        trainer.fit(trainer.build_model("mlp"), small_data)
    run = trainer.run.path
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    # Epoch 2's state was queued after the failing task, so it was dropped: epoch 1 is the
    # last state, as when a callback raises in the training thread itself.
    state = json.loads((run / "state" / "trainer.json").read_text())
    assert state["epoch"] == 1
    assert metrics["epochs_completed"] <= 3


def test_run_in_background_outside_a_fit_runs_at_once(tmp_path):
    from digits.engine.trainer import Trainer

    ran = []
    Trainer(log_dir=tmp_path, verbose=False).run_in_background(lambda: ran.append(1))
    assert ran == [1]


class QueuesWork(Callback):
    order = 10

    def __init__(self):
        super().__init__()
        self.started = []

    def on_epoch_end(self, epoch, logs=None):
        self.trainer.run_in_background(lambda: self.started.append(time.perf_counter()),
                                       callback=self)


class SlowEpochEnd(Callback):
    order = 90

    def __init__(self):
        super().__init__()
        self.ended = []

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.3)  # Python work on the training thread, as saving model.keras is
        self.ended.append(time.perf_counter())


def test_work_queued_at_an_epochs_end_starts_after_every_callbacks_epoch_end(
        tmp_path, small_data):
    from digits.engine.trainer import Trainer

    queues, slow = QueuesWork(), SlowEpochEnd()
    trainer = Trainer(max_epochs=2, log_dir=tmp_path, name="bg", batch_size=64,
                      limit_train_batches=2, limit_val_batches=1, callbacks=[queues, slow],
                      verbose=False)
    trainer.fit(trainer.build_model("mlp"), small_data)
    assert len(queues.started) == 2
    for started, ended in zip(queues.started, slow.ended, strict=True):
        assert started > ended


def test_ctrl_c_waits_until_the_block_is_done():
    import signal

    from digits.runs.background import interrupts_deferred

    # Python's own Ctrl-C handler, as in a terminal: a suite started in the background by a
    # non-interactive shell inherits SIGINT ignored, and a deferral has nothing to defer then.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                # raise_signal runs the handler before it returns (os.kill's signal may reach
                # another thread and be handled later).
                signal.raise_signal(signal.SIGINT)
                done.append("the write finished")
        assert done == ["the write finished"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)
