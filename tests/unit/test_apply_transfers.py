"""create_transfers in the pure core: one test per result code apply.py can produce.

Semantics and precedence follow TigerBeetle (docs/reference/transfer.md,
docs/reference/requests/create_transfers.md "Result", src/state_machine.zig
``create_transfer`` / ``post_or_void_pending_transfer``), plus our own
``debit_account_not_owned`` (design invariant 6). ``linked_event_failed`` and
``linked_event_chain_open`` are covered in test_linked.py; the two-phase codes
also have behavioural tests in test_two_phase.py.

CreateTransferResult values apply.py cannot produce:
  * ``imported_event_expected`` / ``imported_event_not_expected``: imported
    events are not supported; ``flags.imported`` is outside TRANSFER_FLAGS_KNOWN
    and is answered with ``reserved_flag`` (tested below).
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from helpers import (
    MEMBER,
    OTHER,
    U128_MAX,
    U64_MAX,
    Ledger,
    account,
    accounts_tx,
    assert_conserved,
    resolve,
    transfer,
    transfers_tx,
)
from raft_ledger_node.ledger.apply import TRANSIENT_TRANSFER_RESULTS
from raft_ledger_node.ledger.types import (
    AccountFlags as AF,
    CreateAccountResult as AR,
    CreateTransferResult as TR,
    PendingStatus,
    TransferFlags as TF,
)

T = transfer
P, POST, VOID = TF.PENDING, TF.POST_PENDING_TRANSFER, TF.VOID_PENDING_TRANSFER

# Fixture accounts, all on ledger 1 unless stated.
A, B, C = 1, 2, 3  # plain, owned by MEMBER
THEIRS = 4  # plain, owned by OTHER
EUR = 5  # ledger 2, owned by MEMBER
DMNEC = 6  # debits_must_not_exceed_credits
CMNED = 7  # credits_must_not_exceed_debits
CLOSED = 8  # created closed
MISSING = 99


@pytest.fixture
def led() -> Ledger:
    led = Ledger()
    [r1, r2] = led.block(
        accounts_tx(
            account(A),
            account(B),
            account(C),
            account(EUR, ledger=2),
            account(DMNEC, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS),
            account(CMNED, flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS),
            account(CLOSED, flags=AF.CLOSED),
        ),
        accounts_tx(account(THEIRS), member=OTHER),
    )
    assert set(r1.codes) == {AR.ok} and r2.codes == (AR.ok,)
    return led


def _one(*setup, event, member=MEMBER):
    """Run each setup event in its own block (each must succeed), then ``event``."""

    def run(led):
        for ev in setup:
            assert led.create_transfers(ev) == (TR.ok,), ev
        return led.create_transfers(event, member=member)

    return run


BASE = T(100, A, B, 10)


def _expired(led):
    assert led.create_transfers(T(50, A, B, 10, flags=P, timeout=1)) == (TR.ok,)
    led.advance(2)
    return led.create_transfers(resolve(100, 50, POST))


def _overflows_timeout(led):
    # The pending transfer's expiry instant must fit u64 ns (TigerBeetle
    # overflows_timeout uses the timestamp assigned by the cluster).
    [r] = led.block(transfers_tx(T(100, A, B, 1, flags=P, timeout=(1 << 32) - 1)), ts=U64_MAX - 10**18)
    return r.codes


def _id_already_failed(led):
    assert led.create_transfers(T(100, A, MISSING, 10)) == (TR.credit_account_not_found,)
    return led.create_transfers(BASE)


CASES = {
    TR.ok: _one(event=BASE),
    TR.timestamp_must_be_zero: _one(event=T(100, A, B, 10, timestamp=1)),
    TR.reserved_flag: _one(event=T(100, A, B, 10, flags=1 << 9)),
    TR.id_must_not_be_zero: _one(event=T(0, A, B, 10)),
    TR.id_must_not_be_int_max: _one(event=T(U128_MAX, A, B, 10)),
    TR.exists_with_different_owner: _one(BASE, event=BASE, member=OTHER),
    TR.exists_with_different_flags: _one(BASE, event=T(100, A, B, 10, flags=P)),
    TR.exists_with_different_pending_id: _one(BASE, event=T(100, A, B, 10, pending_id=7)),
    TR.exists_with_different_timeout: _one(BASE, event=T(100, A, B, 10, timeout=7)),
    TR.exists_with_different_debit_account_id: _one(BASE, event=T(100, C, B, 10)),
    TR.exists_with_different_credit_account_id: _one(BASE, event=T(100, A, C, 10)),
    TR.exists_with_different_amount: _one(BASE, event=T(100, A, B, 11)),
    TR.exists_with_different_user_data_128: _one(BASE, event=T(100, A, B, 10, user_data_128=1)),
    TR.exists_with_different_user_data_64: _one(BASE, event=T(100, A, B, 10, user_data_64=1)),
    TR.exists_with_different_user_data_32: _one(BASE, event=T(100, A, B, 10, user_data_32=1)),
    TR.exists_with_different_ledger: _one(BASE, event=T(100, A, B, 10, ledger=2)),
    TR.exists_with_different_code: _one(BASE, event=T(100, A, B, 10, code=2)),
    TR.exists: _one(BASE, event=BASE),
    TR.id_already_failed: _id_already_failed,
    TR.flags_are_mutually_exclusive: _one(event=T(100, A, B, 10, flags=P | POST, pending_id=1)),
    TR.debit_account_id_must_not_be_zero: _one(event=T(100, 0, B, 10)),
    TR.debit_account_id_must_not_be_int_max: _one(event=T(100, U128_MAX, B, 10)),
    TR.credit_account_id_must_not_be_zero: _one(event=T(100, A, 0, 10)),
    TR.credit_account_id_must_not_be_int_max: _one(event=T(100, A, U128_MAX, 10)),
    TR.accounts_must_be_different: _one(event=T(100, A, A, 10)),
    TR.pending_id_must_be_zero: _one(event=T(100, A, B, 10, pending_id=7)),
    TR.pending_id_must_not_be_zero: _one(event=resolve(100, 0, POST)),
    TR.pending_id_must_not_be_int_max: _one(event=resolve(100, U128_MAX, POST)),
    TR.pending_id_must_be_different: _one(event=resolve(100, 100, POST)),
    TR.timeout_reserved_for_pending_transfer: _one(event=T(100, A, B, 10, timeout=1)),
    TR.closing_transfer_must_be_pending: _one(event=T(100, A, B, 10, flags=TF.CLOSING_DEBIT)),
    TR.ledger_must_not_be_zero: _one(event=T(100, A, B, 10, ledger=0)),
    TR.code_must_not_be_zero: _one(event=T(100, A, B, 10, code=0)),
    TR.debit_account_not_found: _one(event=T(100, MISSING, B, 10)),
    TR.credit_account_not_found: _one(event=T(100, A, MISSING, 10)),
    TR.debit_account_not_owned: _one(event=T(100, THEIRS, A, 10)),
    TR.credit_account_not_owned: _one(event=T(100, A, THEIRS, 0, flags=P | TF.CLOSING_CREDIT)),
    TR.accounts_must_have_the_same_ledger: _one(event=T(100, A, EUR, 10)),
    TR.transfer_must_have_the_same_ledger_as_accounts: _one(event=T(100, A, B, 10, ledger=2)),
    TR.pending_transfer_not_found: _one(event=resolve(100, 50, POST)),
    TR.pending_transfer_not_pending: _one(T(50, A, B, 10), event=resolve(100, 50, POST)),
    TR.pending_transfer_has_different_debit_account_id: _one(
        T(50, A, B, 10, flags=P), event=resolve(100, 50, POST, debit_account_id=C)
    ),
    TR.pending_transfer_has_different_credit_account_id: _one(
        T(50, A, B, 10, flags=P), event=resolve(100, 50, POST, credit_account_id=C)
    ),
    TR.pending_transfer_has_different_ledger: _one(T(50, A, B, 10, flags=P), event=resolve(100, 50, POST, ledger=2)),
    TR.pending_transfer_has_different_code: _one(T(50, A, B, 10, flags=P), event=resolve(100, 50, POST, code=2)),
    TR.exceeds_pending_transfer_amount: _one(T(50, A, B, 10, flags=P), event=resolve(100, 50, POST, amount=11)),
    TR.pending_transfer_has_different_amount: _one(T(50, A, B, 10, flags=P), event=resolve(100, 50, VOID, amount=9)),
    TR.pending_transfer_already_posted: _one(T(50, A, B, 10, flags=P), resolve(51, 50, POST), event=resolve(100, 50, POST)),
    TR.pending_transfer_already_voided: _one(T(50, A, B, 10, flags=P), resolve(51, 50, VOID), event=resolve(100, 50, POST)),
    TR.pending_transfer_expired: _expired,
    TR.debit_account_already_closed: _one(event=T(100, CLOSED, B, 10)),
    TR.credit_account_already_closed: _one(event=T(100, A, CLOSED, 10)),
    TR.overflows_debits_pending: _one(T(50, A, B, U128_MAX, flags=P), event=T(100, A, C, 1, flags=P)),
    TR.overflows_credits_pending: _one(T(50, A, B, U128_MAX, flags=P), event=T(100, C, B, 1, flags=P)),
    TR.overflows_debits_posted: _one(T(50, A, B, U128_MAX), event=T(100, A, C, 1)),
    TR.overflows_credits_posted: _one(T(50, A, B, U128_MAX), event=T(100, C, B, 1)),
    TR.overflows_debits: _one(T(50, A, B, U128_MAX, flags=P), event=T(100, A, C, 1)),
    TR.overflows_credits: _one(T(50, A, B, U128_MAX, flags=P), event=T(100, C, B, 1)),
    TR.overflows_timeout: _overflows_timeout,
    TR.exceeds_credits: _one(event=T(100, DMNEC, B, 1)),
    TR.exceeds_debits: _one(event=T(100, A, CMNED, 1)),
}

LINKED_CODES = {TR.linked_event_failed, TR.linked_event_chain_open}  # test_linked.py
NOT_PRODUCIBLE = {TR.imported_event_expected, TR.imported_event_not_expected}


def test_every_result_code_is_covered():
    assert set(CASES) | LINKED_CODES | NOT_PRODUCIBLE == set(TR)


@pytest.mark.parametrize("code", list(CASES), ids=lambda c: c.name)
def test_result_code(led, code):
    assert CASES[code](led) == (code,)
    # Only `ok` writes transfer 100; a rejected event leaves balances balanced.
    assert (100 in led.ws.transfers) == (code == TR.ok)
    assert_conserved(led.store.accounts.values())


# -- single-phase behaviour ----------------------------------------------------------


def test_single_phase_transfer_moves_posted_balances(led):
    assert led.create_transfers(T(100, A, B, 10, user_data_128=9, flags=TF.LINKED), T(101, A, B, 5)) == (TR.ok, TR.ok)
    assert led.balances(A) == (0, 15, 0, 0)
    assert led.balances(B) == (0, 0, 0, 15)
    t = led.store.get_transfer(100)
    assert (t.debit_account_id, t.credit_account_id, t.amount, t.user_data_128) == (A, B, 10, 9)
    assert t.flags == 0  # linked is a property of the request, not stored
    assert 0 < t.timestamp < led.store.head().header.timestamp
    assert led.store.get_transfer(101).timestamp == t.timestamp + 1
    assert led.status(100) == PendingStatus.none


def test_transfer_is_indexed_under_both_accounts(led):
    led.create_transfers(T(100, A, B, 10))
    ts = led.store.get_transfer(100).timestamp
    assert led.store.account_transfers[A] == [(ts, 100)]
    assert led.store.account_transfers[B] == [(ts, 100)]


def test_zero_amount_transfer_is_allowed(led):
    # TigerBeetle 0.16.0 (CHANGELOG): zero-amount transfers are permitted.
    assert led.create_transfers(T(100, A, B, 0)) == (TR.ok,)
    assert led.store.get_transfer(100).amount == 0
    assert led.balances(A) == (0, 0, 0, 0)


def test_member_may_credit_an_account_it_does_not_own(led):
    assert led.create_transfers(T(100, A, THEIRS, 10)) == (TR.ok,)
    assert led.create_transfers(T(101, THEIRS, A, 4), member=OTHER) == (TR.ok,)
    assert led.create_transfers(T(102, THEIRS, A, 4)) == (TR.debit_account_not_owned,)
    assert led.balances(THEIRS) == (0, 4, 0, 10)


@pytest.mark.parametrize("bit", [8, 9, 12, 15, 16, 31])
def test_unknown_flag_bits_are_reserved(led, bit):
    assert led.create_transfers(T(100, A, B, 10, flags=1 << bit)) == (TR.reserved_flag,)
    assert led.store.get_transfer(100) is None


def test_mutually_exclusive_flag_combinations(led):
    assert led.create_transfers(resolve(100, 1, POST | VOID)) == (TR.flags_are_mutually_exclusive,)
    assert led.create_transfers(resolve(101, 1, POST | TF.BALANCING_DEBIT)) == (TR.flags_are_mutually_exclusive,)
    assert led.create_transfers(resolve(102, 1, VOID | TF.CLOSING_CREDIT)) == (TR.flags_are_mutually_exclusive,)


def test_debits_must_not_exceed_credits_allows_up_to_the_credits(led):
    assert led.create_transfers(T(100, A, DMNEC, 100)) == (TR.ok,)
    assert led.create_transfers(T(101, DMNEC, B, 60, flags=P)) == (TR.ok,)
    # Pending debits count against the limit (TigerBeetle exceeds_credits).
    assert led.create_transfers(T(102, DMNEC, B, 41)) == (TR.exceeds_credits,)
    assert led.create_transfers(T(103, DMNEC, B, 40)) == (TR.ok,)
    a = led.acct(DMNEC)
    assert a.debits_pending + a.debits_posted == a.credits_posted == 100


def test_credits_must_not_exceed_debits_allows_up_to_the_debits(led):
    assert led.create_transfers(T(100, CMNED, A, 50)) == (TR.ok,)
    assert led.create_transfers(T(101, B, CMNED, 51)) == (TR.exceeds_debits,)
    assert led.create_transfers(T(102, B, CMNED, 50)) == (TR.ok,)


def test_balancing_debit_moves_at_most_the_available_balance(led):
    # TigerBeetle transfer.md flags.balancing_debit: amount is an upper bound;
    # the debit account's debits rise to at most its credits.
    led.create_transfers(T(90, A, DMNEC, 100), T(91, DMNEC, B, 30))
    assert led.create_transfers(T(100, DMNEC, C, U128_MAX, flags=TF.BALANCING_DEBIT)) == (TR.ok,)
    assert led.store.get_transfer(100).amount == 70
    assert led.balances(DMNEC) == (0, 100, 0, 100)
    # A retry with an upper bound at or above what moved is `exists`, below it is not.
    assert led.create_transfers(T(100, DMNEC, C, U128_MAX, flags=TF.BALANCING_DEBIT)) == (TR.exists,)
    assert led.create_transfers(T(100, DMNEC, C, 70, flags=TF.BALANCING_DEBIT)) == (TR.exists,)
    assert led.create_transfers(T(100, DMNEC, C, 69, flags=TF.BALANCING_DEBIT)) == (TR.exists_with_different_amount,)
    # Nothing left: a further balancing transfer moves zero.
    assert led.create_transfers(T(101, DMNEC, C, 5, flags=TF.BALANCING_DEBIT)) == (TR.ok,)
    assert led.store.get_transfer(101).amount == 0


def test_balancing_debit_below_the_available_balance_moves_the_amount(led):
    led.create_transfers(T(90, B, A, 100))
    assert led.create_transfers(T(100, A, C, 30, flags=TF.BALANCING_DEBIT)) == (TR.ok,)
    assert led.store.get_transfer(100).amount == 30


def test_balancing_credit_moves_at_most_the_available_balance(led):
    led.create_transfers(T(90, CMNED, A, 100))
    assert led.create_transfers(T(100, B, CMNED, 1000, flags=TF.BALANCING_CREDIT)) == (TR.ok,)
    assert led.store.get_transfer(100).amount == 100
    assert led.balances(CMNED) == (0, 100, 0, 100)


def test_pending_balancing_debit_counts_pending_debits(led):
    led.create_transfers(T(90, B, A, 100), T(91, A, B, 30, flags=P))
    assert led.create_transfers(T(100, A, C, U128_MAX, flags=TF.BALANCING_DEBIT | P)) == (TR.ok,)
    assert led.store.get_transfer(100).amount == 70
    assert led.balances(A) == (100, 0, 0, 100)


@pytest.mark.parametrize(
    "setup, event, code",
    [
        # A pending transfer must also fit the posted balance it may later move into.
        (T(50, A, B, U128_MAX), T(100, A, C, 1, flags=P), TR.overflows_debits_posted),
        (T(50, A, B, U128_MAX), T(100, C, B, 1, flags=P), TR.overflows_credits_posted),
        # Pending overflow is reported before posted overflow.
        (T(50, A, B, U128_MAX, flags=P), T(100, A, C, 1, flags=P), TR.overflows_debits_pending),
    ],
    ids=["pending-over-debits-posted", "pending-over-credits-posted", "pending-first"],
)
def test_overflow_precedence_for_pending_transfers(led, setup, event, code):
    # state_machine.zig create_transfer: overflows_debits_pending/credits_pending only
    # for pending transfers, then overflows_debits_posted/credits_posted for every transfer.
    assert led.create_transfers(setup) == (TR.ok,)
    assert led.create_transfers(event) == (code,)
    assert led.store.get_transfer(100) is None


def test_overflows_debits_needs_pending_and_posted_together(led):
    # Neither balance alone overflows, their sum does (account.md: debits_pending + debits_posted fit u128).
    assert led.create_transfers(T(50, A, B, U128_MAX - 5, flags=P), T(51, A, B, 5)) == (TR.ok, TR.ok)
    assert led.create_transfers(T(100, A, C, 1, flags=P)) == (TR.overflows_debits,)
    assert led.create_transfers(T(101, C, B, 1, flags=P)) == (TR.overflows_credits,)


# -- id_already_failed (TigerBeetle 0.16: transient failures poison the id) ----------


def _close(flags):
    return lambda led: led.create_transfers(T(90, A, B, 0, flags=P | flags))


def _void_closing(led):
    return led.create_transfers(resolve(91, 90, VOID))


# code -> (setup, event that fails with code, what removes the cause)
TRANSIENT_SETUPS = {
    TR.debit_account_not_found: (None, T(100, MISSING, B, 10), lambda led: led.create_accounts(account(MISSING))),
    TR.credit_account_not_found: (None, T(100, A, MISSING, 10), lambda led: led.create_accounts(account(MISSING))),
    TR.exceeds_credits: (None, T(100, DMNEC, B, 10), lambda led: led.create_transfers(T(90, A, DMNEC, 10))),
    TR.exceeds_debits: (None, T(100, A, CMNED, 10), lambda led: led.create_transfers(T(90, CMNED, B, 10))),
    TR.pending_transfer_not_found: (None, resolve(100, 90, POST), lambda led: led.create_transfers(T(90, A, B, 10, flags=P))),
    TR.debit_account_already_closed: (_close(TF.CLOSING_DEBIT), T(100, A, C, 10), _void_closing),
    TR.credit_account_already_closed: (_close(TF.CLOSING_CREDIT), T(100, C, B, 10), _void_closing),
}


def test_every_transient_result_has_a_case():
    assert set(TRANSIENT_SETUPS) == TRANSIENT_TRANSFER_RESULTS


def test_transient_results_are_exactly_tigerbeetles():
    # src/tigerbeetle.zig CreateTransferResult.transient().
    assert TRANSIENT_TRANSFER_RESULTS == {
        TR.debit_account_not_found,
        TR.credit_account_not_found,
        TR.pending_transfer_not_found,
        TR.exceeds_credits,
        TR.exceeds_debits,
        TR.debit_account_already_closed,
        TR.credit_account_already_closed,
    }


@pytest.mark.parametrize("code", list(TRANSIENT_SETUPS), ids=lambda c: c.name)
def test_transient_failure_poisons_the_id(led, code):
    setup, event, fix_cause = TRANSIENT_SETUPS[code]
    if setup is not None:
        assert setup(led) == (TR.ok,)
    assert led.create_transfers(event) == (code,)
    assert led.store.get_failed_transfer(MEMBER, 100) == code
    fix_cause(led)
    # The cause is gone, but the id can never succeed: retry with a new id.
    assert led.create_transfers(event) == (TR.id_already_failed,)
    assert led.store.get_transfer(100) is None
    assert led.create_transfers(replace(event, id=101)) == (TR.ok,)


def test_transient_failure_poisons_the_id_within_the_same_block(led):
    r1, r2 = led.block(transfers_tx(T(100, A, MISSING, 10)), transfers_tx(T(100, A, B, 10)))
    assert (r1.codes, r2.codes) == ((TR.credit_account_not_found,), (TR.id_already_failed,))


def test_non_transient_failure_does_not_poison_the_id(led):
    assert led.create_transfers(T(100, A, B, 10, ledger=0)) == (TR.ledger_must_not_be_zero,)
    assert led.store.get_failed_transfer(MEMBER, 100) is None
    assert led.create_transfers(T(100, A, B, 10)) == (TR.ok,)


def test_existing_transfer_is_reported_before_failed_id(led):
    assert led.create_transfers(BASE) == (TR.ok,)
    assert led.create_transfers(T(100, MISSING, B, 10)) == (TR.exists_with_different_debit_account_id,)
    assert led.store.get_failed_transfer(MEMBER, 100) is None


# -- retries of a whole transaction (exactly once, design invariant 3) ---------------


def test_retried_transaction_returns_the_original_result_and_applies_nothing(led):
    tx = transfers_tx(T(100, A, B, 10))
    [first] = led.block(tx)
    height = led.store.head().height
    [again] = led.block(tx)
    assert again == first
    assert again.height == height
    assert led.balances(A) == (0, 10, 0, 0)
    assert led.ws.txs == [] and led.ws.header.tx_count == 0 and led.ws.transfers == {}


def test_retry_of_a_failed_transaction_repeats_the_failure(led):
    tx = transfers_tx(T(100, A, MISSING, 10))
    [first] = led.block(tx)
    led.create_accounts(account(MISSING))
    [again] = led.block(tx)
    assert again.codes == first.codes == (TR.credit_account_not_found,)
    assert again.height == first.height


def test_same_transaction_twice_in_one_block_applies_once(led):
    tx = transfers_tx(T(100, A, B, 10), T(101, A, B, 1))
    r1, r2 = led.block(tx, tx)
    assert r1 == r2 and r1.codes == (TR.ok, TR.ok)
    assert led.balances(A) == (0, 11, 0, 0)
    assert led.ws.header.tx_count == 1


def test_same_transfer_in_a_new_envelope_is_exists(led):
    led.block(transfers_tx(T(100, A, B, 10)))
    [r] = led.block(transfers_tx(T(100, A, B, 10)))
    assert r.codes == (TR.exists,)
    assert led.balances(A) == (0, 10, 0, 0)


def test_conservation_after_mixed_activity(led):
    led.create_transfers(T(100, A, B, 10), T(101, B, C, 3, flags=P), T(102, A, DMNEC, 7))
    led.create_transfers(resolve(103, 101, POST, amount=2), T(104, DMNEC, THEIRS, 7))
    led.create_transfers(T(105, C, A, 1, flags=P, timeout=1))
    led.advance(5)
    led.block()
    assert_conserved(led.store.accounts.values())
