"""create_accounts in the pure core: one test per result code apply.py can produce.

Semantics and precedence follow TigerBeetle (docs/reference/account.md and
docs/reference/requests/create_accounts.md, "Result" section: codes are listed in
order of precedence). ``linked_event_failed`` and ``linked_event_chain_open`` are
covered in test_linked.py.

CreateAccountResult values apply.py cannot produce:
  * ``imported_event_expected`` / ``imported_event_not_expected``: imported
    events are not supported; ``flags.imported`` is outside ACCOUNT_FLAGS_KNOWN
    and is answered with ``reserved_flag`` (tested below).
  * ``reserved_field``: our Account has no reserved field.
"""
from __future__ import annotations

import pytest

from helpers import MEMBER, OTHER, U128_MAX, Ledger, account, accounts_tx, configuration
from raft_ledger_node.store_memory import MemoryStore
from raft_ledger_node.ledger.types import AccountFlags as AF, CreateAccountResult as AR


def test_created_account_is_owned_by_the_signer_and_stamped_by_the_ledger():
    led = Ledger()
    [r] = led.block(accounts_tx(account(7, ledger=840, code=10, user_data_128=5, user_data_64=6, user_data_32=7, owner="forged")))
    assert r.codes == (AR.ok,)
    a = led.acct(7)
    # The owner is the member that signed, never what the event claims.
    assert a.owner == MEMBER
    assert (a.ledger, a.code, a.user_data_128, a.user_data_64, a.user_data_32) == (840, 10, 5, 6, 7)
    assert (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted) == (0, 0, 0, 0)
    # The timestamp is assigned from the block (TigerBeetle: set by the cluster), before the block's own.
    assert led.store.head().header.timestamp - 1 == a.timestamp
    assert a.timestamp > 0


def test_linked_flag_is_not_stored():
    led = Ledger()
    assert led.create_accounts(account(1, flags=AF.LINKED), account(2)) == (AR.ok, AR.ok)
    assert led.acct(1).flags == 0


def test_every_event_gets_its_own_timestamp_in_order():
    led = Ledger()
    assert led.create_accounts(account(1), account(2), account(3)) == (AR.ok,) * 3
    ts = [led.acct(i).timestamp for i in (1, 2, 3)]
    assert ts == sorted(ts) and len(set(ts)) == 3
    assert ts[2] < led.store.head().header.timestamp


def test_a_rejected_account_writes_nothing():
    led = Ledger()
    assert led.create_accounts(account(1, ledger=0)) == (AR.ledger_must_not_be_zero,)
    assert led.store.get_account(1) is None
    assert led.ws.accounts == {}


def _fresh(event):
    return lambda led: led.create_accounts(event)


def _existing(existing, event, member=MEMBER):
    def run(led):
        assert led.create_accounts(existing) == (AR.ok,)
        return led.create_accounts(event, member=member)

    return run


def _governed(event):
    """``event`` by MEMBER on a ledger bound to a configuration in which nobody issues ledger 1."""
    return lambda _led: Ledger(MemoryStore(configuration())).create_accounts(event)


# One case per result code that create_account can return for a single event.
CASES = {
    AR.ok: _fresh(account(1)),
    AR.timestamp_must_be_zero: _fresh(account(1, timestamp=1)),
    AR.reserved_flag: _fresh(account(1, flags=1 << 6)),
    AR.id_must_not_be_zero: _fresh(account(0)),
    AR.id_must_not_be_int_max: _fresh(account(U128_MAX)),
    AR.exists_with_different_owner: _existing(account(1), account(1), member=OTHER),
    AR.exists_with_different_flags: _existing(account(1), account(1, flags=AF.HISTORY)),
    AR.exists_with_different_user_data_128: _existing(account(1), account(1, user_data_128=1)),
    AR.exists_with_different_user_data_64: _existing(account(1), account(1, user_data_64=1)),
    AR.exists_with_different_user_data_32: _existing(account(1), account(1, user_data_32=1)),
    AR.exists_with_different_ledger: _existing(account(1), account(1, ledger=2)),
    AR.exists_with_different_code: _existing(account(1), account(1, code=2)),
    AR.exists: _existing(account(1, user_data_64=9), account(1, user_data_64=9)),
    AR.flags_are_mutually_exclusive: _fresh(
        account(1, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CREDITS_MUST_NOT_EXCEED_DEBITS)
    ),
    AR.credits_must_not_exceed_debits_reserved_for_issuer: _governed(account(1, flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS)),
    AR.debits_pending_must_be_zero: _fresh(account(1, debits_pending=1)),
    AR.debits_posted_must_be_zero: _fresh(account(1, debits_posted=1)),
    AR.credits_pending_must_be_zero: _fresh(account(1, credits_pending=1)),
    AR.credits_posted_must_be_zero: _fresh(account(1, credits_posted=1)),
    AR.ledger_must_not_be_zero: _fresh(account(1, ledger=0)),
    AR.code_must_not_be_zero: _fresh(account(1, code=0)),
}

LINKED_CODES = {AR.linked_event_failed, AR.linked_event_chain_open}  # test_linked.py
NOT_PRODUCIBLE = {AR.imported_event_expected, AR.imported_event_not_expected, AR.reserved_field}


def test_every_result_code_is_covered():
    assert set(CASES) | LINKED_CODES | NOT_PRODUCIBLE == set(AR)


@pytest.mark.parametrize("code", list(CASES), ids=lambda c: c.name)
def test_result_code(code):
    led = Ledger()
    assert CASES[code](led) == (code,)


def test_imported_flag_is_a_reserved_flag():
    led = Ledger()
    assert led.create_accounts(account(1, flags=AF.IMPORTED)) == (AR.reserved_flag,)


def test_exists_leaves_the_original_untouched():
    led = Ledger()
    led.create_accounts(account(1, user_data_32=1))
    before = led.acct(1)
    assert led.create_accounts(account(1, user_data_32=2)) == (AR.exists_with_different_user_data_32,)
    assert led.acct(1) == before
    assert led.ws.accounts == {}


def test_exists_ignores_linked_and_closed_flags():
    # LINKED is a property of the request, CLOSED of the account's life: neither
    # makes a retry of the creation a different account.
    led = Ledger()
    assert led.create_accounts(account(1, flags=AF.LINKED), account(2)) == (AR.ok, AR.ok)
    assert led.create_accounts(account(1)) == (AR.exists,)
    assert led.create_accounts(account(3, flags=AF.CLOSED)) == (AR.ok,)
    assert led.create_accounts(account(3)) == (AR.exists,)


def test_same_id_twice_in_one_transaction():
    led = Ledger()
    assert led.create_accounts(account(1), account(1), account(1, code=2)) == (
        AR.ok,
        AR.exists,
        AR.exists_with_different_code,
    )


def test_same_id_in_two_transactions_of_one_block():
    led = Ledger()
    r1, r2, r3 = led.block(accounts_tx(account(1)), accounts_tx(account(1)), accounts_tx(account(1), member=OTHER))
    assert (r1.codes, r2.codes, r3.codes) == ((AR.ok,), (AR.exists,), (AR.exists_with_different_owner,))
    assert led.acct(1).owner == MEMBER


# -- precedence (TigerBeetle: only the first applicable result is returned) ---------


@pytest.mark.parametrize(
    "event, code",
    [
        (account(0, timestamp=1, flags=1 << 7), AR.timestamp_must_be_zero),
        (account(0, flags=1 << 7), AR.reserved_flag),
        (account(0, ledger=0, code=0), AR.id_must_not_be_zero),
        (account(1, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CREDITS_MUST_NOT_EXCEED_DEBITS, debits_posted=1), AR.flags_are_mutually_exclusive),
        (account(1, debits_posted=1, credits_pending=1, ledger=0), AR.debits_posted_must_be_zero),
        (account(1, ledger=0, code=0), AR.ledger_must_not_be_zero),
    ],
    ids=lambda v: v.name if isinstance(v, AR) else "",
)
def test_precedence(event, code):
    assert Ledger().create_accounts(event) == (code,)


def test_exists_takes_precedence_over_field_validation():
    # An existing id is reported as such even if the request is otherwise invalid
    # (TigerBeetle checks `exists` right after the id checks).
    led = Ledger()
    led.create_accounts(account(1))
    assert led.create_accounts(account(1, debits_posted=5)) == (AR.exists,)
    assert led.create_accounts(account(1, ledger=0)) == (AR.exists_with_different_ledger,)
