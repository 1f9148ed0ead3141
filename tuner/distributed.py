"""Distributed search with keras-tuner's own gRPC engine: who this process is, and the chief.

keras-tuner reads three environment variables: `KERASTUNER_TUNER_ID` ("chief" for the process
that holds the oracle, any other id for a worker), `KERASTUNER_ORACLE_IP` and
`KERASTUNER_ORACLE_PORT` (where the chief listens). Without `KERASTUNER_ORACLE_IP` the search
runs alone in this process. Workers ask the chief for trials, train them, and report back;
every process must see the same `--directory` (a shared filesystem across machines), because
Hyperband continues a trial from the checkpoint another worker wrote.

The chief here serves keras-tuner's `OracleServicer`, with three differences from keras-tuner's
`start_server`: it prints each trial as workers start and end it, it ends within a second of
the last worker leaving (not up to 20 s later), and when keras-tuner stops the search after too
many failed trials in a row it tells the workers to stop and reports why, instead of hanging.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import queue
import time
from concurrent import futures

from digits.errors import ConfigError, RunFailure
from digits.tuner.records import failure_limit_message

ENV_TUNER_ID = "KERASTUNER_TUNER_ID"
ENV_ORACLE_IP = "KERASTUNER_ORACLE_IP"
ENV_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
ENV_PARENT = "DIGITS_TUNE_CHIEF_PID"  # set for the workers `--parallel-trials` starts
ENV_TRIALS_PER_PROCESS = "DIGITS_TUNE_TRIALS_PER_PROCESS"  # ... and how many trials each runs
EXIT_RECYCLE = 75  # a worker that ran its trials and asks to be started afresh
# TensorFlow keeps each trial's training-step graph alive after Keras and keras-tuner have let
# go of the model (no Python object refers to it; ~1,400 graph operations a trial): a search
# process grew from 1.2 GB after trial 5 to 1.8 GB after trial 50 (BENCHMARKS.md). Workers
# that --parallel-trials starts are restarted after this many trials instead.
TRIALS_PER_PROCESS = 10


class SearchStopped(RunFailure):
    """The search stopped before its end: too many failed trials in a row."""


class WorkerFailed(RunFailure):
    """A worker this process started (`--parallel-trials`) ended with an error."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` (IPv4 or IPv6) a moment ago."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class Role:
    """This process's part in a search.

    Attributes:
        kind: "single" (a search alone), "chief" (serves the oracle, runs no trials) or
            "worker" (runs the trials the chief hands out).
        tuner_id: keras-tuner's id of this process ("tuner0" when alone).
        address: "ip:port" of the chief (None when alone).
    """

    kind: str
    tuner_id: str
    address: str | None = None

    @property
    def runs_trials(self) -> bool:
        return self.kind != "chief"

    @property
    def holds_oracle(self) -> bool:
        return self.kind != "worker"


def role_from_environment(env: dict | None = None) -> Role:
    """Read keras-tuner's environment variables, checking them before TensorFlow starts.

    Example:
        >>> role_from_environment({"KERASTUNER_TUNER_ID": "tuner1",
        ...                        "KERASTUNER_ORACLE_IP": "10.0.0.5",
        ...                        "KERASTUNER_ORACLE_PORT": "8000"})
        Role(kind='worker', tuner_id='tuner1', address='10.0.0.5:8000')
    """
    env = os.environ if env is None else env
    tuner_id = env.get(ENV_TUNER_ID, "").strip()
    ip, port = env.get(ENV_ORACLE_IP, "").strip(), env.get(ENV_ORACLE_PORT, "").strip()
    if not ip:
        if port:
            raise ConfigError(f"{ENV_ORACLE_PORT} is set but {ENV_ORACLE_IP} is not: set both "
                              "(and KERASTUNER_TUNER_ID) for a distributed search, or neither")
        return Role("single", tuner_id or "tuner0")
    if not port:
        raise ConfigError(f"{ENV_ORACLE_IP} is set but {ENV_ORACLE_PORT} is not")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{ENV_ORACLE_PORT} must be a port number from 1 to 65535, got {port!r}")
    if not tuner_id:
        raise ConfigError(f"{ENV_ORACLE_IP} is set but {ENV_TUNER_ID} is not: set it to 'chief' "
                          "for the process that holds the oracle, and to a unique id such as "
                          "'tuner0' for each worker")
    if not all(c.isalnum() or c in "_.-" for c in tuner_id):
        raise ConfigError(f"{ENV_TUNER_ID} must be letters, digits, '.', '_' or '-', got "
                          f"{tuner_id!r}")
    host = ip
    try:
        if ipaddress.ip_address(ip).version == 6:
            host = f"[{ip}]"
    except ValueError:
        pass  # a host name
    # keras-tuner's rule: any id containing "chief" is the chief.
    kind = "chief" if "chief" in tuner_id else "worker"
    return Role(kind, tuner_id, f"{host}:{port}")


def serve(tuner, display, address: str, poll_seconds: float = 0.5, watch=None) -> None:
    """Serve `tuner.oracle` on `address` ("ip:port") to the workers until the search is over.

    Returns when keras-tuner has told every worker that asked for a trial to stop and no trial
    is running. Raises `SearchStopped` after keras-tuner stopped the search for too many failed
    trials in a row (the workers are told to stop first), and `WorkerFailed` when `watch()`
    (called every poll) returns why the workers cannot go on.
    """
    import grpc

    from digits.tuner import keras_tuner_internals as internals

    service, service_grpc = internals.grpc_service()
    trial_module = internals.trial_module()
    oracle = tuner.oracle
    events: queue.Queue = queue.Queue()

    class Servicer(internals.oracle_servicer()):
        def __init__(self):
            super().__init__(oracle)
            self.failure: str | None = None

        def CreateTrial(self, request, context):  # gRPC's method name
            if self.failure is not None:
                oracle.tuner_ids.discard(request.tuner_id)
                self.stop_triggered = True
                stopped = trial_module.Trial(oracle.get_space(), status="STOPPED")
                return service.CreateTrialResponse(trial=stopped.to_proto())
            response = super().CreateTrial(request, context)
            if response.trial.status == trial_module.TrialStatus.to_proto("RUNNING"):
                trial = oracle.get_trial(response.trial.trial_id)
                events.put(("started", trial.trial_id, dict(trial.hyperparameters.values),
                            request.tuner_id))
            return response

        def EndTrial(self, request, context):  # gRPC's method name
            trial = trial_module.Trial.from_proto(request.trial)
            owner = next((t for t, running in oracle.ongoing_trials.items()
                          if running.trial_id == trial.trial_id), None)
            try:
                oracle.end_trial(trial)
            except RuntimeError as e:
                if "consecutive failures" not in str(e):
                    raise
                settle_after_failure_limit(oracle, trial.trial_id)
                self.failure = failure_limit_message(oracle, tuner.project_dir, trial.trial_id)
            events.put(("ended", trial.trial_id, None, owner))
            return service.EndTrialResponse()

    # One thread, as in keras-tuner: the oracle's calls run one at a time.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = Servicer()
    service_grpc.add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise ConfigError(f"the chief cannot listen on {address}: {e}") from None
    if not bound:
        raise ConfigError(f"the chief cannot listen on {address} (is the port in use?)")
    server.start()
    tuner.save()  # the chief's own file: a rerun reloads this search (keras_tuner_internals)
    display.line(f"chief: serving the search on {address}; workers ask here for trials")
    try:
        while True:
            time.sleep(poll_seconds)
            _drain(events, tuner, display)
            if servicer.stop_triggered and _all_done(oracle):
                tuner.save()  # as it ends: every trial ended, none left "ongoing"
                break
            problem = watch() if watch is not None else None
            if problem:
                raise WorkerFailed(f"{problem}; the search is saved: rerun the same command to "
                                   "continue it")
    finally:
        server.stop(grace=2)
        _drain(events, tuner, display)
    if servicer.failure is not None:
        raise SearchStopped(servicer.failure)


def _all_done(oracle) -> bool:
    from digits.tuner.keras_tuner_internals import oracle_synchronized

    @oracle_synchronized
    def done(oracle):
        return not oracle.ongoing_trials and not oracle.tuner_ids

    return done(oracle)


def _drain(events: queue.Queue, tuner, display) -> None:
    while True:
        try:
            kind, trial_id, values, where = events.get_nowait()
        except queue.Empty:
            return
        if kind == "started":
            display.trial_started(trial_id, values, where=where)
        else:
            tuner.report_trial_end(trial_id, where=where)


def settle_after_failure_limit(oracle, trial_id: str) -> None:
    """Finish what keras-tuner's `end_trial` left undone when it raised for too many failures.

    keras-tuner raises before writing the trial and the oracle and before releasing the
    trial (so a later run would restart a trial that already failed for good), and its
    `@synchronized` keeps the oracle's lock when the call raises (so any other thread would
    wait for it forever). Call this from the thread that called `end_trial`.
    """
    from digits.tuner.keras_tuner_internals import release_lock_kept_after_raise, save_trial

    release_lock_kept_after_raise(oracle)
    trial = oracle.trials[trial_id]
    for tuner_id, running in list(oracle.ongoing_trials.items()):
        if running.trial_id == trial_id:
            oracle.ongoing_trials.pop(tuner_id)
    save_trial(oracle, trial)
    oracle.save()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def trials_per_process(env: dict | None = None) -> int | None:
    """`DIGITS_TUNE_TRIALS_PER_PROCESS` (a whole number > 0), or None where it is not set."""
    value = (os.environ if env is None else env).get(ENV_TRIALS_PER_PROCESS, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def nvidia_gpu_present() -> bool:
    """Whether this host shows an NVIDIA GPU to this process (its device files: without
    starting TensorFlow, which the chief of a search must not before its workers start)."""
    from pathlib import Path

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def auto_parallel_trials(cores: int, gpu: bool) -> int:
    """`--parallel-trials auto`: two trials at a time on a CPU with two cores or more, where
    two single-threaded workers finished a search 1.3x sooner than one process with both
    cores (BENCHMARKS.md); one with a GPU, which the trials would have to share.

    Example:
        >>> auto_parallel_trials(2, gpu=False), auto_parallel_trials(1, gpu=False)
        (2, 1)
        >>> auto_parallel_trials(16, gpu=True)
        1
    """
    return 2 if cores >= 2 and not gpu else 1


class LocalWorkers:
    """`count` workers of this search on this host (`digits.tune --parallel-trials`).

    Each is `python -m digits.tune` with the same arguments and keras-tuner's worker
    environment, limited to its share of the cores (TensorFlow's `TF_NUM_INTRAOP_THREADS`, one
    inter-op thread), its output in `<log_dir>/<tuner id>.log`; this process is the chief.

    A worker that dies without an `error:` line of its own (killed, out of memory, a crash) is
    started again under the same id: keras-tuner hands a returning id its unfinished trial, which
    resumes from its last finished epoch, and `say` reports it in one line. After
    `MAX_REPLACEMENTS` such deaths in one run the search stops instead (something keeps killing
    them). A worker that ends with an `error:` line stops the search with that line.

    Args:
        count: workers to start.
        argv: the `digits.tune` arguments for each worker.
        port: the chief's port on 127.0.0.1.
        log_dir: where each worker's output goes.
        threads: TensorFlow threads per worker (default: the usable cores shared out).
        say: prints one line for the search's console (default: nothing).
    """

    MAX_REPLACEMENTS = 3

    def __init__(self, count: int, argv: list[str], port: int, log_dir, threads: int | None = None,
                 trials_per_process: int = TRIALS_PER_PROCESS, say=None) -> None:
        from pathlib import Path

        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.threads = threads = threads or max(1, usable_cores() // count)
        self.argv, self.port, self.trials_per_process = list(argv), port, trials_per_process
        self.say = say or (lambda line: None)
        self.restarts = 0
        self.replacements = 0
        self.processes: dict = {}
        self._log_start: dict[str, int] = {}  # where each worker's current process began its log
        for i in range(count):
            self._start(f"tuner{i}", mode="w")

    def _start(self, tuner_id: str, mode: str) -> None:
        import subprocess
        import sys

        env = {**os.environ, ENV_TUNER_ID: tuner_id, ENV_ORACLE_IP: "127.0.0.1",
               ENV_ORACLE_PORT: str(self.port), "TF_NUM_INTRAOP_THREADS": str(self.threads),
               "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1",
               ENV_PARENT: str(os.getpid()),
               ENV_TRIALS_PER_PROCESS: str(self.trials_per_process)}
        with open(self.log_dir / f"{tuner_id}.log", mode) as log:
            self._log_start[tuner_id] = log.seek(0, os.SEEK_END)
            self.processes[tuner_id] = subprocess.Popen(
                [sys.executable, "-m", "digits.tune", *self.argv], env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def check(self) -> str | None:
        """Restart each worker that ran its share of trials (it exits with `EXIT_RECYCLE`) or
        died without saying why (see the class); return why the search cannot go on when a
        worker ended with an error (its trial would wait for it forever), else None."""
        for tuner_id, process in list(self.processes.items()):
            code = process.poll()
            if code == EXIT_RECYCLE:
                self.restarts += 1
                self._start(tuner_id, mode="a")
            elif code not in (None, 0) and self._error_line(tuner_id) is None:
                how = _how_it_ended(code)
                if self.replacements >= self.MAX_REPLACEMENTS:
                    return (f"worker {tuner_id} (pid {process.pid}) {how}, and workers died "
                            f"{self.replacements} times before in this run")
                self.replacements += 1
                self.say(f"worker {tuner_id} (pid {process.pid}) {how}; starting it again: its "
                         "trial resumes from its last finished epoch")
                self._start(tuner_id, mode="a")
        failed = {t: c for t, p in self.processes.items() if (c := p.poll()) not in (None, 0)}
        if not failed:
            return None
        tuner_id, code = next(iter(failed.items()))
        error = self._error_line(tuner_id)
        if error is not None:  # its own words say it all (its exit code may be a crash on exit)
            return f"worker {tuner_id}: {error.removeprefix('error:').strip()}"
        return f"worker {tuner_id} exited with code {code}: {self.last_line(tuner_id)}"

    def _lines(self, tuner_id: str) -> list[str]:
        """The output of the worker's current process."""
        try:
            with open(self.log_dir / f"{tuner_id}.log", "rb") as log:
                log.seek(self._log_start.get(tuner_id, 0))
                return log.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def _error_line(self, tuner_id: str) -> str | None:
        errors = [line for line in self._lines(tuner_id) if line.startswith("error:")]
        return errors[-1] if errors else None

    def last_line(self, tuner_id: str) -> str:
        lines = self._lines(tuner_id)
        return self._error_line(tuner_id) or next(
            (line for line in reversed(lines) if line.strip()), "no output")

    def wait(self, seconds: float = 30.0) -> dict[str, int | None]:
        """Wait up to `seconds` for every worker to end; their exit codes (None: still running)."""
        deadline = time.monotonic() + seconds
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired; reported as None
                pass
        return {t: p.poll() for t, p in self.processes.items()}

    def stop(self, grace: float = 10.0) -> None:
        """SIGINT every worker still running (it saves its trial), then SIGKILL."""
        import signal

        for signum in (signal.SIGINT, signal.SIGKILL):
            running = [p for p in self.processes.values() if p.poll() is None]
            for process in running:
                try:
                    os.killpg(process.pid, signum)
                except ProcessLookupError:
                    pass
            if running and signum == signal.SIGINT:
                self.wait(grace)


def _how_it_ended(code: int) -> str:
    """'was killed (SIGKILL)' for a negative exit code, else 'exited with code N'."""
    import signal

    if code < 0:
        try:
            return f"was killed ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed (signal {-code})"
    return f"exited with code {code} without an error line"


def parallel_trials(value, role: Role) -> int:
    """How many trials this process runs at a time through workers of its own: `value` is
    `--parallel-trials` ("auto" or a count); a chief or worker set up by hand runs one."""
    if role.kind != "single":
        if value not in ("auto", 1) and role.kind == "chief":
            raise ConfigError("--parallel-trials starts its own workers on this host; a chief "
                              "set up with KERASTUNER_* variables gets its workers from you")
        return 1
    return auto_parallel_trials(usable_cores(), nvidia_gpu_present()) if value == "auto" else int(value)


@contextlib.contextmanager
def local_chief():
    """This process as the chief of a search on 127.0.0.1 (for `--parallel-trials`), while the
    block runs: keras-tuner reads its role from the environment when the tuner is made, so the
    environment says so until the block ends, and is then restored whole. Yields the `Role`."""
    saved = dict(os.environ)
    os.environ.update({ENV_TUNER_ID: "chief", ENV_ORACLE_IP: "127.0.0.1",
                       ENV_ORACLE_PORT: str(free_port())})
    try:
        yield role_from_environment()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def worker_argv(argv: list[str] | None) -> list[str]:
    """The command line of a worker that `--parallel-trials` starts: the chief's own
    (`argv`, else `sys.argv`'s arguments) without `--parallel-trials`."""
    import sys

    kept, skip = [], False
    for word in list(sys.argv[1:] if argv is None else argv):
        if skip:
            skip = False
        elif word == "--parallel-trials":
            skip = True
        elif not word.startswith("--parallel-trials="):
            kept.append(word)
    return kept


# A worker whose chief is gone is asked to stop (SIGINT: it saves its epoch, as after Ctrl-C),
# and if it has not ended this many seconds later (its main thread blocked in a gRPC call to the
# chief that will never answer), it exits at once. With the 2 s poll: gone within 15 s.
STOP_GRACE_SECONDS = 10.0
# A worker started by hand (another host's chief) gives its chief this long to answer again
# (a TCP connection to the oracle's port) before it stops the same way.
ENV_CHIEF_TIMEOUT = "DIGITS_TUNE_CHIEF_TIMEOUT"
CHIEF_TIMEOUT_SECONDS = 120.0
EXIT_ORPHANED = 3


def started_by_local_chief(env: dict | None = None) -> bool:
    """Whether this process is a worker that `--parallel-trials` started (`LocalWorkers`)."""
    return (os.environ if env is None else env).get(ENV_PARENT, "").isdigit()


def stop_when_chief_dies(address: str | None = None, env: dict | None = None,
                         poll_seconds: float = 2.0, grace: float = STOP_GRACE_SECONDS) -> None:
    """In a worker: stop this process when its chief is gone, instead of waiting for it for
    keras-tuner's hour (a watcher thread).

    A worker that `--parallel-trials` started (`DIGITS_TUNE_CHIEF_PID` set) watches its parent:
    when the chief dies, however (SIGKILL, OOM, a closed terminal), the worker is re-parented
    and notices within `poll_seconds`. A worker started by hand for a chief at `address`
    ("ip:port", another host's) checks that the chief still accepts connections, and stops
    after `DIGITS_TUNE_CHIEF_TIMEOUT` seconds (default 120) without one. Either way it is sent
    SIGINT (its trial's finished epochs are kept, as after Ctrl-C), and if it has not ended
    `grace` seconds later it exits at once with status 3, saying why on stderr.
    """
    import signal
    import sys
    import threading

    env = os.environ if env is None else env
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started from a shell's background job, the worker inherits SIGINT ignored: let it
        # stop as after Ctrl-C (this runs on the main thread, where handlers are set).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    chief = env.get(ENV_PARENT, "")
    if chief.isdigit():
        def chief_gone() -> str | None:
            return None if os.getppid() == int(chief) else f"its chief (pid {chief}) is gone"
    elif address:
        timeout = _chief_timeout(env)
        last_seen = [time.monotonic()]

        def chief_gone() -> str | None:
            if _accepts_connections(address):
                last_seen[0] = time.monotonic()
            elif time.monotonic() - last_seen[0] > timeout:
                return f"its chief at {address} has not answered for {timeout:g} s"
            return None
    else:
        return

    def watch() -> None:
        while (reason := chief_gone()) is None:
            time.sleep(poll_seconds)
        print(f"worker: {reason}; stopping", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(grace)
        print(f"worker: still running {grace:g} s after the chief went; exiting",
              file=sys.stderr, flush=True)
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="chief-watch", daemon=True).start()


def _chief_timeout(env) -> float:
    value = env.get(ENV_CHIEF_TIMEOUT, "")
    try:
        seconds = float(value) if value else CHIEF_TIMEOUT_SECONDS
    except ValueError:
        seconds = -1.0
    if not (seconds > 0 and seconds < float("inf")):
        raise ConfigError(f"{ENV_CHIEF_TIMEOUT} must be a number of seconds above 0, got {value!r}")
    return seconds


def _accepts_connections(address: str, timeout: float = 5.0) -> bool:
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
