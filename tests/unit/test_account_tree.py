"""The account state tree (node) and its proof verifier (SDK), against an independent reference.

The design under test (issue 12, the lead's decision; module docstring of
``raft_ledger_node.ledger.account_tree``): leaves ``SHA-256(0x00 || record)`` in creation
order, 16-ary interior nodes ``SHA-256(0x01 || children)``, levels up to the first with one
node, ``root = SHA-256(0x02 || N u64 || top)``. ``naive_root`` below transcribes that
definition with lists, for this test only; the hand-computed cases fix it independently.
"""
from __future__ import annotations

import hashlib
import random

import pytest

from helpers import account
from raft_ledger_client.merkle import ProofError
from raft_ledger_client.state_proof import (
    EMPTY_ROOT as SDK_EMPTY_ROOT,
    account_tree_root_from_proof,
    encode_account_record,
    verify_account_proof,
)
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.account_tree import (
    EMPTY_ROOT,
    AccountTree,
    AccountTreeError,
    StalePendingError,
    leaf_hash,
)


def sha(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def naive_levels(leaves: list[bytes]) -> list[list[bytes]]:
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        prev = levels[-1]
        levels.append([sha(b"\x01", *prev[i : i + 16]) for i in range(0, len(prev), 16)])
    return levels


def naive_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return sha(b"\x02", bytes(8))
    return sha(b"\x02", len(leaves).to_bytes(8, "big"), naive_levels(leaves)[-1][0])


def naive_proof(leaves: list[bytes], p: int) -> list[bytes]:
    out = []
    for level in naive_levels(leaves)[:-1]:
        g = p - p % 16
        out += [h for i, h in enumerate(level[g : g + 16], g) if i != p]
        p //= 16
    return out


def records(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [
        codec.encode_account(
            account(i + 1, owner=f"bank-{i % 7}", debits_posted=rng.getrandbits(64), credits_posted=rng.getrandbits(100))
        )
        for i in range(n)
    ]


RECORDS = records(300)
LEAVES = [leaf_hash(r) for r in RECORDS]


def flip(b: bytes, bit: int) -> bytes:
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# -- known small trees, computed by hand from the definition --------------------------


def test_empty_tree():
    assert EMPTY_ROOT == SDK_EMPTY_ROOT == sha(b"\x02" + b"\x00" * 8)
    tree = AccountTree()
    assert tree.size == 0 and tree.root() == EMPTY_ROOT
    assert AccountTree.from_leaf_hashes([]).root() == EMPTY_ROOT
    with pytest.raises(AccountTreeError):
        tree.proof(0)


def test_one_leaf_tree_has_the_leaf_as_top_and_an_empty_proof():
    r = b"record-zero"
    lh = hashlib.sha256(b"\x00" + r).digest()
    tree = AccountTree.from_leaf_hashes([lh])
    assert tree.root() == hashlib.sha256(b"\x02" + (1).to_bytes(8, "big") + lh).digest()
    assert tree.proof(0) == []
    verify_account_proof(r, 0, 1, [], tree.root())


def test_seventeen_leaves_make_three_levels():
    # 17 leaves: level 1 = [H(1 || l0..l15), H(1 || l16)], top = H(1 || n0 || n1).
    lh = [hashlib.sha256(b"\x00" + bytes([i])).digest() for i in range(17)]
    n0 = hashlib.sha256(b"\x01" + b"".join(lh[:16])).digest()
    n1 = hashlib.sha256(b"\x01" + lh[16]).digest()
    top = hashlib.sha256(b"\x01" + n0 + n1).digest()
    expected = hashlib.sha256(b"\x02" + b"\x00" * 7 + b"\x11" + top).digest()
    tree = AccountTree.from_leaf_hashes(lh)
    assert tree.root() == expected
    assert tree.proof(16) == [n0]  # p=16 is alone in its group at level 0
    assert tree.proof(3) == lh[:3] + lh[4:16] + [n1]
    verify_account_proof(bytes([16]), 16, 17, [n0], expected)


# -- every size against the reference ---------------------------------------------------


@pytest.mark.parametrize("n", range(0, 301))
def test_root_and_proofs_match_the_reference_for_every_size(n):
    leaves = LEAVES[:n]
    tree = AccountTree.from_leaf_hashes(leaves)
    root = tree.root()
    assert tree.size == n
    assert root == naive_root(leaves)
    for p in range(n):
        proof = tree.proof(p)
        assert proof == naive_proof(leaves, p)
        assert tree.leaf(p) == leaves[p]
        verify_account_proof(RECORDS[p], p, n, proof, root)
        assert account_tree_root_from_proof(RECORDS[p], p, n, proof) == root


def test_growing_one_leaf_at_a_time_matches_the_rebuild():
    tree = AccountTree()
    for n in range(1, 300):
        pending = tree.preview({}, [LEAVES[n - 1]])
        tree.commit(pending)
        assert pending.root == tree.root() == naive_root(LEAVES[:n])


# -- preview and commit ---------------------------------------------------------------------


def test_preview_does_not_mutate_and_commit_equals_the_rebuild():
    rng = random.Random(12)
    tree = AccountTree.from_leaf_hashes(LEAVES[:200])
    before_root, before = tree.root(), [tree.leaf(p) for p in range(200)]
    updates = {p: sha(b"new", p.to_bytes(4, "big")) for p in rng.sample(range(200), 40)}
    appended = LEAVES[200:260]
    pending = tree.preview(updates, appended)
    assert tree.root() == before_root and tree.size == 200
    assert [tree.leaf(p) for p in range(200)] == before
    assert [tree.proof(p) for p in range(200)] == [naive_proof(LEAVES[:200], p) for p in range(200)]

    expected = [updates.get(p, h) for p, h in enumerate(LEAVES[:200])] + appended
    assert pending.root == naive_root(expected)
    assert pending.size == 260
    tree.commit(pending)
    rebuilt = AccountTree.from_leaf_hashes(expected)
    assert tree.root() == rebuilt.root() == pending.root
    assert all(tree.proof(p) == rebuilt.proof(p) for p in range(260))


def test_preview_hashes_each_shared_ancestor_once():
    tree = AccountTree.from_leaf_hashes(LEAVES[:256])  # levels 256, 16, 1
    pending = tree.preview({p: sha(b"x", bytes([p])) for p in range(16)}, [])
    # 16 leaves in one group: one dirty node at level 1, one top.
    assert [len(level) for level in pending.nodes] == [16, 1, 1]


def test_empty_preview_keeps_the_root():
    tree = AccountTree.from_leaf_hashes(LEAVES[:37])
    pending = tree.preview({}, [])
    assert pending.root == tree.root()
    tree.commit(pending)
    assert tree.root() == naive_root(LEAVES[:37])


def test_commit_refuses_a_stale_or_foreign_pending():
    tree = AccountTree.from_leaf_hashes(LEAVES[:50])
    first = tree.preview({0: LEAVES[99]}, [])
    second = tree.preview({1: LEAVES[98]}, [])
    tree.commit(first)
    with pytest.raises(StalePendingError):
        tree.commit(second)
    with pytest.raises(StalePendingError):
        tree.commit(first)  # twice
    other = AccountTree.from_leaf_hashes(LEAVES[:50])
    with pytest.raises(StalePendingError):
        other.commit(tree.preview({}, []))  # same leaves, another tree
    assert tree.root() == naive_root([LEAVES[99]] + LEAVES[1:50])
    assert other.root() == naive_root(LEAVES[:50])


def test_preview_rejects_bad_input():
    tree = AccountTree.from_leaf_hashes(LEAVES[:10])
    with pytest.raises(AccountTreeError):
        tree.preview({10: LEAVES[0]}, [])  # not an existing position (appends go in `appended`)
    with pytest.raises(AccountTreeError):
        tree.preview({-1: LEAVES[0]}, [])
    with pytest.raises(AccountTreeError):
        tree.preview({0: b"short"}, [])
    with pytest.raises(AccountTreeError):
        tree.preview({}, [b"\x00" * 33])
    with pytest.raises(AccountTreeError):
        AccountTree.from_leaf_hashes([b"\x00" * 31])
    with pytest.raises(AccountTreeError):
        tree.leaf(10)
    with pytest.raises(AccountTreeError):
        tree.proof(10)


# -- the SDK verifier rejects every tampering -------------------------------------------------

N = 300
TREE = AccountTree.from_leaf_hashes(LEAVES)
ROOT = TREE.root()


@pytest.mark.parametrize("p", [0, 1, 15, 16, 17, 255, 256, 299])
def test_tampered_record_position_size_sibling_or_root_is_rejected(p):
    proof = TREE.proof(p)
    record = RECORDS[p]
    verify_account_proof(record, p, N, proof, ROOT)
    for bit in range(0, len(record) * 8, 7):
        with pytest.raises(ProofError):
            verify_account_proof(flip(record, bit), p, N, proof, ROOT)
    for other in {p - 1, p + 1, p ^ 16, 0, N - 1} - {p}:
        if 0 <= other < N:
            with pytest.raises(ProofError):
                verify_account_proof(record, other, N, proof, ROOT)
    for size in (N - 1, N + 1, p + 1 if p + 1 != N else 1, 1 << 20):
        with pytest.raises(ProofError):
            verify_account_proof(record, p, size, proof, ROOT)
    for i in range(len(proof)):
        for bit in (0, 100, 255):
            bad = list(proof)
            bad[i] = flip(bad[i], bit)
            with pytest.raises(ProofError):
                verify_account_proof(record, p, N, bad, ROOT)
    for bad in (proof[:-1], proof + [proof[0]], [], proof[1:] + proof[:1] if len(set(proof)) > 1 else proof[:-1]):
        with pytest.raises(ProofError):
            verify_account_proof(record, p, N, bad, ROOT)
    with pytest.raises(ProofError):
        verify_account_proof(record, p, N, proof, flip(ROOT, 3))


def test_malformed_arguments_are_proof_errors():
    proof = TREE.proof(5)
    cases = [
        (RECORDS[5], 5, 0, proof, ROOT),  # size 0
        (RECORDS[5], 300, 300, proof, ROOT),  # position >= size
        (RECORDS[5], -1, 300, proof, ROOT),
        (RECORDS[5], 5, 1 << 64, proof, ROOT),  # size over u64
        (RECORDS[5], 5, 300, proof[:-1] + [b"x" * 31], ROOT),
        (RECORDS[5], 5, 300, proof, ROOT[:31]),
        (RECORDS[5], True, 300, proof, ROOT),
        ("not bytes", 5, 300, proof, ROOT),
    ]
    for args in cases:
        with pytest.raises(ProofError):
            verify_account_proof(*args)


# -- the SDK's record encoding is the node's ----------------------------------------------------

FIELDS = (
    "id", "ledger", "code", "owner", "flags", "debits_pending", "debits_posted", "credits_pending",
    "credits_posted", "user_data_128", "user_data_64", "user_data_32", "timestamp",
)


def test_sdk_record_encoding_equals_the_node_codec_on_many_accounts():
    rng = random.Random(7)
    owners = ["", "bank-a", "ü-bank", "銀行", "x" * 300]
    for i in range(2000):
        bits = rng.choice([8, 32, 64, 128])
        a = account(
            rng.getrandbits(128) or 1,
            ledger=rng.getrandbits(32),
            code=rng.getrandbits(16),
            flags=rng.getrandbits(6),
            owner=rng.choice(owners),
            debits_pending=rng.getrandbits(bits),
            debits_posted=rng.getrandbits(bits),
            credits_pending=rng.getrandbits(bits),
            credits_posted=rng.getrandbits(bits),
            user_data_128=rng.getrandbits(128),
            user_data_64=rng.getrandbits(64),
            user_data_32=rng.getrandbits(32),
            timestamp=rng.getrandbits(64),
        )
        if i == 0:  # the extremes
            a = account((1 << 128) - 1, ledger=(1 << 32) - 1, code=(1 << 32) - 1, flags=(1 << 32) - 1,
                        debits_pending=(1 << 128) - 1, user_data_64=(1 << 64) - 1, timestamp=(1 << 64) - 1)
        node = codec.encode_account(a)
        sdk = encode_account_record(**{f: getattr(a, f) for f in FIELDS})
        assert sdk == node
        assert codec.decode_account(sdk) == a


def test_sdk_record_encoding_rejects_out_of_range_fields():
    base = dict(id=1, ledger=1, code=1)
    for field, value in [("id", 1 << 128), ("ledger", 1 << 32), ("timestamp", 1 << 64), ("flags", -1),
                         ("credits_posted", 1.0), ("user_data_32", True)]:
        with pytest.raises(ValueError):
            encode_account_record(**(base | {field: value}))
    with pytest.raises(ValueError):
        encode_account_record(**base, owner="x" * 65536)
    assert len(encode_account_record(**base, owner="x" * 65535)) == 128 + 2 + 65535
