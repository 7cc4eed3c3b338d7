"""Verified reads against a real 3-validator cluster (issue 12): a member built from the
genesis file reads its accounts with account-tree proofs, fetches its transfer with an
inclusion proof and certificate, hands out a receipt that ``verify_receipt`` accepts
offline, and its persisted trusted checkpoint advances with a consistency proof at every
step (RFC 9162 §2.1.4.2; immudb GHSA-672p-m5jq-mrh8)."""
from __future__ import annotations

import json
import time

import pytest

from raft_ledger_client import Account, GrpcTransport, Transfer
from raft_ledger_client import checkpoint as cp
from raft_ledger_client.receipt import verify_receipt
from raft_ledger_node.config import load_genesis
from raft_ledger_node.localcluster import client_tls, member_client

pytestmark = pytest.mark.integration
LEDGER = 840


class RecordingTransport(GrpcTransport):
    """The real mutual-TLS transport, recording each call (to see the proofs asked for)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.calls: list[tuple[str, object]] = []

    def call(self, address, method, request, timeout_s):
        self.calls.append((method, request))
        return super().call(address, method, request, timeout_s)


def _verified(cluster, identity, **kw):
    transport = RecordingTransport(tls=client_tls(cluster.directory, identity))
    return member_client(cluster.directory, identity, transport=transport, **kw), transport


def test_member_reads_verified_and_gets_a_receipt(cluster_module, tmp_path):
    g = load_genesis(cluster_module.genesis_path)
    validators, origin = g.validator_keys, g.checkpoint_origin
    path = str(tmp_path / "trusted.json")
    issuer, _ = _verified(cluster_module, "central-bank")
    a, transport = _verified(cluster_module, "bank-a", trusted_state_path=path)
    calls = transport.calls
    b, _ = _verified(cluster_module, "bank-b")
    with issuer, a, b:
        assert a.trusted is not None and a.trusted.origin == origin  # pinned from genesis, not from a server
        issuer.create_accounts([Account(id=7001, ledger=LEDGER, code=1)])
        a.create_accounts([Account(id=7101, ledger=LEDGER, code=1)])
        b.create_accounts([Account(id=7201, ledger=LEDGER, code=1)])
        issuer.create_transfers([Transfer(id=7301, debit_account_id=7001, credit_account_id=7101, amount=1000,
                                          ledger=LEDGER, code=1)])
        [result] = a.submit([a.sign_transfers([Transfer(id=7302, debit_account_id=7101, credit_account_id=7201,
                                                        amount=250, ledger=LEDGER, code=1)])])
        assert result.ok

        [acct] = a.lookup_accounts([7101, 7201])  # 7201 is bank-b's: not served to bank-a
        assert (acct.id, acct.credits_posted, acct.debits_posted, acct.owner) == (7101, 1000, 250, "bank-a")
        assert any(m == "GetAccountProofs" for m, _ in calls)
        assert a.get_account(7201) is None
        assert b.get_account(7201).credits_posted == 250
        assert a.trusted.height >= result.height  # read your writes: certified past the payment

        proof = a.get_transaction_proof(result.tx_hash)
        assert proof.height == result.height and proof.checkpoint.tree_size > proof.leaf_index
        receipt = a.receipt(result.tx_hash)
        checked = verify_receipt(receipt.encode(), validators, origin)
        assert checked.height >= result.height

        # Several writes; each advance is proven from the size trusted before it.
        trusted = [(a.trusted.height, a.trusted.tree_size)]
        for i in range(4):
            a.create_accounts([Account(id=7400 + i, ledger=LEDGER, code=1)])
            calls.clear()
            c = a.checkpoint()
            before = trusted[-1]
            assert (c.height, c.tree_size) >= before
            if c.tree_size > before[1]:
                asked = [(r.first, r.second) for m, r in calls if m == "GetConsistencyProof"]
                assert asked == [(before[1], c.tree_size)]
            trusted.append((c.height, c.tree_size))
        # Certification follows the head by up to a cosigner round (node/cosigner.py ROUND_S).
        deadline = time.monotonic() + 10
        while trusted[-1][1] <= trusted[0][1] and time.monotonic() < deadline:
            time.sleep(0.1)
            calls.clear()
            c = a.checkpoint()
            if c.tree_size > trusted[-1][1]:
                asked = [(r.first, r.second) for m, r in calls if m == "GetConsistencyProof"]
                assert asked == [(trusted[-1][1], c.tree_size)]
            trusted.append((c.height, c.tree_size))
        assert trusted[-1][1] > trusted[0][1]
        saved = json.load(open(path))
        assert saved["origin"] == origin and cp.Checkpoint.parse(cp.parse_note(saved["note"])[0]).height == trusted[-1][0]

    # A new client resumes from the file, and keeps advancing from there.
    again, transport = _verified(cluster_module, "bank-a", trusted_state_path=path)
    calls = transport.calls
    with again:
        assert (again.trusted.height, again.trusted.tree_size) == trusted[-1]
        again.create_accounts([Account(id=7500, ledger=LEDGER, code=1)])
        [acct] = again.lookup_accounts([7500])
        assert acct.id == 7500 and again.trusted.tree_size > trusted[-1][1]
        assert any(m == "GetConsistencyProof" and r.first == trusted[-1][1] for m, r in calls)
