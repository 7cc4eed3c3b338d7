"""Hostile reads: a query's cost is bounded by the scan budget, whatever its filters.

``GetAccountTransfers(account, code=999, limit=1)`` over a history longer than
``limits.query_scan_rows_max`` used to read the whole history (attack 4 of the
"Hostile input" issue: 0.6 s at 131k transfers; sixteen at once forced an
election). Now each call reads at most the budget and ends its (empty) page with
a cursor; paging with it reaches the end (TigerBeetle get_account_transfers.md:
timestamp_min / timestamp_max / reversed).
"""
from __future__ import annotations

import math
import time

import pytest

from raft_ledger_client import Account, AccountFilter, CreateAccountResult as AR, Transfer
from raft_ledger_node.ledger import limits

pytestmark = pytest.mark.integration

#: Transfers preloaded on one account: more than one scan budget.
HISTORY = limits.query_scan_rows_max + 3_000
CHUNK = 4_000


def _leader_and_term(cluster) -> tuple[str, int]:
    lead = cluster.leader()
    [term] = {st.term for v, st in cluster.status(timeout_s=5) if v.id == lead}
    return lead, term


def test_a_filter_matching_nothing_costs_one_budget_per_call(cluster_module):
    cluster = cluster_module
    bank = cluster.client("bank-a")
    base = 81_000_000
    a, b = base + 1, base + 2
    assert {r.result for r in bank.create_accounts([Account(id=a, ledger=840, code=1), Account(id=b, ledger=840, code=1)])} == {AR.ok}
    for start in range(0, HISTORY, CHUNK):
        n = min(CHUNK, HISTORY - start)
        results = bank.create_transfers(
            [Transfer(id=base + 10 + start + i, debit_account_id=a, credit_account_id=b, amount=1, ledger=840, code=1) for i in range(n)]
        )
        assert all(r.result.name == "ok" for r in results)
    lead, term = _leader_and_term(cluster)
    addr = cluster.addresses[lead]
    # Wait until the leader has applied the whole history (LOCAL reads).
    deadline = time.monotonic() + 30
    while bank.lookup_accounts([a])[0].debits_posted != HISTORY:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    for reversed_ in (False, True):
        cursor, pages, slowest = 0, 0, 0.0
        while True:
            f = AccountFilter(account_id=a, code=999, limit=1, reversed=reversed_,
                              **({"timestamp_max": cursor} if reversed_ else {"timestamp_min": cursor}))
            t0 = time.monotonic()
            page = bank.get_account_transfers(f, address=addr)
            slowest = max(slowest, time.monotonic() - t0)
            pages += 1
            assert list(page) == []
            if pages == 1:
                assert page.next_timestamp != 0, "the first page must stop at the budget with a cursor"
            cursor = page.next_timestamp
            if cursor == 0:
                break
            assert pages <= math.ceil(HISTORY / limits.query_scan_rows_max)
        assert pages == math.ceil(HISTORY / limits.query_scan_rows_max)
        # One budget is ~40 ms of validator CPU here; generous for a shared 2-core machine.
        assert slowest < 2.0, f"a budget-bounded page took {slowest:.2f}s"
    # A matching filter still pages through everything, in order.
    ids, cursor = [], 0
    while True:
        page = bank.get_account_transfers(AccountFilter(account_id=a, timestamp_min=cursor), address=addr)
        ids += [t.id for t in page]
        cursor = page.next_timestamp
        if cursor == 0:
            break
    assert ids == [base + 10 + i for i in range(HISTORY)]
    assert _leader_and_term(cluster) == (lead, term)
    bank.close()
