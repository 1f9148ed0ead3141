"""`python -m digits.callbacks`: every registered callback, where it comes from, what it does."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from digits.callbacks.listing import print_callbacks, registered_callbacks
from digits.callbacks.registry import DEFAULT_NAMES, describe, registered

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
    done = run_python("-c", "import sys, digits.callbacks.listing as c; c.main([]); "
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


COUNTER = "tests.test_resume:EpochCounter"  # a plugin is named by its spec


def test_hooks_show_every_moment_of_a_run_and_who_acts_in_it(capsys):
    """`python -m digits.callbacks --hooks`: a plugin author's first question, answered."""
    from digits.callbacks import listing

    assert listing.main(["--hooks", "--callback", "tests.test_resume:EpochCounter",
                         "--callbacks", "early_stopping"]) == 0
    out = capsys.readouterr().out
    order = out.splitlines()[0]
    assert order.startswith("callbacks, in the order they run: ") and order.endswith("checkpoint")
    rows = {}
    moment = None
    for line in out.splitlines()[1:]:
        if line and not line.startswith("  "):
            moment = line
        elif line.strip():
            hook, _, acting = line.strip().partition("  ")
            rows[(moment, hook)] = [a.strip() for a in acting.strip().split(",")]
    epoch_end = rows[("each epoch ends (then the run's state is saved)", "on_epoch_end")]
    assert COUNTER in epoch_end and epoch_end[-1] == "checkpoint"
    assert epoch_end.index("early_stopping") < epoch_end.index("checkpoint")
    assert rows[("each epoch ends (then the run's state is saved)", "state_dict")] == [
        COUNTER, "early_stopping", "checkpoint"]
    assert COUNTER in rows[("fit ends", "on_fit_end")]
    assert rows[("a resumed run, before fit starts", "load_state_dict")] == [
        COUNTER, "early_stopping", "checkpoint"]
    assert "rich_report" in rows[("test", "on_test_end")]
    assert ("each validation pass", "on_evaluate_end") in rows


def test_an_epochs_end_is_listed_as_the_fit_loop_runs_it(capsys):
    """`--hooks` shows the fit loop's own steps at an epoch's end, in `EPOCH_END`'s order."""
    from digits.callbacks import listing
    from digits.engine.loop import EPOCH_END

    assert listing.main(["--hooks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("each epoch ends (then the run's state is saved)") + 1
    shown = [line.split()[0] if not line.startswith("  ") else line.strip().partition("  ")[0]
             for line in lines[start:start + len(EPOCH_END)]]
    assert shown == [step for step, _ in EPOCH_END]
