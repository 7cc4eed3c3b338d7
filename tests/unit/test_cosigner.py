"""node/cosigner.py on a real RocksStore: signing, the last signed height, collecting, certificates.

No network: peers are plain functions returning (height, signature) as a peer's
GetCosignatures would. What is checked is what a member relies on: a certificate is
a signed note the SDK verifies, holding only signatures that verify over this
validator's own checkpoint; a validator never signs at or below a height it may have
signed before a crash; a peer that signed a different block is never served.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from helpers import CHAIN, MEMBER, T0, account, accounts_tx, configuration, decode_envelope, entry
from raft_ledger_client import VerificationError
from raft_ledger_client import checkpoint as cp
from raft_ledger_node.cosigner import SIGN_RESERVE, Cosigner
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.governance import ValidatorRecord
from raft_ledger_node.state_machine import StateMachine
from raft_ledger_node.store import RocksStore

GENESIS_HASH = bytes(range(32))
KEYS = {vid: Ed25519PrivateKey.generate() for vid in ("v1", "v2", "v3")}
PUBS = {vid: k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for vid, k in KEYS.items()}
ORIGIN = cp.origin_for(CHAIN, GENESIS_HASH)


@pytest.fixture
def store(tmp_path):
    s = RocksStore(str(tmp_path / "db"))
    cfg = replace(configuration(), validators=tuple(
        ValidatorRecord(vid, f"127.0.0.1:{i}", f"127.0.0.1:{i + 100}", bytes(32), PUBS[vid])
        for i, vid in enumerate(sorted(KEYS), 1)))
    s.bind_genesis(GENESIS_HASH, cfg)
    machine = StateMachine(s, decode_envelope=decode_envelope, chain_id=CHAIN)
    for i in range(1, 6):
        machine.apply(codec.encode_entry(entry(T0 + i, accounts_tx(account(i), member=MEMBER))), 1, i)
    yield s
    s.close()


def _cosigner(store, vid, peers=None):
    return Cosigner(store, chain_id=CHAIN, genesis_hash=GENESIS_HASH, validator_id=vid, signing_key=KEYS[vid],
                    peers=peers or {})


def test_a_majority_of_honest_signatures_is_a_certificate_the_sdk_verifies(store):
    me = _cosigner(store, "v1")
    assert me.sign_new()
    assert not me.certificate(5).certified  # one of three
    # v2's signatures over the same blocks, as its own validator makes them.
    sigs = [(h, cp.key_hash("v2", PUBS["v2"]) + KEYS["v2"].sign(me.checkpoint(h).body())) for h in range(1, 6)]
    me2 = _cosigner(store, "v1", {"v2": lambda start, limit: [s for s in sigs if s[0] >= start][:limit]})
    assert me2.collect()
    cert = me2.certificate(5)
    assert cert.certified and cert.signatures == 2 and cert.quorum == 2
    checked = cp.verify_certificate(cert.note, sorted(PUBS.items()), ORIGIN)
    assert checked.height == 5 and checked.block_hash == store.head().header.hash
    assert checked.tree_size == store.head().header.tree_size and checked.state_root == store.head().header.state_root


def test_a_peer_that_signed_a_different_block_is_never_served(store):
    me = _cosigner(store, "v1")
    me.sign_new()
    forged = me.checkpoint(3)
    other = replace(forged, block_hash=bytes(32))  # a divergent v2 signs another block at height 3
    bad = cp.key_hash("v2", PUBS["v2"]) + KEYS["v2"].sign(other.body())
    me = _cosigner(store, "v1", {"v2": lambda start, limit: [(3, bad)]})
    me.collect()
    cert = me.certificate(3)
    assert cert.signatures == 1 and not cert.certified
    assert "v2" not in store.cosignatures(3)  # deleted once found, never served
    with pytest.raises(VerificationError):
        cp.verify_certificate(cert.note, sorted(PUBS.items()), ORIGIN)  # 1 of 3: below a majority


def test_a_signature_under_another_key_is_not_even_stored(store):
    outsider = Ed25519PrivateKey.generate()
    me = _cosigner(store, "v1")
    me.sign_new()
    sig = cp.key_hash("v2", outsider.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)) + outsider.sign(
        me.checkpoint(2).body())
    me = _cosigner(store, "v1", {"v2": lambda start, limit: [(2, sig)]})
    assert not me.collect()
    assert "v2" not in store.cosignatures(2)


def test_the_last_signed_height_is_durable_before_signing_and_never_signed_again(store):
    me = _cosigner(store, "v1")
    me.sign_new()
    reserved = store.last_signed_height()
    assert reserved >= 5 and reserved == 5 + SIGN_RESERVE
    # A restart (a new cosigner on the same data) after more blocks: it skips everything it
    # may have signed before (the reservation) instead of signing those heights again.
    machine = StateMachine(store, decode_envelope=decode_envelope, chain_id=CHAIN)
    machine.apply(codec.encode_entry(entry(T0 + 6, accounts_tx(account(6)))), 1, 6)
    again = _cosigner(store, "v1")
    assert not again.sign_new()
    assert store.signatures_of("v1", 6, 10) == []
    assert [h for h, _ in store.signatures_of("v1", 1, 10)] == [1, 2, 3, 4, 5]
