"""Linearizable reads that share one Raft entry: a read barrier for many readers.

A leader must confirm it still leads before it answers a read (Raft §8; the thesis
§6.4 does it with a ReadIndex heartbeat round, etcd too). pysyncobj has no hook
for that round, so the confirmation is a barrier entry committed in the leader's
term; this module makes concurrent readers share them: **one barrier in flight at
a time**, and every reader that arrives while it is in flight waits for the *next*
barrier, proposed when the current one completes. A reader never uses a barrier
proposed before it arrived: a write acknowledged before the read began may sit in
the log after such a barrier, so only a later one is ordered after that write.
With k readers arriving together, k reads cost 2 entries instead of k.

``propose(done)`` appends one barrier and calls ``done(ok)`` once it is applied
(ok) or failed (not ok), from any thread. A barrier whose callback never comes is
given up after ``stale_s``; its readers time out, later readers start a fresh one.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class _Group:
    __slots__ = ("event", "ok", "generation")

    def __init__(self, generation: int) -> None:
        self.event = threading.Event()
        self.ok = False
        self.generation = generation


class ReadBarrierBatcher:
    """``wait(timeout_s) -> bool``: True once a barrier proposed after the call began is applied."""

    def __init__(self, propose: Callable[[Callable[[bool], None]], None], *, stale_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._propose = propose
        self._stale_s = stale_s
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: _Group | None = None
        self._inflight_since = 0.0
        self._next: _Group | None = None
        self._generation = 0
        #: Barriers proposed, and readers waiting for the next one (tests read them).
        self.proposed = 0
        self.queued = 0

    def wait(self, timeout_s: float) -> bool:
        start: _Group | None = None
        with self._lock:
            now = self._clock()
            if self._inflight is not None and now - self._inflight_since > self._stale_s:
                self._inflight, self._next = None, None  # a lost callback: start afresh
            if self._inflight is None:
                start = group = self._begin(now)
            else:
                if self._next is None:
                    self._generation += 1
                    self._next = _Group(self._generation)
                group = self._next
                self.queued += 1
        if start is not None:
            self._send(start)
        return group.event.wait(timeout_s) and group.ok

    def _begin(self, now: float) -> _Group:
        """Make a new in-flight group; the caller holds the lock and proposes it."""
        self._generation += 1
        g = self._inflight = _Group(self._generation)
        self._inflight_since = now
        self.proposed += 1
        return g

    def _send(self, group: _Group) -> None:
        try:
            self._propose(lambda ok: self._done(group, ok))
        except Exception:
            self._done(group, False)

    def _done(self, group: _Group, ok: bool) -> None:
        group.ok = bool(ok)
        group.event.set()
        start: _Group | None = None
        with self._lock:
            if self._inflight is not group:
                return  # given up as stale meanwhile
            waiting, self._next = self._next, None
            self.queued = 0
            if waiting is None:
                self._inflight = None
            else:
                self._inflight = waiting
                self._inflight_since = self._clock()
                self.proposed += 1
                start = waiting
        if start is not None:
            self._send(start)
