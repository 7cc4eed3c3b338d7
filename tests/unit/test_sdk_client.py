"""LedgerClient's own logic, through InProcessTransport: no sockets, no sleeps, a fake clock.

The validators here are small servicer-like objects answering as node/api/servicers.py
does (its module docstring is the status contract: FAILED_PRECONDITION with
``leader-address`` on a follower, UNAVAILABLE with ``ledger-refused: no-leader``
before a leader is elected, INVALID_ARGUMENT for a bad request). The same
status-to-exception mapping runs as for a real gRPC call; the gRPC path itself
is covered by tests/integration/test_errors.py and test_result_codes.py.
"""
from __future__ import annotations

import random

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from raft_ledger_client import (
    Account,
    ClientTLS,
    CreateAccountResult as AR,
    GrpcTransport,
    CreateTransferResult as TR,
    InProcessTransport,
    InvalidRequest,
    LedgerClient,
    LedgerError,
    NotFound,
    NotLeader,
    NotSubmitted,
    PermissionDenied,
    RetryPolicy,
    Timeout,
    Transfer,
    TransportError,
    RateLimited,
    Unavailable,
)
from raft_ledger_client._transport import status_to_exception


def test_grpc_concurrency_refusal_is_not_submitted():
    """grpcio's server answers past maximum_concurrent_rpcs with this text, before our code."""
    e = status_to_exception(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!", (), f"{A} GetHead")
    assert type(e) is NotSubmitted
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb

A, B, C = "127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"
#: Transfers above this amount fail with exceeds_credits at the fake leader.
BALANCE = 1_000
POLICY = RetryPolicy(deadline_s=1.0, attempt_timeout_s=0.3, backoff_initial_s=0.05, backoff_max_s=0.4)


class FakeClock:
    """Monotonic seconds that move only when the client sleeps or a validator takes time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        assert s >= 0
        self.sleeps.append(s)
        self.now += s


class InOrder(random.Random):
    """Tries validators in the configured order (the client shuffles them to spread load)."""

    def shuffle(self, x) -> None:
        pass


class Validator:
    """One validator, answering as node/api/servicers.py does for its ``role``.

    ``leader``: commits Submit (transfers above BALANCE fail with exceeds_credits,
    the rest ok; only failures on the wire) and serves reads. ``follower``:
    FAILED_PRECONDITION naming ``leader_address``. ``electing``: UNAVAILABLE,
    ``ledger-refused: no-leader``. ``slow``: DEADLINE_EXCEEDED after the whole
    attempt timeout. ``dropping``: UNAVAILABLE without the refusal mark (a proposal
    lost in a leader change: outcome unknown). ``invalid``: INVALID_ARGUMENT.
    """

    def __init__(self, clock: FakeClock, role: str = "leader", leader_address: str | None = None) -> None:
        self.clock = clock
        self.role = role
        self.leader_address = leader_address
        self.timeouts: list[float] = []

    def _gate(self, context, write: bool) -> None:
        self.timeouts.append(context.time_remaining())
        if self.role == "invalid":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "transaction 0: bad signature")
        if self.role == "slow":
            self.clock.now += context.time_remaining()
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if not write:
            return
        if self.role == "electing":
            context.set_trailing_metadata((("ledger-refused", "no-leader"),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "no leader elected yet; nothing was proposed, retry shortly")
        if self.role == "follower":
            context.set_trailing_metadata((("leader-address", self.leader_address), ("ledger-refused", "not-leader")))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"not the leader; send writes to {self.leader_address}")
        if self.role == "dropping":
            context.abort(grpc.StatusCode.UNAVAILABLE, "proposal not committed (LEADER_CHANGED); outcome unknown")

    def Submit(self, request, context):  # noqa: N802
        self._gate(context, write=True)
        out = []
        for stx in request.transactions:
            body = pb.Transaction.FromString(stx.body)
            failed = []
            if body.WhichOneof("operation") == "create_transfers":
                failed = [pb.EventResult(index=i, transfer=TR.exceeds_credits)
                          for i, t in enumerate(body.create_transfers.transfers) if t.amount.lo > BALANCE]
            out.append(pb.TransactionResult(tx_hash=b"h" * 32, height=7, results=failed))
        return pb.SubmitResponse(results=out)

    def LookupAccounts(self, request, context):  # noqa: N802
        self._gate(context, write=request.consistency == pb.READ_CONSISTENCY_LINEARIZABLE)
        return pb.LookupAccountsResponse(accounts=[pb.Account(id=i, ledger=840, code=1) for i in request.ids], height=7)

    def GetBlock(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.NOT_FOUND, f"no block at height {request.height} (head is 7)")


def make_client(addresses, servicers, clock, policy=POLICY):
    transport = InProcessTransport(servicers)
    client = LedgerClient(addresses, member_id="bank-a", key_id="k1", private_key=Ed25519PrivateKey.generate(),
                          chain_id="local-test", retry=policy, transport=transport, clock=clock, sleep=clock.sleep, rng=InOrder())
    return client, transport


def transfer(i: int, amount: int) -> Transfer:
    return Transfer(id=i, debit_account_id=1, credit_account_id=2, amount=amount, ledger=840, code=1)


# -- leader redirects --------------------------------------------------------------


def test_follower_redirect_is_followed_at_once_and_remembered():
    clock = FakeClock()
    servicers = {A: Validator(clock, "follower", B), B: Validator(clock)}
    client, transport = make_client([A, B], servicers, clock)
    [r] = client.create_transfers([transfer(1, 5)])
    assert r.result is TR.ok
    assert transport.calls == [(A, "Submit"), (B, "Submit")]
    assert clock.sleeps == []  # a redirect is not a failure: no backoff
    client.create_transfers([transfer(2, 5)])
    assert transport.calls[-1] == (B, "Submit")  # the leader is remembered
    assert len(transport.calls) == 3


def test_redirect_to_an_address_not_configured_is_ignored():
    # Issue 11: the SDK follows leader-address only to validators it was given (genesis).
    # A validator naming any other host (compromised, misconfigured) is treated as one
    # that knows no leader: the client tries its own validators, never the stranger.
    clock = FakeClock()
    servicers = {A: Validator(clock, "follower", C), B: Validator(clock), C: Validator(clock)}
    client, transport = make_client([A, B], servicers, clock)
    [r] = client.create_transfers([transfer(1, 5)])
    assert r.ok
    # It asks A (a configured validator) for the governed set (validators added since
    # genesis are followed); C is not in it, so C is never called.
    assert [c for c in transport.calls if c[1] == "Submit"] == [(A, "Submit"), (B, "Submit")]
    assert all(addr != C for addr, _ in transport.calls)
    # And C never becomes a candidate for reads either.
    del servicers[B]
    [a] = client.lookup_accounts([1])
    assert a.id == 1
    assert all(addr != C for addr, _ in transport.calls)


def test_a_redirect_to_a_genesis_validator_outside_addresses_is_followed():
    # validators= (from_genesis passes every genesis validator) widens whom a redirect may name.
    clock = FakeClock()
    servicers = {A: Validator(clock, "follower", C), C: Validator(clock)}
    transport = InProcessTransport(servicers)
    client = LedgerClient([A], member_id="bank-a", key_id="k1", private_key=Ed25519PrivateKey.generate(),
                          chain_id="local-test", retry=POLICY, transport=transport, clock=clock, sleep=clock.sleep,
                          rng=InOrder(), validators=[A, B, C])
    [r] = client.create_transfers([transfer(1, 5)])
    assert r.ok and transport.calls == [(A, "Submit"), (C, "Submit")]


def test_only_unlisted_leader_hints_end_in_not_submitted_without_contacting_them():
    clock = FakeClock()
    servicers = {A: Validator(clock, "follower", C), B: Validator(clock, "follower", C), C: Validator(clock)}
    client, transport = make_client([A, B], servicers, clock)
    with pytest.raises(NotSubmitted):
        client.create_transfers([transfer(1, 5)])
    assert {addr for addr, _ in transport.calls} == {A, B}


def test_a_grpc_transport_needs_tls_or_an_explicit_insecure_switch():
    with pytest.raises(ValueError, match="insecure=True"):
        LedgerClient([A], member_id="bank-a", key_id="k1", private_key=Ed25519PrivateKey.generate(), chain_id="c")
    with pytest.raises(ValueError):
        GrpcTransport(tls=ClientTLS(ca_pem=b"x", cert_pem=b"y", key_pem=b"z"), insecure=True)
    assert "redacted" in repr(ClientTLS(ca_pem=b"x", cert_pem=b"y", key_pem=b"secret"))
    assert "secret" not in repr(ClientTLS(ca_pem=b"x", cert_pem=b"y", key_pem=b"secret"))


def test_permission_denied_maps_to_its_own_exception():
    err = status_to_exception(grpc.StatusCode.PERMISSION_DENIED, "no", (), "a Submit")
    assert isinstance(err, PermissionDenied)
    assert isinstance(status_to_exception(grpc.StatusCode.UNAUTHENTICATED, "no", (), "a"), PermissionDenied)


def test_permission_denied_is_not_retried():
    clock = FakeClock()

    class Refusing(Validator):
        def Submit(self, request, context):  # noqa: N802
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")

    servicers = {A: Refusing(clock), B: Validator(clock)}
    client, transport = make_client([A, B], servicers, clock)
    with pytest.raises(PermissionDenied):
        client.create_transfers([transfer(1, 5)])
    assert transport.calls == [(A, "Submit")] and clock.sleeps == []


def test_redirects_between_stale_followers_back_off():
    # During an election two followers may name each other: follow once, then back off.
    clock = FakeClock()
    servicers = {A: Validator(clock, "follower", B), B: Validator(clock, "follower", A)}
    client, transport = make_client([A, B], servicers, clock)
    with pytest.raises(NotSubmitted) as e:
        client.create_transfers([transfer(1, 5)])
    assert not isinstance(e.value, TransportError)
    assert clock.sleeps, "redirect ping-pong without backoff"
    assert len(transport.calls) <= 2 * len(clock.sleeps) + 2


# -- backoff and the overall deadline -------------------------------------------------


def test_backoff_doubles_up_to_its_max_and_the_deadline_bounds_the_call():
    clock = FakeClock()
    servicers = {A: Validator(clock, "electing"), B: Validator(clock, "electing")}
    policy = RetryPolicy(deadline_s=2.0, attempt_timeout_s=0.3, backoff_initial_s=0.05, backoff_max_s=0.4)
    client, transport = make_client([A, B], servicers, clock, policy)
    start = clock.now
    with pytest.raises(NotSubmitted):
        client.create_transfers([transfer(1, 5)])
    # 0.05 + 0.1 + 0.2 + 4 * 0.4 = 1.95; the last sleep is cut at the deadline.
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.4, 0.4, 0.4, 0.05])
    assert clock.now - start == pytest.approx(policy.deadline_s)
    assert len(transport.calls) == len(clock.sleeps) + 1  # a first attempt, then one after each sleep
    assert client.retries == len(transport.calls)


def test_attempt_timeout_shrinks_to_what_is_left_of_the_deadline():
    clock = FakeClock()
    servicers = {A: Validator(clock, "slow")}
    client, _ = make_client([A], servicers, clock)
    with pytest.raises(Timeout):
        client.create_transfers([transfer(1, 5)])
    timeouts = servicers[A].timeouts
    assert timeouts[0] == POLICY.attempt_timeout_s
    assert all(t <= POLICY.attempt_timeout_s for t in timeouts)
    assert clock.now - 100.0 <= POLICY.deadline_s + POLICY.attempt_timeout_s


# -- unknown outcome vs definite refusal ---------------------------------------------


@pytest.mark.parametrize(
    "roles,expected",
    [
        (("electing", "electing"), NotSubmitted),
        (("follower-of-nobody", "electing"), NotSubmitted),
        (("slow", "slow"), Timeout),
        (("slow", "electing"), Timeout),
        (("dropping", "electing"), Unavailable),
        (("down", "electing"), Unavailable),
        (("down", "down"), Unavailable),
    ],
)
def test_only_an_all_refused_call_is_not_submitted(roles, expected):
    clock = FakeClock()
    servicers = {}
    for addr, role in zip((A, B), roles):
        if role == "follower-of-nobody":
            servicers[addr] = Validator(clock, "follower", None)
        elif role != "down":
            servicers[addr] = Validator(clock, role)
    client, _ = make_client([A, B], servicers, clock)
    with pytest.raises(LedgerError) as e:
        client.create_transfers([transfer(1, 5)])
    assert type(e.value) is expected, e.value
    assert isinstance(e.value, TransportError) == (expected is not NotSubmitted)


def test_an_election_that_ends_within_the_deadline_commits():
    clock = FakeClock()
    servicers = {A: Validator(clock, "electing")}
    client, _ = make_client([A], servicers, clock)

    def elect_after_two_sleeps(s):
        FakeClock.sleep(clock, s)
        if len(clock.sleeps) == 2:
            servicers[A].role = "leader"

    client._sleep = elect_after_two_sleeps
    [r] = client.create_accounts([Account(id=1, ledger=840, code=1)])
    assert r.result is AR.ok


# -- requests refused as a whole are not retried -------------------------------------


def test_invalid_request_is_raised_at_once_without_retry():
    clock = FakeClock()
    servicers = {A: Validator(clock, "invalid"), B: Validator(clock)}
    client, transport = make_client([A, B], servicers, clock)
    with pytest.raises(InvalidRequest, match="bad signature"):
        client.create_transfers([transfer(1, 5)])
    assert transport.calls == [(A, "Submit")]
    with pytest.raises(InvalidRequest):
        client.lookup_accounts([1])
    assert transport.calls[-1] == (A, "LookupAccounts")
    assert clock.sleeps == [] and client.retries == 0


def test_not_found_is_raised_at_once():
    clock = FakeClock()
    client, transport = make_client([A, B], {A: Validator(clock), B: Validator(clock)}, clock)
    with pytest.raises(NotFound, match="no block at height 99"):
        client.block(99)
    assert transport.calls == [(A, "GetBlock")]


def test_an_unexpected_status_is_a_ledger_error_not_retried():
    clock = FakeClock()

    class Broken:
        def Submit(self, request, context):  # noqa: N802
            context.abort(grpc.StatusCode.INTERNAL, "internal error in Submit; see the validator log")

    client, transport = make_client([A, B], {A: Broken(), B: Validator(clock)}, clock)
    with pytest.raises(LedgerError, match="INTERNAL") as e:
        client.create_transfers([transfer(1, 5)])
    assert type(e.value) is LedgerError
    assert transport.calls == [(A, "Submit")]


# -- reads -----------------------------------------------------------------------------


def test_local_read_falls_over_to_another_validator():
    clock = FakeClock()
    servicers = {B: Validator(clock, "slow"), C: Validator(clock, "follower", None)}
    client, transport = make_client([A, B, C], servicers, clock)  # A is down, B too slow
    [a] = client.lookup_accounts([42])
    assert a.id == 42
    assert transport.calls == [(A, "LookupAccounts"), (B, "LookupAccounts"), (C, "LookupAccounts")]
    assert clock.sleeps == []


def test_read_from_one_address_retries_it_until_the_deadline():
    clock = FakeClock()
    client, transport = make_client([A, B], {B: Validator(clock)}, clock)
    with pytest.raises(Unavailable, match="no validator answered"):
        client.lookup_accounts([1], address=A)
    assert {addr for addr, _ in transport.calls} == {A}
    assert sum(clock.sleeps) == pytest.approx(POLICY.deadline_s)


def test_linearizable_read_follows_the_leader():
    clock = FakeClock()
    servicers = {A: Validator(clock, "follower", B), B: Validator(clock)}
    client, transport = make_client([A, B], servicers, clock)
    [a] = client.lookup_accounts([3], linearizable=True)
    assert a.id == 3
    assert transport.calls == [(A, "LookupAccounts"), (B, "LookupAccounts")]


# -- per-event results from a failures-only reply --------------------------------------


def test_complete_results_are_rebuilt_from_failures_only():
    clock = FakeClock()
    client, _ = make_client([A], {A: Validator(clock)}, clock)
    txs = [
        client.sign_transfers([transfer(1, 5), transfer(2, BALANCE + 1), transfer(3, 7), transfer(4, BALANCE + 2)]),
        client.sign_accounts([Account(id=i, ledger=840, code=1) for i in (10, 11)]),
        client.sign_transfers([transfer(5, 1)]),
    ]
    first, second, third = client.submit(txs)
    assert [(r.index, r.result) for r in first.results] == [
        (0, TR.ok), (1, TR.exceeds_credits), (2, TR.ok), (3, TR.exceeds_credits)]
    assert not first.ok
    # The older spellings stay: code (int), name (TigerBeetle's), ok.
    assert [(r.code, r.name, r.ok) for r in first.results[:2]] == [(0, "ok", True), (63, "exceeds_credits", False)]
    assert [(r.index, r.result) for r in second.results] == [(0, AR.ok), (1, AR.ok)]
    assert all(type(r.result) is AR for r in second.results)
    assert second.ok and third.ok and len(third.results) == 1
    assert (first.height, first.tx_hash) == (7, b"h" * 32)


def test_a_reply_that_does_not_fit_the_request_is_an_error():
    clock = FakeClock()

    class Confused:
        def __init__(self, reply):
            self.reply = reply

        def Submit(self, request, context):  # noqa: N802
            return self.reply

    def submit_against(reply):
        client, _ = make_client([A], {A: Confused(reply)}, clock)
        return client.submit([client.sign_transfers([transfer(1, 5), transfer(2, 5)])])

    out_of_range = pb.TransactionResult(results=[pb.EventResult(index=2, transfer=TR.exceeds_credits)])
    wrong_kind = pb.TransactionResult(results=[pb.EventResult(index=0, account=AR.exists)])
    for reply in (pb.SubmitResponse(results=[out_of_range]), pb.SubmitResponse(results=[wrong_kind]),
                  pb.SubmitResponse(results=[])):
        with pytest.raises(LedgerError):
            submit_against(reply)


# -- the status mapping both transports share -------------------------------------------


@pytest.mark.parametrize(
    "code,trailing,expected",
    [
        (grpc.StatusCode.INVALID_ARGUMENT, (), InvalidRequest),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, (), InvalidRequest),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, (("ledger-refused", "overloaded"),), NotSubmitted),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, (("ledger-refused", "rate-limited"), ("retry-after-ms", "250")), RateLimited),
        (grpc.StatusCode.NOT_FOUND, (), NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, (("leader-address", B),), NotLeader),
        (grpc.StatusCode.UNAVAILABLE, (("ledger-refused", "no-leader"),), NotLeader),
        (grpc.StatusCode.UNAVAILABLE, (("ledger-refused", "overloaded"),), NotSubmitted),
        (grpc.StatusCode.UNAVAILABLE, (), Unavailable),
        (grpc.StatusCode.CANCELLED, (), Unavailable),
        (grpc.StatusCode.UNKNOWN, (), Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, (), Timeout),
        (grpc.StatusCode.INTERNAL, (), LedgerError),
        (grpc.StatusCode.UNAUTHENTICATED, (), PermissionDenied),
        (grpc.StatusCode.PERMISSION_DENIED, (), PermissionDenied),
    ],
)
def test_status_to_exception(code, trailing, expected):
    e = status_to_exception(code, "details", trailing, f"{A} Submit")
    assert type(e) is expected
    if expected is RateLimited:
        assert e.retry_after_s == 0.25
    if expected is NotLeader:
        assert e.leader_address == dict(trailing).get("leader-address")


# -- validators added after genesis (issue 13) ------------------------------------------

D, E = "127.0.0.1:7104", "127.0.0.1:7105"


class GovernedValidator(Validator):
    """A Validator that also serves Ledger.GetConfiguration, listing ``governed`` (gRPC
    addresses of the governed validator set, e.g. genesis plus one added later)."""

    def __init__(self, clock: FakeClock, role: str = "leader", leader_address: str | None = None,
                 governed: tuple[str, ...] = ()) -> None:
        super().__init__(clock, role, leader_address)
        self.governed = governed

    def GetConfiguration(self, request, context):  # noqa: N802
        import json

        validators = [{"id": f"v{i + 1}", "grpc_address": a, "raft_address": f"{a}0", "voting": True}
                      for i, a in enumerate(self.governed)]
        return pb.GetConfigurationResponse(configuration_json=json.dumps({"version": 2, "validators": validators}),
                                           height=7)


def test_a_hint_naming_a_validator_added_by_governance_is_followed_after_reading_the_configuration():
    # D joined after genesis (add_validator, promoted) and now leads. The client knows
    # only A and B; it asks A, a validator it trusts, for the governed set, finds D there,
    # and follows the hint. E, which no configuration lists, is never called.
    clock = FakeClock()
    governed = (A, B, C, D)
    servicers = {A: GovernedValidator(clock, "follower", D, governed), B: GovernedValidator(clock, "follower", E, governed),
                 D: GovernedValidator(clock, governed=governed), E: GovernedValidator(clock, governed=governed)}
    client, transport = make_client([A, B], servicers, clock)
    [r] = client.create_transfers([transfer(1, 5)])
    assert r.ok
    assert transport.calls == [(A, "Submit"), (A, "GetConfiguration"), (D, "Submit")]
    assert clock.sleeps == []
    # D is remembered as the leader; the configuration is not read again.
    client.create_transfers([transfer(2, 5)])
    assert transport.calls[-1] == (D, "Submit") and len(transport.calls) == 4

    # D stops leading and names E: E is in no governed configuration (the client reads
    # it again, from D), so the hint is ignored, the client tries its other validators,
    # and E is never contacted.
    servicers[D].role, servicers[D].leader_address = "follower", E
    servicers[A].role, servicers[A].leader_address = "leader", None
    [r] = client.create_transfers([transfer(3, 5)])
    assert r.ok and transport.calls[-1] == (A, "Submit")
    assert transport.calls[4:6] == [(D, "Submit"), (D, "GetConfiguration")]
    assert all(addr != E for addr, _ in transport.calls)
