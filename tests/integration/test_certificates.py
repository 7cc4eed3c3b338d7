"""Finality certificates and proofs served by a real 3-validator cluster (issue 12).

Every validator signs a C2SP checkpoint of every block it applied with its own key
(genesis ``public_key``) and collects its peers' signatures; a majority forms the
certificate. These tests read what the cluster serves through gRPC and verify it with
the SDK's pure verifiers only (``raft_ledger_client.checkpoint``, ``.merkle``,
``.state_proof``, ``.receipt``), and with the Go verifier built on
golang.org/x/mod/sumdb/note and tlog — formats no one here wrote.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import grpc
import pytest

from raft_ledger_client import Account, Transfer
from raft_ledger_client import checkpoint as cp
from raft_ledger_client import merkle
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
from raft_ledger_client.receipt import Receipt, verify_receipt
from raft_ledger_client.state_proof import verify_account_proof
from raft_ledger_client.wire import account_fields, u128
from raft_ledger_node.config import load_genesis

pytestmark = pytest.mark.integration

GO_SOURCE = os.path.join(os.path.dirname(__file__), "..", "go", "verifier")
LEDGER = 840


def _genesis(cluster):
    g = load_genesis(cluster.genesis_path)
    return g, g.validator_keys, g.checkpoint_origin


@pytest.fixture(scope="module")
def written(cluster_module):
    """Accounts of bank-a and bank-b, issued money, a payment; returns the payment's tx hash."""
    issuer = cluster_module.client("central-bank")
    a, b = cluster_module.client("bank-a"), cluster_module.client("bank-b")
    issuer.create_accounts([Account(id=9001, ledger=LEDGER, code=1)])
    a.create_accounts([Account(id=9101, ledger=LEDGER, code=1)])
    b.create_accounts([Account(id=9201, ledger=LEDGER, code=1)])
    issuer.create_transfers([Transfer(id=9301, debit_account_id=9001, credit_account_id=9101, amount=1000,
                                      ledger=LEDGER, code=1)])
    [result] = a.submit([a.sign_transfers([Transfer(id=9302, debit_account_id=9101, credit_account_id=9201,
                                                    amount=250, ledger=LEDGER, code=1)])])
    assert result.ok
    return result.tx_hash


def _stub(cluster, vid="v1", identity="bank-a"):
    return pb_grpc.LedgerServiceStub(cluster.channel(vid, identity))


def test_every_validator_serves_a_majority_certificate_of_its_head(cluster_module, written):
    g, validators, origin = _genesis(cluster_module)
    for vid in cluster_module.addresses:
        stub = _stub(cluster_module, vid)
        head = stub.GetHead(pb.GetHeadRequest()).head
        cert = stub.GetCheckpoint(pb.GetCheckpointRequest(height=head.height, wait_ms=5000)).checkpoint
        checkpoint = cp.verify_certificate(cert.note, validators, origin)
        assert (checkpoint.height, checkpoint.block_hash, checkpoint.tree_size, checkpoint.root_hash) == (
            head.height, head.hash, head.tree_size, head.tree_root)
        assert checkpoint.state_root == head.state_root and checkpoint.validators_hash == head.validators_hash
        assert cp.validator_set_hash(validators) == head.validators_hash
        assert cert.quorum == 2 and cert.signatures >= 2


def test_all_three_validators_sign_the_same_checkpoint(cluster_module, written):
    _, validators, origin = _genesis(cluster_module)
    stub = _stub(cluster_module)
    head = stub.GetHead(pb.GetHeadRequest()).head.height
    deadline = time.monotonic() + 10
    while True:
        cert = stub.GetCheckpoint(pb.GetCheckpointRequest(height=head, wait_ms=2000)).checkpoint
        if cert.signatures == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert cert.signatures == 3, cert.note
    _, sigs = cp.parse_note(cert.note)
    assert sorted(name for name, _, _ in sigs) == ["v1", "v2", "v3"]
    cp.verify_certificate(cert.note, validators, origin)


def test_inclusion_proof_of_a_payment_verifies_against_the_certified_root(cluster_module, written):
    _, validators, origin = _genesis(cluster_module)
    resp = _stub(cluster_module).GetInclusionProof(pb.GetInclusionProofRequest(tx_hash=written))
    checkpoint = cp.verify_certificate(resp.checkpoint.note, validators, origin)
    assert resp.tree_size == checkpoint.tree_size
    merkle.verify_inclusion(merkle.leaf_hash(resp.transaction), resp.leaf_index, resp.tree_size, list(resp.proof),
                            checkpoint.root_hash)
    stx = pb.SignedTransaction.FromString(resp.transaction)
    assert stx.member_id == "bank-a" and resp.result.tx_hash == written
    # The receipt a member hands to a counterparty verifies offline.
    receipt = Receipt(resp.transaction, resp.leaf_index, tuple(resp.proof), resp.checkpoint.note)
    assert verify_receipt(receipt.encode(), validators, origin).tree_size == resp.tree_size


def test_a_member_gets_no_proof_of_another_members_transaction(cluster_module, written):
    with pytest.raises(grpc.RpcError) as info:
        _stub(cluster_module, identity="bank-b").GetInclusionProof(pb.GetInclusionProofRequest(tx_hash=written))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    missing = bytes(32)
    with pytest.raises(grpc.RpcError) as info2:
        _stub(cluster_module, identity="bank-b").GetInclusionProof(pb.GetInclusionProofRequest(tx_hash=missing))
    assert info2.value.code() == info.value.code() and info2.value.details() == info.value.details()


def test_consistency_between_two_certified_checkpoints(cluster_module, written):
    _, validators, origin = _genesis(cluster_module)
    stub = _stub(cluster_module)
    first = cp.verify_certificate(stub.GetCheckpoint(pb.GetCheckpointRequest(wait_ms=5000)).checkpoint.note,
                                  validators, origin)
    cluster_module.client("bank-a").create_accounts([Account(id=9102 + int(time.time()) % 1000, ledger=LEDGER, code=1)])
    deadline = time.monotonic() + 10  # v1 may be a follower a few ms behind the leader
    while stub.GetHead(pb.GetHeadRequest()).head.tree_size <= first.tree_size and time.monotonic() < deadline:
        time.sleep(0.02)
    head = stub.GetHead(pb.GetHeadRequest()).head.height
    second = cp.verify_certificate(
        stub.GetCheckpoint(pb.GetCheckpointRequest(height=head, wait_ms=5000)).checkpoint.note, validators, origin)
    assert second.tree_size > first.tree_size
    proof = stub.GetConsistencyProof(pb.GetConsistencyProofRequest(first=first.tree_size, second=second.tree_size)).proof
    merkle.verify_consistency(first.tree_size, second.tree_size, list(proof), first.root_hash, second.root_hash)


def test_account_proofs_verify_against_the_certified_state_root(cluster_module, written):
    from raft_ledger_client.state_proof import encode_account_record

    _, validators, origin = _genesis(cluster_module)
    resp = _stub(cluster_module).GetAccountProofs(pb.GetAccountProofsRequest(ids=[u128(9101), u128(9201)]))
    checkpoint = cp.verify_certificate(resp.checkpoint.note, validators, origin)
    assert [a.id.lo for a in resp.accounts] == [9101]  # bank-b's account is not bank-a's to read
    [proof] = resp.proofs
    verify_account_proof(bytes(proof.record), proof.position, resp.account_count, list(proof.siblings),
                         checkpoint.state_root)
    fields = account_fields(resp.accounts[0])
    assert (fields["owner"], fields["debits_posted"], fields["credits_posted"]) == ("bank-a", 250, 1000)
    assert bytes(proof.record) == encode_account_record(**fields)


def test_go_verifier_accepts_the_clusters_certificates_and_receipts(cluster_module, written, tmp_path):
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain is not on PATH")
    _, validators, origin = _genesis(cluster_module)
    binary = tmp_path / "verifier"
    env = dict(os.environ, GOFLAGS="-mod=readonly", GOTOOLCHAIN="local", CGO_ENABLED="0")
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=GO_SOURCE, env=env, check=True, timeout=600)
    resp = _stub(cluster_module).GetInclusionProof(pb.GetInclusionProofRequest(tx_hash=written))
    receipt = tmp_path / "receipt.txt"
    receipt.write_text(Receipt(resp.transaction, resp.leaf_index, tuple(resp.proof), resp.checkpoint.note).encode())
    note = tmp_path / "checkpoint.txt"
    note.write_text(resp.checkpoint.note)
    args = [str(binary), "-quorum", "2", "-origin", origin]
    for vid, pk in validators:
        args += ["-vkey", cp.verifier_key(vid, pk)]
    ok = subprocess.run(args + [str(receipt)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("ok"), ok.stdout + ok.stderr
    ok = subprocess.run(args + ["-checkpoint", str(note)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # One flipped byte of the transaction: Go refuses it too.
    tampered = bytearray(resp.transaction)
    tampered[len(tampered) // 2] ^= 1
    receipt.write_text(Receipt(bytes(tampered), resp.leaf_index, tuple(resp.proof), resp.checkpoint.note).encode())
    bad = subprocess.run(args + [str(receipt)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1, bad.stdout + bad.stderr


def test_watch_checkpoints_streams_certified_heights_in_order(cluster_module, written):
    _, validators, origin = _genesis(cluster_module)
    stream = _stub(cluster_module).WatchCheckpoints(pb.WatchCheckpointsRequest(from_height=1), timeout=20)
    heights = []
    for msg in stream:
        heights.append(cp.verify_certificate(msg.checkpoint.note, validators, origin).height)
        if len(heights) == 3:
            stream.cancel()
            break
    assert heights == [1, 2, 3]


def test_watch_streams_are_bounded_so_they_cannot_starve_submit(cluster_module, written):
    """Each stream holds a gRPC worker; past watch_streams_max the validator refuses more."""
    from raft_ledger_node.ledger import limits

    stub = _stub(cluster_module, "v2")
    streams = [stub.WatchCheckpoints(pb.WatchCheckpointsRequest(from_height=1), timeout=20)
               for _ in range(limits.watch_streams_max)]
    try:
        for s in streams:
            next(s)  # each one is being served
        with pytest.raises(grpc.RpcError) as info:
            next(stub.WatchCheckpoints(pb.WatchCheckpointsRequest(from_height=1), timeout=20))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Writes still go through while the streams are open.
        cluster_module.client("bank-a").create_accounts([Account(id=9109, ledger=LEDGER, code=1)])
    finally:
        for s in streams:
            s.cancel()


def test_malformed_proof_requests_get_clear_errors_and_change_nothing(cluster_module, written):
    from raft_ledger_node.ledger import limits

    stub = _stub(cluster_module)
    head = stub.GetHead(pb.GetHeadRequest()).head
    cases = [
        (lambda: stub.GetConsistencyProof(pb.GetConsistencyProofRequest(first=0, second=1)), "INVALID_ARGUMENT"),
        (lambda: stub.GetConsistencyProof(pb.GetConsistencyProofRequest(first=2, second=head.tree_size + 10**6)),
         "INVALID_ARGUMENT"),
        (lambda: stub.GetAccountProofs(pb.GetAccountProofsRequest(
            ids=[u128(i) for i in range(limits.account_proofs_max + 1)])), "INVALID_ARGUMENT"),
        (lambda: stub.GetInclusionProof(pb.GetInclusionProofRequest(tx_hash=b"short")), "NOT_FOUND"),
        (lambda: stub.GetValidatorSet(pb.GetValidatorSetRequest(height=10**9)), "NOT_FOUND"),
        (lambda: stub.GetCheckpoint(pb.GetCheckpointRequest(height=10**9, wait_ms=0)), "NOT_FOUND"),
    ]
    for call, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code().name == code and "Traceback" not in (info.value.details() or "")
    after = stub.GetHead(pb.GetHeadRequest()).head
    assert (after.height, after.hash) == (head.height, head.hash)  # none of them proposed anything
