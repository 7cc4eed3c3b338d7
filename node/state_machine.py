"""The replicated state machine: one Raft entry in, one block (or none) committed.

``StateMachine(store).apply(entry, term, raft_index)`` is the only place that
wires decode → :func:`~raft_ledger_node.ledger.apply.apply_block` → ``store.commit``
→ applied index. The Raft replica calls it for every committed entry; the unit
tests' ``Ledger`` and the history benchmark drive it directly. It sits above the
store port and below the replica: it knows nothing of pysyncobj, and the pure
core in ``node/ledger/`` knows nothing of it.

* **Exactly once.** ``raft_index`` is written with the block in one WriteBatch;
  an entry at or below the store's applied index is skipped (a replay after a
  restart), so nothing is applied twice across crashes.
* **Read barrier.** :data:`~raft_ledger_node.ledger.codec.READ_BARRIER_ENTRY`
  carries no block; applying it only records its index. Committed by the leader
  in its current term, it means every write acknowledged before it is applied.
* **Malformed entries** (bytes that do not decode) are recorded as applied with
  no block, and logged: every replica decodes the same bytes the same way, so
  they all skip it and stay in agreement.
* **Term from the log.** ``term`` is the entry's own term from the Raft log, not
  the current term: a follower that applies (or replays) the entry in a later
  term must build the same block header.

Failure contract. ``apply`` never raises on a well-formed or malformed entry;
it raises only when going on would make this validator diverge:

* :class:`CoreFailure` — ``apply_block`` raised on a well-formed entry: a bug in
  the core. Every replica hits it on replay (a poison pill), so the caller must
  stop, not skip the entry. Nothing was written.
* :class:`StorageFailure` — the store raised while writing (disk full, I/O
  error). Nothing of the entry is visible (``RocksStore.commit`` is one atomic
  WriteBatch) and the applied index did not move; every later block depends on
  this one, so the caller must stop rather than skip it. Restarted, the
  validator replays the Raft journal from its applied index.

The caller decides what stopping means: the replica fail-stops the process
(``os._exit(74)``, EX_IOERR), a test sees the exception.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, replace

from raft_ledger_node.crypto import verify_ed25519
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.apply import apply_block
from raft_ledger_node.ledger.types import Entry, TxResult, WriteSet
from raft_ledger_node.store import StoreError

log = logging.getLogger("ledger.state_machine")


class StateMachineError(Exception):
    """Applying the entry at ``raft_index`` cannot go on; the cause is ``__cause__``."""

    def __init__(self, raft_index: int, message: str) -> None:
        super().__init__(message)
        self.raft_index = raft_index


class CoreFailure(StateMachineError):
    """``apply_block`` raised on a well-formed entry (a bug; nothing was written)."""


class StorageFailure(StateMachineError):
    """The store raised while writing the entry (nothing of it is visible)."""


class Outcome(enum.Enum):
    BLOCK = "block"  # a block was committed
    READ_BARRIER = "read_barrier"  # the index was recorded, no block
    MALFORMED = "malformed"  # the bytes did not decode; the index was recorded, no block
    REPLAYED = "replayed"  # at or below the applied index: already in the store, nothing done


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one entry did. ``results`` and ``writeset`` are set for a BLOCK only;
    ``height`` is the chain height after the entry."""

    raft_index: int
    outcome: Outcome
    height: int
    results: list[TxResult] | None = None
    writeset: WriteSet | None = None


class StateMachine:
    """Applies Raft entries to ``store`` in log order, one block per entry.

    ``store`` offers the StateReader port (node/ledger/ports.py) plus
    ``commit(ws, applied_index)``, ``mark_applied(index)`` and
    ``applied_index()``: node.store.RocksStore, or node.store_memory.MemoryStore.
    One thread applies (the Raft tick thread); see the module docstring for the
    failure contract.
    """

    def __init__(self, store, *, verify_signature=verify_ed25519, decode_proposal=None, decode_envelope=None,
                 chain_id: str | None = None) -> None:
        self.store = store
        #: ``decode_envelope(envelope) -> Tx``: decodes a committed SignedTransaction
        #: (``api.validation.tx_from_committed``, injected by the composition root). An
        #: entry's bytes hold only the envelopes; every validator derives what it applies
        #: from them, and apply verifies their signatures. Needed for entries given as bytes.
        self._decode_envelope = decode_envelope
        #: Verifies governance approvals inside apply (deterministic: Ed25519, RFC 8032).
        self._verify_signature = verify_signature
        #: Rebuilds a governance transaction from the proposal bytes its approvals sign
        #: (``api.validation.proposal_from_signed_bytes``, injected by the composition
        #: root): every validator applies the changes it decoded itself from the signed
        #: bytes, never the leader's decoded copy. None: the entry's copy (unit tests).
        self._decode_proposal = decode_proposal
        #: This chain's id: a governance proposal for another chain is refused at apply.
        self._chain_id = chain_id

    def apply(self, entry: bytes | Entry, term: int, raft_index: int) -> Applied:
        """Apply the entry at ``raft_index`` (its bytes, or the Entry they encode) of Raft term ``term``.

        Passing the Entry the leader's ingress decoded is the same as passing its bytes,
        because ``decode_envelope`` decodes each envelope exactly as ingress did
        (tests/unit/test_committed_envelope.py), except that a transaction decoded
        from bytes also has its signature verified at apply.
        Raises only CoreFailure or StorageFailure.
        """
        store = self.store
        if raft_index <= store.applied_index():
            return Applied(raft_index, Outcome.REPLAYED, store.head().height)
        if isinstance(entry, Entry):
            decoded = entry
        elif entry == codec.READ_BARRIER_ENTRY:
            self._mark_applied(raft_index)
            return Applied(raft_index, Outcome.READ_BARRIER, store.head().height)
        else:
            try:
                raw = codec.decode_entry(entry)
            except codec.CodecError as e:
                log.error("raft entry %d is malformed (%s); recorded as applied with no block", raft_index, e)
                self._mark_applied(raft_index)
                return Applied(raft_index, Outcome.MALFORMED, store.head().height)
            if self._decode_envelope is None:
                raise CoreFailure(raft_index, "a StateMachine given entry bytes needs decode_envelope")
            try:
                decoded = Entry(raw.proposed_timestamp, tuple(self._decode_envelope(e) for e in raw.envelopes))
            except Exception as e:
                raise CoreFailure(raft_index, f"decoding the envelopes of raft entry {raft_index} raised: {e!r}") from e
        try:
            if isinstance(entry, Entry) and self._decode_proposal is not None and any(tx.governance is not None for tx in decoded.txs):
                decoded = Entry(decoded.proposed_timestamp, tuple(
                    tx if tx.governance is None else replace(tx, governance=self._decode_proposal(tx.governance))
                    for tx in decoded.txs))
            results, ws = apply_block(store, decoded, term, raft_index, verify_signature=self._verify_signature,
                                      chain_id=self._chain_id)
        except StoreError as e:  # a read the block needed failed (a corrupt block, an I/O error)
            raise StorageFailure(raft_index, f"storage read for raft entry {raft_index} failed: {e}") from e
        except Exception as e:
            raise CoreFailure(raft_index, f"apply of raft entry {raft_index} raised: {e!r}") from e
        try:
            store.commit(ws, raft_index)
        except Exception as e:
            raise StorageFailure(raft_index, f"storage write of raft entry {raft_index} failed: {e}") from e
        return Applied(raft_index, Outcome.BLOCK, ws.header.height, results, ws)

    def _mark_applied(self, raft_index: int) -> None:
        try:
            self.store.mark_applied(raft_index)
        except Exception as e:
            raise StorageFailure(raft_index, f"storage write of raft entry {raft_index} failed: {e}") from e
