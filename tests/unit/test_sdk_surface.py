"""Pins the SDK's public surface (httpx style) and its independence from the node."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import raft_ledger_client as sdk

ROOT = pathlib.Path(__file__).resolve().parents[2]

EXPECTED = {
    "Account",
    "AccountBalance",
    "AccountFilter",
    "AccountFlags",
    "BlockHeader",
    "ClientTLS",
    "CreateAccountResult",
    "CreateTransferResult",
    "EventResult",
    "GrpcTransport",
    "InProcessTransport",
    "InvalidRequest",
    "LedgerClient",
    "LedgerError",
    "MembershipChangeRefused",
    "NotFound",
    "NotLeader",
    "NotSubmitted",
    "PermissionDenied",
    "RateLimited",
    "Page",
    "QueryFilter",
    "RetryPolicy",
    "Timeout",
    "TransactionProof",
    "TransactionRejected",
    "TransactionResult",
    "Transfer",
    "TransferFlags",
    "Transport",
    "TransportError",
    "TrustedState",
    "TxRejection",
    "Unavailable",
    "VerificationError",
    "load_private_key",
    "read_genesis",
}


def test_public_api_is_pinned():
    assert set(sdk.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(sdk, name) is not None


def test_exception_tree():
    assert issubclass(sdk.Timeout, sdk.TransportError)
    assert issubclass(sdk.Unavailable, sdk.TransportError)
    assert issubclass(sdk.TransportError, sdk.LedgerError)
    assert issubclass(sdk.InvalidRequest, sdk.LedgerError)
    assert issubclass(sdk.NotFound, sdk.LedgerError)
    assert issubclass(sdk.PermissionDenied, sdk.LedgerError)
    assert issubclass(sdk.TransactionRejected, sdk.LedgerError)
    # A refusal before proposal is definite: never counted as an unknown outcome.
    assert issubclass(sdk.NotSubmitted, sdk.LedgerError)
    assert not issubclass(sdk.NotSubmitted, sdk.TransportError)
    assert issubclass(sdk.NotLeader, sdk.NotSubmitted)
    # A refused caller is definite too, and no retry helps: not a transport error, not "not submitted".
    assert issubclass(sdk.PermissionDenied, sdk.LedgerError)
    assert not issubclass(sdk.PermissionDenied, (sdk.TransportError, sdk.NotSubmitted, sdk.InvalidRequest))
    # A failed proof is definite and fails closed: not an unknown outcome, nothing to retry.
    assert issubclass(sdk.VerificationError, sdk.LedgerError)
    assert not issubclass(sdk.VerificationError, (sdk.TransportError, sdk.NotSubmitted))


def test_exception_tree_is_drawn_in_the_docstring():
    from raft_ledger_client import _exceptions

    for name in ("LedgerError", "TransportError", "Timeout", "Unavailable", "NotSubmitted", "NotLeader", "InvalidRequest", "NotFound", "VerificationError"):
        assert name in _exceptions.__doc__, name


def test_enums_pickle_by_their_public_names():
    import pickle

    for member in (sdk.CreateTransferResult.exceeds_credits, sdk.CreateAccountResult.exists,
                   sdk.AccountFlags.HISTORY | sdk.AccountFlags.LINKED, sdk.TransferFlags.PENDING):
        assert pickle.loads(pickle.dumps(member)) is member
    e = pickle.loads(pickle.dumps(sdk.NotLeader("v2 Submit: not the leader", "127.0.0.1:7102")))
    assert (str(e), e.leader_address) == ("v2 Submit: not the leader", "127.0.0.1:7102")


def test_sdk_imports_without_the_node_dependencies():
    """A member bank installs the SDK without RocksDB or Raft: importing it must not load them."""
    code = (
        "import sys, raft_ledger_client; "
        "bad = [m for m in ('rocksdict', 'pysyncobj', 'raft_ledger_node') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"SDK import pulled in: {out.stdout} {out.stderr}"
