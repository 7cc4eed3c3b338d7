"""The chaos run report (chaos/report.py): Markdown with the fault timeline, the
recovery table and the verdicts, and the throughput/latency plot it links."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from raft_ledger_chaos.checkers import CheckResult  # noqa: E402
from raft_ledger_chaos.history import pair_operations  # noqa: E402
from raft_ledger_chaos.report import PLOT_NAME, buckets, load_timeline, write_report  # noqa: E402

S = 1_000_000_000


def write_jsonl(path, records) -> str:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


def test_report_has_timeline_recovery_counts_and_verdicts(tmp_path):
    records = []
    t_ms = 0
    tid = 1
    # One ok transfer every 100 ms for 10 s, except while the leader is partitioned (3-5 s).
    while t_ms < 10_000:
        if not 3_000 <= t_ms < 5_000:
            value = {"id": tid, "from": 1, "to": 2, "amount": 1}
            records.append({"process": 0, "type": "invoke", "f": "transfer", "time_ns": t_ms * 1_000_000, "value": value})
            records.append({"process": 0, "type": "ok", "f": "transfer", "time_ns": (t_ms + 20) * 1_000_000, "value": {**value, "result": "ok"}})
            tid += 1
        t_ms += 100
    records.append({"process": 1, "type": "invoke", "f": "transfer", "time_ns": 3 * S, "value": {"id": tid, "from": 2, "to": 1, "amount": 1}})
    records.append({"process": 1, "type": "info", "f": "transfer", "time_ns": 5 * S, "value": {"id": tid, "from": 2, "to": 1, "amount": 1, "result": "unknown: Timeout"}})
    records.sort(key=lambda r: r["time_ns"])
    history = write_jsonl(tmp_path / "history.jsonl", [{"index": i, **r} for i, r in enumerate(records)])
    faults = write_jsonl(tmp_path / "faults.jsonl", [
        {"time_ns": 3 * S, "event": "start", "fault": "partition-leader", "targets": ["v1"], "detail": {"leader": "v1"}},
        {"time_ns": int(4.5 * S), "event": "end", "fault": "partition-leader", "targets": ["v1"], "detail": {"heal": True}},
        {"time_ns": 8 * S, "event": "start", "fault": "latency-jitter", "targets": ["v1", "v2", "v3"], "detail": {}},
    ])
    results = [CheckResult("read-totals", True, "all 3 ok reads sum to 300"),
               CheckResult("agreement", False, "chains of v1 and v2 diverge at height 2: aa | bb")]
    path = write_report(str(tmp_path), {"scenario": "partition-leader", "seed": 7, "duration_s": 10}, results, faults, history)

    text = open(path).read()
    assert "**Verdict: FAIL**" in text and "| seed | 7 |" in text
    assert "| 1 | partition-leader | v1 | 3.0 s | 4.5 s | 1.5 s | leader=v1 |" in text
    assert "| 2 | latency-jitter | v1, v2, v3 | 8.0 s | — | not healed |" in text
    # first ok transfer invoked after 3.0 s completes at 5.02 s; first one completed after the heal at 4.5 s too
    assert "| 1 | partition-leader | v1 | 2.02 s | 0.52 s | 1 |" in text
    assert "| transfer | 80 | 0 | 1 | 0 |" in text
    assert "| agreement | **FAIL** | chains of v1 and v2 diverge at height 2: aa \\| bb |" in text
    assert f"![throughput and latency]({PLOT_NAME})" in text
    assert (tmp_path / PLOT_NAME).stat().st_size > 10_000


def test_timeline_pairs_ends_and_heal_all(tmp_path):
    path = write_jsonl(tmp_path / "faults.jsonl", [
        {"time_ns": 1 * S, "event": "start", "fault": "kill-leader", "targets": ["v2"]},
        {"time_ns": 2 * S, "event": "start", "fault": "bandwidth", "targets": ["v1", "v3"]},
        {"time_ns": 3 * S, "event": "end", "fault": "kill-leader", "targets": ["v2"]},
        {"time_ns": 4 * S, "event": "end", "fault": "all"},
        {"fault": "pause-leader", "start_ns": 5 * S, "end_ns": 6 * S},
    ])
    got = [(f.name, f.target, f.start_s, f.end_s) for f in load_timeline(path)]
    assert got == [("kill-leader", "v2", 1.0, 3.0), ("bandwidth", "v1, v3", 2.0, 4.0), ("pause-leader", "", 5.0, 6.0)]


def test_latency_per_bucket_is_the_nearest_rank_percentile():
    # Bucket 0: ok transfers with latencies 1..100 ms; bucket 1: 10 ms and 20 ms.
    # Nearest rank (raft_ledger_node.stats.percentile, the benchmark's definition too):
    # p50 of 100 values is the 50th, p99 the 99th; of 2 values, the 1st and the 2nd.
    records = []
    for i, lat_ms in enumerate([*range(1, 101), 10, 20]):
        start_ms = 100 if i < 100 else 1_100 + i
        value = {"id": i + 1, "from": 1, "to": 2, "amount": 1}
        records.append({"process": i, "type": "invoke", "f": "transfer", "time_ns": start_ms * 1_000_000, "value": value})
        records.append({"process": i, "type": "ok", "f": "transfer", "time_ns": (start_ms + lat_ms) * 1_000_000, "value": value})
    data = buckets(pair_operations(records), end_s=2.0)
    assert data["p50"] == [50.0, 10.0]
    assert data["p99"] == [99.0, 20.0]
    assert data["tput"] == [100.0, 2.0]
