"""Validator membership in the pure core: add_validator / promote_validator /
remove_validator in ``governance.apply_changes``, the voters and learners of a
configuration, the certifying set (voters only) and the wire forms of the three changes.

Sources: Raft thesis §4.1 (one server at a time: a proposal holds at most one
membership change, and one is pending at a time), §4.2.1 (new servers join as
non-voting members and catch up first: etcd's learners); the rejection codes are
``TxRejection`` in node/ledger/governance.py, numbered as on the wire.
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from raft_ledger_client import checkpoint as sdk_checkpoint
from raft_ledger_client import governance as sdk_gov
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.api.validation import BadRequest, change_from_pb
from raft_ledger_node.ledger import governance as g
from raft_ledger_node.ledger.apply import validator_set_hash
from raft_ledger_node.ledger.governance import Configuration, Member, MemberKey, ValidatorRecord, apply_changes
from raft_ledger_node.ledger.types import Operation, Tx, TxRejection as R
from raft_ledger_node.store_memory import MemoryStore

from helpers import CHAIN, T0, Ledger

HEIGHT = 10
DIR_A = bytes(range(16))
DIR_B = bytes(range(16, 32))
_n = itertools.count(1)


def _key(seed: int) -> tuple[Ed25519PrivateKey, bytes]:
    k = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"membership-test-%d" % seed).digest())
    return k, k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


ADMIN_KEYS = {a: _key(100 + i) for i, a in enumerate(("admin-1", "admin-2", "admin-3"))}


def record(n: int, *, voting: bool = True, data_dir_id: bytes = b"") -> ValidatorRecord:
    """Validator ``v<n>``: its own addresses, TLS pin and Ed25519 key."""
    return ValidatorRecord(f"v{n}", f"127.0.0.1:{7100 + n}", f"127.0.0.1:{7200 + n}",
                           hashlib.sha256(b"cert-%d" % n).digest(), _key(n)[1], voting, data_dir_id)


def config(*validators: ValidatorRecord) -> Configuration:
    """Version 1 with three admins (threshold 2) and ``validators`` (default v1..v3, genesis voters)."""
    members = [Member(a, (), (MemberKey("k1", pk),)) for a, (_, pk) in ADMIN_KEYS.items()]
    return Configuration(version=1, members=tuple(sorted(members, key=lambda m: m.id)), issuers=(),
                         admins=tuple(sorted(ADMIN_KEYS)), threshold=2,
                         validators=validators or (record(1), record(2), record(3)))


def ids(validators) -> list[str]:
    return [v.id for v in validators]


def with_learner(n: int = 4) -> Configuration:
    cfg = apply_changes(config(), [g.AddValidator(record(n))], HEIGHT)
    assert isinstance(cfg, Configuration)
    return cfg


# -- add_validator --------------------------------------------------------------------


def test_add_validator_adds_a_learner_whatever_the_record_says():
    cfg = apply_changes(config(), [g.AddValidator(record(4, voting=True, data_dir_id=DIR_A))], HEIGHT)
    assert cfg.version == 2
    v4 = cfg.validator("v4")
    assert (v4.voting, v4.data_dir_id) == (False, b"")
    assert ids(cfg.voters) == ["v1", "v2", "v3"] and ids(cfg.learners) == ["v4"]
    assert ids(cfg.validators) == ["v1", "v2", "v3", "v4"]


def test_a_second_addition_is_refused_while_a_learner_is_pending():
    assert apply_changes(with_learner(4), [g.AddValidator(record(5))], HEIGHT) == R.validator_change_pending


@pytest.mark.parametrize("field,value", [
    ("id", "v2"),
    ("grpc_address", "127.0.0.1:7102"),
    ("raft_address", "127.0.0.1:7203"),
    ("public_key", _key(1)[1]),
    ("tls_cert_sha256", hashlib.sha256(b"cert-3").digest()),
])
def test_an_addition_that_reuses_an_id_address_key_or_pin_is_refused(field, value):
    assert apply_changes(config(), [g.AddValidator(replace(record(4), **{field: value}))], HEIGHT) == R.validator_exists


@pytest.mark.parametrize("field,value", [
    ("id", ""),
    ("id", "v/4"),
    ("id", "v" * 65),
    ("grpc_address", "no-port"),
    ("raft_address", "no-port"),
    ("tls_cert_sha256", b""),  # a new validator must be pinned
    ("tls_cert_sha256", bytes(31)),
    ("public_key", b""),  # and must have a checkpoint-signing key
    ("public_key", bytes(33)),
])
def test_a_malformed_addition_is_refused(field, value):
    assert apply_changes(config(), [g.AddValidator(replace(record(4), **{field: value}))], HEIGHT) == R.validator_invalid


# -- promote_validator ----------------------------------------------------------------


def test_promotion_makes_the_learner_a_voter_bound_to_its_data_directory():
    cfg = apply_changes(with_learner(4), [g.PromoteValidator("v4", DIR_A)], HEIGHT + 1)
    assert cfg.version == 3
    assert cfg.validator("v4") == replace(record(4), voting=True, data_dir_id=DIR_A)
    assert ids(cfg.voters) == ["v1", "v2", "v3", "v4"] and cfg.learners == ()
    # The other voters keep their (genesis: unbound) records.
    assert [v.data_dir_id for v in cfg.voters[:3]] == [b"", b"", b""]


def test_only_a_learner_is_promoted():
    assert apply_changes(config(), [g.PromoteValidator("v1", DIR_A)], HEIGHT) == R.validator_not_learner
    assert apply_changes(config(), [g.PromoteValidator("v9", DIR_A)], HEIGHT) == R.validator_not_found
    # With a learner pending, a change naming another validator waits for it.
    assert apply_changes(with_learner(4), [g.PromoteValidator("v1", DIR_A)], HEIGHT) == R.validator_change_pending


@pytest.mark.parametrize("data_dir_id", [b"", bytes(15), bytes(17), bytes(32)])
def test_promotion_needs_a_16_byte_data_directory_id(data_dir_id):
    assert apply_changes(with_learner(4), [g.PromoteValidator("v4", data_dir_id)], HEIGHT) == R.validator_invalid


# -- remove_validator -----------------------------------------------------------------


def test_removing_the_pending_learner_cancels_its_addition():
    cfg = apply_changes(with_learner(4), [g.RemoveValidator("v4")], HEIGHT)
    assert cfg.validators == config().validators and cfg.version == 3
    # Nothing is pending any more: another addition goes through.
    assert ids(apply_changes(cfg, [g.AddValidator(record(5))], HEIGHT).learners) == ["v5"]


def test_removing_a_voter():
    cfg = apply_changes(config(), [g.RemoveValidator("v2")], HEIGHT)
    assert ids(cfg.voters) == ["v1", "v3"] and cfg.validator("v2") is None
    assert apply_changes(cfg, [g.RemoveValidator("v2")], HEIGHT) == R.validator_not_found


def test_the_last_voter_is_never_removed():
    one = config(record(1))
    assert apply_changes(one, [g.RemoveValidator("v1")], HEIGHT) == R.validator_quorum_lost
    # A pending learner counts toward no quorum: the last voter stays the last voter.
    pending = apply_changes(one, [g.AddValidator(record(2))], HEIGHT)
    assert apply_changes(pending, [g.RemoveValidator("v1")], HEIGHT) == R.validator_change_pending
    assert ids(apply_changes(pending, [g.RemoveValidator("v2")], HEIGHT).validators) == ["v1"]


def test_removing_another_validator_while_a_learner_is_pending_is_refused():
    assert apply_changes(with_learner(4), [g.RemoveValidator("v1")], HEIGHT) == R.validator_change_pending


# -- one change at a time ---------------------------------------------------------------


@pytest.mark.parametrize("changes", [
    [g.AddValidator(record(4)), g.RemoveValidator("v3")],
    [g.RemoveValidator("v3"), g.AddValidator(record(4))],
    [g.RemoveValidator("v2"), g.RemoveValidator("v3")],
    [g.AddValidator(record(4)), g.AddValidator(record(5))],
])
def test_two_membership_changes_in_one_proposal_are_refused(changes):
    assert apply_changes(config(), changes, HEIGHT) == R.validator_change_pending


def test_a_promotion_and_a_removal_in_one_proposal_are_refused():
    changes = [g.PromoteValidator("v4", DIR_A), g.RemoveValidator("v4")]
    assert apply_changes(with_learner(4), changes, HEIGHT) == R.validator_change_pending


def test_one_membership_change_may_travel_with_other_changes():
    extra = g.AddMember("bank-x", ("member",), (("k1", _key(50)[1]),))
    cfg = apply_changes(config(), [extra, g.AddValidator(record(4))], HEIGHT)
    assert cfg.member("bank-x") is not None and ids(cfg.learners) == ["v4"]


# -- set_validators cannot change who the validators are ------------------------------------


def test_set_validators_changes_grpc_addresses_pins_and_keys():
    cfg = apply_changes(with_learner(4), [g.PromoteValidator("v4", DIR_A)], HEIGHT)
    new = [replace(v, grpc_address=f"10.0.0.{i}:7000", tls_cert_sha256=bytes([i]) * 32, public_key=_key(60 + i)[1])
           for i, v in enumerate(cfg.validators)]
    out = apply_changes(cfg, [g.SetValidators(tuple(new))], HEIGHT)
    assert [v.grpc_address for v in out.validators] == [f"10.0.0.{i}:7000" for i in range(4)]
    assert [v.public_key for v in out.validators] == [_key(60 + i)[1] for i in range(4)]
    # Voting and the bound data directory stay as governance made them.
    assert [(v.voting, v.data_dir_id) for v in out.validators] == [(True, b"")] * 3 + [(True, DIR_A)]


def test_set_validators_cannot_change_voting_or_the_bound_directory():
    cfg = with_learner(4)
    flipped = tuple(replace(v, voting=not v.voting, data_dir_id=DIR_B) for v in cfg.validators)
    out = apply_changes(cfg, [g.SetValidators(flipped)], HEIGHT)
    assert ids(out.voters) == ["v1", "v2", "v3"] and ids(out.learners) == ["v4"]
    assert all(v.data_dir_id == b"" for v in out.validators)


@pytest.mark.parametrize("edit", [
    lambda vs: (replace(vs[0], id="v9"),) + vs[1:],  # another id
    lambda vs: vs[:2],  # one fewer
    lambda vs: vs + (record(4),),  # one more
    lambda vs: (replace(vs[0], raft_address="127.0.0.1:9999"),) + vs[1:],  # another Raft identity
])
def test_set_validators_cannot_change_ids_or_raft_addresses(edit):
    assert apply_changes(config(), [g.SetValidators(edit(config().validators))], HEIGHT) == R.validator_invalid


# -- the certifying set: voters only ----------------------------------------------------------


def _gov_tx(changes, base: int) -> Tx:
    proposal = g.encode_changes(CHAIN, base, T0 + 10**15, changes) + b"/" + next(_n).to_bytes(8, "big")
    approvals = tuple(g.Approval(a, "k1", ADMIN_KEYS[a][0].sign(proposal)) for a in ("admin-1", "admin-2"))
    p = g.GovernanceProposal(CHAIN, base, T0 + 10**15, tuple(changes), proposal, approvals)
    env = b"gov-envelope/" + proposal
    return Tx("admin-1", Operation.governance, (), env, hashlib.sha256(env).digest(), "k1", p)


def test_validator_set_hash_covers_the_voters_only():
    genesis = config()
    learner = with_learner(4)
    promoted = apply_changes(learner, [g.PromoteValidator("v4", DIR_A)], HEIGHT)
    assert learner.voters == genesis.voters
    assert validator_set_hash(learner.voters) == validator_set_hash(genesis.voters)
    assert validator_set_hash(promoted.voters) != validator_set_hash(genesis.voters)
    # The SDK computes the same bytes from (id, key) pairs (client/checkpoint.py).
    for cfg in (genesis, learner, promoted):
        assert sdk_checkpoint.validator_set_hash([(v.id, v.public_key) for v in cfg.voters]) == \
            validator_set_hash(cfg.voters)


def test_block_headers_name_the_voters_as_the_certifying_set():
    """An applied add_validator leaves the certifying set (validators_hash and
    next_validators_hash) alone; the promotion changes the next block's set."""
    led = Ledger(MemoryStore(configuration=config()))
    genesis_hash = validator_set_hash(config().voters)
    [r] = led.block(_gov_tx([g.AddValidator(record(4))], base=1))
    assert r.rejection == 0
    h = led.store.head().header
    assert (h.validators_hash, h.next_validators_hash) == (genesis_hash, genesis_hash)

    [r] = led.block(_gov_tx([g.PromoteValidator("v4", DIR_A)], base=2))
    assert r.rejection == 0
    h = led.store.head().header
    four = validator_set_hash(led.store.configuration().voters)
    assert ids(led.store.configuration().voters) == ["v1", "v2", "v3", "v4"]
    assert (h.validators_hash, h.next_validators_hash) == (genesis_hash, four)

    [r] = led.block(_gov_tx([g.RemoveValidator("v1")], base=3))
    h = led.store.head().header
    assert r.rejection == 0 and h.validators_hash == four
    assert h.next_validators_hash == sdk_checkpoint.validator_set_hash([(f"v{n}", _key(n)[1]) for n in (2, 3, 4)])


def test_a_refused_membership_change_in_a_block_applies_nothing():
    led = Ledger(MemoryStore(configuration=config()))
    [r] = led.block(_gov_tx([g.RemoveValidator("v2"), g.RemoveValidator("v3")], base=1))
    assert r.rejection == R.validator_change_pending
    assert led.store.configuration() == config()


# -- wire forms: proto (ingress) and the canonical codec --------------------------------------


def test_sdk_builders_decode_at_ingress_into_the_core_changes():
    entry = {"id": "v4", "grpc_address": "127.0.0.1:7104", "raft_address": "127.0.0.1:7204",
             "tls_cert_sha256": record(4).tls_cert_sha256.hex(), "public_key": record(4).public_key.hex()}
    add = change_from_pb(sdk_gov.add_validator(entry), "change 0")
    assert isinstance(add, g.AddValidator)
    assert add.validator.id == "v4" and add.validator.public_key == record(4).public_key
    assert (add.validator.grpc_address, add.validator.raft_address, add.validator.tls_cert_sha256) == \
        (record(4).grpc_address, record(4).raft_address, record(4).tls_cert_sha256)
    assert change_from_pb(sdk_gov.promote_validator("v4", DIR_A.hex()), "change 0") == g.PromoteValidator("v4", DIR_A)
    assert change_from_pb(sdk_gov.promote_validator("v4", DIR_A), "change 0") == g.PromoteValidator("v4", DIR_A)
    assert change_from_pb(sdk_gov.remove_validator("v4"), "change 0") == g.RemoveValidator("v4")
    # Whatever ingress decodes, apply adds a learner.
    assert apply_changes(config(), [add], HEIGHT).validator("v4") == replace(record(4), voting=False)


@pytest.mark.parametrize("change", [
    pb.GovernanceChange(promote_validator=pb.PromoteValidator(id="v4", data_dir_id=bytes(15))),
    pb.GovernanceChange(promote_validator=pb.PromoteValidator(id="", data_dir_id=DIR_A)),
    pb.GovernanceChange(remove_validator=pb.ValidatorRef(id="")),
    pb.GovernanceChange(add_validator=pb.ValidatorEntry(id="v4", grpc_address="127.0.0.1:1", raft_address="127.0.0.1:2",
                                                        tls_cert_sha256=bytes(31), public_key=bytes(32))),
    pb.GovernanceChange(add_validator=pb.ValidatorEntry(id="v4", grpc_address="127.0.0.1:1", raft_address="nowhere",
                                                        tls_cert_sha256=bytes(32), public_key=bytes(32))),
])
def test_malformed_membership_changes_are_refused_at_ingress(change):
    with pytest.raises(BadRequest):
        change_from_pb(change, "change 0")


def test_membership_changes_round_trip_through_the_canonical_codec():
    changes = (g.AddValidator(record(4, voting=False)), g.PromoteValidator("v4", DIR_A), g.RemoveValidator("v2"))
    for c in changes:
        assert g.change_from_doc(g.change_to_doc(c)) == c
    assert g.decode_changes(g.encode_changes(CHAIN, 3, T0, changes)) == (CHAIN, 3, T0, changes)


def test_the_codec_carries_an_addition_as_a_learner():
    # The canonical form has no voting or data directory field for an addition: apply
    # makes every addition a learner, so nothing else may travel in the Raft entry.
    doc = g.change_to_doc(g.AddValidator(record(4, voting=True, data_dir_id=DIR_A)))
    assert g.change_from_doc(doc) == g.AddValidator(record(4, voting=False))


def test_a_malformed_membership_doc_is_refused():
    with pytest.raises(ValueError):
        g.change_from_doc({"kind": "promote_validator", "id": "v4", "data_dir_id": "zz"})
    with pytest.raises(ValueError):
        g.change_from_doc({"kind": "add_validator", "validator": ["v4", "h:1"]})
