"""The wire enums (proto/ledger/v1/ledger.proto) equal the core's, and the SDK's are the wire's.

One definition of each result code and flag: the core's IntEnums in
node/ledger/types.py (TigerBeetle's precedence order, docs/reference/requests/
create_accounts.md and create_transfers.md "Result"; flags from
docs/reference/account.md and transfer.md). The .proto must carry the same
names (with buf's ENUM_VALUE_PREFIX) and the same numbers, in the same order, so
grpcurl or a Go client see exactly what the core computes; the SDK derives its
Python enums from the generated descriptors.
"""
from __future__ import annotations

import enum

import pytest

import raft_ledger_client as sdk
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.ledger import types as core

PAIRS = [
    ("CreateAccountResult", "CREATE_ACCOUNT_RESULT_", core.CreateAccountResult, sdk.CreateAccountResult),
    ("CreateTransferResult", "CREATE_TRANSFER_RESULT_", core.CreateTransferResult, sdk.CreateTransferResult),
    ("AccountFlags", "ACCOUNT_FLAGS_", core.AccountFlags, sdk.AccountFlags),
    ("TransferFlags", "TRANSFER_FLAGS_", core.TransferFlags, sdk.TransferFlags),
]


def _wire(name: str) -> list[tuple[str, int]]:
    return [(v.name, v.number) for v in pb.DESCRIPTOR.enum_types_by_name[name].values]


def _members(cls: type[enum.Enum]) -> list[tuple[str, int]]:
    # __members__, not iteration: IntFlag iteration skips NONE (0) in Python 3.11+.
    return [(n, int(m)) for n, m in cls.__members__.items()]


@pytest.mark.parametrize("name,prefix,core_enum,sdk_enum", PAIRS, ids=[p[0] for p in PAIRS])
def test_proto_enum_equals_the_core_enum(name, prefix, core_enum, sdk_enum):
    assert _wire(name) == [(prefix + n.upper(), v) for n, v in _members(core_enum)]


@pytest.mark.parametrize("name,prefix,core_enum,sdk_enum", PAIRS, ids=[p[0] for p in PAIRS])
def test_sdk_enum_equals_the_core_enum(name, prefix, core_enum, sdk_enum):
    assert sdk_enum.__name__ == name
    assert _members(sdk_enum) == _members(core_enum)
    assert issubclass(sdk_enum, enum.IntFlag if "Flags" in name else enum.IntEnum)


def test_results_are_in_precedence_order_from_ok():
    for cls in (sdk.CreateAccountResult, sdk.CreateTransferResult):
        values = [int(m) for m in cls]
        assert values == list(range(len(values)))
        assert cls(0).name == "ok" and cls.ok == 0


def test_flags_are_single_bits():
    for cls in (sdk.AccountFlags, sdk.TransferFlags):
        for n, v in _members(cls):
            assert v == 0 if n == "NONE" else v & (v - 1) == 0, (cls, n, v)


def test_an_unknown_result_code_is_a_value_not_an_error():
    # proto3 enums are open: a newer validator's code must not fail a committed submit.
    r = sdk.CreateTransferResult(200)
    assert (int(r), r.name, r == 200) == (200, "unknown_200", True)
    assert sdk.CreateTransferResult(200) is r
    with pytest.raises(ValueError):
        sdk.CreateTransferResult(-1)
