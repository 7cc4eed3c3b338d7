"""Rich tables that never lose a digit: for the operator CLI and the demo workload.

Rich fits a table to the console width and, by default, cuts what does not fit with
an ellipsis (``13,039,0…`` for 13,039,042): a balance or an index shown that way is
wrong, not just ugly. So every cell folds onto more lines instead, and output that
goes to a pipe or a file (no terminal to fit, e.g. ``demo.sh | tee``) is printed at
the table's natural width unless ``COLUMNS`` says otherwise.
"""
from __future__ import annotations

import os
from typing import Iterable

from rich.console import Console
from rich.table import Table

#: Widest line printed to a pipe or file; a wider table folds its cells.
TABLE_WIDTH_MAX = 400


def table(columns: Iterable[str], title: str | None = None) -> Table:
    """A Table with one folding column per name."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def print_table(t: Table, console: Console | None = None) -> None:
    """Print ``t`` on ``console`` (default: stdout), at its natural width when not on a terminal."""
    console = console or Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        natural = Console(width=TABLE_WIDTH_MAX).measure(t).maximum
        Console(file=console.file, width=max(console.width, natural), color_system=None).print(t)
        return
    console.print(t)
