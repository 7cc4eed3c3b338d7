"""``LedgerService/ExportAudit``: the audit export as a server stream, for auditors.

What it sends, for heights ``from_height..to_height`` in commit order: per block, the
certificate that proves its transactions (when it differs from the last one sent),
then one :class:`AuditRecord` per transaction: height, position in the block, leaf
index in the chain's transaction log, tx hash, signer and key id (the envelope's),
operation, result (:class:`TransactionResult`, failed events only, as Submit answers),
the SignedTransaction bytes exactly as committed, and the RFC 6962 audit path of that
leaf (RFC 9162 §2.1.3) in the tree of the checkpoint sent before it.

Which checkpoint proves a block h: the first height c >= h whose checkpoint a majority
of its certifying set signed (:meth:`Cosigner.certificate`), searched up to the newest
certified height: normally c = h (every validator signs every block), later only when
a majority never signed h. A block no certified checkpoint covers yet (to_height above
the newest certified height) is sent with ``tree_size`` 0 and no proof. The records
and checkpoints are exactly what ``GetInclusionProof`` serves for one transaction; the
stream saves an auditor one call per transaction.

Trust model. Who may call: the ``auditor`` role only (api.authz; a member is refused
PERMISSION_DENIED by the interceptor before any work, since the export shows every
member's transactions). What a hostile auditor can do with it: read history, which
its role already allows, and cost a validator one full history read per call, so at
most :data:`AUDIT_STREAMS_MAX` streams run at once per validator (more: RESOURCE_EXHAUSTED)
and a stream stops as soon as its client goes away. What a compromised validator can
do: send altered bytes, or leave transactions out: the auditor's ``audit verify-export``
checks every proof against certificates signed by a majority of the genesis
validators, and that the leaves are 0, 1, 2, ... with none missing, so it cannot go
unnoticed (it can still refuse to answer: ask another validator).

Errors (gRPC status): INVALID_ARGUMENT for from_height > to_height or to_height above
the head; UNIMPLEMENTED when the validator serves no checkpoints; RESOURCE_EXHAUSTED
when AUDIT_STREAMS_MAX streams are open.
"""
from __future__ import annotations

import threading
from typing import Iterator

import grpc

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.api.mapping import result_to_pb
from raft_ledger_node.ledger.merkle_log import MerkleLog
from raft_ledger_node.ledger.types import Operation, TxResult

__all__ = ["AUDIT_STREAMS_MAX", "AuditStreamer", "COVER_SEARCH_HEIGHTS_MAX"]

#: ExportAudit streams served at once by one validator (each reads the whole history).
AUDIT_STREAMS_MAX = 2
#: Heights searched past an uncertified block for the certificate that covers it; past
#: that, the block's transactions go without proof (tree_size 0).
COVER_SEARCH_HEIGHTS_MAX = 4096

_OPERATIONS = {"create_accounts": Operation.create_accounts, "create_transfers": Operation.create_transfers,
               "governance": Operation.governance}


class _StoreNodes:
    """The store's Merkle log nodes as a merkle_log.NodeStore (read-only)."""

    def __init__(self, store) -> None:
        self.get = store.merkle_node

    def put(self, level, index, value):  # pragma: no cover - never written through here
        raise TypeError("read-only")


def _envelope_fields(envelope: bytes) -> tuple[str, str, str]:
    """(member id, key id, operation name) of a committed envelope ("" where it does not parse)."""
    stx = pb.SignedTransaction()
    try:
        stx.ParseFromString(envelope)
    except Exception:  # protobuf's DecodeError; a committed envelope always parses
        return "", "", ""
    body = pb.Transaction()
    try:
        body.ParseFromString(stx.body)
        kind = body.WhichOneof("operation") or ""
    except Exception:
        kind = ""
    return stx.member_id, stx.key_id, kind


class AuditStreamer:
    """Serves ExportAudit from ``store`` (RocksStore: headers, blocks, envelopes, the
    transaction index, log nodes) and ``cosigner`` (certificates; None: UNIMPLEMENTED).
    Thread-safe: one instance per validator, shared by the streams."""

    def __init__(self, store, cosigner, *, streams_max: int = AUDIT_STREAMS_MAX) -> None:
        self._store = store
        self._cosigner = cosigner
        self._slots = threading.BoundedSemaphore(streams_max)
        self._streams_max = streams_max

    def _covering(self, height: int, latest: int):
        """The first certified Certificate at a height in [height, latest] (bounded search), or None."""
        for c in range(height, min(latest, height + COVER_SEARCH_HEIGHTS_MAX) + 1):
            cert = self._cosigner.certificate(c)
            if cert is not None and cert.certified:
                return cert
        return None

    def export(self, request: pb.ExportAuditRequest, context) -> Iterator[pb.ExportAuditResponse]:
        """The stream (a generator of ExportAuditResponse); see the module docstring."""
        if self._cosigner is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this validator serves no checkpoints")
        head = self._store.head().height
        latest = self._cosigner.latest_certified
        first = max(1, request.from_height)
        last = request.to_height or latest
        if last > head:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"to_height {last} is above the head ({head})")
        if first > last:
            if request.to_height == 0 and request.from_height <= head:
                return  # nothing certified from there yet: an empty export, not an error
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"from_height {first} is above to_height {last}")
        if not self._slots.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self._streams_max} ExportAudit streams already open on this validator "
                          "(AUDIT_STREAMS_MAX); retry later")
        try:
            yield from self._blocks(first, last, context)
        finally:
            self._slots.release()

    def _blocks(self, first: int, last: int, context) -> Iterator[pb.ExportAuditResponse]:
        log = None
        sent_height = 0
        cert = None
        for height in range(first, last + 1):
            if not context.is_active():
                return
            block = self._store.get_block(height)
            if block is None:  # pragma: no cover - heights 1..head are contiguous
                context.abort(grpc.StatusCode.INTERNAL, f"block {height} is missing from this validator's store")
            header, tx_hashes = block
            if cert is None or cert.height < height:
                cert = self._covering(height, max(self._cosigner.latest_certified, height))
                # The log as of now: it holds every tree size up to the head's.
                log = MerkleLog(_StoreNodes(self._store), self._store.head().header.tree_size)
            size = cert.checkpoint.tree_size if cert is not None else 0
            if cert is not None and cert.height != sent_height and tx_hashes:
                sent_height = cert.height
                yield pb.ExportAuditResponse(to_height=last, checkpoint=pb.Checkpoint(
                    height=cert.height, note=cert.note, signatures=cert.signatures, quorum=cert.quorum))
            first_leaf = header.tree_size - len(tx_hashes)
            for pos, tx_hash in enumerate(tx_hashes):
                envelope = self._store.get_transaction(tx_hash) or b""
                found = self._store.get_tx_result(tx_hash)
                codes, rejection = (found[1], found[2] if len(found) > 2 else 0) if found is not None else ((), 0)
                signer, key_id, kind = _envelope_fields(envelope)
                leaf = first_leaf + pos
                proof = log.inclusion_proof(leaf, size) if leaf < size else []
                result = result_to_pb(TxResult(tx_hash, height, tuple(codes), rejection),
                                      _OPERATIONS.get(kind, Operation.create_transfers))
                yield pb.ExportAuditResponse(to_height=last, record=pb.AuditRecord(
                    height=height, index=pos, leaf_index=leaf, tx_hash=tx_hash, signer=signer, key_id=key_id,
                    operation=kind, result=result, transaction=envelope, tree_size=size if leaf < size else 0,
                    proof=proof))
