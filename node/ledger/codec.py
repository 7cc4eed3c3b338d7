"""Deterministic byte encodings: stored records, Raft entries, block headers.

Every validator must produce identical bytes, so the layouts are fixed:
integers are big-endian (u128 = 16 bytes), strings are u16-length-prefixed
UTF-8. Decoders raise :class:`CodecError` on malformed input and nothing else.
"""
from __future__ import annotations

import hashlib
import struct

from . import limits
from .types import Account, BlockHeader, Entry, Head, PendingStatus, RawEntry, Transfer

#: 3: the SignedTransaction bytes only (every validator decodes the events from
#: what was signed). 2 carried the leader's struct copy of the events beside them.
ENTRY_VERSION = 3
#: A Raft entry that carries no block: a read barrier for linearizable reads.
READ_BARRIER_ENTRY = b"\x00read-barrier"

_ACCOUNT = struct.Struct(">16s16s16s16s16s16sQIIII Q")
_TRANSFER = struct.Struct(">16s16s16s16s16s16sQIIIIIQ")
_HEADER = struct.Struct(">Q32sQ32s32sQQIQ32s32s32s32s")
_HEAD_TAIL = struct.Struct(">Q")
_ENTRY_HEAD = struct.Struct(">BQI")


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


def encode_entry(entry: Entry | RawEntry) -> bytes:
    """Encode a Raft entry (version 3): version u8, leader timestamp (ns) u64, count
    u32, then each transaction's SignedTransaction bytes (u32 length-prefixed) — only
    what was signed; the events are decoded from it by every validator.
    ``encode_entry(decode_entry(b)) == b`` for every ``b`` that decodes."""
    envelopes = entry.envelopes if isinstance(entry, RawEntry) else [tx.envelope for tx in entry.txs]
    parts = [_ENTRY_HEAD.pack(ENTRY_VERSION, entry.proposed_timestamp, len(envelopes))]
    for envelope in envelopes:
        parts.append(struct.pack(">I", len(envelope)))
        parts.append(envelope)
    return b"".join(parts)


def decode_entry(b: bytes) -> RawEntry:
    """Decode a Raft entry's framing; raises CodecError if malformed. The envelopes are
    returned as committed (``StateMachine`` decodes and authenticates each)."""
    buf = memoryview(b)
    if len(buf) < _ENTRY_HEAD.size:
        raise CodecError("truncated entry")
    version, ts, n = _ENTRY_HEAD.unpack_from(buf, 0)
    if version != ENTRY_VERSION:
        raise CodecError(f"unknown entry version {version}")
    if n > len(buf) // 4:
        raise CodecError("truncated entry")
    off = _ENTRY_HEAD.size
    envelopes = []
    for _ in range(n):
        envelope, off = _read_bytes(buf, off)
        envelopes.append(envelope)
    if off != len(buf):
        raise CodecError("trailing bytes after entry")
    return RawEntry(proposed_timestamp=ts, envelopes=tuple(envelopes))


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
        h.tree_size,
        h.tree_root,
        h.state_root,
        h.validators_hash,
        h.next_validators_hash,
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
    # The 13 fields of _HEADER, then the hash (mypy cannot count a struct's fields).
    return BlockHeader(*f, hash=bytes(b[_HEADER.size :]))  # type: ignore[misc]


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
