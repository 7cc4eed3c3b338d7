"""The audit export over gRPC (``LedgerService/ExportAudit``, node/api/audit_stream.py)
and its CLI (``audit export --remote``), against a running 3-validator mutual-TLS cluster.

The auditor streams every transaction with its inclusion proof (RFC 9162 §2.1.3) against
the block's certified checkpoint (C2SP tlog-checkpoint + signed-note); ``audit
verify-export`` checks the file with the SDK alone. A member is refused before any
work. An export continued with ``--from-height`` or ``--resume`` verifies and holds
exactly the records of one uninterrupted export (no gap, no duplicate).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import grpc
import pytest

from raft_ledger_client import Account, CreateTransferResult as TR, Transfer, checkpoint, merkle
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc

from conftest import running_cluster

pytestmark = pytest.mark.integration

CLI = os.path.join(os.path.dirname(sys.executable), "ledger-validator")
#: This module's port range (the brief's start; running_cluster probes upwards from it).
START_PORT = 52_000
CERTIFIED_WAIT_S = 30.0


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A running cluster with accounts, transfers (one rejected) of two members, and its head certified."""
    with running_cluster(str(tmp_path_factory.mktemp("audit") / "cluster"), START_PORT) as c:
        a, b = c.client("bank-a"), c.client("bank-b")
        base = 8_100_000
        a.create_accounts([Account(id=base + i, ledger=840, code=1) for i in (1, 2)])
        b.create_accounts([Account(id=base + i, ledger=840, code=1) for i in (3, 4)])
        for n in range(1, 7):
            [r] = a.create_transfers([Transfer(id=base + 100 + n, debit_account_id=base + 1, credit_account_id=base + 3,
                                               amount=n, ledger=840, code=1)])
            assert r.result == TR.ok
            [r] = b.create_transfers([Transfer(id=base + 200 + n, debit_account_id=base + 4, credit_account_id=base + 2,
                                               amount=10 * n, ledger=840, code=1)])
            assert r.result == TR.ok
        [r] = a.create_transfers([Transfer(id=base + 300, debit_account_id=base + 1, credit_account_id=base + 1,
                                           amount=1, ledger=840, code=1)])
        assert r.result != TR.ok  # a failed event is exported too
        a.close()
        b.close()
        with c.channel(c.leader(), "auditor") as ch:
            head = pb_grpc.LedgerServiceStub(ch).GetHead(
                pb.GetHeadRequest(consistency=pb.READ_CONSISTENCY_LINEARIZABLE), timeout=10).head.height
        for vid in c.addresses:  # every validator has the head, certified
            with c.channel(vid, "auditor") as ch:
                pb_grpc.LedgerServiceStub(ch).GetCheckpoint(pb.GetCheckpointRequest(height=head, wait_ms=10_000),
                                                            timeout=15)
        yield c, head


def _records(path: str) -> list[dict]:
    with open(path) as f:
        return [o for o in map(json.loads, f.read().splitlines()) if "checkpoint" not in o]


def test_a_member_is_refused_and_the_auditor_streams_every_transaction(loaded):
    c, head = loaded
    with c.channel("v2", "bank-a") as ch:
        with pytest.raises(grpc.RpcError) as e:
            list(pb_grpc.LedgerServiceStub(ch).ExportAudit(pb.ExportAuditRequest(), timeout=10))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "auditor" in e.value.details()
    with c.channel("v2", "auditor") as ch:
        items = list(pb_grpc.LedgerServiceStub(ch).ExportAudit(pb.ExportAuditRequest(to_height=head), timeout=30))
    records = [i.record for i in items if i.WhichOneof("item") == "record"]
    checkpoints = [i.checkpoint for i in items if i.WhichOneof("item") == "checkpoint"]
    assert [r.leaf_index for r in records] == list(range(len(records)))
    assert [r.height for r in records] == sorted(r.height for r in records) and records[-1].height == head
    assert {r.signer for r in records} >= {"bank-a", "bank-b"}
    assert {r.key_id for r in records if r.signer in ("bank-a", "bank-b")} == {"k1"}
    assert {r.operation for r in records} >= {"create_accounts", "create_transfers"}
    assert any(r.result.results for r in records)  # the failed transfer, with its code
    assert checkpoints and all(cp.signatures >= cp.quorum for cp in checkpoints)
    # Every record's proof verifies, with the SDK, against a certificate the stream sent.
    g = c.local.genesis
    roots = {}
    for cp_msg in checkpoints:
        cp = checkpoint.verify_certificate(cp_msg.note, g.validator_keys, g.checkpoint_origin)
        roots[cp.tree_size] = cp.root_hash
    for r in records:
        assert r.tree_size > r.leaf_index
        merkle.verify_inclusion(merkle.leaf_hash(r.transaction), r.leaf_index, r.tree_size, list(r.proof),
                                roots[r.tree_size])
    # A member's own SDK check of one record: the same proof GetInclusionProof serves.
    with c.channel("v2", "auditor") as ch:
        one = pb_grpc.LedgerServiceStub(ch).GetInclusionProof(
            pb.GetInclusionProofRequest(tx_hash=records[3].tx_hash, tree_size=records[3].tree_size))
    assert list(one.proof) == list(records[3].proof) and one.transaction == records[3].transaction


def test_the_cli_export_verifies_and_resumes_without_gap_or_duplicate(loaded, tmp_path):
    c, head = loaded
    genesis = c.genesis_path
    full = str(tmp_path / "full.jsonl")
    started = time.monotonic()
    r = _run("audit", "export", "--remote", "--cluster", c.directory, "--as", "auditor", "--to-height", str(head),
             "--out", full)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "exporting blocks" in r.stderr  # the rich progress bar (stderr)
    v = _run("audit", "verify-export", full, "--genesis", genesis)
    assert v.returncode == 0 and v.stdout.startswith("verified: "), v.stdout + v.stderr
    n = len(_records(full))
    assert f"verified: {n} of {n} transactions" in v.stdout, v.stdout
    print(f"\nremote export of {head} heights in {time.monotonic() - started:.1f} s:\n{r.stdout}{v.stdout}")

    # Two parts: up to the middle, then --from-height appends the rest.
    split = head // 2
    parts = str(tmp_path / "parts.jsonl")
    assert _run("audit", "export", "--remote", "--cluster", c.directory, "--to-height", str(split),
                "--out", parts).returncode == 0
    r = _run("audit", "export", "--remote", "--cluster", c.directory, "--validator", "v3",
             "--from-height", str(split + 1), "--to-height", str(head), "--out", parts)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _records(parts) == _records(full)
    v = _run("audit", "verify-export", parts, "--genesis", genesis)
    assert v.returncode == 0, v.stdout

    # An interrupted export (cut mid-line) continued with --resume: the same records.
    with open(full) as f:
        text = f.read()
    cut = str(tmp_path / "cut.jsonl")
    with open(cut, "w") as f:
        f.write(text[: int(len(text) * 0.6)])
    r = _run("audit", "export", "--remote", "--cluster", c.directory, "--resume", "--to-height", str(head),
             "--out", cut)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _records(cut) == _records(full)
    assert _run("audit", "verify-export", cut, "--genesis", genesis).returncode == 0

    # A transaction left out is caught.
    lines = text.splitlines()
    drop = next(i for i, line in enumerate(lines) if "checkpoint" not in json.loads(line) and i > 2)
    gap = str(tmp_path / "gap.jsonl")
    with open(gap, "w") as f:
        f.write("\n".join(lines[:drop] + lines[drop + 1:]) + "\n")
    v = _run("audit", "verify-export", gap, "--genesis", genesis)
    assert v.returncode == 1 and "missing or repeated" in v.stdout, v.stdout

    # A member through the CLI: refused, exit 1, nothing streamed.
    r = _run("audit", "export", "--remote", "--cluster", c.directory, "--as", "bank-a",
             "--out", str(tmp_path / "member.jsonl"))
    assert r.returncode == 1 and "PERMISSION_DENIED" in r.stderr, r.stdout + r.stderr
