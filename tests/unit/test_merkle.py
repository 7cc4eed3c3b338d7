"""RFC 6962 §2.1 Merkle Tree Hash, checked against an independent reading of the RFC.

§2.1: MTH({}) = SHA-256(); MTH({d(0)}) = SHA-256(0x00 || d(0)); for n > 1, with
k the largest power of two smaller than n,
MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])).
"""
from __future__ import annotations

import hashlib

import pytest

from helpers import Ledger, account, accounts_tx
from raft_ledger_node.ledger import merkle


def rfc6962_mth(data: list[bytes]) -> bytes:
    """Straight transcription of RFC 6962 §2.1, written for this test only."""
    n = len(data)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + rfc6962_mth(data[:k]) + rfc6962_mth(data[k:])).digest()


def mth(data: list[bytes]) -> bytes:
    return merkle.root_from_leaf_hashes([merkle.leaf_hash(d) for d in data])


def test_empty_tree_hash_is_sha256_of_the_empty_string():
    # §2.1: "The hash of an empty list is the hash of an empty string: MTH({}) = SHA-256()."
    expected = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert merkle.EMPTY_ROOT == expected
    assert merkle.root_from_leaf_hashes([]) == expected


def test_leaf_and_node_hashes_are_domain_separated():
    # §2.1: leaves are prefixed 0x00, interior nodes 0x01 (second-preimage resistance).
    assert merkle.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    l, r = bytes(range(32)), bytes(range(32, 64))
    assert merkle.node_hash(l, r) == hashlib.sha256(b"\x01" + l + r).digest()
    assert merkle.leaf_hash(l + r) != merkle.node_hash(l, r)


@pytest.mark.parametrize("n", list(range(0, 70)) + [127, 128, 129, 255, 256, 257, 1000])
def test_root_matches_the_rfc_for_every_shape(n):
    data = [i.to_bytes(4, "big") * (i % 3) for i in range(n)]  # includes empty leaves
    assert mth(data) == rfc6962_mth(data)


# The tree heads that Certificate Transparency implementations test against
# (google/certificate-transparency merkletree tests; transparency-dev/merkle):
# eight leaves, roots of every prefix.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.parametrize("size", range(1, 9))
def test_certificate_transparency_reference_roots(size):
    data = [bytes.fromhex(h) for h in CT_LEAVES[:size]]
    assert mth(data).hex() == CT_ROOTS[size - 1]
    assert rfc6962_mth(data).hex() == CT_ROOTS[size - 1]


def test_root_depends_on_leaf_order_and_content():
    data = [b"a", b"b", b"c"]
    assert mth(data) != mth([b"b", b"a", b"c"])
    assert mth(data) != mth([b"a", b"b", b"d"])
    assert mth(data) != mth(data + [b""])


def test_block_tx_merkle_root_is_the_mth_of_its_envelopes_in_order():
    led = Ledger()
    txs = [accounts_tx(account(i)) for i in range(1, 6)]
    led.block(*txs)
    assert led.ws.header.tx_merkle_root == rfc6962_mth([tx.envelope for tx in txs])
    # A block without transactions commits to the empty tree.
    led.block()
    assert led.ws.header.tx_merkle_root == hashlib.sha256(b"").digest()


def test_retried_transactions_are_not_leaves_again():
    led = Ledger()
    tx1, tx2 = accounts_tx(account(1)), accounts_tx(account(2))
    led.block(tx1)
    led.block(tx1, tx2)
    assert led.ws.header.tx_merkle_root == rfc6962_mth([tx2.envelope])
