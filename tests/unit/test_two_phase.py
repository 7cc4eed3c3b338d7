"""Two-phase transfers: pending, post, void, expiry, closing accounts.

TigerBeetle docs/coding/two-phase-transfers.md ("Reserve Funds", "Resolve Funds"),
docs/reference/transfer.md (flags.pending, post_pending_transfer,
void_pending_transfer, closing_debit/closing_credit, timeout) and
docs/reference/account.md (flags.closed). Expiry is driven by block timestamps
from the Raft log, never a local clock ("Transfer timeouts are deterministic,
driven by the cluster's timestamp").
"""
from __future__ import annotations

import pytest

from helpers import NS, OTHER, U128_MAX, Ledger, account, accounts_tx, assert_conserved, resolve, transfer, transfers_tx
from raft_ledger_node.ledger.types import AccountFlags as AF, CreateTransferResult as TR, PendingStatus, TransferFlags as TF

T = transfer
P, POST, VOID = TF.PENDING, TF.POST_PENDING_TRANSFER, TF.VOID_PENDING_TRANSFER
A, B, C = 1, 2, 3


@pytest.fixture
def led() -> Ledger:
    led = Ledger()
    assert led.create_accounts(account(A), account(B), account(C)) == (0, 0, 0)
    return led


def test_pending_reserves_without_posting(led):
    assert led.create_transfers(T(10, A, B, 100, flags=P)) == (TR.ok,)
    assert led.balances(A) == (100, 0, 0, 0)
    assert led.balances(B) == (0, 0, 100, 0)
    assert led.status(10) == PendingStatus.pending
    assert_conserved(led.store.accounts.values())


def test_post_full_amount(led):
    led.create_transfers(T(10, A, B, 100, flags=P))
    assert led.create_transfers(resolve(11, 10, POST)) == (TR.ok,)
    assert led.balances(A) == (0, 100, 0, 0)
    assert led.balances(B) == (0, 0, 0, 100)
    assert led.status(10) == PendingStatus.posted
    posted = led.store.get_transfer(11)
    # The post inherits accounts, ledger and code from the pending transfer.
    assert (posted.debit_account_id, posted.credit_account_id, posted.ledger, posted.code, posted.amount) == (A, B, 1, 1, 100)
    assert posted.pending_id == 10


def test_post_with_the_pending_amount_stated(led):
    led.create_transfers(T(10, A, B, 100, flags=P))
    assert led.create_transfers(resolve(11, 10, POST, amount=100, debit_account_id=A, credit_account_id=B, ledger=1, code=1)) == (TR.ok,)
    assert led.balances(B) == (0, 0, 0, 100)


def test_partial_post_releases_the_remainder(led):
    # two-phase-transfers.md: "If the posted amount is less than the pending
    # transfer's amount, then only this amount is posted, and the remainder is
    # restored to its original accounts."
    led.create_transfers(T(10, A, B, 100, flags=P))
    assert led.create_transfers(resolve(11, 10, POST, amount=30)) == (TR.ok,)
    assert led.balances(A) == (0, 30, 0, 0)
    assert led.balances(B) == (0, 0, 0, 30)
    assert led.store.get_transfer(11).amount == 30
    assert_conserved(led.store.accounts.values())


def test_void_restores_the_reservation(led):
    led.create_transfers(T(10, A, B, 100, flags=P))
    assert led.create_transfers(resolve(11, 10, VOID)) == (TR.ok,)
    assert led.balances(A) == (0, 0, 0, 0)
    assert led.balances(B) == (0, 0, 0, 0)
    assert led.status(10) == PendingStatus.voided
    assert led.store.get_transfer(11).amount == 100


def test_void_with_the_exact_amount(led):
    led.create_transfers(T(10, A, B, 100, flags=P))
    assert led.create_transfers(resolve(11, 10, VOID, amount=100)) == (TR.ok,)


def test_a_pending_transfer_resolves_at_most_once(led):
    # transfer.md Guarantees: "A pending transfer resolves at most once."
    led.create_transfers(T(10, A, B, 100, flags=P), T(20, A, B, 5, flags=P))
    assert led.create_transfers(resolve(11, 10, POST), resolve(12, 10, VOID), resolve(13, 10, POST)) == (
        TR.ok,
        TR.pending_transfer_already_posted,
        TR.pending_transfer_already_posted,
    )
    assert led.create_transfers(resolve(21, 20, VOID)) == (TR.ok,)
    assert led.create_transfers(resolve(22, 20, POST)) == (TR.pending_transfer_already_voided,)
    assert led.balances(A) == (0, 100, 0, 0)


def test_post_and_void_in_one_transaction_see_each_other(led):
    assert led.create_transfers(T(10, A, B, 7, flags=P), resolve(11, 10, POST, amount=3)) == (TR.ok, TR.ok)
    assert led.balances(A) == (0, 3, 0, 0)


def test_only_the_debit_accounts_owner_may_resolve(led):
    led.create_transfers(T(10, A, B, 100, flags=P))
    assert led.create_transfers(resolve(11, 10, VOID), member=OTHER) == (TR.debit_account_not_owned,)
    assert led.status(10) == PendingStatus.pending


def test_retrying_a_post_is_exists(led):
    led.create_transfers(T(10, A, B, 100, flags=P))
    led.create_transfers(resolve(11, 10, POST, amount=40))
    assert led.create_transfers(resolve(11, 10, POST, amount=40)) == (TR.exists,)
    assert led.create_transfers(resolve(11, 10, POST, amount=40, debit_account_id=A)) == (TR.exists,)
    assert led.create_transfers(resolve(11, 10, POST, amount=41)) == (TR.exists_with_different_amount,)
    assert led.create_transfers(resolve(11, 10, VOID)) == (TR.exists_with_different_flags,)
    assert led.balances(A) == (0, 40, 0, 0)


def test_post_rejections_leave_the_pending_transfer_pending(led):
    led.create_transfers(T(10, A, B, 100, flags=P))
    assert led.create_transfers(resolve(11, 10, POST, amount=101)) == (TR.exceeds_pending_transfer_amount,)
    assert led.create_transfers(resolve(12, 10, VOID, amount=99)) == (TR.pending_transfer_has_different_amount,)
    assert led.create_transfers(resolve(13, 10, POST, timeout=1)) == (TR.timeout_reserved_for_pending_transfer,)
    assert led.status(10) == PendingStatus.pending
    assert led.balances(A) == (100, 0, 0, 0)


def test_pending_overflow_is_checked_against_pending_balances(led):
    assert led.create_transfers(T(10, A, B, U128_MAX, flags=P)) == (TR.ok,)
    assert led.create_transfers(resolve(11, 10, POST)) == (TR.ok,)
    assert led.balances(A) == (0, U128_MAX, 0, 0)


# -- expiry ---------------------------------------------------------------------------


def test_pending_transfer_expires_by_block_time(led):
    led.create_transfers(T(10, A, B, 100, flags=P, timeout=2))
    created = led.store.get_transfer(10).timestamp
    expires_at = created + 2 * NS
    assert led.store.expiring(expires_at) == [(expires_at, 10)]
    # A block before the deadline leaves it pending.
    led.block(ts=expires_at - 1)
    assert led.status(10) == PendingStatus.pending
    # The first block whose timestamp reaches the deadline expires it.
    led.block(ts=expires_at)
    assert led.status(10) == PendingStatus.expired
    assert led.balances(A) == (0, 0, 0, 0)
    assert led.balances(B) == (0, 0, 0, 0)
    assert led.store.expiring(1 << 64) == []
    assert led.create_transfers(resolve(11, 10, POST)) == (TR.pending_transfer_expired,)
    assert led.create_transfers(resolve(12, 10, VOID)) == (TR.pending_transfer_expired,)


def test_expiry_needs_no_transaction_and_no_local_clock(led):
    # An empty block (e.g. a leader's no-op carrying only its timestamp) expires transfers.
    led.create_transfers(T(10, A, B, 100, flags=P, timeout=1))
    led.advance(60)
    [] = led.block()
    assert led.status(10) == PendingStatus.expired
    assert led.ws.header.tx_count == 0


def test_expiry_adds_no_balance_history_row(led):
    # TigerBeetle get_account_balances.md: one balance per transfer, at the transfer's
    # timestamp; an expiry releases the reservation but records no history row.
    led.create_accounts(account(9, flags=AF.HISTORY))
    led.create_transfers(T(10, 9, B, 100, flags=P, timeout=1))
    prev_head = led.store.head().header.timestamp
    led.advance(2)
    led.block(transfers_tx(T(11, 9, C, 1)))
    assert led.balances(9)[0] == 0, "the reservation was not released"
    rows = [h for h in led.ws.history if h[0] == 9]
    assert len(rows) == 1 and rows[0][2].debits_posted == 1 and rows[0][2].debits_pending == 0
    assert prev_head < rows[0][1] < led.ws.header.timestamp


def test_posting_removes_the_expiry(led):
    led.create_transfers(T(10, A, B, 100, flags=P, timeout=1))
    assert led.create_transfers(resolve(11, 10, POST)) == (TR.ok,)
    assert led.store.expiring(1 << 64) == []
    led.advance(5)
    led.block()
    assert led.status(10) == PendingStatus.posted
    assert led.balances(A) == (0, 100, 0, 0)


def test_pending_without_timeout_never_expires(led):
    led.create_transfers(T(10, A, B, 100, flags=P))
    led.advance(10**6)
    led.block()
    assert led.status(10) == PendingStatus.pending


def test_many_expiries_in_one_block_on_the_same_account(led):
    led.create_transfers(*(T(10 + i, A, B, 10, flags=P, timeout=1 + i % 3) for i in range(9)))
    assert led.balances(A) == (90, 0, 0, 0)
    led.advance(10)
    led.block()
    assert led.balances(A) == (0, 0, 0, 0)
    assert all(led.status(10 + i) == PendingStatus.expired for i in range(9))
    assert_conserved(led.store.accounts.values())


# -- closing accounts -----------------------------------------------------------------


def test_closing_debit_closes_the_debit_account(led):
    assert led.create_transfers(T(10, A, B, 0, flags=P | TF.CLOSING_DEBIT)) == (TR.ok,)
    assert led.acct(A).flags & AF.CLOSED
    assert not led.acct(B).flags & AF.CLOSED
    assert led.create_transfers(T(11, A, C, 1)) == (TR.debit_account_already_closed,)
    assert led.create_transfers(T(12, C, A, 1)) == (TR.credit_account_already_closed,)
    assert led.create_transfers(T(13, C, B, 1)) == (TR.ok,)


def test_voiding_the_closing_transfer_reopens_the_account(led):
    # account.md flags.closed: "This flag can be unset by voiding the two-phase
    # pending transfer that closed the account."
    led.create_transfers(T(10, A, B, 5, flags=P | TF.CLOSING_DEBIT | TF.CLOSING_CREDIT))
    assert led.acct(A).flags & AF.CLOSED and led.acct(B).flags & AF.CLOSED
    assert led.create_transfers(resolve(11, 10, VOID)) == (TR.ok,)
    assert not led.acct(A).flags & AF.CLOSED and not led.acct(B).flags & AF.CLOSED
    assert led.balances(A) == (0, 0, 0, 0)
    assert led.create_transfers(T(12, A, B, 1)) == (TR.ok,)


def test_expiry_of_the_closing_transfer_reopens_the_account(led):
    led.create_transfers(T(10, A, B, 0, flags=P | TF.CLOSING_CREDIT, timeout=1))
    assert led.acct(B).flags & AF.CLOSED
    led.advance(2)
    led.block()
    assert led.status(10) == PendingStatus.expired
    assert not led.acct(B).flags & AF.CLOSED


def test_closed_account_rejects_posting_but_allows_voiding(led):
    # account.md flags.closed: "the account will reject further transfers,
    # except for voiding two-phase transfers that are still pending"
    # (state_machine.zig post_or_void_pending_transfer checks this for post only).
    led.create_transfers(T(10, A, B, 50, flags=P), T(20, C, A, 7, flags=P))
    led.create_transfers(T(30, A, C, 0, flags=P | TF.CLOSING_DEBIT))
    assert led.create_transfers(resolve(11, 10, POST)) == (TR.debit_account_already_closed,)
    assert led.create_transfers(resolve(21, 20, POST)) == (TR.credit_account_already_closed,)
    # The closing transfer itself cannot be posted either: its account is closed.
    assert led.create_transfers(resolve(31, 30, POST)) == (TR.debit_account_already_closed,)
    assert led.balances(A) == (50, 0, 7, 0)
    assert led.create_transfers(resolve(12, 10, VOID), resolve(22, 20, VOID)) == (TR.ok, TR.ok)
    assert led.balances(A) == (0, 0, 0, 0)
    assert led.acct(A).flags & AF.CLOSED


def test_pending_transfer_can_expire_in_a_closed_account(led):
    # state_machine.zig expire_pending_transfers: "Pending transfers can expire in closed accounts."
    led.create_transfers(T(10, A, B, 50, flags=P, timeout=1), T(30, A, C, 0, flags=P | TF.CLOSING_DEBIT))
    led.advance(2)
    led.block()
    assert led.status(10) == PendingStatus.expired
    assert led.balances(A) == (0, 0, 0, 0)
    assert led.acct(A).flags & AF.CLOSED


def test_account_created_closed_rejects_transfers():
    led = Ledger()
    led.block(accounts_tx(account(A, flags=AF.CLOSED), account(B)))
    assert led.create_transfers(T(10, A, B, 1, flags=P)) == (TR.debit_account_already_closed,)


# -- retries of a post/void under the same id (TigerBeetle state_machine.zig
#    post_or_void_pending_transfer_exists): fields the request left to the pending
#    transfer are compared as resolved, so an identical request is `exists` ----------


def test_retried_post_that_inherited_user_data_is_exists(led):
    # transfer.md user_data_*: a post/void with zero user_data takes the pending transfer's.
    led.create_transfers(T(10, A, B, 100, flags=P, user_data_128=5, user_data_64=6, user_data_32=7))
    assert led.create_transfers(resolve(11, 10, POST)) == (TR.ok,)
    posted = led.store.get_transfer(11)
    assert (posted.user_data_128, posted.user_data_64, posted.user_data_32) == (5, 6, 7)
    # A new envelope with the same request (e.g. a client that re-signs on retry).
    assert led.create_transfers(resolve(11, 10, POST)) == (TR.exists,)
    assert led.create_transfers(resolve(11, 10, POST, user_data_64=6)) == (TR.exists,)
    assert led.create_transfers(resolve(11, 10, POST, user_data_128=9)) == (TR.exists_with_different_user_data_128,)
    assert led.create_transfers(resolve(11, 10, POST, user_data_64=9)) == (TR.exists_with_different_user_data_64,)
    assert led.create_transfers(resolve(11, 10, POST, user_data_32=9)) == (TR.exists_with_different_user_data_32,)
    assert led.balances(A) == (0, 100, 0, 0)


def test_retried_post_with_own_user_data_must_repeat_it(led):
    led.create_transfers(T(10, A, B, 100, flags=P, user_data_32=7))
    assert led.create_transfers(resolve(11, 10, POST, user_data_32=8)) == (TR.ok,)
    assert led.store.get_transfer(11).user_data_32 == 8
    assert led.create_transfers(resolve(11, 10, POST, user_data_32=8)) == (TR.exists,)
    # Zero now means "the pending transfer's" (7), which is not what was stored.
    assert led.create_transfers(resolve(11, 10, POST)) == (TR.exists_with_different_user_data_32,)


def test_retried_post_of_the_full_amount_with_amount_max_is_exists(led):
    # transfer.md amount: AMOUNT_MAX (2^128 - 1) posts the pending transfer's amount.
    led.create_transfers(T(10, A, B, 100, flags=P))
    assert led.create_transfers(resolve(11, 10, POST, amount=U128_MAX)) == (TR.ok,)
    assert led.store.get_transfer(11).amount == 100
    assert led.create_transfers(resolve(11, 10, POST, amount=U128_MAX)) == (TR.exists,)
    assert led.create_transfers(resolve(11, 10, POST, amount=100)) == (TR.exists,)
    assert led.create_transfers(resolve(11, 10, POST)) == (TR.exists,)  # 0 also means full here
    assert led.create_transfers(resolve(11, 10, POST, amount=99)) == (TR.exists_with_different_amount,)


def test_retried_partial_post_with_a_full_amount_sentinel_is_a_different_amount(led):
    led.create_transfers(T(10, A, B, 100, flags=P))
    assert led.create_transfers(resolve(11, 10, POST, amount=40)) == (TR.ok,)
    assert led.create_transfers(resolve(11, 10, POST)) == (TR.exists_with_different_amount,)
    assert led.create_transfers(resolve(11, 10, POST, amount=U128_MAX)) == (TR.exists_with_different_amount,)
    assert led.create_transfers(resolve(11, 10, POST, amount=40)) == (TR.exists,)


def test_retried_void_is_exists_whether_or_not_it_states_the_amount(led):
    led.create_transfers(T(10, A, B, 100, flags=P, user_data_64=3))
    assert led.create_transfers(resolve(11, 10, VOID)) == (TR.ok,)
    assert led.create_transfers(resolve(11, 10, VOID)) == (TR.exists,)
    assert led.create_transfers(resolve(11, 10, VOID, amount=100, debit_account_id=A, credit_account_id=B, ledger=1, code=1)) == (
        TR.exists,
    )
    assert led.create_transfers(resolve(11, 10, VOID, amount=50)) == (TR.exists_with_different_amount,)
    assert led.create_transfers(resolve(11, 10, VOID, debit_account_id=C)) == (TR.exists_with_different_debit_account_id,)
    assert led.create_transfers(resolve(11, 10, VOID, credit_account_id=C)) == (TR.exists_with_different_credit_account_id,)
    assert led.create_transfers(resolve(11, 10, VOID, ledger=2)) == (TR.exists_with_different_ledger,)
    assert led.create_transfers(resolve(11, 10, VOID, code=2)) == (TR.exists_with_different_code,)
    assert led.balances(A) == (0, 0, 0, 0)


def test_retried_post_naming_another_pending_transfer_is_a_different_pending_id(led):
    led.create_transfers(T(10, A, B, 100, flags=P), T(20, A, B, 100, flags=P))
    led.create_transfers(resolve(11, 10, POST))
    assert led.create_transfers(resolve(11, 20, POST)) == (TR.exists_with_different_pending_id,)
    assert led.status(20) == PendingStatus.pending


@pytest.mark.parametrize("resolution", [POST, VOID], ids=["post", "void"])
def test_pending_transfer_resolved_in_its_own_block_leaves_no_expiry_entry(led, resolution):
    # The block's WriteSet both adds and removes the expiry key; the removal must win.
    assert led.create_transfers(T(10, A, B, 100, flags=P, timeout=1), resolve(11, 10, resolution)) == (TR.ok, TR.ok)
    assert (10 in {tid for _, tid in led.ws.expiry_put}) and (10 in {tid for _, tid in led.ws.expiry_delete})
    assert led.store.expiring(1 << 64) == []
