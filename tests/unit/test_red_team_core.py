"""Red-team findings fixed in the pure core (tests/integration/test_red_team.py tries the
same attacks through the gRPC API of a running cluster).

- ``balancing_credit`` into another member's account clamped the amount to that
  account's net debit balance and stored it in a transfer the attacker reads back: a
  read of another member's balance. Now ``credit_account_not_owned``, as for
  ``closing_credit`` (documented deviation, node/ledger/types.py).
- A post/void naming another member's settled transfer answered
  ``pending_transfer_not_pending`` and a pending one ``debit_account_not_owned``:
  the code told the attacker which of another member's transfers were pending. Now
  ownership comes first.
"""
from __future__ import annotations

from helpers import Ledger, resolve, transfer
from test_ownership_core import A, B, POST, USD, VOID, _funded
from raft_ledger_node.ledger.types import CreateTransferResult as TR, TransferFlags as TF

T = transfer


def test_balancing_credit_into_another_members_account_is_refused():
    led: Ledger = _funded()
    # The issuer's mint (9) has a net debit balance of 200: A must not learn it.
    before = (led.acct(1), led.acct(9))
    assert led.create_transfers(T(5000, 1, 9, 100, ledger=USD, flags=TF.BALANCING_CREDIT), member=A) == (TR.credit_account_not_owned,)
    assert led.ws.accounts == {} and led.ws.transfers == {}
    assert (led.acct(1), led.acct(9)) == before
    # Into its own account, balancing_credit keeps TigerBeetle's semantics.
    assert led.create_transfers(T(5001, 1, 11, 10, ledger=USD, flags=TF.BALANCING_CREDIT), member=A) == (TR.ok,)
    assert led.store.get_transfer(5001).amount == 0  # 11 has no debit balance to balance
    # balancing_debit of its own account into a foreign one is an ordinary payment.
    assert led.create_transfers(T(5002, 1, 2, 10, ledger=USD, flags=TF.BALANCING_DEBIT), member=A) == (TR.ok,)


def test_post_or_void_of_another_members_transfer_answers_not_owned_whatever_its_state():
    led: Ledger = _funded()
    assert led.create_transfers(T(6000, 2, 12, 1, ledger=USD), T(6001, 2, 12, 1, ledger=USD, flags=TF.PENDING), member=B) == (TR.ok, TR.ok)
    for i, target in enumerate((6000, 6001)):
        for j, flag in enumerate((POST, VOID)):
            assert led.create_transfers(resolve(6100 + 10 * i + j, target, flag), member=A) == (TR.debit_account_not_owned,)
    # The owner still gets TigerBeetle's code for its own settled transfer.
    assert led.create_transfers(resolve(6200, 6000, POST), member=B) == (TR.pending_transfer_not_pending,)
