"""Owner-filtered queries on a real RocksStore (issue 11, authorised reads).

A member's query_accounts / query_transfers keep only rows of its own accounts,
and the filter runs *inside* the index scan: a row of another member is read and
counted against ``scan_rows_max`` like a row failing the query filter. So a page
can end with fewer than ``limit`` results (even none) and a cursor, and paging with
the cursor returns exactly the caller's rows, once each, in timestamp order — the
same contract as tests/unit/test_query_budget.py, for the filtered view.
"""
from __future__ import annotations

import pytest

from helpers import Ledger, account, transfer
from raft_ledger_node.ledger.filters import QueryFilter
from raft_ledger_node.store import RocksStore

N = 24  # accounts, alternating owners in creation order


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = RocksStore(str(tmp_path_factory.mktemp("owners") / "db"), scan_rows_max=3)
    led = Ledger(s)
    for i in range(1, N + 1):
        owner = "bank-a" if i % 2 else "bank-b"
        assert led.create_accounts(account(i, ledger=840), member=owner) == (0,)
    # Transfers: bank-a within its own accounts, bank-b within its own, and a few across.
    tid = 100
    for k in range(12):
        tid += 1
        if k % 3 == 0:
            t, who = transfer(tid, 1 + 2 * (k % 5), 3 + 2 * (k % 5), 1 + k, ledger=840), "bank-a"
        elif k % 3 == 1:
            t, who = transfer(tid, 2 + 2 * (k % 5), 4 + 2 * (k % 5), 1 + k, ledger=840), "bank-b"
        else:
            t, who = transfer(tid, 2 + 2 * (k % 5), 1 + 2 * (k % 5), 1 + k, ledger=840), "bank-b"  # b -> a
        assert led.create_transfers(t, member=who) == (0,)
    yield s
    s.close()


def pages(query, f: QueryFilter):
    out, sizes, cursor = [], [], None
    while cursor != 0:
        if cursor is not None:
            f = QueryFilter(**{**{k: getattr(f, k) for k in f.__slots__},
                               **({"timestamp_max": cursor} if f.reversed else {"timestamp_min": cursor})})
        items, cursor = query(f)
        out += items
        sizes.append(len(items))
        assert len(out) <= 200, "paging does not end"
    return out, sizes


@pytest.mark.parametrize("reversed_", [False, True])
def test_query_accounts_by_owner_pages_exactly_through_the_owners_rows(store, reversed_):
    want = sorted((a for a in store.iter_accounts() if a.owner == "bank-a"), key=lambda a: a.timestamp,
                  reverse=reversed_)
    got, sizes = pages(lambda f: store.query_accounts(f, owner="bank-a"), QueryFilter(limit=2, reversed=reversed_))
    assert [a.id for a in got] == [a.id for a in want]
    assert all(a.owner == "bank-a" for a in got)
    # Foreign rows spent the budget (3 rows per page): some pages hold fewer than the limit.
    assert min(sizes[:-1]) < 2


def test_query_transfers_by_owner_sees_transfers_touching_its_accounts_on_either_side(store):
    def touches(t, owner):
        return owner in (store.get_account(t.debit_account_id).owner, store.get_account(t.credit_account_id).owner)

    everything, _ = pages(lambda f: store.query_transfers(f), QueryFilter(limit=5))
    for owner in ("bank-a", "bank-b"):
        got, _ = pages(lambda f: store.query_transfers(f, owner=owner), QueryFilter(limit=2, ledger=840))
        assert [t.id for t in got] == [t.id for t in everything if touches(t, owner)]
    # A cross transfer (b -> a) is seen by both; one within b's accounts only by b.
    a_ids = {t.id for t in pages(lambda f: store.query_transfers(f, owner="bank-a"), QueryFilter())[0]}
    b_ids = {t.id for t in pages(lambda f: store.query_transfers(f, owner="bank-b"), QueryFilter())[0]}
    assert a_ids & b_ids and b_ids - a_ids and a_ids - b_ids


def test_a_stranger_sees_nothing_and_no_owner_means_everything(store):
    assert pages(lambda f: store.query_accounts(f, owner="bank-z"), QueryFilter())[0] == []
    assert pages(lambda f: store.query_transfers(f, owner="bank-z"), QueryFilter())[0] == []
    assert len(pages(lambda f: store.query_accounts(f), QueryFilter())[0]) == N
