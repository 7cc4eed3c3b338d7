"""Message-level Raft faults (issue 15 item 2, prototype): chaos/raftproxy.py on a real cluster.

Three real validators; every Raft link goes through a Raft-aware proxy (one per
dialled validator: pysyncobj's dialler is the higher address), so whichever
validator leads, the links to both followers are faulted.

* Random faults: AppendEntries and their ``next_node_idx`` replies are
  duplicated, delayed (so reordered) and stale AppendEntries replayed.
* A targeted stale replay (``stale_replay_run``): the one event pysyncobj's
  truncation needs, at the one moment it loses a committed write.
 Raft §5.3 (receiver rules
2-5) says a follower must treat all of these as no-ops; with the adapter's
fixes on (``raft_fixes``, the default) every acknowledged write is then present
exactly once on every validator and they agree on one chain head.

The clusters run with their real Raft mutual TLS: the pins refuse any certificate
but the exact one of each validator, so the proxy uses the validators' own
certificates and keys (chaos/raftproxy.py ``ProxyTls``); the random-fault test
also runs once with ``insecure_plaintext``.

``--unsafe`` (``raft_fixes=False``): pysyncobj truncates the entries after a
stale AppendEntries' last entry even when they match (SO:991-1000), so a
follower can drop entries it already acknowledged and the leader counted for
commit. That alone is repaired by the leader re-sending them; it loses a write
only if the leader then fails and the truncated follower wins the election
with the third validator, which lacks them too: the targeted drill below
(stale_replay_run) arranges exactly that and shows the loss.
"""
from __future__ import annotations

import json
import os
import signal
import time

import grpc
import pytest

from raft_ledger_chaos.raftproxy import NO_FAULTS, ProxyTls, RaftFaults, RaftProxy, summed_stats
from raft_ledger_client import Account, CreateAccountResult, CreateTransferResult, LedgerError, RetryPolicy, Transfer
from raft_ledger_node.localcluster import (
    LocalCluster,
    cluster_port_offsets,
    cluster_validators,
    init_cluster,
    member_client,
    reserve_ports,
    status_rows,
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


class Drill:
    """A plaintext 3-validator cluster whose every Raft link runs through a RaftProxy.

    pysyncobj's dialler is the higher Raft address, so each validator but the highest
    gets one proxy (upstream: it) and every validator dials it through that proxy
    (``raft_peer_dial``): together they carry all three links.
    """

    def __init__(self, directory: str, faults: RaftFaults, *, unsafe: bool, tls: bool = False) -> None:
        self.directory = directory
        self.tls = tls
        self.faults = faults
        self.unsafe = unsafe
        self.proxies: dict[str, RaftProxy] = {}
        self.local: LocalCluster | None = None
        self._ports = None

    def __enter__(self) -> "Drill":
        self._ports = reserve_ports(cluster_port_offsets(VALIDATORS), start=START_PORT, step=200, probes_max=50)
        try:
            init_cluster(self.directory, VALIDATORS, MEMBERS, "127.0.0.1", self._ports.base, force=True,
                         issuers={LEDGER: ["bank-a"]}, insecure_plaintext=not self.tls)
            self.validators = {v.id: v for v in cluster_validators(self.directory)}
            password = _password(self.directory, next(iter(self.validators)))
            highest = max(v.raft_address for v in self.validators.values())
            for v in self.validators.values():
                if v.raft_address != highest:
                    tls = ProxyTls.for_validator(self.directory, v.id, self.validators) if self.tls else None
                    self.proxies[v.id] = RaftProxy(v.raft_address, password, self.faults, tls=tls).start()
            _write_configs(self.directory, {self.validators[vid].raft_address: p.listen for vid, p in self.proxies.items()},
                           {"raft_fixes": False} if self.unsafe else {})
            self.local = LocalCluster(self.directory)
            self.local.start_all()
            self.local.wait_ready(timeout_s=READY_TIMEOUT_S)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.local is not None:
                for p in self.local.procs.values():
                    if p.poll() is None:
                        p.send_signal(signal.SIGCONT)  # a paused validator acts on no SIGTERM
                self.local.stop_all()
        finally:
            for p in self.proxies.values():
                p.stop()
            self._ports.release()
        still = {vid: p.pid for vid, p in self.local.procs.items() if p.poll() is None} if self.local else {}
        assert not still, still

    def stats(self) -> dict:
        return summed_stats(self.proxies.values())

    def client(self, deadline_s: float = 20.0):
        return member_client(self.directory, "bank-a", retry=RetryPolicy(deadline_s=deadline_s, attempt_timeout_s=1))

    def leader(self, among=None, timeout_s: float = 30.0) -> str:
        among = set(among or self.validators)
        deadline = time.monotonic() + timeout_s
        while True:
            rows = [(v, st) for v, st in status_rows(os.path.join(self.directory, "genesis.json"), timeout_s=1.0)
                    if v.id in among and not isinstance(st, grpc.RpcError)]
            leaders = [v for v, st in rows if st.role == "leader"]
            if len(leaders) == 1 and all(st.leader_address == leaders[0].grpc_address for v, st in rows):
                return leaders[0].id
            assert time.monotonic() < deadline, f"no agreed leader among {sorted(among)}: {rows}"
            time.sleep(0.2)

    def strike(self, leader: str, follower: str) -> dict:
        """The targeted replay-then-cut on whichever proxy carries the leader-follower link."""
        la, fa = self.validators[leader].raft_address, self.validators[follower].raft_address
        for p in self.proxies.values():
            try:
                return p.strike(la, fa)
            except RuntimeError:
                continue
        raise AssertionError(f"no proxied connection between {leader} and {follower}")

    def final_state(self, ids: list[int], timeout_s: float = CONVERGE_TIMEOUT_S) -> dict:
        """Each validator's head, the transfers among ``ids`` it holds and account 2's credits,
        after waiting (up to ``timeout_s``) for one head everywhere; ``converged`` says if it came."""
        with self.client(deadline_s=5.0) as c:
            deadline = time.monotonic() + timeout_s
            while True:
                heads = {}
                for v in self.validators.values():
                    try:
                        h = c.head(address=v.grpc_address)
                        heads[v.id] = (h.height, h.hash.hex())
                    except LedgerError:
                        pass
                converged = len(heads) == len(self.validators) and len(set(heads.values())) == 1
                if converged or time.monotonic() >= deadline:
                    break
                time.sleep(0.3)
            out = {"converged": converged, "heads": heads, "validators": {}}
            for v in self.validators.values():
                try:
                    present = [t.id for t in c.lookup_transfers(ids, address=v.grpc_address)]
                    [acct] = c.lookup_accounts([2], address=v.grpc_address)
                    out["validators"][v.id] = {"transfers": present, "credits": acct.credits_posted}
                except LedgerError as e:
                    out["validators"][v.id] = {"error": f"{type(e).__name__}: {e}"}
            return out


def _setup_accounts(c) -> None:
    rs = c.create_accounts([Account(id=1, ledger=LEDGER, code=1), Account(id=2, ledger=LEDGER, code=1)])
    assert all(r.result in (CreateAccountResult.ok, CreateAccountResult.exists) for r in rs), rs


def _write(c, ids) -> list[int]:
    """One transfer per call (one Raft entry each); the ids acknowledged (ok, or exists on a retry)."""
    acked = []
    for tid in ids:
        try:
            [r] = c.create_transfers([Transfer(id=tid, debit_account_id=1, credit_account_id=2, amount=1,
                                               ledger=LEDGER, code=1)])
        except LedgerError:
            continue  # outcome unknown: not counted as acknowledged
        if r.result in (CreateTransferResult.ok, CreateTransferResult.exists):
            acked.append(tid)
    return acked


def violations(state: dict, acked: list[int]) -> list[str]:
    """What the checkers would report: an acknowledged write missing or doubled on a validator,
    a balance that is not the count of its transfers, validators that never agree on a head."""
    out = []
    if not state["converged"]:
        out.append(f"no common head: {state['heads']}")
    for vid, s in sorted(state["validators"].items()):
        if "error" in s:
            out.append(f"{vid}: {s['error']}")
            continue
        if len(set(s["transfers"])) != len(s["transfers"]):
            out.append(f"{vid}: a transfer present twice")
        missing = sorted(set(acked) - set(s["transfers"]))
        if missing:
            out.append(f"{vid}: {len(missing)} acknowledged transfers missing, first {missing[:5]}")
        if s["credits"] != len(s["transfers"]):
            out.append(f"{vid}: credits {s['credits']} != {len(s['transfers'])} transfers")
    return out


def random_faults_run(directory: str, *, unsafe: bool, tls: bool = False):
    ids = list(range(1_000, 1_000 + TRANSFERS))
    with Drill(directory, FAULTS, unsafe=unsafe, tls=tls) as d:
        with d.client() as c:
            _setup_accounts(c)
            acked = _write(c, ids)
        return d.stats(), acked, d.final_state(ids)


def stale_replay_run(directory: str, *, unsafe: bool, converge_timeout_s: float = CONVERGE_TIMEOUT_S, tls: bool = True):
    """Raft §5.3 / Figure 7's hazard made exact: a follower F holds entries the leader L
    committed with F's acknowledgement alone (the third validator G is paused); the proxy
    replays an AppendEntries L sent before those entries, then cuts L-F; L is killed and G
    resumed. pysyncobj (unsafe) truncates F's log to the stale message's prevLogIdx, so the
    new majority {F, G} holds none of them: acknowledged writes are lost. With the fixes
    F keeps them, wins the election (§5.4.1) and nothing is lost."""
    before, during = list(range(1_000, 1_020)), list(range(2_000, 2_020))
    with Drill(directory, NO_FAULTS, unsafe=unsafe, tls=tls) as d:
        lead = d.leader()
        f, g = sorted(v for v in d.validators if v != lead)
        with d.client() as c:
            _setup_accounts(c)
            acked = _write(c, before)
            time.sleep(0.5)  # heartbeats carry the latest index to both followers
            for p in d.proxies.values():
                p.mark()
            os.kill(d.local.procs[g].pid, signal.SIGSTOP)
            acked += _write(c, during)
            time.sleep(0.5)  # L's commit index reaches F: F applies them too
            replayed = d.strike(lead, f)
            d.local.procs[lead].kill()
            d.local.procs[lead].wait(10)
            os.kill(d.local.procs[g].pid, signal.SIGCONT)
        new_lead = d.leader(among={f, g})
        d.local.start(lead)
        state = d.final_state(before + during, timeout_s=converge_timeout_s)
        return {"leader": lead, "follower": f, "paused": g, "new_leader": new_lead, "replayed": replayed,
                "stats": d.stats()}, acked, state


@pytest.mark.parametrize("tls", [True, False], ids=["mtls", "plaintext"])
def test_duplicated_delayed_replayed_append_entries_lose_nothing_with_the_fixes(tmp_path, tls):
    stats, acked, state = random_faults_run(str(tmp_path / "cluster"), unsafe=False, tls=tls)
    logs = "".join(open(os.path.join(tmp_path, "cluster", vid, "validator.log")).read() for vid in ("v1", "v2", "v3"))
    assert ("Raft links are PLAINTEXT" in logs) is not tls  # the proxy really sat inside pinned mutual TLS
    assert stats["unknown_diallers"] == 0, stats
    # The faults happened, on the messages they are for, and every frame decoded.
    assert stats["undecodable"] == 0, stats
    assert stats["duplicated"].get("append_entries", 0) >= 5, stats
    assert stats["delayed"].get("append_entries", 0) >= 5, stats
    assert stats["replayed"] >= 5, stats
    assert stats["duplicated"].get("next_node_idx", 0) >= 1, stats
    assert len(acked) >= TRANSFERS // 2, (len(acked), stats)
    assert violations(state, acked) == [], (stats, state)


def test_a_stale_append_entries_after_commit_loses_nothing_with_the_fixes(tmp_path):
    evidence, acked, state = stale_replay_run(str(tmp_path / "cluster"), unsafe=False)
    assert evidence["stats"]["strikes"] == 1 and evidence["stats"]["undecodable"] == 0, evidence
    assert len(acked) >= 30, (len(acked), evidence)
    assert violations(state, acked) == [], (evidence, state)


def test_unsafe_the_same_stale_append_entries_loses_acknowledged_writes(tmp_path):
    """The drill can fail: with ``raft_fixes=False`` pysyncobj truncates the follower's
    acknowledged, applied entries (its log says "truncating already-applied log entries"),
    the new leader lacks them and the checker sees acknowledged transfers missing."""
    evidence, acked, state = stale_replay_run(str(tmp_path / "cluster"), unsafe=True, converge_timeout_s=15.0)
    assert evidence["stats"]["strikes"] == 1, evidence
    found = violations(state, acked)
    assert any("acknowledged transfers missing" in v for v in found), (evidence, found)
    logs = "".join(open(os.path.join(tmp_path, "cluster", vid, "validator.log")).read() for vid in ("v1", "v2", "v3"))
    assert "truncating already-applied log entries" in logs
