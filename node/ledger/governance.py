"""The governed configuration: who may sign, read, issue and govern, as ledger state.

A versioned :class:`Configuration` lives in the ledger's state (genesis is version 1)
and changes only by governance transactions, approved by at least ``threshold`` of
the ``admins`` and applied deterministically in log order like every other
transaction (Hyperledger Fabric's channel configuration updates: a versioned
config, a modification policy of M-of-N admin signatures, and each update naming the
version it was built on so that a stale one is refused, like Fabric's read set).

Roles (Fabric's NodeOUs, etcd's RBAC; default deny as in Consul's ACLs):

======== ==================================================================
member   holds accounts and submits create_accounts / create_transfers; reads
         only its own accounts and the transfers and balances touching them
auditor  reads everything; submits nothing but governance carriers
operator reads status and the Admin service
======== ==================================================================

Administrators are identities named in ``admins`` (they need no role); their
approvals authorise governance changes. Issuers are named per ledger (currency):
only an issuer's accounts on that ledger may carry a debit balance.

Key validity is by height (so history signed with a later-revoked key stays
verifiable): a key signs for blocks ``valid_from <= height < revoked_at``
(``revoked_at`` 0 = not revoked). A key added or revoked by the governance
transaction of block h takes effect at block h + 1. Key ids are never reused
within a member, and members are never deleted (``removed`` is a status), so a
(member, key id) pair names one public key forever.

Pure: standard library only, no I/O. :func:`encode_configuration` is canonical
(every validator produces the same bytes).
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass, replace

#: Roles an identity may hold.
ROLES = ("member", "auditor", "operator")
#: Bytes of an Ed25519 public key (RFC 8032).
#: The size of a data directory's id (node/membership.py).
DATA_DIR_ID_BYTES = 16
PUBLIC_KEY_BYTES = 32


class MemberStatus(str, enum.Enum):
    active = "active"
    suspended = "suspended"  # signatures refused, reads refused; reinstate restores it
    removed = "removed"  # for good: the id is never reused


@dataclass(frozen=True, slots=True)
class MemberKey:
    """One Ed25519 public key of a member; valid for heights ``valid_from <= h < revoked_at``."""

    key_id: str
    public_key: bytes
    valid_from: int = 1
    revoked_at: int = 0

    def active_at(self, height: int) -> bool:
        return self.valid_from <= height and (self.revoked_at == 0 or height < self.revoked_at)


@dataclass(frozen=True, slots=True)
class Member:
    """An identity: a member bank, an auditor, an operator or an administrator."""

    id: str
    roles: tuple[str, ...]
    keys: tuple[MemberKey, ...]
    status: MemberStatus = MemberStatus.active

    def key(self, key_id: str) -> MemberKey | None:
        for k in self.keys:
            if k.key_id == key_id:
                return k
        return None

    @property
    def active(self) -> bool:
        return self.status == MemberStatus.active


@dataclass(frozen=True, slots=True)
class ValidatorRecord:
    """A validator of the governed set: addresses, the SHA-256 of its TLS certificate
    (DER; pinned by peers and clients) and its Ed25519 public key (b"" until used).

    ``voting``: a voter of the Raft configuration and a signer of certificates; False
    for a learner (added by ``add_validator``, catching up, counted in no majority).
    ``data_dir_id``: the 16-byte id of the data directory a promoted learner was
    promoted with (b"" for genesis validators). Only that data directory may vote
    as this validator: a replacement that starts empty has another id and stays a
    learner until it is removed and added again (see node/membership.py).
    """

    id: str
    grpc_address: str
    raft_address: str
    tls_cert_sha256: bytes = b""
    public_key: bytes = b""
    voting: bool = True
    data_dir_id: bytes = b""


@dataclass(frozen=True, slots=True)
class Configuration:
    """The governed configuration at one ``version`` (1 = genesis).

    ``members`` sorted by id; ``issuers`` as ((ledger, (member ids…)), …) sorted by
    ledger; ``admins`` sorted; ``validators`` in genesis order.
    """

    version: int
    members: tuple[Member, ...]
    issuers: tuple[tuple[int, tuple[str, ...]], ...]
    admins: tuple[str, ...]
    threshold: int
    validators: tuple[ValidatorRecord, ...]

    def member(self, member_id: str) -> Member | None:
        # Configurations are small (tens of identities): a linear scan.
        for m in self.members:
            if m.id == member_id:
                return m
        return None

    def is_issuer(self, member_id: str, ledger: int) -> bool:
        for lg, ids in self.issuers:
            if lg == ledger:
                return member_id in ids
        return False

    def has_role(self, member_id: str, role: str) -> bool:
        m = self.member(member_id)
        return m is not None and m.active and role in m.roles

    def validator(self, validator_id: str) -> "ValidatorRecord | None":
        for v in self.validators:
            if v.id == validator_id:
                return v
        return None

    @property
    def voters(self) -> tuple["ValidatorRecord", ...]:
        """The voting validators: the Raft configuration and the certifying set."""
        return tuple(v for v in self.validators if v.voting)

    @property
    def learners(self) -> tuple["ValidatorRecord", ...]:
        """Validators added but not yet promoted (at most one: one change at a time)."""
        return tuple(v for v in self.validators if not v.voting)

    def with_members(self, members) -> "Configuration":
        return replace(self, members=tuple(sorted(members, key=lambda m: m.id)))


# -- canonical encoding -------------------------------------------------------------


def configuration_to_doc(cfg: Configuration) -> dict:
    """A JSON-able dict (bytes as lower-case hex); the shape of ``gov show --json``."""
    return {
        "version": cfg.version,
        "members": [
            {
                "id": m.id,
                "roles": list(m.roles),
                "status": m.status.value,
                "keys": [
                    {"key_id": k.key_id, "public_key": k.public_key.hex(), "valid_from": k.valid_from, "revoked_at": k.revoked_at}
                    for k in m.keys
                ],
            }
            for m in cfg.members
        ],
        "issuers": {str(lg): list(ids) for lg, ids in cfg.issuers},
        "admins": list(cfg.admins),
        "threshold": cfg.threshold,
        "validators": [
            {
                "id": v.id,
                "grpc_address": v.grpc_address,
                "raft_address": v.raft_address,
                "tls_cert_sha256": v.tls_cert_sha256.hex(),
                "public_key": v.public_key.hex(),
                "voting": v.voting,
                "data_dir_id": v.data_dir_id.hex(),
            }
            for v in cfg.validators
        ],
    }


def configuration_from_doc(doc: dict) -> Configuration:
    """Inverse of :func:`configuration_to_doc`; raises ValueError/KeyError/TypeError on a bad doc."""
    members = tuple(
        Member(
            id=m["id"],
            roles=tuple(m["roles"]),
            status=MemberStatus(m.get("status", "active")),
            keys=tuple(
                MemberKey(k["key_id"], bytes.fromhex(k["public_key"]), int(k.get("valid_from", 1)), int(k.get("revoked_at", 0)))
                for k in m["keys"]
            ),
        )
        for m in doc["members"]
    )
    issuers = tuple(sorted((int(lg), tuple(sorted(ids))) for lg, ids in doc.get("issuers", {}).items()))
    validators = tuple(
        ValidatorRecord(
            v["id"], v["grpc_address"], v["raft_address"],
            bytes.fromhex(v.get("tls_cert_sha256", "")), bytes.fromhex(v.get("public_key", "")),
            bool(v.get("voting", True)), bytes.fromhex(v.get("data_dir_id", "")),
        )
        for v in doc["validators"]
    )
    return Configuration(
        version=int(doc["version"]),
        members=tuple(sorted(members, key=lambda m: m.id)),
        issuers=issuers,
        admins=tuple(sorted(doc["admins"])),
        threshold=int(doc["threshold"]),
        validators=validators,
    )


def encode_configuration(cfg: Configuration) -> bytes:
    """Canonical bytes: sorted-key compact JSON of :func:`configuration_to_doc`."""
    return json.dumps(configuration_to_doc(cfg), sort_keys=True, separators=(",", ":")).encode()


def decode_configuration(b: bytes) -> Configuration:
    """Inverse of :func:`encode_configuration`; raises ValueError on malformed bytes."""
    try:
        return configuration_from_doc(json.loads(b))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"malformed configuration: {e}") from e


# -- governance transactions ----------------------------------------------------------


class TxRejection(enum.IntEnum):
    """Why a whole transaction was refused at apply time (0: it was applied), in
    precedence order: when several apply, the lowest wins. Nothing of a rejected
    transaction is applied; its hash is recorded with the code, so a retry answers
    the same. Ours (TigerBeetle has no signers): authorisation is decided against
    the configuration at the start of the block, governance against the working
    configuration of the block (governance transactions apply one after another).

    Signer (every transaction): ``signer_*``. Governance transaction: the proposal
    (``proposal_*``, ``config_version_stale``), then the approvals in their order
    (``approval_*``), then their number, then the changes in their order (the first
    failing change's code; :func:`~.governance.apply_changes`).
    """

    none = 0
    signer_not_found = 1
    signer_not_active = 2
    signer_key_not_found = 3
    signer_key_not_active = 4
    #: create_accounts/create_transfers need role ``member``; governance an admin or ``operator``.
    signer_role_not_permitted = 5
    proposal_wrong_chain = 6
    proposal_expired = 7
    #: ``base_version`` is not the configuration's version (Fabric's read-set check).
    config_version_stale = 8
    approval_duplicate = 9
    approval_not_admin = 10
    approval_key_not_active = 11
    approval_signature_invalid = 12
    approvals_below_threshold = 13
    change_invalid = 14
    role_unknown = 15
    member_exists = 16
    member_not_found = 17
    member_removed = 18
    member_status_unchanged = 19
    member_still_referenced = 20
    key_exists = 21
    key_not_found = 22
    key_already_revoked = 23
    issuer_not_member = 24
    admin_not_member = 25
    threshold_out_of_range = 26
    #: A malformed validator record, or a set_validators that would change who the validators are.
    validator_invalid = 27
    #: The result would leave fewer than ``threshold`` active admins with a usable key.
    admin_quorum_lost = 28
    #: Decided by every validator from the committed bytes (only a faulty or hostile
    #: leader proposes these; numbered last to keep the wire numbers, but checked first):
    #: not a well-formed SignedTransaction for this chain …
    envelope_invalid = 29
    #: … or, after the signer checks, a signature that does not verify.
    signature_invalid = 30
    #: Another membership change is pending (a learner not yet promoted), or the proposal
    #: holds more than one: Raft membership changes one server at a time.
    validator_change_pending = 31
    #: add_validator of an id, address or key the current set already has.
    validator_exists = 32
    #: promote/remove of an id that is not in the set.
    validator_not_found = 33
    #: promote_validator of a validator that already votes.
    validator_not_learner = 34
    #: remove_validator of the last voter.
    validator_quorum_lost = 35


#
# A governance transaction carries a proposal (the exact bytes the admins signed: a
# serialised ``ledger.v1.GovernanceProposal``, decoded at ingress into the dataclasses
# below, since the core never imports protobuf) and the admins' approvals. Applying it
# is :func:`apply_changes` on the working configuration of the block.


@dataclass(frozen=True, slots=True)
class AddMember:
    id: str
    roles: tuple[str, ...]
    keys: tuple[tuple[str, bytes], ...]  # (key_id, Ed25519 public key)


@dataclass(frozen=True, slots=True)
class SuspendMember:
    id: str


@dataclass(frozen=True, slots=True)
class ReinstateMember:
    id: str


@dataclass(frozen=True, slots=True)
class RemoveMember:
    id: str


@dataclass(frozen=True, slots=True)
class AddKey:
    member_id: str
    key_id: str
    public_key: bytes


@dataclass(frozen=True, slots=True)
class RevokeKey:
    member_id: str
    key_id: str


@dataclass(frozen=True, slots=True)
class SetRoles:
    member_id: str
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetIssuers:
    ledger: int
    member_ids: tuple[str, ...]  # empty: the ledger has no issuer any more


@dataclass(frozen=True, slots=True)
class SetAdmins:
    admins: tuple[str, ...]
    threshold: int


@dataclass(frozen=True, slots=True)
class SetValidators:
    """Change the addresses, TLS pins or keys of the current validators. It cannot
    change who they are (ids, Raft addresses, voting): that is add/promote/remove."""

    validators: tuple[ValidatorRecord, ...]


@dataclass(frozen=True, slots=True)
class AddValidator:
    """Add a validator as a learner (non-voting; ``validator.voting`` is ignored)."""

    validator: ValidatorRecord


@dataclass(frozen=True, slots=True)
class PromoteValidator:
    """Make learner ``id`` a voter, bound to the data directory ``data_dir_id`` (16
    bytes) that caught up: only that directory may vote as ``id``."""

    id: str
    data_dir_id: bytes


@dataclass(frozen=True, slots=True)
class RemoveValidator:
    """Remove validator ``id`` (a voter, or a learner: cancels its addition)."""

    id: str


#: The changes of Raft membership: at most one per proposal, and one at a time.
MEMBERSHIP_CHANGES = (AddValidator, PromoteValidator, RemoveValidator)


#: Every change kind, by the name used on the wire (the proto oneof) and in the codec.
CHANGE_KINDS: dict[str, type] = {
    "add_member": AddMember,
    "suspend_member": SuspendMember,
    "reinstate_member": ReinstateMember,
    "remove_member": RemoveMember,
    "add_key": AddKey,
    "revoke_key": RevokeKey,
    "set_roles": SetRoles,
    "set_issuers": SetIssuers,
    "set_admins": SetAdmins,
    "set_validators": SetValidators,
    "add_validator": AddValidator,
    "promote_validator": PromoteValidator,
    "remove_validator": RemoveValidator,
}
_KIND_OF = {cls: name for name, cls in CHANGE_KINDS.items()}

Change = (AddMember | SuspendMember | ReinstateMember | RemoveMember | AddKey | RevokeKey | SetRoles | SetIssuers
          | SetAdmins | SetValidators | AddValidator | PromoteValidator | RemoveValidator)


@dataclass(frozen=True, slots=True)
class Approval:
    """An administrator's Ed25519 signature (64 bytes) over the exact proposal bytes."""

    member_id: str
    key_id: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class GovernanceProposal:
    """A decoded governance transaction: the proposal's fields, its exact bytes
    (``proposal``, what every approval signs) and the approvals.

    ``base_version`` is the configuration version the proposal was built on (a
    proposal applies only on top of exactly that version); ``valid_until`` ns since
    the epoch, compared with the block timestamp at apply."""

    chain_id: str
    base_version: int
    valid_until: int
    changes: tuple
    proposal: bytes
    approvals: tuple[Approval, ...]


def change_to_doc(c) -> dict:
    """A JSON-able dict of one change (bytes as hex): ``{"kind": ..., fields...}``."""
    kind = _KIND_OF[type(c)]
    if isinstance(c, AddMember):
        return {"kind": kind, "id": c.id, "roles": list(c.roles), "keys": [[k, pk.hex()] for k, pk in c.keys]}
    if isinstance(c, AddKey):
        return {"kind": kind, "member_id": c.member_id, "key_id": c.key_id, "public_key": c.public_key.hex()}
    if isinstance(c, SetValidators):
        return {
            "kind": kind,
            "validators": [[v.id, v.grpc_address, v.raft_address, v.tls_cert_sha256.hex(), v.public_key.hex()] for v in c.validators],
        }
    if isinstance(c, AddValidator):
        v = c.validator
        return {"kind": kind, "validator": [v.id, v.grpc_address, v.raft_address, v.tls_cert_sha256.hex(), v.public_key.hex()]}
    if isinstance(c, PromoteValidator):
        return {"kind": kind, "id": c.id, "data_dir_id": c.data_dir_id.hex()}
    doc: dict[str, object] = {"kind": kind}
    for f in c.__slots__:
        v = getattr(c, f)
        doc[f] = list(v) if isinstance(v, tuple) else v
    return doc


def change_from_doc(doc: dict):
    """Inverse of :func:`change_to_doc`; raises ValueError on a bad doc."""
    try:
        cls = CHANGE_KINDS[doc["kind"]]
        if cls is AddMember:
            return AddMember(doc["id"], tuple(doc["roles"]), tuple((k, bytes.fromhex(pk)) for k, pk in doc["keys"]))
        if cls is AddKey:
            return AddKey(doc["member_id"], doc["key_id"], bytes.fromhex(doc["public_key"]))
        if cls is SetValidators:
            return SetValidators(tuple(
                ValidatorRecord(i, g, r, bytes.fromhex(pin), bytes.fromhex(pk)) for i, g, r, pin, pk in doc["validators"]))
        if cls is AddValidator:
            i, g, r, pin, pk = doc["validator"]
            return AddValidator(ValidatorRecord(i, g, r, bytes.fromhex(pin), bytes.fromhex(pk), False))
        if cls is PromoteValidator:
            return PromoteValidator(doc["id"], bytes.fromhex(doc["data_dir_id"]))
        args = [tuple(doc[f]) if isinstance(doc[f], list) else doc[f] for f in getattr(cls, "__slots__")]
        return cls(*args)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed governance change: {e!r}") from e


def encode_changes(chain_id: str, base_version: int, valid_until: int, changes) -> bytes:
    """Canonical bytes of a decoded proposal (sorted-key compact JSON), for the Raft entry."""
    doc = {"chain_id": chain_id, "base_version": base_version, "valid_until": valid_until,
           "changes": [change_to_doc(c) for c in changes]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode_changes(b: bytes) -> tuple[str, int, int, tuple]:
    """Inverse of :func:`encode_changes`: (chain_id, base_version, valid_until, changes).
    Raises ValueError."""
    try:
        doc = json.loads(b)
        return (str(doc["chain_id"]), int(doc["base_version"]), int(doc["valid_until"]),
                tuple(change_from_doc(c) for c in doc["changes"]))
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed governance proposal: {e!r}") from e


def _valid_id(s) -> bool:
    return isinstance(s, str) and 0 < len(s.encode()) <= 64 and "/" not in s


def _valid_record(v: ValidatorRecord) -> bool:
    return (_valid_id(v.id) and len(v.tls_cert_sha256) in (0, 32) and len(v.public_key) in (0, PUBLIC_KEY_BYTES)
            and ":" in v.grpc_address and ":" in v.raft_address)


def _valid_roles(roles) -> bool:
    return all(r in ROLES for r in roles) and len(set(roles)) == len(roles)


def admin_quorum_possible(cfg: Configuration, height: int) -> bool:
    """True iff at least ``threshold`` admins are active members with a key usable at ``height``."""
    able = 0
    for a in cfg.admins:
        m = cfg.member(a)
        if m is not None and m.active and any(k.active_at(height) for k in m.keys):
            able += 1
    return able >= cfg.threshold


def apply_changes(cfg: Configuration, changes, height: int):
    """Apply the ``changes`` of one governance transaction of block ``height`` to ``cfg``.

    Returns the new Configuration (``version`` + 1) or the first failing change's
    :class:`~.types.TxRejection` code (nothing applied). Rules: adding an existing
    member or key id (also a revoked key's, also a removed member's) is refused: ids
    are never reused; a revoke sets ``revoked_at = height + 1`` and an added key
    ``valid_from = height + 1`` (both take effect from the next block); removal is a
    status; roles come from :data:`ROLES`; admins and issuers are existing, non-removed
    members; the threshold is in 1..len(admins); and the result must leave at least
    ``threshold`` active admins with a key usable at ``height + 1``.

    Validators: ``add_validator`` adds a learner (never a voter), refused while another
    learner is pending or if its id, an address, its key or its TLS pin is already in the
    set; ``promote_validator`` makes the learner a voter bound to a data directory;
    ``remove_validator`` removes a voter or the pending learner, never the last voter.
    A proposal holds at most one of these (Raft changes one server at a time: the Raft
    thesis §4.1); ``set_validators`` may change addresses of the gRPC API, pins and keys
    of the current validators but not who they are.
    """
    R = TxRejection
    nxt = height + 1
    members = {m.id: m for m in cfg.members}
    issuers = dict(cfg.issuers)
    admins, threshold, validators = cfg.admins, cfg.threshold, cfg.validators

    def present(mid):
        m = members.get(mid)
        return m is not None and m.status != MemberStatus.removed

    for c in changes:
        if isinstance(c, AddMember):
            if not _valid_id(c.id) or not c.keys or len({k for k, _ in c.keys}) != len(c.keys):
                return R.change_invalid
            if any(not _valid_id(k) or len(pk) != PUBLIC_KEY_BYTES for k, pk in c.keys):
                return R.change_invalid
            if not _valid_roles(c.roles):
                return R.role_unknown
            if c.id in members:
                return R.member_exists
            members[c.id] = Member(c.id, tuple(c.roles), tuple(MemberKey(k, pk, nxt, 0) for k, pk in c.keys))
        elif isinstance(c, (SuspendMember, ReinstateMember, RemoveMember)):
            m = members.get(c.id)
            if m is None:
                return R.member_not_found
            if m.status == MemberStatus.removed:
                return R.member_removed
            if isinstance(c, SuspendMember):
                if m.status != MemberStatus.active:
                    return R.member_status_unchanged
                status = MemberStatus.suspended
            elif isinstance(c, ReinstateMember):
                if m.status != MemberStatus.suspended:
                    return R.member_status_unchanged
                status = MemberStatus.active
            else:
                if c.id in admins or any(c.id in ids for ids in issuers.values()):
                    return R.member_still_referenced
                status = MemberStatus.removed
            members[c.id] = replace(m, status=status)
        elif isinstance(c, AddKey):
            m = members.get(c.member_id)
            if m is None:
                return R.member_not_found
            if m.status == MemberStatus.removed:
                return R.member_removed
            if not _valid_id(c.key_id) or len(c.public_key) != PUBLIC_KEY_BYTES:
                return R.change_invalid
            if m.key(c.key_id) is not None:
                return R.key_exists
            members[m.id] = replace(m, keys=m.keys + (MemberKey(c.key_id, c.public_key, nxt, 0),))
        elif isinstance(c, RevokeKey):
            m = members.get(c.member_id)
            if m is None:
                return R.member_not_found
            k = m.key(c.key_id)
            if k is None:
                return R.key_not_found
            if k.revoked_at != 0:
                return R.key_already_revoked
            members[m.id] = replace(m, keys=tuple(replace(x, revoked_at=nxt) if x.key_id == c.key_id else x for x in m.keys))
        elif isinstance(c, SetRoles):
            m = members.get(c.member_id)
            if m is None:
                return R.member_not_found
            if m.status == MemberStatus.removed:
                return R.member_removed
            if not _valid_roles(c.roles):
                return R.role_unknown
            members[m.id] = replace(m, roles=tuple(c.roles))
        elif isinstance(c, SetIssuers):
            if not 1 <= c.ledger <= 0xFFFFFFFF or len(set(c.member_ids)) != len(c.member_ids):
                return R.change_invalid
            if any(not present(i) for i in c.member_ids):
                return R.issuer_not_member
            if c.member_ids:
                issuers[c.ledger] = tuple(sorted(c.member_ids))
            else:
                issuers.pop(c.ledger, None)
        elif isinstance(c, SetAdmins):
            if not c.admins or len(set(c.admins)) != len(c.admins):
                return R.change_invalid
            if any(not present(a) for a in c.admins):
                return R.admin_not_member
            if not 1 <= c.threshold <= len(c.admins):
                return R.threshold_out_of_range
            admins, threshold = tuple(sorted(c.admins)), c.threshold
        elif isinstance(c, SetValidators):
            vs = c.validators
            if not vs or len({v.id for v in vs}) != len(vs) or len({v.grpc_address for v in vs}) != len(vs) \
                    or len({v.raft_address for v in vs}) != len(vs):
                return R.validator_invalid
            if any(not _valid_record(v) for v in vs):
                return R.validator_invalid
            # Who the validators are (ids, Raft addresses: their Raft identity, voting,
            # bound data directory) changes only one server at a time (add/promote/remove).
            current = {v.id: v for v in validators}
            if set(current) != {v.id for v in vs} or any(
                    current[v.id].raft_address != v.raft_address for v in vs):
                return R.validator_invalid
            validators = tuple(replace(v, voting=current[v.id].voting, data_dir_id=current[v.id].data_dir_id)
                               for v in vs)
        elif isinstance(c, MEMBERSHIP_CHANGES):
            if sum(isinstance(x, MEMBERSHIP_CHANGES) for x in changes) != 1:
                return R.validator_change_pending
            pending = [v for v in validators if not v.voting]
            if isinstance(c, AddValidator):
                v = replace(c.validator, voting=False, data_dir_id=b"")
                if not _valid_record(v) or len(v.tls_cert_sha256) != 32 or len(v.public_key) != PUBLIC_KEY_BYTES:
                    return R.validator_invalid
                if pending:
                    return R.validator_change_pending
                if any(x.id == v.id or x.grpc_address == v.grpc_address or x.raft_address == v.raft_address
                       or x.public_key == v.public_key or x.tls_cert_sha256 == v.tls_cert_sha256 for x in validators):
                    return R.validator_exists
                validators = validators + (v,)
            else:
                rec = next((x for x in validators if x.id == c.id), None)
                if rec is None:
                    return R.validator_not_found
                if pending and pending[0].id != c.id:
                    return R.validator_change_pending
                if isinstance(c, PromoteValidator):
                    if rec.voting:
                        return R.validator_not_learner
                    if len(c.data_dir_id) != DATA_DIR_ID_BYTES:
                        return R.validator_invalid
                    validators = tuple(replace(x, voting=True, data_dir_id=c.data_dir_id) if x.id == c.id else x
                                       for x in validators)
                else:
                    if rec.voting and sum(x.voting for x in validators) == 1:
                        return R.validator_quorum_lost
                    validators = tuple(x for x in validators if x.id != c.id)
        else:
            return R.change_invalid
    out = Configuration(
        version=cfg.version + 1,
        members=tuple(sorted(members.values(), key=lambda m: m.id)),
        issuers=tuple(sorted(issuers.items())),
        admins=admins,
        threshold=threshold,
        validators=validators,
    )
    if not admin_quorum_possible(out, nxt):
        return R.admin_quorum_lost
    return out
