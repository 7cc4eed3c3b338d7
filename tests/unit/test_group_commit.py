"""Group commit that follows load (node/batcher.py, issue 16 item 2).

The batcher's proposer is its seam to Raft. Here it is a small stand-in for
pysyncobj's leader: entries are committed in proposal order by a thread,
``latency_s`` after they were proposed, and the callback runs on that thread as
pysyncobj's runs on its tick thread. Transactions are real (``helpers``: signed
envelopes, real ``codec``); every test stops its batcher and its committer.
"""
from __future__ import annotations

import queue
import threading
import time

from pysyncobj import FAIL_REASON

from helpers import transfer, transfers_tx
from raft_ledger_node.batcher import Batcher, ProposalFailed, Submission
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.types import TxResult

WAIT_S = 20.0


class DelayedRaft:
    """Commits proposed entries in order, each ``latency_s`` after its proposal."""

    def __init__(self, latency_s: float, *, fail_every: int = 0) -> None:
        self.latency_s = latency_s
        self.fail_every = fail_every
        self.entries: list[tuple] = []  # decoded Entry per proposal, in order
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def propose(self, entry: bytes, decoded, callback) -> None:
        assert codec.decode_entry(entry).envelopes == tuple(tx.envelope for tx in decoded.txs)
        self.entries.append(decoded)
        self._q.put((time.monotonic() + self.latency_s, len(self.entries), decoded, callback))

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            at, n, decoded, callback = item
            time.sleep(max(0.0, at - time.monotonic()))
            if self.fail_every and n % self.fail_every == 0:
                callback(None, FAIL_REASON.DISCARDED)
            else:
                callback([TxResult(tx.tx_hash, n, (0,) * len(tx.events)) for tx in decoded.txs], FAIL_REASON.SUCCESS)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(WAIT_S)

    def transfers_per_entry(self) -> float:
        return sum(len(tx.events) for e in self.entries for tx in e.txs) / len(self.entries)


def _closed_loop(batcher: Batcher, callers: int, rounds: int) -> list[Submission]:
    """``callers`` threads, each submitting one transfer and waiting for it, ``rounds`` times."""
    done: list[Submission] = []
    lock = threading.Lock()

    def caller(c: int) -> None:
        for r in range(rounds):
            sub = Submission(txs=[transfers_tx(transfer(1 + c * 10_000 + r, 1, 2, 1))])
            batcher.submit(sub)
            assert sub.done.wait(WAIT_S)
            with lock:
                done.append(sub)

    threads = [threading.Thread(target=caller, args=(c,)) for c in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * rounds)
    return done


def _measure(callers: int, wait_s: float, latency_s: float = 0.02, rounds: int = 8) -> tuple[float, list[Submission]]:
    raft = DelayedRaft(latency_s)
    b = Batcher(raft.propose, inflight_entries_max=4, group_commit_wait_s_max=wait_s)
    b.start()
    try:
        subs = _closed_loop(b, callers, rounds)
    finally:
        b.stop()
        raft.close()
    assert len(subs) == callers * rounds and all(s.error is None and len(s.results) == 1 for s in subs)
    return raft.transfers_per_entry(), subs


def test_transfers_per_entry_rise_with_concurrency():
    """16 callers of one transfer each, Raft committing in 20 ms: with group commit they
    share entries, about 16 / 2 (closed-loop callers settle into two cohorts, one
    entry committing while the next collects); proposing as soon as one of 4 slots
    is free (wait 0, the old behaviour) gives about 16 / 4."""
    grouped, _ = _measure(16, wait_s=0.1)
    eager, _ = _measure(16, wait_s=0.0)
    single, _ = _measure(1, wait_s=0.1)
    assert single == 1.0
    assert grouped >= 7.0, grouped
    assert eager <= 6.0, eager
    assert grouped >= 1.5 * eager, (grouped, eager)


def test_a_lone_submission_waits_for_no_one():
    """Nothing in flight: proposed at once, however long the maximum wait."""
    raft = DelayedRaft(0.0)
    b = Batcher(raft.propose, group_commit_wait_s_max=10.0)
    b.start()
    try:
        for i in range(5):
            sub = Submission(txs=[transfers_tx(transfer(100 + i, 1, 2, 1))])
            t = time.monotonic()
            b.submit(sub)
            assert sub.done.wait(WAIT_S) and sub.error is None
            assert time.monotonic() - t < 2.0
    finally:
        b.stop()
        raft.close()


def test_the_maximum_wait_bounds_the_wait_behind_a_slow_entry():
    """An entry stuck in flight (Raft takes 3 s) does not hold the next one back longer than the wait."""
    raft = DelayedRaft(3.0)
    b = Batcher(raft.propose, inflight_entries_max=4, group_commit_wait_s_max=0.05)
    b.start()
    try:
        first = Submission(txs=[transfers_tx(transfer(1, 1, 2, 1))])
        b.submit(first)
        deadline = time.monotonic() + WAIT_S
        while not raft.entries and time.monotonic() < deadline:
            time.sleep(0.005)
        second = Submission(txs=[transfers_tx(transfer(2, 1, 2, 1))])
        t = time.monotonic()
        b.submit(second)
        while len(raft.entries) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        proposed_after = time.monotonic() - t
        assert len(raft.entries) == 2 and 0.03 <= proposed_after < 1.5, proposed_after
        assert first.done.wait(WAIT_S) and second.done.wait(WAIT_S)
    finally:
        b.stop()
        raft.close()


def test_every_submission_is_answered_once_whole_and_in_order_even_when_entries_fail():
    """Multi-transaction submissions from 12 threads; every 5th entry fails (pysyncobj: discarded).
    Each submission lands whole, its transactions contiguous and in order, in exactly one
    entry; its callers get exactly its own results, or ProposalFailed if its entry failed."""
    raft = DelayedRaft(0.005, fail_every=5)
    b = Batcher(raft.propose, inflight_entries_max=4, group_commit_wait_s_max=0.02, block_events_max=50)
    subs: list[Submission] = []
    lock = threading.Lock()

    def caller(c: int) -> None:
        for r in range(10):
            base = 1 + (c * 100 + r) * 10
            txs = [transfers_tx(*[transfer(base + 3 * k + j, 1, 2, 1) for j in range(3)]) for k in range(c % 3 + 1)]
            sub = Submission(txs=txs)
            with lock:
                subs.append(sub)
            b.submit(sub)
            assert sub.done.wait(WAIT_S)

    b.start()
    try:
        threads = [threading.Thread(target=caller, args=(c,)) for c in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S * 10)
    finally:
        b.stop()
        raft.close()
    where = {}  # tx hash -> (entry number, position)
    for n, e in enumerate(raft.entries, 1):
        assert sum(len(tx.events) for tx in e.txs) <= 50
        for pos, tx in enumerate(e.txs):
            assert tx.tx_hash not in where, "a transaction was proposed twice"
            where[tx.tx_hash] = (n, pos)
    for sub in subs:
        places = [where[tx.tx_hash] for tx in sub.txs]
        n = places[0][0]
        assert places == [(n, places[0][1] + i) for i in range(len(sub.txs))], "split or reordered"
        if n % 5 == 0:
            assert isinstance(sub.error, ProposalFailed) and sub.results is None
        else:
            assert sub.error is None and [r.tx_hash for r in sub.results] == [tx.tx_hash for tx in sub.txs]
            assert all(r.height == n for r in sub.results)
