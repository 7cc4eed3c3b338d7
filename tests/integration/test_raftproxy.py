"""Message-level Raft faults (issue 15 item 2, prototype): chaos/raftproxy.py on a real cluster.

Three real validators; every link into the lowest-address validator (both of
its links: pysyncobj's dialler is the higher address) goes through the
Raft-aware proxy, which duplicates, delays (so reorders) and replays stale
AppendEntries and their ``next_node_idx`` replies. Raft §5.3 (receiver rules
2-5) says a follower must treat all of these as no-ops; with the adapter's
fixes on (``raft_fixes``, the default) every acknowledged write is then present
exactly once on every validator and they agree on one chain head.

The cluster runs with ``insecure_plaintext`` (the Raft password's Fernet layer
still on): the TLS pins refuse any certificate but the exact one of each
validator; see the module docstring of chaos/raftproxy.py.

``--unsafe`` (``raft_fixes=False``): pysyncobj truncates the entries after a
stale AppendEntries' last entry even when they match (SO:991-1000), so a
follower can drop entries it already acknowledged and the leader counted for
commit. That alone is repaired by the leader re-sending them; it loses a write
only if the leader then fails and the truncated follower wins the election
with the third validator, which lacks them too. So the unsafe drill needs the
proxy *and* a kill of the leader at the right moment; not tried yet.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from raft_ledger_chaos.raftproxy import RaftFaults, RaftProxy
from raft_ledger_client import Account, AccountFlags, CreateAccountResult, CreateTransferResult, LedgerError, RetryPolicy, Transfer
from raft_ledger_node.localcluster import (
    LocalCluster,
    cluster_port_offsets,
    cluster_validators,
    init_cluster,
    member_client,
    reserve_ports,
)

pytestmark = pytest.mark.integration

VALIDATORS = 3
MEMBERS = ["bank-a", "bank-b"]
LEDGER = 840
START_PORT = 60_000
#: The writer's transfers: one per call, so each is one Raft entry, many AppendEntries.
TRANSFERS = 120
#: Faults on every AppendEntries / reply: frequent enough that a run of TRANSFERS sees dozens.
FAULTS = RaftFaults(duplicate=0.3, delay=0.3, replay=0.2, delay_s_max=0.2, seed=15)
CONVERGE_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0


def _write_configs(directory: str, dial: dict[str, str], overrides: dict) -> None:
    for v in cluster_validators(directory):
        path = os.path.join(directory, v.id, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg.update({"connection_retry_time_s": 0.5, "leader_fallback_timeout_s": 2.0})
        cfg["raft_peer_dial"] = {k: a for k, a in dial.items() if k != v.raft_address}
        cfg.update(overrides)
        with open(path, "w") as f:
            json.dump(cfg, f)


def _password(directory: str, vid: str) -> str:
    with open(os.path.join(directory, vid, "config.json")) as f:
        return json.load(f)["raft_password"]


def _run(tmp_path, *, unsafe: bool):
    directory = str(tmp_path / "cluster")
    with reserve_ports(cluster_port_offsets(VALIDATORS), start=START_PORT, step=200, probes_max=50) as ports:
        init_cluster(directory, VALIDATORS, MEMBERS, "127.0.0.1", ports.base, force=True,
                     issuers={LEDGER: ["bank-a"]}, insecure_plaintext=True)
        validators = cluster_validators(directory)
        target = min(validators, key=lambda v: v.raft_address)  # dialled by both others
        proxy = RaftProxy(target.raft_address, _password(directory, target.id), FAULTS).start()
        local = LocalCluster(directory)
        try:
            _write_configs(directory, {target.raft_address: proxy.listen}, {"raft_fixes": False} if unsafe else {})
            local.start_all()
            local.wait_ready(timeout_s=READY_TIMEOUT_S)
            acked = _write(directory)
            present = _converged(directory, validators, acked)
            return proxy.stats.snapshot(), acked, present
        finally:
            try:
                local.stop_all()
            finally:
                proxy.stop()
            still = {vid: p.pid for vid, p in local.procs.items() if p.poll() is None}
            assert not still, still


def _write(directory: str) -> list[int]:
    """TRANSFERS transfers one at a time; the ids the cluster acknowledged (ok, or exists on a retry)."""
    with member_client(directory, "bank-a", retry=RetryPolicy(deadline_s=20)) as c:
        rs = c.create_accounts([Account(id=1, ledger=LEDGER, code=1), Account(id=2, ledger=LEDGER, code=1)])
        assert all(r.result in (CreateAccountResult.ok, CreateAccountResult.exists) for r in rs), rs
        acked = []
        for i in range(TRANSFERS):
            tid = 1_000 + i
            try:
                [r] = c.create_transfers([Transfer(id=tid, debit_account_id=1, credit_account_id=2, amount=1,
                                                   ledger=LEDGER, code=1)])
            except LedgerError:
                continue  # outcome unknown: not counted as acknowledged
            if r.result in (CreateTransferResult.ok, CreateTransferResult.exists):
                acked.append(tid)
        return acked


def _converged(directory: str, validators, acked: list[int]) -> dict[str, list[int]]:
    """Wait for one head everywhere; then each validator's transfer ids among 1000.. and its account 2 balance."""
    ids = list(range(1_000, 1_000 + TRANSFERS))
    with member_client(directory, "bank-a", retry=RetryPolicy(deadline_s=5)) as c:
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        while True:
            heads = {}
            for v in validators:
                try:
                    h = c.head(address=v.grpc_address)
                    heads[v.id] = (h.height, h.hash)
                except LedgerError:
                    pass
            if len(heads) == len(validators) and len(set(heads.values())) == 1:
                break
            assert time.monotonic() < deadline, f"validators did not converge: {heads}"
            time.sleep(0.3)
        out = {}
        for v in validators:
            present = [t.id for t in c.lookup_transfers(ids, address=v.grpc_address)]
            [acct] = c.lookup_accounts([2], address=v.grpc_address)
            out[v.id] = {"transfers": present, "credits": acct.credits_posted}
        return out


def test_duplicated_delayed_replayed_append_entries_lose_nothing_with_the_fixes(tmp_path):
    stats, acked, state = _run(tmp_path, unsafe=False)
    # The faults happened, on the messages they are for, and every frame decoded.
    assert stats["undecodable"] == 0, stats
    assert stats["duplicated"].get("append_entries", 0) >= 5, stats
    assert stats["delayed"].get("append_entries", 0) >= 5, stats
    assert stats["replayed"] >= 5, stats
    assert stats["duplicated"].get("next_node_idx", 0) >= 1, stats
    assert len(acked) >= TRANSFERS // 2, (len(acked), stats)
    for vid, s in state.items():
        # Every acknowledged transfer present exactly once, and applied once (balance = count).
        assert sorted(set(s["transfers"])) == sorted(s["transfers"]), vid
        assert set(acked) <= set(s["transfers"]), (vid, sorted(set(acked) - set(s["transfers"])))
        assert s["credits"] == len(s["transfers"]), (vid, s["credits"], len(s["transfers"]))
