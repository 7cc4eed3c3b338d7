"""Coalescing against the real 3-validator mutual-TLS cluster: 64 threads (and 64 asyncio
tasks) share one client; every transfer is applied exactly once, each caller gets its
own results; and the side-by-side figure of issue 16 (coalescing off vs on, the same
invocation, the same cluster): transfers/s and calls per Submit.

Run the figure alone with ``-s`` to see it::

    .venv/bin/python -m pytest -s -m integration tests/integration/test_coalescing_cluster.py -k figure
"""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conftest import running_cluster
from raft_ledger_client import CreateTransferResult as TR, LedgerClient, RetryPolicy, Transfer
from raft_ledger_client.aio import AsyncLedgerClient

pytestmark = pytest.mark.integration

#: This helper's port range (issue 16, part F: 49000-50999).
BASE_PORT = 49_000
THREADS = 64
#: Transfers per thread in the correctness tests and in each half of the figure.
PER_THREAD = 8
FIGURE_PER_THREAD = 15
LEDGER = 1
#: Accounts of bank-a the transfers move money between (ledger 1 is issued by bank-a).
ACCOUNTS = list(range(7_000_001, 7_000_001 + 16))
#: No such account: a transfer to it fails with credit_account_not_found.
MISSING = 6_999_999
RETRY = RetryPolicy(deadline_s=60.0, attempt_timeout_s=20.0)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    with running_cluster(str(tmp_path_factory.mktemp("cluster")), BASE_PORT) as c:
        with c.client("bank-a", RETRY) as setup:
            from raft_ledger_client import Account

            results = setup.create_accounts([Account(id=i, ledger=LEDGER, code=1) for i in ACCOUNTS])
            assert all(r.ok for r in results), results
        yield c


def _client(cluster, *, coalesce: bool = True, **kw) -> LedgerClient:
    addresses = list(cluster.addresses.values())
    return LedgerClient(addresses, member_id="bank-a", key_id="k1", private_key=cluster.private_key("bank-a"),
                        chain_id=cluster.chain_id, retry=RETRY, tls=cluster.tls("bank-a"), validators=addresses,
                        coalesce=coalesce, **kw)


def _transfers(first_id: int, threads: int, per_thread: int, *, failing: bool) -> list[list[Transfer]]:
    """Per thread its single-transfer calls; with ``failing`` every 7th goes to MISSING."""
    out = []
    for t in range(threads):
        calls = []
        for k in range(per_thread):
            i = first_id + t * per_thread + k
            credit = MISSING if failing and i % 7 == 0 else ACCOUNTS[(t + k + 1) % len(ACCOUNTS)]
            calls.append(Transfer(id=i, debit_account_id=ACCOUNTS[t % len(ACCOUNTS)], credit_account_id=credit,
                                  amount=1 + i % 5, ledger=LEDGER, code=1))
        out.append(calls)
    return out


def _run_threads(client: LedgerClient, per_thread: list[list[Transfer]]) -> tuple[list, float]:
    """Each list in its own thread, one create_transfers([t]) call after the other. ((transfer,
    results or exception) per call, seconds from start until the last thread ended)."""
    out: list = []
    lock = threading.Lock()
    start = threading.Barrier(len(per_thread) + 1)

    def worker(calls):
        start.wait(30)
        mine = []
        for t in calls:
            try:
                mine.append((t, client.create_transfers([t])))
            except Exception as e:  # noqa: BLE001 - asserted by the test
                mine.append((t, e))
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=worker, args=(c,)) for c in per_thread]
    for th in threads:
        th.start()
    start.wait(30)
    t0 = time.monotonic()
    for th in threads:
        th.join(300)
        assert not th.is_alive(), "a caller hung"
    return out, time.monotonic() - t0


def _check_applied_once(cluster, outcomes) -> None:
    """Every call answered with exactly its one result; the ok ones are on the ledger once,
    with the fields sent, the failed ones absent; a resubmission of all answers ``exists``
    for exactly the ok ones (nothing applies twice)."""
    assert all(not isinstance(r, Exception) for _, r in outcomes), [r for _, r in outcomes if isinstance(r, Exception)]
    for t, r in outcomes:
        assert len(r) == 1 and r[0].index == 0
        expected = TR.credit_account_not_found if t.credit_account_id == MISSING else TR.ok
        assert r[0].result is expected, (t, r)
    with _client(cluster, coalesce=False) as reader:
        ids = [t.id for t, _ in outcomes]
        found = {x.id: x for i in range(0, len(ids), 1000)
                 for x in reader.lookup_transfers(ids[i:i + 1000], linearizable=True)}
        ok = {t.id: t for t, r in outcomes if r[0].ok}
        assert set(found) == set(ok)
        for i, t in ok.items():
            f = found[i]
            assert (f.debit_account_id, f.credit_account_id, f.amount) == (t.debit_account_id, t.credit_account_id,
                                                                           t.amount)
        again = reader.create_transfers([t for t, _ in outcomes])
        # A transient failure burns its id (TigerBeetle): the resubmission says id_already_failed.
        assert [r.result for r in again] == [TR.exists if t.id in ok else TR.id_already_failed
                                             for t, _ in outcomes]


def test_64_threads_share_one_client_each_transfer_applied_once(bank):
    calls = _transfers(10_000_000, THREADS, PER_THREAD, failing=True)
    with _client(bank) as c:
        outcomes, _ = _run_threads(c, calls)
        stats = c.coalescing_stats()["create_transfers"]
    assert len(outcomes) == THREADS * PER_THREAD
    _check_applied_once(bank, outcomes)
    assert stats.calls == THREADS * PER_THREAD and stats.submits < stats.calls


def test_64_asyncio_tasks_share_one_client_each_transfer_applied_once(bank):
    calls = [t for per in _transfers(20_000_000, THREADS, PER_THREAD, failing=True) for t in per]
    addresses = list(bank.addresses.values())

    async def main():
        async with AsyncLedgerClient(addresses, member_id="bank-a", key_id="k1",
                                     private_key=bank.private_key("bank-a"), chain_id=bank.chain_id, retry=RETRY,
                                     tls=bank.tls("bank-a"), validators=addresses) as c:
            sem = asyncio.Semaphore(THREADS)  # 64 callers at once, as the threads

            async def one(t):
                async with sem:
                    return t, await c.create_transfers([t])

            out = await asyncio.gather(*(one(t) for t in calls), return_exceptions=True)
            return out, c.coalescing_stats()["create_transfers"]

    outcomes, stats = asyncio.run(asyncio.wait_for(main(), 300))
    assert all(not isinstance(o, Exception) for o in outcomes), [o for o in outcomes if isinstance(o, Exception)]
    _check_applied_once(bank, outcomes)
    assert stats.calls == len(calls) and stats.submits < stats.calls


def _run_tasks(cluster, per_task: list[list[Transfer]]):
    """As _run_threads with one asyncio task per list and one AsyncLedgerClient. ((outcomes,
    seconds), the client's stats, its retries)."""
    addresses = list(cluster.addresses.values())

    async def main():
        async with AsyncLedgerClient(addresses, member_id="bank-a", key_id="k1",
                                     private_key=cluster.private_key("bank-a"), chain_id=cluster.chain_id,
                                     retry=RETRY, tls=cluster.tls("bank-a"), validators=addresses) as c:
            async def task(calls):
                return [(t, await c.create_transfers([t])) for t in calls]

            t0 = time.monotonic()
            done = await asyncio.gather(*(task(x) for x in per_task))
            seconds = time.monotonic() - t0
            return ([o for d in done for o in d], seconds), c.coalescing_stats()["create_transfers"], c.retries

    return asyncio.run(asyncio.wait_for(main(), 300))


def test_figure_64_threads_single_transfers_coalescing_off_vs_on(bank):
    """Issue 16's side-by-side: the same 64 threads x FIGURE_PER_THREAD single transfers
    through one shared client, coalescing off then on, in this one invocation (and the
    knobs, and 64 asyncio tasks through one AsyncLedgerClient). ``client CPU``: this
    process's CPU (the SDK's: the validators are other processes) per transfer."""
    rows = []
    variants = [("off", dict(coalesce=False)), ("on", {}), ("on, 2 in flight", dict(coalesce_in_flight_max=2)),
                ("on, wait 5 ms", dict(coalesce_wait_max_s=0.005)), ("on, asyncio", None)]
    for n, (name, kw) in enumerate(variants):
        calls = _transfers(30_000_000 + n * 1_000_000, THREADS, FIGURE_PER_THREAD, failing=False)
        cpu = time.process_time()
        if kw is None:
            (outcomes, seconds), stats, retries = _run_tasks(bank, calls)
        else:
            with _client(bank, **kw) as c:
                before = c.retries
                outcomes, seconds = _run_threads(c, calls)
                stats = c.coalescing_stats().get("create_transfers")
                retries = c.retries - before
        cpu = time.process_time() - cpu
        assert all(not isinstance(r, Exception) and r[0].ok for _, r in outcomes)
        submits = stats.submits if stats else len(outcomes)
        rows.append((name, len(outcomes), seconds, submits, retries, cpu))
    print(f"\n{THREADS} threads x {FIGURE_PER_THREAD} single transfers, one shared LedgerClient, "
          "3 validators (mutual TLS, 127.0.0.1)")
    print(f"{'coalescing':<16} {'transfers':>9} {'seconds':>8} {'transfers/s':>12} {'Submits':>8} "
          f"{'calls/Submit':>13} {'retries':>8} {'client CPU us/transfer':>23}")
    for name, n, s, submits, retries, cpu in rows:
        print(f"{name:<16} {n:>9} {s:>8.2f} {n / s:>12.0f} {submits:>8} "
              f"{n / submits:>13.1f} {retries:>8} {cpu / n * 1e6:>23.0f}")
    off, on = rows[:2]
    assert on[3] < off[3]  # fewer Submits with coalescing on
