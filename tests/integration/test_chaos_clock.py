"""The clock-jump chaos scenario, end to end: a real 3-validator mutual-TLS cluster behind
Toxiproxy, the leader's wall clock stepped back and forward by the chaos clock shim
(chaos/clock.py) under the bank workload with short-timeout pending transfers, every
checker run on the real history and final state.

Seed 6 draws a 60 s backward step then a 267 s forward step (and a third, 173 s, window
past a 25 s run): the forward one must move block time ahead of real time, and the
clock checker must still find every chain's timestamps strictly increasing and every
pending transfer voided by timeout in the same block everywhere, as the rule says.
"""
from __future__ import annotations

import json
import os

import pytest

from raft_ledger_chaos import toxi

pytestmark = pytest.mark.integration

DURATION_S = float(os.environ.get("CHAOS_CLOCK_DURATION_S", "25"))


@pytest.mark.skipif(toxi.find_binary() is None, reason="toxiproxy-server not installed: run `bash deploy/local/setup.sh` (needs Go)")
def test_clock_jump_keeps_block_time_monotonic_and_expiry_identical(tmp_path):
    from raft_ledger_chaos.checkers import check_clock
    from raft_ledger_chaos.cli import run_scenario

    outcome: dict = {}
    ok = run_scenario("clock-jump", seed=6, duration_s=DURATION_S, out=str(tmp_path), unsafe=False, concurrency=3,
                      base_port=39400, outcome=outcome)
    assert ok, f"a checker failed: {outcome.get('evidence')}; see {outcome.get('report')}"
    assert outcome["checks"]["clock"] is True
    run_dir = outcome["run_dir"]
    with open(os.path.join(run_dir, "faults.jsonl")) as f:
        starts = [json.loads(line) for line in f if '"start"' in line]
    offsets = [e["detail"]["offset_s"] for e in starts]
    assert offsets[:2] == [-60, 267], offsets
    with open(os.path.join(run_dir, "final_state.json")) as f:
        state = json.load(f)
    clock = check_clock(state)
    rows = clock.details["validators"]
    assert len(rows) == 3 and len({json.dumps(r, sort_keys=True) for r in rows.values()}) == 1, rows
    row = next(iter(rows.values()))
    # The forward step reached the chain: one block is > 4 min after the previous one, and
    # the last block is still ahead of real time (block time never steps back).
    assert row["max_step_s"] > 240 and row["chain_ahead_s"] > 200, row
    assert row["min_step_ns"] >= 1
    assert row["pending_created"] > 10 and row["expired"] > 0, row
    assert state["validators"]["v1"]["pending"]["escrow"]["credits_posted"] == 0
