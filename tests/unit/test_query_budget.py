"""Query scan budget (limits.query_scan_rows_max) on a real RocksStore.

A query reads at most ``scan_rows_max`` index rows, matching or not; when the
budget runs out the page ends with a cursor (``next_timestamp``: the next
timestamp_min, or timestamp_max when reversed), even with fewer than ``limit``
results or none. Paging with the cursor returns exactly what one unbounded scan
would (TigerBeetle get_account_transfers.md, get_account_balances.md,
query_accounts.md, query_transfers.md: results by timestamp, ``reversed``,
``limit``), here checked against a brute-force list over the stored records.
"""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from helpers import Ledger, account, accounts_tx, transfer, transfers_tx
from raft_ledger_node.ledger import limits
from raft_ledger_node.ledger.filters import AccountFilter, QueryFilter
from raft_ledger_node.ledger.types import AccountFlags as AF
from raft_ledger_node.store import RocksStore

A = 1  # the busy account (history flag)
N_ACCOUNTS = 12
N_TRANSFERS = 150


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A history: 12 accounts (two ledgers), 150 transfers over 15 blocks, mixed fields."""
    s = RocksStore(str(tmp_path_factory.mktemp("budget") / "db"))
    led = Ledger(s)
    accts = [
        account(i, ledger=1 + (i > 9), code=1 + i % 3, flags=AF.HISTORY if i == A else 0, user_data_32=i % 4, user_data_64=i % 2)
        for i in range(1, N_ACCOUNTS + 1)
    ]
    assert set(led.block(accounts_tx(*accts))[0].codes) == {0}
    tid = 0
    for _block in range(15):
        batch = []
        for _ in range(N_TRANSFERS // 15):
            tid += 1
            # Ledger 1 only (accounts 1..9); A on one side of most transfers.
            dr, cr = (A, 2 + tid % 8) if tid % 3 else (2 + tid % 8, A) if tid % 5 else (2 + tid % 4, 6 + tid % 4)
            batch.append(transfer(1000 + tid, dr, cr, 1 + tid % 7, code=1 + tid % 3, user_data_64=tid % 4, user_data_128=tid % 2))
        [r] = led.block(transfers_tx(*batch))
        assert set(r.codes) == {0}
    yield s
    s.close()


def all_transfers(s: RocksStore):
    return sorted((t for t in (s.get_transfer(1000 + i) for i in range(1, N_TRANSFERS + 1))), key=lambda t: t.timestamp)


def all_accounts(s: RocksStore):
    return sorted(s.iter_accounts(), key=lambda a: a.timestamp)


def matches(obj, f) -> bool:
    return all(not getattr(f, k, 0) or getattr(obj, k) == getattr(f, k) for k in ("user_data_128", "user_data_64", "user_data_32", "ledger", "code"))


def in_range(ts: int, f) -> bool:
    return ts >= f.timestamp_min and (not f.timestamp_max or ts <= f.timestamp_max)


def brute_account_transfers(s, f: AccountFilter):
    both = f.debits == f.credits
    out = [
        t for t in all_transfers(s)
        if (t.debit_account_id == f.account_id and (both or f.debits)) or (t.credit_account_id == f.account_id and (both or f.credits))
    ]
    out = [t for t in out if matches(t, f) and in_range(t.timestamp, f)]
    return out[::-1] if f.reversed else out


def brute_balance_timestamps(s, f: AccountFilter):
    return [t.timestamp for t in brute_account_transfers(s, f)]  # A has history: one row per transfer


def brute_query(items, f: QueryFilter):
    out = [x for x in items if matches(x, f) and in_range(x.timestamp, f)]
    return out[::-1] if f.reversed else out


def page_through(query, f, budget_calls_max: int = 10_000):
    """Every page of ``query(f)`` following the cursor; returns (results, pages)."""
    out, pages, cursor = [], [], None
    while True:
        g = f if cursor is None else (replace(f, timestamp_max=cursor) if f.reversed else replace(f, timestamp_min=cursor))
        items, cursor = query(g)
        limit = f.limit or limits.query_limit_max
        assert len(items) <= limit
        out += items
        pages.append(items)
        if cursor == 0:
            return out, pages
        assert len(pages) <= budget_calls_max, "the cursor does not advance"


@pytest.fixture
def budget(store):
    def set_budget(n: int) -> None:
        store.scan_rows_max = n

    yield set_budget
    store.scan_rows_max = limits.query_scan_rows_max


def test_a_filter_matching_nothing_reads_one_budget_per_call(store, budget):
    budget(16)
    rows = [t.timestamp for t in brute_account_transfers(store, AccountFilter(account_id=A))]
    assert len(rows) > 100
    for reversed_ in (False, True):
        f = AccountFilter(account_id=A, code=999, limit=1, reversed=reversed_)
        items, cursor = store.get_account_transfers(f)
        assert items == [] and cursor != 0
        # The cursor sits right after the 16th row read: nothing past it was read.
        order = rows[::-1] if reversed_ else rows
        assert cursor == (order[15] - 1 if reversed_ else order[15] + 1)
        got, pages = page_through(store.get_account_transfers, f)
        assert got == [] and len(pages) == math.ceil(len(rows) / 16)


def test_budget_bounds_every_query_kind(store, budget):
    budget(5)
    assert store.get_account_balances(AccountFilter(account_id=A, code=999))[1] != 0
    assert store.query_transfers(QueryFilter(code=999)) == ([], 0)  # no code-999 index rows: nothing to read
    assert store.query_transfers(QueryFilter(ledger=1, code=999))[1] != 0
    assert store.query_accounts(QueryFilter(ledger=1, code=99))[1] != 0
    # The last page of a short scan says so, even when the budget ends on its last row.
    assert store.query_accounts(QueryFilter(ledger=2)) == (all_accounts(store)[9:], 0)
    budget(3)
    assert store.query_accounts(QueryFilter(ledger=2)) == (all_accounts(store)[9:], 0)


def test_limit_still_ends_a_page_before_the_budget(store, budget):
    budget(limits.query_scan_rows_max)
    items, cursor = store.get_account_transfers(AccountFilter(account_id=A, limit=3))
    assert [t.id for t in items] == [t.id for t in brute_account_transfers(store, AccountFilter(account_id=A))[:3]]
    assert cursor == items[-1].timestamp + 1


@pytest.mark.parametrize("reversed_", [False, True])
@pytest.mark.parametrize("b", [1, 4, 7, 10_000])
def test_paging_returns_what_an_unbounded_scan_would(store, budget, b, reversed_):
    budget(b)
    for f in (AccountFilter(account_id=A, code=2, limit=3, reversed=reversed_),
              AccountFilter(account_id=A, debits=True, user_data_64=1, reversed=reversed_)):
        assert page_through(store.get_account_transfers, f)[0] == brute_account_transfers(store, f)
        ts = [ts for ts, _ in page_through(store.get_account_balances, f)[0]]
        assert ts == brute_balance_timestamps(store, f)
    f = QueryFilter(ledger=1, user_data_64=3, limit=4, reversed=reversed_)
    assert page_through(store.query_transfers, f)[0] == brute_query(all_transfers(store), f)
    f = QueryFilter(user_data_32=1, limit=2, reversed=reversed_)
    assert page_through(store.query_accounts, f)[0] == brute_query(all_accounts(store), f)
    f = QueryFilter(limit=5, reversed=reversed_)
    assert page_through(store.query_accounts, f)[0] == all_accounts(store)[:: -1 if reversed_ else 1]


_fields = dict(
    user_data_128=st.sampled_from([0, 0, 1]),
    user_data_64=st.sampled_from([0, 0, 1, 2, 3, 9]),
    code=st.sampled_from([0, 0, 1, 2, 3, 999]),
    limit=st.sampled_from([0, 1, 2, 5]),
    reversed=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    b=st.integers(1, 12),
    kind=st.sampled_from(["account_transfers", "account_balances", "query_transfers", "query_accounts"]),
    lo=st.integers(0, 160),
    width=st.sampled_from([None, 0, 1, 30, 200]),
)
def test_paging_with_any_budget_and_filter_visits_everything_once(store, data, b, kind, lo, width):
    # Hypothesis over filters and budgets; module-scoped history. The budget is
    # set directly (a store attribute), reset by the last line.
    transfers, accounts = all_transfers(store), all_accounts(store)
    base = accounts if kind == "query_accounts" else transfers
    ts_min = base[min(lo, len(base) - 1)].timestamp if lo else 0
    ts_max = 0 if width is None else (base[min(lo + width, len(base) - 1)].timestamp if lo + width else 1)
    ts_min, ts_max = (ts_min, ts_max) if not ts_max or ts_min <= ts_max else (ts_max, ts_min)
    store.scan_rows_max = b
    try:
        if kind.startswith("account"):
            f = AccountFilter(
                account_id=data.draw(st.sampled_from([A, A, 2, 7, 99])),
                debits=data.draw(st.booleans()), credits=data.draw(st.booleans()),
                timestamp_min=ts_min, timestamp_max=ts_max, **{k: data.draw(v) for k, v in _fields.items()},
            )
            if kind == "account_transfers":
                got, pages = page_through(store.get_account_transfers, f)
                want = brute_account_transfers(store, f)
            else:
                got, pages = page_through(store.get_account_balances, f)
                got = [ts for ts, _ in got]
                want = brute_balance_timestamps(store, f) if f.account_id == A else []
        else:
            f = QueryFilter(
                ledger=data.draw(st.sampled_from([0, 1, 2])), user_data_32=data.draw(st.sampled_from([0, 1, 3])),
                timestamp_min=ts_min, timestamp_max=ts_max, **{k: data.draw(v) for k, v in _fields.items()},
            )
            q = store.query_transfers if kind == "query_transfers" else store.query_accounts
            got, pages = page_through(q, f)
            want = brute_query(base, f)
        assert got == want
        # A page reads at most b rows, so it holds at most b results.
        assert all(len(p) <= min(b, f.limit or limits.query_limit_max) for p in pages)
    finally:
        store.scan_rows_max = limits.query_scan_rows_max
