"""Governance in the pure core: apply_changes rules and governance transactions in
apply_block (approvals verified inside apply, sequential within a block, stale
proposals refused like Fabric's read set, signer authorisation at apply)."""
from __future__ import annotations

import hashlib
import itertools

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from raft_ledger_node.crypto import verify_ed25519
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger import governance as g
from raft_ledger_node.ledger.governance import (
    Configuration, Member, MemberKey, MemberStatus, ValidatorRecord, apply_changes, encode_configuration,
)
from raft_ledger_node.ledger.types import Operation, Tx, TxRejection as R
from raft_ledger_node.store_memory import MemoryStore

from helpers import CHAIN, T0, Ledger, account, accounts_tx, entry, transfer, transfers_tx

_n = itertools.count(1)


def key() -> tuple[Ed25519PrivateKey, bytes]:
    k = Ed25519PrivateKey.generate()
    return k, k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


KEYS = {name: key() for name in ("bank-a", "bank-b", "admin-1", "admin-2", "admin-3", "operator", "auditor", "bank-d")}


def base_config() -> Configuration:
    def m(i, roles):
        return Member(i, roles, (MemberKey("k1", KEYS[i][1]),))

    return Configuration(
        version=1,
        members=tuple(sorted([m("bank-a", ("member",)), m("bank-b", ("member",)), m("admin-1", ()), m("admin-2", ()),
                              m("admin-3", ()), m("operator", ("operator",)), m("auditor", ("auditor",))], key=lambda x: x.id)),
        issuers=((1, ("bank-a",)), (840, ("bank-a",))),  # bank-a issues the helpers' ledger 1
        admins=("admin-1", "admin-2", "admin-3"),
        threshold=2,
        validators=(ValidatorRecord("v1", "127.0.0.1:1", "127.0.0.1:2", bytes(32)),),
    )


def gov_tx(changes, approvers=("admin-1", "admin-2"), *, base=1, submitter="admin-1", valid_until=T0 + 10**15,
           chain=CHAIN, approvals=None) -> Tx:
    proposal = g.encode_changes(chain, base, valid_until, changes) + b"/" + next(_n).to_bytes(8, "big")
    if approvals is None:
        approvals = tuple(g.Approval(a, "k1", KEYS[a][0].sign(proposal)) for a in approvers)
    p = g.GovernanceProposal(chain, base, valid_until, tuple(changes), proposal, tuple(approvals))
    env = b"gov-envelope/" + proposal
    return Tx(submitter, Operation.governance, (), env, hashlib.sha256(env).digest(), "k1", p)


@pytest.fixture
def ledger():
    return Ledger(MemoryStore(configuration=base_config()))


def _block(ledger, *txs):
    return ledger.block(*txs)


# -- apply_changes ---------------------------------------------------------------


def test_add_member_takes_effect_next_block_and_bumps_version():
    cfg = apply_changes(base_config(), [g.AddMember("bank-d", ("member",), (("k1", KEYS["bank-d"][1]),))], 7)
    assert cfg.version == 2
    k = cfg.member("bank-d").key("k1")
    assert (k.valid_from, k.revoked_at) == (8, 0) and not k.active_at(7) and k.active_at(8)


@pytest.mark.parametrize("changes,code", [
    ([g.AddMember("bank-a", ("member",), (("k9", bytes(32)),))], R.member_exists),
    ([g.AddMember("bank-d", ("king",), (("k1", bytes(32)),))], R.role_unknown),
    ([g.AddMember("bank-d", ("member",), ())], R.change_invalid),
    ([g.AddKey("bank-a", "k1", bytes(32))], R.key_exists),
    ([g.AddKey("nobody", "k2", bytes(32))], R.member_not_found),
    ([g.RevokeKey("bank-a", "k7")], R.key_not_found),
    ([g.SuspendMember("nobody")], R.member_not_found),
    ([g.ReinstateMember("bank-a")], R.member_status_unchanged),
    ([g.RemoveMember("admin-1")], R.member_still_referenced),
    ([g.SetRoles("bank-a", ("member", "member"))], R.role_unknown),
    ([g.SetIssuers(840, ("nobody",))], R.issuer_not_member),
    ([g.SetAdmins(("admin-1", "nobody"), 1)], R.admin_not_member),
    ([g.SetAdmins(("admin-1", "admin-2"), 3)], R.threshold_out_of_range),
    ([g.SetAdmins(("admin-1", "admin-2"), 0)], R.threshold_out_of_range),
    ([g.SetValidators(())], R.validator_invalid),
    # Suspending two of three admins leaves one able to sign: below the threshold of 2.
    ([g.SuspendMember("admin-1"), g.SuspendMember("admin-2")], R.admin_quorum_lost),
    ([g.RevokeKey("admin-1", "k1"), g.RevokeKey("admin-2", "k1")], R.admin_quorum_lost),
])
def test_refused_changes(changes, code):
    assert apply_changes(base_config(), changes, 5) == code


def test_key_ids_are_never_reused_even_after_revocation():
    cfg = apply_changes(base_config(), [g.RevokeKey("bank-a", "k1"), g.AddKey("bank-a", "k2", KEYS["bank-d"][1])], 5)
    assert cfg.member("bank-a").key("k1").revoked_at == 6
    assert apply_changes(cfg, [g.AddKey("bank-a", "k1", KEYS["bank-d"][1])], 9) == R.key_exists
    assert apply_changes(cfg, [g.RevokeKey("bank-a", "k1")], 9) == R.key_already_revoked


def test_removed_member_id_is_never_reused():
    cfg = apply_changes(base_config(), [g.RemoveMember("bank-b")], 3)
    assert cfg.member("bank-b").status == MemberStatus.removed
    assert apply_changes(cfg, [g.AddMember("bank-b", ("member",), (("k1", bytes(32)),))], 4) == R.member_exists
    assert apply_changes(cfg, [g.ReinstateMember("bank-b")], 4) == R.member_removed


def test_admins_can_be_swapped_atomically():
    cfg = apply_changes(base_config(), [g.SetAdmins(("admin-2", "admin-3"), 2), g.RemoveMember("admin-1")], 3)
    assert cfg.admins == ("admin-2", "admin-3") and cfg.member("admin-1").status == MemberStatus.removed


def test_changes_codec_round_trip():
    changes = (
        g.AddMember("bank-d", ("member", "auditor"), (("k1", KEYS["bank-d"][1]),)), g.SuspendMember("x"),
        g.ReinstateMember("x"), g.RemoveMember("x"), g.AddKey("a", "k2", bytes(range(32))), g.RevokeKey("a", "k1"),
        g.SetRoles("a", ()), g.SetIssuers(978, ("a", "b")), g.SetAdmins(("a", "b"), 1),
        g.SetValidators((ValidatorRecord("v1", "h:1", "h:2", bytes(32), b""),)),
    )
    raw = g.encode_changes(CHAIN, 4, T0, changes)
    assert g.decode_changes(raw) == (CHAIN, 4, T0, changes)


# -- governance in apply_block ------------------------------------------------------


def test_governance_applies_with_threshold_and_changes_state_hash(ledger):
    before = ledger.store.head().header.state_hash
    [r] = _block(ledger, gov_tx([g.AddMember("bank-d", ("member",), (("k1", KEYS["bank-d"][1]),))]))
    assert r.rejection == 0
    cfg = ledger.store.configuration()
    assert cfg.version == 2 and cfg.member("bank-d") is not None
    assert ledger.store.configuration_at(1).member("bank-d") is None
    assert ledger.ws.configuration == cfg
    # The new member transacts from the next block on.
    ledger.block(accounts_tx(account(1, ledger=978), member="bank-d"))
    assert ledger.store.get_account(1).owner == "bank-d"
    assert before != ledger.store.head().header.state_hash


def test_state_hash_covers_the_configuration():
    """Two stores that differ only in the configuration change produce different state hashes."""
    hashes = []
    for member in ("bank-d", "bank-e"):
        led = Ledger(MemoryStore(configuration=base_config()))
        led.block(gov_tx([g.AddMember(member, ("member",), (("k1", KEYS["bank-d"][1]),))]))
        hashes.append(led.store.head().header.state_hash)
    assert hashes[0] != hashes[1]


@pytest.mark.parametrize("make,code", [
    (lambda: gov_tx([g.SuspendMember("bank-b")], approvers=("admin-1",)), R.approvals_below_threshold),
    (lambda: gov_tx([g.SuspendMember("bank-b")], approvers=("admin-1", "admin-1")), R.approval_duplicate),
    (lambda: gov_tx([g.SuspendMember("bank-b")], approvers=("admin-1", "bank-a")), R.approval_not_admin),
    (lambda: gov_tx([g.SuspendMember("bank-b")], base=2), R.config_version_stale),
    (lambda: gov_tx([g.SuspendMember("bank-b")], valid_until=T0 - 1), R.proposal_expired),
    (lambda: gov_tx([g.SuspendMember("bank-b")], submitter="bank-a"), R.signer_role_not_permitted),
    (lambda: gov_tx([g.SuspendMember("bank-b")], approvals=(g.Approval("admin-1", "k1", bytes(64)),
                                                            g.Approval("admin-2", "k1", bytes(64)))), R.approval_signature_invalid),
    (lambda: gov_tx([g.SuspendMember("bank-b")], approvals=(g.Approval("admin-1", "k9", bytes(64)),)), R.approval_key_not_active),
    (lambda: gov_tx([g.SuspendMember("nobody")]), R.member_not_found),
])
def test_refused_governance_applies_nothing(ledger, make, code):
    tx = make()
    [r] = _block(ledger, tx)
    assert r.rejection == code and r.codes == ()
    assert ledger.store.configuration() == base_config() and ledger.ws.configuration is None
    # A retry answers the same from the index.
    [again] = _block(ledger, tx)
    assert (again.height, again.rejection) == (r.height, code)


def test_operator_may_submit_governance(ledger):
    [r] = _block(ledger, gov_tx([g.SuspendMember("bank-b")], submitter="operator"))
    assert r.rejection == 0


def test_second_proposal_on_the_old_version_in_the_same_block_is_stale(ledger):
    a = gov_tx([g.SuspendMember("bank-b")])
    b = gov_tx([g.SetRoles("bank-a", ("member", "auditor"))])
    ra, rb = _block(ledger, a, b)
    assert (ra.rejection, rb.rejection) == (0, R.config_version_stale)
    assert ledger.store.configuration().version == 2


def test_without_a_signature_port_no_approval_verifies():
    from raft_ledger_node.ledger.apply import apply_block

    store = MemoryStore(configuration=base_config())
    results, ws = apply_block(store, entry(T0, gov_tx([g.SuspendMember("bank-b")])), 1, 1)
    assert results[0].rejection == R.approval_signature_invalid
    results, ws = apply_block(store, entry(T0, gov_tx([g.SuspendMember("bank-b")])), 1, 1, verify_signature=verify_ed25519)
    assert results[0].rejection == 0 and ws.configuration.version == 2


def test_revoked_key_refused_from_the_next_block_at_apply(ledger):
    ledger.block(accounts_tx(account(1), account(2)))
    ledger.block(gov_tx([g.AddKey("bank-a", "k2", KEYS["bank-d"][1]), g.RevokeKey("bank-a", "k1")]))
    height = ledger.store.head().height
    k1 = ledger.store.configuration().member("bank-a").key("k1")
    assert k1.revoked_at == height + 1 and k1.active_at(height) and not k1.active_at(height + 1)
    # Verified at ingress before the revocation, applied after: refused as a whole.
    from helpers import make_tx
    [r] = ledger.block(make_tx("bank-a", Operation.create_transfers, [transfer(10, 1, 2, 5)], key_id="k1"))
    assert r.rejection == R.signer_key_not_active and ledger.store.get_transfer(10) is None
    [r] = ledger.block(make_tx("bank-a", Operation.create_transfers, [transfer(11, 1, 2, 5)], key_id="k2"))
    assert r.rejection == 0 and ledger.store.get_transfer(11) is not None


def test_suspended_member_refused_at_apply_and_reinstated(ledger):
    ledger.block(accounts_tx(account(1), account(2)))
    ledger.block(gov_tx([g.SuspendMember("bank-a")]))
    [r] = ledger.block(transfers_tx(transfer(20, 1, 2, 5)))
    assert r.rejection == R.signer_not_active
    ledger.block(gov_tx([g.ReinstateMember("bank-a")], base=2))
    [r] = ledger.block(transfers_tx(transfer(21, 1, 2, 5)))
    assert r.rejection == 0


def test_unknown_signer_and_role_refused_at_apply(ledger):
    [r] = ledger.block(accounts_tx(account(1), member="stranger"))
    assert r.rejection == R.signer_not_found
    [r] = ledger.block(accounts_tx(account(2), member="auditor"))
    assert r.rejection == R.signer_role_not_permitted
    from helpers import make_tx
    [r] = ledger.block(make_tx("bank-a", Operation.create_accounts, [account(3)], key_id="k9"))
    assert r.rejection == R.signer_key_not_found


def test_rejection_survives_the_rocks_store(tmp_path):
    from raft_ledger_node.store import RocksStore
    from raft_ledger_node.state_machine import StateMachine

    s = RocksStore(str(tmp_path / "db"))
    try:
        s.bind_genesis(bytes(32), base_config())
        sm = StateMachine(s)
        tx = gov_tx([g.SuspendMember("bank-b")], approvers=("admin-1",))
        out = sm.apply(entry(T0, tx), 1, 1)
        assert out.results[0].rejection == R.approvals_below_threshold
        assert s.get_tx_result(tx.tx_hash) == (1, (), int(R.approvals_below_threshold))
        ok = gov_tx([g.SuspendMember("bank-b")])
        sm.apply(entry(T0 + 10**6, ok), 1, 2)
        assert s.get_tx_result(ok.tx_hash) == (2, (), 0)
        assert s.configuration().version == 2 and s.configuration_at(2) == s.configuration()
    finally:
        s.close()


def test_tx_rejection_numbers_match_the_wire():
    from raft_ledger_client import TxRejection as W

    assert [(m.name, int(m)) for m in R] == [(m.name, int(m)) for m in W]


def test_configuration_encoding_is_canonical():
    assert encode_configuration(base_config()) == encode_configuration(g.decode_configuration(encode_configuration(base_config())))
