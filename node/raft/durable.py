"""DurableReplica: a pysyncobj SyncObj with the validators' journal, transport and typed status.

Both the validator's replica (:class:`~raft_ledger_node.raft.replica.LedgerReplica`)
and the benchmark's bare-pysyncobj baseline (``node/bench/bare_raft.py``) subclass
it, so the baseline measures replication with exactly the validators' durability:
the fsynced :class:`~raft_ledger_node.raft.journal.DurableFileJournal` and
:class:`~raft_ledger_node.raft.transport.LedgerTransport`. This module imports no
ledger logic (an import-linter contract in pyproject.toml keeps it so).

Both safety switches can be turned off (``durable_journal=False``,
``raft_fixes=False``) so the chaos suite can show what they prevent.
Pre-Vote and CheckQuorum (:mod:`raft_ledger_node.raft.prevote`) are on unless
``election_guard=False`` (the before/after of the partition-leader drill).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from pysyncobj import SyncObj, SyncObjConf
from pysyncobj import syncobj as _syncobj_mod

from raft_ledger_node.raft.journal import DurableFileJournal
from raft_ledger_node.raft.prevote import ElectionGuard, check_pysyncobj_members
from raft_ledger_node.raft.transport import LedgerTransport

#: pysyncobj swaps its journal through a module global (``syncobj.createJournal``):
#: replicas built at the same time in one process take turns.
_journal_factory_lock = threading.Lock()

#: pysyncobj's ``_RAFT_STATE`` values.
_ROLES = {0: "follower", 1: "candidate", 2: "leader"}

log = logging.getLogger("ledger.replication")

#: A Raft tick whose work (journal sync, commit, apply, sends; not the idle poll) takes
#: longer than this is logged (WARNING): every proposal and heartbeat waited for it.
SLOW_TICK_LOG_S = 0.2
#: At most one slow-tick line per this many seconds; the others are counted into it.
SLOW_TICK_LOG_PERIOD_S = 10.0


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """A replica's Raft state at one moment, read from pysyncobj in one place.

    ``last_applied`` is Raft's lastApplied: it counts pysyncobj's own no-op
    entries, which the store does not record, so it can be ahead of the store's
    applied index. ``leader_address`` is the leader's Raft address (None while no
    leader is known). ``ready``: the replica has caught up with the log it
    loaded at start (pysyncobj's ``isReady()``). ``log_size``: entries in the
    journal (drops after log compaction).
    """

    role: str
    term: int
    commit_index: int
    last_applied: int
    leader_address: str | None
    ready: bool
    log_size: int


class DurableReplica(SyncObj):
    """SyncObj whose journal is flushed before any acknowledgement (see journal.py).

    A subclass sets the state its replicated methods use *before* calling
    ``super().__init__``: pysyncobj starts its tick thread inside it.

    ``peer_dial`` maps a peer's Raft address (its identity) to the address to
    dial (see LedgerTransport). ``on_journal_flush(entries)`` (tests) is called
    after each real flush. ``raft_tls`` (a :class:`~raft_ledger_node.raft.tls.RaftTls`)
    puts every Raft link under mutual TLS pinned to genesis; None: plaintext links
    (development clusters and the bare-pysyncobj benchmark), the password still required.
    """

    def __init__(
        self,
        self_address: str,
        peer_addresses: list[str],
        conf: SyncObjConf,
        *,
        durable_journal: bool = True,
        raft_fixes: bool = True,
        peer_dial: dict[str, str] | None = None,
        on_journal_flush: Callable[[int], None] | None = None,
        raft_tls=None,
        election_guard: bool = True,
    ) -> None:
        if not conf.password:
            raise ValueError("the Raft port must have a password (pysyncobj unpickles what it receives)")
        if not conf.journalFile or not conf.fullDumpFile:
            # With a journal but no dump file, a node restarted after log compaction
            # came back with empty state and never became ready (design.md).
            raise ValueError("journalFile and fullDumpFile must be set together")
        # What LedgerTransport reads from its replica; set before the tick thread starts.
        self._peer_dial = dict(peer_dial or {})
        self._raft_tls = raft_tls
        self._durable = durable_journal
        self._raft_fixes = raft_fixes
        #: Pre-Vote and CheckQuorum (raft/prevote.py); None: pysyncobj's elections as they are.
        self._election_guard = ElectionGuard(self) if election_guard else None
        with _journal_factory_lock:
            original = _syncobj_mod.createJournal
            if durable_journal:
                _syncobj_mod.createJournal = lambda path: DurableFileJournal(path, on_flush=on_journal_flush)
            try:
                super().__init__(self_address, peer_addresses, conf, transportClass=LedgerTransport)
            finally:
                _syncobj_mod.createJournal = original
        if self._election_guard is not None:
            check_pysyncobj_members(self)
        # pysyncobj runs its tick callbacks at the end of a tick's work, just before it
        # polls: the time since the tick started is the work that held the Raft thread.
        self._tick_started = self._tick_sync_s = 0.0
        self._slow_ticks = 0
        self._slow_tick_logged = float("-inf")
        self.addOnTickCallback(self._check_tick_time)

    def _check_tick_time(self) -> None:
        now = time.monotonic()
        took = now - self._tick_started
        if took < SLOW_TICK_LOG_S or not self._tick_started:
            return
        self._slow_ticks += 1
        if now - self._slow_tick_logged >= SLOW_TICK_LOG_PERIOD_S:
            log.warning("slow Raft tick: %.0f ms of work, %.0f ms of it the journal sync (%d slow ticks since "
                        "the last report); a sync this slow is the disk (another writer's writeback on the "
                        "same file system), the rest an apply or a send", took * 1000, self._tick_sync_s * 1000,
                        self._slow_ticks)
            self._slow_ticks = 0
            self._slow_tick_logged = now

    # -- durability hooks -------------------------------------------------------
    def _journal(self):
        return getattr(self, "_SyncObj__raftLog", None)

    def _sync_journal(self) -> None:
        j = self._journal()
        if self._durable and isinstance(j, DurableFileJournal):
            j.sync()

    def _onTick(self, timeToWait=0.0):  # noqa: N802,N803
        # Entries appended since the last tick (leader proposals, the leader's
        # no-op) reach the disk before the commit index is computed from them.
        self._tick_started = time.monotonic()
        self._sync_journal()
        self._tick_sync_s = time.monotonic() - self._tick_started
        if self._election_guard is not None:
            self._election_guard.before_tick()
        super()._onTick(timeToWait)

    # -- status -------------------------------------------------------------------
    def is_leader(self) -> bool:
        """This replica believes it leads. It can stay true for up to
        ``leaderFallbackTimeout`` (with CheckQuorum, ``raftMaxTimeout``: raft/prevote.py)
        on a leader cut off from the majority: never serve a linearizable read on it
        alone (use a read barrier)."""
        return self._isLeader()

    def leader_address(self) -> str | None:
        """The leader's Raft address, None while no leader is known (cheaper than status())."""
        leader = self._getLeader()
        return None if leader is None else leader.address

    def status(self) -> ReplicaStatus:
        st = self.getStatus()
        leader = st["leader"]
        return ReplicaStatus(
            role=_ROLES.get(st["state"], str(st["state"])),
            term=st["raft_term"],
            commit_index=st["commit_idx"],
            last_applied=st["last_applied"],
            leader_address=None if leader is None else leader.address,
            ready=self.isReady(),
            log_size=st["log_len"],
        )
