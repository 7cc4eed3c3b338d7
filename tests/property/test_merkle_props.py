"""Hypothesis over tree sizes 1..300: the log's proofs verify, and every tampering is rejected.

For a log of ``n`` leaves (n in 1..300), a size ``s <= n``, an index ``i < s`` and a
prefix size ``m <= s`` drawn by Hypothesis:

* the inclusion proof of ``i`` in ``s`` and the consistency proof from ``m`` to ``s``
  verify with the SDK (raft_ledger_client.merkle) against ``log.root``, which equals
  the rebuild ``root_from_leaf_hashes``;
* a flipped bit anywhere in the proof, the leaf or a root; a wrong index; a wrong size;
  a truncated or extended proof — each raises ProofError (never passes, never returns False).

A wrong size is checked against that size's real root: a size and its root travel together
in a checkpoint. (Against the *same* root a lie about the size can pass — e.g. the proof of
leaf 0 in size 3 also "proves" it in size 4 with root(3), as the verifier cannot tell a leaf
hash from a subtree hash on the right edge; RFC 9162 binds the size by the signed tree head.)

Example count: ``LEDGER_MERKLE_EXAMPLES`` (default 200).
"""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_ledger_client.merkle import ProofError, verify_consistency, verify_inclusion
from raft_ledger_node.ledger import merkle
from raft_ledger_node.ledger.merkle_log import MemoryNodeStore, MerkleLog

EXAMPLES = int(os.environ.get("LEDGER_MERKLE_EXAMPLES", "200"))
MAX = 300
HASHES = [merkle.leaf_hash(i.to_bytes(2, "big")) for i in range(MAX)]
LOG = MerkleLog(MemoryNodeStore())
LOG.extend(HASHES)


def flip(b: bytes, bit: int) -> bytes:
    bit %= len(b) * 8
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def inclusion_case(draw):
    size = draw(st.integers(1, MAX))
    return size, draw(st.integers(0, size - 1))


@st.composite
def consistency_case(draw):
    size2 = draw(st.integers(1, MAX))
    return draw(st.integers(1, size2)), size2


@settings(max_examples=EXAMPLES, deadline=None)
@given(inclusion_case(), st.integers(0, 1 << 20), st.integers(0, 1 << 20))
def test_inclusion_proofs_verify_and_tampering_is_rejected(case, where, bit):
    size, index = case
    root = LOG.root(size)
    assert root == merkle.root_from_leaf_hashes(HASHES[:size])
    proof = LOG.inclusion_proof(index, size)
    leaf = HASHES[index]
    verify_inclusion(leaf, index, size, proof, root)

    bad = []
    if proof:
        j = where % len(proof)
        bad.append((leaf, index, size, proof[:j] + [flip(proof[j], bit)] + proof[j + 1:], root))
        bad.append((leaf, index, size, proof[:-1], root))  # truncated
        bad.append((leaf, index, size, proof[1:], root))  # first hash dropped
    bad.append((leaf, index, size, proof + [root], root))  # extended
    bad.append((leaf, index, size, [root] + proof, root))  # prepended
    bad.append((flip(leaf, bit), index, size, proof, root))
    bad.append((leaf, index, size, proof, flip(root, bit)))
    bad.append((leaf, index, size, proof, merkle.EMPTY_ROOT))
    bad.append((leaf, size, size, proof, root))  # index out of range
    for wrong in {index - 1, index + 1, index ^ 1, index ^ 2, (index + 1 + where) % size} - {index}:
        if 0 <= wrong < size:
            bad.append((leaf, wrong, size, proof, root))
    for wrong in {size - 1, size + 1, size * 2, size // 2, size + 1 + where % MAX} - {size}:
        if index < wrong <= MAX:  # a proof for another size, checked against that size's root
            bad.append((leaf, index, wrong, proof, LOG.root(wrong)))
    for args in bad:
        with pytest.raises(ProofError):
            verify_inclusion(*args)


@settings(max_examples=EXAMPLES, deadline=None)
@given(consistency_case(), st.integers(0, 1 << 20), st.integers(0, 1 << 20))
def test_consistency_proofs_verify_and_tampering_is_rejected(case, where, bit):
    size1, size2 = case
    root1, root2 = LOG.root(size1), LOG.root(size2)
    proof = LOG.consistency_proof(size1, size2)
    verify_consistency(size1, size2, proof, root1, root2)

    bad = [
        (size1, size2, proof + [root2], root1, root2),  # extended
        (size1, size2, [root1] + proof, root1, root2),  # prepended
        (size1, size2, proof, flip(root1, bit), root2),
        (size1, size2, proof, root1, flip(root2, bit)),
        (size2 + 1, size2, proof, root1, root2),  # size1 > size2
        (0, size2, proof, merkle.EMPTY_ROOT, root2),
    ]
    if size1 != size2:
        bad.append((size1, size2, proof, root2, root1))  # swapped roots
    if proof:
        j = where % len(proof)
        bad.append((size1, size2, proof[:j] + [flip(proof[j], bit)] + proof[j + 1:], root1, root2))
        bad.append((size1, size2, proof[:-1], root1, root2))
        bad.append((size1, size2, proof[1:], root1, root2))
    for wrong1 in {size1 - 1, size1 + 1, size1 ^ 2, 1 + where % size2} - {size1}:
        if 1 <= wrong1 <= size2 and LOG.root(wrong1) != root1:
            bad.append((wrong1, size2, proof, root1, root2))
    for wrong2 in {size2 - 1, size2 + 1, size2 * 2, size2 // 2} - {size2}:
        if size1 <= wrong2 <= MAX and (wrong2 != size1 or proof):
            bad.append((size1, wrong2, proof, root1, LOG.root(wrong2)))
    for args in bad:
        with pytest.raises(ProofError):
            verify_consistency(*args)


@settings(max_examples=EXAMPLES, deadline=None)
@given(consistency_case(), consistency_case())
def test_a_proof_for_one_pair_of_sizes_does_not_prove_another(a, b):
    """A proof built for (size1, size2) is rejected for any other pair with the real roots."""
    if a == b:
        return
    proof = LOG.consistency_proof(*a)
    s1, s2 = b
    if s1 == s2 and not proof:
        return  # the empty proof does prove equal sizes
    with pytest.raises(ProofError):
        verify_consistency(s1, s2, proof, LOG.root(s1), LOG.root(s2))
