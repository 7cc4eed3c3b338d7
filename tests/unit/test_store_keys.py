"""Index segments in RocksStore (node/store.py, schema 5; issue 16 item 3).

Real RocksDB in a temporary directory. The five time indexes hold one key per
prefix per block; every query must page exactly as with one key per row, and a
schema-4 data directory (one key per row) must open and read the same.
"""
from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from helpers import OTHER, Ledger, account, accounts_tx, transfer, transfers_tx
from raft_ledger_node.ledger.filters import AccountFilter, QueryFilter
from raft_ledger_node.ledger.types import AccountFlags as AF
from raft_ledger_node.store import SCHEMA_VERSION, SEGMENTED_CFS, RocksStore, StoreError, _segment_rows

SCAN_ROWS = 3  # small, so pages end inside segments and cursors land mid-block


def _rows(store: RocksStore, cf: str) -> dict[bytes, bytes]:
    return dict(store._cf[cf].items())


def _build(led: Ledger, first: int, blocks: int) -> None:
    """``blocks`` blocks of 7 transfers over accounts 1..4, fields varying (some zero)."""
    n = first
    for b in range(blocks):
        ts = []
        for k in range(7):
            ts.append(transfer(n, 1 + (n % 4), 1 + ((n + 1) % 4), 1 + n % 5, code=1 + n % 2,
                               user_data_128=n % 3, user_data_64=(n // 2) % 2, user_data_32=7 if n % 4 == 0 else 0))
            n += 1
        led.block(transfers_tx(*ts[:4]), transfers_tx(*ts[4:]))


def _pages(query, f, *, reverse_field: str) -> list:
    """Every page of ``query`` from filter ``f``: [(ids, cursor)], following cursors to 0."""
    out = []
    for _ in range(500):
        items, cursor = query(f)
        out.append(([getattr(i, "id", i) for i in items], cursor))
        if not cursor:
            return out
        f = replace(f, **{reverse_field if f.reversed else "timestamp_min": cursor})
    raise AssertionError("paging did not end")


def answers(s: RocksStore) -> list:
    """Every query of the API over a grid of filters, paged with a small scan budget."""
    out = []
    head = s.head().header.timestamp
    for rev in (False, True):
        for window in ((0, 0), (0, head // 2 + 1), (head // 3, 0)):
            base = dict(timestamp_min=window[0], timestamp_max=window[1], reversed=rev, limit=4)
            for fields in ({}, {"code": 1}, {"code": 2}, {"user_data_128": 2}, {"user_data_64": 1},
                           {"user_data_32": 7}, {"ledger": 1, "code": 2}, {"user_data_128": 1, "user_data_64": 1}):
                out.append(_pages(s.query_transfers, QueryFilter(**base, **fields), reverse_field="timestamp_max"))
                out.append(_pages(lambda f: s.query_transfers(f, owner=OTHER), QueryFilter(**base, **fields),
                                  reverse_field="timestamp_max"))
            for fields in ({}, {"code": 1}, {"user_data_128": 5}):
                out.append(_pages(s.query_accounts, QueryFilter(**base, **fields), reverse_field="timestamp_max"))
            for a in range(1, 6):
                for side in ({}, {"debits": True}, {"credits": True}, {"code": 2}):
                    f = AccountFilter(account_id=a, **base, **side)
                    out.append(_pages(s.get_account_transfers, f, reverse_field="timestamp_max"))
                    out.append([([ts for ts, _ in items], c) for items, c in
                                [s.get_account_balances(f)]])
            out.append(list(s.account_transfer_ids(a)))
    return out


def _to_schema_4(s: RocksStore) -> None:
    """Rewrite every segment as schema 4 did (key prefix + ts -> 16-byte id), mark it 4."""
    widths = {"transfers_by_ts": 0, "accounts_by_ts": 0, "transfer_index": 17, "account_index": 17,
              "account_transfers": 16}
    for cf, n in widths.items():
        for k, v in _rows(s, cf).items():
            del s._cf[cf][k]
            for ts, raw_id in _segment_rows(k, v, n):
                s._cf[cf][k[:n] + struct.pack(">Q", ts)] = raw_id
    s._cf["meta"][b"schema_version"] = struct.pack(">Q", 4)


@pytest.fixture
def paths(tmp_path):
    return str(tmp_path / "a"), str(tmp_path / "b")


def _open_accounts(led: Ledger) -> None:
    led.block(accounts_tx(account(1, flags=AF.HISTORY), account(2, code=2, user_data_128=5), account(3)),
              accounts_tx(account(4, flags=AF.HISTORY, code=2), member=OTHER))


def test_a_block_writes_one_key_per_index_prefix(paths):
    led = Ledger(RocksStore(paths[0]))
    try:
        _open_accounts(led)
        before = {cf: len(_rows(led.store, cf)) for cf in SEGMENTED_CFS | {"transfers"}}
        led.block(transfers_tx(*[transfer(100 + i, 1, 2, 1) for i in range(50)]),
                  transfers_tx(*[transfer(200 + i, 2, 3, 1) for i in range(50)]))
        grown = {cf: len(_rows(led.store, cf)) - before[cf] for cf in before}
        # 100 records; one time-index key; ledger 1 and code 1 (user data are 0: not indexed);
        # accounts 1, 2 and 3.
        assert grown == {"transfers": 100, "transfers_by_ts": 1, "transfer_index": 2, "account_transfers": 3,
                         "accounts_by_ts": 0, "account_index": 0}
        assert [t for _, t in led.store.account_transfer_ids(2)] == list(range(100, 150)) + list(range(200, 250))
        n = len(_rows(led.store, "account_transfers"))
        led.block(transfers_tx(transfer(300, 1, 3, 1)))
        assert len(_rows(led.store, "account_transfers")) == n + 2  # one row each: a one-row segment
        assert [t for _, t in led.store.account_transfer_ids(3)][-2:] == [249, 300]
        assert [t for _, t in led.store.account_transfer_ids(1)][-2:] == [149, 300]
    finally:
        led.store.close()


def test_queries_page_the_same_over_segments_and_schema_4_rows(paths):
    """A schema-4 directory opens (marked 5), reads as before, and keeps reading the same
    once new blocks add segments after its rows; a directory that was always 5 agrees."""
    a, b = Ledger(RocksStore(paths[0], scan_rows_max=SCAN_ROWS)), Ledger(RocksStore(paths[1], scan_rows_max=SCAN_ROWS))
    try:
        for led in (a, b):
            _open_accounts(led)
            _build(led, 1000, 6)
        expected = answers(b.store)
        assert answers(a.store) == expected
        _to_schema_4(a.store)
        a.store.close()
        a.store = a.machine.store = RocksStore(paths[0], scan_rows_max=SCAN_ROWS)
        assert struct.unpack(">Q", a.store._cf["meta"][b"schema_version"])[0] == SCHEMA_VERSION == 5
        assert all(len(v) == 16 for v in _rows(a.store, "transfer_index").values())
        assert answers(a.store) == expected
        for led in (a, b):  # the same log, appended
            _build(led, 2000, 5)
            led.block(accounts_tx(account(5, code=1)))
            _build(led, 3000, 2)
        assert answers(a.store) == answers(b.store)
        assert any(len(v) == 16 for v in _rows(a.store, "transfer_index").values())
        assert any(len(v) > 24 for v in _rows(a.store, "transfer_index").values())
    finally:
        a.store.close()
        b.store.close()


def test_a_newer_schema_is_refused_with_what_to_do(paths):
    s = RocksStore(paths[0])
    s._cf["meta"][b"schema_version"] = struct.pack(">Q", 6)
    s.close()
    with pytest.raises(StoreError, match="schema version 6, this build reads 4, 5: run the build that wrote it"):
        RocksStore(paths[0])
