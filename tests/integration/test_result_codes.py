"""Every producible result code, end to end: SDK -> gRPC -> Raft -> apply -> SDK.

The core tests (tests/unit/test_apply_accounts.py, test_apply_transfers.py,
test_two_phase.py, test_linked.py) prove each code at the level of
``apply_block``. Here the same scenarios run against a real 3-validator cluster
through :class:`client.LedgerClient`, so the codes also survive signing,
``decode_signed``, the Raft log, the failures-only wire format and the SDK's
rebuilding of one ``EventResult`` per event, and each is reported as the SDK
enum member of its TigerBeetle name (docs/reference/requests/create_accounts.md
and create_transfers.md, "Result"). Precedence and semantics are the core
tests' business; this module proves reachability, the name/code pair, and that
a rejected event writes nothing.

Also the read API through the SDK (TigerBeetle docs/reference/requests/
get_account_transfers.md, get_account_balances.md, query_accounts.md,
query_transfers.md): order, ``reversed``, ``limit`` with the ``next_timestamp``
cursor, and the filters.

The cluster is shared by the module (``cluster_module``), so every test takes
its own id range from the ``base`` fixture; ledgers and user_data of the query
tests are derived from it too.
"""
from __future__ import annotations

import importlib
import itertools
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Union

import grpc
import pytest

from raft_ledger_client import Account, AccountFilter, AccountFlags as AF, QueryFilter, Transfer, TransferFlags as TF
from raft_ledger_client import CreateAccountResult as AR, CreateTransferResult as TR
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
from conftest import NOT_ISSUED_LEDGER, QUERY_LEDGER

pytestmark = pytest.mark.integration

U128_MAX = (1 << 128) - 1
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
NS = 1_000_000_000
L = TF.LINKED
P, POST, VOID = TF.PENDING, TF.POST_PENDING_TRANSFER, TF.VOID_PENDING_TRANSFER
A_MEMBER, B_MEMBER = "bank-a", "bank-b"
#: Width of each test's id range.
ID_RANGE = 1_000_000
#: A pending transfer's timeout in the expiry scenario, and how long we wait past it.
EXPIRY_TIMEOUT_S = 1
EXPIRY_WAIT_S = 2.5

#: Codes the core produces (per the unit tests' lists) that no request through the
#: API can reach, with the reason. overflows_timeout needs
#: ``block timestamp + timeout * 1e9 > u64 max``; ``timeout`` is a u32 of seconds
#: and the block timestamp is the leader's wall clock, so it needs a clock past
#: (2^64 - 1 - (2^32 - 1) * 1e9) ns, i.e. the year 2418. The core test drives it
#: with a synthetic block time; test_maximum_timeout_does_not_overflow pins the
#: claim against the running cluster.
API_UNREACHABLE = {TR.overflows_timeout: "needs a block timestamp after the year 2418"}

_bases = itertools.count(ID_RANGE, ID_RANGE)


@pytest.fixture
def base() -> int:
    """A fresh id range [base, base + ID_RANGE) for one test."""
    return next(_bases)


@pytest.fixture(scope="module")
def clients(cluster_module):
    """Member id -> its LedgerClient, for the module."""
    cs = {m: cluster_module.client(m) for m in (A_MEMBER, B_MEMBER)}
    yield cs
    for c in cs.values():
        c.close()


# -- scenarios ---------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One SDK call: ``create_accounts`` or ``create_transfers`` (by event type) signed by ``member``.

    ``expect`` is the result name of every event; None means all ``ok``.
    """

    events: tuple
    member: str = A_MEMBER
    expect: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Wait:
    """Let wall-clock time pass: block timestamps are the leader's clock."""

    seconds: float


Step = Union[Call, Wait]


@dataclass(frozen=True)
class Scenario:
    """``steps(base)`` ends with the Call whose event ``index`` must get ``name``."""

    name: str
    steps: Callable[[int], list[Step]]
    index: int = 0
    enum: type = field(default=TR)


def accounts(*events: Account, member: str = A_MEMBER, expect=None) -> Call:
    return Call(tuple(events), member, expect)


def transfers(*events: Transfer, member: str = A_MEMBER, expect=None) -> Call:
    return Call(tuple(events), member, expect)


def acct(id: int, *, ledger: int = 1, code: int = 1, flags: int = 0, **kw) -> Account:
    return Account(id=id, ledger=ledger, code=code, flags=int(flags), **kw)


def tr(id: int, debit: int, credit: int, amount: int, *, ledger: int = 1, code: int = 1, flags: int = 0, **kw) -> Transfer:
    return Transfer(
        id=id, debit_account_id=debit, credit_account_id=credit, amount=amount, ledger=ledger, code=code, flags=int(flags), **kw
    )


def resolve(id: int, pending_id: int, flags: int, amount: int = 0, **kw) -> Transfer:
    """A post/void: accounts, ledger and code left zero are taken from the pending transfer."""
    return Transfer(id=id, pending_id=pending_id, flags=int(flags), amount=amount, **kw)


# Offsets inside a test's id range, as in test_apply_transfers.py's fixture.
A, B, C = 1, 2, 3  # plain, ledger 1, owned by bank-a
THEIRS = 4  # plain, owned by bank-b
EUR = 5  # ledger 2
DMNEC = 6  # debits_must_not_exceed_credits
CMNED = 7  # credits_must_not_exceed_debits
CLOSED = 8  # created closed
MISSING = 99  # never created
X, Y = 10, 11  # ids of the account scenarios
PID, ID = 50, 100  # a setup transfer (often pending), the transfer under test


def std_accounts(b: int) -> list[Step]:
    return [
        accounts(
            acct(b + A),
            acct(b + B),
            acct(b + C),
            acct(b + EUR, ledger=2),
            acct(b + DMNEC, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS),
            acct(b + CMNED, flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS),
            acct(b + CLOSED, flags=AF.CLOSED),
        ),
        accounts(acct(b + THEIRS), member=B_MEMBER),
    ]


def account_case(name: str, build: Callable[[int], list[Step]], index: int = 0) -> Scenario:
    return Scenario(name, build, index, AR)


def transfer_case(name: str, *build: Callable[[int], Step], index: int = 0) -> Scenario:
    """Standard accounts, then one Call per builder; the last one carries the code."""
    return Scenario(name, lambda b: std_accounts(b) + [f(b) for f in build], index, TR)


def _fresh(**kw) -> Callable[[int], list[Step]]:
    return lambda b: [accounts(acct(b + X, **kw))]


def _existing(first: dict, then: dict) -> Callable[[int], list[Step]]:
    return lambda b: [accounts(acct(b + X, **first)), accounts(acct(b + X, **then))]


# test_apply_accounts.py CASES, plus test_linked.py's account chains.
ACCOUNT_SCENARIOS = [
    account_case("ok", _fresh()),
    account_case("timestamp_must_be_zero", _fresh(timestamp=1)),
    account_case("reserved_flag", _fresh(flags=1 << 6)),
    account_case("id_must_not_be_zero", lambda b: [accounts(acct(0))]),
    account_case("id_must_not_be_int_max", lambda b: [accounts(acct(U128_MAX))]),
    account_case(
        "exists_with_different_owner",
        lambda b: [accounts(acct(b + X)), accounts(acct(b + X), member=B_MEMBER)],
    ),
    account_case("exists_with_different_flags", _existing({}, {"flags": AF.HISTORY})),
    account_case("exists_with_different_user_data_128", _existing({}, {"user_data_128": 1})),
    account_case("exists_with_different_user_data_64", _existing({}, {"user_data_64": 1})),
    account_case("exists_with_different_user_data_32", _existing({}, {"user_data_32": 1})),
    account_case("exists_with_different_ledger", _existing({}, {"ledger": 2})),
    account_case("exists_with_different_code", _existing({}, {"code": 2})),
    # A new transaction (other bytes) with the same account: resending the very
    # same signed bytes would be a retry, answered with the original `ok`
    # (test_identical_resubmission_is_a_retry_not_exists).
    account_case(
        "exists",
        lambda b: [accounts(acct(b + X, user_data_64=9), acct(b + Y)), accounts(acct(b + X, user_data_64=9))],
    ),
    account_case(
        "flags_are_mutually_exclusive",
        _fresh(flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CREDITS_MUST_NOT_EXCEED_DEBITS),
    ),
    # conftest: nobody issues NOT_ISSUED_LEDGER.
    account_case(
        "credits_must_not_exceed_debits_reserved_for_issuer",
        _fresh(ledger=NOT_ISSUED_LEDGER, flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS),
    ),
    account_case("debits_pending_must_be_zero", _fresh(debits_pending=1)),
    account_case("debits_posted_must_be_zero", _fresh(debits_posted=1)),
    account_case("credits_pending_must_be_zero", _fresh(credits_pending=1)),
    account_case("credits_posted_must_be_zero", _fresh(credits_posted=1)),
    account_case("ledger_must_not_be_zero", _fresh(ledger=0)),
    account_case("code_must_not_be_zero", _fresh(code=0)),
    account_case(
        "linked_event_failed",
        lambda b: [accounts(acct(b + X, flags=AF.LINKED), acct(b + Y, ledger=0))],
    ),
    account_case(
        "linked_event_chain_open",
        lambda b: [accounts(acct(b + X), acct(b + Y, flags=AF.LINKED))],
        index=1,
    ),
]


def T(*args, **kw) -> Callable[[int], Call]:
    """A transfers Call of one ``tr`` whose ids (and account ids) are offsets into the test's range."""
    return lambda b: transfers(_at(b, tr(*args, **kw)))


def R(*args, **kw) -> Callable[[int], Call]:
    """A transfers Call of one ``resolve`` (post/void) with offsets into the test's range."""
    return lambda b: transfers(_at(b, resolve(*args, **kw)))


def _at(b: int, t: Transfer) -> Transfer:
    """Shift every id-like field that is a small offset (not 0, not u128 max) into range ``b``."""

    def shift(v: int) -> int:
        return b + v if 0 < v < ID_RANGE else v

    return replace(
        t,
        id=shift(t.id),
        debit_account_id=shift(t.debit_account_id),
        credit_account_id=shift(t.credit_account_id),
        pending_id=shift(t.pending_id),
    )


BASE = (ID, A, B, 10)


def _expired(b: int) -> list[Step]:
    # two-phase-transfers.md "Expiry": the cluster times out a pending transfer
    # by its own (block) time. The intermediate transfer puts a block after the
    # deadline into the log; the post that follows finds the transfer expired.
    return std_accounts(b) + [
        T(PID, A, B, 10, flags=P, timeout=EXPIRY_TIMEOUT_S)(b),
        Wait(EXPIRY_WAIT_S),
        T(PID + 1, C, B, 1)(b),
        R(ID, PID, POST)(b),
    ]


# test_apply_transfers.py CASES (same events, shifted into each test's range),
# test_two_phase.py's expiry, and test_linked.py's transfer chains.
TRANSFER_SCENARIOS = [
    transfer_case("ok", T(*BASE)),
    transfer_case("timestamp_must_be_zero", T(*BASE, timestamp=1)),
    transfer_case("reserved_flag", T(*BASE, flags=1 << 9)),
    transfer_case("id_must_not_be_zero", T(0, A, B, 10)),
    transfer_case("id_must_not_be_int_max", T(U128_MAX, A, B, 10)),
    transfer_case(
        "exists_with_different_owner", T(*BASE), lambda b: transfers(_at(b, tr(*BASE)), member=B_MEMBER)
    ),
    transfer_case("exists_with_different_flags", T(*BASE), T(*BASE, flags=P)),
    transfer_case("exists_with_different_pending_id", T(*BASE), T(*BASE, pending_id=7)),
    transfer_case("exists_with_different_timeout", T(*BASE), T(*BASE, timeout=7)),
    transfer_case("exists_with_different_debit_account_id", T(*BASE), T(ID, C, B, 10)),
    transfer_case("exists_with_different_credit_account_id", T(*BASE), T(ID, A, C, 10)),
    transfer_case("exists_with_different_amount", T(*BASE), T(ID, A, B, 11)),
    transfer_case("exists_with_different_user_data_128", T(*BASE), T(*BASE, user_data_128=1)),
    transfer_case("exists_with_different_user_data_64", T(*BASE), T(*BASE, user_data_64=1)),
    transfer_case("exists_with_different_user_data_32", T(*BASE), T(*BASE, user_data_32=1)),
    transfer_case("exists_with_different_ledger", T(*BASE), T(*BASE, ledger=2)),
    transfer_case("exists_with_different_code", T(*BASE), T(*BASE, code=2)),
    transfer_case(
        "exists",
        lambda b: transfers(_at(b, tr(*BASE)), _at(b, tr(ID + 1, A, B, 1))),
        T(*BASE),
    ),
    transfer_case(
        "id_already_failed",
        lambda b: transfers(_at(b, tr(ID, A, MISSING, 10)), expect=("credit_account_not_found",)),
        T(*BASE),
    ),
    transfer_case("flags_are_mutually_exclusive", T(*BASE, flags=P | POST, pending_id=PID)),
    transfer_case("debit_account_id_must_not_be_zero", T(ID, 0, B, 10)),
    transfer_case("debit_account_id_must_not_be_int_max", T(ID, U128_MAX, B, 10)),
    transfer_case("credit_account_id_must_not_be_zero", T(ID, A, 0, 10)),
    transfer_case("credit_account_id_must_not_be_int_max", T(ID, A, U128_MAX, 10)),
    transfer_case("accounts_must_be_different", T(ID, A, A, 10)),
    transfer_case("pending_id_must_be_zero", T(*BASE, pending_id=7)),
    transfer_case("pending_id_must_not_be_zero", R(ID, 0, POST)),
    transfer_case("pending_id_must_not_be_int_max", R(ID, U128_MAX, POST)),
    transfer_case("pending_id_must_be_different", R(ID, ID, POST)),
    transfer_case("timeout_reserved_for_pending_transfer", T(*BASE, timeout=1)),
    transfer_case("closing_transfer_must_be_pending", T(*BASE, flags=TF.CLOSING_DEBIT)),
    transfer_case("ledger_must_not_be_zero", T(*BASE, ledger=0)),
    transfer_case("code_must_not_be_zero", T(*BASE, code=0)),
    transfer_case("debit_account_not_found", T(ID, MISSING, B, 10)),
    transfer_case("credit_account_not_found", T(ID, A, MISSING, 10)),
    # Design invariant 6: bank-a signs a transfer that debits bank-b's account.
    transfer_case("debit_account_not_owned", T(ID, THEIRS, A, 10)),
    transfer_case("credit_account_not_owned", T(ID, A, THEIRS, 0, flags=P | TF.CLOSING_CREDIT)),
    transfer_case("accounts_must_have_the_same_ledger", T(ID, A, EUR, 10)),
    transfer_case("transfer_must_have_the_same_ledger_as_accounts", T(*BASE, ledger=2)),
    transfer_case("pending_transfer_not_found", R(ID, PID, POST)),
    transfer_case("pending_transfer_not_pending", T(PID, A, B, 10), R(ID, PID, POST)),
    transfer_case(
        "pending_transfer_has_different_debit_account_id",
        T(PID, A, B, 10, flags=P),
        lambda b: transfers(resolve(b + ID, b + PID, POST, debit_account_id=b + C)),
    ),
    transfer_case(
        "pending_transfer_has_different_credit_account_id",
        T(PID, A, B, 10, flags=P),
        lambda b: transfers(resolve(b + ID, b + PID, POST, credit_account_id=b + C)),
    ),
    transfer_case("pending_transfer_has_different_ledger", T(PID, A, B, 10, flags=P), R(ID, PID, POST, ledger=2)),
    transfer_case("pending_transfer_has_different_code", T(PID, A, B, 10, flags=P), R(ID, PID, POST, code=2)),
    transfer_case("exceeds_pending_transfer_amount", T(PID, A, B, 10, flags=P), R(ID, PID, POST, amount=11)),
    transfer_case("pending_transfer_has_different_amount", T(PID, A, B, 10, flags=P), R(ID, PID, VOID, amount=9)),
    transfer_case(
        "pending_transfer_already_posted", T(PID, A, B, 10, flags=P), R(PID + 1, PID, POST), R(ID, PID, POST)
    ),
    transfer_case(
        "pending_transfer_already_voided", T(PID, A, B, 10, flags=P), R(PID + 1, PID, VOID), R(ID, PID, POST)
    ),
    Scenario("pending_transfer_expired", _expired),
    transfer_case("debit_account_already_closed", T(ID, CLOSED, B, 10)),
    transfer_case("credit_account_already_closed", T(ID, A, CLOSED, 10)),
    transfer_case("overflows_debits_pending", T(PID, A, B, U128_MAX, flags=P), T(ID, A, C, 1, flags=P)),
    transfer_case("overflows_credits_pending", T(PID, A, B, U128_MAX, flags=P), T(ID, C, B, 1, flags=P)),
    transfer_case("overflows_debits_posted", T(PID, A, B, U128_MAX), T(ID, A, C, 1)),
    transfer_case("overflows_credits_posted", T(PID, A, B, U128_MAX), T(ID, C, B, 1)),
    transfer_case("overflows_debits", T(PID, A, B, U128_MAX, flags=P), T(ID, A, C, 1)),
    transfer_case("overflows_credits", T(PID, A, B, U128_MAX, flags=P), T(ID, C, B, 1)),
    transfer_case("exceeds_credits", T(ID, DMNEC, B, 1)),
    transfer_case("exceeds_debits", T(ID, A, CMNED, 1)),
    transfer_case(
        "linked_event_failed",
        lambda b: transfers(_at(b, tr(ID, A, B, 1, flags=L)), _at(b, tr(ID + 1, A, MISSING, 1))),
    ),
    transfer_case("linked_event_chain_open", T(*BASE, flags=L)),
]

SCENARIOS = ACCOUNT_SCENARIOS + TRANSFER_SCENARIOS


def _id(s: Scenario) -> str:
    return f"{'account' if s.enum is AR else 'transfer'}-{s.name}"


# -- running scenarios -------------------------------------------------------------


def call(clients, c: Call):
    client = clients[c.member]
    if isinstance(c.events[0], Account):
        return client.create_accounts(list(c.events))
    return client.create_transfers(list(c.events))


def snapshot(client, b: int, c: Call) -> tuple[list, list]:
    """Linearizable reads of every account of range ``b`` and of the records ``c``'s events name."""
    account_ids = [b + i for i in (A, B, C, THEIRS, EUR, DMNEC, CMNED, CLOSED, X, Y)]
    ids = [e.id for e in c.events]
    if isinstance(c.events[0], Account):
        return client.lookup_accounts(account_ids + ids, linearizable=True), []
    return client.lookup_accounts(account_ids, linearizable=True), client.lookup_transfers(ids, linearizable=True)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=_id)
def test_result_code_through_the_sdk(clients, base, scenario):
    *setup, last = scenario.steps(base)
    assert isinstance(last, Call)
    for step in setup:
        if isinstance(step, Wait):
            time.sleep(step.seconds)
            continue
        res = call(clients, step)
        want = step.expect or ("ok",) * len(step.events)
        kind = AR if isinstance(step.events[0], Account) else TR
        assert [r.result for r in res] == [kind[n] for n in want], f"setup {step}: {res}"

    before = snapshot(clients[A_MEMBER], base, last)
    res = call(clients, last)
    after = snapshot(clients[A_MEMBER], base, last)

    assert [r.index for r in res] == list(range(len(last.events)))
    got = res[scenario.index]
    assert got.result is scenario.enum[scenario.name]
    assert (got.name, got.code) == (scenario.name, int(scenario.enum[scenario.name]))  # the older spellings
    assert got.ok == (scenario.name == "ok")
    # Every result is a member of the operation's enum.
    assert all(type(r.result) is scenario.enum for r in res)
    # TigerBeetle: a rejected event (and, in a chain, every event of it) changes nothing.
    if not any(r.ok for r in res):
        assert after == before


def test_ok_results_are_stored(clients, base):
    # The counterpart of "rejections change nothing": ok writes what was asked.
    [r] = clients[A_MEMBER].create_accounts([acct(base + X, user_data_64=5)])
    assert r.ok and r.result is AR.ok
    [a] = clients[A_MEMBER].lookup_accounts([base + X], linearizable=True)
    assert (a.id, a.owner, a.user_data_64, a.timestamp > 0) == (base + X, A_MEMBER, 5, True)
    assert clients[A_MEMBER].create_accounts([acct(base + Y)])[0].ok
    [r] = clients[A_MEMBER].create_transfers([tr(base + ID, base + X, base + Y, 7)])
    assert r.ok and r.result is TR.ok
    [t] = clients[A_MEMBER].lookup_transfers([base + ID], linearizable=True)
    assert (t.debit_account_id, t.credit_account_id, t.amount) == (base + X, base + Y, 7)


def test_identical_resubmission_is_a_retry_not_exists(clients, base):
    # LedgerClient.submit: the ledger deduplicates by transaction hash, so the same
    # signed bytes sent again return the original result and height (exactly
    # once); only a new transaction carrying the same event id gets `exists`.
    # Signing the same account again makes a new transaction (its body carries a new
    # valid_until), so that one is `exists`, as in TigerBeetle.
    c = clients[A_MEMBER]
    signed = c.sign_accounts([acct(base + X)])
    [first] = c.submit([signed])
    [again] = c.submit([signed])
    assert [r.result for r in first.results] == [AR.ok]
    assert (again.tx_hash, again.height, again.results) == (first.tx_hash, first.height, first.results)
    assert [r.result for r in c.create_accounts([acct(base + X)])] == [AR.exists]
    res = c.create_accounts([acct(base + X), acct(base + Y)])
    assert [r.result for r in res] == [AR.exists, AR.ok]


def test_pending_transfer_expires_by_block_time(clients, base):
    # two-phase-transfers.md "Expiry" and test_two_phase.py: the expiry happens in
    # the first block whose (leader-stamped) time reaches the deadline; then both
    # post and void are pending_transfer_expired and the reservation is released.
    c = clients[A_MEMBER]
    for step in std_accounts(base):
        assert all(r.ok for r in call(clients, step))
    assert c.create_transfers([_at(base, tr(PID, A, B, 10, flags=P, timeout=EXPIRY_TIMEOUT_S))])[0].ok
    assert [a.debits_pending for a in c.lookup_accounts([base + A], linearizable=True)] == [10]
    time.sleep(EXPIRY_WAIT_S)
    assert c.create_transfers([_at(base, tr(PID + 1, C, B, 1))])[0].ok
    a, b = c.lookup_accounts([base + A, base + B], linearizable=True)
    assert (a.debits_pending, a.debits_posted, b.credits_pending, b.credits_posted) == (0, 0, 0, 1)
    res = c.create_transfers([_at(base, resolve(ID, PID, POST)), _at(base, resolve(ID + 1, PID, VOID))])
    assert [r.result for r in res] == [TR.pending_transfer_expired] * 2


def test_maximum_timeout_does_not_overflow(clients, base):
    # Why overflows_timeout is in API_UNREACHABLE: the largest timeout a request
    # can carry (u32 seconds) ends long before u64 ns at today's block time.
    c = clients[A_MEMBER]
    for step in std_accounts(base):
        assert all(r.ok for r in call(clients, step))
    [r] = c.create_transfers([_at(base, tr(ID, A, B, 1, flags=P, timeout=U32_MAX))])
    assert r.result is TR.ok
    [t] = c.lookup_transfers([base + ID], linearizable=True)
    assert t.timeout == U32_MAX
    assert t.timestamp + U32_MAX * NS < U64_MAX
    # The year (approximately) from which overflows_timeout becomes reachable.
    assert 1970 + (U64_MAX - U32_MAX * NS) // NS // 31_556_952 == 2418


def test_only_failed_events_travel_on_the_wire(cluster_module, clients, base):
    # TigerBeetle replies to create_transfers with the failed events only (index +
    # result); the SDK rebuilds one result per event from the transaction it signed.
    c = clients[A_MEMBER]
    for step in std_accounts(base):
        assert all(r.ok for r in call(clients, step))
    stx = c.sign_transfers([_at(base, tr(ID, A, B, 1)), _at(base, tr(ID + 1, A, MISSING, 1)), _at(base, tr(ID + 2, A, B, 2))])
    with cluster_module.channel(cluster_module.leader(), A_MEMBER) as ch:
        (wire,) = pb_grpc.LedgerServiceStub(ch).Submit(pb.SubmitRequest(transactions=[stx]), timeout=10).results
    assert [(e.index, e.WhichOneof("result"), e.transfer) for e in wire.results] == [
        (1, "transfer", pb.CREATE_TRANSFER_RESULT_CREDIT_ACCOUNT_NOT_FOUND)
    ]
    [again] = c.submit([stx])  # a retry, answered from the index, rebuilt by the SDK
    assert (again.tx_hash, again.height) == (wire.tx_hash, wire.height)
    assert [(r.index, r.result) for r in again.results] == [(0, TR.ok), (1, TR.credit_account_not_found), (2, TR.ok)]
    all_ok = c.sign_accounts([acct(base + X)])
    with cluster_module.channel(cluster_module.leader(), A_MEMBER) as ch:
        (wire,) = pb_grpc.LedgerServiceStub(ch).Submit(pb.SubmitRequest(transactions=[all_ok]), timeout=10).results
    assert list(wire.results) == [] and wire.height > 0


def _core_lists(module: str):
    """CASES, LINKED_CODES, NOT_PRODUCIBLE of a core test module (they import ``helpers`` by name)."""
    unit = str(Path(__file__).resolve().parents[1] / "unit")
    if unit not in sys.path:
        sys.path.insert(0, unit)
    m = importlib.import_module(module)
    # By name: the core's enums (tests/unit/test_proto_enums.py pins them to the SDK's).
    return tuple({c.name for c in codes} for codes in (m.CASES, m.LINKED_CODES, m.NOT_PRODUCIBLE))


def test_every_producible_code_is_covered():
    """No code is forgotten: the scenarios here are exactly the core's producible codes."""
    cases, linked, not_producible = _core_lists("test_apply_accounts")
    producible_accounts = {AR[n] for n in set(AR.__members__) - not_producible}
    assert {AR[n] for n in cases | linked} == producible_accounts
    covered_accounts = {AR[s.name] for s in ACCOUNT_SCENARIOS}
    assert covered_accounts == producible_accounts

    cases, linked, not_producible = _core_lists("test_apply_transfers")
    producible_transfers = {TR[n] for n in set(TR.__members__) - not_producible}
    assert {TR[n] for n in cases | linked} == producible_transfers
    covered_transfers = {TR[s.name] for s in TRANSFER_SCENARIOS}
    assert not covered_transfers & set(API_UNREACHABLE)
    assert covered_transfers | set(API_UNREACHABLE) == producible_transfers
    # One scenario per code: a duplicate name would hide a missing one.
    assert len(ACCOUNT_SCENARIOS) == len(covered_accounts)
    assert len(TRANSFER_SCENARIOS) == len(covered_transfers)


# -- queries -----------------------------------------------------------------------


def _leader(cluster) -> str:
    # LOCAL reads from the leader see every write it acknowledged.
    return cluster.addresses[cluster.leader()]


def test_get_account_transfers_order_filters_and_pagination(cluster_module, clients, base):
    # get_account_transfers.md: transfers where the account is debited or credited,
    # by timestamp ascending, or descending with flags.reversed; limit caps a page.
    c = clients[A_MEMBER]
    assert all(r.ok for r in c.create_accounts([acct(base + A), acct(base + B), acct(base + C)]))
    ids = []
    # Several blocks with several transfers each: A on both sides, plus one A is not in.
    for blk in range(4):
        batch = [
            tr(base + ID + 10 * blk, base + A, base + B, 1 + blk, code=10),
            tr(base + ID + 10 * blk + 1, base + B, base + A, 1, code=20),
        ]
        if blk == 2:
            batch.append(tr(base + ID + 10 * blk + 2, base + B, base + C, 5))
        assert all(r.ok for r in c.create_transfers(batch))
        ids += [t.id for t in batch if base + A in (t.debit_account_id, t.credit_account_id)]
    addr = _leader(cluster_module)

    page = c.get_account_transfers(AccountFilter(account_id=base + A), address=addr)
    assert [t.id for t in page] == ids
    ts = [t.timestamp for t in page]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert page.next_timestamp == 0

    rev = c.get_account_transfers(AccountFilter(account_id=base + A, reversed=True), address=addr)
    assert [t.id for t in rev] == ids[::-1]

    debits = c.get_account_transfers(AccountFilter(account_id=base + A, debits=True), address=addr)
    assert [t.id for t in debits] == [i for i in ids if (i - base - ID) % 10 == 0]
    assert all(t.debit_account_id == base + A for t in debits)
    credits = c.get_account_transfers(AccountFilter(account_id=base + A, credits=True), address=addr)
    assert all(t.credit_account_id == base + A for t in credits) and len(credits) == len(ids) // 2
    by_code = c.get_account_transfers(AccountFilter(account_id=base + A, code=20), address=addr)
    assert [t.id for t in by_code] == [t.id for t in credits]

    # Pagination: next_timestamp is the next page's timestamp_min (timestamp_max
    # when reversed); every transfer comes exactly once, in order.
    for reversed_ in (False, True):
        seen, cursor, pages = [], 0, 0
        while True:
            f = AccountFilter(
                account_id=base + A,
                limit=3,
                reversed=reversed_,
                timestamp_min=0 if reversed_ else cursor,
                timestamp_max=cursor if reversed_ else 0,
            )
            page = c.get_account_transfers(f, address=addr)
            assert len(page) <= 3
            seen += [t.id for t in page]
            pages += 1
            cursor = page.next_timestamp
            if cursor == 0:
                break
            assert pages <= len(ids)
        assert seen == (ids[::-1] if reversed_ else ids)
        assert pages >= len(ids) // 3


def test_get_account_balances_of_a_history_account(cluster_module, clients, base):
    # get_account_balances.md: only accounts with flags.history keep balances;
    # each entry is the balance right after the change at its timestamp.
    c = clients[A_MEMBER]
    h, other, plain = base + A, base + B, base + C
    assert all(r.ok for r in c.create_accounts([acct(h, flags=AF.HISTORY), acct(other), acct(plain)]))
    steps = [
        (tr(base + ID, other, h, 100), (0, 0, 0, 100)),
        (tr(base + ID + 1, h, other, 30, flags=P), (30, 0, 0, 100)),
        (resolve(base + ID + 2, base + ID + 1, POST, amount=20), (0, 20, 0, 100)),
        (tr(base + ID + 3, plain, other, 1), None),  # does not touch h
        (tr(base + ID + 4, h, other, 5, code=7), (0, 25, 0, 100)),
    ]
    for t, _ in steps:
        assert c.create_transfers([t])[0].ok
    addr = _leader(cluster_module)
    transfers_of = {t.id: t for t in c.lookup_transfers([t.id for t, _ in steps], linearizable=True)}
    [created] = c.lookup_accounts([h], linearizable=True)
    expected = [(transfers_of[t.id].timestamp, bal) for t, bal in steps if bal is not None]

    page = c.get_account_balances(AccountFilter(account_id=h), address=addr)
    rows = [(b.timestamp, (b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted)) for b in page]
    # One row per transfer of the account, none for its creation (get_account_balances.md).
    assert rows == expected
    assert page.next_timestamp == 0
    # The last row is the account's current balances.
    assert rows[-1][1] == (created.debits_pending, created.debits_posted, created.credits_pending, created.credits_posted)

    rev = c.get_account_balances(AccountFilter(account_id=h, reversed=True), address=addr)
    assert [b.timestamp for b in rev] == [ts for ts, _ in rows][::-1]
    # A filter on transfer fields keeps the rows of matching transfers only.
    by_code = c.get_account_balances(AccountFilter(account_id=h, code=7), address=addr)
    assert [(b.timestamp, b.debits_posted) for b in by_code] == [(expected[-1][0], 25)]
    # Paged one row at a time, every row comes exactly once.
    seen, cursor = [], 0
    while True:
        page = c.get_account_balances(AccountFilter(account_id=h, limit=1, timestamp_min=cursor), address=addr)
        seen += [b.timestamp for b in page]
        cursor = page.next_timestamp
        if cursor == 0:
            break
    assert seen == [ts for ts, _ in rows]
    # "If the account does not have the flag history set, return nothing."
    assert len(c.get_account_balances(AccountFilter(account_id=plain), address=addr)) == 0


def test_query_accounts_and_transfers(cluster_module, clients, base):
    # query_accounts.md / query_transfers.md: every non-zero field of the
    # QueryFilter must match (AND); results by timestamp, reversed on request.
    a, b = clients[A_MEMBER], clients[B_MEMBER]
    # A ledger and user_data of this test only, so other tests' records cannot match
    # (conftest: the banks issue QUERY_LEDGER, so their accounts there may go negative).
    ledger, ud = QUERY_LEDGER, base
    created_a = [
        acct(base + 1, ledger=ledger, code=1, user_data_64=ud),
        acct(base + 2, ledger=ledger, code=2, user_data_64=ud),
        acct(base + 3, ledger=ledger, code=1, user_data_64=ud + 1),
    ]
    assert all(r.ok for r in a.create_accounts(created_a))
    assert all(r.ok for r in b.create_accounts([acct(base + 4, ledger=ledger, code=1, user_data_64=ud)]))
    ts_ = [
        tr(base + ID, base + 1, base + 2, 5, ledger=ledger, code=3, user_data_64=ud),
        tr(base + ID + 1, base + 1, base + 4, 6, ledger=ledger, code=4, user_data_64=ud),
        tr(base + ID + 2, base + 2, base + 3, 7, ledger=ledger, code=3, user_data_64=ud + 1),
    ]
    assert all(r.ok for r in a.create_transfers(ts_))
    addr = _leader(cluster_module)
    # Every member's records: the auditor reads them all (a member sees its own, api.authz).
    auditor = cluster_module.client("auditor")
    assert [x.id for x in a.query_accounts(QueryFilter(ledger=ledger), address=addr)] == [base + 1, base + 2, base + 3]
    assert [x.id for x in b.query_accounts(QueryFilter(ledger=ledger), address=addr)] == [base + 4]
    assert [x.id for x in b.query_transfers(QueryFilter(ledger=ledger), address=addr)] == [base + ID + 1]

    def acc_ids(**kw):
        return [x.id for x in auditor.query_accounts(QueryFilter(**kw), address=addr)]

    def tr_ids(**kw):
        return [x.id for x in auditor.query_transfers(QueryFilter(**kw), address=addr)]

    assert acc_ids(ledger=ledger) == [base + 1, base + 2, base + 3, base + 4]
    assert acc_ids(user_data_64=ud) == [base + 1, base + 2, base + 4]
    assert acc_ids(user_data_64=ud, code=1) == [base + 1, base + 4]
    assert acc_ids(ledger=ledger, code=2) == [base + 2]
    assert acc_ids(ledger=ledger, reversed=True) == [base + 4, base + 3, base + 2, base + 1]
    owners = {x.id: x.owner for x in auditor.query_accounts(QueryFilter(ledger=ledger), address=addr)}
    assert owners == {base + 1: A_MEMBER, base + 2: A_MEMBER, base + 3: A_MEMBER, base + 4: B_MEMBER}

    assert tr_ids(ledger=ledger) == [base + ID, base + ID + 1, base + ID + 2]
    assert tr_ids(user_data_64=ud) == [base + ID, base + ID + 1]
    assert tr_ids(ledger=ledger, code=3) == [base + ID, base + ID + 2]
    assert tr_ids(user_data_64=ud, code=4) == [base + ID + 1]
    assert tr_ids(ledger=ledger, reversed=True) == [base + ID + 2, base + ID + 1, base + ID]
    assert tr_ids(ledger=ledger, code=99) == []

    # limit + next_timestamp pages through a query as through get_account_transfers.
    seen, cursor = [], 0
    while True:
        page = auditor.query_accounts(QueryFilter(ledger=ledger, limit=3, timestamp_min=cursor), address=addr)
        seen += [x.id for x in page]
        cursor = page.next_timestamp
        if cursor == 0:
            break
    assert seen == [base + 1, base + 2, base + 3, base + 4]
