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


def precheck_envelope(stx: pb.SignedTransaction, index: int) -> None:
    """The checks that cost nothing, before any signature is verified or body parsed.

    Raises BadRequest: member id not 1..member_id_bytes_max bytes, key id not
    1..key_id_bytes_max bytes, signature not 64
    bytes, unknown fields in the envelope (they would change its hash without
    touching what was signed), envelope over tx_bytes_max.
    """
    where = f"transaction {index}"
    if not stx.member_id or len(stx.member_id.encode()) > limits.member_id_bytes_max:
        raise BadRequest(f"{where}: member_id must be 1..{limits.member_id_bytes_max} bytes")
    if not stx.key_id or len(stx.key_id.encode()) > limits.key_id_bytes_max:
        raise BadRequest(f"{where}: key_id must be 1..{limits.key_id_bytes_max} bytes")
    if len(stx.signature) != SIGNATURE_BYTES:
        raise BadRequest(f"{where}: signature must be {SIGNATURE_BYTES} bytes (Ed25519)")
    if len(UnknownFieldSet(stx)):
        raise BadRequest(f"{where}: the envelope has fields unknown to ledger.v1.SignedTransaction")
    size = stx.ByteSize()
    if size > limits.tx_bytes_max:
        raise BadRequest(f"{where}: {size} bytes exceeds tx_bytes_max={limits.tx_bytes_max}")


def decode_submit(request: pb.SubmitRequest, *, chain_id: str, now_ns: int) -> list[Tx]:
    """Every transaction decoded, their events within submit_events_max. The envelopes
    were prechecked (:func:`precheck_envelope`) and authenticated by the caller, so
    only the bodies are checked here (see :func:`decode_signed`). Raises BadRequest
    (naming the transaction) or TooLarge."""
    txs = [_decode_body(stx, i, chain_id, now_ns) for i, stx in enumerate(request.transactions)]
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


def _decode_body(stx: pb.SignedTransaction, index: int, chain_id: str, now_ns: int) -> Tx:
    """:func:`decode_signed` without the envelope prechecks (already done by the caller)."""
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
    if body.valid_until < now_ns:
        raise BadRequest(f"{where}: expired: valid_until {body.valid_until} is {(now_ns - body.valid_until) / 1e9:.3f} s ago")
    if body.valid_until > now_ns + limits.tx_validity_ns_max:
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
    else:
        raise BadRequest(f"{where}: body has no operation (create_accounts or create_transfers)")
    if not events:
        raise BadRequest(f"{where}: no events")
    if len(events) > limits.tx_events_max:
        raise BadRequest(f"{where}: {len(events)} events exceeds tx_events_max={limits.tx_events_max}")
    envelope = stx.SerializeToString(deterministic=True)
    return Tx(member_id=stx.member_id, operation=op, events=events, envelope=envelope, tx_hash=sha256(envelope))


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
