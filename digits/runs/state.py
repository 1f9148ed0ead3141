"""The run's state: open or resume a run directory, save and load each epoch, metrics.json.

Everything about resuming is here. After every epoch `save` writes, on a background thread
while the next epoch trains:

    <run>/state/epoch_<n>.digits-state    model + optimizer variables, seed-generator states
    <run>/state/trainer.json              commits epoch n: its variables file, the callbacks'
                                          state, the history, the stop reason
    <run>/state/trainer.previous.json     epoch n-1's commit, kept (with its variables) until
                                          epoch n is committed, as a fallback
    <run>/metrics.json                    status (running, fitted, finished, failed,
                                          interrupted), history, test results

A later identical command (`resume=True`) finds the latest run of the same name, takes its
lock, checks that it is unfinished and of the same configuration (`resumable`), and `restore`s
the newest whole epoch. Writes are atomic (a temporary file, then a rename) and Ctrl-C waits
until a write is whole (`interrupts_deferred`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np

from digits.engine.compiling import build_optimizer
from digits.engine.stopping import Stop
from digits.errors import CallbackRaised, RunDirectoryError, TrainingStopped
from digits.runs.atomic import atomic_path, atomic_write_json, remove_stale_temporaries, to_json
from digits.runs.background import FitWrites, interrupts_deferred
from digits.runs.directory import RunDirectory, safe_name
from digits.runs.variables import SUFFIX as VARIABLES_SUFFIX
from digits.runs.variables import check_variables, load_variables, snapshot_variables, write_variables

STATE_DIR = "state"
STATE_FILE = "trainer.json"  # the latest committed epoch
PREVIOUS_STATE_FILE = "trainer.previous.json"  # the one before, until the next is committed


class RunState:
    """A Trainer's run directory and resumable state (Lightning's checkpoint connector).

    It reads and updates the Trainer's public run attributes (`run`, `current_epoch`,
    `history`, `stop_reason`, `resumed_from_epoch`, `test_result`), which callbacks read.
    """

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.writes = FitWrites()  # during a fit: the epoch-end writes, off the training thread

    # -- opening ---------------------------------------------------------------------------

    def open(self, model, config: dict) -> None:
        """Resume the latest run of this name if it is resumable, else create the next one."""
        t = self.trainer
        t.name = t.name or safe_name(getattr(model, "name", "model"))
        if t.fast_dev_run:
            import atexit
            import shutil

            scratch = tempfile.mkdtemp(prefix="digits-fast-dev-run-")
            atexit.register(shutil.rmtree, scratch, ignore_errors=True)  # a dev run keeps nothing
            t.run = RunDirectory(scratch)
            return
        if t.resume:
            latest = RunDirectory.latest(t.log_dir, t.name)
            # The lock keeps a second identical command from resuming a run that is still alive.
            if latest is not None and latest.try_lock():
                if resumable(latest, config):
                    for directory in (latest.path, latest.file(STATE_DIR)):
                        remove_stale_temporaries(directory)  # half-written files of the crash
                    t.run = latest
                    return
                latest.unlock()
        t.run = RunDirectory.create(t.log_dir, t.name)
        t.run.try_lock()

    def restore(self, model, initial_epoch: int, train_steps: int) -> tuple[int, bool]:
        """Load the saved state (when resuming) and record the run's configuration.

        Returns the epoch to train from and whether the run had already stopped (early
        stopping) so that no epoch is left to train.
        """
        t = self.trainer
        state = self.load(model) if t.resume else None
        if state is None and initial_epoch:
            t.current_epoch = initial_epoch
            model.optimizer.iterations.assign(initial_epoch * train_steps)
        if state is not None:
            initial_epoch = t.current_epoch = t.resumed_from_epoch = int(state["epoch"])
            t.notice(f"resumed {t.run.path} from epoch {initial_epoch} of {t.max_epochs}")
        elif t.resume and t.run.read_json("config.json") is not None:
            t.resumed_from_epoch = 0
            t.notice(f"resumed {t.run.path} from epoch 0 of {t.max_epochs} "
                      "(it was cut off before its first epoch ended)")
        if not t.fast_dev_run:
            t.run.write_json("config.json", t.config)
            skipped = getattr(t.data, "skipped", ())
            if skipped:
                from digits.runs.atomic import atomic_write_text

                atomic_write_text(t.run.file("skipped_images.txt"), "".join(
                    f"{where}\t{why}\n" for where, why in skipped))
        return initial_epoch, bool(state and state.get("stop_reason"))

    # -- saving ----------------------------------------------------------------------------

    def save(self) -> None:
        """Variables, then the small JSON that commits them (atomic, in that order).

        The variables file (`digits.runs.variables`) holds the model's and the optimizer's variables:
        weights, batch-norm statistics, the iteration count that drives the learning-rate
        schedule, and the random layers' seed-generator states (dropout, augmentation), so a
        resumed `--deterministic` run draws the same masks as one that went straight through.
        """
        t = self.trainer
        if t.run is None or t.fast_dev_run:
            return
        callback_states = {}
        for c in t.callbacks:
            if hasattr(c, "state_dict"):
                try:
                    callback_state = c.state_dict()
                    to_json(callback_state)
                except Exception as e:  # noqa: BLE001 - attributed to the callback
                    raise CallbackRaised(c, "state_dict", e) from e
                callback_states[c.state_key] = callback_state
        state_dir = t.run.file(STATE_DIR)
        weights_name = f"epoch_{t.current_epoch}{VARIABLES_SUFFIX}"
        # Copied now, written on the background thread while the next epoch trains.
        variables = snapshot_variables(t.model, t.state_variables())
        commit = json.loads(to_json({
            "epoch": t.current_epoch,
            "weights": weights_name,
            "callbacks": callback_states,
            "history": t.history,
            "stop_reason": t.stop_reason,
        }))
        run = t.run

        def write() -> None:
            try:
                state_dir.mkdir(exist_ok=True)
                with atomic_path(state_dir / weights_name) as tmp:
                    write_variables(variables, tmp)
                    check_variables(tmp, len(variables) - 1)  # all but `names`, whole, or it raises
                # The epoch before stays until this one is committed: a damaged latest state
                # (a disk error) then resumes from it instead of not at all.
                kept = {weights_name}
                if (state_dir / STATE_FILE).is_file():
                    previous = run.read_json(f"{STATE_DIR}/{STATE_FILE}") or {}
                    os.replace(state_dir / STATE_FILE, state_dir / PREVIOUS_STATE_FILE)
                    kept.add(str(previous.get("weights")))
                atomic_write_json(state_dir / STATE_FILE, commit)
                for pattern in (f"epoch_*{VARIABLES_SUFFIX}", "epoch_*.weights.h5"):
                    for old in state_dir.glob(pattern):
                        if old.name not in kept:
                            old.unlink(missing_ok=True)
            except (OSError, ValueError) as e:
                raise TrainingStopped(
                    f"cannot save the run's state in {state_dir}: "
                    f"{getattr(e, 'strerror', None) or e}") from e

        self.writes.submit(write)

    def write_metrics(self, status: str, background: bool = False) -> None:
        """metrics.json, now or (`background`) after the writes queued before it."""
        t = self.trainer
        if t.run is None or t.fast_dev_run:
            return
        metrics = {
            "status": status,
            "epochs_completed": t.current_epoch,
            "max_epochs": t.max_epochs,
            "resumed_from_epoch": t.resumed_from_epoch,
            "stop_reason": t.stop_reason,
            "history": t.history,
        }
        if t.averaged is not None:
            metrics["averaged"] = t.averaged
        if t.test_result is not None:
            metrics["test"] = t.test_result.to_dict()
        target = t.run.file("metrics.json")
        if not background:
            t.run.write_json("metrics.json", metrics)
            return
        copied = json.loads(to_json(metrics))

        def write() -> None:
            try:
                atomic_write_json(target, copied)
            except OSError as e:
                raise TrainingStopped(f"cannot write {target}: {e.strerror or e}") from e

        self.writes.submit(write)

    # -- loading ---------------------------------------------------------------------------

    def load(self, model) -> dict | None:
        """Restore the latest committed epoch; if its files are damaged, the epoch before
        (with a notice), which the state keeps until the next epoch is committed."""
        t = self.trainer
        if t.run is None:
            return None
        latest = t.run.read_json(f"{STATE_DIR}/{STATE_FILE}")
        previous = t.run.read_json(f"{STATE_DIR}/{PREVIOUS_STATE_FILE}")
        candidates = [s for s in (latest, previous) if s and s.get("epoch")]
        if not candidates:
            return None
        problems = []
        for state in candidates:
            try:
                self.restore_variables(model, state)
            except Exception as e:  # noqa: BLE001 - a damaged state file is reported, not raised
                problems.append(f"epoch {state['epoch']}: {e}")
                continue
            if problems:
                print(f"notice: the saved state of {problems[0]}; resuming from epoch "
                      f"{state['epoch']}, the one saved before it", file=sys.stderr, flush=True)
            break
        else:
            raise RunDirectoryError(
                f"cannot resume {t.run.path} from {'; nor from '.join(problems)}; "
                "start afresh with --no-resume") from None
        for c in t.callbacks:
            if hasattr(c, "load_state_dict") and c.state_key in state.get("callbacks", {}):
                try:
                    c.load_state_dict(state["callbacks"][c.state_key])
                except Exception as e:  # noqa: BLE001 - attributed to the callback
                    raise CallbackRaised(c, "load_state_dict", e) from e
        t.history = {k: list(v) for k, v in state.get("history", {}).items()}
        t.stopped = Stop.from_text(state.get("stop_reason"))
        return state

    def restore_variables(self, model, state: dict) -> None:
        weights = self.trainer.run.file(STATE_DIR) / str(state.get("weights"))
        build_optimizer(model, self.trainer.strategy)  # built when compiled; loading needs it
        if weights.name.endswith(VARIABLES_SUFFIX):
            load_variables(model, weights, self.trainer.state_variables())
        else:  # a run saved by digits 0.1's first releases: Keras weights, seeds in JSON
            model.load_weights(weights)
            seeds = state.get("seed_generators") or []
            variables = seed_states(model)
            if len(seeds) == len(variables):
                for variable, value in zip(variables, seeds, strict=True):
                    variable.assign(np.asarray(value, dtype=variable.dtype))

    # -- the end of a fit ------------------------------------------------------------------

    def settle_after(self, error: BaseException) -> None:
        """After a fit failed or was interrupted: the last epoch's files whole (a write
        that failed too is a warning; the error that ended the fit is the one raised)."""
        failed_write = self.writes.settle()
        if failed_write is not None and failed_write is not error:
            self.trainer.notice(f"warning: {failed_write}")

    def record_failure(self, error: BaseException) -> None:
        """The status of a failed or interrupted fit in metrics.json, and (Ctrl-C) where
        the saved epochs are."""
        t = self.trainer
        interrupted = isinstance(error, KeyboardInterrupt)
        try:
            with interrupts_deferred():
                self.write_metrics(status="interrupted" if interrupted else "failed")
        except OSError as e:  # the disk that failed the run may fail this too
            t.notice(f"warning: cannot record the run's status: {e.strerror or e}")
        if interrupted and t.run is not None and not t.fast_dev_run:
            saved = (f"epochs 1-{t.current_epoch} are saved in {t.run.path}"
                     if t.current_epoch else f"no epoch had finished ({t.run.path})")
            t.notice(f"\ninterrupted during epoch {t.current_epoch + 1}: {saved}")

    def close(self) -> None:
        """Nothing outlives the fit: no background thread, no lock (a later identical
        command may resume)."""
        self.writes.stop()
        if self.trainer.run is not None:
            self.trainer.run.unlock()


def resumable(run: RunDirectory, config: dict) -> bool:
    """An unfinished run of the same configuration whose saved state (if any) is whole.

    Unfinished covers a run cut off at any moment: before its first epoch ended (no
    metrics.json yet), while training ("running"), after a failure or Ctrl-C, and after
    training but before its test ("fitted").
    """
    metrics = run.read_json("metrics.json") or {}
    if metrics.get("status") == "finished":
        return False
    same = same_configuration(run, config)
    if run.read_json("config.json") is None:
        return False
    states = [run.read_json(f"{STATE_DIR}/{name}") for name in (STATE_FILE, PREVIOUS_STATE_FILE)]
    if states == [None, None]:
        return same
    return same and any(isinstance(state, dict) and isinstance(state.get("weights"), str)
                        and run.file(STATE_DIR).joinpath(state["weights"]).is_file()
                        for state in states)


def same_configuration(run: RunDirectory, config: dict) -> bool:
    """Whether `run` recorded this configuration in its config.json (the callbacks aside:
    adding a display does not change what a run computes)."""
    previous = run.read_json("config.json")
    if previous is None:
        return False
    ignore = {"callbacks"}
    return {k: v for k, v in previous.items() if k not in ignore} == json.loads(
        json.dumps({k: v for k, v in config.items() if k not in ignore}, default=str))


def seed_states(model) -> list:
    """The state variables of the model's seed generators (dropout, augmentation), in order.

    Keras lists them among `model.variables` but leaves them out of `save_weights`.
    """
    return [v for v in model.variables if v.name == "seed_generator_state"]
