"""Who may vote: the data directory's identity, and the majority checks of a membership change.

Raft membership follows the governed validator set (node/ledger/governance.py), one
server at a time. This module holds the two rules the replica and the API apply
around it; both are pure apart from reading and writing one small file.

Why an empty data directory never votes
---------------------------------------
A Raft voter's vote and its acknowledgements are promises about its disk: "I hold
every entry up to here, and I voted for nobody else in this term" (Raft §5.2, §5.4;
the thesis, §4 and §11.7 on servers that lose their storage). A validator whose disk
was lost and that comes back empty under the same identity breaks both: an entry it
acknowledged before the loss may now be held by a minority only, and its empty vote
can elect a leader that lacks that entry. Jepsen found exactly this in TigerBeetle
(a reformatted replica could un-commit acknowledged entries), which is why
``tigerbeetle recover`` exists. Here:

* Every data directory has an identity file (:data:`IDENTITY_FILE`) holding a random
  16-byte **data directory id**, written (fsynced) the first time a validator starts
  on it, before it joins Raft.
* A directory may vote as validator ``v`` only if the governed record of ``v`` is a
  voter **and** was bound to this directory: genesis validators to a directory that
  was *formatted for genesis* (``ledger-validator init-cluster`` / ``format``),
  promoted learners to the directory id named in their ``promote_validator`` change.
* Anything else starts as a **learner** (pysyncobj's read-only node): it receives the
  snapshot and the log, applies them, serves local reads, and counts toward no
  majority and no certificate. A validator that lost its disk therefore comes back as
  a learner, says so in its log, and stays one until the operator replaces it:
  ``remove_validator`` (the lost one: it no longer counts) then ``add_validator`` and
  ``promote_validator`` with the new directory's id. The promotion is committed by a
  majority that did not rely on the lost disk, and the new directory had applied
  every block up to it (it applies the promotion itself), so it holds everything the
  lost validator may have acknowledged before it counts again.

Why the governed set and Raft's configuration never disagree
-----------------------------------------------------------
There is one record of membership: the governed validator set in the ledger state
(node/ledger/governance.py), changed only by governance transactions, one server per
block. pysyncobj's configuration is derived from it (replica.py ``_sync_membership``):
at start-up from the set at the applied index, after each applied block that changed
it, and after a snapshot install from the installed state. pysyncobj's own MEMBERSHIP
entries are never written (they are unsigned, take effect when appended, are rolled
back wrongly on truncation, and have no one-at-a-time guard: pysyncobj-seams.md). The
pins of the Raft TLS links and the certifying set of checkpoints (the voters'
``validators_hash``) are derived from the same record at the same height. So at every
applied index, on every validator, the three are functions of one state; a crash at any
point (before the governance block commits, between commit and apply, between apply and
the Raft change: the last two are one tick-thread step and are redone by the journal
replay) leaves them agreeing after the restart.

Taking a change into effect when it is *applied* rather than appended (the thesis §4.1
uses the latter) is etcd raft's choice too: there it is safe because only one change may
be pending, in the log but not yet applied, at a time (etcd raft's ``pendingConfIndex``,
etcd discussion #16796). Here the leader proposes a membership change only after a read
barrier, committed in its own term after every entry already in its log, has been
applied, and holds a lock until the change commits (api/servicers.py): every earlier
change is applied on the leader first, across leader changes too. Apply itself refuses
a second change while a learner is pending (``validator_change_pending``).

A validator removed and added again keeps its Raft address (pysyncobj names nodes by
address). Its new data directory refuses votes in every term up to the one in which it
was promoted (``vote_after_term``, enforced in transport.py): the lost validator may have
voted in those terms, and Raft allows one vote per server per term (§5.2).

Majorities during a change (:func:`majority_after`)
---------------------------------------------------
The leader refuses a promotion or a removal after which the voters it can reach
would not be a majority of the new configuration: the change would commit and then
leave the cluster unable to commit anything more.
"""
from __future__ import annotations

import enum
import json
import os
import secrets
from dataclasses import dataclass

#: The identity file in a validator's data directory.
IDENTITY_FILE = "identity.json"
DATA_DIR_ID_BYTES = 16


class MembershipError(RuntimeError):
    """The data directory belongs to another chain or validator, or is unreadable."""


@dataclass(frozen=True, slots=True)
class DataDirIdentity:
    """What a data directory is: the chain and validator it belongs to, its random id
    (16 bytes) and whether it was formatted for genesis (``genesis``: it may vote as a
    genesis validator)."""

    chain_id: str
    validator_id: str
    data_dir_id: bytes
    genesis: bool
    #: Set when the directory was promoted: it votes only in later terms (see transport.py).
    vote_after_term: int = 0

    def to_doc(self) -> dict:
        return {"chain_id": self.chain_id, "validator_id": self.validator_id,
                "data_dir_id": self.data_dir_id.hex(), "genesis": self.genesis,
                "vote_after_term": self.vote_after_term}


def identity_path(data_dir: str) -> str:
    return os.path.join(data_dir, IDENTITY_FILE)


def read_identity(data_dir: str) -> DataDirIdentity | None:
    """The data directory's identity, None if it has none. Raises MembershipError on a bad file."""
    try:
        with open(identity_path(data_dir), "rb") as f:
            doc = json.loads(f.read())
        ident = DataDirIdentity(str(doc["chain_id"]), str(doc["validator_id"]), bytes.fromhex(doc["data_dir_id"]),
                                bool(doc["genesis"]), int(doc.get("vote_after_term", 0)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MembershipError(f"{identity_path(data_dir)} is unreadable ({e}); the data directory cannot be trusted "
                              "to vote. Move it away and start this validator as a replacement") from e
    if len(ident.data_dir_id) != DATA_DIR_ID_BYTES:
        raise MembershipError(f"{identity_path(data_dir)}: data_dir_id must be {DATA_DIR_ID_BYTES} bytes")
    return ident


def write_identity(data_dir: str, ident: DataDirIdentity) -> None:
    """Write the identity file atomically (temp file, fsync, rename, fsync of the directory)."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    path = identity_path(data_dir)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(json.dumps(ident.to_doc(), indent=2).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def format_data_dir(data_dir: str, *, chain_id: str, validator_id: str, genesis: bool) -> DataDirIdentity:
    """Give an empty data directory its identity (a fresh random id). ``genesis``: it may
    vote as the genesis validator ``validator_id``: only for a cluster's first start.
    Raises MembershipError if the directory already has an identity or holds data."""
    if read_identity(data_dir) is not None:
        raise MembershipError(f"{data_dir} is already formatted ({identity_path(data_dir)} exists)")
    # lost+found: what mkfs leaves on a new ext4 volume (a Kubernetes PVC).
    if os.path.isdir(data_dir) and any(n not in (IDENTITY_FILE, "lost+found") for n in os.listdir(data_dir)):
        raise MembershipError(f"{data_dir} is not empty: format only a new data directory")
    ident = DataDirIdentity(chain_id, validator_id, secrets.token_bytes(DATA_DIR_ID_BYTES), genesis)
    write_identity(data_dir, ident)
    return ident


def open_identity(data_dir: str, *, chain_id: str, validator_id: str, has_data: bool) -> DataDirIdentity:
    """The data directory's identity, creating a non-genesis one (a learner's) if it has
    none. ``has_data``: the directory already holds a store or journal (written by a build
    before identities: it is taken as formatted for genesis, as it was then). Raises
    MembershipError if the identity names another chain or validator."""
    ident = read_identity(data_dir)
    if ident is None:
        ident = DataDirIdentity(chain_id, validator_id, secrets.token_bytes(DATA_DIR_ID_BYTES), genesis=has_data)
        write_identity(data_dir, ident)
    if ident.chain_id != chain_id or ident.validator_id != validator_id:
        raise MembershipError(
            f"{data_dir} belongs to validator {ident.validator_id!r} of chain {ident.chain_id!r}, not "
            f"{validator_id!r} of {chain_id!r}: point data_dir at this validator's own directory")
    return ident


class Role(enum.Enum):
    VOTER = "voter"
    LEARNER = "learner"
    #: Not in the governed set (never added, or removed): it must not run.
    NOT_MEMBER = "not-member"


def role_of(ident: DataDirIdentity, record) -> tuple[Role, str]:
    """The part this data directory may play for governed record ``record`` (a
    ValidatorRecord or None), with the reason in words (for the log and GetStatus)."""
    if record is None:
        return Role.NOT_MEMBER, (f"validator {ident.validator_id!r} is not in the governed validator set (not added "
                                 "yet, or removed)")
    if not record.voting:
        return Role.LEARNER, "added as a learner: catching up, not voting until promoted"
    if record.data_dir_id:
        if record.data_dir_id == ident.data_dir_id:
            return Role.VOTER, "promoted with this data directory"
        return Role.LEARNER, (
            f"the validator set binds {record.id!r} to data directory {record.data_dir_id.hex()}, this one is "
            f"{ident.data_dir_id.hex()}: this directory never votes (its data may be a lost disk's replacement). "
            f"Replace the validator: remove_validator, add_validator, promote_validator")
    if ident.genesis:
        return Role.VOTER, "genesis validator, data directory formatted for genesis"
    return Role.LEARNER, (
        f"{record.id!r} is a genesis voter but this data directory was not formatted for genesis: it is a new "
        "directory (a lost disk?), and an empty voter could un-commit acknowledged transfers. It runs as a learner "
        "and never votes; replace the validator (ledger-validator validator replace)")


def majority(n: int) -> int:
    """Votes needed among ``n`` voters (Raft: more than half)."""
    return n // 2 + 1


def majority_after(voters_after: set[str], reachable: set[str]) -> tuple[bool, str]:
    """Whether the voters of the new configuration that are reachable now (``reachable``,
    Raft addresses, the leader included) are a majority of it. Returns (ok, explanation)."""
    live = voters_after & reachable
    need = majority(len(voters_after))
    text = f"{len(live)} of the {len(voters_after)} voters after the change are reachable, {need} are needed"
    return len(live) >= need, text
