"""Self-contained transaction receipts in the C2SP ``tlog-proof`` shape.

https://c2sp.org/tlog-proof (v1), followed exactly::

    c2sp.org/tlog-proof@v1
    extra <base64 of the SignedTransaction envelope bytes>
    index <zero-based leaf index, decimal, no leading zeros>
    <base64 proof hash>          zero or more, RFC 6962 §2.1.1 order: the leaf's
    ...                          sibling first, up to the root's child
                                 (an empty line)
    <the certificate note, verbatim: see raft_ledger_client.checkpoint>

The spec makes ``extra`` optional and unauthenticated; ours is required and is the
leaf itself: the receipt proves that ``SHA-256(0x00 || extra)`` (RFC 6962 leaf hash)
is leaf ``index`` of the tree the certificate's checkpoint commits to, so the envelope
(body and signature) is authenticated by the inclusion proof, not by trust.

A member hands the ``.tlog-proof`` file to anyone; :func:`verify_receipt` (or Go's
``sumdb/note`` + ``sumdb/tlog``, see ``tests/go/verifier``) checks it offline against
the pinned origin and validator set.

Errors: :class:`~raft_ledger_client.VerificationError` for anything malformed or
unproven (the message names the check); ValueError for a Receipt built with fields
out of shape.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Sequence

from raft_ledger_client import checkpoint as _cp
from raft_ledger_client._exceptions import VerificationError
from raft_ledger_client.checkpoint import Checkpoint
from raft_ledger_client.merkle import HASH_SIZE, ProofError, leaf_hash, verify_inclusion

__all__ = [
    "HEADER",
    "Receipt",
    "proof_hashes_max",
    "receipt_bytes_max",
    "transaction_bytes_max",
    "verify_receipt",
]

HEADER = "c2sp.org/tlog-proof@v1"

#: Envelope bytes in a receipt: the node's ``tx_bytes_max`` (1 MiB; a unit test keeps
#: the two equal, the SDK cannot import the node).
transaction_bytes_max = 1 << 20
#: Inclusion-proof hashes: a tree below 2**63 leaves has paths of at most 63.
proof_hashes_max = 63
#: A whole receipt: header, the base64 envelope, the index, the proof lines, the note.
receipt_bytes_max = (len(HEADER) + 1 + len("extra ") + 4 * ((transaction_bytes_max + 2) // 3) + 1
                     + len("index ") + 19 + 1 + proof_hashes_max * 45 + 1 + _cp.note_bytes_max)


@dataclass(frozen=True)
class Receipt:
    """``transaction``: the envelope bytes (1..transaction_bytes_max); ``leaf_index``:
    its position in the log (int >= 0); ``proof``: 32-byte hashes, at most
    ``proof_hashes_max``; ``note``: the certificate (a signed note, text)."""

    transaction: bytes
    leaf_index: int
    proof: tuple[bytes, ...]
    note: str

    def __post_init__(self) -> None:
        if not isinstance(self.transaction, bytes) or not 0 < len(self.transaction) <= transaction_bytes_max:
            raise ValueError(f"transaction must be 1..{transaction_bytes_max} bytes")
        if not isinstance(self.leaf_index, int) or isinstance(self.leaf_index, bool) or not 0 <= self.leaf_index <= _cp.decimal_max:
            raise ValueError(f"leaf_index must be an int in [0, 2**63), got {self.leaf_index!r}")
        object.__setattr__(self, "proof", tuple(self.proof))
        if len(self.proof) > proof_hashes_max or any(not isinstance(h, bytes) or len(h) != HASH_SIZE for h in self.proof):
            raise ValueError(f"proof must be at most {proof_hashes_max} hashes of {HASH_SIZE} bytes")
        if not isinstance(self.note, str):
            raise ValueError("note must be text")

    def encode(self) -> str:
        """The ``tlog-proof`` text (see the module docstring)."""
        return "".join([
            HEADER, "\n",
            "extra ", base64.b64encode(self.transaction).decode("ascii"), "\n",
            f"index {self.leaf_index}\n",
            *(base64.b64encode(h).decode("ascii") + "\n" for h in self.proof),
            "\n",
            self.note,
        ])

    @classmethod
    def parse(cls, text: str | bytes) -> "Receipt":
        """Parse :meth:`encode`'s text strictly: the header line; an ``extra`` line of
        canonical base64 (required: it is the transaction); ``index`` as a canonical
        decimal; canonical base64 hashes of 32 bytes; the empty line; a well-formed
        signed note (:func:`~raft_ledger_client.checkpoint.parse_note`). Size bounds
        come first. Raises VerificationError("malformed receipt: ...") otherwise.
        Signatures and the proof are not checked here: see :func:`verify_receipt`.
        """
        raw = _cp._utf8(text, "receipt", receipt_bytes_max)
        if len(raw) > receipt_bytes_max:
            raise VerificationError(f"malformed receipt: over {receipt_bytes_max} bytes")
        try:
            decoded = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise VerificationError("malformed receipt: not UTF-8") from None
        header, _, rest = decoded.partition("\n")
        if header != HEADER:
            raise VerificationError(f"malformed receipt: first line is not {HEADER!r}")
        line, _, rest = rest.partition("\n")
        if not line.startswith("extra "):
            raise VerificationError("malformed receipt: no 'extra' line (the transaction)")
        transaction = _cp._decode_b64(line[len("extra "):])
        if not transaction:
            raise VerificationError("malformed receipt: 'extra' is not canonical base64 of a non-empty transaction")
        if len(transaction) > transaction_bytes_max:
            raise VerificationError(f"malformed receipt: transaction over {transaction_bytes_max} bytes")
        line, _, rest = rest.partition("\n")
        if not line.startswith("index "):
            raise VerificationError("malformed receipt: no 'index' line after 'extra'")
        index_text = line[len("index "):]
        if not _cp._DECIMAL.fullmatch(index_text) or len(index_text) > 19 or int(index_text) > _cp.decimal_max:
            raise VerificationError(f"malformed receipt: index {index_text[:40]!r} is not a canonical decimal below 2**63")
        proof = []
        while True:
            line, newline, rest = rest.partition("\n")
            if not newline:
                raise VerificationError("malformed receipt: no empty line before the checkpoint note")
            if line == "":
                break
            if len(proof) == proof_hashes_max:
                raise VerificationError(f"malformed receipt: more than {proof_hashes_max} proof hashes")
            h = _cp._decode_b64(line) if _cp._B64_32.fullmatch(line) else None
            if h is None:
                raise VerificationError(f"malformed receipt: proof line {len(proof) + 1} is not canonical base64 of {HASH_SIZE} bytes")
            proof.append(h)
        _cp.parse_note(rest)  # strict shape now; signatures in verify_receipt
        return cls(transaction, int(index_text), tuple(proof), rest)


def verify_receipt(receipt: Receipt | str | bytes, validators: Sequence[tuple[str, bytes]], origin: str) -> Checkpoint:
    """Verify a receipt offline and return the certified checkpoint it is included in.

    ``receipt``: a :class:`Receipt` or its text (parsed with :meth:`Receipt.parse`).
    ``validators`` and ``origin``: as for
    :func:`~raft_ledger_client.checkpoint.verify_certificate`, which checks the note
    first (every reason it raises applies). Then RFC 9162 §2.1.3.2 inclusion of
    ``SHA-256(0x00 || transaction)`` at ``leaf_index`` in the checkpoint's tree
    (``tree_size``, ``root_hash``) via :func:`raft_ledger_client.merkle.verify_inclusion`;
    a failure raises VerificationError("inclusion proof: ...").
    """
    if not isinstance(receipt, Receipt):
        receipt = Receipt.parse(receipt)
    checkpoint = _cp.verify_certificate(receipt.note, validators, origin)
    if receipt.leaf_index >= checkpoint.tree_size:
        raise VerificationError(f"inclusion proof: index {receipt.leaf_index} is not below the certified "
                                f"tree size {checkpoint.tree_size}")
    try:
        verify_inclusion(leaf_hash(receipt.transaction), receipt.leaf_index, checkpoint.tree_size,
                         receipt.proof, checkpoint.root_hash)
    except ProofError as e:
        raise VerificationError(f"inclusion proof: {e}") from None
    return checkpoint
