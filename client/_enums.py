"""Result codes and flags as Python enums, built from the generated protobuf descriptors.

The ``.proto`` is the one definition (``ledger.v1.CreateAccountResult`` ...); these
classes are derived from it at import, so the SDK cannot drift from the wire.
Member names drop the enum prefix: result codes take TigerBeetle's lower-case
names (``CreateTransferResult.exceeds_credits``), flags upper-case ones
(``TransferFlags.PENDING``), as TigerBeetle's Python client spells them.

A result code this SDK does not know (a newer validator) still becomes a member,
named ``unknown_<n>``, instead of failing a committed submission: proto3 enums
are open.
"""
from __future__ import annotations

import enum

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as _pb


def _prefix(enum_name: str) -> str:
    """``CreateAccountResult`` -> ``CREATE_ACCOUNT_RESULT_`` (buf's ENUM_VALUE_PREFIX)."""
    return "".join("_" + ch if ch.isupper() and i else ch for i, ch in enumerate(enum_name)).upper() + "_"


def _members(enum_name: str, lower: bool) -> list[tuple[str, int]]:
    prefix = _prefix(enum_name)
    out = []
    for v in _pb.DESCRIPTOR.enum_types_by_name[enum_name].values:
        assert v.name.startswith(prefix), (enum_name, v.name)
        name = v.name[len(prefix):]
        out.append((name.lower() if lower else name, v.number))
    return out


class _ResultCode(enum.IntEnum):
    """An open enum: an unknown value is a pseudo-member ``unknown_<n>``, never a ValueError."""

    @classmethod
    def _missing_(cls, value):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return None
        member = int.__new__(cls, value)
        member._name_ = f"unknown_{value}"
        member._value_ = value
        return cls._value2member_map_.setdefault(value, member)


def _result_enum(name: str, doc: str) -> type[_ResultCode]:
    cls = _ResultCode(name, _members(name, lower=True), module="raft_ledger_client")
    cls.__doc__ = doc
    return cls


def _flag_enum(name: str, doc: str) -> type[enum.IntFlag]:
    cls = enum.IntFlag(name, _members(name, lower=False), module="raft_ledger_client")
    cls.__doc__ = doc
    return cls


CreateAccountResult = _result_enum(
    "CreateAccountResult",
    "Result of creating one account, in TigerBeetle's precedence order (``ok`` = 0); from ledger.v1.CreateAccountResult.",
)
CreateTransferResult = _result_enum(
    "CreateTransferResult",
    "Result of creating one transfer, in TigerBeetle's precedence order (``ok`` = 0); from ledger.v1.CreateTransferResult.",
)
AccountFlags = _flag_enum("AccountFlags", "TigerBeetle account flags (bits of ``Account.flags``); from ledger.v1.AccountFlags.")
TransferFlags = _flag_enum("TransferFlags", "TigerBeetle transfer flags (bits of ``Transfer.flags``); from ledger.v1.TransferFlags.")
TxRejection = _result_enum(
    "TxRejection",
    "Why a whole transaction was refused at apply time (``none`` = 0: applied), in precedence order; "
    "from ledger.v1.TxRejection.",
)
