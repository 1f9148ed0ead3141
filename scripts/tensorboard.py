#!/usr/bin/env python
"""Start TensorBoard on a log directory, bound to 127.0.0.1 unless told otherwise.

TensorBoard has no authentication: bound to every interface, anyone who can reach the port
can read the runs. So this launcher binds to the loopback interface by default; pass
`--host 0.0.0.0` (and think first) to share it.

Usage:
    python scripts/tensorboard.py [LOGDIR] [--port 6006] [--host 127.0.0.1] [-- TENSORBOARD FLAGS]

Example:
    python scripts/tensorboard.py logs --port 6006
    python scripts/tensorboard.py logs/cnn/version_3 -- --reload_interval 2

The helpers (`tensorboard_command`, `free_port`, `wait_for_tags`) are shared with
`scripts/screenshot_tensorboard.py` and the tests. This file is named after the tool it
starts, so it must never `import tensorboard` itself: with `scripts/` first on `sys.path`,
that would import this file. TensorBoard runs as `python -P -m tensorboard.main` for the
same reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from digits.tuner.distributed import free_port  # noqa: F401 - shared with the screenshot script and tests

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6006
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def tensorboard_command(logdir: str | os.PathLike, port: int, host: str = DEFAULT_HOST,
                        extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The command line that serves `logdir` with TensorBoard on `host:port`."""
    # -P (Python 3.11+) keeps the current directory off sys.path, so a `tensorboard.py` there
    # (like this one, when run from scripts/) cannot shadow the real package.
    isolate = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *isolate, "-m", "tensorboard.main",
            "--logdir", str(Path(logdir).resolve()), "--host", host, "--port", str(port), *extra]


def get_json(url: str, timeout: float = 5.0):
    """GET `url` and parse JSON; None when the server is not answering (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
        return None


def wait_for_tags(base_url: str, plugins: tuple[str, ...] = ("scalars",), timeout: float = 90.0,
                  process=None) -> dict:
    """Poll `<base_url>/data/plugin/<plugin>/tags` until each plugin lists a tag.

    Returns {plugin: tags response}. Raises TimeoutError after `timeout` seconds, or
    RuntimeError at once when `process` (the server) has exited.

    Example:
        >>> wait_for_tags("http://127.0.0.1:6006", ("scalars", "images"))["images"]
        {'validation': {'confusion_matrix': {...}}, ...}
    """
    deadline = time.monotonic() + timeout
    found: dict = {}
    while True:
        for plugin in plugins:
            if plugin not in found:
                tags = get_json(f"{base_url.rstrip('/')}/data/plugin/{plugin}/tags")
                if tags and any(tags.values()):
                    found[plugin] = tags
        if len(found) == len(plugins):
            return found
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"TensorBoard exited with status {process.returncode}")
        if time.monotonic() > deadline:
            missing = ", ".join(p for p in plugins if p not in found)
            raise TimeoutError(f"TensorBoard at {base_url} showed no {missing} tags "
                               f"within {timeout:.0f} s")
        time.sleep(0.5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/tensorboard.py",
        description="Start TensorBoard on a log directory (bound to 127.0.0.1 by default).",
        epilog="Flags after `--` go to TensorBoard itself, e.g. -- --reload_interval 2",
    )
    parser.add_argument("logdir", nargs="?", default="logs",
                        help="a log directory or one run directory (default: logs)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to serve on (default: {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"interface to bind (default: {DEFAULT_HOST}, this machine only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if not Path(args.logdir).is_dir():
        print(f"error: {args.logdir} is not a directory", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"error: --port must be from 0 to 65535, got {args.port}", file=sys.stderr)
        return 2
    port = args.port or free_port(args.host)
    if args.host not in _LOOPBACK:
        print(f"warning: TensorBoard has no authentication; anyone who can reach "
              f"{args.host}:{port} can read these runs", file=sys.stderr)
    command = tensorboard_command(args.logdir, port, args.host, extra)
    print(f"TensorBoard on {Path(args.logdir).resolve()}: http://{args.host}:{port}/",
          file=sys.stderr, flush=True)
    if sys.version_info < (3, 11):
        os.chdir(Path(args.logdir).resolve())  # no -P before 3.11: leave scripts/ behind
    if os.name == "posix":
        # Become TensorBoard (same process id), so whoever started us can stop it directly.
        os.execv(command[0], command)
    import subprocess

    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
