"""LedgerReplica: the validator's Raft replica, one replicated method ``apply_entry(bytes)``.

* **Exactly-once apply.** Inside the replicated method the entry's Raft index is
  ``raftLastApplied + 1``; the state machine (node/state_machine.py) writes it
  with the block in one WriteBatch and skips entries at or below it on replay.
* **The leader does not decode its own entries.** :meth:`LedgerReplica.propose`
  keeps the decoded entry the batcher encoded and applies that when it commits.
* **Apply never raises.** A raising ``@replicated`` method is retried forever and
  wedges the node. Malformed entries are recorded as applied with no block; a
  storage failure (or a core bug on a well-formed entry) stops the process
  (fail-stop, exit code 74) with a clear log line, because skipping a block
  would make this validator diverge.
* **Snapshots are RocksDB checkpoints** (raft/snapshot.py).
* **Linearizable reads** commit a read barrier through the log (:meth:`read_barrier`).
* **Membership follows the governed validator set** (:meth:`_sync_membership`). After
  every applied block that changed the governed configuration, each validator sets
  pysyncobj's configuration to the governed voters with the library's single-server
  change (``__doChangeCluster``), in the tick thread, at the same log position on every
  validator; after a snapshot is installed, from the snapshot's configuration; at
  start, the peers passed in are the governed voters at the applied index. There is
  no second record of membership (pysyncobj's own MEMBERSHIP entries, which take
  effect at append, roll back wrongly on truncation and have no one-at-a-time guard,
  are not used: ``dynamicMembershipChange`` stays off), so the two never disagree at
  any applied index. Like etcd's raft, a change takes effect when applied, and the API
  lets one change be in flight at a time (node/api/servicers.py).
* **Learners** are pysyncobj read-only nodes (``self_address=None``): the leader sends
  them the snapshot and the log, they apply it, and they are in no majority.

Journal durability, the transport fixes and :meth:`status` come from
:class:`~raft_ledger_node.raft.durable.DurableReplica`.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable, NoReturn

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.monotonic import monotonic as monotonicTime
from pysyncobj.node import TCPNode

from raft_ledger_node.ledger import codec, limits
from raft_ledger_node.ledger.types import Entry, TxResult
from raft_ledger_node.raft import snapshot
from raft_ledger_node.raft.tls import PinnedPeer
from raft_ledger_node.raft.read_barrier import ReadBarrierBatcher
from raft_ledger_node.raft.durable import _ROLES, DurableReplica
from raft_ledger_node.state_machine import CoreFailure, Outcome, StateMachine, StateMachineError

log = logging.getLogger("ledger.replication")

EXIT_STORAGE_FAILURE = 74  # EX_IOERR
#: Log compaction waits while a snapshot is being sent, up to this many times its threshold.
COMPACTION_DEFER_FACTOR = 4
#: Seconds a leader keeps replicating to a removed voter so it learns of its removal.
LEAVING_MAX_S = 5.0


class LedgerReplica(DurableReplica):
    """The validator's Raft replica: one replicated method, ``apply_entry(bytes)``.

    ``store`` must offer the StateReader port plus ``commit(ws, applied_index)``,
    ``mark_applied(index)`` and ``applied_index()`` (see StateMachine), and for
    snapshots ``checkpoint``/``replace_from_checkpoint``/``path`` (see
    raft/snapshot.py). ``on_applied(index, results)`` (tests) is called in the
    tick thread after each applied entry (``results`` None for an entry with no block).
    """


    def __init__(
        self,
        self_address: str | None,
        peer_addresses: list[str],
        conf: SyncObjConf,
        store,
        *,
        durable_journal: bool = True,
        raft_fixes: bool = True,
        on_applied: Callable[[int, list[TxResult] | None], None] | None = None,
        on_journal_flush: Callable[[int], None] | None = None,
        peer_dial: dict[str, str] | None = None,
        raft_tls=None,
        decode_proposal=None,
        decode_envelope=None,
        chain_id: str | None = None,
        validator_id: str | None = None,
        data_dir_id: bytes = b"",
        vote_after_term: int = 0,
        election_guard: bool = True,
    ) -> None:
        if conf.appendEntriesBatchSizeBytes <= limits.raft_command_bytes_max:
            raise ValueError("appendEntriesBatchSizeBytes must exceed raft_command_bytes_max (a pickled entry)")
        # State before SyncObj.__init__: its tick thread starts inside it.
        self._store = store
        self._machine = StateMachine(store, decode_proposal=decode_proposal, decode_envelope=decode_envelope,
                                     chain_id=chain_id)
        self._on_applied = on_applied
        # Entries this validator proposed, decoded: entry bytes -> Entry (see propose).
        self._proposed: dict[bytes, Entry] = {}
        self._proposed_lock = threading.Lock()
        self._read_barriers = ReadBarrierBatcher(self._propose_read_barrier)
        # Membership (see _sync_membership); a learner is a read-only node (self_address None).
        self._validator_id = validator_id
        self._data_dir_id = data_dir_id
        #: Votes in terms up to this one are refused (a promoted directory's first terms: see transport).
        self._vote_after_term = vote_after_term
        cfg = store.configuration()
        self._config_version = cfg.version if cfg is not None else 0
        self._own = cfg.validator(validator_id) if (cfg is not None and validator_id) else None
        #: Voters removed by governance this leader still replicates to until they have
        #: learned it: Raft address -> [node, removing raft index, deadline, acked at].
        self._leaving: dict[str, list] = {}
        # Every Raft role change and term change is logged (_on_state_changed, _log_term).
        self._logged_term: int | None = None
        on_state_changed = conf.onStateChanged
        conf.onStateChanged = lambda old, new: self._on_state_changed(old, new, on_state_changed)
        conf.serializer = lambda file_name, raft_data: snapshot.write_snapshot(store, file_name, raft_data)
        conf.deserializer = lambda file_name: snapshot.read_snapshot(store, file_name)
        super().__init__(
            self_address,
            peer_addresses,
            conf,
            durable_journal=durable_journal,
            raft_fixes=raft_fixes,
            peer_dial=peer_dial,
            on_journal_flush=on_journal_flush,
            raft_tls=raft_tls,
            election_guard=election_guard,
        )

    def propose(self, entry: bytes, decoded: Entry, callback) -> None:
        """Propose ``entry`` (``codec.encode_entry(decoded)``) as the next block.

        The leader keeps ``decoded`` and applies it when the entry commits instead
        of decoding its own bytes again (3-4% of a leader's CPU at peak). Followers,
        and a leader that replays, decode the bytes (the envelopes only) and verify
        their signatures at apply: the results are the same for an honest leader.
        ``callback(result, error)`` as for any pysyncobj replicated call.
        """
        with self._proposed_lock:
            if len(self._proposed) >= limits.proposed_entries_kept_max:
                del self._proposed[next(iter(self._proposed))]
            self._proposed[entry] = decoded
        self.apply_entry(entry, callback=callback)

    @replicated
    def apply_entry(self, entry: bytes):
        """Apply one Raft entry as one block. Never raises (see module docstring).

        Returns the block's results, the head height for a read barrier (so the
        caller can tell it committed), None for a replayed or malformed entry.
        """
        raft_index = self.raftLastApplied + 1
        with self._proposed_lock:
            decoded = self._proposed.pop(entry, None)
        try:
            # The entry's own term from the log, not raftCurrentTerm (see StateMachine).
            done = self._machine.apply(entry if decoded is None else decoded, self._entry_term(raft_index), raft_index)
        except StateMachineError as e:
            self._fail_stop(e)
        if done.outcome is Outcome.REPLAYED:
            return None  # replay after restart: already in RocksDB
        if done.outcome is Outcome.BLOCK:
            cfg = self._store.configuration()
            if cfg is not None and cfg.version != self._config_version:
                self._sync_membership(cfg, raft_index)
        self._notify(raft_index, done.results)
        return done.height if done.outcome is Outcome.READ_BARRIER else done.results

    # -- membership ------------------------------------------------------------------
    def _sync_membership(self, cfg, raft_index: int | None = None) -> None:
        """Make pysyncobj's configuration the governed voters of ``cfg`` (tick thread).

        TLS pins first (a validator added by governance can connect, as a learner's
        read-only link or as a voter), then one ``__doChangeCluster`` per difference:
        the governed set changes one server per block (node/ledger/governance.py), so
        this is a single-server change (Raft thesis §4.1). A leader never removes
        itself (pysyncobj refuses, SO:1405): it hands over leadership when it applies
        its removal, and the composition root stops it (main.py).
        """
        me = self.selfNode
        tls = self._raft_tls
        if tls is not None:
            pins = {v.raft_address: PinnedPeer(v.id, v.raft_address, v.tls_cert_sha256)
                    for v in cfg.validators if v.id != self._validator_id and v.tls_cert_sha256}
            if me is None:
                # A learner replaying history (it may have started from a newer configuration
                # it was given) only ever adds pins and links: it is in no majority.
                pins = {**tls.peers, **pins}
            if dict(tls.peers) != pins:
                tls.peers.clear()
                tls.peers.update(pins)
        voters = {v.raft_address for v in cfg.voters}
        targets = voters - ({me.address} if me is not None else set())
        current = {n.address: n for n in self.otherNodes}
        for addr in sorted(targets - current.keys()):
            self._SyncObj__doChangeCluster(["add", addr, TCPNode(addr)])
            log.warning("raft configuration: added voter %s (configuration version %d)", addr, cfg.version,
                        extra={"raft_index": raft_index, "height": self._store.head().height})
        for addr in list(self._leaving):
            if addr in targets:
                del self._leaving[addr]  # added back before it left
        for addr in sorted(current.keys() - targets if me is not None else ()):
            if raft_index is not None and self.is_leader():
                # The leader keeps replicating to a removed voter until it holds the removing
                # entry and has been sent a commit index past it, so it applies its removal and
                # stops (the others never send to it again). Majorities stay safe meanwhile:
                # the old and new configurations differ by one server (thesis §4.1).
                if addr not in self._leaving:
                    self._leaving[addr] = [current[addr], raft_index, monotonicTime() + LEAVING_MAX_S, None]
                continue
            self._drop_voter(addr, current[addr], cfg.version)
        own = cfg.validator(self._validator_id) if self._validator_id else None
        if self._validator_id and own is None and self._own is not None and self.is_leader():
            # A leader leads a configuration without itself until it steps down (the thesis
            # §4.2.2): hand over to the most caught-up voter (TimeoutNow) now; the
            # composition root stops this validator once it has applied its removal.
            log.warning("validator %s: removed by governance while leading; handing over leadership",
                        self._validator_id)
            self.transferLeadership(None, callback=lambda res, err: None)
        self._own = own
        self._config_version = cfg.version

    def _drop_voter(self, addr: str, node, version: int | None = None) -> None:
        self._leaving.pop(addr, None)
        if node in self.otherNodes:
            self._SyncObj__doChangeCluster(["rem", addr, node])
            log.warning("raft configuration: removed voter %s%s", addr,
                        "" if version is None else f" (configuration version {version})")

    def _on_state_changed(self, old: int, new: int, then=None) -> None:
        """pysyncobj's ``onStateChanged`` (tick thread): log "raft role follower -> leader in term 7".
        pysyncobj becomes candidate before it increments the term (SO:639), so that line
        names the term it stands for: "raft role follower -> candidate for term 7"."""
        self._log_term()
        role = _ROLES.get(new, str(new))
        if role == "candidate":
            term, where = self.raftCurrentTerm + 1, "for"
        else:
            term, where = self.raftCurrentTerm, "in"
        log.info("raft role %s -> %s %s term %d", _ROLES.get(old, old), role, where, term,
                 extra={"raft_role": role, "raft_term": term})
        if then is not None:
            then(old, new)

    def _log_term(self) -> None:
        """Log "raft term 6 -> 7" once per term change (tick thread; the first tick only records it)."""
        term = self.raftCurrentTerm
        if term != self._logged_term:
            if self._logged_term is not None:
                log.info("raft term %d -> %d", self._logged_term, term, extra={"raft_term": term})
            self._logged_term = term

    def _onTick(self, timeToWait=0.0):  # noqa: N802,N803
        super()._onTick(timeToWait)
        self._log_term()
        if self._leaving:
            self._finish_leaving()

    def _finish_leaving(self) -> None:
        """Drop each removed voter once it has acknowledged its removing entry and two
        heartbeats (which carry the commit index) have gone out since, or after
        ``LEAVING_MAX_S`` (a dead one), or at once if this validator no longer leads."""
        now = monotonicTime()
        leader = self.is_leader()
        match = self._SyncObj__raftMatchIndex
        commit = self._SyncObj__raftCommitIndex
        connected = self._SyncObj__connectedNodes
        for addr, item in list(self._leaving.items()):
            node, index, deadline, acked_at = item
            if not leader or now > deadline or node not in connected:  # a dead one cannot learn it
                self._drop_voter(addr, node)
            elif match.get(node, 0) >= index and commit >= index:
                if acked_at is None:
                    item[3] = now
                elif now - acked_at >= 2 * self.conf.appendEntriesPeriod:
                    self._drop_voter(addr, node)

    def _SyncObj__tryLogCompaction(self):  # noqa: N802
        """pysyncobj's log compaction (SO:1425), but not while a snapshot is being sent to
        a peer (a new validator catching up), unless the journal holds more than
        ``COMPACTION_DEFER_FACTOR`` times the compaction threshold: every new snapshot
        restarts every transmission from byte 0 (pysyncobj's Serializer drops them), so
        under steady writes a learner whose snapshot takes longer to send than the
        cluster takes to fill the threshold would never catch up (seen at 10^6 stored
        transfers: 127 MB at ~4 MB/s, a snapshot every ~20 s)."""
        sending = getattr(self._SyncObj__serializer, "_Serializer__transmissions", None)
        journal = self._journal()
        if sending and journal is not None and len(journal) <= COMPACTION_DEFER_FACTOR * self.conf.logCompactionMinEntries:
            return
        SyncObj._SyncObj__tryLogCompaction(self)

    def _SyncObj__loadDumpFile(self, clearJournal):  # noqa: N802,N803
        """pysyncobj's snapshot load (start-up and install, SO:1487), then the configuration
        the installed state governs (pysyncobj restores its own only with dynamic membership)."""
        SyncObj._SyncObj__loadDumpFile(self, clearJournal)
        cfg = self._store.configuration()
        if cfg is not None and cfg.version != self._config_version:
            self._sync_membership(cfg)

    def raft_configuration(self) -> list[str]:
        """pysyncobj's voters on this validator (Raft addresses, sorted; itself when it votes)."""
        me = self.selfNode
        return sorted({n.address for n in self.otherNodes} | ({me.address} if me is not None else set()))

    def membership_view(self) -> dict[str, tuple[bool, int]]:
        """Raft address or validator id -> (link up, match index on the leader) as this
        validator sees it: voters by Raft address, learners' read-only links by the
        validator id their pinned certificate names (plaintext: ``readonly-<n>``)."""
        out: dict[str, tuple[bool, int]] = {}
        connected = self._SyncObj__connectedNodes
        match = self._SyncObj__raftMatchIndex if self.is_leader() else {}
        for n in self.otherNodes:
            out[n.address] = (n in connected, match.get(n, 0))
        transport = self._SyncObj__transport
        for n in list(getattr(transport, "_readonlyNodes", ())):
            conn = transport._connections.get(n)
            peer = getattr(conn, "peer", None)
            key = peer.validator_id if peer is not None else f"readonly-{n.id}"
            out[key] = (n in connected, match.get(n, 0))
        return out

    def reachable_voters(self, within_s: float) -> set[str]:
        """On the leader: its own Raft address and the voters that answered within ``within_s``."""
        me = self.selfNode
        if me is None or not self.is_leader():
            return set()
        last = self._SyncObj__lastResponseTime
        now = monotonicTime()
        return {me.address} | {n.address for n in self.otherNodes if now - last.get(n, 0.0) <= within_s}

    def _entry_term(self, raft_index: int) -> int:
        """Term of the log entry at ``raft_index`` (it is in the log while it is applied)."""
        log_ = self._journal()
        entry = log_[raft_index - log_[0][1]]
        if entry[1] != raft_index:
            raise LookupError(f"raft log holds index {entry[1]} where {raft_index} was expected")
        return entry[2]

    def _fail_stop(self, e: StateMachineError) -> NoReturn:
        """Stop the process: skipping the entry would make this validator diverge."""
        if isinstance(e, CoreFailure):
            # A bug in the core on a well-formed entry: every replica hits it on
            # replay, so stopping is the only way not to diverge.
            log.critical("apply of raft entry %d raised; stopping this validator", e.raft_index, exc_info=e.__cause__,
                         extra={"raft_index": e.raft_index})
        else:
            log.critical(
                "storage write failed (%s). The validator stops so it never serves or builds on a "
                "missing block. Free disk space / fix the data directory, then start it again: "
                "it replays the Raft journal from its applied index.",
                e.__cause__,
                exc_info=e.__cause__,
                extra={"raft_index": e.raft_index},
            )
        logging.shutdown()
        os._exit(EXIT_STORAGE_FAILURE)

    def _notify(self, raft_index: int, results) -> None:
        if self._on_applied is not None:
            try:
                self._on_applied(raft_index, results)
            except Exception:
                log.exception("on_applied callback failed")

    def read_barrier(self, timeout_s: float) -> bool:
        """Wait for a read barrier committed through the log after this call began (Raft §8:
        a leader must exchange heartbeats with a majority before answering read-only
        requests; committing an entry in its term does that). Concurrent readers share
        barriers (:mod:`.read_barrier`). True once applied here; False on timeout or
        lost leadership.
        """
        return self._read_barriers.wait(timeout_s)

    def _propose_read_barrier(self, done) -> None:
        self.apply_entry(codec.READ_BARRIER_ENTRY, callback=lambda res, err: done(err == 0 and res is not None))
