"""Deterministic encodings: what is hashed, stored and carried in the Raft log.

Every validator must produce identical bytes (design.md "Determinism rules"), and a
malformed Raft entry must be rejected with CodecError, never another exception: an
exception escaping apply is a poison pill (style.md, TigerBeetle TIGER_STYLE).
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import replace

import pytest

from helpers import U128_MAX, account, accounts_tx, decode_envelope, entry, make_tx, transfer, transfers_tx
from raft_ledger_node.ledger import codec, limits
from raft_ledger_node.ledger.types import GENESIS_HEAD, BlockHeader, Head, Operation, PendingStatus

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1

FULL_ACCOUNT = account(
    U128_MAX - 1,
    ledger=U32,
    code=U32,
    flags=0b101010,
    owner="bänk-ä/€",
    debits_pending=U128_MAX,
    debits_posted=1,
    credits_pending=2,
    credits_posted=U128_MAX - 3,
    user_data_128=U128_MAX,
    user_data_64=U64,
    user_data_32=U32,
    timestamp=U64,
)
FULL_TRANSFER = transfer(
    U128_MAX - 1,
    U128_MAX - 2,
    3,
    U128_MAX,
    ledger=U32,
    code=U32,
    flags=U32,
    pending_id=U128_MAX,
    timeout=U32,
    user_data_128=5,
    user_data_64=U64,
    user_data_32=U32,
    timestamp=U64,
)
HEADER = BlockHeader(
    height=7,
    prev_hash=bytes(range(32)),
    timestamp=1_700_000_000_000_000_000,
    tx_merkle_root=bytes(range(1, 33)),
    state_hash=bytes(range(2, 34)),
    raft_term=3,
    raft_index=42,
    tx_count=5,
)


@pytest.mark.parametrize("a", [FULL_ACCOUNT, account(1), account(2, owner="")], ids=["max", "min", "no-owner"])
def test_account_round_trip(a):
    assert codec.decode_account(codec.encode_account(a)) == a


@pytest.mark.parametrize("t", [FULL_TRANSFER, transfer(1, 2, 3, 0)], ids=["max", "min"])
def test_transfer_round_trip(t):
    b = codec.encode_transfer(t)
    assert codec.decode_transfer(b) == t
    assert len(b) == len(codec.encode_transfer(transfer(1, 2, 3, 4)))  # fixed size


def test_records_start_with_the_id_and_transfers_end_with_the_timestamp():
    # RocksStore.commit slices keys out of the encoded records instead of encoding twice.
    t = FULL_TRANSFER
    b = codec.encode_transfer(replace(t, timestamp=0x0102030405060708))
    assert b[:16] == codec.u128(t.id) and b[-8:] == struct.pack(">Q", 0x0102030405060708)
    a = codec.encode_account(FULL_ACCOUNT)
    assert a[:16] == codec.u128(FULL_ACCOUNT.id)


def test_integers_are_big_endian_u128():
    # Keys and records sort by id when compared as bytes (design.md "Storage layout").
    b = codec.encode_account(account(0x0102))
    assert b[:16] == bytes(14) + b"\x01\x02"
    assert codec.u128(U128_MAX) == b"\xff" * 16
    assert codec.from_u128(codec.u128(12345)) == 12345
    assert sorted(codec.u128(i) for i in (300, 2, 1 << 100)) == [codec.u128(i) for i in (2, 300, 1 << 100)]


def test_owner_is_a_length_prefixed_utf8_string():
    b = codec.encode_account(account(1, owner="ab"))
    assert b.endswith(struct.pack(">H", 2) + b"ab")


@pytest.mark.parametrize("s", list(PendingStatus))
def test_pending_status_round_trip(s):
    assert codec.decode_pending_status(codec.encode_pending_status(s)) == s


def test_bad_pending_status_is_a_codec_error():
    with pytest.raises(codec.CodecError):
        codec.decode_pending_status(b"\x09")
    with pytest.raises(codec.CodecError):
        codec.decode_pending_status(b"")


def test_block_hash_is_sha256_of_the_canonical_header():
    assert codec.block_hash(HEADER) == hashlib.sha256(codec.encode_header(HEADER)).digest()
    # The hash field itself is not covered.
    assert codec.block_hash(replace(HEADER, hash=b"x" * 32)) == codec.block_hash(HEADER)


@pytest.mark.parametrize(
    "field, value",
    [
        ("height", 8),
        ("prev_hash", bytes(31) + b"\x01"),
        ("timestamp", 1),
        ("tx_merkle_root", bytes(32)),
        ("state_hash", bytes(32)),
        ("raft_term", 4),
        ("raft_index", 43),
        ("tx_count", 6),
    ],
)
def test_every_header_field_is_covered_by_the_hash(field, value):
    assert codec.block_hash(replace(HEADER, **{field: value})) != codec.block_hash(HEADER)


def test_stored_header_and_head_round_trip():
    h = replace(HEADER, hash=codec.block_hash(HEADER))
    assert codec.decode_stored_header(codec.encode_stored_header(h)) == h
    head = Head(header=h, tx_total=U64)
    assert codec.decode_head(codec.encode_head(head)) == head
    assert codec.decode_head(codec.encode_head(GENESIS_HEAD)) == GENESIS_HEAD


@pytest.mark.parametrize(
    "decode, good",
    [
        (codec.decode_account, codec.encode_account(FULL_ACCOUNT)),
        (codec.decode_transfer, codec.encode_transfer(FULL_TRANSFER)),
        (codec.decode_stored_header, codec.encode_stored_header(replace(HEADER, hash=bytes(32)))),
        (codec.decode_head, codec.encode_head(GENESIS_HEAD)),
        (codec.decode_tx_hashes, bytes(64)),
    ],
    ids=["account", "transfer", "header", "head", "tx_hashes"],
)
def test_records_reject_truncation_and_trailing_bytes(decode, good):
    decode(good)
    for n in range(len(good)) if decode is not codec.decode_tx_hashes else (1, 31, 33, 63):
        if decode is codec.decode_account and n == 0:
            continue
        with pytest.raises(codec.CodecError):
            decode(good[:n])
    with pytest.raises(codec.CodecError):
        decode(good + b"\x00")


def test_tx_hashes_round_trip():
    hs = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
    assert codec.decode_tx_hashes(codec.encode_tx_hashes(hs)) == hs
    assert codec.decode_tx_hashes(b"") == []


# -- Raft entries ---------------------------------------------------------------------


def _sample_entry():
    return entry(
        1_700_000_000_123_456_789,
        accounts_tx(FULL_ACCOUNT, account(2)),
        transfers_tx(FULL_TRANSFER, transfer(9, 1, 2, 3), member="bank-b"),
        make_tx("bänk-ü", Operation.create_transfers, [transfer(11, 1, 2, 1)]),
    )


def test_entry_carries_only_the_signed_envelopes():
    """Version 3: the entry is the leader's time and the envelopes, nothing the leader
    could change besides what was signed (each validator decodes the events itself)."""
    e = _sample_entry()
    d = codec.decode_entry(codec.encode_entry(e))
    assert d.proposed_timestamp == e.proposed_timestamp
    assert d.envelopes == tuple(tx.envelope for tx in e.txs)


def test_committed_envelopes_decode_to_the_transactions_the_leader_built():
    e = entry(5, accounts_tx(account(2), account(U128_MAX, ledger=U32, code=U32, user_data_128=U128_MAX)),
              transfers_tx(replace(FULL_TRANSFER, timestamp=0), transfer(9, 1, 2, 3), member="bank-b"),
              make_tx("bänk-ü", Operation.create_transfers, [transfer(11, 1, 2, 1)]))
    for tx, env in zip(e.txs, codec.decode_entry(codec.encode_entry(e)).envelopes):
        got = decode_envelope(env)
        assert (got.member_id, got.key_id, got.operation, got.events, got.tx_hash) == (
            tx.member_id, tx.key_id, tx.operation, tx.events, hashlib.sha256(env).digest())
        assert got.signature and got.signed_body and not got.invalid


def test_entry_encoding_is_deterministic():
    e = _sample_entry()
    assert codec.encode_entry(e) == codec.encode_entry(e)


def test_entry_starts_with_version_timestamp_and_count():
    b = codec.encode_entry(entry(5, accounts_tx(account(1))))
    assert b[:1] == bytes([codec.ENTRY_VERSION])
    assert struct.unpack(">QI", b[1:13]) == (5, 1)


def test_every_truncation_of_an_entry_is_a_codec_error():
    b = codec.encode_entry(_sample_entry())
    for n in range(len(b)):
        with pytest.raises(codec.CodecError):
            codec.decode_entry(b[:n])


def test_entry_with_trailing_bytes_is_a_codec_error():
    with pytest.raises(codec.CodecError, match="trailing"):
        codec.decode_entry(codec.encode_entry(_sample_entry()) + b"\x00")


def test_unknown_entry_version_is_a_codec_error():
    b = bytearray(codec.encode_entry(_sample_entry()))
    b[0] = codec.ENTRY_VERSION + 1
    with pytest.raises(codec.CodecError, match="version"):
        codec.decode_entry(bytes(b))


def test_entry_whose_count_exceeds_its_bytes_is_a_codec_error():
    with pytest.raises(codec.CodecError):
        codec.decode_entry(struct.pack(">BQI", codec.ENTRY_VERSION, 1, 1 << 30))


def test_empty_entry_round_trip():
    assert codec.decode_entry(codec.encode_entry(entry(0))).envelopes == ()
