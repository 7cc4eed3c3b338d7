"""gRPC servicers of the ``Ledger`` and ``Admin`` services (status codes: :mod:`raft_ledger_node.api`)."""
from __future__ import annotations

import functools
import logging
import threading
import time

import grpc

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
from raft_ledger_node.api import validation
from raft_ledger_node.api.authz import Authorizer
from raft_ledger_node.api.ratelimit import MemberRateLimiter
from raft_ledger_node.api.mapping import (
    account_to_pb,
    balance_to_pb,
    from_u128,
    header_to_pb,
    result_to_pb,
    transfer_to_pb,
)
from raft_ledger_node.batcher import Batcher, Submission, SubmissionTooLarge
from raft_ledger_node.crypto import KeyNotPermitted, UnknownKey, Verifier
from raft_ledger_node.ledger.governance import encode_configuration
from raft_ledger_node.ledger.types import Operation, TxResult

log = logging.getLogger("ledger.service")


def _guard(method):
    """Answer a refused request with its status; map unexpected exceptions to INTERNAL
    without leaking the trace to the client (it goes to the validator's log)."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except grpc.RpcError:
            raise
        except validation.RequestError as e:
            context.abort(getattr(grpc.StatusCode, e.status), str(e))
        except Exception:
            if context.code() is not None:  # abort() already set a status
                raise
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}; see the validator log")

    return wrapper


#: Seconds a range query waits for a scan slot before it is refused (overloaded).
SCAN_SLOT_WAIT_S_MAX = 2.0


def _scan(method):
    """Range queries (up to query_scan_rows_max rows each) run at most ``scans_inflight_max``
    at a time: sixteen concurrent full scans starved the Raft tick thread of the GIL.
    A query that finds no slot within its deadline (at most SCAN_SLOT_WAIT_S_MAX) is
    refused RESOURCE_EXHAUSTED, ``ledger-refused: overloaded`` (the SDK retries it)."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        remaining = context.time_remaining()
        wait_s = SCAN_SLOT_WAIT_S_MAX if remaining is None else max(0.0, min(SCAN_SLOT_WAIT_S_MAX, remaining))
        if not self._scan_slots.acquire(timeout=wait_s):
            context.set_trailing_metadata((("ledger-refused", "overloaded"),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many range queries at once on this validator; retry")
        try:
            return method(self, request, context)
        finally:
            self._scan_slots.release()

    return wrapper


class LedgerServicer(pb_grpc.LedgerServicer):
    """``ledger.v1.Ledger``: Submit on the leader (validation, signatures, dedup by
    transaction hash, group commit), reads from the local store or, linearizable,
    from the leader after a read barrier. Status codes: see :mod:`raft_ledger_node.api`."""

    def __init__(self, *, store, replica, batcher: Batcher, verifier: Verifier, leader_grpc_address,
                 submit_timeout_s: float, chain_id: str, authz: Authorizer,
                 rate_limiter: MemberRateLimiter | None = None,
                 clock_ns=time.time_ns, scans_inflight_max: int = 1):
        self._store = store
        self._authz = authz
        self._replica = replica
        self._batcher = batcher
        self._verifier = verifier
        self._leader_grpc_address = leader_grpc_address
        self._submit_timeout_s = submit_timeout_s
        self._chain_id = chain_id
        self._rate_limiter = rate_limiter
        self._clock_ns = clock_ns
        self._scan_slots = threading.BoundedSemaphore(scans_inflight_max)

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

    def _charge(self, txs, context) -> None:
        """Take each member's events from its token bucket, or refuse (nothing proposed)."""
        per_member: dict[str, int] = {}
        for tx in txs:
            per_member[tx.member_id] = per_member.get(tx.member_id, 0) + len(tx.events)
        for member, events in per_member.items():
            wait_s = self._rate_limiter.take(member, events)
            if wait_s is not None:
                rate = self._rate_limiter.rate(member)
                retry_ms = max(1, int(wait_s * 1000) + 1)
                context.set_trailing_metadata((("ledger-refused", "rate-limited"), ("retry-after-ms", str(retry_ms))))
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"member {member!r} is over its rate limit ({rate.events_per_s:g} events/s, burst {rate.burst:g}); "
                    f"nothing was proposed, retry after {retry_ms} ms",
                )

    def _verify_signatures(self, request: pb.SubmitRequest) -> None:
        """Every envelope signed by a known, permitted key (raises validation.Denied:
        unknown member or key, suspended or removed member, revoked key) with a valid
        signature over its raw body (raises validation.BadRequest)."""
        checks = self._verifier.verify_many(
            [(s.member_id, s.key_id, s.signature, s.body) for s in request.transactions]
        )
        for i, ok in enumerate(checks):
            if isinstance(ok, KeyNotPermitted):
                raise validation.Denied(f"transaction {i}: {ok}")
            if isinstance(ok, UnknownKey):
                raise validation.Denied(f"transaction {i}: {ok}")
            if not ok:
                stx = request.transactions[i]
                raise validation.BadRequest(
                    f"transaction {i}: bad signature for member {stx.member_id!r} key {stx.key_id!r}"
                )

    def _authorise_signers(self, txs) -> None:
        """Roles against the current configuration, before anything is proposed (apply
        decides again against the block's): create_accounts/create_transfers need role
        ``member``, a governance transaction an admin or an ``operator`` (raises
        validation.Denied); a governance proposal built on another version than the
        current one is refused early (validation.BadRequest ``config_version_stale``)."""
        cfg = self._store.configuration()
        if cfg is None:
            return
        for i, tx in enumerate(txs):
            m = cfg.member(tx.member_id)
            if m is None or not m.active:  # the verifier refused these already, unless the config just changed
                raise validation.Denied(f"transaction {i}: member {tx.member_id!r} is not an active member")
            if tx.operation == Operation.governance:
                if tx.member_id not in cfg.admins and "operator" not in m.roles:
                    raise validation.Denied(
                        f"transaction {i}: {tx.member_id!r} may not submit governance transactions "
                        "(only an administrator or an identity with role operator)")
                base = tx.governance.base_version
                if base != cfg.version:
                    raise validation.BadRequest(
                        f"transaction {i}: config_version_stale: the proposal was built on configuration version "
                        f"{base}, the current version is {cfg.version}; build and sign it again")
            elif "member" not in m.roles:
                raise validation.Denied(
                    f"transaction {i}: {tx.member_id!r} has roles {list(m.roles)}; {tx.operation.name} needs role member")

    @_guard
    def GetConfiguration(self, request, context):  # noqa: N802
        """The governed configuration, current (version 0) or a past version."""
        head = self._store.head().height
        if request.version == 0:
            cfg = self._store.configuration()
        else:
            cfg = self._store.configuration_at(request.version)
        if cfg is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no configuration version {request.version}")
        return pb.GetConfigurationResponse(
            version=cfg.version, configuration_json=encode_configuration(cfg).decode(), height=head)

    def _require_own(self, request: pb.SubmitRequest, context) -> None:
        """Every transaction must be signed by the caller (its TLS identity): a member
        submits only its own transactions. Refused before signatures are checked."""
        caller = self._authz.caller(context)
        if caller.id is None:
            return  # plaintext development mode: signatures only (api.authz)
        for i, stx in enumerate(request.transactions):
            if stx.member_id != caller.id:
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"transaction {i} is signed as member {stx.member_id!r} but this connection is {caller.id!r}: "
                    "submit only transactions you signed; nothing was proposed",
                )

    @_guard
    def Submit(self, request: pb.SubmitRequest, context):  # noqa: N802
        # Cheapest rejection first: sizes, then who signed and the signature over the
        # raw body bytes, and only then parsing (validation's module docstring).
        validation.check_submit_size(request)
        self._require_leader(context)
        for i, stx in enumerate(request.transactions):
            validation.precheck_envelope(stx, i)
        self._require_own(request, context)
        self._verify_signatures(request)
        txs = validation.decode_submit(request, chain_id=self._chain_id, now_ns=self._clock_ns())
        # Retries of transactions already in the chain are answered from the index.
        known = [self._store.get_tx_result(tx.tx_hash) for tx in txs]
        results: list[TxResult | None] = [
            None if k is None else TxResult(tx.tx_hash, k[0], k[1], k[2] if len(k) > 2 else 0) for tx, k in zip(txs, known)
        ]
        self._authorise_signers([tx for tx, r in zip(txs, results) if r is None])
        fresh = [tx for tx, r in zip(txs, results) if r is None]
        if fresh and self._rate_limiter is not None:
            self._charge(fresh, context)  # retries answered from the index cost nothing
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
        validation.check_lookup(request.ids)
        self._consistent_read(request.consistency, context)
        caller = self._authz.caller(context)
        height = self._store.head().height
        found = [self._store.get_account(from_u128(i)) for i in request.ids]
        # Another member's account is left out exactly as a missing id is (api.authz).
        return pb.LookupAccountsResponse(
            accounts=[account_to_pb(a) for a in found if a is not None and caller.sees_account(a)], height=height)

    @_guard
    def LookupTransfers(self, request, context):  # noqa: N802
        validation.check_lookup(request.ids)
        self._consistent_read(request.consistency, context)
        caller = self._authz.caller(context)
        height = self._store.head().height
        found = [self._store.get_transfer(from_u128(i)) for i in request.ids]
        get_account = self._store.get_account
        return pb.LookupTransfersResponse(
            transfers=[transfer_to_pb(t) for t in found if t is not None and caller.sees_transfer(t, get_account)],
            height=height)

    @_guard
    @_scan
    def GetAccountTransfers(self, request, context):  # noqa: N802
        f = validation.account_filter(request.filter)
        height = self._store.head().height
        if self._hidden_account(f.account_id, context):
            return pb.GetAccountTransfersResponse(height=height)  # as for a missing account
        transfers, cursor = self._store.get_account_transfers(f)
        return pb.GetAccountTransfersResponse(
            transfers=[transfer_to_pb(t) for t in transfers], height=height, next_timestamp=cursor
        )

    @_guard
    @_scan
    def GetAccountBalances(self, request, context):  # noqa: N802
        f = validation.account_filter(request.filter)
        height = self._store.head().height
        if self._hidden_account(f.account_id, context):
            return pb.GetAccountBalancesResponse(height=height)  # as for a missing account
        rows, cursor = self._store.get_account_balances(f)
        return pb.GetAccountBalancesResponse(
            balances=[balance_to_pb(ts, a) for ts, a in rows],
            height=height,
            next_timestamp=cursor,
        )

    @_guard
    @_scan
    def QueryAccounts(self, request, context):  # noqa: N802
        height = self._store.head().height
        owner = self._authz.caller(context).owner_filter
        accounts, cursor = self._store.query_accounts(validation.query_filter(request.filter), owner=owner)
        return pb.QueryAccountsResponse(accounts=[account_to_pb(a) for a in accounts], height=height, next_timestamp=cursor)

    @_guard
    @_scan
    def QueryTransfers(self, request, context):  # noqa: N802
        height = self._store.head().height
        owner = self._authz.caller(context).owner_filter
        transfers, cursor = self._store.query_transfers(validation.query_filter(request.filter), owner=owner)
        return pb.QueryTransfersResponse(
            transfers=[transfer_to_pb(t) for t in transfers], height=height, next_timestamp=cursor
        )

    def _hidden_account(self, account_id: int, context) -> bool:
        """True when the caller may not read ``account_id``'s history: another member's
        account, answered exactly as a missing one (api.authz)."""
        caller = self._authz.caller(context)
        if caller.reads_all:
            return False
        a = self._store.get_account(account_id)
        return a is None or a.owner != caller.id

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
    """``ledger.v1.Admin``: this validator's typed Raft status and chain head. Open to
    the ``operator`` role only (api.authz's interceptor)."""

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
