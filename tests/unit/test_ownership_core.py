"""Ownership and issuance in the pure core: the four attacks of issue 11, each refused.

Documented deviations from TigerBeetle, which has no owners or issuers
(node/ledger/types.py, CreateAccountResult and CreateTransferResult docstrings):
``exists_with_different_owner`` (accounts and transfers), ``credit_account_not_owned``
(``closing_credit``), failed transfer ids recorded per (member, id), and issuance
(only an issuer's account may carry a debit balance; every other member's account is
stored with ``debits_must_not_exceed_credits``). Each test asserts the specific code
and that nothing was applied. The same attacks through the gRPC API of a running
cluster: tests/integration/test_ownership.py.
"""
from __future__ import annotations

import pytest

from helpers import MEMBER, OTHER, Ledger, account, accounts_tx, configuration, resolve, transfer, transfers_tx
from raft_ledger_node.ledger.types import (
    AccountFlags as AF,
    CreateAccountResult as AR,
    CreateTransferResult as TR,
    PendingStatus,
    TransferFlags as TF,
)
from raft_ledger_node.store_memory import MemoryStore

T = transfer
P, POST, VOID = TF.PENDING, TF.POST_PENDING_TRANSFER, TF.VOID_PENDING_TRANSFER
USD, EUR = 840, 978
ISSUER = "central-bank"
A, B = MEMBER, OTHER  # bank A (the attacker) and bank B (the victim)


def _governed() -> Ledger:
    """A ledger whose configuration makes ISSUER the only issuer of USD (none of EUR)."""
    return Ledger(MemoryStore(configuration({USD: [ISSUER]}, members=(A, B, ISSUER))))


def _funded() -> Ledger:
    """A owns 1 and 11, B owns 2 and 12, the issuer owns 9 (the mint); B's 2 holds 100."""
    led = _governed()
    r = led.block(
        accounts_tx(account(1, ledger=USD), account(11, ledger=USD), member=A),
        accounts_tx(account(2, ledger=USD), account(12, ledger=USD), member=B),
        accounts_tx(account(9, ledger=USD), member=ISSUER),
    )
    assert [x.codes for x in r] == [(AR.ok, AR.ok), (AR.ok, AR.ok), (AR.ok,)]
    assert led.create_transfers(T(1000, 9, 2, 100, ledger=USD), T(1001, 9, 1, 100, ledger=USD), member=ISSUER) == (TR.ok, TR.ok)
    return led


# -- 1. squatting an account id -------------------------------------------------------


@pytest.mark.parametrize(
    "request_", [account(2005, ledger=USD), account(2005, ledger=EUR, code=7, user_data_64=3)], ids=["same", "different"]
)
def test_squatted_account_id_answers_exists_with_different_owner(request_):
    led = _funded()
    assert led.create_accounts(account(2005, ledger=USD), member=A) == (AR.ok,)
    before = led.acct(2005)
    # Never `exists` (which clients treat as success), and nothing else about A's
    # account: the same code whatever fields B asks for.
    assert led.create_accounts(request_, member=B) == (AR.exists_with_different_owner,)
    assert led.ws.accounts == {} and led.acct(2005) == before and before.owner == A
    # B's funds stay in B's account; A cannot drain what B never moved.
    assert led.balances(2) == (0, 0, 0, 100)
    assert led.create_transfers(T(3000, 2005, 1, 1, ledger=USD), member=B) == (TR.debit_account_not_owned,)


def test_owner_check_precedes_every_other_exists_comparison():
    led = Ledger()
    assert led.create_accounts(account(5, flags=AF.HISTORY)) == (AR.ok,)
    assert led.create_accounts(account(5), member=OTHER) == (AR.exists_with_different_owner,)
    assert led.create_accounts(account(5, debits_posted=1, ledger=0), member=OTHER) == (AR.exists_with_different_owner,)
    # The owner's own retry keeps TigerBeetle's answers.
    assert led.create_accounts(account(5)) == (AR.exists_with_different_flags,)
    assert led.create_accounts(account(5, flags=AF.HISTORY)) == (AR.exists,)


# -- 2. freezing another member's account -----------------------------------------------


def test_closing_credit_of_another_members_account_is_refused():
    led = _funded()
    before = (led.acct(1), led.acct(2))
    for timeout in (0, 60):
        code = led.create_transfers(T(4000 + timeout, 1, 2, 0, ledger=USD, flags=P | TF.CLOSING_CREDIT, timeout=timeout), member=A)
        assert code == (TR.credit_account_not_owned,)
        assert led.ws.accounts == {} and led.ws.transfers == {}
    assert (led.acct(1), led.acct(2)) == before and not led.acct(2).flags & AF.CLOSED
    # B can still move its money.
    assert led.create_transfers(T(4100, 2, 12, 10, ledger=USD), member=B) == (TR.ok,)


def test_closing_credit_of_own_account_still_works_and_void_reopens_it():
    led = _funded()
    assert led.create_transfers(T(4200, 1, 11, 0, ledger=USD, flags=P | TF.CLOSING_CREDIT), member=A) == (TR.ok,)
    assert led.acct(11).flags & AF.CLOSED
    assert led.create_transfers(resolve(4201, 4200, VOID), member=A) == (TR.ok,)
    assert not led.acct(11).flags & AF.CLOSED


def test_closing_debit_of_another_members_account_is_refused():
    led = _funded()
    before = led.acct(2)
    assert led.create_transfers(T(4300, 2, 1, 0, ledger=USD, flags=P | TF.CLOSING_DEBIT), member=A) == (TR.debit_account_not_owned,)
    assert led.acct(2) == before


@pytest.mark.parametrize("flag", [POST, VOID], ids=["post", "void"])
def test_post_or_void_of_another_members_pending_transfer_is_refused(flag):
    led = _funded()
    # B's pending transfer out of its own account, closing it (B may close its own).
    assert led.create_transfers(T(4400, 2, 1, 30, ledger=USD, flags=P | TF.CLOSING_DEBIT), member=B) == (TR.ok,)
    before = (led.acct(1), led.acct(2))
    assert led.create_transfers(resolve(4401, 4400, flag), member=A) == (TR.debit_account_not_owned,)
    assert led.ws.accounts == {} and led.status(4400) == PendingStatus.pending
    assert (led.acct(1), led.acct(2)) == before
    # A void by A would have reopened B's account; B's own void does.
    assert led.acct(2).flags & AF.CLOSED
    assert led.create_transfers(resolve(4402, 4400, VOID), member=B) == (TR.ok,)
    assert not led.acct(2).flags & AF.CLOSED


# -- 3. minting ---------------------------------------------------------------------------


def test_non_issuer_account_is_created_with_debits_must_not_exceed_credits():
    led = _governed()
    assert led.create_accounts(account(20, ledger=USD, flags=AF.HISTORY), member=A) == (AR.ok,)
    assert led.acct(20).flags == AF.HISTORY | AF.DEBITS_MUST_NOT_EXCEED_CREDITS
    # An identical retry is still `exists`: the comparison adds the forced flag too.
    assert led.create_accounts(account(20, ledger=USD, flags=AF.HISTORY), member=A) == (AR.exists,)
    assert led.create_accounts(account(20, ledger=USD, flags=AF.HISTORY | AF.DEBITS_MUST_NOT_EXCEED_CREDITS), member=A) == (AR.exists,)
    # The issuer of USD is not an issuer of EUR.
    assert led.create_accounts(account(21, ledger=EUR), member=ISSUER) == (AR.ok,)
    assert led.acct(21).flags == AF.DEBITS_MUST_NOT_EXCEED_CREDITS


def test_minting_by_a_non_issuer_is_refused():
    led = _funded()
    assert led.create_accounts(account(30, ledger=USD), member=A) == (AR.ok,)
    before = (led.acct(30), led.acct(2))
    # Mint and push it into B's account: refused (overflow checks come first in
    # TigerBeetle's order, so the amount stays below them), B's account can still be credited.
    assert led.create_transfers(T(5000, 30, 2, 10**30, ledger=USD), member=A) == (TR.exceeds_credits,)
    assert (led.acct(30), led.acct(2)) == before
    assert led.create_transfers(T(5001, 9, 2, 1, ledger=USD), member=ISSUER) == (TR.ok,)


def test_credits_must_not_exceed_debits_is_reserved_for_issuers():
    led = _governed()
    cmned = account(40, ledger=USD, flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS)
    assert led.create_accounts(cmned, member=A) == (AR.credits_must_not_exceed_debits_reserved_for_issuer,)
    assert led.store.get_account(40) is None
    # Both flags: TigerBeetle's own check comes first.
    both = account(41, ledger=USD, flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS | AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    assert led.create_accounts(both, member=A) == (AR.flags_are_mutually_exclusive,)
    # An issuer may hold one, and an account without flags that goes negative.
    assert led.create_accounts(cmned, account(42, ledger=USD), member=ISSUER) == (AR.ok, AR.ok)
    assert led.acct(40).flags == AF.CREDITS_MUST_NOT_EXCEED_DEBITS and led.acct(42).flags == 0


def test_without_a_configuration_no_issuance_rule():
    # Plain TigerBeetle semantics: a store never bound to a genesis.
    led = Ledger()
    assert led.create_accounts(account(1), account(2, flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS)) == (AR.ok, AR.ok)
    assert led.acct(1).flags == 0


# -- 4. burning another member's ids ------------------------------------------------------


def test_a_failed_id_of_one_member_does_not_burn_it_for_another():
    led = _funded()
    assert led.create_transfers(T(70000, 1, 2, 10**6, ledger=USD), member=A) == (TR.exceeds_credits,)
    assert led.store.get_failed_transfer(A, 70000) == TR.exceeds_credits
    assert led.store.get_failed_transfer(B, 70000) is None
    assert led.create_transfers(T(70000, 2, 12, 50, ledger=USD), member=B) == (TR.ok,)
    assert led.balances(2) == (0, 50, 0, 100) and led.balances(12) == (0, 0, 0, 50)
    # A's retry sees a transfer it did not create: neither `exists` nor its fields.
    before = led.balances(1)
    assert led.create_transfers(T(70000, 1, 2, 10**6, ledger=USD), member=A) == (TR.exists_with_different_owner,)
    assert led.create_transfers(T(70000, 2, 12, 50, ledger=USD), member=A) == (TR.exists_with_different_owner,)
    assert led.balances(1) == before and led.ws.transfers == {}
    # B's retry is idempotent as ever.
    assert led.create_transfers(T(70000, 2, 12, 50, ledger=USD), member=B) == (TR.exists,)


def test_own_failed_id_still_answers_id_already_failed():
    led = _funded()
    assert led.create_transfers(T(71000, 1, 99, 1, ledger=USD), member=A) == (TR.credit_account_not_found,)
    assert led.create_transfers(T(71000, 1, 2, 1, ledger=USD), member=A) == (TR.id_already_failed,)


def test_failed_ids_of_two_members_in_one_block_are_kept_apart():
    led = _funded()
    r = led.block(
        transfers_tx(T(72000, 1, 99, 1, ledger=USD), member=A),
        transfers_tx(T(72000, 2, 99, 1, ledger=USD), member=B),
        transfers_tx(T(72000, 2, 12, 1, ledger=USD), member=B),
    )
    assert [x.codes for x in r] == [(TR.credit_account_not_found,), (TR.credit_account_not_found,), (TR.id_already_failed,)]
    assert led.ws.failed_transfers == {(A, 72000): TR.credit_account_not_found, (B, 72000): TR.credit_account_not_found}


def test_post_of_another_members_id_answers_exists_with_different_owner():
    led = _funded()
    assert led.create_transfers(T(73000, 2, 1, 5, ledger=USD, flags=P), resolve(73001, 73000, POST), member=B) == (TR.ok, TR.ok)
    assert led.create_transfers(resolve(73001, 73000, POST), member=A) == (TR.exists_with_different_owner,)
    assert led.create_transfers(resolve(73001, 73000, POST), member=B) == (TR.exists,)


def test_the_failing_member_is_part_of_the_state_hash():
    # Two replicas where the same id failed for different members must not agree.
    hashes = []
    for member, debit in ((A, 1), (B, 2)):
        led = _funded()
        led.create_transfers(T(74000, debit, 99, 1, ledger=USD), member=member)
        hashes.append(led.store.head().header.state_hash)
    assert hashes[0] != hashes[1]
