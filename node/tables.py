"""Rich tables that never lose a digit: for the operator CLI and the demo workload.

Rich fits a table to the console width and, by default, cuts what does not fit with
an ellipsis (``250,323,…`` for 250,323,417): a balance or an index shown that way is
wrong, not just ugly. So:

* on a terminal (or with ``COLUMNS`` set), a table that fits is printed as is; one
  wider than the console switches to a **vertical layout**: one block per row, one
  ``column │ value`` line per cell, so every amount, id and hash is printed whole on
  one line (an 80-column terminal holds a 128-bit amount with its separators, 51
  characters, next to a 20-character column name);
* output that goes to a pipe or a file (no terminal to fit, e.g. ``demo.sh | tee``) is
  printed at the table's natural width, at most :data:`TABLE_WIDTH_MAX`, and
  vertically beyond it;
* every cell still folds (``overflow="fold"``) rather than being cut, the last resort
  for a value wider than the whole console.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

from rich.console import Console
from rich.table import Table

#: Widest line printed to a pipe or file; a wider table is printed vertically.
TABLE_WIDTH_MAX = 400

__all__ = ["TABLE_WIDTH_MAX", "print_table", "table", "totals_table", "vertical"]


def table(columns: Iterable[str], title: str | None = None) -> Table:
    """A Table with one folding column per name."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def totals_table(rows: Sequence[Sequence[str]]) -> Table:
    """The demo's per-ledger totals on each validator (workload): rows of (validator,
    ledger, debits posted, credits posted, balanced, head height, head hash)."""
    t = table(("validator", "ledger", "debits posted", "credits posted", "balanced", "head height", "head hash"),
              title="per-ledger totals on each validator (minor units; every account verified against "
                    "that validator's certified state root)")
    for r in rows:
        t.add_row(*r)
    return t


def vertical(t: Table) -> Table:
    """``t`` turned on its side: one section per row of ``t``, one (column name, cell)
    line per column, with ``t``'s title and caption. The names never wrap; the values
    fold only when wider than the console."""
    v = Table(title=t.title, caption=t.caption, show_header=False)
    v.add_column("field", no_wrap=True, style="bold")
    v.add_column("value", overflow="fold")
    columns = list(t.columns)
    cells = [list(c.cells) for c in columns]
    rows = max((len(c) for c in cells), default=0)
    for i in range(rows):
        for j, c in enumerate(columns):
            v.add_row(str(c.header), cells[j][i] if i < len(cells[j]) else "", end_section=j == len(columns) - 1)
    return v


def _natural_width(t: Table) -> int:
    return Console(width=TABLE_WIDTH_MAX * 4).measure(t).maximum


def print_table(t: Table, console: Console | None = None) -> None:
    """Print ``t`` on ``console`` (default: stdout) without cutting a cell: as is when
    it fits, else vertically (module docstring). A pipe or file gets up to
    TABLE_WIDTH_MAX columns unless ``COLUMNS`` says otherwise."""
    console = console or Console()
    natural = _natural_width(t)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        width = max(console.width, min(natural, TABLE_WIDTH_MAX))
        plain = Console(file=console.file, width=width, color_system=None)
        plain.print(t if natural <= width else vertical(t))
        return
    console.print(t if natural <= console.width else vertical(t))
