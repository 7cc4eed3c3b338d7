"""The bench's one-transfer-per-request phases (node/bench/ours.py + driver.py, issue 16)
on a real 3-validator mutual-TLS cluster: every caller thread shares one SDK
``LedgerClient`` and sends one transfer per ``create_transfers``; the phases at 1, 8
and 64 callers and at half load all commit every transfer, report their Raft entries,
and the conservation check over every validator holds. Small counts: it checks the
plumbing, not the speed."""
from __future__ import annotations

import pytest

from raft_ledger_node.bench import ours
from raft_ledger_node.bench.config import COUNT_FIELDS, BenchConfig
from raft_ledger_node.bench.workload import Workload

pytestmark = pytest.mark.integration


def test_one_transfer_per_request_through_one_shared_client(tmp_path):
    cfg = BenchConfig(**{**{k: 0 for k in COUNT_FIELDS}, "single_transfers": 256, "single_sweep_transfers": 24,
                         "single_half_load_transfers": 64}, accounts=200, base_port=51500, out_dir=str(tmp_path / "out"))
    res = ours.run(cfg, Workload.from_config(cfg), str(tmp_path))
    assert "peak" not in res and "half_load" not in res  # transfers=0: no batch phases
    phases = [*res["single_sweep"], res["single_peak"], res["single_half_load"]]
    assert [p["callers"] for p in phases] == [1, 8, 64, 64]
    assert [p["transfers_ok"] for p in phases] == [24, 24, 256, 64]
    for p in phases:
        assert p["batches_failed"] == 0 and p["transfers_rejected"] == 0 and p["transfers_per_request"] == 1
        assert p["latency"]["count"] == p["transfers"] and p["raft_entries"] >= 1
        # Each caller has one transfer in flight: an entry never holds more than the callers.
        assert 0 < p["transfers_per_entry"] <= p["callers"]
    assert res["single_half_load"]["offered_tps"] == pytest.approx(res["single_peak"]["transfers_per_s"] / 2)
    assert 0 <= res["idle_cpu_cores"] < 3  # three processes at most
    check = res["check"]
    assert check["same_head"] and check["balanced"], check
