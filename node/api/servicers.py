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
from raft_ledger_node.api.cdc import EventStreams
from raft_ledger_node.api.audit_stream import AuditStreamer
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
from raft_ledger_node.ledger import limits
from raft_ledger_node.ledger import governance as gov
from raft_ledger_node.ledger.governance import encode_configuration
from raft_ledger_node.metrics import UNREGISTERED, LedgerMetrics
from raft_ledger_node.raft import membership

#: Trailing metadata key of a refusal before anything was proposed (the SDK reads it).
REFUSED_KEY = "ledger-refused"
from raft_ledger_node.ledger.merkle_log import MerkleLog
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


class LedgerServicer(pb_grpc.LedgerServiceServicer):
    """``ledger.v1.LedgerService``: Submit on the leader (validation, signatures, dedup by
    transaction hash, group commit), reads from the local store or, linearizable,
    from the leader after a read barrier. Status codes: see :mod:`raft_ledger_node.api`."""

    def __init__(self, *, store, replica, batcher: Batcher, verifier: Verifier, leader_grpc_address,
                 submit_timeout_s: float, chain_id: str, authz: Authorizer,
                 rate_limiter: MemberRateLimiter | None = None,
                 clock_ns=time.time_ns, scans_inflight_max: int = 1, cosigner=None,
                 metrics: LedgerMetrics = UNREGISTERED):
        self._store = store
        #: Results by code, commit latency, signature failures, rate-limit refusals (node/metrics.py).
        self._metrics = metrics
        #: node.cosigner.Cosigner: checkpoints and certificates (None: proofs unavailable).
        self._cosigner = cosigner
        self._watch_slots = threading.BoundedSemaphore(limits.watch_streams_max)
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
        #: Held while a validator membership change is being proposed and committed.
        self._membership_inflight = threading.Lock()
        #: WatchEvents (change-data capture, api/cdc.py): its own stream limits.
        self._event_streams = EventStreams(store, chain_id=chain_id, caller=authz.caller)
        #: ExportAudit (issue 14): the audit stream, its own concurrency bound.
        self._audit_streamer = AuditStreamer(store, cosigner)

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
                self._metrics.rate_limited(member)
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
        signature over its raw body (raises validation.BadRequest). A refused envelope
        costs no Raft entry (no read barrier here, unlike authz.Authorizer's catch-up for
        an identity): a refused input changes nothing (tests/fuzz)."""
        envelopes = [(s.member_id, s.key_id, s.signature, s.body) for s in request.transactions]
        checks = self._verifier.verify_many(envelopes)
        for ok in checks:
            if ok is not True:
                self._metrics.signature_failure("key_not_permitted" if isinstance(ok, KeyNotPermitted) else
                                                "unknown_key" if isinstance(ok, UnknownKey) else "bad_signature")
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
        """The governed configuration, current (version 0, LOCAL or LINEARIZABLE) or a past version."""
        if request.version == 0:
            self._consistent_read(request.consistency, context)
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
        received = time.monotonic()
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
        membership = self._membership_change(fresh, context)
        if membership and not self._membership_inflight.acquire(blocking=False):
            context.set_trailing_metadata(((REFUSED_KEY, "membership"),))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "validator_change_pending: another validator membership change is being committed; "
                          "nothing was proposed, wait for it and build the proposal again")
        try:
            if membership:
                self._gate_membership(membership, context)
            if fresh:
                return self._propose(fresh, txs, results, context, received)
        finally:
            if membership:
                self._membership_inflight.release()
        return pb.SubmitResponse(results=[result_to_pb(r, tx.operation) for r, tx in zip(results, txs)])

    def _membership_change(self, txs, context):
        """The one Raft membership change (add/promote/remove_validator) among ``txs``, or None.
        More than one in a Submit is refused (one server at a time)."""
        found = [c for tx in txs if tx.operation == Operation.governance and tx.governance is not None
                 for c in tx.governance.changes if isinstance(c, gov.MEMBERSHIP_CHANGES)]
        if len(found) > 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "validator_change_pending: one validator membership change per Submit (Raft changes one "
                          "server at a time); nothing was proposed")
        return found[0] if found else None

    def _gate_membership(self, change, context) -> None:
        """The leader's checks before proposing a membership change (apply decides the
        governance rules again, deterministically). First a read barrier, so every change
        committed before, by any leader, is applied here and in the Raft configuration
        (etcd's raft likewise lets one unapplied change exist). Then: a learner is promoted
        only when its read-only link is within ``learner_promote_lag_max`` entries of the
        commit index, and a promotion or removal must leave the reachable voters a majority
        of the new configuration (raft/membership.py). Aborts FAILED_PRECONDITION."""
        if not self._replica.read_barrier(self._submit_timeout_s):
            context.abort(grpc.StatusCode.UNAVAILABLE, "this validator lost leadership; nothing was proposed, retry")
        cfg = self._store.configuration()
        if cfg is None or not hasattr(self._replica, "reachable_voters"):
            return
        voters = {v.raft_address for v in cfg.voters}
        reachable = self._replica.reachable_voters(limits.membership_reachable_s)
        rec = cfg.validator(getattr(change, "id", None) or change.validator.id)
        if isinstance(change, gov.PromoteValidator) and rec is not None and not rec.voting:
            view = self._replica.membership_view()
            link = view.get(rec.id)
            if link is None and not any(k == rec.id for k in view):
                # Plaintext development clusters cannot tell learners apart: the most caught-up one.
                links = [v for k, v in view.items() if k.startswith("readonly-")]
                link = max(links, key=lambda x: x[1]) if links else None
            if link is None or not link[0]:
                self._refuse_membership(context,
                              f"learner {rec.id!r} has no Raft link to this leader: start it (ledger-validator start) and "
                              "wait until it has caught up; nothing was proposed")
            lag = self._replica.status().commit_index - link[1]
            if lag > limits.learner_promote_lag_max:
                self._refuse_membership(context,
                              f"learner {rec.id!r} is {lag} Raft entries behind the commit index (at most "
                              f"{limits.learner_promote_lag_max} to be promoted); nothing was proposed, wait and retry")
            ok, text = membership.majority_after(voters | {rec.raft_address}, reachable)
        elif isinstance(change, gov.RemoveValidator) and rec is not None and rec.voting:
            ok, text = membership.majority_after(voters - {rec.raft_address}, reachable - {rec.raft_address})
        else:
            return
        if not ok:
            self._refuse_membership(context,
                          f"the change would leave the validators without a majority: {text}; nothing was proposed. "
                          "Bring the unreachable validators back first")

    @staticmethod
    def _refuse_membership(context, message: str):
        """FAILED_PRECONDITION with ``ledger-refused: membership`` (the SDK's MembershipChangeRefused)."""
        context.set_trailing_metadata(((REFUSED_KEY, "membership"),))
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, message)

    def _propose(self, fresh, txs, results, context, received: float | None = None) -> pb.SubmitResponse:
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
            if received is not None:
                self._metrics.submitted(fresh, sub.results, time.monotonic() - received)
            _log_rejections(fresh, sub.results)
            it = iter(sub.results)
            results = [r if r is not None else next(it) for r in results]
        return pb.SubmitResponse(results=[result_to_pb(r, tx.operation) for r, tx in zip(results, txs)])

    @_guard
    def LookupAccounts(self, request, context):  # noqa: N802
        validation.check_lookup(request.ids)
        self._consistent_read(request.consistency, context)
        caller = self._authz.caller(context)
        # One consistent view: per-id reads could see half of a block (store.get_accounts).
        height, found = self._store.get_accounts([from_u128(i) for i in request.ids])
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


    # -- tamper evidence: checkpoints, certificates, proofs (issue 12) ----------------
    def _require_cosigner(self, context):
        if self._cosigner is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this validator serves no checkpoints")
        return self._cosigner

    def _certified(self, height: int, wait_ms: int, context) -> pb.Checkpoint:
        cert = self._require_cosigner(context).wait_certified(height, min(wait_ms, CERTIFY_WAIT_MS_MAX) / 1000)
        if cert is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"height {height} is not certified by a majority of validators (yet); head is "
                          f"{self._store.head().height}, newest certified {self._cosigner.latest_certified}")
        return pb.Checkpoint(height=cert.height, note=cert.note, signatures=cert.signatures, quorum=cert.quorum)

    @_guard
    def GetCheckpoint(self, request, context):  # noqa: N802
        """The certificate of ``height`` (0: the newest certified), waiting up to ``wait_ms``."""
        cos = self._require_cosigner(context)
        if request.height:
            return pb.GetCheckpointResponse(checkpoint=self._certified(request.height, request.wait_ms, context))
        # The newest: the head's certificate if it comes within a short wait (certification
        # follows the head by about a cosigner round), else the newest certified height.
        head = self._store.head().height
        wait_s = max(request.wait_ms, NEWEST_WAIT_MS if cos.latest_certified == 0 else HEAD_WAIT_MS) / 1000
        cert = cos.wait_certified(head, min(wait_s, CERTIFY_WAIT_MS_MAX / 1000)) if head else None
        if cert is None and cos.latest_certified:
            cert = cos.certificate(cos.latest_certified)
        if cert is None or not cert.certified:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no height is certified yet (head is {head})")
        return pb.GetCheckpointResponse(checkpoint=pb.Checkpoint(
            height=cert.height, note=cert.note, signatures=cert.signatures, quorum=cert.quorum))

    def WatchCheckpoints(self, request, context):  # noqa: N802
        """Every certified height from ``from_height`` on, in order, as it is certified.
        The stream ends when the client cancels it or the validator stops."""
        cos = self._cosigner
        if cos is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this validator serves no checkpoints")
        if not self._watch_slots.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{limits.watch_streams_max} WatchCheckpoints streams already open on this validator "
                          "(watch_streams_max); poll GetCheckpoint or retry later")
        try:
            height = request.from_height or max(1, cos.latest_certified)
            while context.is_active():
                cert = cos.wait_certified(height, 1.0)
                if cert is None:
                    continue
                yield pb.WatchCheckpointsResponse(checkpoint=pb.Checkpoint(
                    height=cert.height, note=cert.note, signatures=cert.signatures, quorum=cert.quorum))
                height += 1
        finally:
            self._watch_slots.release()

    @_guard
    def GetCosignatures(self, request, context):  # noqa: N802
        """This validator's own signatures of heights >= ``from_height`` (what peers collect)."""
        cos = self._require_cosigner(context)
        limit = min(request.limit or 512, 512)
        return pb.GetCosignaturesResponse(cosignatures=[
            pb.Cosignature(height=h, validator_id=cos.validator_id, signature=sig)
            for h, sig in cos.own_signatures(request.from_height, limit)])

    def _height_of_tree_size(self, tree_size: int) -> int:
        """The first height whose header has ``tree_size`` (0 if none): binary search."""
        lo, hi = 1, self._store.head().height
        while lo < hi:
            mid = (lo + hi) // 2
            if self._store.get_header(mid).tree_size < tree_size:
                lo = mid + 1
            else:
                hi = mid
        h = self._store.get_header(lo) if lo >= 1 else None
        return lo if h is not None and h.tree_size == tree_size else 0

    def _checkpoint_for_size(self, tree_size: int, context) -> tuple[int, pb.Checkpoint]:
        cos = self._require_cosigner(context)
        if tree_size == 0:
            height = cos.latest_certified
            if height == 0:
                context.abort(grpc.StatusCode.NOT_FOUND, "no height is certified yet")
        else:
            height = self._height_of_tree_size(tree_size)
            if height == 0:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no block has tree size {tree_size}")
        cp = self._certified(height, 2000, context)
        return self._store.get_header(height).tree_size, cp

    @_guard
    def GetInclusionProof(self, request, context):  # noqa: N802
        """The transaction's bytes, leaf index and RFC 6962 audit path in the tree of the
        certified checkpoint (``tree_size`` 0: the newest). A member sees only the
        transactions it signed; any other answers as a missing one."""
        tx_hash = bytes(request.tx_hash)
        found = self._store.get_tx_result(tx_hash) if len(tx_hash) == 32 else None
        envelope = self._store.get_transaction(tx_hash) if found is not None else None
        caller = self._authz.caller(context)
        if envelope is not None and not caller.reads_all:
            stx = pb.SignedTransaction()
            try:
                stx.ParseFromString(envelope)
            except Exception:
                stx.member_id = ""
            if stx.member_id != caller.id:
                envelope = None
        if envelope is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such transaction")
        height, codes, rejection = found
        header = self._store.get_header(height)
        position = self._store.get_block(height)[1].index(tx_hash)
        leaf = header.tree_size - header.tx_count + position
        size, cp = self._checkpoint_for_size(request.tree_size, context)
        if size <= leaf:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"the transaction is in block {height}, not yet covered by a certified checkpoint")
        proof = MerkleLog(_StoreNodes(self._store), self._store.head().header.tree_size).inclusion_proof(leaf, size)
        result = result_to_pb(TxResult(tx_hash, height, codes, rejection), _operation(stx_body_kind(envelope)))
        return pb.GetInclusionProofResponse(transaction=envelope, leaf_index=leaf, tree_size=size, proof=proof,
                                            height=height, checkpoint=cp, result=result)

    @_guard
    def GetConsistencyProof(self, request, context):  # noqa: N802
        """RFC 6962 consistency proof from tree size ``first`` to ``second``."""
        size = self._store.head().header.tree_size
        if not 0 < request.first <= request.second <= size:
            raise validation.BadRequest(f"need 0 < first <= second <= {size} (the tree size at the head)")
        proof = MerkleLog(_StoreNodes(self._store), size).consistency_proof(request.first, request.second)
        return pb.GetConsistencyProofResponse(proof=proof)

    @_guard
    def GetAccountProofs(self, request, context):  # noqa: N802
        """The caller's accounts among ``ids`` with account-tree proofs, against the
        certified checkpoint of the height they were read at (waits for it, ~ms)."""
        if len(request.ids) > limits.account_proofs_max:
            raise validation.BadRequest(f"at most {limits.account_proofs_max} ids per GetAccountProofs (account_proofs_max)")
        caller = self._authz.caller(context)
        head, count, rows = self._store.account_proofs([from_u128(i) for i in request.ids])
        rows = [r for r in rows if caller.sees_account(r[0])]
        cp = self._certified(head.height, 3000, context)
        return pb.GetAccountProofsResponse(
            accounts=[account_to_pb(a) for a, _, _, _ in rows],
            proofs=[pb.AccountProof(record=raw, position=p, siblings=proof) for _, raw, p, proof in rows],
            account_count=count, checkpoint=cp)

    def _validator_entries(self, records) -> list:
        return [pb.ValidatorEntry(id=v.id, grpc_address=v.grpc_address, raft_address=v.raft_address,
                                  tls_cert_sha256=v.tls_cert_sha256, public_key=v.public_key, voting=v.voting,
                                  data_dir_id=v.data_dir_id) for v in records]

    @_guard
    def GetValidatorSet(self, request, context):  # noqa: N802
        """The validator set that certifies block ``height``."""
        cos = self._require_cosigner(context)
        records = cos.validators_at(request.height)
        if not records:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no block at height {request.height}")
        return pb.GetValidatorSetResponse(validators=self._validator_entries(records))

    @_guard
    def GetHandoffs(self, request, context):  # noqa: N802
        """The blocks in (after_height, up_to_height] that changed the validator set: each
        one's certificate (by the set before it) and the set after it (CometBFT-style)."""
        cos = self._require_cosigner(context)
        up_to = request.up_to_height or self._store.head().height
        out = []
        for h in self._store.handoff_heights(request.after_height, up_to):
            cp = self._certified(h, 2000, context)
            nxt = cos.validator_set(self._store.get_header(h).next_validators_hash)
            out.append(pb.Handoff(checkpoint=cp, next=self._validator_entries(nxt)))
        return pb.GetHandoffsResponse(handoffs=out)

    def WatchEvents(self, request, context):  # noqa: N802
        """Committed blocks and the caller's events from ``from_height`` on (api/cdc.py)."""
        return self._event_streams.WatchEvents(request, context)

    def ExportAudit(self, request, context):  # noqa: N802
        """The audit export stream, auditors only (api.audit_stream)."""
        return self._audit_streamer.export(request, context)


def _log_rejections(txs, results) -> None:
    """One line per Submit whose committed transactions include rejected ones (TxRejection),
    naming the block height and the first rejected transaction's hash (JSON logs: fields
    ``height`` and ``tx_hash``)."""
    rejected = [(tx, r) for tx, r in zip(txs, results) if r.rejection]
    if not rejected:
        return
    tx, r = rejected[0]
    try:
        why = gov.TxRejection(r.rejection).name
    except ValueError:
        why = str(r.rejection)
    log.info("%d of %d transactions rejected at height %d (first %s: %s)", len(rejected), len(txs), r.height,
             r.tx_hash.hex(), why, extra={"height": r.height, "tx_hash": r.tx_hash.hex(), "rejection": why})


#: Longest a checkpoint read waits for its height to be certified (ms); how long
#: GetCheckpoint(0) waits when no height is certified yet.
CERTIFY_WAIT_MS_MAX = 10_000
NEWEST_WAIT_MS = 2_000
#: How long GetCheckpoint(0) waits for the head to be certified before it answers with
#: the newest certified height (ms).
HEAD_WAIT_MS = 400


class _StoreNodes:
    """The store's Merkle log nodes as a merkle_log.NodeStore (read-only)."""

    def __init__(self, store) -> None:
        self.get = store.merkle_node

    def put(self, level, index, value):  # pragma: no cover - never written through here
        raise TypeError("read-only")


def stx_body_kind(envelope: bytes) -> str:
    """The operation name of a committed envelope's body ("" if it does not parse)."""
    try:
        stx = pb.SignedTransaction()
        stx.ParseFromString(envelope)
        body = pb.Transaction()
        body.ParseFromString(stx.body)
    except Exception:
        return ""
    return body.WhichOneof("operation") or ""


def _operation(kind: str) -> Operation:
    return {"create_accounts": Operation.create_accounts, "governance": Operation.governance}.get(
        kind, Operation.create_transfers)


class AdminServicer(pb_grpc.AdminServiceServicer):
    """``ledger.v1.AdminService``: this validator's typed Raft status and chain head. Open to
    the ``operator`` role only (api.authz's interceptor)."""

    def __init__(self, *, validator_id: str, store, replica, leader_grpc_address, membership=None):
        self._validator_id = validator_id
        self._store = store
        self._replica = replica
        self._leader_grpc_address = leader_grpc_address
        #: () -> (role "voter"/"learner", data directory id); None: a voter with no id (tests).
        self._membership = membership

    @_guard
    def GetStatus(self, request, context):  # noqa: N802
        st = self._replica.status()
        role, data_dir_id = self._membership() if self._membership is not None else ("voter", b"")
        cfg = self._store.configuration()
        view = self._replica.membership_view() if hasattr(self._replica, "membership_view") else {}
        entries = []
        for v in (cfg.validators if cfg is not None else ()):
            link = view.get(v.raft_address) if v.voting else view.get(v.id)
            if v.id == self._validator_id:
                link = (True, st.last_applied if st.role == "leader" else 0)
            entries.append(pb.MembershipEntry(id=v.id, raft_address=v.raft_address, grpc_address=v.grpc_address,
                                              voting=v.voting, connected=bool(link and link[0]),
                                              match_index=link[1] if link else 0))
        raft_cfg = self._replica.raft_configuration() if hasattr(self._replica, "raft_configuration") else []
        return pb.GetStatusResponse(
            membership=role,
            data_dir_id=data_dir_id,
            validators=entries,
            raft_configuration=raft_cfg,
            configuration_version=cfg.version if cfg is not None else 0,
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
