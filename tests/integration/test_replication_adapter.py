"""The pysyncobj adapter's two safety fixes, driven through the real library.

One in-process replica (autoTick off, so the test drives every message and tick)
with its real file journal on disk; messages are delivered through the real
transport callback, replies captured at pysyncobj's TCPTransport.send.

* Raft §5.3, AppendEntries receiver rule 3: "If an existing entry conflicts with
  a new one (same index but different terms), delete the existing entry and all
  that follow it" — and only then. Rule 5: commitIndex = min(leaderCommit,
  index of last new entry).
* Raft §5.1 / Figure 2: persistent state (log, currentTerm, votedFor) is on
  stable storage before the server responds to RPCs.

And the replica's typed status and its fail-stop on a storage failure.

And one performance fix on the leader side: a successful reply raises matchIndex but
never moves nextIndex back (pipelined entries are not sent twice); a failed
consistency check still rewinds it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from pysyncobj import SyncObjConf
from pysyncobj.transport import TCPTransport

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.wire import account_to_pb
from raft_ledger_node.api.validation import tx_from_committed
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.types import Account, Entry, Operation, Tx
from raft_ledger_node.raft.durable import ReplicaStatus
from raft_ledger_node.raft.journal import DurableFileJournal
from raft_ledger_node.raft.replica import LedgerReplica
from raft_ledger_node.localcluster import PortReservation, reserve_ports
from raft_ledger_node.store_memory import MemoryStore

NOOP = b"\x01"  # pysyncobj _COMMAND_TYPE.NO_OP: carried in the log, applies nothing


#: Port blocks for the replica and its peers: base+0.., bases 47_010, 47_110, ... (their last two
#: digits never match a cluster's base+1..3 / base+101..103, so the layouts cannot overlap).
PORT_START = 47_010
PORT_STEP = 100


@pytest.fixture
def events(monkeypatch):
    """Ordered record of journal flushes, fsyncs and messages sent."""
    log: list[tuple] = []

    def recording_send(self, node, message):
        log.append(("send", message["type"], dict(message)))
        return True

    real_fsync = os.fsync

    def recording_fsync(fd):
        log.append(("fsync",))
        return real_fsync(fd)

    monkeypatch.setattr(TCPTransport, "send", recording_send)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    return log


def make_replica(tmp_path, events, ports: PortReservation, *, durable=True, raft_fixes=True, peers=1, store=None):
    conf = SyncObjConf(
        autoTick=False,
        journalFile=str(tmp_path / "journal"),
        fullDumpFile=str(tmp_path / "snapshot"),
        password="test-password",
        appendEntriesUseBatch=False,
        appendEntriesBatchSizeBytes=16 << 20,
        logCompactionMinEntries=1 << 62,
        logCompactionMinTime=1 << 40,
        appendEntriesPeriod=0.01,
        raftMinTimeout=0.05,
        raftMaxTimeout=0.06,
    )
    me, *others = (f"127.0.0.1:{p}" for p in ports.ports[: 1 + peers])
    replica = LedgerReplica(
        me,
        others,
        conf,
        store or MemoryStore(),
        durable_journal=durable,
        raft_fixes=raft_fixes,
        on_journal_flush=lambda n: events.append(("flush", n)),
        decode_envelope=functools.partial(tx_from_committed, chain_id=CHAIN),
        # These tests drive pysyncobj's own election by hand (request_vote, response_vote);
        # Pre-Vote would put its round first. The guard has its own tests (test_prevote*.py).
        election_guard=False,
    )
    return replica


def deliver(replica, message):
    transport = replica._SyncObj__transport
    leader = next(iter(replica.otherNodes))
    transport._onMessageReceived(leader, message)


def append_entries(term, prev_idx, prev_term, entries, commit_index):
    return {
        "type": "append_entries",
        "term": term,
        "prevLogIdx": prev_idx,
        "prevLogTerm": prev_term,
        "entries": [(NOOP, idx, t) for idx, t in entries],
        "commit_index": commit_index,
    }


def log_indexes(replica):
    j = replica._journal()
    return [(e[1], e[2]) for e in (j[i] for i in range(len(j)))]


def replies(events):
    return [e[2] for e in events if e[0] == "send" and e[1] == "next_node_idx"]


@pytest.fixture
def replica_factory(tmp_path, events):
    made = []
    reservations = []

    def factory(**kw):
        ports = reserve_ports(range(1 + kw.get("peers", 1)), start=PORT_START, step=PORT_STEP)
        reservations.append(ports)
        r = make_replica(tmp_path / str(len(made)), events, ports, **kw)
        made.append(r)
        return r

    for i in range(4):
        (tmp_path / str(i)).mkdir()
    try:
        yield factory
    finally:
        try:
            for r in made:
                r._destroy()  # with autoTick off this tears down transport and journal at once
        finally:
            for ports in reservations:
                ports.release()


def test_duplicate_delayed_append_entries_keeps_matching_entries(replica_factory, events):
    """A stale AppendEntries for 2..3 must not delete the follower's matching 4..5 (§5.3 rule 3)."""
    r = replica_factory()
    deliver(r, append_entries(1, 1, 0, [(2, 1), (3, 1), (4, 1), (5, 1)], commit_index=3))
    assert log_indexes(r) == [(1, 0), (2, 1), (3, 1), (4, 1), (5, 1)]
    assert replies(events)[-1]["next_node_idx"] == 6

    deliver(r, append_entries(1, 1, 0, [(2, 1), (3, 1)], commit_index=3))
    assert log_indexes(r) == [(1, 0), (2, 1), (3, 1), (4, 1), (5, 1)], "matching entries were truncated"
    reply = replies(events)[-1]
    assert reply["success"] is True
    # The reply vouches only for what this message covered (index 3), not for 4..5.
    assert reply["next_node_idx"] == 4
    assert r.raftCommitIndex == 3


def test_without_the_fix_pysyncobj_truncates_matching_entries(replica_factory, events):
    """The hazard the adapter fixes, shown on the unpatched path (the test above would fail here)."""
    r = replica_factory(raft_fixes=False)
    deliver(r, append_entries(1, 1, 0, [(2, 1), (3, 1), (4, 1), (5, 1)], commit_index=3))
    deliver(r, append_entries(1, 1, 0, [(2, 1), (3, 1)], commit_index=3))
    assert log_indexes(r) == [(1, 0), (2, 1), (3, 1)]


def test_conflicting_entry_is_truncated_from_the_first_conflict(replica_factory, events):
    """§5.3 rule 3: same index, different term -> delete it and all that follow."""
    r = replica_factory()
    deliver(r, append_entries(1, 1, 0, [(2, 1), (3, 1), (4, 1), (5, 1)], commit_index=1))
    deliver(r, append_entries(2, 2, 1, [(3, 1), (4, 2)], commit_index=1))
    assert log_indexes(r) == [(1, 0), (2, 1), (3, 1), (4, 2)]
    assert replies(events)[-1]["next_node_idx"] == 5


def test_heartbeat_behind_the_log_neither_truncates_nor_overcommits(replica_factory, events):
    """An empty AppendEntries with prev=3 vouches for nothing past 3 (§5.3 rule 5)."""
    r = replica_factory()
    deliver(r, append_entries(1, 1, 0, [(2, 1), (3, 1), (4, 1), (5, 1)], commit_index=1))
    deliver(r, append_entries(1, 3, 1, [], commit_index=5))
    assert log_indexes(r)[-1] == (5, 1)
    assert replies(events)[-1]["next_node_idx"] == 4
    assert r.raftCommitIndex == 3


def test_follower_flushes_journal_before_acknowledging(replica_factory, events):
    """The AppendEntries reply leaves only after the appended entries are msynced (§5.1)."""
    r = replica_factory()
    events.clear()
    deliver(r, append_entries(1, 1, 0, [(2, 1), (3, 1)], commit_index=1))
    kinds = [e[0] if e[0] != "send" else e[1] for e in events]
    assert "flush" in kinds and "next_node_idx" in kinds
    flush_at = kinds.index("flush")
    assert flush_at < kinds.index("next_node_idx")
    assert events[flush_at][1] == 3, "the flush must cover both new entries"
    assert isinstance(r._journal(), DurableFileJournal)


def test_without_durable_journal_nothing_is_flushed(replica_factory, events):
    r = replica_factory(durable=False)
    events.clear()
    deliver(r, append_entries(1, 1, 0, [(2, 1), (3, 1)], commit_index=1))
    assert not [e for e in events if e[0] == "flush"]
    assert not isinstance(r._journal(), DurableFileJournal)


def test_vote_is_sent_only_after_term_and_vote_are_fsynced(replica_factory, events):
    """currentTerm/votedFor reach the disk (file and directory fsync) before the vote leaves."""
    r = replica_factory()
    events.clear()
    deliver(r, {"type": "request_vote", "term": 7, "last_log_index": 1, "last_log_term": 0})
    kinds = [e[0] if e[0] != "send" else e[1] for e in events]
    assert "response_vote" in kinds
    assert "fsync" in kinds[: kinds.index("response_vote")]
    assert r.raftCurrentTerm == 7


CHAIN = "adapter-test"


def _entry(n: int) -> bytes:
    """A Raft entry of one real SignedTransaction creating account ``n`` (no configuration is
    bound in these stores, so its signature is not checked at apply)."""
    body = pb.Transaction(chain_id=CHAIN, valid_until=1 << 62,
                          create_accounts=pb.CreateAccounts(accounts=[account_to_pb(Account(id=n, ledger=1, code=1))]))
    raw = body.SerializeToString(deterministic=True)
    env = pb.SignedTransaction(body=raw, member_id="bank-a", key_id="k1", signature=bytes(64)).SerializeToString(
        deterministic=True)
    tx = Tx("bank-a", Operation.create_accounts, (Account(id=n, ledger=1, code=1),), env, hashlib.sha256(env).digest())
    return codec.encode_entry(Entry(proposed_timestamp=1_000 * n, txs=(tx,)))


def test_leader_flushes_before_counting_itself_and_applies_exactly_once(replica_factory, events, tmp_path):
    """A single-validator cluster: the flush of an entry precedes its apply; replay skips it."""
    store = MemoryStore()
    r = replica_factory(peers=0, store=store)
    for _ in range(200):
        r.doTick(0.01)
        if r._isLeader() and r.raftLastApplied == r.raftCommitIndex and r.raftCommitIndex >= 2:
            break
    assert r._isLeader()
    applied: list[tuple] = []
    r._on_applied = lambda idx, res: applied.append(("apply", idx))
    events.clear()
    results = []
    r.apply_entry(_entry(1), callback=lambda res, err: results.append((res, err)))
    for _ in range(100):
        r.doTick(0.01)
        if results:
            break
    assert results and results[0][1] == 0 and results[0][0][0].codes == (0,)
    (idx,) = [i for kind, i in applied]
    journal_len_at_flush = [e[1] for e in events if e[0] == "flush"]
    assert journal_len_at_flush, "no flush before the apply"
    assert store.applied_index() == idx
    assert store.get_account(1) is not None
    # Replaying the same Raft index (restart) is skipped: the store already has it.
    before = store.head()
    r._SyncObj__raftLastApplied = idx - 1
    assert r.apply_entry(_entry(1), _doApply=True) is None
    assert store.head() == before


def _sent_entry_indexes(events) -> list[int]:
    return [idx for e in events if e[0] == "send" and e[1] == "append_entries" for _c, idx, _t in e[2].get("entries", [])]


def _leader_with_one_follower(replica_factory, events):
    """A real replica elected leader by one (simulated, connected) follower."""
    r = replica_factory(peers=1)
    follower = next(iter(r.otherNodes))
    # The test is the follower: no TCP connection is attempted (a refused one would
    # mark the follower disconnected), and the leader counts it as connected.
    r._SyncObj__transport._connectIfNecessarySingle = lambda node: False
    r._SyncObj__connectedNodes.add(follower)
    for _ in range(200):
        r.doTick(0.01)
        if any(e[0] == "send" and e[1] == "request_vote" for e in events):
            break
    transport = r._SyncObj__transport
    transport._onMessageReceived(follower, {"type": "response_vote", "term": r.raftCurrentTerm})
    assert r._isLeader()
    r.doTick(0.0)  # the new leader's no-op goes out
    return r, follower


def _ack(r, follower, next_idx, *, success=True, reset=False):
    r._SyncObj__transport._onMessageReceived(
        follower, {"type": "next_node_idx", "next_node_idx": next_idx, "reset": reset, "success": success}
    )


def test_ack_of_an_older_entry_does_not_resend_the_newer_ones(replica_factory, events):
    """Pipelined AppendEntries: an ack for entry k raises matchIndex to k but must not move
    nextIndex back below what was already sent (pysyncobj did, so every entry in flight
    went out again)."""
    r, follower = _leader_with_one_follower(replica_factory, events)
    noop = r._SyncObj__getCurrentLogIndex()
    _ack(r, follower, noop + 1)
    r.doTick(0.0)
    events.clear()
    for n in (1, 2, 3):
        r.apply_entry(_entry(n), callback=lambda res, err: None)
    r.doTick(0.0)
    first = noop + 1
    assert sorted(_sent_entry_indexes(events)) == [first, first + 1, first + 2]
    events.clear()

    _ack(r, follower, first + 1)  # the follower has acknowledged only the first of the three
    assert r._SyncObj__raftMatchIndex[follower] == first
    assert r._SyncObj__raftNextIndex[follower] == first + 3
    for _ in range(3):
        time.sleep(0.02)  # past appendEntriesPeriod: each tick sends (heartbeats)
        r.doTick(0.0)
    assert any(e[0] == "send" and e[1] == "append_entries" for e in events), "no heartbeat: the check proves nothing"
    assert _sent_entry_indexes(events) == [], "entries already in flight were sent again"
    assert r.raftCommitIndex == first  # the majority (leader + follower) holds only the first


def test_a_failed_consistency_check_still_rewinds_next_index(replica_factory, events):
    """If the follower lacks entries (a message was lost), its reset reply moves nextIndex
    back and the leader resends from there (Raft §5.3)."""
    r, follower = _leader_with_one_follower(replica_factory, events)
    noop = r._SyncObj__getCurrentLogIndex()
    _ack(r, follower, noop + 1)
    for n in (1, 2, 3):
        r.apply_entry(_entry(n), callback=lambda res, err: None)
    r.doTick(0.0)
    events.clear()
    _ack(r, follower, noop + 2, success=False, reset=True)  # it holds only the first new entry
    assert r._SyncObj__raftNextIndex[follower] == noop + 2
    time.sleep(0.02)  # past appendEntriesPeriod: the next tick sends
    r.doTick(0.0)
    assert sorted(set(_sent_entry_indexes(events))) == [noop + 2, noop + 3]


def _tick_until_leader(r) -> None:
    for _ in range(200):
        r.doTick(0.01)
        if r._isLeader() and r.raftLastApplied == r.raftCommitIndex and r.raftCommitIndex >= 2:
            return
    raise AssertionError("the single replica did not become leader")


def test_status_of_a_single_replica_before_and_after_its_election(replica_factory, events):
    """status() reads pysyncobj in one place into a frozen ReplicaStatus; is_leader() agrees."""
    r = replica_factory(peers=0)
    st = r.status()
    assert isinstance(st, ReplicaStatus)
    assert st.role == "follower" and not r.is_leader() and st.leader_address is None
    _tick_until_leader(r)
    st = r.status()
    assert r.is_leader() and st.role == "leader"
    assert st.leader_address == r.selfNode.address == r.leader_address()
    assert st.term == r.raftCurrentTerm >= 1
    # The leader's no-op of its term is committed and applied (Raft §8).
    assert st.commit_index == st.last_applied == r.raftCommitIndex >= 2
    assert st.log_size == len(r._journal()) and st.ready
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.role = "candidate"


def test_status_of_a_follower_names_its_leader(replica_factory, events):
    r = replica_factory(peers=1)
    leader = next(iter(r.otherNodes))
    deliver(r, append_entries(4, 1, 0, [(2, 4), (3, 4)], commit_index=3))
    st = r.status()
    assert st.role == "follower" and not r.is_leader()
    assert st.term == 4 and st.commit_index == 3 and st.log_size == 3
    assert st.leader_address == leader.address


_FAIL_STOP_SCRIPT = r"""
import errno, logging, sys
from pysyncobj import SyncObjConf
from raft_ledger_node.raft.replica import LedgerReplica
from raft_ledger_node.store_memory import MemoryStore

class DiskFull(MemoryStore):
    def commit(self, ws, applied_index):
        raise OSError(errno.ENOSPC, "No space left on device")

logging.basicConfig(level=logging.INFO)
d, me, entry = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
conf = SyncObjConf(autoTick=False, journalFile=d + "/journal", fullDumpFile=d + "/snapshot", password="p",
                   appendEntriesUseBatch=False, appendEntriesBatchSizeBytes=16 << 20, appendEntriesPeriod=0.01,
                   raftMinTimeout=0.05, raftMaxTimeout=0.06)
from raft_ledger_node.api.validation import tx_from_committed
r = LedgerReplica(me, [], conf, DiskFull(), decode_envelope=lambda e: tx_from_committed(e, chain_id="adapter-test"))
for _ in range(200):
    r.doTick(0.01)
    if r._isLeader() and r.raftCommitIndex >= 2 and r.raftLastApplied == r.raftCommitIndex:
        break
r.apply_entry(entry, callback=lambda res, err: None)
for _ in range(100):
    r.doTick(0.01)
print("still running after the failed write")
"""


def test_storage_failure_stops_the_validator_with_exit_code_74(tmp_path):
    """The state machine raises StorageFailure; the replica fail-stops (EX_IOERR) rather
    than skip a block and diverge."""
    ports = reserve_ports(range(1), start=PORT_START, step=PORT_STEP)
    try:
        out = subprocess.run(
            [sys.executable, "-c", _FAIL_STOP_SCRIPT, str(tmp_path), f"127.0.0.1:{ports.base}", _entry(1).hex()],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        ports.release()
    assert out.returncode == 74, out.stdout + out.stderr
    assert "still running" not in out.stdout
    assert "storage write failed" in out.stderr and "No space left on device" in out.stderr


def test_a_slow_journal_sync_is_logged_as_a_slow_tick_once_per_period(replica_factory, events, caplog):
    """A tick held by a slow journal sync names the sync (durable.SLOW_TICK_LOG_S); a second
    slow tick within SLOW_TICK_LOG_PERIOD_S is counted into the next report, not logged."""
    import logging
    import time

    from raft_ledger_node.raft import durable

    r = replica_factory(peers=0)
    _tick_until_leader(r)
    r._journal()._on_flush = lambda n: time.sleep(durable.SLOW_TICK_LOG_S + 0.05)
    caplog.set_level(logging.WARNING, logger="ledger.replication")
    results = []
    for n in (1, 2):
        r.apply_entry(_entry(n), callback=lambda res, err: results.append(err))
        for _ in range(100):
            r.doTick(0.01)
            if len(results) == n:
                break
    assert results == [0, 0]
    slow = [rec.getMessage() for rec in caplog.records if "slow Raft tick" in rec.getMessage()]
    assert len(slow) == 1, slow
    took_ms, sync_ms = (float(x) for x in re.findall(r"(\d+) ms", slow[0])[:2])
    assert sync_ms >= durable.SLOW_TICK_LOG_S * 1000 and took_ms >= sync_ms
    assert r._slow_ticks >= 1  # the second slow tick waits for the next report
