"""The benchmark's pure parts (node/bench, issue 5): the workload every part runs,
percentiles, the profile summary and the report. The measured parts start processes
and are run by `ledger-validator bench`, not by tests."""
from __future__ import annotations

import collections
import random

import pytest

from raft_ledger_node.bench import postgres, profiler, report
from raft_ledger_node.bench.config import BenchConfig
from raft_ledger_node.bench.measure import latency_summary
from raft_ledger_node.bench.workload import Workload, owner_index


def _wl(skew="uniform", seed=1, accounts=1000, members=4, batch=50):
    return Workload(accounts=accounts, members=members, skew=skew, zipf_exponent=1.1, batch=batch, seed=seed)


def test_workload_is_deterministic_given_the_seed():
    assert _wl().batches(0, 20) == _wl().batches(0, 20)
    assert _wl(seed=2).batches(0, 20) != _wl().batches(0, 20)


def test_every_transfer_debits_an_account_of_the_signing_member_and_ids_are_dense():
    wl = _wl()
    ids = []
    for b in wl.batches(0, 40):
        assert len(b.transfers) == wl.batch
        for tid, dr, cr, amount in b.transfers:
            # The node rejects a debit of an account the signer does not own (debit_account_not_owned).
            assert owner_index(dr, wl.members) == b.member
            assert dr != cr and 1 <= dr <= wl.accounts and 1 <= cr <= wl.accounts and amount > 0
            ids.append(tid)
    assert ids == list(range(1, len(ids) + 1))


def test_zipf_makes_the_lowest_ids_hot():
    counts = collections.Counter(cr for b in _wl("zipf").batches(0, 100) for _, _, cr, _ in b.transfers)
    assert counts.most_common(1)[0][0] == 1
    uniform = collections.Counter(cr for b in _wl().batches(0, 100) for _, _, cr, _ in b.transfers)
    assert counts[1] > 10 * uniform[1]


def test_latency_summary_uses_nearest_rank_percentiles():
    # 1..1000 ms shuffled: nearest rank (raft_ledger_node.stats.percentile) picks the 500th,
    # 990th and 999th smallest values, each one that was measured.
    xs = [i / 1000 for i in range(1, 1001)]
    random.Random(3).shuffle(xs)
    s = latency_summary(xs)
    assert s["count"] == 1000
    assert (s["p50_ms"], s["p99_ms"], s["p999_ms"], s["max_ms"]) == (500, 990, 999, 1000)
    assert s["mean_ms"] == pytest.approx(500.5)


def test_profile_summary_counts_self_and_inclusive(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "process 1:python;thread (0x1);run (threading.py:1);apply (node/ledger/apply.py:10) 3\n"
        "process 1:python;thread (0x1);run (threading.py:1);commit (node/store.py:20) 1\n"
    )
    s = profiler.summarize(str(raw))
    assert s["samples"] == 4
    assert dict(s["self"])["apply (node/ledger/apply.py)"] == 0.75
    assert dict(s["inclusive"])["run (threading.py)"] == 1.0


def test_report_renders_with_skipped_and_failed_parts():
    res = {
        "config": {"skew": "uniform", "accounts": 10, "batch": 100, "concurrency": 8},
        "machine": {"cpus": 2},
        "ours": {"error": "RuntimeError: boom"},
        "raft": {"skipped": "--skip-raft"},
        "crypto": {"cores": 2, "rates": {"cryptography 200B": {"bytes": 200, "verifies_per_s_1_thread": 9000.0, "verifies_per_s_all_cores": 18000.0}}},
        "postgres": {"skipped": f"PostgreSQL binaries not found; install: {postgres.APT_HINT}"},
        "history": {"block_transfers": 1000, "rows": [
            {"stored_transfers": 10_000, "cpu_us_per_transfer": 60.0, "thread_cpu_us_per_transfer": 60.0, "wall_us_per_transfer": 61.0,
             "median_block_thread_cpu_us_per_transfer": 60.0, "db_bytes": 1e6, "vs_smallest": 1.0}]},
    }
    tables = report.tables(res)
    assert len(tables) == 3
    names = [t[0] for t in report.targets(res)]
    assert any("PostgreSQL" in n for n in names)


def test_quick_mode_is_smaller_and_explicit_options_win():
    q = BenchConfig.quick(transfers=5_000)
    assert q.transfers == 5_000 and q.history_max < BenchConfig().history_max


def test_proofs_part_measures_every_proof_and_the_report_shows_them(tmp_path):
    """The proofs part on a small log: every row present, sizes as RFC 6962 says
    (an inclusion proof in a tree of 300 leaves has 8 or 9 hashes), and the table renders."""
    from raft_ledger_node.bench import proofs

    res = proofs.run(BenchConfig(proofs_size=300), str(tmp_path))
    rows = {r["proof"].split(" ")[0].rstrip(","): r for r in res["rows"]}
    assert set(rows) == {"inclusion", "consistency", "account", "certificate", "receipt"}
    assert rows["inclusion"]["hashes"] in (8, 9) and rows["inclusion"]["bytes"] == 32 * rows["inclusion"]["hashes"]
    assert all(r["verify_us"] > 0 for r in res["rows"])
    tables = report.tables({"config": {"skew": "uniform", "accounts": 10, "batch": 100, "concurrency": 8},
                            "machine": {"cpus": 2}, "proofs": res,
                            **{p: {"skipped": "x"} for p in ("ours", "raft", "crypto", "postgres", "history")}})
    assert any("proofs at 300 transactions" in str(t.title) for t in tables)
