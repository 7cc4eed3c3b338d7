"""The member SDK: sign transactions, submit them to the validators, read the ledger.

Depends on grpcio, protobuf and cryptography only, never on ``node``::

    from raft_ledger_client import LedgerClient, Account, CreateAccountResult
    with LedgerClient.from_genesis("genesis.json", member_id="bank-a", key_id="k1",
                                   key_file="bank-a.pem", tls_key_file="bank-a.tls.key.pem",
                                   tls_cert_file="bank-a.tls.crt.pem") as c:
        [r] = c.create_accounts([Account(id=1, ledger=840, code=1)])
        assert r.result is CreateAccountResult.ok

Result codes and flags are enums derived from the wire contract
(``ledger.v1.CreateAccountResult`` ...); the exception tree is drawn in
``raft_ledger_client._exceptions``.

Verified reads: a client built with ``from_genesis`` pins the genesis hash and the
validators' checkpoint-signing keys and verifies what it reads (``lookup_accounts``,
``get_account``, ``get_transaction_proof``, ``receipt``, ``checkpoint``) against
certified checkpoints, keeping a :class:`TrustedState`; queries and history pages are
not verifiable and stay unverified.

Shared by many threads, one client merges their concurrent ``create_accounts`` /
``create_transfers`` calls into one signed transaction per Submit (on by default;
``coalesce=False`` turns it off; :mod:`raft_ledger_client.coalescing` lists what stays
as if each call were alone). For asyncio: ``raft_ledger_client.aio.AsyncLedgerClient``.
"""
from __future__ import annotations

try:
    from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as _pb  # noqa: F401
except ImportError as e:  # pragma: no cover - only before the install step ran
    raise ImportError("generated protobuf code missing: run `python proto/generate.py` (the README's setup does)") from e

from raft_ledger_client._client import (
    Account,
    AccountBalance,
    AccountFilter,
    AccountFlags,
    BlockHeader,
    EventResult,
    LedgerClient,
    Page,
    QueryFilter,
    RetryPolicy,
    TransactionProof,
    TransactionResult,
    Transfer,
    TransferFlags,
    load_private_key,
    read_genesis,
)
from raft_ledger_client._enums import CreateAccountResult, CreateTransferResult, TxRejection
from raft_ledger_client._exceptions import (
    InvalidRequest,
    LedgerError,
    MembershipChangeRefused,
    NotFound,
    NotLeader,
    NotSubmitted,
    PermissionDenied,
    RateLimited,
    Timeout,
    TransactionRejected,
    TransportError,
    Unavailable,
    VerificationError,
)
from raft_ledger_client._transport import ClientTLS, GrpcTransport, InProcessTransport, Transport
from raft_ledger_client.verify import TrustedState

__all__ = [
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
]
