"""Console callbacks: progress, model summary and test report, rich on a terminal, plain in logs."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from digits.callbacks.console import is_plain, make_console
from digits.callbacks.rich_progress import RichProgress
from digits.callbacks.rich_report import print_report, render_report, report_text
from digits.callbacks.rich_summary import RichSummary
from digits.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
ESCAPE = "\x1b"
EPOCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+)  loss \d+\.\d{4}  accuracy \d\.\d{4}  val_loss \d+\.\d{4}  "
    r"val_accuracy \d\.\d{4}(  learning_rate \S+)?  \d+\.\ds$"
)


class TerminalLikeIO(io.StringIO):
    """What a terminal looks like to code that asks: a stream whose `isatty()` is true."""

    def isatty(self) -> bool:
        return True


def terminal_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=120)


@pytest.fixture
def colour_allowed(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


@pytest.fixture
def short_tmp():
    """A directory with a short path, so that the summary prints the run directory on one
    line at 100 columns (pytest's own, under xdist, is longer than that)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="ci-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_ci_log_gets_one_plain_line_per_epoch_a_summary_and_a_report(short_tmp):
    # stdout is a pipe here, as in CI: the default console must not draw bars or colour.
    tmp_path = short_tmp
    script = textwrap.dedent(f"""
        from digits.callbacks.registry import create
        from digits.data import Dataset, load_dataset
        from digits.engine.trainer import Trainer

        full = load_dataset("mnist-5k")
        data = Dataset(full.train.take(512), full.val.take(256), full.test.take(256),
                       "mnist-5k-small", "a slice of the embedded digits")
        names = ["rich_summary", "rich_progress", "lr_monitor", "rich_report"]
        trainer = Trainer(max_epochs=2, callbacks=[create(n) for n in names],
                          log_dir={str(tmp_path)!r}, name="ci", verbose=False)
        model = trainer.build_model("mlp", hidden_units=32)
        trainer.fit(model, data)
        trainer.test(model, data)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", TERM="xterm-256color", COLUMNS="100")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert ESCAPE not in out

    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [EPOCH_LINE.match(line).group(1, 2) for line in epoch_lines] == [("1", "2"), ("2", "2")]
    assert all("learning_rate 0.002" in line or "learning_rate 0.001" in line
               for line in epoch_lines)
    # The summary: layers, totals, the run directory, split sizes.
    assert "model mlp" in out and "Dense" in out and "non-trainable" in out
    assert str(tmp_path / "ci" / "version_0") in out
    assert "train 512  val 256  test 256" in out
    # The report, as text, after the epochs.
    assert out.index("test accuracy") > out.index(epoch_lines[-1])
    assert "macro avg" in out and "confusion matrix" in out and "true\\pred" in out


def test_a_terminal_gets_live_bars_tables_and_keeps_the_epoch_lines(tmp_path, small_data,
                                                                   colour_allowed):
    console = terminal_console()

    class Watched(RichProgress):
        """Notes the batch bar's position each time the step counter moves it."""

        moves: list = []

        def _step_done(self, count):
            super()._step_done(count)
            self.moves.append(self._progress.tasks[1].completed)

    trainer = Trainer(max_epochs=2, callbacks=[RichSummary(console=console),
                                               Watched(console=console)],
                      log_dir=tmp_path, verbose=False, batch_size=32, steps_per_execution=4)
    trainer.fit(trainer.build_model("mlp", hidden_units=32), small_data)
    # 16 batches an epoch in calls of 4: the bar still moved one batch at a time.
    assert Watched.moves == list(range(1, 17)) * 2

    out = console.file.getvalue()
    assert ESCAPE in out
    assert "╭" in out and "model mlp" in out  # the summary is a boxed table
    assert "━" in out and "eta" in out  # progress bars were drawn
    visible = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert re.search(r"epoch 1/2  loss \d\.\d{4}  accuracy", visible)
    assert re.search(r"epoch 2/2  loss .*val_accuracy \d\.\d{4}", visible)


def test_no_color_makes_even_a_terminal_plain(monkeypatch, centroid_result):
    monkeypatch.setenv("NO_COLOR", "1")
    tty = TerminalLikeIO()
    console = make_console(file=tty)
    assert is_plain(console)
    # A console the user built for a terminal is plain under NO_COLOR too.
    assert is_plain(Console(file=TerminalLikeIO(), force_terminal=True))

    print_report(centroid_result, console)
    out = tty.getvalue()
    assert ESCAPE not in out and "╭" not in out
    assert out.strip() == report_text(centroid_result).strip()


def test_a_terminal_without_no_color_is_rich(colour_allowed):
    assert not is_plain(make_console(file=TerminalLikeIO()))
    assert is_plain(make_console(file=io.StringIO()))


def test_the_report_shades_the_confusion_matrix_by_row_share(centroid_result, colour_allowed):
    console = terminal_console()
    print_report(centroid_result, console, title="digits")
    out = console.file.getvalue()
    visible = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert f"digits accuracy {centroid_result.accuracy:.4f}" in visible
    for name in ("precision", "recall", "f1-score", "macro avg", "weighted avg"):
        assert name in visible
    # Diagonal cells on green backgrounds, errors on red ones (24-bit background codes).
    assert re.search(r"48;2;0;\d+;0m", out)
    assert re.search(r"48;2;\d+;0;0m", out)
    # Every count of the matrix is printed.
    assert str(centroid_result.confusion_matrix[3, 3]) in visible
    # The same renderable is what a CLI prints.
    again = terminal_console()
    again.print(render_report(centroid_result, title="digits"))
    assert again.file.getvalue() == out


def test_plain_report_lists_every_class_and_the_matrix(centroid_result):
    text = report_text(centroid_result)
    lines = text.splitlines()
    assert lines[0].startswith(f"test accuracy {centroid_result.accuracy:.4f}")
    assert lines[-11].split() == ["true\\pred", *(str(k) for k in range(10))]
    for k, row in enumerate(lines[-10:]):
        assert [int(v) for v in row.split()[1:]] == centroid_result.confusion_matrix[k].tolist()
