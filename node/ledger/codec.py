"""Deterministic byte encodings: stored records, Raft entries, block headers.

Every validator must produce identical bytes, so the layouts are fixed:
integers are big-endian (u128 = 16 bytes), strings are u16-length-prefixed
UTF-8. Decoders raise :class:`CodecError` on malformed input and nothing else.
"""
from __future__ import annotations

import hashlib
import struct

from . import limits
from .governance import Approval, GovernanceProposal, decode_changes, encode_changes
from .types import Account, BlockHeader, Entry, Head, Operation, PendingStatus, Transfer, Tx

#: 2: every transaction carries its key id; governance transactions (operation 3).
ENTRY_VERSION = 2
#: A Raft entry that carries no block: a read barrier for linearizable reads.
READ_BARRIER_ENTRY = b"\x00read-barrier"

_ACCOUNT = struct.Struct(">16s16s16s16s16s16sQIIII Q")
_TRANSFER = struct.Struct(">16s16s16s16s16s16sQIIIIIQ")
_HEADER = struct.Struct(">Q32sQ32s32sQQI")
_HEAD_TAIL = struct.Struct(">Q")
_ENTRY_HEAD = struct.Struct(">BQI")
_TX_HEAD = struct.Struct(">BI")


class CodecError(ValueError):
    """Bytes that do not decode to a well-formed record."""


def u128(value: int) -> bytes:
    return value.to_bytes(16, "big")


def from_u128(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _str(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">H", len(raw)) + raw


def _read_str(buf: memoryview, off: int) -> tuple[str, int]:
    if off + 2 > len(buf):
        raise CodecError("truncated string length")
    (n,) = struct.unpack_from(">H", buf, off)
    off += 2
    if off + n > len(buf):
        raise CodecError("truncated string")
    try:
        return bytes(buf[off : off + n]).decode(), off + n
    except UnicodeDecodeError as e:
        raise CodecError("string is not UTF-8") from e


def _read_bytes(buf: memoryview, off: int) -> tuple[bytes, int]:
    if off + 4 > len(buf):
        raise CodecError("truncated bytes length")
    (n,) = struct.unpack_from(">I", buf, off)
    off += 4
    if off + n > len(buf):
        raise CodecError("truncated bytes")
    return bytes(buf[off : off + n]), off + n


# -- records ---------------------------------------------------------------


def encode_account(a: Account) -> bytes:
    return (
        _ACCOUNT.pack(
            a.id.to_bytes(16, "big"),
            a.debits_pending.to_bytes(16, "big"),
            a.debits_posted.to_bytes(16, "big"),
            a.credits_pending.to_bytes(16, "big"),
            a.credits_posted.to_bytes(16, "big"),
            a.user_data_128.to_bytes(16, "big"),
            a.user_data_64,
            a.user_data_32,
            a.ledger,
            a.code,
            a.flags,
            a.timestamp,
        )
        + _str(a.owner)
    )


def _account_from(f: tuple, owner: str) -> Account:
    # Positional: keyword construction of 13 fields costs twice as much, and
    # the store decodes two accounts per transfer.
    return Account(
        int.from_bytes(f[0], "big"), f[8], f[9], owner, f[10],
        int.from_bytes(f[1], "big"), int.from_bytes(f[2], "big"),
        int.from_bytes(f[3], "big"), int.from_bytes(f[4], "big"),
        int.from_bytes(f[5], "big"), f[6], f[7], f[11],
    )


def _decode_account_at(buf: memoryview, off: int) -> tuple[Account, int]:
    if off + _ACCOUNT.size > len(buf):
        raise CodecError("truncated account")
    f = _ACCOUNT.unpack_from(buf, off)
    owner, off = _read_str(buf, off + _ACCOUNT.size)
    return _account_from(f, owner), off


#: Owner strings seen by decode_account: there are as many as members, and
#: decoding the same few bytes to str for every account read is wasted work.
_OWNERS: dict[bytes, str] = {}


def decode_account(b: bytes) -> Account:
    n = _ACCOUNT.size
    if len(b) < n + 2:
        raise CodecError("truncated account")
    f = _ACCOUNT.unpack_from(b, 0)
    size = int.from_bytes(b[n : n + 2], "big")
    if n + 2 + size != len(b):
        raise CodecError("account record has wrong size")
    raw = bytes(b[n + 2 :])
    owner = _OWNERS.get(raw)
    if owner is None:
        try:
            owner = raw.decode()
        except UnicodeDecodeError as e:
            raise CodecError("string is not UTF-8") from e
        if len(_OWNERS) < 4096:
            _OWNERS[raw] = owner
    return _account_from(f, owner)


def encode_transfer(t: Transfer) -> bytes:
    return _TRANSFER.pack(
        t.id.to_bytes(16, "big"),
        t.debit_account_id.to_bytes(16, "big"),
        t.credit_account_id.to_bytes(16, "big"),
        t.amount.to_bytes(16, "big"),
        t.pending_id.to_bytes(16, "big"),
        t.user_data_128.to_bytes(16, "big"),
        t.user_data_64,
        t.user_data_32,
        t.timeout,
        t.ledger,
        t.code,
        t.flags,
        t.timestamp,
    )


def _decode_transfer_at(buf: memoryview, off: int) -> tuple[Transfer, int]:
    if off + _TRANSFER.size > len(buf):
        raise CodecError("truncated transfer")
    f = _TRANSFER.unpack_from(buf, off)
    fb = int.from_bytes
    return (
        Transfer(
            fb(f[0], "big"), fb(f[1], "big"), fb(f[2], "big"), fb(f[3], "big"),
            f[9], f[10], f[11], fb(f[4], "big"), f[8],
            fb(f[5], "big"), f[6], f[7], f[12],
        ),
        off + _TRANSFER.size,
    )


def decode_transfer(b: bytes) -> Transfer:
    if len(b) != _TRANSFER.size:
        raise CodecError("transfer record has wrong size")
    return _decode_transfer_at(memoryview(b), 0)[0]


def encode_pending_status(s: PendingStatus) -> bytes:
    return bytes([int(s)])


def decode_pending_status(b: bytes) -> PendingStatus:
    if len(b) != 1:
        raise CodecError("pending status has wrong size")
    try:
        return PendingStatus(b[0])
    except ValueError as e:
        raise CodecError(f"unknown pending status {b[0]}") from e


# -- Raft entries ------------------------------------------------------------


def _bytes(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def encode_governance(g: GovernanceProposal) -> bytes:
    """A governance transaction's payload: the decoded proposal (canonical JSON,
    :func:`~.governance.encode_changes`), the exact proposal bytes the approvals
    sign, and the approvals (u16 count; member, key id, signature each)."""
    parts = [
        _bytes(encode_changes(g.chain_id, g.base_version, g.valid_until, g.changes)),
        _bytes(g.proposal),
        struct.pack(">H", len(g.approvals)),
    ]
    for a in g.approvals:
        parts += [_str(a.member_id), _str(a.key_id), _bytes(a.signature)]
    return b"".join(parts)


def _decode_governance_at(buf: memoryview, off: int) -> tuple[GovernanceProposal, int]:
    decoded, off = _read_bytes(buf, off)
    proposal, off = _read_bytes(buf, off)
    if off + 2 > len(buf):
        raise CodecError("truncated approvals")
    (n,) = struct.unpack_from(">H", buf, off)
    off += 2
    if n > limits.gov_approvals_max:
        raise CodecError("too many approvals")
    approvals = []
    for _ in range(n):
        member, off = _read_str(buf, off)
        key_id, off = _read_str(buf, off)
        sig, off = _read_bytes(buf, off)
        approvals.append(Approval(member, key_id, sig))
    try:
        chain_id, base, valid_until, changes = decode_changes(decoded)
    except ValueError as e:
        raise CodecError(str(e)) from e
    return GovernanceProposal(chain_id, base, valid_until, changes, proposal, tuple(approvals)), off


def encode_entry(entry: Entry) -> bytes:
    """Encode a Raft entry: version, leader timestamp (ns), transactions (member,
    key id, envelope, operation, then the events or the governance payload)."""
    parts = [_ENTRY_HEAD.pack(ENTRY_VERSION, entry.proposed_timestamp, len(entry.txs))]
    for tx in entry.txs:
        parts.append(_str(tx.member_id))
        parts.append(_str(tx.key_id))
        parts.append(struct.pack(">I", len(tx.envelope)))
        parts.append(tx.envelope)
        parts.append(_TX_HEAD.pack(int(tx.operation), len(tx.events)))
        if tx.operation == Operation.create_accounts:
            parts.extend(encode_account(a) for a in tx.events)
        elif tx.operation == Operation.create_transfers:
            parts.extend(encode_transfer(t) for t in tx.events)
        else:
            parts.append(encode_governance(tx.governance))
    return b"".join(parts)


def decode_entry(b: bytes) -> Entry:
    """Decode a Raft entry; raises CodecError if malformed. Recomputes tx hashes."""
    buf = memoryview(b)
    if len(buf) < _ENTRY_HEAD.size:
        raise CodecError("truncated entry")
    version, ts, n = _ENTRY_HEAD.unpack_from(buf, 0)
    if version != ENTRY_VERSION:
        raise CodecError(f"unknown entry version {version}")
    off = _ENTRY_HEAD.size
    txs = []
    for _ in range(n):
        member, off = _read_str(buf, off)
        key_id, off = _read_str(buf, off)
        envelope, off = _read_bytes(buf, off)
        if off + _TX_HEAD.size > len(buf):
            raise CodecError("truncated transaction")
        op, count = _TX_HEAD.unpack_from(buf, off)
        off += _TX_HEAD.size
        if count > limits.tx_events_max:
            raise CodecError("too many events")
        events = []
        governance = None
        if op == Operation.governance:
            if count:
                raise CodecError("a governance transaction has no events")
            governance, off = _decode_governance_at(buf, off)
        elif op == Operation.create_accounts:
            for _ in range(count):
                a, off = _decode_account_at(buf, off)
                events.append(a)
        elif op == Operation.create_transfers:
            for _ in range(count):
                t, off = _decode_transfer_at(buf, off)
                events.append(t)
        else:
            raise CodecError(f"unknown operation {op}")
        txs.append(
            Tx(
                member_id=member,
                operation=Operation(op),
                events=tuple(events),
                envelope=envelope,
                tx_hash=hashlib.sha256(envelope).digest(),
                key_id=key_id,
                governance=governance,
            )
        )
    if off != len(buf):
        raise CodecError("trailing bytes after entry")
    return Entry(proposed_timestamp=ts, txs=tuple(txs))


# -- blocks --------------------------------------------------------------------


def encode_header(h: BlockHeader) -> bytes:
    """Canonical header bytes (without ``hash``): what the block hash covers."""
    return _HEADER.pack(
        h.height,
        h.prev_hash,
        h.timestamp,
        h.tx_merkle_root,
        h.state_hash,
        h.raft_term,
        h.raft_index,
        h.tx_count,
    )


def block_hash(h: BlockHeader) -> bytes:
    """SHA-256 of the canonical header encoding."""
    return hashlib.sha256(encode_header(h)).digest()


def encode_stored_header(h: BlockHeader) -> bytes:
    return encode_header(h) + h.hash


def decode_stored_header(b: bytes) -> BlockHeader:
    if len(b) != _HEADER.size + 32:
        raise CodecError("block header has wrong size")
    f = _HEADER.unpack_from(b, 0)
    return BlockHeader(*f, hash=bytes(b[_HEADER.size :]))


def encode_head(head: Head) -> bytes:
    return encode_stored_header(head.header) + _HEAD_TAIL.pack(head.tx_total)


def decode_head(b: bytes) -> Head:
    n = _HEADER.size + 32
    if len(b) != n + _HEAD_TAIL.size:
        raise CodecError("head has wrong size")
    return Head(header=decode_stored_header(b[:n]), tx_total=_HEAD_TAIL.unpack_from(b, n)[0])


def encode_tx_hashes(hashes: list[bytes]) -> bytes:
    return b"".join(hashes)


def decode_tx_hashes(b: bytes) -> list[bytes]:
    if len(b) % 32:
        raise CodecError("tx hash list has wrong size")
    return [bytes(b[i : i + 32]) for i in range(0, len(b), 32)]
