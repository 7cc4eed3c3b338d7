"""Merkle tree hash of RFC 6962 (Certificate Transparency), section 2.1.

MTH({}) = SHA-256(); leaf = SHA-256(0x00 || d); node = SHA-256(0x01 || l || r),
splitting at the largest power of two smaller than n.
"""
from __future__ import annotations

import hashlib

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(leaves: list[bytes]) -> bytes:
    """MTH over already-hashed leaves (RFC 6962 §2.1). O(n) hashes."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(root_from_leaf_hashes(leaves[:k]), root_from_leaf_hashes(leaves[k:]))
