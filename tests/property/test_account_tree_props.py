"""Hypothesis over block sequences: the account tree updated in place equals the rebuild, and proofs hold.

A program is a start size (0..600) and up to 4 blocks, each a random set of updated
existing positions and a number of appended accounts (Hypothesis draws them). For every
block (``raft_ledger_node.ledger.account_tree``):

* ``preview`` leaves the tree as it was (root and the proofs of drawn positions);
* after ``commit`` the tree's root equals ``pending.root`` and the root of a rebuild
  from scratch (``AccountTree.from_leaf_hashes``) over the current records, and its
  proofs equal the rebuild's;
* the proof of a drawn position verifies with the SDK (``raft_ledger_client.state_proof``)
  against the root, and a flipped bit anywhere in the proof, the record or the root, a
  wrong position, a wrong size, a truncated or extended proof each raise ProofError.

Example count: ``LEDGER_ACCOUNT_TREE_EXAMPLES`` (default 100).
"""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_ledger_client.merkle import ProofError
from raft_ledger_client.state_proof import encode_account_record, verify_account_proof
from raft_ledger_node.ledger.account_tree import AccountTree, leaf_hash

EXAMPLES = int(os.environ.get("LEDGER_ACCOUNT_TREE_EXAMPLES", "100"))
START_MAX = 600


def record(position: int, version: int) -> bytes:
    return encode_account_record(
        id=position + 1, ledger=1, code=1, owner=f"bank-{position % 5}",
        debits_posted=version * 1000 + position, credits_posted=version,
    )


def flip(b: bytes, bit: int) -> bytes:
    bit %= len(b) * 8
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def program(draw):
    start = draw(st.integers(0, START_MAX))
    blocks = []
    size = start
    for _ in range(draw(st.integers(1, 4))):
        updated = draw(st.sets(st.integers(0, size - 1), max_size=min(size, 80))) if size else set()
        appended = draw(st.integers(0, 300))
        blocks.append((sorted(updated), appended))
        size += appended
    return start, blocks


def check_proof(tree: AccountTree, records: list[bytes], p: int, where: int, bit: int) -> None:
    size, root, proof, rec = tree.size, tree.root(), tree.proof(p), records[p]
    verify_account_proof(rec, p, size, proof, root)
    bad = [
        (flip(rec, bit), p, size, proof, root),
        (rec, p, size, proof, flip(root, bit)),
        (rec, p, size, proof + [root], root),
        (rec, p, size + 1, proof, root),
        (rec, size, size, proof, root),
    ]
    if proof:
        j = where % len(proof)
        bad.append((rec, p, size, proof[:j] + [flip(proof[j], bit)] + proof[j + 1 :], root))
        bad.append((rec, p, size, proof[:-1], root))
    if size > 1:
        bad.append((rec, p, size - 1, proof, root))
        bad.append((rec, (p + 1 + where % (size - 1)) % size, size, proof, root))
    for args in bad:
        with pytest.raises(ProofError):
            verify_account_proof(*args)


@settings(max_examples=EXAMPLES, deadline=None)
@given(program(), st.lists(st.integers(0, 1 << 20), min_size=3, max_size=3), st.integers(0, 1 << 20))
def test_updates_in_place_equal_the_rebuild_and_proofs_hold(prog, picks, bit):
    start, blocks = prog
    records = [record(p, 0) for p in range(start)]
    tree = AccountTree.from_leaf_hashes(leaf_hash(r) for r in records)
    for version, (updated, appended) in enumerate(blocks, 1):
        root_before, size_before = tree.root(), tree.size
        proofs_before = {p % size_before: tree.proof(p % size_before) for p in picks} if size_before else {}
        new_records = {p: record(p, version) for p in updated}
        added = [record(size_before + i, version) for i in range(appended)]
        pending = tree.preview({p: leaf_hash(r) for p, r in new_records.items()}, [leaf_hash(r) for r in added])

        assert tree.root() == root_before and tree.size == size_before
        assert all(tree.proof(p) == proof for p, proof in proofs_before.items())

        tree.commit(pending)
        for p, r in new_records.items():
            records[p] = r
        records.extend(added)
        rebuilt = AccountTree.from_leaf_hashes(leaf_hash(r) for r in records)
        assert tree.size == len(records) == pending.size
        assert tree.root() == rebuilt.root() == pending.root
        if not records:
            continue
        positions = {q % len(records) for q in picks} | set(updated[:3]) | {len(records) - 1}
        for p in sorted(positions):
            assert tree.proof(p) == rebuilt.proof(p)
            check_proof(tree, records, p, picks[0] + p, bit + p)
