"""Failures the model-based test (test_ledger_model.py) found, shrunk and kept as explicit programs.

Hypothesis' stateful tests take no @example, so each shrunk program is replayed
here against the same Model and core.
"""
from __future__ import annotations

from raft_ledger_node.ledger.types import Account, Operation, Transfer, TransferFlags as TF

from tests_property_support import run_program


def test_void_with_more_than_the_pending_amount():
    """Shrunk: pending 5, then void with amount 89 -> exceeds_pending_transfer_amount (TigerBeetle),
    where the core once answered pending_transfer_has_different_amount."""
    codes = run_program(
        [
            ("bank-a", Operation.create_transfers, [Transfer(id=1, debit_account_id=1, credit_account_id=2, amount=5, ledger=840, code=1, flags=TF.PENDING)]),
            ("bank-a", Operation.create_transfers, [Transfer(id=3, debit_account_id=0, credit_account_id=0, amount=89, ledger=0, code=0, flags=TF.VOID_PENDING_TRANSFER, pending_id=1)]),
        ]
    )
    assert codes[-1] == ("exceeds_pending_transfer_amount",)


def test_open_chain_reports_the_first_failure_and_chain_open():
    """Shrunk: an open chain whose first event fails keeps that event's own code."""
    codes = run_program(
        [
            # Account 1 exists on ledger 840 (the machine's setup).
            ("bank-a", Operation.create_accounts, [Account(id=1, ledger=978, code=1, flags=1), Account(id=8, ledger=840, code=1, flags=1), Account(id=9, ledger=840, code=1, flags=1)]),
        ]
    )
    assert codes[-1] == ("exists_with_different_ledger", "linked_event_failed", "linked_event_chain_open")
