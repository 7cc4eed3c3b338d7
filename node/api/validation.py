"""Stateless request checks and decoding, cheapest rejection first.

The ingress order of a Submit (TigerBeetle, etcd ``--max-request-bytes``, Fabric's
orderer ``AbsoluteMaxBytes``): gRPC's message cap; :func:`check_submit_size`;
:func:`precheck_envelope` per transaction; the servicer looks up member and key and
verifies the Ed25519 signature over the raw ``body`` bytes; only then
:func:`decode_submit` parses the bodies and checks chain, validity window and events.

Pure functions of the request: no store, no Raft, no gRPC context. A request that
fails a check raises :class:`RequestError` (its ``status`` names the gRPC status
the servicer answers with); nothing of it has been proposed. Signatures are
checked by the servicer (:mod:`raft_ledger_node.crypto`), after these.
"""
from __future__ import annotations

import dataclasses

from dataclasses import replace

from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.api.mapping import (
    account_filter_from_pb,
    account_from_pb,
    query_filter_from_pb,
    transfer_from_pb,
)
from raft_ledger_node.crypto import sha256
from raft_ledger_node.ledger import governance as gov
from raft_ledger_node.ledger import limits
from raft_ledger_node.ledger.filters import AccountFilter, QueryFilter
from raft_ledger_node.ledger.types import Operation, Tx

#: Bytes of an Ed25519 signature (RFC 8032).
SIGNATURE_BYTES = 64


class RequestError(ValueError):
    """The request is refused as a whole; ``status`` is the gRPC status code name."""

    status = "INVALID_ARGUMENT"


class BadRequest(RequestError):
    """Malformed, or over a per-transaction or per-query limit: INVALID_ARGUMENT."""


class Denied(RequestError):
    """The signer may not do this (unknown, suspended or removed member; unknown or
    revoked key; a role that does not permit the operation): PERMISSION_DENIED."""

    status = "PERMISSION_DENIED"


class TooLarge(RequestError):
    """The Submit as a whole exceeds one block's limits: RESOURCE_EXHAUSTED."""

    status = "RESOURCE_EXHAUSTED"


def check_submit_size(request: pb.SubmitRequest) -> None:
    """Transactions in 1..submit_txs_max and their bytes within submit_bytes_max
    (checked before anything is parsed). Raises BadRequest or TooLarge."""
    n = len(request.transactions)
    if n == 0:
        raise BadRequest("no transactions")
    if n > limits.submit_txs_max:
        raise BadRequest(f"{n} transactions exceeds submit_txs_max={limits.submit_txs_max}")
    size = sum(stx.ByteSize() for stx in request.transactions)
    if size > limits.submit_bytes_max:
        raise TooLarge(f"{size} bytes of transactions exceeds submit_bytes_max={limits.submit_bytes_max}; split the Submit")


def _check_signer_fields(signed, where: str) -> None:
    """member_id, key_id and signature of an envelope or an approval: ids of
    1..member_id_bytes_max / key_id_bytes_max bytes, a 64-byte signature. Raises BadRequest."""
    if not signed.member_id or len(signed.member_id.encode()) > limits.member_id_bytes_max:
        raise BadRequest(f"{where}: member_id must be 1..{limits.member_id_bytes_max} bytes")
    if not signed.key_id or len(signed.key_id.encode()) > limits.key_id_bytes_max:
        raise BadRequest(f"{where}: key_id must be 1..{limits.key_id_bytes_max} bytes")
    if len(signed.signature) != SIGNATURE_BYTES:
        raise BadRequest(f"{where}: signature must be {SIGNATURE_BYTES} bytes (Ed25519)")


def precheck_envelope(stx: pb.SignedTransaction, index: int) -> None:
    """The checks that cost nothing, before any signature is verified or body parsed.

    Raises BadRequest: member id not 1..member_id_bytes_max bytes, key id not
    1..key_id_bytes_max bytes, signature not 64
    bytes, unknown fields in the envelope (they would change its hash without
    touching what was signed), envelope over tx_bytes_max.
    """
    where = f"transaction {index}"
    _check_signer_fields(stx, where)
    if len(UnknownFieldSet(stx)):
        raise BadRequest(f"{where}: the envelope has fields unknown to ledger.v1.SignedTransaction")
    size = stx.ByteSize()
    if size > limits.tx_bytes_max:
        raise BadRequest(f"{where}: {size} bytes exceeds tx_bytes_max={limits.tx_bytes_max}")


def decode_submit(request: pb.SubmitRequest, *, chain_id: str, now_ns: int) -> list[Tx]:
    """Every transaction decoded, their events within submit_events_max. The envelopes
    were prechecked (:func:`precheck_envelope`) and authenticated by the caller, so
    only the bodies are checked here (see :func:`decode_signed`). Raises BadRequest
    (naming the transaction) or TooLarge. A governance transaction must be alone in
    its Submit: its entry payload (decoded changes, proposal, approvals) is bounded per
    transaction, not by submit_bytes_max, so one per Submit keeps a Submit within one
    Raft entry."""
    txs = [_decode_body(stx, i, chain_id, now_ns) for i, stx in enumerate(request.transactions)]
    if len(txs) > 1 and any(tx.governance is not None for tx in txs):
        raise BadRequest("a governance transaction is submitted alone, one per Submit")
    events = sum(len(tx.events) for tx in txs)
    if events > limits.submit_events_max:
        raise TooLarge(f"{events} events exceeds submit_events_max={limits.submit_events_max}; split the Submit")
    return txs


def decode_signed(stx: pb.SignedTransaction, index: int, *, chain_id: str, now_ns: int) -> Tx:
    """Parse and check the body of one signed transaction whose signature was verified.

    ``chain_id`` is this chain's (genesis); ``now_ns`` the leader's clock (ns since
    the epoch). ``tx_hash`` is SHA-256 of the envelope's deterministic
    serialisation. Raises BadRequest: the checks of :func:`precheck_envelope`; body
    not a ``ledger.v1.Transaction`` or with unknown fields; signed for another chain;
    ``valid_until`` unset, past, or more than tx_validity_ns_max ahead; no operation;
    no events or more than tx_events_max; an account with ``owner`` set.
    """
    precheck_envelope(stx, index)
    return _decode_body(stx, index, chain_id, now_ns)


def tx_from_committed(envelope: bytes, *, chain_id: str) -> Tx:
    """The transaction a committed envelope carries, decoded by this validator itself.

    Every validator calls it on every envelope of every committed entry (the entry
    holds nothing else), so what it applies is what the member signed, whatever the
    leader did. Deterministic: the checks of :func:`decode_signed` except the clock
    ones (those were the leader's at ingress), plus canonical bytes. The Tx carries the
    signed body and signature, which apply verifies against the signer's key at that
    height. Never raises: bytes an honest leader never proposes come back as a Tx with
    ``invalid = envelope_invalid`` and no events.
    """
    stx = pb.SignedTransaction()
    try:
        stx.ParseFromString(envelope)
        precheck_envelope(stx, 0)
        if stx.SerializeToString(deterministic=True) != envelope:
            raise BadRequest("the envelope is not in its deterministic serialisation")
        tx = _decode_body(stx, 0, chain_id, None)
    except (DecodeError, RequestError):
        return Tx(member_id="", operation=Operation.create_transfers, events=(), envelope=envelope,
                  tx_hash=sha256(envelope), invalid=int(gov.TxRejection.envelope_invalid))
    return replace(tx, signed_body=bytes(stx.body), signature=bytes(stx.signature))


def _decode_body(stx: pb.SignedTransaction, index: int, chain_id: str, now_ns: int | None) -> Tx:
    """:func:`decode_signed` without the envelope prechecks (already done by the caller).
    ``now_ns`` None: a committed transaction, whose validity window the leader checked."""
    where = f"transaction {index}"
    body = pb.Transaction()
    try:
        body.ParseFromString(stx.body)
    except DecodeError as e:
        raise BadRequest(f"{where}: body is not a ledger.v1.Transaction ({e})") from e
    if len(UnknownFieldSet(body)):
        raise BadRequest(f"{where}: the body has fields unknown to ledger.v1.Transaction")
    if body.chain_id != chain_id:
        raise BadRequest(f"{where}: signed for chain {body.chain_id[:64]!r}, this is chain {chain_id!r}")
    if body.valid_until == 0:
        raise BadRequest(f"{where}: valid_until is required (ns since the epoch)")
    if now_ns is not None and body.valid_until < now_ns:
        raise BadRequest(f"{where}: expired: valid_until {body.valid_until} is {(now_ns - body.valid_until) / 1e9:.3f} s ago")
    if now_ns is not None and body.valid_until > now_ns + limits.tx_validity_ns_max:
        raise BadRequest(
            f"{where}: valid_until is more than tx_validity_ns_max={limits.tx_validity_ns_max} ns ahead of the leader's clock"
        )
    kind = body.WhichOneof("operation")
    if kind == "create_accounts":
        events = tuple(account_from_pb(a) for a in body.create_accounts.accounts)
        if any(a.owner for a in body.create_accounts.accounts):
            raise BadRequest(f"{where}: account owner is set by the ledger from the signer; leave it empty")
        op = Operation.create_accounts
    elif kind == "create_transfers":
        events = tuple(transfer_from_pb(t) for t in body.create_transfers.transfers)
        op = Operation.create_transfers
    elif kind == "governance":
        proposal = decode_governance(body.governance, where=where, chain_id=chain_id, now_ns=now_ns)
        envelope = stx.SerializeToString(deterministic=True)
        return Tx(member_id=stx.member_id, operation=Operation.governance, events=(), envelope=envelope,
                  tx_hash=sha256(envelope), key_id=stx.key_id, governance=proposal)
    else:
        raise BadRequest(f"{where}: body has no operation (create_accounts, create_transfers or governance)")
    if not events:
        raise BadRequest(f"{where}: no events")
    if len(events) > limits.tx_events_max:
        raise BadRequest(f"{where}: {len(events)} events exceeds tx_events_max={limits.tx_events_max}")
    envelope = stx.SerializeToString(deterministic=True)
    return Tx(member_id=stx.member_id, operation=op, events=events, envelope=envelope, tx_hash=sha256(envelope),
              key_id=stx.key_id)


def _ids(where: str, what: str, values) -> tuple[str, ...]:
    out = tuple(values)
    for v in out:
        if not v or len(v.encode()) > limits.member_id_bytes_max or "/" in v:
            raise BadRequest(f"{where}: {what} {v[:80]!r} must be 1..{limits.member_id_bytes_max} bytes without '/'")
    if len(set(out)) != len(out):
        raise BadRequest(f"{where}: {what} lists an id twice")
    return out


def _roles(where: str, roles) -> tuple[str, ...]:
    out = tuple(roles)
    bad = [r for r in out if r not in gov.ROLES]
    if bad or len(set(out)) != len(out):
        raise BadRequest(f"{where}: roles must be distinct values of {list(gov.ROLES)}, not {list(out)[:8]!r}")
    return out


def _key(where: str, key_id: str, public_key: bytes) -> tuple[str, bytes]:
    if not key_id or len(key_id.encode()) > limits.key_id_bytes_max:
        raise BadRequest(f"{where}: key_id must be 1..{limits.key_id_bytes_max} bytes")
    if len(public_key) != gov.PUBLIC_KEY_BYTES:
        raise BadRequest(f"{where}: public_key must be {gov.PUBLIC_KEY_BYTES} bytes (Ed25519), not {len(public_key)}")
    return key_id, bytes(public_key)


def _validator_entry(where: str, e: pb.ValidatorEntry) -> gov.ValidatorRecord:
    (vid,) = _ids(where, "validator id", [e.id])
    for addr in (e.grpc_address, e.raft_address):
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit():
            raise BadRequest(f"{where}: validator {vid!r}: address must be host:port, not {addr[:80]!r}")
    if len(e.tls_cert_sha256) != 32:
        raise BadRequest(f"{where}: validator {vid!r}: tls_cert_sha256 must be 32 bytes")
    if len(e.public_key) != gov.PUBLIC_KEY_BYTES:
        raise BadRequest(f"{where}: validator {vid!r}: public_key (its Ed25519 checkpoint-signing key) must be "
                         f"{gov.PUBLIC_KEY_BYTES} bytes")
    return gov.ValidatorRecord(vid, e.grpc_address, e.raft_address, bytes(e.tls_cert_sha256), bytes(e.public_key))


def change_from_pb(c: pb.GovernanceChange, where: str):
    """One ``GovernanceChange`` as a core change (:mod:`raft_ledger_node.ledger.governance`).
    Raises BadRequest for a malformed one; state-dependent rules are apply's."""
    kind = c.WhichOneof("change")
    if kind is None:
        raise BadRequest(f"{where}: a change has no operation")
    v = getattr(c, kind)
    if kind == "add_member":
        (mid,) = _ids(where, "member id", [v.id])
        if not v.keys:
            raise BadRequest(f"{where}: add_member {mid!r} needs at least one key")
        keys = tuple(_key(f"{where}: add_member {mid!r}", k.key_id, k.public_key) for k in v.keys)
        if len({k for k, _ in keys}) != len(keys):
            raise BadRequest(f"{where}: add_member {mid!r} lists a key id twice")
        return gov.AddMember(mid, _roles(where, v.roles), keys)
    if kind in ("suspend_member", "reinstate_member", "remove_member"):
        (mid,) = _ids(where, "member id", [v.id])
        return gov.CHANGE_KINDS[kind](mid)
    if kind == "add_key":
        (mid,) = _ids(where, "member id", [v.member_id])
        return gov.AddKey(mid, *_key(where, v.key_id, v.public_key))
    if kind == "revoke_key":
        (mid,) = _ids(where, "member id", [v.member_id])
        return gov.RevokeKey(mid, _key(where, v.key_id, bytes(gov.PUBLIC_KEY_BYTES))[0])
    if kind == "set_roles":
        (mid,) = _ids(where, "member id", [v.member_id])
        return gov.SetRoles(mid, _roles(where, v.roles))
    if kind == "set_issuers":
        if v.ledger == 0:
            raise BadRequest(f"{where}: set_issuers needs a ledger (1..{limits.u32_max})")
        return gov.SetIssuers(v.ledger, _ids(where, "issuer", v.member_ids))
    if kind == "set_admins":
        admins = _ids(where, "admin", v.admins)
        if not admins or len(admins) > limits.admins_max:
            raise BadRequest(f"{where}: set_admins needs 1..{limits.admins_max} admins")
        if not 1 <= v.threshold <= len(admins):
            raise BadRequest(f"{where}: threshold must be in 1..{len(admins)} (the number of admins), not {v.threshold}")
        return gov.SetAdmins(admins, v.threshold)
    if kind == "add_validator":
        # A learner: apply forces it too, and the codec decodes it so (governance.change_from_doc).
        return gov.AddValidator(dataclasses.replace(_validator_entry(where, v), voting=False))
    if kind == "promote_validator":
        (vid,) = _ids(where, "validator id", [v.id])
        if len(v.data_dir_id) != gov.DATA_DIR_ID_BYTES:
            raise BadRequest(f"{where}: promote_validator {vid!r}: data_dir_id must be {gov.DATA_DIR_ID_BYTES} bytes "
                             "(the learner's, from its GetStatus)")
        return gov.PromoteValidator(vid, bytes(v.data_dir_id))
    if kind == "remove_validator":
        (vid,) = _ids(where, "validator id", [v.id])
        return gov.RemoveValidator(vid)
    # set_validators
    vs = [_validator_entry(where, e) for e in v.validators]
    if not vs:
        raise BadRequest(f"{where}: set_validators needs at least one validator")
    return gov.SetValidators(tuple(vs))


def _parse_proposal(proposal: bytes, where: str) -> pb.GovernanceProposal:
    p = pb.GovernanceProposal()
    try:
        p.ParseFromString(proposal)
    except DecodeError as e:
        raise BadRequest(f"{where}: proposal is not a ledger.v1.GovernanceProposal ({e})") from e
    if len(UnknownFieldSet(p)) or any(len(UnknownFieldSet(c)) for c in p.changes):
        raise BadRequest(f"{where}: the proposal has fields unknown to ledger.v1.GovernanceProposal")
    return p


def _changes(p: pb.GovernanceProposal, where: str) -> tuple:
    if not p.changes or len(p.changes) > limits.gov_changes_max:
        raise BadRequest(f"{where}: a proposal has 1..{limits.gov_changes_max} changes, not {len(p.changes)}")
    return tuple(change_from_pb(c, f"{where}: change {i}") for i, c in enumerate(p.changes))


def proposal_from_signed_bytes(g: gov.GovernanceProposal) -> gov.GovernanceProposal:
    """``g`` rebuilt from its own ``proposal`` bytes (the bytes the administrators signed):
    chain id, base version, validity and changes decoded again, the approvals kept.

    Deterministic (no clock): every validator calls it on every committed governance
    transaction, so what is applied is what the approvals cover, whatever a leader put
    beside the bytes. A proposal that does not decode comes back with no changes, which
    apply refuses (``change_invalid``)."""
    try:
        if len(g.proposal) > limits.gov_proposal_bytes_max:
            raise BadRequest("proposal too large")
        p = _parse_proposal(g.proposal, "committed proposal")
        changes = _changes(p, "committed proposal")
    except BadRequest:
        return gov.GovernanceProposal(g.chain_id, g.base_version, g.valid_until, (), g.proposal, g.approvals)
    return gov.GovernanceProposal(p.chain_id, p.base_version, p.valid_until, changes, g.proposal, g.approvals)


def decode_governance(g: pb.Governance, *, where: str, chain_id: str, now_ns: int | None) -> gov.GovernanceProposal:
    """The body of a governance transaction, decoded and checked statelessly.

    Raises BadRequest: proposal over gov_proposal_bytes_max, not a
    ``ledger.v1.GovernanceProposal`` or with unknown fields, for another chain,
    ``valid_until`` unset, past or beyond tx_validity_ns_max, no changes or more than
    gov_changes_max, a malformed change (:func:`change_from_pb`), no approvals or more
    than gov_approvals_max, an approval with a bad member/key id or a signature that
    is not 64 bytes. Whether the approvers are admins, their keys active and their
    signatures valid is decided at apply, by every validator.
    """
    if len(g.proposal) > limits.gov_proposal_bytes_max:
        raise BadRequest(f"{where}: proposal of {len(g.proposal)} bytes exceeds gov_proposal_bytes_max={limits.gov_proposal_bytes_max}")
    p = _parse_proposal(bytes(g.proposal), where)
    if p.chain_id != chain_id:
        raise BadRequest(f"{where}: proposal built for chain {p.chain_id[:64]!r}, this is chain {chain_id!r}")
    if p.valid_until == 0:
        raise BadRequest(f"{where}: proposal valid_until is required (ns since the epoch)")
    if now_ns is not None and p.valid_until < now_ns:
        raise BadRequest(f"{where}: proposal expired: valid_until {p.valid_until} is {(now_ns - p.valid_until) / 1e9:.3f} s ago")
    if p.base_version == 0:
        raise BadRequest(f"{where}: proposal base_version is required (the configuration version it was built on)")
    changes = _changes(p, where)
    if not g.approvals or len(g.approvals) > limits.gov_approvals_max:
        raise BadRequest(f"{where}: a governance transaction has 1..{limits.gov_approvals_max} approvals, not {len(g.approvals)}")
    approvals = []
    for i, a in enumerate(g.approvals):
        _check_signer_fields(a, f"{where}: approval {i}")
        approvals.append(gov.Approval(a.member_id, a.key_id, bytes(a.signature)))
    return gov.GovernanceProposal(p.chain_id, p.base_version, p.valid_until, changes, bytes(g.proposal), tuple(approvals))


def check_lookup(ids) -> None:
    """At most lookup_ids_max ids. Raises BadRequest."""
    if len(ids) > limits.lookup_ids_max:
        raise BadRequest(f"at most {limits.lookup_ids_max} ids per lookup")


def _check_filter(f) -> None:
    if f.limit > limits.query_limit_max:
        raise BadRequest(f"filter.limit must be at most {limits.query_limit_max}")
    if f.timestamp_max and f.timestamp_min > f.timestamp_max:
        raise BadRequest("filter.timestamp_min is after filter.timestamp_max")


def account_filter(f: pb.AccountFilter) -> AccountFilter:
    """The core filter; raises BadRequest for account_id 0, limit over query_limit_max, min > max."""
    _check_filter(f)
    core = account_filter_from_pb(f)
    if core.account_id == 0:
        raise BadRequest("filter.account_id must not be zero")
    return core


def query_filter(f: pb.QueryFilter) -> QueryFilter:
    """The core filter; raises BadRequest for limit over query_limit_max, min > max."""
    _check_filter(f)
    return query_filter_from_pb(f)
