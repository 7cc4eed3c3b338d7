"""The Merkle log (node/ledger/merkle_log.py): roots and proofs for any past size, from stored nodes only.

* the SDK's hashing (raft_ledger_client.merkle) and the core's (raft_ledger_node.ledger.merkle) agree;
* root(s) equals root_from_leaf_hashes(leaves[:s]) for every s up to 300;
* every inclusion and consistency proof up to size 40 verifies with the SDK;
* node reads per root/proof stay under 2 * (1 + log2 n) up to 2**16 leaves, writes per append
  average under 2 — no rebuild from leaves;
* out-of-range sizes and indices raise MerkleLogError; a store that lost a node raises MissingNodeError;
* a log reopened on the same store at an older size serves that size only.
"""
from __future__ import annotations

import hashlib

import pytest

from raft_ledger_client import merkle as sdk
from raft_ledger_node.ledger import merkle
from raft_ledger_node.ledger.merkle_log import MemoryNodeStore, MerkleLog, MerkleLogError, MissingNodeError


class CountingStore(MemoryNodeStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = self.writes = 0

    def get(self, level, index):
        self.reads += 1
        return super().get(level, index)

    def put(self, level, index, value):
        self.writes += 1
        super().put(level, index, value)


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_sdk_and_core_hash_identically():
    for data in (b"", b"\x00", b"\x01" * 33, bytes(range(256))):
        assert sdk.leaf_hash(data) == merkle.leaf_hash(data)
        assert sdk.node_hash(data[:32].ljust(32, b"a"), data[-32:].rjust(32, b"b")) == merkle.node_hash(
            data[:32].ljust(32, b"a"), data[-32:].rjust(32, b"b"))
    assert sdk.EMPTY_ROOT == merkle.EMPTY_ROOT == hashlib.sha256().digest()
    for n in range(0, 40):
        assert sdk.root(leaves(n)) == merkle.root_from_leaf_hashes(leaves(n))


def test_root_of_every_past_size_matches_the_rebuild():
    hs = leaves(300)
    log = MerkleLog(MemoryNodeStore())
    log.extend(hs)
    for size in range(301):
        assert log.root(size) == merkle.root_from_leaf_hashes(hs[:size]), size


def test_every_proof_up_to_size_40_verifies():
    hs = leaves(40)
    log = MerkleLog(MemoryNodeStore())
    log.extend(hs)
    for size in range(1, 41):
        root = log.root(size)
        for i in range(size):
            sdk.verify_inclusion(hs[i], i, size, log.inclusion_proof(i, size), root)
        for s1 in range(1, size + 1):
            sdk.verify_consistency(s1, size, log.consistency_proof(s1, size), log.root(s1), root)


def test_reads_grow_logarithmically_and_appends_write_two_nodes_amortised():
    store = CountingStore()
    log = MerkleLog(store)
    n = 1 << 16
    log.extend(leaves(n))
    assert store.writes < 2 * n  # 2n - 1 nodes exactly for a power of two
    worst = {}
    for size in (1, 2, 3, 7, 100, 1000, 4095, 4097, 40_000, n - 1, n):
        bound = 2 * (1 + size.bit_length())
        for op, call in (("root", lambda: log.root(size)),
                         ("inclusion", lambda: log.inclusion_proof(size // 3, size)),
                         ("inclusion-last", lambda: log.inclusion_proof(size - 1, size)),
                         ("consistency", lambda: log.consistency_proof(max(1, size // 3), size)),
                         ("consistency-odd", lambda: log.consistency_proof(max(1, size - 2) | 1, size))):
            store.reads = 0
            call()
            assert store.reads <= bound, (op, size, store.reads, bound)
            worst[op] = max(worst.get(op, 0), store.reads)
    assert max(worst.values()) <= 2 * 17


def test_out_of_range_arguments_raise():
    log = MerkleLog(MemoryNodeStore())
    log.extend(leaves(5))
    for call in (lambda: log.root(6), lambda: log.root(-1), lambda: log.inclusion_proof(5, 5),
                 lambda: log.inclusion_proof(-1, 5), lambda: log.inclusion_proof(0, 6),
                 lambda: log.inclusion_proof(0, 0), lambda: log.consistency_proof(3, 2),
                 lambda: log.consistency_proof(0, 5), lambda: log.consistency_proof(1, 6),
                 lambda: log.leaf(5), lambda: log.append(b"short")):
        with pytest.raises(MerkleLogError):
            call()
    assert log.consistency_proof(5, 5) == []


def test_a_lost_node_is_reported_not_rebuilt():
    store = MemoryNodeStore()
    log = MerkleLog(store)
    log.extend(leaves(8))
    del store.nodes[(3, 0)]
    with pytest.raises(MissingNodeError, match=r"level 3, index 0"):
        log.root(8)
    assert log.root(7) == merkle.root_from_leaf_hashes(leaves(7))


def test_reopened_log_serves_its_size_and_appends_on():
    hs = leaves(20)
    store = MemoryNodeStore()
    MerkleLog(store).extend(hs[:13])
    log = MerkleLog(store, size=13)
    assert log.root() == merkle.root_from_leaf_hashes(hs[:13])
    log.extend(hs[13:])
    assert log.root() == merkle.root_from_leaf_hashes(hs)
    sdk.verify_consistency(13, 20, log.consistency_proof(13, 20), log.root(13), log.root(20))
