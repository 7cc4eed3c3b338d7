"""Limits at the door, through real gRPC against a running cluster (node/ledger/limits.py).

Whatever passes the door fits one Raft entry: a Submit above ``submit_events_max``
events or ``submit_bytes_max`` bytes is refused with RESOURCE_EXHAUSTED and a message
naming the limit, before anything is proposed; a message above
``grpc_message_bytes_max`` is refused by gRPC itself. Before these checks, one
Submit of 16 x 8,190 transfers became one block of 131,040 events and a 17 MB Raft
entry (above pysyncobj's appendEntriesBatchSizeBytes), and the cluster lost its
leader repeatedly. After each refusal the leader and its term are unchanged and a
valid transaction still commits in the very next block.
"""
from __future__ import annotations

import itertools
import time

import grpc
import pytest

from raft_ledger_client import Account, InvalidRequest, Transfer
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
from raft_ledger_node.ledger import limits

pytestmark = pytest.mark.integration

RPC_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 20.0
U128_MAX = (1 << 128) - 1
_ids = itertools.count(50_000_001)


@pytest.fixture(scope="module")
def signer(cluster_module):
    with cluster_module.client("bank-a") as c:
        yield c


def _stub(cluster, vid: str) -> pb_grpc.LedgerServiceStub:
    # A channel that lets the client send more than the validator accepts.
    ch = cluster.channel(vid, "bank-a", options=[("grpc.max_send_message_length", 64 << 20)])
    return pb_grpc.LedgerServiceStub(ch)


def _transfers(n: int, *, wide: bool = False) -> list[Transfer]:
    """``n`` transfers between accounts that need not exist (refused before apply);
    ``wide`` fills every field with its largest value, for large envelopes."""
    big = U128_MAX if wide else 0
    return [
        Transfer(id=next(_ids), debit_account_id=U128_MAX - 1, credit_account_id=U128_MAX - 2, amount=big or 1,
                 ledger=(1 << 32) - 1 if wide else 840, code=(1 << 16) - 1 if wide else 1, user_data_128=big,
                 user_data_64=(1 << 64) - 1 if wide else 0, user_data_32=(1 << 32) - 1 if wide else 0)
        for _ in range(n)
    ]


def _leader_state(cluster) -> tuple[str, int, int]:
    """(leader id, term, settled head height) once every validator reports the same head."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        rows = [st for _, st in cluster.status() if not isinstance(st, grpc.RpcError)]
        if len(rows) == 3 and len({(st.head.height, st.head.hash) for st in rows}) == 1:
            leader = cluster.leader()
            term = {st.term for st in rows}
            if len(term) == 1:
                return leader, term.pop(), rows[0].head.height
        time.sleep(0.1)
    raise AssertionError(f"validators did not settle within {SETTLE_TIMEOUT_S}s: {cluster.status()}")


def _refused_and_nothing_lost(cluster, signer, request: pb.SubmitRequest, code: grpc.StatusCode, *phrases: str):
    leader, term, height = _leader_state(cluster)
    with pytest.raises(grpc.RpcError) as err:
        _stub(cluster, leader).Submit(request, timeout=RPC_TIMEOUT_S)
    details = err.value.details() or ""
    assert err.value.code() == code, (err.value.code(), details)
    for p in phrases:
        assert p in details, details
    assert "Traceback" not in details
    # Nothing was proposed: the leader keeps its term and a control commits in the next block.
    [control] = signer.submit([signer.sign_accounts([Account(id=next(_ids), ledger=840, code=1)])])
    assert control.ok and control.height == height + 1
    assert _leader_state(cluster)[:2] == (leader, term)


def test_submit_above_submit_events_max_is_resource_exhausted(cluster_module, signer):
    n_txs = limits.submit_events_max // limits.tx_events_max + 1
    txs = [signer.sign_transfers(_transfers(limits.tx_events_max)) for _ in range(n_txs)]
    req = pb.SubmitRequest(transactions=txs)
    assert req.ByteSize() <= limits.submit_bytes_max, "the request must pass the bytes check to reach this one"
    _refused_and_nothing_lost(cluster_module, signer, req, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              "submit_events_max=", str(n_txs * limits.tx_events_max))


def test_submit_above_submit_bytes_max_is_resource_exhausted(cluster_module, signer):
    probe = signer.sign_transfers(_transfers(100, wide=True))
    per_event = probe.ByteSize() / 100
    per_tx = min(limits.tx_events_max, int(limits.tx_bytes_max * 0.95 / per_event))
    txs = []
    total = 0
    target = limits.submit_bytes_max + (limits.grpc_message_bytes_max - limits.submit_bytes_max) // 4
    while total < target:
        n = min(per_tx, max(1, int((target - total) / per_event) + 1))
        stx = signer.sign_transfers(_transfers(n, wide=True))
        assert stx.ByteSize() <= limits.tx_bytes_max
        txs.append(stx)
        total += stx.ByteSize()
    req = pb.SubmitRequest(transactions=txs)
    assert limits.submit_bytes_max < req.ByteSize() <= limits.grpc_message_bytes_max
    _refused_and_nothing_lost(cluster_module, signer, req, grpc.StatusCode.RESOURCE_EXHAUSTED, "submit_bytes_max=")


def test_message_above_the_grpc_cap_is_refused_by_grpc(cluster_module, signer):
    stx = signer.sign_transfers(_transfers(limits.tx_events_max, wide=True))
    copies = limits.grpc_message_bytes_max // stx.ByteSize() + 2
    req = pb.SubmitRequest(transactions=[stx] * copies)
    assert req.ByteSize() > limits.grpc_message_bytes_max
    _refused_and_nothing_lost(cluster_module, signer, req, grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_the_sdk_reports_an_oversized_submit_as_invalid_request_not_an_unknown_outcome(cluster_module, signer):
    txs = [signer.sign_transfers(_transfers(limits.tx_events_max)) for _ in range(3)]
    retries = signer.retries
    with pytest.raises(InvalidRequest, match="submit_events_max="):
        signer.submit(txs)
    assert signer.retries == retries, "a definite refusal is not retried"


def test_a_submit_at_the_limits_commits_in_one_block(cluster_module, signer):
    """A Submit at submit_events_max (one full transaction of 8,190 accounts) lands in one block, without an election."""
    leader, term, height = _leader_state(cluster_module)
    txs = [signer.sign_accounts([Account(id=next(_ids), ledger=840, code=1) for _ in range(limits.tx_events_max)])
           for _ in range(limits.submit_events_max // limits.tx_events_max)]
    results = signer.submit(txs)
    assert all(r.ok for r in results) and len({r.height for r in results}) == 1
    _, tx_hashes = signer.block(results[0].height)
    assert set(tx_hashes) == {r.tx_hash for r in results}
    assert _leader_state(cluster_module)[:2] == (leader, term)


def test_an_unknown_member_is_refused_before_its_bodies_are_parsed(cluster_module, signer):
    """Attack 1 of the hostile-input issue: 190 transactions x 8,190 empty transfers
    (about 3 MB) from a member with no key. Refused for who signed it, in well under a
    second (it used to cost the leader 19 s of CPU and 1.4 GB decoding first)."""
    body = pb.Transaction(create_transfers=pb.CreateTransfers(transfers=[pb.Transfer() for _ in range(8_190)]))
    stx = pb.SignedTransaction(body=body.SerializeToString(), member_id="intruder", key_id="k1", signature=bytes(64))
    req = pb.SubmitRequest(transactions=[stx] * 190)
    assert req.ByteSize() <= limits.submit_bytes_max
    t = time.monotonic()
    # Signed as another member than the caller's certificate (bank-a): PERMISSION_DENIED,
    # before any signature is checked (api.authz).
    _refused_and_nothing_lost(cluster_module, signer, req, grpc.StatusCode.PERMISSION_DENIED, "signed as member",
                              "intruder")
    assert time.monotonic() - t < 10.0  # includes the settle checks; the refusal itself is milliseconds
