"""gRPC servicers: limits, decode, verify, propose, and map outcomes to status codes.

Status codes (every message says what to do; never a stack trace):

* INVALID_ARGUMENT — malformed request, transaction or event, bad signature,
  unknown member/key, a per-transaction or per-query limit exceeded. Nothing of
  the request was proposed.
* RESOURCE_EXHAUSTED — the Submit as a whole is larger than one block may be
  (``submit_events_max``, ``submit_bytes_max``; gRPC itself answers a message above
  ``grpc_message_bytes_max``). Nothing was proposed: split it into several Submits.
* FAILED_PRECONDITION — this validator is not the leader; trailing metadata
  ``leader-address`` names the leader's gRPC address, ``ledger-refused:
  not-leader`` says nothing was proposed.
* UNAVAILABLE — no leader yet (trailing metadata ``ledger-refused: no-leader``:
  nothing was proposed), or the proposal was dropped (leader change): the
  outcome is unknown, retry the same signed transactions.
* DEADLINE_EXCEEDED — the block did not apply in time; outcome unknown: retry.
* NOT_FOUND — GetBlock for a height not (yet) in the chain.
* INTERNAL — a bug; logged with its trace on the server, not sent.
"""
from __future__ import annotations

import functools
import logging

import grpc
from google.protobuf.message import DecodeError

from raft_ledger_client._convert import account_fields, account_filter_fields, query_filter_fields, account_to_pb, from_u128, header_to_pb, transfer_fields, transfer_to_pb, u128
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
from raft_ledger_node.batcher import Batcher, Submission, SubmissionTooLarge
from raft_ledger_node.crypto import UnknownKey, Verifier, sha256
from raft_ledger_node.ledger import limits
from raft_ledger_node.ledger.filters import AccountFilter, QueryFilter
from raft_ledger_node.ledger.types import (
    Account,
    Operation,
    Transfer,
    Tx,
    TxResult,
)

log = logging.getLogger("ledger.service")



class BadRequest(ValueError):
    pass


u128_to_int = from_u128
int_to_u128 = u128


def account_from_pb(a: pb.Account) -> Account:
    return Account(**account_fields(a))


def transfer_from_pb(t: pb.Transfer) -> Transfer:
    """Same result as ``Transfer(**transfer_fields(t))``, built positionally: this runs
    for every submitted transfer on the leader, and the generic mapping costs twice
    as much (4.6 against 2.3 µs; tests/unit/test_proposed_entry.py checks they agree)."""
    i, d, c, a, p, u = t.id, t.debit_account_id, t.credit_account_id, t.amount, t.pending_id, t.user_data_128
    return Transfer(
        (i.hi << 64) | i.lo, (d.hi << 64) | d.lo, (c.hi << 64) | c.lo, (a.hi << 64) | a.lo,
        t.ledger, t.code, t.flags, (p.hi << 64) | p.lo, t.timeout,
        (u.hi << 64) | u.lo, t.user_data_64, t.user_data_32, t.timestamp,
    )


#: The EventResult oneof field for each operation's result enum.
_RESULT_FIELDS = {Operation.create_accounts: "account", Operation.create_transfers: "transfer"}


def result_to_pb(r: TxResult, operation: Operation) -> pb.TransactionResult:
    """Only the failed events go on the wire, as TigerBeetle replies; the SDK fills in ``ok``.

    This runs per submitted transaction on the leader: an all-ok transaction
    (the common case) costs one ``any`` over its codes and no EventResult.
    """
    if not any(r.codes):
        return pb.TransactionResult(tx_hash=r.tx_hash, height=r.height)
    field = _RESULT_FIELDS[operation]
    return pb.TransactionResult(
        tx_hash=r.tx_hash,
        height=r.height,
        results=[pb.EventResult(index=i, **{field: c}) for i, c in enumerate(r.codes) if c],
    )


def _guard(method):
    """Map unexpected exceptions to INTERNAL without leaking the trace to the client."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except grpc.RpcError:
            raise
        except Exception:
            if context.code() is not None:  # abort() already set a status
                raise
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}; see the validator log")

    return wrapper


def decode_signed(stx: pb.SignedTransaction, index: int) -> Tx:
    """Stateless checks and decoding of one signed transaction (signature checked elsewhere)."""
    where = f"transaction {index}"
    if not stx.member_id or len(stx.member_id.encode()) > limits.member_id_bytes_max:
        raise BadRequest(f"{where}: member_id must be 1..{limits.member_id_bytes_max} bytes")
    if len(stx.signature) != 64:
        raise BadRequest(f"{where}: signature must be 64 bytes (Ed25519)")
    envelope = stx.SerializeToString(deterministic=True)
    if len(envelope) > limits.tx_bytes_max:
        raise BadRequest(f"{where}: {len(envelope)} bytes exceeds tx_bytes_max={limits.tx_bytes_max}")
    body = pb.Transaction()
    try:
        body.ParseFromString(stx.body)
    except DecodeError as e:
        raise BadRequest(f"{where}: body is not a ledger.v1.Transaction ({e})") from e
    kind = body.WhichOneof("operation")
    if kind == "create_accounts":
        events = tuple(account_from_pb(a) for a in body.create_accounts.accounts)
        if any(a.owner for a in body.create_accounts.accounts):
            raise BadRequest(f"{where}: account owner is set by the ledger from the signer; leave it empty")
        op = Operation.create_accounts
    elif kind == "create_transfers":
        events = tuple(transfer_from_pb(t) for t in body.create_transfers.transfers)
        op = Operation.create_transfers
    else:
        raise BadRequest(f"{where}: body has no operation (create_accounts or create_transfers)")
    if not events:
        raise BadRequest(f"{where}: no events")
    if len(events) > limits.tx_events_max:
        raise BadRequest(f"{where}: {len(events)} events exceeds tx_events_max={limits.tx_events_max}")
    return Tx(member_id=stx.member_id, operation=op, events=events, envelope=envelope, tx_hash=sha256(envelope))


class LedgerServicer(pb_grpc.LedgerServicer):
    def __init__(self, *, store, replica, batcher: Batcher, verifier: Verifier, leader_grpc_address, submit_timeout_s: float):
        self._store = store
        self._replica = replica
        self._batcher = batcher
        self._verifier = verifier
        self._leader_grpc_address = leader_grpc_address
        self._submit_timeout_s = submit_timeout_s

    def _require_leader(self, context) -> None:
        if self._replica.is_leader():
            return
        leader = self._leader_grpc_address()
        # ``ledger-refused``: refused before anything was proposed, so the SDK can
        # tell "not submitted" from an unknown outcome (proto: service Ledger).
        if leader is None:
            context.set_trailing_metadata((("ledger-refused", "no-leader"),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "no leader elected yet; nothing was proposed, retry shortly")
        context.set_trailing_metadata((("leader-address", leader), ("ledger-refused", "not-leader")))
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"not the leader; send writes to {leader}")

    def _consistent_read(self, consistency: int, context) -> None:
        """For LINEARIZABLE reads: be the leader and pass a read barrier through the log."""
        if consistency != pb.READ_CONSISTENCY_LINEARIZABLE:
            return
        self._require_leader(context)
        if not self._replica.read_barrier(self._submit_timeout_s):
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "read barrier not committed (leadership lost or no majority); retry on the leader",
            )

    @_guard
    def Submit(self, request: pb.SubmitRequest, context):  # noqa: N802
        n = len(request.transactions)
        if n == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no transactions")
        if n > limits.submit_txs_max:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{n} transactions exceeds submit_txs_max={limits.submit_txs_max}")
        size = sum(stx.ByteSize() for stx in request.transactions)
        if size > limits.submit_bytes_max:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{size} bytes of transactions exceeds submit_bytes_max={limits.submit_bytes_max}; split the Submit",
            )
        self._require_leader(context)
        try:
            txs = [decode_signed(stx, i) for i, stx in enumerate(request.transactions)]
        except BadRequest as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        events = sum(len(tx.events) for tx in txs)
        if events > limits.submit_events_max:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{events} events exceeds submit_events_max={limits.submit_events_max}; split the Submit",
            )
        checks = self._verifier.verify_many(
            [(s.member_id, s.key_id, s.signature, s.body) for s in request.transactions]
        )
        for i, ok in enumerate(checks):
            if isinstance(ok, UnknownKey):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"transaction {i}: {ok}")
            if not ok:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"transaction {i}: bad signature for member {txs[i].member_id!r} key {request.transactions[i].key_id!r}",
                )
        # Retries of transactions already in the chain are answered from the index.
        known = [self._store.get_tx_result(tx.tx_hash) for tx in txs]
        results: list[TxResult | None] = [
            None if k is None else TxResult(tx.tx_hash, k[0], k[1]) for tx, k in zip(txs, known)
        ]
        fresh = [tx for tx, r in zip(txs, results) if r is None]
        if fresh:
            sub = Submission(txs=fresh)
            self._batcher.submit(sub)
            if not sub.done.wait(self._submit_timeout_s):
                context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"not applied within {self._submit_timeout_s}s; outcome unknown, retry the same transactions",
                )
            if isinstance(sub.error, SubmissionTooLarge):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"not proposed: {sub.error}; split the Submit")
            if sub.error is not None:
                context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"proposal not committed ({sub.error}); outcome unknown, retry the same transactions",
                )
            it = iter(sub.results)
            results = [r if r is not None else next(it) for r in results]
        return pb.SubmitResponse(results=[result_to_pb(r, tx.operation) for r, tx in zip(results, txs)])

    @_guard
    def LookupAccounts(self, request, context):  # noqa: N802
        if len(request.ids) > limits.lookup_ids_max:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {limits.lookup_ids_max} ids per lookup")
        self._consistent_read(request.consistency, context)
        height = self._store.head().height
        found = [self._store.get_account(u128_to_int(i)) for i in request.ids]
        return pb.LookupAccountsResponse(accounts=[account_to_pb(a) for a in found if a is not None], height=height)

    @_guard
    def LookupTransfers(self, request, context):  # noqa: N802
        if len(request.ids) > limits.lookup_ids_max:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {limits.lookup_ids_max} ids per lookup")
        self._consistent_read(request.consistency, context)
        height = self._store.head().height
        found = [self._store.get_transfer(u128_to_int(i)) for i in request.ids]
        return pb.LookupTransfersResponse(transfers=[transfer_to_pb(t) for t in found if t is not None], height=height)

    def _account_filter(self, f: pb.AccountFilter, context) -> AccountFilter:
        self._check_filter(f, context)
        fields = account_filter_fields(f)
        if fields["account_id"] == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "filter.account_id must not be zero")
        return AccountFilter(**fields)

    @staticmethod
    def _check_filter(f, context) -> None:
        if f.limit > limits.query_limit_max:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"filter.limit must be at most {limits.query_limit_max}")
        if f.timestamp_max and f.timestamp_min > f.timestamp_max:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "filter.timestamp_min is after filter.timestamp_max")

    def _query_filter(self, f: pb.QueryFilter, context) -> QueryFilter:
        self._check_filter(f, context)
        return QueryFilter(**query_filter_fields(f))

    @_guard
    def GetAccountTransfers(self, request, context):  # noqa: N802
        height = self._store.head().height
        transfers, cursor = self._store.get_account_transfers(self._account_filter(request.filter, context))
        return pb.GetAccountTransfersResponse(
            transfers=[transfer_to_pb(t) for t in transfers], height=height, next_timestamp=cursor
        )

    @_guard
    def GetAccountBalances(self, request, context):  # noqa: N802
        height = self._store.head().height
        rows, cursor = self._store.get_account_balances(self._account_filter(request.filter, context))
        return pb.GetAccountBalancesResponse(
            balances=[
                pb.AccountBalance(
                    debits_pending=int_to_u128(a.debits_pending),
                    debits_posted=int_to_u128(a.debits_posted),
                    credits_pending=int_to_u128(a.credits_pending),
                    credits_posted=int_to_u128(a.credits_posted),
                    timestamp=ts,
                )
                for ts, a in rows
            ],
            height=height,
            next_timestamp=cursor,
        )

    @_guard
    def QueryAccounts(self, request, context):  # noqa: N802
        height = self._store.head().height
        accounts, cursor = self._store.query_accounts(self._query_filter(request.filter, context))
        return pb.QueryAccountsResponse(accounts=[account_to_pb(a) for a in accounts], height=height, next_timestamp=cursor)

    @_guard
    def QueryTransfers(self, request, context):  # noqa: N802
        height = self._store.head().height
        transfers, cursor = self._store.query_transfers(self._query_filter(request.filter, context))
        return pb.QueryTransfersResponse(
            transfers=[transfer_to_pb(t) for t in transfers], height=height, next_timestamp=cursor
        )

    @_guard
    def GetHead(self, request, context):  # noqa: N802
        self._consistent_read(request.consistency, context)
        return pb.GetHeadResponse(head=header_to_pb(self._store.head().header))

    @_guard
    def GetBlock(self, request, context):  # noqa: N802
        block = self._store.get_block(request.height)
        if block is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no block at height {request.height} (head is {self._store.head().height})")
        header, tx_hashes = block
        return pb.GetBlockResponse(header=header_to_pb(header), tx_hashes=tx_hashes)


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(self, *, validator_id: str, store, replica, leader_grpc_address):
        self._validator_id = validator_id
        self._store = store
        self._replica = replica
        self._leader_grpc_address = leader_grpc_address

    @_guard
    def GetStatus(self, request, context):  # noqa: N802
        st = self._replica.status()
        return pb.GetStatusResponse(
            validator_id=self._validator_id,
            role=st.role,
            term=st.term,
            commit_index=st.commit_index,
            applied_index=self._store.applied_index(),
            head=header_to_pb(self._store.head().header),
            leader_address=self._leader_grpc_address() or "",
            ready=st.ready,
            log_size=st.log_size,
        )
