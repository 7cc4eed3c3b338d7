"""The clock checker (chaos/checkers.py ``check_clock``) and the clock stepper (chaos/clock.py).

The checker's final states are built as collect_final_state reports them: block
timestamps per validator, the workload's pending transfers (id, timestamp ns, timeout
s, amount) and the escrow account's balance history ([timestamp, credits_pending]).
The stepper's test runs a real Python process with the clock shim.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from raft_ledger_chaos.checkers import check_clock
from raft_ledger_chaos.clock import CONTROL_FILE, JUMP_S, SHIM, SHIM_DIR, jump_seconds, write_offset

S = 1_000_000_000


def _validator(timestamps, transfers, credits_pending, credits_posted=0):
    return {"head": {"height": len(timestamps), "hash": "00"}, "chain": ["00"] * len(timestamps),
            "balances": {}, "transfers_present": [], "timestamps": list(timestamps),
            "pending": {"transfers": list(transfers),
                        "escrow": {"credits_pending": credits_pending, "credits_posted": credits_posted}}}


def _chain():
    """Blocks at 10 s, 11 s, 14 s, 20 s; pending 1 (amount 1, created in block 1, timeout 2 s:
    expires by 14 s, block 3), 2 (amount 2, block 2, timeout 4 s: by 20 s, block 4),
    3 (amount 3, block 4, timeout 1 s: still pending)."""
    ts = [10 * S, 11 * S, 14 * S, 20 * S]
    transfers = [{"id": 1, "timestamp": 10 * S - 1, "timeout": 2, "amount": 1},
                 {"id": 2, "timestamp": 11 * S - 1, "timeout": 4, "amount": 2},
                 {"id": 3, "timestamp": 20 * S - 1, "timeout": 1, "amount": 3}]
    return ts, transfers, 3  # only transfer 3 (amount 3) still pending


def test_clock_passes_when_every_validator_expires_by_the_rule():
    ts, tr, hist = _chain()
    state = {"validators": {v: _validator(ts, tr, hist) for v in ("v1", "v2", "v3")}, "read_at_ns": 19 * S}
    r = check_clock(state)
    assert r.passed is True, r.evidence
    assert r.details["validators"]["v1"] == {"blocks": 4, "min_step_ns": 1 * S, "max_step_s": 6.0, "pending_created": 3,
                                             "expired": 2, "expiry_blocks": 2, "still_pending": 1, "chain_ahead_s": 1.0}
    assert r.details["expiries"]["v2"] == {"3": [1], "4": [2]}
    assert "2 of 3 pending transfers expired in 2 blocks" in r.evidence


def test_clock_fails_on_a_timestamp_that_does_not_increase():
    ts, tr, hist = _chain()
    bad = [ts[0], ts[1], ts[1], ts[3]]
    state = {"validators": {"v1": _validator(ts, tr, hist), "v2": _validator(bad, tr, hist)}}
    r = check_clock(state)
    assert r.passed is False
    assert "v2: block timestamps do not strictly increase at height(s) 3" in r.evidence


def test_clock_fails_when_a_validator_did_not_release_an_expired_transfer():
    ts, tr, hist = _chain()
    state = {"validators": {"v1": _validator(ts, tr, hist), "v2": _validator(ts, tr, hist + 2),
                            "v3": _validator(ts, tr, hist, credits_posted=1)}}
    r = check_clock(state)
    assert r.passed is False
    assert ("v2: escrow holds credits_pending 5 / posted 0, but the 1 transfers not expired by its last block sum to 3"
            in r.evidence)
    assert "v3: escrow holds credits_pending 3 / posted 1" in r.evidence
    assert "v1:" not in r.evidence


def test_clock_fails_when_validators_disagree_on_a_transfers_deadline():
    ts, tr, hist = _chain()
    other = [dict(t, timeout=7) if t["id"] == 1 else t for t in tr]  # would expire by 20 s: block 4
    state = {"validators": {"v1": _validator(ts, tr, hist), "v2": _validator(ts, other, hist)}}
    r = check_clock(state)
    assert r.passed is False
    assert "v1 and v2 expire different pending transfers in block(s) [3, 4]" in r.evidence


def test_clock_is_undecided_without_timestamps():
    r = check_clock({"validators": {"v1": {"head": {}, "chain": []}}})
    assert r.passed is None


def test_jump_seconds_spans_minutes_to_hours_both_ways():
    assert jump_seconds(0.1, 0.0) == -int(JUMP_S[0])
    assert jump_seconds(0.9, 0.0) == int(JUMP_S[0])
    assert jump_seconds(0.9, 0.999999) == pytest.approx(JUMP_S[1], rel=1e-4)
    assert 60 < jump_seconds(0.7, 0.5) < 4 * 3600


def test_the_shim_steps_the_wall_clock_of_a_process_and_leaves_monotonic_alone(tmp_path):
    """A real Python process started as ClockLocalCluster starts a validator (PYTHONPATH to the
    shim, LEDGER_CHAOS_CLOCK_FILE): its wall clock follows the offset file, rewritten while
    it runs; its monotonic clock and time.sleep are untouched."""
    shim_dir = tmp_path / SHIM_DIR
    shim_dir.mkdir()
    (shim_dir / "sitecustomize.py").write_text(SHIM)
    control = str(tmp_path / CONTROL_FILE)
    write_offset(control, -3600)
    script = ("import json,sys,time\n"
              "def now(): return {'wall': time.time(), 'wall_ns': time.time_ns(), 'mono': time.monotonic()}\n"
              "print(json.dumps(now()), flush=True); sys.stdin.readline(); time.sleep(0.05)\n"
              "print(json.dumps(now()), flush=True)\n")
    env = dict(os.environ, PYTHONPATH=str(shim_dir), LEDGER_CHAOS_CLOCK_FILE=control)
    p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    try:
        first = json.loads(p.stdout.readline())
        true_1 = time.time()
        write_offset(control, 7200)
        p.stdin.write("\n")
        p.stdin.flush()
        second = json.loads(p.stdout.readline())
        true_2 = time.time()
    finally:
        p.wait(10)
    assert first["wall"] - true_1 == pytest.approx(-3600, abs=5)
    assert first["wall_ns"] / 1e9 - true_1 == pytest.approx(-3600, abs=5)
    assert second["wall"] - true_2 == pytest.approx(7200, abs=5)
    assert 0.05 <= second["mono"] - first["mono"] < 5  # untouched by the 3 h step
    assert open(control).read() == "+7200\n"
