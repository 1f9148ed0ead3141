"""The console every built-in rich callback writes to, and when it must stay plain text.

Output is plain, one line per event, with no ANSI codes and no live progress bars, when stdout
is not a terminal (CI logs, pipes, files), when `NO_COLOR` is set (https://no-color.org), or on
a dumb terminal. Anywhere else, or when `FORCE_COLOR` is set, it is rich: colour, tables and
live progress.
"""

from __future__ import annotations

import os
import sys
from typing import IO

from rich import box
from rich.console import Console


def make_console(file: IO[str] | None = None, stderr: bool = False) -> Console:
    """A rich Console on stdout (or `file`, or stderr), plain when it cannot be rich.

    Args:
        file: where to write (default: the current `sys.stdout`, looked up at each write so
            that redirections made later still apply).
        stderr: write to stderr instead of stdout (default False).

    Example:
        >>> console = make_console()
        >>> console.print("[bold]ready[/]")
    """
    stream = file or (sys.stderr if stderr else sys.stdout)
    if _wants_plain(stream):
        # color_system=None with force_terminal=False: no escape sequence of any kind.
        return Console(file=file, stderr=stderr, force_terminal=False, color_system=None,
                       no_color=True, highlight=False, emoji=False, markup=True)
    return Console(file=file, stderr=stderr)


def is_plain(console: Console) -> bool:
    """True when `console` should get plain lines rather than colour and live displays."""
    return (not console.is_terminal or console.is_dumb_terminal or console.no_color
            or console.color_system is None)


def table_box(console: Console) -> box.Box | None:
    """Box drawing for tables: rounded on a terminal, ASCII rules in plain logs."""
    return box.ASCII2 if is_plain(console) else box.ROUNDED


def _wants_plain(stream) -> bool:
    if os.environ.get("NO_COLOR"):
        return True
    if os.environ.get("TERM", "") == "dumb":
        return True
    if os.environ.get("FORCE_COLOR"):
        return False
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True
