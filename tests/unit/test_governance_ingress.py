"""Ingress of governance transactions (node/api/validation.py): a governance
transaction travels alone in its Submit, so a Submit that passes the door still fits
one Raft entry (its payload is bounded per transaction, not by submit_bytes_max)."""
from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from raft_ledger_client import governance
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.api.validation import BadRequest, decode_submit

CHAIN = "test-chain"


def _signed(body: pb.Transaction) -> pb.SignedTransaction:
    key = Ed25519PrivateKey.generate()
    raw = body.SerializeToString()
    return pb.SignedTransaction(body=raw, member_id="operator", key_id="k1", signature=key.sign(raw))


def _governance_tx(now_ns: int) -> pb.SignedTransaction:
    pf = governance.build_proposal(CHAIN, 1, [governance.suspend_member("bank-b")], wall_clock_ns=lambda: now_ns)
    pf.approve("admin-1", "k1", Ed25519PrivateKey.generate())
    return _signed(pb.Transaction(chain_id=CHAIN, valid_until=now_ns + 60 * 10**9,
                                  governance=pb.Governance(proposal=pf.proposal, approvals=pf.approvals)))


def test_a_governance_transaction_alone_decodes():
    now = time.time_ns()
    [tx] = decode_submit(pb.SubmitRequest(transactions=[_governance_tx(now)]), chain_id=CHAIN, now_ns=now)
    assert tx.governance is not None and tx.governance.base_version == 1


def test_a_governance_transaction_beside_another_is_refused():
    now = time.time_ns()
    transfers = _signed(pb.Transaction(chain_id=CHAIN, valid_until=now + 60 * 10**9, create_transfers=pb.CreateTransfers(
        transfers=[pb.Transfer(id=pb.UInt128(lo=1), debit_account_id=pb.UInt128(lo=1), credit_account_id=pb.UInt128(lo=2),
                               amount=pb.UInt128(lo=1), ledger=1, code=1)])))
    with pytest.raises(BadRequest, match="alone"):
        decode_submit(pb.SubmitRequest(transactions=[_governance_tx(now), transfers]), chain_id=CHAIN, now_ns=now)
