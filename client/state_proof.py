"""Verification of account-state proofs against a checkpoint's ``state`` root, standard library only.

The validator commits to every account in a 16-ary tree over account positions
(0, 1, 2 ... in creation order; accounts are never deleted). The node builds it in
``raft_ledger_node.ledger.account_tree``; this module re-implements the hashing, as the
SDK never imports the node:

* leaf ``p`` = ``SHA-256(0x00 || record)``, record = :func:`encode_account_record` of the
  account at position ``p``;
* node ``j`` of level ``k + 1`` = ``SHA-256(0x01 || level_k[16j] || ... ||
  level_k[min(16j + 15, n_k - 1)])``; levels stop at the first one with one node (the top);
* root = ``SHA-256(0x02 || N as u64 big-endian || top)``; ``SHA-256(0x02 || 8 zero bytes)``
  for ``N == 0`` (no account, nothing to prove).

A proof for position ``p`` in a tree of ``N`` leaves lists, level by level from the leaves
up to the top (excluded), the 32-byte hashes of the other members of ``p``'s ancestor's
group of up to 16, in index order: ``sum(group size - 1)`` hashes, at most 75 (2400 bytes)
at ``N = 10**6``.

:func:`verify_account_proof` raises :class:`raft_ledger_client.merkle.ProofError` on any
failure (never returns False): a size of 0 or above 2**64 - 1, a position outside the
tree, a proof of the wrong length, an element that is not 32 bytes, or a recomputed root
that differs. The root binds ``N``, so the same proof cannot pass for another size.
"""
from __future__ import annotations

import hashlib
import struct
from typing import Sequence

from .merkle import HASH_SIZE, ProofError

__all__ = [
    "ARITY",
    "EMPTY_ROOT",
    "account_leaf_hash",
    "account_tree_root_from_proof",
    "encode_account_record",
    "verify_account_proof",
]

ARITY = 16
_SIZE_MAX = (1 << 64) - 1
EMPTY_ROOT = hashlib.sha256(b"\x02" + bytes(8)).digest()

# The node's record layout (raft_ledger_node.ledger.codec): id, debits_pending,
# debits_posted, credits_pending, credits_posted, user_data_128 (u128 each), user_data_64,
# user_data_32, ledger, code, flags, timestamp; then the owner as u16-length-prefixed UTF-8.
_ACCOUNT = struct.Struct(">16s16s16s16s16s16sQIIII Q")
_OWNER_BYTES_MAX = 0xFFFF


def encode_account_record(
    *,
    id: int,
    ledger: int,
    code: int,
    owner: str = "",
    flags: int = 0,
    debits_pending: int = 0,
    debits_posted: int = 0,
    credits_pending: int = 0,
    credits_posted: int = 0,
    user_data_128: int = 0,
    user_data_64: int = 0,
    user_data_32: int = 0,
    timestamp: int = 0,
) -> bytes:
    """The account's canonical record bytes, exactly as the validator hashes them (128 + 2 + len(owner) bytes).

    Integers: the six u128 fields, ``user_data_64`` and ``timestamp`` (ns) as u64, the rest
    u32. Raises ValueError for a field out of its range or an owner over 65535 UTF-8 bytes.
    """
    wide = {
        "id": id, "debits_pending": debits_pending, "debits_posted": debits_posted,
        "credits_pending": credits_pending, "credits_posted": credits_posted,
        "user_data_128": user_data_128,
    }
    narrow = {"user_data_64": (user_data_64, 64), "timestamp": (timestamp, 64),
              "user_data_32": (user_data_32, 32), "ledger": (ledger, 32), "code": (code, 32), "flags": (flags, 32)}
    for name, value in wide.items():
        _check_uint(name, value, 128)
    for name, (value, bits) in narrow.items():
        _check_uint(name, value, bits)
    raw_owner = owner.encode()
    if len(raw_owner) > _OWNER_BYTES_MAX:
        raise ValueError(f"owner is {len(raw_owner)} UTF-8 bytes, at most {_OWNER_BYTES_MAX}")
    return (
        _ACCOUNT.pack(
            *(v.to_bytes(16, "big") for v in wide.values()),
            user_data_64, user_data_32, ledger, code, flags, timestamp,
        )
        + len(raw_owner).to_bytes(2, "big")
        + raw_owner
    )


def _check_uint(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must be an integer in [0, 2**{bits}), got {value!r}")


def account_leaf_hash(record: bytes) -> bytes:
    """``SHA-256(0x00 || record)`` (32 bytes)."""
    return hashlib.sha256(b"\x00" + bytes(record)).digest()


def account_tree_root_from_proof(record: bytes, position: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The 32-byte tree root that ``proof`` yields for ``record`` at ``position`` of ``size`` leaves.

    Cost: one SHA-256 of <= 513 bytes per level (``ceil(log16 size)``) and one for the root.
    Raises ProofError if ``size`` is not in [1, 2**64 - 1], ``position`` not in
    [0, size), the proof has the wrong number of elements or an element is not 32 bytes.
    """
    if not isinstance(record, (bytes, bytearray, memoryview)):
        raise ProofError(f"record must be bytes, got {type(record).__name__}")
    for what, value in (("size", size), ("position", position)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProofError(f"{what} must be an integer, got {type(value).__name__}")
    if not 1 <= size <= _SIZE_MAX:
        raise ProofError(f"tree size {size} outside [1, 2**64 - 1]")
    if not 0 <= position < size:
        raise ProofError(f"position {position} outside a tree of {size} leaves")
    proof = list(proof)
    for i, h in enumerate(proof):
        if not isinstance(h, (bytes, bytearray)) or len(h) != HASH_SIZE:
            got = len(h) if isinstance(h, (bytes, bytearray)) else type(h).__name__
            raise ProofError(f"proof element {i} must be {HASH_SIZE} bytes, got {got}")
    node = account_leaf_hash(record)
    j, n, used = position, size, 0
    while n > 1:
        start = j - j % ARITY
        end = min(start + ARITY, n)
        take = end - start - 1
        if used + take > len(proof):
            raise ProofError(f"proof too short: {len(proof)} elements for position {position} of {size}")
        siblings = proof[used : used + take]
        used += take
        at = j - start
        node = hashlib.sha256(b"\x01" + b"".join(siblings[:at]) + node + b"".join(siblings[at:])).digest()
        j //= ARITY
        n = -(-n // ARITY)
    if used != len(proof):
        raise ProofError(f"proof too long: {len(proof)} elements, {used} expected for position {position} of {size}")
    return hashlib.sha256(b"\x02" + size.to_bytes(8, "big") + node).digest()


def verify_account_proof(record: bytes, position: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``record`` is the account at ``position`` of the tree of ``size`` leaves with ``root``.

    ``root`` comes from a certified checkpoint (its ``state`` line); ``size`` may come
    from the server, as the root binds it (a wrong size yields another root). The caller
    still checks that the record is the account it asked for (its id, in the record's
    first 16 bytes). Returns None; raises ProofError on any failure (see :func:`account_tree_root_from_proof`), or
    if ``root`` is not 32 bytes or differs from the recomputed root.
    """
    if not isinstance(root, (bytes, bytearray)) or len(root) != HASH_SIZE:
        got = len(root) if isinstance(root, (bytes, bytearray)) else type(root).__name__
        raise ProofError(f"root must be {HASH_SIZE} bytes, got {got}")
    computed = account_tree_root_from_proof(record, position, size, proof)
    if computed != bytes(root):
        raise ProofError(f"account proof for position {position} of {size} does not match the state root")
