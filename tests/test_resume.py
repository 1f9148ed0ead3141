"""Resume after a crash, and faults: nothing lost, the same command carries on.

A run killed at any moment (SIGKILL included) and started again with the same command resumes
in the same run directory from its last finished epoch, with its weights, optimizer, learning
rate schedule, data order, random layers and every callback's state. Ctrl-C saves and exits
130. A NaN loss or a failing callback stops the run with exit 1 and keeps what was saved.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from digits.callbacks.base import Callback
from digits.runs.atomic import atomic_write_json
from tests.conftest import ROOT

# ----------------------------------------------------------------------------- test plugins
# Callbacks a user could write, given to the command line as `tests.test_resume:Name(...)`.


class EpochCounter(Callback):
    """Counts the epochs it has seen, across resumes, and writes the count when fit ends."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1

    def on_fit_end(self, trainer):
        atomic_write_json(trainer.run.file("epoch_counter.json"), {"seen": self.seen})

    def state_dict(self) -> dict:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.seen = state["seen"]


class PoisonWeights(Callback):
    """Makes every weight NaN when epoch `at_epoch` (1-based) begins: a loss that blows up."""

    def __init__(self, at_epoch: int = 3) -> None:
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.at_epoch:
            self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])


class Explodes(Callback):
    """Raises (or calls sys.exit) in `on_epoch_end` of epoch `at_epoch` (1-based)."""

    def __init__(self, at_epoch: int = 2, exit: bool = False) -> None:
        super().__init__()
        self.at_epoch, self.exit = at_epoch, exit

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.at_epoch:
            if self.exit:
                sys.exit(0)
            raise RuntimeError("the plugin broke")


class Witness(Callback):
    """Records, in the run directory, that its `on_exception` ran."""

    def on_exception(self, trainer, error):
        atomic_write_json(trainer.run.file("witness.json"), {"error": type(error).__name__})


# ----------------------------------------------------------------------------- helpers


def train_command(log_dir: Path, *extra: str, epochs: int = 8) -> list[str]:
    """A tiny but real training: the embedded digits, a 4-filter CNN with dropout and
    augmentation, 10 batches an epoch; deterministic, so runs can be compared to the bit."""
    return [sys.executable, "-m", "digits.train", "--dataset", "mnist-5k", "--model", "cnn",
            "--hp", "filters=4", "--hp", "dense_units=32", "--epochs", str(epochs),
            "--limit-train-batches", "10", "--limit-val-batches", "1", "--batch-size", "64",
            "--seed", "3", "--deterministic", "--no-default-callbacks",
            "--callback", "tests.test_resume:EpochCounter", "--callback", "early_stopping(patience=50)",
            "--log-dir", str(log_dir), *extra]


def start(command: list[str]) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"}
    # A test suite started in the background by a non-interactive shell ignores SIGINT, and
    # so would the run it starts (Python then installs no KeyboardInterrupt handler): give the
    # run the default disposition, as a terminal would.
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_epochs(proc: subprocess.Popen, metrics: Path, epochs: int, timeout: float = 400) -> int:
    """Poll metrics.json until `epochs` epochs have finished; returns how many have."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        try:
            done = json.loads(metrics.read_text())["epochs_completed"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= epochs:
            return done
        time.sleep(0.02)
    proc.kill()
    pytest.fail("training did not get far enough in time")


def weights_of(path: Path) -> dict[str, np.ndarray]:
    """A state file's variables by position and path ("3:conv2d/kernel")."""
    with np.load(path, allow_pickle=False) as archive:
        return {f"{i}:{name}": archive[f"v{i}"] for i, name in enumerate(archive["names"])}


# ----------------------------------------------------------------------------- through the CLI


@pytest.mark.slow
def test_sigkill_after_the_third_epoch_then_the_same_command_finishes_the_run(tmp_path):
    logs, straight_logs = tmp_path / "logs", tmp_path / "straight"
    run = logs / "cnn" / "version_0"
    proc = start(train_command(logs))
    killed_after = wait_for_epochs(proc, run / "metrics.json", 3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    state = json.loads((run / "state" / "trainer.json").read_text())
    assert state["epoch"] >= killed_after >= 3 and state["epoch"] < 8

    again = subprocess.run(train_command(logs), cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed {run} from epoch {state['epoch']} of 8" in again.stderr
    assert f"run directory: {run}" in again.stdout
    assert sorted(p.name for p in (logs / "cnn").iterdir()) == ["version_0"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 8
    assert metrics["resumed_from_epoch"] == state["epoch"]
    assert all(len(values) == 8 for values in metrics["history"].values())
    # Every callback's state came back: the counter saw all 8 epochs across the two processes.
    assert json.loads((run / "epoch_counter.json").read_text()) == {"seen": 8}
    # The latest epoch and the one before it (kept in case the latest is damaged), no more.
    assert sorted(p.name for p in (run / "state").iterdir()) == [
        "epoch_7.state.npz", "epoch_8.state.npz", "trainer.json", "trainer.previous.json"]

    # The same command run straight through ends with the same weights, to the bit.
    straight = subprocess.run(train_command(straight_logs), cwd=ROOT, capture_output=True,
                              text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert straight.returncode == 0, straight.stderr[-3000:]
    resumed = weights_of(run / "state" / "epoch_8.state.npz")
    reference = weights_of(straight_logs / "cnn" / "version_0" / "state" / "epoch_8.state.npz")
    assert resumed.keys() == reference.keys()
    for name in reference:
        np.testing.assert_array_equal(resumed[name], reference[name], err_msg=name)
    assert json.loads((straight_logs / "cnn" / "version_0" / "metrics.json").read_text())[
        "history"] == metrics["history"]


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted"),
                                                 (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_or_sigterm_saves_the_state_says_how_to_resume_and_exits_130_or_143(
        tmp_path, signum, code, said):
    run = tmp_path / "cnn" / "version_0"
    # Far more epochs than pass before the signal (30 take about 8 s), so a lost signal shows
    # as a run that went on, not as a run that had simply ended.
    proc = start(train_command(tmp_path, epochs=400))
    wait_for_epochs(proc, run / "metrics.json", 2)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    ended = json.loads((run / "metrics.json").read_text())
    assert ended["epochs_completed"] < 400, "the run went on to its end: the signal was lost"
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr
    assert f"\n{said}: state up to the last finished epoch is saved" in stderr
    assert "run the same command again to resume" in stderr
    assert f"are saved in {run}" in stderr
    metrics = json.loads((run / "metrics.json").read_text())
    state = json.loads((run / "state" / "trainer.json").read_text())
    assert metrics["status"] == "interrupted" and state["epoch"] >= 2
    assert (run / "state" / state["weights"]).is_file()
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]


def run_train_in_process(capsys, *argv: str) -> tuple[int, str, str]:
    from digits import train

    code = train.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def small_train(log_dir: Path, *extra: str, epochs: int = 4) -> list[str]:
    return ["--dataset", "mnist-5k", "--model", "mlp", "--hp", "hidden_units=32", "--epochs",
            str(epochs), "--limit-train-batches", "4", "--limit-val-batches", "1",
            "--no-default-callbacks", "--callback", "nan_guard", "--log-dir", str(log_dir), *extra]


def test_a_nan_loss_stops_the_run_keeps_the_last_good_checkpoint_and_exits_1(tmp_path, capsys):
    code, _, err = run_train_in_process(
        capsys, *small_train(tmp_path, "--callback", "tests.test_resume:PoisonWeights(at_epoch=3)"))
    run = tmp_path / "mlp" / "version_0"
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: loss became NaN at epoch 3")
    assert "Traceback" not in err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "epoch 3" in metrics["stop_reason"]
    # The broken epoch replaced neither the state nor the best model.
    state = json.loads((run / "state" / "trainer.json").read_text())
    assert state["epoch"] == 2 and state["stop_reason"] is None
    assert all(np.isfinite(w).all() for w in weights_of(run / "state" / state["weights"]).values())
    import keras

    best = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert all(np.isfinite(w).all() for w in best.get_weights())


@pytest.mark.parametrize("exit", [False, True], ids=["raises", "calls-sys-exit"])
def test_a_failing_plugin_is_named_every_on_exception_runs_and_the_run_survives(
        tmp_path, capsys, exit):
    plugin = f"tests.test_resume:Explodes(at_epoch=2, exit={exit})"
    code, _, err = run_train_in_process(
        capsys, *small_train(tmp_path, "--callback", "tests.test_resume:Witness",
                             "--callback", plugin))
    run = tmp_path / "mlp" / "version_0"
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: callback 'tests.test_resume:Explodes' failed in on_epoch_end: ")
    assert ("SystemExit" if exit else "RuntimeError: the plugin broke") in line
    assert json.loads((run / "witness.json").read_text()) == {"error": "CallbackRaised"}
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"
    state = json.loads((run / "state" / "trainer.json").read_text())
    assert state["epoch"] == 1 and (run / "state" / state["weights"]).is_file()

    # The plugin took nothing with it: without it, the same run carries on from epoch 1.
    code, _, err = run_train_in_process(capsys, *small_train(tmp_path, "--callback",
                                                             "tests.test_resume:Witness"))
    assert code == 0, err
    assert f"resumed {run} from epoch 1 of 4" in err
    assert json.loads((run / "metrics.json").read_text())["epochs_completed"] == 4


# ----------------------------------------------------------------------------- the Trainer


@pytest.fixture(autouse=True)
def op_determinism_off_afterwards():
    """`deterministic=True` switches TensorFlow's op determinism on for the whole process."""
    yield
    from tensorflow.python.framework import config

    if hasattr(config, "disable_op_determinism"):
        config.disable_op_determinism()


def make_trainer(log_dir, name="run", callbacks=(), **kwargs):
    from digits.engine.trainer import Trainer

    settings = {"max_epochs": 4, "seed": 1, "deterministic": True, "batch_size": 64,
                "limit_train_batches": 4, "limit_val_batches": 1, "resume": True,
                "verbose": False, **kwargs}
    return Trainer(callbacks=list(callbacks), log_dir=log_dir, name=name, **settings)


class CrashAt(Callback):
    """Stands in for a crash: raises when epoch `at` (0-based) begins, after `at` were saved."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise RuntimeError("crash")


def fit(trainer, data, model="cnn", **hyperparameters):
    built = trainer.build_model(model, **hyperparameters)
    trainer.fit(built, data)
    return built


def test_a_deterministic_resumed_run_ends_with_the_same_weights_as_a_straight_one(
        tmp_path, small_data, capsys):
    """Resumed from a damaged state, too: a disk error in the last epoch's archive costs that
    epoch (the state keeps the one before), not the run, and not a bit of the result."""
    hps = {"filters": 4, "dense_units": 32}  # with dropout and augmentation: random layers
    straight = fit(make_trainer(tmp_path, "straight"), small_data, **hps)
    from digits.errors import CallbackRaised

    with pytest.raises(CallbackRaised):
        fit(make_trainer(tmp_path, "resumed", [CrashAt(3)]), small_data, **hps)
    state_dir = tmp_path / "resumed" / "version_0" / "state"
    assert sorted(p.name for p in state_dir.iterdir()) == [
        "epoch_2.state.npz", "epoch_3.state.npz", "trainer.json", "trainer.previous.json"]
    latest = state_dir / "epoch_3.state.npz"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # a torn write
    capsys.readouterr()
    trainer = make_trainer(tmp_path, "resumed")
    resumed = fit(trainer, small_data, **hps)
    err = capsys.readouterr().err
    assert "notice: the saved state of epoch 3:" in err and "resuming from epoch 2" in err, err
    assert trainer.resumed_from_epoch == 2 and trainer.run.version == 0
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [v.numpy().tolist() for v in straight.variables if v.name == "seed_generator_state"] == \
        [v.numpy().tolist() for v in resumed.variables if v.name == "seed_generator_state"]


def test_state_with_both_epochs_damaged_is_refused(tmp_path, small_data):
    from digits.errors import CallbackRaised, RunDirectoryError

    with pytest.raises(CallbackRaised):
        fit(make_trainer(tmp_path, "both", [CrashAt(3)]), small_data, "mlp")
    state_dir = tmp_path / "both" / "version_0" / "state"
    for archive in state_dir.glob("epoch_*.state.npz"):
        archive.write_bytes(b"not an archive")
    with pytest.raises(RunDirectoryError, match="from epoch 3: .*; nor from epoch 2: "):
        fit(make_trainer(tmp_path, "both"), small_data, "mlp")


def test_early_stopping_and_checkpoint_state_come_back(tmp_path, small_data):
    from digits.callbacks.checkpoint import Checkpoint
    from digits.callbacks.early_stopping import EarlyStopping
    from digits.errors import CallbackRaised

    first_stop, first_best = EarlyStopping(patience=50), Checkpoint()
    with pytest.raises(CallbackRaised):
        fit(make_trainer(tmp_path, callbacks=[first_stop, first_best, CrashAt(3)]), small_data, "mlp")
    stop, best = EarlyStopping(patience=50), Checkpoint()
    seen = {}

    class Look(Callback):
        order = 150  # after both, so that it sees what they start the resumed fit with

        def on_fit_start(self, trainer):
            seen.update(wait=stop.wait, best=stop.best, score=best.best, epoch=best.best_epoch)

    fit(make_trainer(tmp_path, callbacks=[stop, best, Look()]), small_data, "mlp")
    assert seen == {"wait": first_stop.wait, "best": first_stop.best, "score": first_best.best,
                    "epoch": first_best.best_epoch}
    assert seen["best"] is not None and seen["epoch"] is not None


def test_a_finished_run_is_never_resumed_and_no_resume_starts_afresh(tmp_path, small_data):
    trainer = make_trainer(tmp_path, max_epochs=1)
    fit(trainer, small_data, "mlp")
    trainer.finish()
    again = make_trainer(tmp_path, max_epochs=1)
    fit(again, small_data, "mlp")
    assert again.run.version == 1 and again.resumed_from_epoch is None
    # version_1 is unfinished ("fitted"), but --no-resume never resumes.
    fresh = make_trainer(tmp_path, max_epochs=1, resume=False)
    fit(fresh, small_data, "mlp")
    assert fresh.run.version == 2


def test_a_changed_configuration_starts_a_new_version(tmp_path, small_data):
    from digits.errors import CallbackRaised

    with pytest.raises(CallbackRaised):
        fit(make_trainer(tmp_path, callbacks=[CrashAt(1)]), small_data, "mlp")
    other = make_trainer(tmp_path, learning_rate=1e-3)
    fit(other, small_data, "mlp")
    assert other.run.version == 1 and other.resumed_from_epoch is None


def test_a_run_cut_off_before_its_first_epoch_is_taken_up_again(tmp_path, small_data):
    from digits.errors import CallbackRaised

    with pytest.raises(CallbackRaised):
        fit(make_trainer(tmp_path, callbacks=[CrashAt(0)]), small_data, "mlp")
    run = tmp_path / "run" / "version_0"
    (run / "metrics.json").unlink()  # as if SIGKILL came before anything but config.json
    again = make_trainer(tmp_path)
    fit(again, small_data, "mlp")
    assert again.run.path == run and again.resumed_from_epoch == 0
    assert len(again.history["loss"]) == 4


def test_a_run_still_held_by_a_live_process_is_not_resumed(tmp_path, small_data):
    from digits.engine.trainer import RunDirectory
    from digits.errors import CallbackRaised

    with pytest.raises(CallbackRaised):
        fit(make_trainer(tmp_path, callbacks=[CrashAt(1)]), small_data, "mlp")
    other_process = RunDirectory(tmp_path / "run" / "version_0")
    assert other_process.try_lock()
    try:
        again = make_trainer(tmp_path)
        fit(again, small_data, "mlp")
        assert again.run.version == 1
    finally:
        other_process.unlock()


def test_half_written_files_of_a_crash_are_swept_on_resume(tmp_path, small_data):
    from digits.errors import CallbackRaised

    with pytest.raises(CallbackRaised):
        fit(make_trainer(tmp_path, callbacks=[CrashAt(1)]), small_data, "mlp")
    run = tmp_path / "run" / "version_0"
    for stale in (run / ".metrics.json.x1y2.tmp", run / "state" / ".epoch_2.weights.h5.abc.tmp.weights.h5"):
        stale.write_bytes(b"half")
    fit(make_trainer(tmp_path), small_data, "mlp")
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]


def test_a_failing_state_dict_is_named(tmp_path, small_data):
    from digits.errors import CallbackRaised

    class Unsaveable(Callback):
        def state_dict(self):
            return {"model": object()}

    with pytest.raises(CallbackRaised, match="'Unsaveable' failed in state_dict"):
        fit(make_trainer(tmp_path, callbacks=[Unsaveable()]), small_data, "mlp")


def test_a_full_disk_while_saving_state_stops_the_run_cleanly(tmp_path, small_data, monkeypatch):
    import errno

    from digits.errors import TrainingStopped
    from digits.runs import state as run_state

    def no_space_for_state(path, obj):
        if Path(path).name == "trainer.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        atomic_write_json(path, obj)

    monkeypatch.setattr(run_state, "atomic_write_json", no_space_for_state)
    with pytest.raises(TrainingStopped, match="cannot save the run's state in .*No space left"):
        fit(make_trainer(tmp_path), small_data, "mlp")



def test_a_run_cut_off_during_its_test_is_tested_without_training_again(tmp_path, small_data):
    fit(make_trainer(tmp_path, max_epochs=2), small_data, "mlp")  # "fitted": the test never ran
    again = make_trainer(tmp_path, max_epochs=2)
    model = fit(again, small_data, "mlp")
    assert again.run.version == 0 and again.resumed_from_epoch == 2
    assert len(again.history["loss"]) == 2  # nothing was trained twice
    again.test(model, small_data)
    metrics = json.loads((again.run.path / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 2


def test_a_run_saved_in_the_earlier_keras_weights_format_still_resumes_to_the_same_weights(
        tmp_path, small_data):
    """Runs saved before digits.runs.variables (Keras' .weights.h5, seed states in trainer.json)."""
    from digits.errors import CallbackRaised

    hps = {"filters": 4, "dense_units": 32}
    straight = fit(make_trainer(tmp_path, "straight"), small_data, **hps)
    crashing = make_trainer(tmp_path, "resumed", [CrashAt(2)])
    crashed = crashing.build_model("cnn", **hps)
    with pytest.raises(CallbackRaised):
        crashing.fit(crashed, small_data)
    state_dir = crashing.run.file("state")
    state = json.loads((state_dir / "trainer.json").read_text())
    (state_dir / state["weights"]).unlink()
    crashed.save_weights(state_dir / "epoch_2.weights.h5")  # what the crash left, the old way
    state["weights"] = "epoch_2.weights.h5"
    state["seed_generators"] = [v.numpy().tolist() for v in crashed.variables
                                if v.name == "seed_generator_state"]
    (state_dir / "trainer.json").write_text(json.dumps(state))

    trainer = make_trainer(tmp_path, "resumed")
    resumed = fit(trainer, small_data, **hps)
    assert trainer.resumed_from_epoch == 2
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in state_dir.iterdir()) == [
        "epoch_3.state.npz", "epoch_4.state.npz", "trainer.json", "trainer.previous.json"]
