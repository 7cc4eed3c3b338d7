"""What every validator applies for a governance transaction is what the administrators
signed (issue 11 item 5; the trust model: validators trust each other for liveness,
not truth). The Raft entry carries the leader's decoded copy of the changes beside the
signed proposal bytes; the state machine decodes the bytes again
(``api.validation.proposal_from_signed_bytes``) and applies that, so a leader that
puts other changes beside a genuinely approved proposal changes nothing it was not
authorised to."""
from __future__ import annotations

import hashlib
import time

from raft_ledger_client import governance as sdk_gov
from raft_ledger_node.api.validation import proposal_from_signed_bytes
from raft_ledger_node.ledger import governance as g
from raft_ledger_node.ledger.types import Entry, Operation, Tx, TxRejection as R
from raft_ledger_node.state_machine import StateMachine
from raft_ledger_node.store_memory import MemoryStore

from test_governance_apply import CHAIN, KEYS, base_config

NOW = time.time_ns()


def _forged_tx(proposal: bytes, forged_changes) -> Tx:
    """A governance tx whose approvals are genuine over ``proposal`` but whose decoded
    copy (what a dishonest leader puts in the entry) says ``forged_changes``."""
    approvals = tuple(g.Approval(a, "k1", KEYS[a][0].sign(proposal)) for a in ("admin-1", "admin-2"))
    p = g.GovernanceProposal(CHAIN, 1, NOW + 10**12, tuple(forged_changes), proposal, approvals)
    env = b"gov/" + proposal
    return Tx("admin-1", Operation.governance, (), env, hashlib.sha256(env).digest(), "k1", p)


def _approved_proposal() -> bytes:
    pf = sdk_gov.build_proposal(CHAIN, 1, [sdk_gov.suspend_member("bank-b")], wall_clock_ns=lambda: NOW)
    return pf.proposal


def _apply(machine: StateMachine, tx: Tx):
    applied = machine.apply(Entry(NOW, (tx,)), 1, 1)
    return applied.results[0], machine.store.configuration()


def test_the_changes_applied_are_decoded_from_the_signed_bytes():
    forged = [g.SetAdmins(("bank-a",), 1)]
    machine = StateMachine(MemoryStore(configuration=base_config()), decode_proposal=proposal_from_signed_bytes,
                           chain_id=CHAIN)
    result, cfg = _apply(machine, _forged_tx(_approved_proposal(), forged))
    assert result.rejection == 0 and cfg.version == 2
    assert cfg.member("bank-b").status == g.MemberStatus.suspended  # what was signed
    assert cfg.admins == ("admin-1", "admin-2", "admin-3")           # not what was forged


def test_without_re_decoding_the_leaders_copy_would_be_applied():
    """The control: the hole the re-decoding closes is real."""
    machine = StateMachine(MemoryStore(configuration=base_config()))
    result, cfg = _apply(machine, _forged_tx(_approved_proposal(), [g.SetAdmins(("bank-a",), 1)]))
    assert result.rejection == 0 and cfg.admins == ("bank-a",)


def test_signed_bytes_that_do_not_decode_change_nothing():
    machine = StateMachine(MemoryStore(configuration=base_config()), decode_proposal=proposal_from_signed_bytes,
                           chain_id=CHAIN)
    result, cfg = _apply(machine, _forged_tx(b"\xff\xff not a proposal", [g.SuspendMember("bank-b")]))
    assert result.rejection == R.change_invalid and cfg.version == 1
