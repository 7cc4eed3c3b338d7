"""An append-only Merkle log over leaf hashes, with proofs for any past size (pure core).

Tree and hashing: RFC 6962 §2.1 (``raft_ledger_node.ledger.merkle``: 0x00 leaf prefix,
0x01 node prefix, split at the largest power of two below n). Proofs: RFC 6962 §2.1.1
(``PATH``, audit paths) and §2.1.2 (``PROOF``/``SUBPROOF``, consistency), which RFC 9162
§2.1.3 and §2.1.4 restate; the SDK verifies them with ``raft_ledger_client.merkle``.

Storage is a port (:class:`NodeStore`): the hash of every *complete* subtree, keyed
``(level, index)`` — the node at level ``l``, index ``i`` covers leaves
``[i * 2**l, (i + 1) * 2**l)``; level 0 holds the leaf hashes. A complete subtree never
changes once its last leaf is appended, so the stored nodes serve every past size.

Costs (n = leaves in the log, s = the size asked about; reads and writes count
``NodeStore`` calls, each returning one 32-byte hash):

* :meth:`MerkleLog.append` writes ``1 + t`` nodes and reads ``t``, t = trailing one bits
  of the new leaf's index: 2 writes amortised, at most ``1 + log2 n``.
* :meth:`MerkleLog.root` of any size ``s <= n``: popcount(s) <= ``1 + log2 s`` reads.
* :meth:`MerkleLog.inclusion_proof` and :meth:`MerkleLog.consistency_proof`: each proof
  element is one stored node, except at most one element covering an incomplete right
  edge, which folds at most ``log2 s`` nodes: under ``2 * (1 + log2 s)`` reads, O(log n).

Nothing ever rebuilds from the leaves. Errors: :class:`MerkleLogError` (a ValueError)
for a size or index out of range; :class:`MissingNodeError` if the store lacks a node
that the log's size says exists (a corrupt or truncated store).
"""
from __future__ import annotations

from typing import Iterable, Protocol

from .merkle import EMPTY_ROOT, node_hash

HASH_SIZE = 32


class MerkleLogError(ValueError):
    """A size or index outside the log (index >= size, size > log size, size1 > size2 ...)."""


class MissingNodeError(MerkleLogError):
    """The store lacks a complete-subtree node that the log's size says was written."""


class NodeStore(Protocol):
    """The port: complete-subtree hashes keyed (level, index). Values are 32 bytes."""

    def get(self, level: int, index: int) -> bytes | None: ...

    def put(self, level: int, index: int, value: bytes) -> None: ...


class MemoryNodeStore:
    """A dict-backed :class:`NodeStore` (tests, and the reference for a RocksDB adapter)."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}

    def get(self, level: int, index: int) -> bytes | None:
        return self.nodes.get((level, index))

    def put(self, level: int, index: int, value: bytes) -> None:
        self.nodes[(level, index)] = value


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2): RFC 6962 §2.1's k."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleLog:
    """The log over ``store``; ``size`` is the number of leaves already in it.

    The caller persists ``size`` (the block header's tree size) alongside the nodes, in
    the same write batch, and reopens the log with it: nodes past ``size`` are ignored.
    """

    def __init__(self, store: NodeStore, size: int = 0) -> None:
        if size < 0:
            raise MerkleLogError(f"size must be non-negative, got {size}")
        self.store = store
        self.size = size

    # -- writing -------------------------------------------------------------

    def append(self, leaf_hash: bytes) -> int:
        """Append one leaf hash (32 bytes); returns its index. Writes 1 + t nodes (see module)."""
        if len(leaf_hash) != HASH_SIZE:
            raise MerkleLogError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf_hash)}")
        index = self.size
        self.store.put(0, index, bytes(leaf_hash))
        level, i, h = 0, index, bytes(leaf_hash)
        while i & 1:
            h = node_hash(self._node(level, i - 1), h)
            level, i = level + 1, i >> 1
            self.store.put(level, i, h)
        self.size = index + 1
        return index

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append each leaf hash in order."""
        for h in leaf_hashes:
            self.append(h)

    # -- reading -------------------------------------------------------------

    def _node(self, level: int, index: int) -> bytes:
        value = self.store.get(level, index)
        if value is None:
            raise MissingNodeError(f"merkle node (level {level}, index {index}) missing from the store")
        return value

    def _range_hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) where lo is a multiple of the largest power of two <= hi - lo.

        Every range the RFC 6962 recursion asks for has that shape. A complete subtree is
        one read; an incomplete one folds its complete subtrees right to left.
        """
        n = hi - lo
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            return self._node(level, lo >> level)
        k = _split(n)
        return node_hash(self._range_hash(lo, lo + k), self._range_hash(lo + k, hi))

    def _check_size(self, size: int, what: str = "size") -> None:
        if not isinstance(size, int) or size < 0 or size > self.size:
            raise MerkleLogError(f"{what} {size} is outside the log (0..{self.size})")

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all). EMPTY_ROOT for 0. popcount(size) reads."""
        size = self.size if size is None else size
        self._check_size(size)
        if size == 0:
            return EMPTY_ROOT
        return self._range_hash(0, size)

    def leaf(self, index: int) -> bytes:
        """The stored leaf hash at ``index`` (one read)."""
        if not 0 <= index < self.size:
            raise MerkleLogError(f"index {index} is outside the log (size {self.size})")
        return self._node(0, index)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 §2.1.1 PATH(index, D[size]), leaf-to-root order (RFC 9162 §2.1.3.1).

        ``0 <= index < size <= self.size``. O(log size) reads.
        """
        size = self.size if size is None else size
        self._check_size(size)
        if not isinstance(index, int) or not 0 <= index < size:
            raise MerkleLogError(f"index {index} is out of range for tree size {size}")
        proof: list[bytes] = []
        lo, hi = 0, size
        # Walk root-to-leaf, then reverse: siblings are appended bottom-up in the RFC.
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                proof.append(self._range_hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._range_hash(lo, lo + k))
                lo = lo + k
        proof.reverse()
        return proof

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 6962 §2.1.2 PROOF(size1, D[size2]) (RFC 9162 §2.1.4.1), leaf-to-root order.

        ``0 < size1 <= size2 <= self.size``; equal sizes give the empty proof. O(log size2) reads.
        """
        size2 = self.size if size2 is None else size2
        self._check_size(size2, "size2")
        if not isinstance(size1, int) or size1 > size2:
            raise MerkleLogError(f"size1 {size1} is greater than size2 {size2}")
        if size1 <= 0:
            raise MerkleLogError(f"size1 must be positive (a proof from the empty tree is meaningless), got {size1}")
        proof: list[bytes] = []
        m, lo, hi, complete = size1, 0, size2, True
        # SUBPROOF(m, D[lo:hi], complete), unrolled: each step appends one sibling.
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self._range_hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._range_hash(lo, lo + k))
                m, lo, complete = m - k, lo + k, False
        if not complete:
            proof.append(self._range_hash(lo, hi))
        proof.reverse()
        return proof
