"""Query filters of the ledger's read side (TigerBeetle's AccountFilter and QueryFilter).

Plain values the store's range queries take; the API adapter maps the protobuf
filters onto them, the SDK has its own public copies with the same field names.
Zero fields do not filter; timestamps are ns and inclusive (0 = unbounded);
``limit`` 0 means :data:`limits.query_limit_max`.

Source: TigerBeetle docs/reference/account-filter.md and query-filter.md.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AccountFilter:
    """One account's transfers or balances. ``debits``/``credits`` pick the side
    (neither = both); ``reversed`` = newest first."""

    account_id: int
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    code: int = 0
    timestamp_min: int = 0
    timestamp_max: int = 0
    limit: int = 0
    debits: bool = False
    credits: bool = False
    reversed: bool = False


@dataclass(frozen=True, slots=True)
class QueryFilter:
    """All accounts or transfers matching the non-zero fields, by timestamp."""

    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    ledger: int = 0
    code: int = 0
    timestamp_min: int = 0
    timestamp_max: int = 0
    limit: int = 0
    reversed: bool = False
