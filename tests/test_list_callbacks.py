"""`python -m digits.callbacks`: every registered callback, where it comes from, what it does."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from callbacks.registry import DEFAULT_NAMES, describe, registered
from digits.callbacks import print_callbacks, registered_callbacks

ROOT = Path(__file__).resolve().parents[1]


def run_python(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=300)


def test_the_list_names_every_built_in_with_its_source_and_summary():
    done = run_python("-m", "digits.callbacks", NO_COLOR="1")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["name", "from", "description"]
    rows = {line.split()[0]: line for line in lines[1:]}
    for name in (*DEFAULT_NAMES, "early_stopping"):
        entry = registered()[name]
        assert f"digits ({entry.value})" in rows[name]
        # Read from the source without importing, it is the docstring's first line all the same.
        assert rows[name].endswith(describe(entry.load()))


def test_listing_does_not_import_tensorflow():
    done = run_python("-c", "import sys, digits.callbacks as c; c.main([]); "
                            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False False"


def test_a_terminal_gets_a_table(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    print_callbacks(console)
    out = console.file.getvalue()
    assert "\x1b[" in out and "╭" in out
    for row in registered_callbacks():
        assert row.name in out and row.target in out
