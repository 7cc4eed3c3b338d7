"""The demo's tables (the per-ledger totals of node/workload.py and the status table of
`ledger-validator status`) in an 80-column terminal and an 80-column log file: every
amount, index, height and hash prefix appears whole, on one line (issue 14: the totals
were cut to ``250,323,…``)."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.cli.operator import status_table
from raft_ledger_node.tables import print_table, totals_table

#: Per-ledger totals as the demo prints them (minor units, thousands separators), up to u128 max.
AMOUNTS = [f"{n:,}" for n in (250_323_417, 13_039_042_118, 2**64 + 12_345, 2**128 - 1)]
HASH = "0123456789abcdef"


def _totals():
    rows = []
    for i, v in enumerate(("127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103")):
        for lg, amount in zip((840, 978), (AMOUNTS[i % 4], AMOUNTS[(i + 1) % 4 if i < 2 else 3])):
            rows.append((v, str(lg), amount, amount, "yes", "1048577", HASH))
    return totals_table(rows), [c for r in rows for c in r]


def _status():
    header = pb.BlockHeader(height=1_048_577, hash=bytes.fromhex(HASH) + bytes(24))
    rows = []
    numbers = []
    for i in range(1, 4):
        st = pb.GetStatusResponse(validator_id=f"v{i}", role="leader" if i == 1 else "follower", term=12_345_678,
                                  commit_index=98_765_432_100 + i, applied_index=98_765_432_000 + i, head=header,
                                  ready=True, membership="voter")
        rows.append((SimpleNamespace(id=f"v{i}", grpc_address=f"127.0.0.1:710{i}"), st))
        numbers += [str(st.term), str(st.commit_index), str(st.applied_index), "100", str(header.height), HASH]
    return status_table("data/demo", rows), numbers


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log-file"])
@pytest.mark.parametrize("build", [_totals, _status], ids=["totals", "status"])
def test_every_full_number_appears_in_80_columns(build, terminal, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    t, cells = build()
    out = io.StringIO()
    print_table(t, Console(file=out, width=80, force_terminal=terminal, color_system=None))
    text = out.getvalue()
    lines = text.splitlines()
    for cell in cells:
        assert any(cell in line for line in lines), f"{cell!r} is not whole on any line:\n{text}"
    assert "…" not in text
    if terminal:
        assert max(len(line) for line in lines) <= 80, text


def test_a_down_validator_row_says_down():
    import grpc

    class Down(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

    rows = [(SimpleNamespace(id="v9", grpc_address="127.0.0.1:7109"), Down())]
    out = io.StringIO()
    print_table(status_table("c", rows), Console(file=out, width=80, force_terminal=True, color_system=None))
    assert "down (UNAVAILABLE)" in out.getvalue()
