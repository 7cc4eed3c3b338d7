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
    (DER; pinned by peers and clients) and its Ed25519 public key (b"" until used)."""

    id: str
    grpc_address: str
    raft_address: str
    tls_cert_sha256: bytes = b""
    public_key: bytes = b""


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
