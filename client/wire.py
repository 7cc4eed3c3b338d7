"""Protobuf <-> plain values for accounts, transfers and block headers.

Shared by the SDK and the validator (the node may import the client's pure
helpers, never the other way round): one field mapping, two sets of dataclasses.
``*_fields(message) -> dict`` gives keyword arguments for any dataclass with the
same field names; ``*_to_pb(obj)`` reads those attributes from any object.
"""
from __future__ import annotations

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb

_U64 = (1 << 64) - 1

ACCOUNT_U128 = ("id", "debits_pending", "debits_posted", "credits_pending", "credits_posted", "user_data_128")
ACCOUNT_SCALARS = ("user_data_64", "user_data_32", "ledger", "code", "flags", "timestamp", "owner")
TRANSFER_U128 = ("id", "debit_account_id", "credit_account_id", "amount", "pending_id", "user_data_128")
TRANSFER_SCALARS = ("user_data_64", "user_data_32", "timeout", "ledger", "code", "flags", "timestamp")
HEADER_FIELDS = ("height", "prev_hash", "timestamp", "tx_merkle_root", "state_hash", "raft_term", "raft_index", "tx_count",
                 "hash", "tree_size", "tree_root", "state_root", "validators_hash", "next_validators_hash")


def u128(v: int) -> pb.UInt128:
    """An unsigned 128-bit integer as UInt128; ValueError outside [0, 2^128)."""
    if not 0 <= v < 1 << 128:
        raise ValueError(f"{v} is not an unsigned 128-bit integer")
    return pb.UInt128(hi=v >> 64, lo=v & _U64)


def from_u128(m: pb.UInt128) -> int:
    return (m.hi << 64) | m.lo


def _fields(m, wide: tuple[str, ...], scalars: tuple[str, ...]) -> dict:
    out = {name: from_u128(getattr(m, name)) for name in wide}
    out.update((name, getattr(m, name)) for name in scalars)
    return out


def _to_pb(cls, obj, wide: tuple[str, ...], scalars: tuple[str, ...]):
    kw = {name: u128(getattr(obj, name)) for name in wide}
    kw.update((name, int(getattr(obj, name)) if name == "flags" else getattr(obj, name)) for name in scalars)
    return cls(**kw)


def account_fields(m: pb.Account) -> dict:
    return _fields(m, ACCOUNT_U128, ACCOUNT_SCALARS)


def account_to_pb(a) -> pb.Account:
    """Every field of an account, balances and owner included (responses)."""
    return _to_pb(pb.Account, a, ACCOUNT_U128, ACCOUNT_SCALARS)


def transfer_fields(m: pb.Transfer) -> dict:
    return _fields(m, TRANSFER_U128, TRANSFER_SCALARS)


def transfer_to_pb(t) -> pb.Transfer:
    return _to_pb(pb.Transfer, t, TRANSFER_U128, TRANSFER_SCALARS)


def header_fields(h: pb.BlockHeader) -> dict:
    return {name: getattr(h, name) for name in HEADER_FIELDS}


def header_to_pb(h) -> pb.BlockHeader:
    return pb.BlockHeader(**{name: getattr(h, name) for name in HEADER_FIELDS})


ACCOUNT_FILTER_U128 = ("account_id", "user_data_128")
ACCOUNT_FILTER_SCALARS = ("user_data_64", "user_data_32", "code", "timestamp_min", "timestamp_max", "limit", "debits", "credits", "reversed")
QUERY_FILTER_U128 = ("user_data_128",)
QUERY_FILTER_SCALARS = ("user_data_64", "user_data_32", "ledger", "code", "timestamp_min", "timestamp_max", "limit", "reversed")


def account_filter_fields(m: pb.AccountFilter) -> dict:
    return _fields(m, ACCOUNT_FILTER_U128, ACCOUNT_FILTER_SCALARS)


def account_filter_to_pb(f) -> pb.AccountFilter:
    return _to_pb(pb.AccountFilter, f, ACCOUNT_FILTER_U128, ACCOUNT_FILTER_SCALARS)


def query_filter_fields(m: pb.QueryFilter) -> dict:
    return _fields(m, QUERY_FILTER_U128, QUERY_FILTER_SCALARS)


def query_filter_to_pb(f) -> pb.QueryFilter:
    return _to_pb(pb.QueryFilter, f, QUERY_FILTER_U128, QUERY_FILTER_SCALARS)
