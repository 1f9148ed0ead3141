#!/usr/bin/env python
"""Run a distributed `digits.tune` search on this host: one chief and N workers.

keras-tuner's distributed mode is one command started several times with different
environment variables: the chief (`KERASTUNER_TUNER_ID=chief`) holds the search and hands out
trials over gRPC, each worker (`tuner0`, `tuner1`, ...) runs one trial at a time. This launcher
picks a free port on 127.0.0.1 (loopback only: the chief's gRPC port has no authentication),
starts the chief and the workers with the same tune arguments, prefixes every line of their
output with who wrote it, waits for all of them, and reports. Ctrl-C or `--timeout` stops them
all (the search resumes when the same command runs again).

For several machines, start the processes yourself: see docs/distributed.md.

Usage:
    python scripts/distributed_tune.py [--workers N] [--timeout S] [-- TUNE ARGUMENTS]

Example:
    python scripts/distributed_tune.py --workers 2 -- --dataset mnist-5k --tuner random \\
        --max-trials 8 --max-epochs 3 --directory logs/tune --project distributed
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time

from digits.tuner.distributed import free_port

TRIAL_STARTED = re.compile(r"^trial \d+(?:/\d+)? \(id (?P<id>[^)]+)\) started")


class Process:
    """One `python -m digits.tune` process of the search, its output relayed with a prefix."""

    def __init__(self, tuner_id: str, tune_args: list[str], host: str, port: int,
                 python: str = sys.executable) -> None:
        self.tuner_id = tuner_id
        self.trials: list[str] = []
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": host,
               "KERASTUNER_ORACLE_PORT": str(port), "PYTHONUNBUFFERED": "1"}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        self.popen = subprocess.Popen(
            [python, "-m", "digits.tune", *tune_args], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        self._relay = threading.Thread(target=self._relay_output, daemon=True)
        self._relay.start()

    def _relay_output(self) -> None:
        width = 8
        for line in self.popen.stdout:
            line = line.rstrip("\n")
            match = TRIAL_STARTED.match(line)
            if match and self.tuner_id != "chief":
                self.trials.append(match.group("id"))
            print(f"[{self.tuner_id:>{width}}] {line}", flush=True)

    def poll(self) -> int | None:
        return self.popen.poll()

    def signal(self, signum: int) -> None:
        """Signal the whole process group (the process and anything it started)."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signum)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> int | None:
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._relay.join(timeout=5)
        return code


def wait_all(processes: list[Process], seconds: float) -> bool:
    """Wait up to `seconds` in all for every process to end; True when all have."""
    deadline = time.monotonic() + seconds
    for p in processes:
        p.wait(max(0.0, deadline - time.monotonic()))
    return all(p.poll() is not None for p in processes)


def stop_all(processes: list[Process], grace: float = 10.0) -> None:
    """SIGINT (the search saves its state), then SIGKILL whatever is still running."""
    for p in processes:
        p.signal(signal.SIGINT)
    if not wait_all(processes, grace):
        for p in processes:
            if p.poll() is None:
                p.signal(signal.SIGKILL)
                p.wait(5)


def run(workers: int, tune_args: list[str], host: str = "127.0.0.1", port: int | None = None,
        timeout: float | None = None, worker_grace: float = 60.0) -> int:
    """Start the chief and `workers` workers, wait for all, report; returns an exit code."""
    port = port or free_port(host)
    print(f"distributed search on {host}:{port}: chief + {workers} worker(s): "
          f"digits.tune {' '.join(tune_args)}", flush=True)
    chief = Process("chief", tune_args, host, port)
    processes = [chief] + [Process(f"tuner{i}", tune_args, host, port) for i in range(workers)]
    print("started " + ", ".join(f"{p.tuner_id} (pid {p.popen.pid})" for p in processes),
          flush=True)
    started = time.monotonic()
    code = 0
    try:
        while any(p.poll() is None for p in processes):
            if timeout is not None and time.monotonic() - started > timeout:
                print(f"timed out after {timeout:g}s: stopping every process", flush=True)
                stop_all(processes)
                code = 124
                break
            if chief.poll() not in (None, 0):
                # A chief that stopped the search told every worker that asked to stop: give
                # them time to finish on their own before interrupting the ones still running.
                print(f"the chief exited with code {chief.poll()}: waiting up to "
                      f"{worker_grace:g}s for the workers", flush=True)
                if not wait_all(processes[1:], worker_grace):
                    print("stopping the workers still running", flush=True)
                    stop_all(processes)
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("interrupted: stopping every process (rerun the same command to resume)", flush=True)
        stop_all(processes)
        return 130
    for p in processes:
        p.wait(10)
    print(f"done in {time.monotonic() - started:.0f}s:", flush=True)
    for p in processes:
        ran = "" if p.tuner_id == "chief" else (
            f", ran {len(p.trials)} trial(s){': ' + ', '.join(p.trials) if p.trials else ''}")
        print(f"  {p.tuner_id}: exit code {p.poll()}{ran}", flush=True)
    if code:
        return code
    codes = [p.poll() or 0 for p in processes]
    return chief.poll() or max(codes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a distributed digits.tune search on this host: a chief and N workers "
                    "on 127.0.0.1. Arguments after -- go to every digits.tune process.")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="worker processes (default: 2)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the chief binds (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None,
                        help="the chief's port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="stop everything after S seconds (exit code 124)")
    argv = sys.argv[1:] if argv is None else argv
    ours, tune_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    args = parser.parse_args(ours)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.port is not None and not 1 <= args.port <= 65535:
        parser.error("--port must be from 1 to 65535")
    return run(args.workers, tune_args, host=args.host, port=args.port, timeout=args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
