"""Linked chains: all events of a chain succeed or none does.

TigerBeetle docs/reference/transfer.md and account.md (flags.linked): "When set,
the event is linked to the next event in the batch; if any event in the chain
fails, they all fail"; requests/create_transfers.md "linked_event_failed" and
"linked_event_chain_open" (the last event of a batch must not be linked). Here a
batch is one signed transaction.
"""
from __future__ import annotations

import pytest

from helpers import MEMBER, Ledger, account, accounts_tx, assert_conserved, resolve, transfer, transfers_tx
from raft_ledger_node.ledger.types import AccountFlags as AF, CreateAccountResult as AR, CreateTransferResult as TR, TransferFlags as TF

T = transfer
L = TF.LINKED
A, B, C, MISSING = 1, 2, 3, 99


@pytest.fixture
def led() -> Ledger:
    led = Ledger()
    assert led.create_accounts(account(A), account(B), account(C)) == (0, 0, 0)
    return led


def test_chain_that_succeeds_applies_every_event(led):
    assert led.create_transfers(T(10, A, B, 1, flags=L), T(11, B, C, 2, flags=L), T(12, C, A, 3)) == (TR.ok,) * 3
    assert led.balances(A) == (0, 1, 0, 3)
    assert all(led.store.get_transfer(i).flags == 0 for i in (10, 11, 12))


def test_failure_in_the_middle_fails_the_whole_chain_and_only_it(led):
    codes = led.create_transfers(
        T(9, A, B, 100),  # before the chain: independent
        T(10, A, B, 1, flags=L),
        T(11, A, MISSING, 2, flags=L),
        T(12, B, C, 3),  # last event of the chain
        T(13, C, A, 4),  # after the chain: independent
    )
    assert codes == (TR.ok, TR.linked_event_failed, TR.credit_account_not_found, TR.linked_event_failed, TR.ok)
    assert led.store.get_transfer(10) is None and led.store.get_transfer(12) is None
    assert led.balances(A) == (0, 100, 0, 4)
    assert led.balances(B) == (0, 0, 0, 100)
    assert led.balances(C) == (0, 4, 0, 0)
    assert_conserved(led.store.accounts.values())


def test_a_failed_chain_stays_rolled_back_when_an_unlinked_event_and_a_chain_follow(led):
    # Found by the SDK's coalescing tests: the unlinked event restored the chain layer
    # captured before the loop (the failed chain's), and the next chain's commit merged
    # the failed chain's transfer record into the block with no balance change.
    codes = led.create_transfers(
        T(1, A, B, 1, flags=L),
        T(2, A, MISSING, 1),  # fails the first chain
        T(3, A, B, 2),  # unlinked
        T(4, A, B, 3, flags=L),
        T(5, B, C, 4),  # a chain that succeeds
    )
    assert codes == (TR.linked_event_failed, TR.credit_account_not_found, TR.ok, TR.ok, TR.ok)
    assert led.store.get_transfer(1) is None and led.store.get_transfer(2) is None
    assert [led.store.get_transfer(i) is not None for i in (3, 4, 5)] == [True, True, True]
    assert led.balances(A) == (0, 5, 0, 0)
    assert_conserved(led.store.accounts.values())


def test_failure_at_the_first_event(led):
    assert led.create_transfers(T(10, A, A, 1, flags=L), T(11, A, B, 1)) == (TR.accounts_must_be_different, TR.linked_event_failed)
    assert led.store.get_transfer(11) is None


def test_failure_at_the_last_event_rolls_back_earlier_balance_changes(led):
    led.create_transfers(T(9, A, B, 10))
    assert led.create_transfers(T(10, A, B, 5, flags=L), T(11, B, A, 5, flags=L), T(12, A, B, 1, ledger=0)) == (
        TR.linked_event_failed,
        TR.linked_event_failed,
        TR.ledger_must_not_be_zero,
    )
    assert led.balances(A) == (0, 10, 0, 0)
    assert led.balances(B) == (0, 0, 0, 10)
    assert led.ws.transfers == {} and led.ws.accounts == {} and led.ws.account_transfers == []


def test_events_in_a_chain_see_earlier_events_of_the_chain(led):
    # The second event depends on the first (the pending transfer it posts).
    assert led.create_transfers(T(10, A, B, 5, flags=L | TF.PENDING), resolve(11, 10, TF.POST_PENDING_TRANSFER)) == (TR.ok, TR.ok)
    assert led.balances(B) == (0, 0, 0, 5)


def test_a_rolled_back_chain_leaves_no_pending_state(led):
    assert led.create_transfers(T(10, A, B, 5, flags=L | TF.PENDING, timeout=1), T(11, A, MISSING, 1)) == (
        TR.linked_event_failed,
        TR.credit_account_not_found,
    )
    assert led.status(10) == 0
    assert led.store.expiring(1 << 64) == []
    assert led.balances(A) == (0, 0, 0, 0)


def test_chain_open_at_the_end_of_a_transaction(led):
    assert led.create_transfers(T(9, A, B, 1), T(10, A, B, 1, flags=L), T(11, A, B, 1, flags=L)) == (
        TR.ok,
        TR.linked_event_failed,
        TR.linked_event_chain_open,
    )
    assert led.store.get_transfer(10) is None and led.store.get_transfer(11) is None
    assert led.balances(A) == (0, 1, 0, 0)


def test_open_chain_reports_the_first_failure_with_its_own_code(led):
    # state_machine.zig execute_create: the events of an open chain are applied in
    # order like any chain; the first failure keeps its code, the last event is
    # linked_event_chain_open, everything else linked_event_failed.
    assert led.create_transfers(T(10, A, B, 1, flags=L), T(11, A, A, 1, flags=L), T(12, A, B, 1, flags=L)) == (
        TR.linked_event_failed,
        TR.accounts_must_be_different,
        TR.linked_event_chain_open,
    )
    assert led.create_transfers(T(13, A, A, 1, flags=L), T(14, A, B, 1, flags=L)) == (
        TR.accounts_must_be_different,
        TR.linked_event_chain_open,
    )
    assert all(led.store.get_transfer(i) is None for i in range(10, 15))
    assert led.balances(A) == (0, 0, 0, 0)


def test_open_chain_rolls_back_events_that_succeeded(led):
    assert led.create_transfers(T(10, A, B, 5, flags=L | TF.PENDING, timeout=1), T(11, B, C, 1, flags=L)) == (
        TR.linked_event_failed,
        TR.linked_event_chain_open,
    )
    assert led.store.get_transfer(10) is None and led.status(10) == 0
    assert led.store.expiring(1 << 64) == []
    assert led.ws.transfers == {} and led.ws.accounts == {} and led.ws.account_transfers == []
    # Ids of rolled-back events stay free.
    assert led.create_transfers(T(10, A, B, 5), T(11, B, C, 1)) == (TR.ok, TR.ok)


def test_transient_failure_in_an_open_chain_burns_the_id(led):
    # The failing event ran, so its transient failure is recorded (id_already_failed).
    assert led.create_transfers(T(10, A, MISSING, 1, flags=L), T(11, A, B, 1, flags=L)) == (
        TR.credit_account_not_found,
        TR.linked_event_chain_open,
    )
    assert led.store.get_failed_transfer(MEMBER, 10) == TR.credit_account_not_found
    assert led.store.get_failed_transfer(MEMBER, 11) is None
    assert led.create_transfers(T(10, A, B, 1), T(11, A, B, 1)) == (TR.id_already_failed, TR.ok)


def test_single_linked_event_is_an_open_chain(led):
    assert led.create_transfers(T(10, A, B, 1, flags=L)) == (TR.linked_event_chain_open,)


def test_chains_do_not_span_transactions(led):
    r1, r2 = led.block(transfers_tx(T(10, A, B, 1, flags=L)), transfers_tx(T(11, A, B, 1)))
    assert r1.codes == (TR.linked_event_chain_open,)
    assert r2.codes == (TR.ok,)


def test_transient_failure_in_a_chain_poisons_only_the_failing_id(led):
    assert led.create_transfers(T(10, A, B, 1, flags=L), T(11, A, MISSING, 1)) == (TR.linked_event_failed, TR.credit_account_not_found)
    assert led.store.get_failed_transfer(MEMBER, 11) == TR.credit_account_not_found
    assert led.store.get_failed_transfer(MEMBER, 10) is None
    # The rolled-back event's id is free to use; the failing one is not.
    assert led.create_transfers(T(10, A, B, 1), T(11, A, B, 1)) == (TR.ok, TR.id_already_failed)


def test_two_chains_in_one_transaction_are_independent(led):
    assert led.create_transfers(
        T(10, A, B, 1, flags=L), T(11, A, B, 0, ledger=0), T(12, A, B, 2, flags=L), T(13, A, C, 3)
    ) == (TR.linked_event_failed, TR.ledger_must_not_be_zero, TR.ok, TR.ok)
    assert led.balances(A) == (0, 5, 0, 0)


# -- accounts ---------------------------------------------------------------------------


def test_account_chain_all_or_nothing():
    led = Ledger()
    assert led.create_accounts(account(1, flags=AF.LINKED), account(2, flags=AF.LINKED), account(3, ledger=0)) == (
        AR.linked_event_failed,
        AR.linked_event_failed,
        AR.ledger_must_not_be_zero,
    )
    assert led.store.accounts == {}
    assert led.create_accounts(account(1, flags=AF.LINKED), account(2)) == (AR.ok, AR.ok)


def test_account_open_chain_reports_the_failing_event():
    led = Ledger()
    assert led.create_accounts(account(1, flags=AF.LINKED), account(2, ledger=0, flags=AF.LINKED), account(3, flags=AF.LINKED)) == (
        AR.linked_event_failed,
        AR.ledger_must_not_be_zero,
        AR.linked_event_chain_open,
    )
    assert led.store.accounts == {}


def test_account_chain_open():
    led = Ledger()
    assert led.create_accounts(account(1), account(2, flags=AF.LINKED)) == (AR.ok, AR.linked_event_chain_open)
    assert led.store.get_account(2) is None


def test_rolled_back_account_is_free_for_a_later_transaction_in_the_block():
    led = Ledger()
    r1, r2 = led.block(
        accounts_tx(account(1, flags=AF.LINKED), account(1, code=2)),
        accounts_tx(account(1, code=3)),
    )
    # Inside the chain the second event sees the first (exists_with_different_code);
    # the chain fails, so account 1 is still free for the next transaction.
    assert r1.codes == (AR.linked_event_failed, AR.exists_with_different_code)
    assert r2.codes == (AR.ok,)
    assert led.acct(1).code == 3


def test_accounts_created_in_a_chain_can_be_used_by_the_next_transaction_of_the_block():
    led = Ledger()
    r1, r2 = led.block(
        accounts_tx(account(1, flags=AF.LINKED), account(2)),
        transfers_tx(T(10, 1, 2, 5)),
    )
    assert (r1.codes, r2.codes) == ((AR.ok, AR.ok), (TR.ok,))
    assert led.balances(2) == (0, 0, 0, 5)
