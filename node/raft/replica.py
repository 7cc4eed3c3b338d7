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

Journal durability, the transport fixes and :meth:`status` come from
:class:`~raft_ledger_node.raft.durable.DurableReplica`.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable, NoReturn

from pysyncobj import SyncObjConf, replicated

from raft_ledger_node.ledger import codec, limits
from raft_ledger_node.ledger.types import Entry, TxResult
from raft_ledger_node.raft import snapshot
from raft_ledger_node.raft.read_barrier import ReadBarrierBatcher
from raft_ledger_node.raft.durable import DurableReplica
from raft_ledger_node.state_machine import CoreFailure, Outcome, StateMachine, StateMachineError

log = logging.getLogger("ledger.replication")

EXIT_STORAGE_FAILURE = 74  # EX_IOERR


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
        self_address: str,
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
        self._notify(raft_index, done.results)
        return done.height if done.outcome is Outcome.READ_BARRIER else done.results

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
            log.critical("apply of raft entry %d raised; stopping this validator", e.raft_index, exc_info=e.__cause__)
        else:
            log.critical(
                "storage write failed (%s). The validator stops so it never serves or builds on a "
                "missing block. Free disk space / fix the data directory, then start it again: "
                "it replays the Raft journal from its applied index.",
                e.__cause__,
                exc_info=e.__cause__,
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
