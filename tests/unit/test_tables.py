"""Tables of the CLI and the demo (node/tables.py) keep every digit of a balance or index."""
from __future__ import annotations

import io
import re

from rich.console import Console

from raft_ledger_node.tables import print_table, table, totals_table

BIG = f"{2_512_345_678_901:,}"


def _totals():
    t = table(("validator", "ledger", "debits posted", "credits posted", "balanced", "head height", "head hash"))
    t.add_row("127.0.0.1:7101", "840", BIG, BIG, "yes", "1234567", "0123456789abcdef")
    return t


def test_a_narrow_terminal_prints_each_row_vertically_with_every_number_whole(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    print_table(_totals(), Console(file=out, width=60, force_terminal=True, color_system=None))
    text = out.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 60
    lines = [line for line in text.splitlines() if "debits posted" in line]
    assert len(lines) == 1 and BIG in lines[0]


def test_a_wide_terminal_keeps_the_table_as_is(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    print_table(_totals(), Console(file=out, width=200, force_terminal=True, color_system=None))
    rows = [line for line in out.getvalue().splitlines() if line.startswith("│")]
    assert len(rows) == 1 and rows[0].count(BIG) == 2


def test_a_pipe_gets_the_natural_width(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    print_table(totals_table([("127.0.0.1:7101", "840", BIG, BIG, "yes", "1234567", "0123456789abcdef")]),
                Console(file=out, width=60))
    rows = [line for line in out.getvalue().splitlines() if line.startswith("│")]
    assert len(rows) == 1 and BIG in rows[0] and "127.0.0.1:7101" in rows[0]
    assert not re.search(r"\d…", out.getvalue())
