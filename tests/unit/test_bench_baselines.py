"""Issue 16's bench additions that need no server: zero counts skip their part or
phase instead of crashing, the latency percentiles and tail ratio, the transfers a
shared client submits one per request, and the report's issue-16 targets.
(The PostgreSQL replication setup itself: tests/integration/test_bench_pg_sync.py.)"""
from __future__ import annotations

import json
import math
import random

import pytest

from raft_ledger_node.bench import bare_raft, postgres, report, runner
from raft_ledger_node.bench.config import COUNT_FIELDS, BenchConfig
from raft_ledger_node.bench.measure import latency_summary, tail_ratio
from raft_ledger_node.bench.ours import plan_single
from raft_ledger_node.bench.workload import Workload, owner_index

ZERO = {k: 0 for k in COUNT_FIELDS}


def test_a_run_with_every_count_zero_skips_every_part_and_still_writes_its_report(tmp_path):
    # Today's crash: `--raft-entries 0` divided by zero entries. Every part is skipped
    # before it starts anything, and the table, text and JSON are still written.
    res = runner.run(BenchConfig(out_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"), **ZERO))
    assert {p: res[p] for p in runner.PARTS} == {p: {"skipped": "count 0"} for p in runner.PARTS}
    [txt] = (tmp_path / "out").glob("bench-*.txt")
    assert "count 0" in txt.read_text() and "not run" in txt.read_text()
    [js] = (tmp_path / "out").glob("bench-*.json")
    assert json.loads(js.read_text())["raft"] == {"skipped": "count 0"}


def test_bare_raft_with_zero_entries_is_skipped_without_starting_replicas(tmp_path):
    cfg = BenchConfig(raft_entries=0)
    wl = Workload.from_config(cfg)
    assert bare_raft.run(cfg, wl, str(tmp_path)) == {"skipped": "count 0"}
    assert list(tmp_path.iterdir()) == []  # no replica directory: nothing was started


def test_negative_counts_are_refused():
    with pytest.raises(ValueError, match="raft_entries"):
        BenchConfig(raft_entries=-1)
    with pytest.raises(ValueError, match="single_concurrency"):
        BenchConfig(single_concurrency=0)


def test_zero_counts_leave_out_single_phases_and_half_load_needs_its_peak():
    plan, half = plan_single(BenchConfig())
    assert [(c, n) for _, c, n in plan] == [(1, 2_000), (8, 2_000), (64, 20_000)] and half == 10_000
    plan, half = plan_single(BenchConfig(single_sweep_transfers=0))
    assert [(c, n) for _, c, n in plan] == [(64, 20_000)] and half == 10_000
    plan, half = plan_single(BenchConfig(single_transfers=0))
    assert [(c, n) for _, c, n in plan] == [(1, 2_000), (8, 2_000)] and half == 0
    counts = BenchConfig(transfers=0, single_transfers=0, single_sweep_transfers=0, pg_transfers=0).part_counts()
    assert counts["ours"] == 0 and counts["postgres"] == BenchConfig().pg_single_transfers


def test_latency_summary_percentiles_and_tail_ratio_are_nearest_rank():
    # 1..100 ms: nearest rank gives the 50th and 99th smallest, and p99.9 of fewer than
    # 1,000 samples is the largest (ceil(0.999 * 100) = 100).
    xs = [i / 1000 for i in range(1, 101)]
    random.Random(5).shuffle(xs)
    s = latency_summary(xs)
    assert (s["p50_ms"], s["p99_ms"], s["p999_ms"]) == (50, 99, 100)
    assert s["p99_over_p50"] == pytest.approx(99 / 50)
    # One slow request in 1,000 moves p99.9 and the maximum, not p99.
    ys = [0.010] * 999 + [0.500]
    s = latency_summary(ys)
    assert (s["p50_ms"], s["p99_ms"], s["p999_ms"], s["max_ms"]) == (10, 10, 10, 500)
    assert s["p99_over_p50"] == 1.0
    # Eleven slow ones in 1,000 are more than 1 %: p99 is a slow one.
    zs = [0.010] * 989 + [0.050] * 11
    assert latency_summary(zs)["p99_over_p50"] == pytest.approx(5.0)


def test_latency_summary_of_nothing_is_nan_not_an_error():
    s = latency_summary([])
    assert s["count"] == 0 and all(math.isnan(s[k]) for k in ("p50_ms", "p99_ms", "p999_ms", "p99_over_p50"))
    assert math.isnan(tail_ratio(0.0, 3.0)) and tail_ratio(2.0, 5.0) == 2.5


def test_member_rows_debit_only_that_member_and_follow_the_batches_before_them():
    wl = Workload(accounts=1000, members=4, skew="uniform", zipf_exponent=1.1, batch=50, seed=1)
    rows = wl.member_rows(0, 10, 120)
    assert len(rows) == 120
    assert all(owner_index(dr, 4) == 0 for _, dr, _, _ in rows)  # member 0's client may debit them
    assert all(tid > 10 * 50 for tid, _, _, _ in rows)  # no id of batches 0..9
    assert len({tid for tid, _, _, _ in rows}) == 120
    # Batches 12, 16, 20 (member 0's from 10 on), in order.
    assert rows == [r for b in (12, 16, 20) for r in wl.batches(b, 1)[0].transfers][:120]
    with pytest.raises(ValueError):
        wl.member_rows(4, 0, 1)


def test_postgres_max_connections_fit_the_64_callers():
    cfg = BenchConfig()
    assert postgres.connections_max(cfg) >= cfg.single_concurrency + 1
    assert postgres.connections_max(BenchConfig(concurrency=100)) >= 101


def _phase(tps, p50, p99, cpu=50.0, callers=8, per_entry=None, **kw):
    lat = latency_summary([])
    lat.update(p50_ms=p50, p99_ms=p99, p999_ms=p99, p99_over_p50=p99 / p50)
    return dict(transfers_per_s=tps, latency=lat, cpu_us_per_transfer=cpu, transfers=1000, batches_failed=0, callers=callers,
                transfers_per_entry=per_entry, offered_tps=kw.get("offered_tps"), send_lag_p99_ms=None)


def _pg(tps, p50=2.0, p99=4.0, connections=64):
    lat = latency_summary([])
    lat.update(p50_ms=p50, p99_ms=p99, p999_ms=p99)
    return dict(transfers_per_s=tps, latency=lat, cpu_us_per_transfer=100.0, client_cpu_us_per_transfer=10.0, units_failed=0,
                connections=connections)


def test_report_shows_issue_16_targets_and_transfers_per_entry():
    res = {
        "config": {"skew": "uniform", "accounts": 10, "batch": 100, "concurrency": 8, "single_concurrency": 64},
        "machine": {"cpus": 2},
        "ours": {
            "peak": _phase(20_000, 40.0, 80.0, cpu=44.0, per_entry=158.0),
            "half_load": _phase(10_000, 10.0, 30.0, offered_tps=10_000),
            "single_sweep": [_phase(300, 3.0, 6.0, callers=1, per_entry=1.0), _phase(1_200, 6.0, 12.0, callers=8, per_entry=3.0)],
            "single_peak": _phase(12_000, 5.0, 9.0, callers=64, per_entry=40.0),
            "single_half_load": _phase(6_000, 4.0, 8.0, callers=64, per_entry=20.0, offered_tps=6_000),
            "idle_cpu_cores": 0.12,
        },
        "postgres": {"version": "15.1", "batch": _pg(9_000, connections=8), "single": _pg(3_000)},
        "pg_sync": {"synchronous_standby_names": "ANY 1 (s1, s2)", "batch": _pg(10_000, connections=8), "single": _pg(2_000)},
        **{p: {"skipped": "x"} for p in ("raft", "crypto", "history", "proofs", "membership")},
    }
    assert [(value, ok) for _, value, ok in report.targets16(res)] == [
        ("4.00×", True),  # 1/request × 64 vs PostgreSQL txn per transfer: 12,000 / 3,000
        ("0.60×", True),  # 1/request × 64 vs our batches: 12,000 / 20,000
        ("2.22×", True),  # batches vs PostgreSQL txn per batch: 20,000 / 9,000
        ("2.00×", True),  # batches vs PostgreSQL sync-rep txn per batch: 20,000 / 10,000
        ("44.0 µs", True),
        ("3.00 (30.0 / 10.0 ms)", False),  # p99/p50 at ½ peak, batches
        ("2.00 (8.0 / 4.0 ms)", True),  # p99/p50 at ½ peak, 1/request
    ]
    assert "sync-rep" in report.targets16(res)[3][0]
    assert report.transfers_per_entry(res) == {"1/request × 1 caller": 1.0, "1/request × 8 callers": 3.0,
                                               "1/request × 64 callers": 40.0, "1/request at ½ peak": 20.0,
                                               "batches of 100 × 8": 158.0}
    main = report.tables(res)[0]
    names = list(main.columns[0].cells)
    assert "ours: 1 transfer/request, 64 callers, 1 shared client" in names
    assert any(n.startswith("PostgreSQL sync-rep ANY 1 (s1, s2), SQL txn per batch") for n in names)
    # "ours ÷ this" of PostgreSQL's transaction per transfer is against ours one per request.
    ratios = dict(zip(names, main.columns[[c.header for c in main.columns].index("ours ÷ this")].cells))
    assert ratios["PostgreSQL, SQL txn per transfer, 64 connections"] == "4×"
    assert ratios["PostgreSQL 15.1, SQL txn per batch"] == "2.22×"
    assert "64 callers 40.0" in main.caption and "idle validators use 0.12 cores" in main.caption


def test_report_says_not_run_for_every_issue_16_target_of_an_empty_run():
    res = {"config": {"skew": "uniform", "accounts": 10, "batch": 100, "concurrency": 8}, "machine": {"cpus": 2}}
    assert all(ok is None and value.startswith("not run") for _, value, ok in report.targets16(res))


def test_postgres_per_transfer_phase_runs_the_transfers_our_one_per_request_phases_submit():
    cfg = BenchConfig()
    # Ours: 1,000 batches at peak + 600 at half load, then member 0's transfers from batch 1,600.
    assert cfg.ours_batches() == 1_600
    assert BenchConfig(transfers=0).ours_batches() == 0  # no peak, no half load either
    assert BenchConfig(transfers=150, half_load_transfers=1).ours_batches() == 3
