"""What replicas apply is what was signed (issue 12).

A Raft entry carries only SignedTransaction bytes; every validator decodes the events
from them itself (``api.validation.tx_from_committed``) and apply verifies each
signature against the signer's key at that height. These tests play a hostile leader
that commits bytes an honest one never proposes, and check that every validator
refuses them deterministically, applies nothing of them, and that an honest entry
gives the same block whether applied from the leader's decoded copy or from bytes.
"""
from __future__ import annotations

import pytest

from helpers import (
    CHAIN, MEMBER, OTHER, T0, Ledger, account, accounts_tx, configuration, decode_envelope, entry, signed_envelope,
    transfer, transfers_tx,
)
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.wire import transfer_to_pb
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.types import RawEntry, TxRejection
from raft_ledger_node.state_machine import StateMachine
from raft_ledger_node.store_memory import MemoryStore


def _machine() -> tuple[MemoryStore, StateMachine]:
    store = MemoryStore(configuration=configuration(issuers={1: [MEMBER]}))
    return store, StateMachine(store, decode_envelope=decode_envelope, chain_id=CHAIN)


def _funded(machine: StateMachine) -> int:
    raw = codec.encode_entry(entry(T0, accounts_tx(account(1), account(2)), accounts_tx(account(3), member=OTHER)))
    assert machine.apply(raw, 1, 1).results[0].rejection == 0
    return 2


def _tampered_amount(tx_bytes: bytes, amount: int) -> bytes:
    """The same envelope with the transfer's amount changed in the body, signature kept."""
    stx = pb.SignedTransaction.FromString(tx_bytes)
    body = pb.Transaction.FromString(stx.body)
    body.create_transfers.transfers[0].amount.lo = amount
    stx.body = body.SerializeToString(deterministic=True)
    return stx.SerializeToString(deterministic=True)


def test_a_body_changed_after_signing_is_refused_by_every_validator():
    store, machine = _machine()
    index = _funded(machine)
    honest = transfers_tx(transfer(10, 1, 3, 5))
    forged = _tampered_amount(honest.envelope, 5_000_000)
    raw = codec.encode_entry(RawEntry(T0 + 10**6, (forged,)))
    [r] = machine.apply(raw, 1, index).results
    assert r.rejection == TxRejection.signature_invalid and r.codes == ()
    assert store.get_transfer(10) is None and store.get_account(3).credits_posted == 0


@pytest.mark.parametrize("envelope", [
    b"\xff\x00 not protobuf",
    signed_envelope(MEMBER, pb.Transaction(chain_id="another-chain", valid_until=T0 + 10**15,
                                           create_transfers=pb.CreateTransfers(transfers=[transfer_to_pb(transfer(11, 1, 3, 1))]))),
    signed_envelope(MEMBER, pb.Transaction(chain_id=CHAIN, valid_until=T0 + 10**15)),  # no operation
    # A valid envelope with a field appended that the SignedTransaction does not know.
    transfers_tx(transfer(12, 1, 3, 1)).envelope + b"\x58\x01",
])
def test_bytes_an_honest_leader_never_proposes_are_envelope_invalid(envelope):
    store, machine = _machine()
    index = _funded(machine)
    [r] = machine.apply(codec.encode_entry(RawEntry(T0 + 10**6, (envelope,))), 1, index).results
    assert r.rejection == TxRejection.envelope_invalid and r.codes == ()
    # The refusal is recorded under the bytes' hash: a replay answers the same, nothing else moved.
    assert store.get_tx_result(r.tx_hash)[2] == TxRejection.envelope_invalid
    assert all(store.get_transfer(t) is None for t in (11, 12))


def test_a_signature_by_another_members_key_is_refused():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    store, machine = _machine()
    index = _funded(machine)
    body = pb.Transaction(chain_id=CHAIN, valid_until=T0 + 10**15,
                          create_transfers=pb.CreateTransfers(transfers=[transfer_to_pb(transfer(13, 1, 3, 1))]))
    envelope = signed_envelope(MEMBER, body, key=Ed25519PrivateKey.generate())
    [r] = machine.apply(codec.encode_entry(RawEntry(T0 + 10**6, (envelope,))), 1, index).results
    assert r.rejection == TxRejection.signature_invalid


def test_the_leaders_decoded_copy_and_the_followers_bytes_make_the_same_block():
    txs = (accounts_tx(account(1), account(2)), transfers_tx(transfer(20, 1, 2, 7)))
    leader, follower = Ledger(MemoryStore(configuration=configuration(issuers={1: [MEMBER]}))), _machine()
    leader.block(*txs, ts=T0)
    done = follower[1].apply(codec.encode_entry(entry(T0, *txs)), leader.term, 1)
    assert done.writeset.header == leader.ws.header
    assert [r.codes for r in done.results] == [(0, 0), (0,)]
