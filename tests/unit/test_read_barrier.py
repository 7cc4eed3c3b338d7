"""Concurrent linearizable reads share read barriers (node/raft/read_barrier.py).

The rule checked (Raft §8, thesis §6.4): a reader is released only by a barrier
proposed after it arrived, and there is one barrier in flight at a time, so k
readers arriving while one is in flight share the next one.
"""
from __future__ import annotations

import threading

from raft_ledger_node.raft.read_barrier import ReadBarrierBatcher

WAIT_S = 10.0


class Log:
    """The proposer: records each barrier's completion callback; the test commits them."""

    def __init__(self) -> None:
        self.pending: list = []
        self.cond = threading.Condition()

    def propose(self, done) -> None:
        with self.cond:
            self.pending.append(done)
            self.cond.notify_all()

    def wait_for(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.pending) >= n, WAIT_S), self.pending


def _reader(b: ReadBarrierBatcher, out: list, timeout_s: float = WAIT_S) -> threading.Thread:
    t = threading.Thread(target=lambda: out.append(b.wait(timeout_s)))
    t.start()
    return t


def test_readers_arriving_during_a_barrier_share_the_next_one():
    log = Log()
    b = ReadBarrierBatcher(log.propose)
    first: list = []
    t1 = _reader(b, first)
    log.wait_for(1)
    later: list = []
    threads = [_reader(b, later) for _ in range(5)]
    # The later readers queue for the next barrier; wait (bounded) until all five are parked.
    parked = threading.Event()
    for _ in range(5000):
        if b.queued == 5:
            break
        parked.wait(0.001)
    assert b.queued == 5
    log.pending[0](True)  # barrier 1 applied: releases only the first reader
    t1.join(WAIT_S)
    assert first == [True]
    log.wait_for(2)  # barrier 2 proposed at once, for everyone who arrived meanwhile
    assert later == [] and b.proposed == 2
    log.pending[1](True)
    for t in threads:
        t.join(WAIT_S)
    assert later == [True] * 5
    assert b.proposed == 2 and len(log.pending) == 2


def test_a_failed_barrier_fails_its_readers_and_the_next_reader_starts_afresh():
    log = Log()
    b = ReadBarrierBatcher(log.propose)
    out: list = []
    t = _reader(b, out)
    log.wait_for(1)
    log.pending[0](False)  # leadership lost
    t.join(WAIT_S)
    assert out == [False]
    out2: list = []
    t2 = _reader(b, out2)
    log.wait_for(2)
    log.pending[1](True)
    t2.join(WAIT_S)
    assert out2 == [True]


def test_a_lost_callback_is_given_up_after_stale_s():
    now = [0.0]
    log = Log()
    b = ReadBarrierBatcher(log.propose, stale_s=5.0, clock=lambda: now[0])
    assert b.wait(0.01) is False  # barrier 1's callback never comes
    now[0] = 6.0
    out: list = []
    t = _reader(b, out)
    log.wait_for(2)  # a fresh barrier, not a wait behind the lost one
    log.pending[1](True)
    t.join(WAIT_S)
    assert out == [True]
    log.pending[0](True)  # the late callback changes nothing
    assert b._inflight is None
