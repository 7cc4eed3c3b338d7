"""Replays a fixed program against the core and the reference Model of test_ledger_model.py."""
from __future__ import annotations

from raft_ledger_node.ledger.types import Account, CreateAccountResult, CreateTransferResult, Operation

from test_ledger_model import LedgerMachine, make_tx


def run_program(program) -> list[tuple[str, ...]]:
    """program: [(member, Operation, events)]; returns the core's result names per step.

    Every step also asserts that the core and the model agree (the machine's own check).
    """
    m = LedgerMachine()
    m.setup()
    out = []
    for member, op, events in program:
        m._run(make_tx(member, op, events))
        enum = CreateAccountResult if op == Operation.create_accounts else CreateTransferResult
        out.append(tuple(enum(c).name for c in m.applied_txs[-1][1]))
        m.matches_model_balances()
        m.conservation_per_ledger()
    m.teardown()
    return out
