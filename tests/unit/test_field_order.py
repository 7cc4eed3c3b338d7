"""Pins the field order of every record the hot paths build positionally.

Three builders skip keyword construction for speed: the API's
``mapping.transfer_from_pb`` (every submitted transfer), ``codec._account_from``
(every account read from RocksDB) and ``apply._with`` (twice per transfer). A
reordered or inserted dataclass field would make them swap two values silently
(an amount into a pending id). This test fails first, and each builder is checked
field by field against keyword construction with a distinct value per field.
"""
from __future__ import annotations

import dataclasses

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.wire import u128
from raft_ledger_node.api.mapping import transfer_from_pb
from raft_ledger_node.ledger import apply, codec
from raft_ledger_node.ledger.types import Account, Transfer

ACCOUNT_FIELDS = (
    "id", "ledger", "code", "owner", "flags",
    "debits_pending", "debits_posted", "credits_pending", "credits_posted",
    "user_data_128", "user_data_64", "user_data_32", "timestamp",
)
TRANSFER_FIELDS = (
    "id", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "flags",
    "pending_id", "timeout", "user_data_128", "user_data_64", "user_data_32", "timestamp",
)


def _names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def test_core_record_field_order_is_pinned():
    assert _names(Account) == ACCOUNT_FIELDS
    assert _names(Transfer) == TRANSFER_FIELDS


def _distinct_account() -> Account:
    return Account(**{
        name: ("bank-x" if name == "owner" else 1_000 + i) for i, name in enumerate(ACCOUNT_FIELDS)
    })


def test_transfer_from_pb_puts_each_field_in_its_place():
    values = {name: 1_000 + i for i, name in enumerate(TRANSFER_FIELDS)}
    wide = {"id", "debit_account_id", "credit_account_id", "amount", "pending_id", "user_data_128"}
    m = pb.Transfer(**{k: (u128(v) if k in wide else v) for k, v in values.items()})
    assert transfer_from_pb(m) == Transfer(**values)


def test_codec_account_decode_puts_each_field_in_its_place():
    a = _distinct_account()
    assert codec.decode_account(codec.encode_account(a)) == a


def test_apply_with_changes_only_flags_and_balances():
    a = _distinct_account()
    b = apply._with(a, 7, 11, 12, 13, 14)
    assert b == dataclasses.replace(a, flags=7, debits_pending=11, debits_posted=12, credits_pending=13, credits_posted=14)


def test_the_sdk_and_core_filters_have_the_same_fields():
    """The core's filters (node/ledger/filters.py) and the SDK's public ones are two
    copies by design (neither side imports the other); the wire mapping needs equal names."""
    import raft_ledger_client as sdk
    from raft_ledger_node.ledger import filters

    assert _names(sdk.AccountFilter) == _names(filters.AccountFilter)
    assert _names(sdk.QueryFilter) == _names(filters.QueryFilter)
