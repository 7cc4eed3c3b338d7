"""Log compaction and recovery with real validator processes (Raft paper §7, InstallSnapshot).

* A follower that was down while the leader compacted its log catches up from
  the leader's snapshot (a RocksDB checkpoint), not by replaying from genesis.
* SIGKILL of every validator at once, then a restart of all: every
  acknowledged transfer is present exactly once and the chains are identical.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from raft_ledger_client import Account, Transfer

pytestmark = pytest.mark.integration

BLOCKS = 40
CONVERGE_TIMEOUT_S = 60.0


def wait_converged(cluster, timeout_s: float = CONVERGE_TIMEOUT_S):
    """Block until all validators answer with one head (height, hash); return it."""
    deadline = time.monotonic() + timeout_s
    heads = None
    while time.monotonic() < deadline:
        rows = cluster.status()
        heads = {v.id: (st.head.height, st.head.hash) for v, st in rows if not isinstance(st, Exception)}
        if len(heads) == 3 and len(set(heads.values())) == 1:
            return next(iter(heads.values()))
        time.sleep(0.2)
    raise AssertionError(f"validators did not converge within {timeout_s}s: {heads}")


def balances(cluster, ids, vid):
    c = cluster.client("bank-a")
    try:
        return {a.id: (a.debits_posted, a.credits_posted) for a in c.lookup_accounts(ids, address=cluster.addresses[vid])}
    finally:
        c.close()


def test_follower_catches_up_from_snapshot_and_all_survive_sigkill(compacting_cluster):
    cluster = compacting_cluster
    bank = cluster.client("bank-a")
    ids = [1, 2, 3, 4]
    assert {r.name for r in bank.create_accounts([Account(id=i, ledger=840, code=1) for i in ids])} == {"ok"}

    leader = cluster.leader()
    lagging = cluster.followers(leader)[0]
    cluster.local.stop(lagging, signal.SIGKILL)

    acknowledged: dict[int, int] = {}
    for n in range(1, BLOCKS + 1):  # one Submit at a time: one block each
        t = Transfer(id=n, debit_account_id=ids[n % 4], credit_account_id=ids[(n + 1) % 4], amount=n, ledger=840, code=1)
        [r] = bank.create_transfers([t])
        assert r.name == "ok"
        acknowledged[n] = n

    leader_status = {v.id: st for v, st in cluster.status()}[leader]
    assert leader_status.log_size < BLOCKS, "the leader never compacted its log"
    assert os.path.getsize(os.path.join(cluster.directory, leader, "data", "raft", "snapshot")) > 0

    cluster.local.start(lagging)
    height, head_hash = wait_converged(cluster)
    assert height >= BLOCKS + 1
    with open(os.path.join(cluster.directory, lagging, "validator.log")) as f:
        assert "installed snapshot" in f.read(), "the lagging validator replayed instead of installing a snapshot"
    expected = balances(cluster, ids, leader)
    assert balances(cluster, ids, lagging) == expected

    # Every validator dies at once, then all come back.
    for vid in cluster.addresses:
        cluster.local.stop(vid, signal.SIGKILL)
    cluster.local.start_all()
    cluster.local.wait_ready(timeout_s=60)
    assert wait_converged(cluster) == (height, head_hash)
    for vid in cluster.addresses:
        assert balances(cluster, ids, vid) == expected
        found = bank.lookup_transfers(list(acknowledged), address=cluster.addresses[vid])
        assert sorted(t.id for t in found) == sorted(acknowledged), f"{vid} lost acknowledged transfers"
        total = sum(d for d, _ in balances(cluster, ids, vid).values())
        assert total == sum(acknowledged.values()), "a transfer was applied twice or lost"
    # And the cluster still takes writes.
    [r] = bank.create_transfers([Transfer(id=BLOCKS + 1, debit_account_id=1, credit_account_id=2, amount=1, ledger=840, code=1)])
    assert r.name == "ok"
    bank.close()
