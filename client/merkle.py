"""Verification of RFC 9162 Merkle proofs (Certificate Transparency v2), standard library only.

The tree is RFC 6962 §2.1 / RFC 9162 §2.1.1: ``MTH({}) = SHA-256()``; a leaf hash is
``SHA-256(0x00 || data)``; an interior node is ``SHA-256(0x01 || left || right)``, the
left subtree holding the largest power of two of leaves smaller than ``n``. Every hash
is 32 bytes.

* :func:`verify_inclusion` — RFC 9162 §2.1.3.2: the leaf hash at ``index`` is part of
  the tree of ``tree_size`` leaves whose root is ``root``.
* :func:`verify_consistency` — RFC 9162 §2.1.4.2: the tree of ``size1`` leaves with root
  ``root1`` is a prefix of the tree of ``size2`` leaves with root ``root2``.

Both raise :class:`ProofError` on any failure (never return False): index out of range,
size1 > size2, size1 = 0, a proof of the wrong length, an element that is not 32 bytes,
or a recomputed root that differs. The checks pass the published vectors of
transparency-dev/merkle (``tests/data/merkle``), which is also what Go's
``golang.org/x/mod/sumdb/tlog`` verifies.

The node side builds the proofs (``raft_ledger_node.ledger.merkle_log``) with its own
copy of the two hash functions, because the pure core imports nothing outside itself;
``tests/unit/test_merkle_log.py`` checks the two hash identically.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "ProofError",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_inclusion_proof",
    "root_from_consistency_proof",
    "verify_inclusion",
    "verify_consistency",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A Merkle proof does not prove what it claims; the message says which check failed."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 §2.1 leaf hash: ``SHA-256(0x00 || data)`` (32 bytes)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 §2.1 interior node hash: ``SHA-256(0x01 || left || right)`` (32 bytes)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves (RFC 6962 §2.1). O(n) hashes, O(log n) stack.

    The reference a verifier can use on a small list; the node never rebuilds this way.
    """
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return bytes(leaf_hashes[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(root(leaf_hashes[:k]), root(leaf_hashes[k:]))


def _check_hash(what: str, value: bytes) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        size = len(value) if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise ProofError(f"{what} must be {HASH_SIZE} bytes, got {size}")


def _check_size(what: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProofError(f"{what} must be a non-negative integer, got {value!r}")


def _inclusion_proof_size(index: int, tree_size: int) -> int:
    """Length of the RFC 9162 inclusion proof of ``index`` in a tree of ``tree_size``."""
    inner = (index ^ (tree_size - 1)).bit_length()
    return inner + bin(index >> inner).count("1")


def root_from_inclusion_proof(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` yields for ``leaf_hash`` at ``index`` (RFC 9162 §2.1.3.2 steps 1–4).

    Shapes: ``leaf_hash`` and every proof element are 32 bytes; ``0 <= index < tree_size``;
    ``len(proof)`` is exactly the length RFC 9162 gives for that (index, size).
    Raises :class:`ProofError` on any of those; the caller compares the result to a root.
    """
    _check_size("index", index)
    _check_size("tree_size", tree_size)
    if index >= tree_size:
        raise ProofError(f"index {index} is out of range for tree size {tree_size}")
    _check_hash("leaf hash", leaf_hash)
    proof = list(proof or ())
    want = _inclusion_proof_size(index, tree_size)
    if len(proof) != want:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, index {index} in size {tree_size} needs {want}")
    for i, p in enumerate(proof):
        _check_hash(f"inclusion proof element {i}", p)
    fn, sn, r = index, tree_size - 1, bytes(leaf_hash)
    for p in proof:
        if sn == 0:  # pragma: no cover - excluded by the length check above
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # pragma: no cover - excluded by the length check above
        raise ProofError("inclusion proof is shorter than the path to the root")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``tree_size`` leaves with ``root``.

    RFC 9162 §2.1.3.2. Returns None on success; raises :class:`ProofError` otherwise
    (see :func:`root_from_inclusion_proof`, or "root mismatch").
    """
    computed = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)
    if computed != bytes(root):
        raise ProofError(f"inclusion proof of index {index} in size {tree_size} yields root "
                         f"{computed.hex()}, expected {bytes(root).hex()}")


def root_from_consistency_proof(size1: int, size2: int, proof: Sequence[bytes], root1: bytes) -> bytes:
    """The root of size ``size2`` that ``proof`` yields from ``root1`` (RFC 9162 §2.1.4.2).

    Checks ``root1`` against the proof on the way (step 8's first comparison) and raises
    :class:`ProofError` if it does not match, if ``size1`` is 0 or greater than ``size2``,
    if the proof is empty when the sizes differ (or not empty when they are equal), or if
    it has the wrong length. Shapes: proof elements are 32 bytes.
    """
    _check_size("size1", size1)
    _check_size("size2", size2)
    proof = list(proof or ())
    if size1 > size2:
        raise ProofError(f"size1 {size1} is greater than size2 {size2}")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless (size1 = 0)")
    if size1 == size2:
        if proof:
            raise ProofError(f"sizes are equal ({size1}) but the consistency proof is not empty")
        return bytes(root1)
    if not proof:
        raise ProofError(f"empty consistency proof from size {size1} to size {size2}")
    for i, p in enumerate(proof):
        _check_hash(f"consistency proof element {i}", p)
    _check_hash("root1", root1)
    # Step 2: if size1 is an exact power of two, prepend root1.
    path = [bytes(root1)] + proof if size1 & (size1 - 1) == 0 else proof
    fn, sn = size1 - 1, size2 - 1
    # Expected length: the hashes consumed below (after the seed) equal the inclusion
    # proof length of fn in sn + 1, minus the levels skipped in step 4.
    shift = 0
    while fn >> shift & 1:
        shift += 1
    want = 1 + _inclusion_proof_size(fn >> shift, (sn >> shift) + 1)
    if len(path) != want:
        prepended = len(path) - len(proof)
        raise ProofError(f"consistency proof has {len(proof)} hashes, size {size1} to size {size2} "
                         f"needs {want - prepended}")
    # Step 4: while fn's lowest bit is set, shift both right.
    fn >>= shift
    sn >>= shift
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # pragma: no cover - excluded by the length check above
            raise ProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # pragma: no cover - excluded by the length check above
        raise ProofError("consistency proof is shorter than the path to the root")
    if fr != bytes(root1):
        raise ProofError(f"consistency proof from size {size1} yields old root {fr.hex()}, "
                         f"expected {bytes(root1).hex()}")
    return sr


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree (``size1``, ``root1``) is a prefix of the tree (``size2``, ``root2``).

    RFC 9162 §2.1.4.2. Returns None on success; raises :class:`ProofError` otherwise
    (see :func:`root_from_consistency_proof`, or "root mismatch").
    """
    computed = root_from_consistency_proof(size1, size2, proof, root1)
    if computed != bytes(root2):
        raise ProofError(f"consistency proof from size {size1} to size {size2} yields new root "
                         f"{computed.hex()}, expected {bytes(root2).hex()}")
