"""The account state tree: an authenticated map over account records (pure core, stdlib only).

Why this shape: accounts are never deleted, so each one keeps, for ever, the position it
got at creation (0, 1, 2 ... in creation order). A dense tree over positions needs no
keys in its nodes, no rebalancing and no storage reads: all levels live in memory as
flat ``bytearray`` s of 32-byte hashes, rebuilt from the stored records at start-up.

Hashing (the SDK's ``raft_ledger_client.state_proof`` re-implements it; the prefixes
separate the three domains, as RFC 6962 §2.1 does for leaves and nodes):

* level 0: leaf ``p`` = ``SHA-256(0x00 || record)``, record = ``codec.encode_account``
  of the account at position ``p``;
* level ``k + 1``: node ``j`` = ``SHA-256(0x01 || level_k[16j] || ... || level_k[16j+15])``
  over the children that exist (the last node of a level may have fewer than 16);
* levels stop at the first one with exactly one node, the *top*;
* ``root = SHA-256(0x02 || N as u64 big-endian || top)``, and for ``N == 0``
  ``root = SHA-256(0x02 || 8 zero bytes)``. Binding ``N`` into the root fixes the
  shape, so a proof cannot be replayed against another size.

Proof for position ``p`` in a tree of ``N`` leaves: for each level from the leaves up
to (excluding) the top, the hashes of ``p``'s ancestor's group-siblings at that level
in index order, without the ancestor itself; the verifier knows each index from ``p``
and ``N``. At most ``15 * ceil(log16 N)`` hashes: 75 (2400 bytes) at ``N = 10**6``.

Memory: ``32 * N * 16/15`` bytes, ~34 MB at ``N = 10**6``.

Costs (measured on this project's 2-core machine, CPython 3.11):

* :meth:`AccountTree.from_leaf_hashes` hashes ``N/15`` groups of <= 513 bytes:
  ~0.2 s at ``N = 10**6`` given the leaf hashes (hashing the 10**6 records into leaf
  hashes is the caller's: ~0.7-0.9 s more).
* :meth:`AccountTree.preview` + :meth:`AccountTree.commit`: one ``SHA-256`` of at most
  513 bytes per *distinct* dirty ancestor (shared ancestors are hashed once), so
  ``<= u * ceil(log16 N)`` hashes for ``u`` dirty leaves, fewer when they share groups;
  untouched paths cost nothing. A block of 320 random updates: ~5 + 1 µs per update at
  ``N = 10**4``, ~8 + 1.4 µs per update at ``N = 10**6`` (~3 ms per block).
* :meth:`AccountTree.proof`: ``ceil(log16 N)`` slices, no hashing (~35 µs at 10**6).

Errors: :class:`AccountTreeError` (a ValueError) for a position out of range, a hash
that is not 32 bytes, or committing a :class:`Pending` that was previewed on another
state of the tree (:class:`StalePendingError`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

HASH_SIZE = 32
#: Children per interior node.
ARITY = 16  # preview's ``j >> 4`` assumes it
#: The largest number of leaves: N is encoded as u64 in the root.
leaves_max = (1 << 64) - 1

_LEAF = b"\x00"
_NODE = b"\x01"
_ROOT = b"\x02"
_GROUP_BYTES = ARITY * HASH_SIZE

EMPTY_ROOT = hashlib.sha256(_ROOT + bytes(8)).digest()


class AccountTreeError(ValueError):
    """A position outside the tree, a hash that is not 32 bytes, or a stale pending update."""


class StalePendingError(AccountTreeError):
    """``commit`` of a :class:`Pending` previewed before the tree last changed."""


def leaf_hash(record: bytes) -> bytes:
    """``SHA-256(0x00 || record)`` (32 bytes); ``record`` is ``codec.encode_account``'s bytes."""
    return hashlib.sha256(_LEAF + record).digest()


def root_of(size: int, top: bytes) -> bytes:
    """``SHA-256(0x02 || size u64 BE || top)``; :data:`EMPTY_ROOT` for size 0 (``top`` ignored)."""
    if size == 0:
        return EMPTY_ROOT
    return hashlib.sha256(_ROOT + size.to_bytes(8, "big") + top).digest()


def level_sizes(size: int) -> list[int]:
    """Node counts per level for ``size`` leaves, leaves first, top (1) last; [] for 0."""
    if size == 0:
        return []
    sizes = [size]
    while size > 1:
        size = -(-size // ARITY)
        sizes.append(size)
    return sizes


@dataclass(frozen=True, slots=True)
class Pending:
    """A previewed update: ``root`` and ``size`` after it, and the nodes it rewrites.

    ``nodes[k]`` maps level-``k`` indexes to their new 32-byte hashes; ``sizes`` are the
    new level sizes. Produced by :meth:`AccountTree.preview`, consumed by
    :meth:`AccountTree.commit` on the same, unchanged tree.
    """

    root: bytes
    size: int
    base_size: int
    base_version: object
    sizes: tuple[int, ...]
    nodes: tuple[dict[int, bytes], ...]
    #: ``groups[k]`` maps a level-``k`` group index to its patched bytes (the children
    #: hashed into node ``g`` of level ``k + 1``): commit writes a group in one slice.
    groups: tuple[dict[int, bytearray], ...] = ()


class AccountTree:
    """The tree over ``size`` leaf hashes; every level in memory (see the module docstring).

    Not thread-safe: the state machine previews, the store commits, then ``commit`` —
    all on the apply thread.
    """

    __slots__ = ("_levels", "_version")

    def __init__(self) -> None:
        """An empty tree (N = 0). Use :meth:`from_leaf_hashes` to rebuild a populated one."""
        self._levels: list[bytearray] = []
        # A fresh token per state: a Pending matches only the tree and state it came from.
        self._version = object()

    # -- building ----------------------------------------------------------

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> "AccountTree":
        """Rebuild from the leaf hashes in position order (start-up).

        Cost: one pass over the leaves plus ``N/15`` hashes of <= 513 bytes; ~0.2 s for
        ``N = 10**6`` on this project's machine (the records' leaf hashes not included:
        ~0.8 s more for 10**6 records).
        Raises :class:`AccountTreeError` if an element is not 32 bytes.
        """
        tree = cls()
        level = bytearray()
        for i, h in enumerate(leaf_hashes):
            if len(h) != HASH_SIZE:
                raise AccountTreeError(f"leaf hash {i} must be {HASH_SIZE} bytes, got {len(h)}")
            level += h
        if len(level) > leaves_max * HASH_SIZE:
            raise AccountTreeError("too many leaves")
        if not level:
            return tree
        levels = [level]
        sha256 = hashlib.sha256
        while len(level) > HASH_SIZE:
            view = memoryview(level)
            nxt = bytearray()
            for off in range(0, len(level), _GROUP_BYTES):
                node = sha256(_NODE)
                node.update(view[off : off + _GROUP_BYTES])
                nxt += node.digest()
            view.release()
            levels.append(nxt)
            level = nxt
        tree._levels = levels
        return tree

    # -- reading -----------------------------------------------------------

    @property
    def size(self) -> int:
        """N, the number of leaves (accounts)."""
        return len(self._levels[0]) // HASH_SIZE if self._levels else 0

    def root(self) -> bytes:
        """The 32-byte root; :data:`EMPTY_ROOT` for an empty tree. O(1) hash."""
        if not self._levels:
            return EMPTY_ROOT
        return root_of(self.size, bytes(self._levels[-1]))

    def leaf(self, position: int) -> bytes:
        """The 32-byte leaf hash at ``position``; raises AccountTreeError if out of range."""
        self._check_position(position)
        off = position * HASH_SIZE
        return bytes(self._levels[0][off : off + HASH_SIZE])

    def proof(self, position: int) -> list[bytes]:
        """The siblings of ``position``'s path, leaves first (see the module docstring).

        ``len(proof) == sum(group size - 1)`` over the levels below the top: at most
        ``15 * (len(levels) - 1)``. Raises AccountTreeError if ``position >= size``.
        """
        self._check_position(position)
        out: list[bytes] = []
        j = position
        for level in self._levels[:-1]:
            n = len(level) // HASH_SIZE
            start = j - j % ARITY
            end = min(start + ARITY, n)
            out.extend(bytes(level[i * HASH_SIZE : (i + 1) * HASH_SIZE]) for i in range(start, end) if i != j)
            j //= ARITY
        return out

    def _check_position(self, position: int) -> None:
        if not isinstance(position, int) or not 0 <= position < self.size:
            raise AccountTreeError(f"position {position} outside a tree of {self.size} leaves")

    # -- updating ----------------------------------------------------------

    def preview(self, updates: Mapping[int, bytes], appended: Sequence[bytes]) -> Pending:
        """The tree after ``updates`` and ``appended``, without changing this tree.

        ``updates`` maps existing positions (< size) to their new leaf hashes;
        ``appended`` are the leaf hashes of the accounts created in this block, in
        creation order (they get positions size, size + 1, ...). Cost: one hash per
        distinct dirty ancestor, each over <= 16 children (module docstring).
        Raises :class:`AccountTreeError` for a position out of range or a hash that is
        not 32 bytes.
        """
        base = self.size
        new_size = base + len(appended)
        if new_size > leaves_max:
            raise AccountTreeError("too many leaves")
        dirty: dict[int, bytes] = {}
        if updates:
            # Checked in bulk: positions are ints in range, hashes 32 bytes (the hot path
            # runs this for every block; per-item checks cost as much as the hashing).
            if not all(type(p) is int for p in updates):
                raise AccountTreeError("updated positions must be ints")
            lo, hi = min(updates), max(updates)
            if lo < 0 or hi >= base:
                raise AccountTreeError(f"updated position {lo if lo < 0 else hi} outside a tree of {base} leaves")
            dirty.update(updates)
        for i, h in enumerate(appended):
            dirty[base + i] = h
        if any(len(h) != HASH_SIZE for h in dirty.values()):
            bad = next(p for p, h in dirty.items() if len(h) != HASH_SIZE)
            raise AccountTreeError(f"leaf hash for position {bad} must be {HASH_SIZE} bytes, got {len(dirty[bad])}")
        sizes = level_sizes(new_size)
        nodes: list[dict[int, bytes]] = [dirty]
        groups: list[dict[int, bytearray]] = []
        sha256 = hashlib.sha256
        levels = self._levels
        for k in range(len(sizes) - 1):
            child_nodes = nodes[k]
            if not child_nodes:
                nodes.extend({} for _ in range(k + 1, len(sizes)))
                break
            stored = levels[k] if k < len(levels) else bytearray()
            level_bytes = sizes[k] * HASH_SIZE
            keys = sorted(child_nodes)
            parents: dict[int, bytes] = {}
            patched: dict[int, bytearray] = {}
            i, n = 0, len(keys)
            # One pass over the dirty children in index order: each run of children
            # sharing a parent patches one copy of their group and hashes it once.
            while i < n:
                g = keys[i] >> 4  # // ARITY
                a = g * _GROUP_BYTES
                end = a + _GROUP_BYTES
                if end > level_bytes:
                    end = level_bytes
                chunk = stored[a:end]  # a copy (bytearray slice)
                if len(chunk) < end - a:
                    # The level's last group grows: the children past the stored level
                    # are all appended, hence all dirty.
                    chunk += bytes(end - a - len(chunk))
                while i < n:
                    j = keys[i]
                    if j >> 4 != g:
                        break
                    off = j * HASH_SIZE - a
                    chunk[off : off + HASH_SIZE] = child_nodes[j]
                    i += 1
                parents[g] = sha256(_NODE + chunk).digest()
                patched[g] = chunk
            nodes.append(parents)
            groups.append(patched)
        if new_size == 0:
            root = EMPTY_ROOT
        else:
            top_k = len(sizes) - 1
            top = nodes[top_k].get(0)
            if top is None:
                top = bytes(levels[top_k][:HASH_SIZE])
            root = root_of(new_size, top)
        return Pending(root, new_size, base, self._version, tuple(sizes), tuple(nodes), tuple(groups))

    def commit(self, pending: Pending) -> None:
        """Apply ``pending`` (from :meth:`preview` on this tree, unchanged since).

        Raises :class:`StalePendingError` if the tree changed since the preview (another
        commit, or a preview from another tree); then nothing changes. Cost: one write per
        dirty group (its patched bytes, computed by the preview) and one for the top node,
        plus amortised growth of each level.
        """
        if pending.base_version is not self._version:
            raise StalePendingError(
                f"pending update previewed on another tree or state (size {pending.base_size}),"
                f" this tree has changed since or never produced it (size {self.size})"
            )
        levels = self._levels
        for k, n in enumerate(pending.sizes):
            if k == len(levels):
                levels.append(bytearray())
            level = levels[k]
            grow = n * HASH_SIZE - len(level)
            if grow > 0:
                level += bytes(grow)
            if k < len(pending.groups):
                for g, chunk in pending.groups[k].items():
                    a = g * _GROUP_BYTES
                    level[a : a + len(chunk)] = chunk
            else:  # the top level (or a level the preview stopped above: no dirty nodes)
                for j, h in pending.nodes[k].items():
                    off = j * HASH_SIZE
                    level[off : off + HASH_SIZE] = h
        self._version = object()
