"""Governance proposals, offline: build, serialise, co-sign and check them (no node needed).

The shape of Hyperledger Fabric's channel configuration updates (``configtxlator`` +
``peer channel signconfigtx``): an operator builds a proposal on the configuration
version it read, writes it to a *proposal file*, each administrator adds an approval
offline with their own Ed25519 key, and once ``threshold`` approvals are in, anyone
with an admin or ``operator`` identity submits it
(:meth:`raft_ledger_client.LedgerClient.submit_governance`)::

    from raft_ledger_client import governance as gov
    p = gov.build_proposal("ledger-dev", base_version=1, changes=[
        gov.add_member("bank-d", roles=["member"], keys={"k1": public_key_bytes})])
    p.approve("admin-1", "k1", admin1_private_key)
    p.approve("admin-2", "k1", admin2_private_key)
    with open("proposal.json", "w") as f:
        p.dump(f)

The signed bytes are the serialised ``ledger.v1.GovernanceProposal`` (chain id, base
version, ``valid_until`` ns, the changes); the file carries them base64-encoded plus a
readable ``summary`` that :meth:`ProposalFile.load` checks against the bytes, so what
an admin reads is what the admin signs. Every validator verifies the approvals again
at apply, against the admins' keys in the configuration.

Proposal file (JSON)::

    {"format": "ledger-governance-proposal/1", "chain_id": ..., "base_version": 1,
     "valid_until": <ns>, "summary": [<one line per change>],
     "proposal": <base64>, "approvals": [{"member_id", "key_id", "signature": <base64>}]}

Public-key file (what ``ledger-member keygen`` writes for the operator)::

    {"member_id": "bank-d", "key_id": "k1", "public_key": <64 hex digits>}
"""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import IO, Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb

FORMAT = "ledger-governance-proposal/1"
#: Seconds a proposal stays valid by default: co-signing offline takes a while. The
#: ledger refuses one whose ``valid_until`` has passed (at ingress, and at apply
#: against the block time).
DEFAULT_VALIDITY_S = 24 * 3600.0
ROLES = ("member", "auditor", "operator")

__all__ = [
    "DEFAULT_VALIDITY_S",
    "FORMAT",
    "ProposalFile",
    "add_key",
    "add_member",
    "build_proposal",
    "describe_change",
    "public_key_bytes",
    "read_public_key_file",
    "reinstate_member",
    "remove_member",
    "revoke_key",
    "set_admins",
    "set_issuers",
    "set_roles",
    "set_validators",
    "add_validator",
    "promote_validator",
    "remove_validator",
    "suspend_member",
    "write_public_key_file",
]


# -- changes ----------------------------------------------------------------------


def add_member(member_id: str, *, roles: Iterable[str] = ("member",), keys: Mapping[str, bytes]) -> pb.GovernanceChange:
    """Add an identity with ``roles`` and its Ed25519 public keys (key id -> 32 bytes);
    its keys sign from the block after the one that applies the proposal."""
    return pb.GovernanceChange(add_member=pb.AddMember(
        id=member_id, roles=list(roles), keys=[pb.GovernanceKey(key_id=k, public_key=v) for k, v in keys.items()]))


def suspend_member(member_id: str) -> pb.GovernanceChange:
    return pb.GovernanceChange(suspend_member=pb.MemberRef(id=member_id))


def reinstate_member(member_id: str) -> pb.GovernanceChange:
    return pb.GovernanceChange(reinstate_member=pb.MemberRef(id=member_id))


def remove_member(member_id: str) -> pb.GovernanceChange:
    """For good: the id is never reused."""
    return pb.GovernanceChange(remove_member=pb.MemberRef(id=member_id))


def add_key(member_id: str, key_id: str, public_key: bytes) -> pb.GovernanceChange:
    """A new key (ids are never reused within a member, even after revocation)."""
    return pb.GovernanceChange(add_key=pb.AddKey(member_id=member_id, key_id=key_id, public_key=public_key))


def revoke_key(member_id: str, key_id: str) -> pb.GovernanceChange:
    """Signatures with the key are refused from the next block on; history stays verifiable."""
    return pb.GovernanceChange(revoke_key=pb.RevokeKey(member_id=member_id, key_id=key_id))


def set_roles(member_id: str, roles: Iterable[str]) -> pb.GovernanceChange:
    return pb.GovernanceChange(set_roles=pb.SetRoles(member_id=member_id, roles=list(roles)))


def set_issuers(ledger: int, member_ids: Iterable[str]) -> pb.GovernanceChange:
    return pb.GovernanceChange(set_issuers=pb.SetIssuers(ledger=ledger, member_ids=list(member_ids)))


def set_admins(admins: Iterable[str], threshold: int) -> pb.GovernanceChange:
    return pb.GovernanceChange(set_admins=pb.SetAdmins(admins=list(admins), threshold=threshold))


def set_validators(validators: Iterable[Mapping]) -> pb.GovernanceChange:
    """Each validator as {"id", "grpc_address", "raft_address", "tls_cert_sha256", "public_key"} (the last two
    32 bytes or hex: the TLS certificate pin and the Ed25519 key that verifies its checkpoint signatures)."""
    out = []

    def raw(value) -> bytes:
        return bytes.fromhex(value) if isinstance(value, str) else bytes(value)

    for v in validators:
        out.append(pb.ValidatorEntry(id=v["id"], grpc_address=v["grpc_address"], raft_address=v["raft_address"],
                                     tls_cert_sha256=raw(v["tls_cert_sha256"]), public_key=raw(v["public_key"])))
    return pb.GovernanceChange(set_validators=pb.SetValidators(validators=out))


def add_validator(validator: Mapping) -> pb.GovernanceChange:
    """Add a validator as a learner (non-voting until promoted), given as for
    :func:`set_validators`. One membership change per proposal, one at a time."""
    (entry,) = set_validators([validator]).set_validators.validators
    return pb.GovernanceChange(add_validator=entry)


def promote_validator(validator_id: str, data_dir_id: bytes | str) -> pb.GovernanceChange:
    """Make learner ``validator_id`` a voter, bound to its data directory (16 bytes or
    hex, from the learner's ``GetStatus().data_dir_id``)."""
    raw = bytes.fromhex(data_dir_id) if isinstance(data_dir_id, str) else bytes(data_dir_id)
    return pb.GovernanceChange(promote_validator=pb.PromoteValidator(id=validator_id, data_dir_id=raw))


def remove_validator(validator_id: str) -> pb.GovernanceChange:
    """Remove a voter, or the pending learner (cancels its addition). Never the last voter."""
    return pb.GovernanceChange(remove_validator=pb.ValidatorRef(id=validator_id))


def describe_change(c: pb.GovernanceChange) -> str:
    """One readable line per change; keys in full (hex), never truncated."""
    kind = c.WhichOneof("change")
    v = getattr(c, kind) if kind else None
    if kind == "add_member":
        keys = ", ".join(f"{k.key_id}={k.public_key.hex()}" for k in v.keys)
        return f"add_member {v.id} roles={','.join(v.roles) or '-'} keys: {keys}"
    if kind in ("suspend_member", "reinstate_member", "remove_member"):
        return f"{kind} {v.id}"
    if kind == "add_key":
        return f"add_key {v.member_id} {v.key_id}={v.public_key.hex()}"
    if kind == "revoke_key":
        return f"revoke_key {v.member_id} {v.key_id}"
    if kind == "set_roles":
        return f"set_roles {v.member_id} roles={','.join(v.roles) or '-'}"
    if kind == "set_issuers":
        return f"set_issuers ledger={v.ledger} issuers={','.join(v.member_ids) or '-'}"
    if kind == "set_admins":
        return f"set_admins {','.join(v.admins)} threshold={v.threshold}"
    if kind == "set_validators":
        return "set_validators " + "; ".join(
            f"{e.id} grpc={e.grpc_address} raft={e.raft_address} pin={e.tls_cert_sha256.hex()} key={e.public_key.hex()}"
            for e in v.validators)
    if kind == "add_validator":
        return (f"add_validator {v.id} (learner) grpc={v.grpc_address} raft={v.raft_address} "
                f"pin={v.tls_cert_sha256.hex()} key={v.public_key.hex()}")
    if kind == "promote_validator":
        return f"promote_validator {v.id} data_dir_id={v.data_dir_id.hex()}"
    if kind == "remove_validator":
        return f"remove_validator {v.id}"
    return "(empty change)"


# -- keys -------------------------------------------------------------------------


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def write_public_key_file(fp: IO[str], member_id: str, key_id: str, public_key: bytes) -> None:
    json.dump({"member_id": member_id, "key_id": key_id, "public_key": public_key.hex()}, fp, indent=2)
    fp.write("\n")


def read_public_key_file(fp: IO[str]) -> tuple[str, str, bytes]:
    """(member_id, key_id, public key) from a public-key file; raises ValueError."""
    try:
        doc = json.load(fp)
        member_id, key_id, raw = doc["member_id"], doc["key_id"], bytes.fromhex(doc["public_key"])
        Ed25519PublicKey.from_public_bytes(raw)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"not a public-key file ({e})") from None
    return member_id, key_id, raw


# -- proposals ----------------------------------------------------------------------


@dataclass
class ProposalFile:
    """A proposal's exact bytes and the approvals gathered so far."""

    proposal: bytes
    approvals: list[pb.Approval] = field(default_factory=list)

    @property
    def decoded(self) -> pb.GovernanceProposal:
        return pb.GovernanceProposal.FromString(self.proposal)

    @property
    def summary(self) -> list[str]:
        return [describe_change(c) for c in self.decoded.changes]

    def approve(self, member_id: str, key_id: str, private_key: Ed25519PrivateKey) -> pb.Approval:
        """Add ``member_id``'s approval: an Ed25519 signature over the proposal bytes.
        Raises ValueError if that member already approved."""
        if any(a.member_id == member_id for a in self.approvals):
            raise ValueError(f"{member_id} has already approved this proposal")
        a = pb.Approval(member_id=member_id, key_id=key_id, signature=private_key.sign(self.proposal))
        self.approvals.append(a)
        return a

    def check_approvals(self, keys: Mapping[tuple[str, str], bytes]) -> list[tuple[pb.Approval, str]]:
        """Each approval with a verdict: ``ok``, ``unknown key`` or ``bad signature``;
        ``keys`` maps (member id, key id) to a raw public key (e.g. from
        :func:`configuration_keys`). Offline: no node involved."""
        out = []
        for a in self.approvals:
            raw = keys.get((a.member_id, a.key_id))
            if raw is None:
                out.append((a, "unknown key"))
                continue
            try:
                Ed25519PublicKey.from_public_bytes(raw).verify(a.signature, self.proposal)
                out.append((a, "ok"))
            except (InvalidSignature, ValueError):
                out.append((a, "bad signature"))
        return out

    def to_doc(self) -> dict:
        p = self.decoded
        return {
            "format": FORMAT,
            "chain_id": p.chain_id,
            "base_version": p.base_version,
            "valid_until": p.valid_until,
            "summary": self.summary,
            "proposal": base64.b64encode(self.proposal).decode(),
            "approvals": [
                {"member_id": a.member_id, "key_id": a.key_id, "signature": base64.b64encode(a.signature).decode()}
                for a in self.approvals
            ],
        }

    def dump(self, fp: IO[str]) -> None:
        json.dump(self.to_doc(), fp, indent=2)
        fp.write("\n")

    @classmethod
    def from_doc(cls, doc: dict) -> "ProposalFile":
        """Raises ValueError: not a proposal file, or its readable fields do not match
        the signed bytes (someone edited the file)."""
        try:
            if doc.get("format") != FORMAT:
                raise ValueError(f"format is not {FORMAT!r}")
            out = cls(
                proposal=base64.b64decode(doc["proposal"], validate=True),
                approvals=[pb.Approval(member_id=a["member_id"], key_id=a["key_id"],
                                       signature=base64.b64decode(a["signature"], validate=True))
                           for a in doc.get("approvals", [])],
            )
            p = out.decoded
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"not a governance proposal file ({e})") from None
        except Exception as e:  # protobuf DecodeError
            raise ValueError(f"proposal bytes do not decode ({e})") from None
        stated = (doc.get("chain_id"), doc.get("base_version"), doc.get("valid_until"), doc.get("summary"))
        if stated != (p.chain_id, p.base_version, p.valid_until, out.summary):
            raise ValueError("the file's readable fields do not match its signed proposal bytes: do not sign it")
        return out

    @classmethod
    def load(cls, fp: IO[str]) -> "ProposalFile":
        try:
            doc = json.load(fp)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON: {e}") from None
        return cls.from_doc(doc)


def build_proposal(chain_id: str, base_version: int, changes: Iterable[pb.GovernanceChange], *,
                   validity_s: float = DEFAULT_VALIDITY_S, wall_clock_ns=time.time_ns) -> ProposalFile:
    """A proposal of ``changes`` on configuration version ``base_version`` of chain
    ``chain_id``, valid for ``validity_s`` seconds from now (the ledger allows at most
    24 h); no approvals yet."""
    changes = list(changes)
    if not changes:
        raise ValueError("a proposal needs at least one change")
    if base_version < 1:
        raise ValueError("base_version is the configuration version the proposal builds on (>= 1)")
    p = pb.GovernanceProposal(chain_id=chain_id, base_version=base_version,
                              valid_until=wall_clock_ns() + int(validity_s * 1e9), changes=changes)
    return ProposalFile(proposal=p.SerializeToString(deterministic=True))


def configuration_keys(configuration_doc: Mapping) -> dict[tuple[str, str], bytes]:
    """(member id, key id) -> public key of every unrevoked key in a configuration
    document (:meth:`LedgerClient.get_configuration`, ``gov show --json``)."""
    return {
        (m["id"], k["key_id"]): bytes.fromhex(k["public_key"])
        for m in configuration_doc["members"]
        for k in m["keys"]
        if not k.get("revoked_at")
    }


__all__.append("configuration_keys")
