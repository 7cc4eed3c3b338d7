"""The data directory's identity and who may vote (node/raft/membership.py).

A vote and an acknowledgement are promises about a disk (Raft §5.2, §5.4; the
thesis §4 and §11.7 on servers that lose their storage; TigerBeetle's ``recover``
after Jepsen found a reformatted replica un-committing acknowledged entries). So a
directory votes only if the governed record votes *and* is bound to it: a genesis
record to a directory formatted for genesis, a promoted one to its ``data_dir_id``.
Real files in ``tmp_path``; nothing else.
"""
from __future__ import annotations

import json
import os
import stat

import pytest

from raft_ledger_node.ledger.governance import ValidatorRecord
from raft_ledger_node.raft.membership import (
    DATA_DIR_ID_BYTES,
    IDENTITY_FILE,
    DataDirIdentity,
    MembershipError,
    Role,
    format_data_dir,
    identity_path,
    majority,
    majority_after,
    open_identity,
    read_identity,
    role_of,
    write_identity,
)

CHAIN = "identity-test-chain"
DIR_A = bytes(range(16))
DIR_B = bytes(range(16, 32))


def rec(*, voting: bool = True, data_dir_id: bytes = b"", vid: str = "v3") -> ValidatorRecord:
    return ValidatorRecord(vid, "127.0.0.1:7103", "127.0.0.1:7203", bytes(32), bytes(32), voting, data_dir_id)


def ident(*, genesis: bool, data_dir_id: bytes = DIR_A) -> DataDirIdentity:
    return DataDirIdentity(CHAIN, "v3", data_dir_id, genesis)


# -- format, write, read ------------------------------------------------------------------


@pytest.mark.parametrize("genesis", [True, False])
def test_format_gives_a_new_directory_a_random_identity(tmp_path, genesis):
    d = str(tmp_path / "data")
    made = format_data_dir(d, chain_id=CHAIN, validator_id="v3", genesis=genesis)
    assert (made.chain_id, made.validator_id, made.genesis, made.vote_after_term) == (CHAIN, "v3", genesis, 0)
    assert len(made.data_dir_id) == DATA_DIR_ID_BYTES
    assert read_identity(d) == made
    assert os.listdir(d) == [IDENTITY_FILE]  # the temporary file was renamed into place
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    other = format_data_dir(str(tmp_path / "other"), chain_id=CHAIN, validator_id="v3", genesis=genesis)
    assert other.data_dir_id != made.data_dir_id


def test_format_accepts_an_existing_empty_directory(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    assert read_identity(str(d)) is None
    assert format_data_dir(str(d), chain_id=CHAIN, validator_id="v3", genesis=False).genesis is False


def test_format_refuses_a_formatted_directory(tmp_path):
    d = str(tmp_path / "data")
    first = format_data_dir(d, chain_id=CHAIN, validator_id="v3", genesis=False)
    with pytest.raises(MembershipError, match="already formatted"):
        format_data_dir(d, chain_id=CHAIN, validator_id="v3", genesis=True)
    assert read_identity(d) == first  # untouched: it does not become a genesis voter


def test_format_refuses_a_directory_that_holds_data(tmp_path):
    d = tmp_path / "data"
    (d / "db").mkdir(parents=True)
    with pytest.raises(MembershipError, match="not empty"):
        format_data_dir(str(d), chain_id=CHAIN, validator_id="v3", genesis=True)
    assert read_identity(str(d)) is None


def test_identity_round_trips_with_its_vote_after_term(tmp_path):
    d = str(tmp_path / "data")
    promoted = DataDirIdentity(CHAIN, "v4", DIR_B, False, vote_after_term=7)
    write_identity(d, promoted)
    assert read_identity(d) == promoted
    with open(identity_path(d)) as f:
        assert json.load(f) == {"chain_id": CHAIN, "validator_id": "v4", "data_dir_id": DIR_B.hex(),
                                "genesis": False, "vote_after_term": 7}


@pytest.mark.parametrize("content", [
    b"not json",
    b'{"chain_id": "c", "validator_id": "v3"}',
    b'{"chain_id": "c", "validator_id": "v3", "data_dir_id": "zz", "genesis": true}',
])
def test_an_unreadable_identity_is_refused(tmp_path, content):
    d = tmp_path / "data"
    d.mkdir()
    (d / IDENTITY_FILE).write_bytes(content)
    with pytest.raises(MembershipError, match="cannot be trusted"):
        read_identity(str(d))


def test_an_identity_with_a_short_id_is_refused(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / IDENTITY_FILE).write_text(json.dumps({"chain_id": CHAIN, "validator_id": "v3", "data_dir_id": "00" * 15,
                                               "genesis": True}))
    with pytest.raises(MembershipError, match="16 bytes"):
        read_identity(str(d))


# -- open_identity -------------------------------------------------------------------------


def test_open_creates_a_learners_identity_once_and_keeps_it(tmp_path):
    d = str(tmp_path / "data")
    first = open_identity(d, chain_id=CHAIN, validator_id="v3", has_data=False)
    assert first.genesis is False and len(first.data_dir_id) == DATA_DIR_ID_BYTES
    assert open_identity(d, chain_id=CHAIN, validator_id="v3", has_data=True) == first


def test_open_takes_a_directory_with_data_from_before_identities_as_genesis(tmp_path):
    d = str(tmp_path / "data")
    assert open_identity(d, chain_id=CHAIN, validator_id="v1", has_data=True).genesis is True


def test_open_keeps_a_formatted_identity(tmp_path):
    d = str(tmp_path / "data")
    made = format_data_dir(d, chain_id=CHAIN, validator_id="v1", genesis=True)
    assert open_identity(d, chain_id=CHAIN, validator_id="v1", has_data=False) == made


@pytest.mark.parametrize("chain,vid,which", [("another-chain", "v3", "chain"), (CHAIN, "v2", "validator")])
def test_open_refuses_another_chains_or_validators_directory(tmp_path, chain, vid, which):
    d = str(tmp_path / "data")
    format_data_dir(d, chain_id=CHAIN, validator_id="v3", genesis=True)
    with pytest.raises(MembershipError, match="belongs to validator 'v3'"):
        open_identity(d, chain_id=chain, validator_id=vid, has_data=True)


# -- role_of -------------------------------------------------------------------------------------


def test_a_genesis_directory_votes_for_a_genesis_record():
    assert role_of(ident(genesis=True), rec())[0] is Role.VOTER


def test_a_new_directory_never_votes_for_a_genesis_record():
    """The wiped-disk case: same validator id, empty directory: a learner, and the log says why."""
    role, why = role_of(ident(genesis=False), rec())
    assert role is Role.LEARNER
    assert "not formatted for genesis" in why and "replace" in why


def test_a_promoted_record_votes_only_with_the_directory_it_was_bound_to():
    assert role_of(ident(genesis=False, data_dir_id=DIR_A), rec(data_dir_id=DIR_A))[0] is Role.VOTER
    role, why = role_of(ident(genesis=False, data_dir_id=DIR_B), rec(data_dir_id=DIR_A))
    assert role is Role.LEARNER and DIR_A.hex() in why and DIR_B.hex() in why
    # Being formatted for genesis does not help once the record is bound elsewhere.
    assert role_of(ident(genesis=True, data_dir_id=DIR_B), rec(data_dir_id=DIR_A))[0] is Role.LEARNER


@pytest.mark.parametrize("genesis", [True, False])
def test_a_learner_record_is_a_learner_on_any_directory(genesis):
    role, why = role_of(ident(genesis=genesis), rec(voting=False))
    assert role is Role.LEARNER and "learner" in why
    assert role_of(ident(genesis=genesis), rec(voting=False, data_dir_id=DIR_A))[0] is Role.LEARNER


def test_no_record_is_not_a_member():
    role, why = role_of(ident(genesis=True), None)
    assert role is Role.NOT_MEMBER and "'v3'" in why


# -- majorities ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,need", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_majority(n, need):
    assert majority(n) == need


@pytest.mark.parametrize("after,reachable,ok", [
    ({"a", "b", "c"}, {"a", "b"}, True),
    ({"a", "b", "c", "d"}, {"a", "b"}, False),  # promoting a 4th while one of three is down
    ({"a", "b", "c", "d"}, {"a", "b", "d"}, True),
    ({"a", "b"}, {"a", "c"}, False),  # c (being removed) is reachable but no longer counts
    ({"a", "b"}, {"a", "b", "c"}, True),
    ({"a"}, {"a"}, True),
])
def test_majority_after_counts_only_reachable_voters_of_the_new_configuration(after, reachable, ok):
    got, text = majority_after(after, reachable)
    assert got is ok
    assert f"of the {len(after)} voters" in text and f"{majority(len(after))} are needed" in text
