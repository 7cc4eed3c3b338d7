"""Group commit in the SDK: concurrent writes of one client become one signed transaction.

Many threads (or tasks) of a member bank share one client. Each ``create_transfers`` /
``create_accounts`` call is a :class:`Request`; while a Submit is in flight the requests
that arrive queue up, and the next Submit carries all of them that fit one transaction,
as TigerBeetle's client batches the requests waiting behind the one in flight
(docs: "Batching events", clients/README: "the client batches automatically"). One
signature, one envelope, one gRPC call and one validator-side decode per batch instead
of one per call.

What stays exactly as if each call were submitted alone:

- **Results**: each caller gets one :class:`EventResult` per event of its own list, with
  its own indexes (0..len-1), cut out of the batch's results.
- **Linked chains**: a caller's events stay contiguous and in its order. A chain is
  closed by its first event without ``linked`` (node/ledger/apply.py ``_apply_tx``,
  TigerBeetle state_machine.zig ``execute_create``), so a caller whose last event is
  unlinked ends its chains inside its own events, and a later caller's events are never
  part of them. A caller whose last event *is* linked has an open chain, which fails
  with ``linked_event_chain_open`` only because it runs to the end of the transaction:
  such a request must be the last one of its batch to fail exactly as alone.
  A request whose last event is linked (an open chain, ``Request.chained``) therefore ends its batch.
  (Until 658ea93 every request holding a linked event ended its batch, to keep clear of
  a defect of the ledger core these tests found: after a chain that failed, an unlinked
  event restored the failed chain's layer and the next chain committed its records.)
- **Failures**: a Submit that fails (Timeout, Unavailable, NotSubmitted, PermissionDenied
  ...) or a transaction refused at apply (TransactionRejected: the signer's key or
  role, the same for every caller of this client) reaches every caller of the batch as
  its own copy of that exception. A batch refused at the door (InvalidRequest: nothing
  was proposed) is split: each request is then signed and submitted alone, so one
  caller's malformed request is answered to that caller only.
- **Retries**: a batch is signed once; :meth:`LedgerClient._call_leader` resends those
  very bytes. It is never re-signed with another body after an attempt whose outcome is
  unknown (only the door refusal above, where nothing was proposed, re-signs).
- **Deadlines**: a request waits in the queue at most until its own deadline (then
  NotSubmitted: it was never sent); a batch's Submit runs to the earliest deadline of
  its requests, so no caller waits past its own.

Limits a batch keeps to (the validators' ``node/ledger/limits.py``; the SDK never
imports the node, tests/unit/test_coalescing.py pins the copies): events per
transaction (``tx_events_max`` = ``submit_events_max``) and bytes of one envelope
(``tx_bytes_max``). A request that alone exceeds them is sent alone, and refused by the
validator as it would be without coalescing.

The queue logic (:class:`Batches`) is shared by the thread-safe driver here
(:class:`Coalescer`) and the asyncio one (``raft_ledger_client.aio``).
"""
from __future__ import annotations

import copy
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from raft_ledger_client._exceptions import InvalidRequest, LedgerError, NotSubmitted, Timeout, TransactionRejected

#: Events in one signed transaction (node/ledger/limits.py ``tx_events_max``; also
#: ``submit_events_max``, the events of one Submit call).
TX_EVENTS_MAX = 8_190
#: Bytes of one signed transaction's envelope (``tx_bytes_max``).
TX_BYTES_MAX = 1 << 20
#: Bytes an envelope holds besides its events' framed bytes and its ids: signature (64),
#: valid_until, the operation's framing, the envelope's own tags and lengths. Generous.
ENVELOPE_OVERHEAD_BYTES_MAX = 512
#: Seconds a caller whose request was taken into a Submit waits past its own deadline
#: for that Submit to end, at most (one attempt can overrun the deadline by its own
#: minimum timeout, 0.05 s); past it the caller gets Timeout (outcome unknown).
RESULT_WAIT_SLACK_S = 5.0


def framed_bytes(message) -> int:
    """Bytes a protobuf event adds to a repeated field: tag (1), length varint, body."""
    n = message.ByteSize()
    return 1 + _varint_bytes(n) + n


def _varint_bytes(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


@dataclass(eq=False)
class Request:
    """One caller's events (protobuf Account or Transfer messages), waiting to be sent.

    ``nbytes``: their framed bytes; ``chained``: its last event is flagged linked, an
    open chain (the request then ends its batch: see the module docstring);
    ``deadline``: monotonic seconds. Set once by the batch that carried it: ``results``
    (the caller's EventResults) or ``error`` (an exception to raise a copy of).
    """

    events: Sequence
    nbytes: int
    chained: bool
    deadline: float
    taken: bool = False
    done: bool = False
    results: tuple = ()
    error: BaseException | None = None
    #: The async driver's future (raft_ledger_client.aio); unused by threads.
    future: object = field(default=None, repr=False)

    def finish(self, results: tuple = (), error: BaseException | None = None) -> None:
        self.results, self.error, self.done = results, error, True

    def outcome(self) -> list:
        """The caller's results, or raises its own copy of the batch's exception."""
        if self.error is not None:
            raise own_copy(self.error) from self.error
        return list(self.results)


def own_copy(e: BaseException) -> BaseException:
    """A copy of ``e`` for one caller: one exception object raised in many threads would
    share (and keep rewriting) one traceback."""
    try:
        return copy.copy(e)
    except Exception:  # an exception type that does not copy: a plain LedgerError naming it
        return LedgerError(f"{type(e).__name__}: {e}")


@dataclass
class CoalescingStats:
    """Counters of a client's coalescing: ``calls`` (create_* calls answered through it),
    ``submits`` (Submit calls it made, one signed transaction each), ``events`` (events
    they carried), ``split`` (batches refused at the door and resent one request each)."""

    calls: int = 0
    submits: int = 0
    events: int = 0
    split: int = 0

    @property
    def calls_per_submit(self) -> float:
        return self.calls / self.submits if self.submits else 0.0


class Batches:
    """The queue of one operation's requests and the rule for cutting batches; no locking
    (each driver holds its own lock or runs on one event loop).

    ``bytes_max``: envelope bytes available to events (TX_BYTES_MAX less the ids and
    overhead); ``events_max``: events per transaction; ``in_flight_max``: Submits of this
    queue at once (1: classic group commit, the next batch forms while one is in flight).
    """

    def __init__(self, *, events_max: int, bytes_max: int, in_flight_max: int) -> None:
        if not (events_max >= 1 and bytes_max >= 1 and in_flight_max >= 1):
            raise ValueError("events_max, bytes_max and in_flight_max must be >= 1")
        self.events_max, self.bytes_max, self.in_flight_max = events_max, bytes_max, in_flight_max
        self.queue: deque[Request] = deque()
        self.in_flight = 0
        self.stats = CoalescingStats()

    def can_flush(self) -> bool:
        return bool(self.queue) and self.in_flight < self.in_flight_max

    def full(self) -> bool:
        """Whether the queue already holds a whole batch (no point waiting for more)."""
        events = nbytes = 0
        for r in self.queue:
            events += len(r.events)
            nbytes += r.nbytes
            if r.chained or events >= self.events_max or nbytes >= self.bytes_max:
                return True
        return False

    def take(self) -> list[Request]:
        """The next batch, from the head of the queue, in arrival order: as many requests
        as fit ``events_max`` and ``bytes_max`` (the first always, alone if it is too
        large by itself), ending at the first request with an open chain. Counts the
        Submit as in flight."""
        batch: list[Request] = []
        events = nbytes = 0
        while self.queue:
            r = self.queue[0]
            if batch and (events + len(r.events) > self.events_max or nbytes + r.nbytes > self.bytes_max):
                break
            self.queue.popleft()
            r.taken = True
            batch.append(r)
            events += len(r.events)
            nbytes += r.nbytes
            if r.chained:
                break
        if batch:
            self.in_flight += 1
        return batch

    def withdraw(self, r: Request) -> bool:
        """Take ``r`` out of the queue (its deadline passed before it was sent); False if
        a batch has taken it already."""
        if r.taken:
            return False
        self.queue.remove(r)
        return True

    def landed(self) -> None:
        """A Submit of this queue ended (its requests are finished)."""
        self.in_flight -= 1

    def step(self, r: Request, now: float):
        """What the caller of ``r`` does next, at ``now`` (the client's clock): FLUSH (send
        the next batch itself), None (``r`` is finished: return its outcome), or seconds to
        wait for a change. Finishes ``r`` with NotSubmitted when its deadline passed in the
        queue, or with Timeout when the Submit that took it overran the deadline by
        RESULT_WAIT_SLACK_S (it is then left to that Submit, unheard)."""
        if r.done:
            return None
        if not r.taken:
            if self.can_flush():
                return FLUSH
            if now >= r.deadline:
                self.withdraw(r)
                r.finish(error=never_sent(r))
                return None
            return max(0.001, min(r.deadline - now, 1.0))
        if now >= r.deadline + RESULT_WAIT_SLACK_S:
            r.finish(error=Timeout("the Submit carrying this write did not end within its deadline; "
                                   "outcome unknown: resubmit the same events (ids deduplicate) to learn it"))
            return None
        return max(0.001, min(r.deadline + RESULT_WAIT_SLACK_S - now, 1.0))


#: :meth:`Batches.step`: the caller sends the next batch.
FLUSH = "flush"


def send_steps(batch: list[Request], ok_results):
    """The Submits of one batch, as a generator both drivers run (the thread one calls,
    the asyncio one awaits): it yields ``(events, deadline)`` to sign and submit, is sent
    the TransactionResult or thrown the exception, finishes every request, and returns
    ``(submits, events sent, split)``. A batch refused at the door (InvalidRequest:
    nothing proposed) is sent again one request each, so only the request at fault fails;
    any other failure finishes every request of the batch with it."""
    events = [e for r in batch for e in r.events]
    try:
        try:
            deliver(batch, (yield events, min(r.deadline for r in batch)), ok_results)
            return 1, len(events), 0
        except InvalidRequest:
            if len(batch) == 1:
                raise
        for r in batch:
            try:
                deliver([r], (yield list(r.events), r.deadline), ok_results)
            except Exception as e:  # noqa: BLE001 - handed to its caller
                r.finish(error=e)
        return 1 + len(batch), 2 * len(events), 1
    except Exception as e:  # noqa: BLE001 - every caller of the batch gets it
        for r in batch:
            if not r.done:
                r.finish(error=e)
        return 1, len(events), 0


def never_sent(r: Request) -> NotSubmitted:
    return NotSubmitted(f"a write of {len(r.events)} events waited in this client's queue until its deadline "
                        "and was never sent; nothing was applied by this call")


def deliver(batch: list[Request], tx_result, ok_results) -> None:
    """Finish every request of ``batch`` from the TransactionResult of the one transaction
    that carried them, in order: each gets its own slice, indexes from 0."""
    if tx_result.rejection:
        err = TransactionRejected(
            f"transaction {tx_result.tx_hash.hex()[:16]}… was refused at block {tx_result.height}: "
            f"{tx_result.rejection.name}", tx_result.rejection, tx_result.height)
        for r in batch:
            r.finish(error=err)
        return
    results = tx_result.results
    if sum(len(r.events) for r in batch) != len(results):
        raise LedgerError(f"a transaction of {sum(len(r.events) for r in batch)} events came back with "
                          f"{len(results)} results")
    start = 0
    for r in batch:
        n = len(r.events)
        mine = results[start:start + n]
        if all(e.ok for e in mine):
            r.finish(ok_results.first(n))
        else:
            r.finish(tuple(e if e.index == i else replace(e, index=i) for i, e in enumerate(mine)))
        start += n


class Coalescer:
    """The thread-safe driver of one operation's :class:`Batches` for a LedgerClient.

    ``send(events, deadline) -> TransactionResult``: signs one transaction of ``events``
    and submits it (LedgerClient's submit, retries included) with that deadline.
    ``ok_results``: the shared ok EventResults (``_OkResults``). ``wait_max_s``: how long
    a caller that is about to send waits for more requests to join (0: never; merge only
    what queued while a Submit was in flight). ``clock``: monotonic seconds.

    No background thread: a caller whose request is queued and finds fewer than
    ``in_flight_max`` Submits in flight sends the next batch itself, then hands over.
    """

    def __init__(self, send: Callable, ok_results, *, events_max: int, bytes_max: int, wait_max_s: float = 0.0,
                 in_flight_max: int = 1, clock: Callable[[], float]) -> None:
        if wait_max_s < 0:
            raise ValueError("wait_max_s must be >= 0")
        self._send, self._ok, self._clock = send, ok_results, clock
        self._wait_max_s = wait_max_s
        self._batches = Batches(events_max=events_max, bytes_max=bytes_max, in_flight_max=in_flight_max)
        self._cv = threading.Condition()

    @property
    def stats(self) -> CoalescingStats:
        with self._cv:
            return copy.copy(self._batches.stats)

    def pending(self) -> int:
        """Requests queued and not yet sent (tests)."""
        with self._cv:
            return len(self._batches.queue)

    def run(self, r: Request) -> list:
        """Queue ``r``, send batches while this thread may, return ``r``'s results or raise."""
        b = self._batches
        with self._cv:
            b.queue.append(r)
            b.stats.calls += 1
            while (step := b.step(r, self._clock())) is not None:
                if step is FLUSH:
                    self._flush_locked()
                else:
                    self._cv.wait(step)
        return r.outcome()

    def _flush_locked(self) -> None:
        """Cut a batch and send it; the lock is released while waiting and sending."""
        b = self._batches
        if self._wait_max_s > 0:
            # Real time, not the client's clock (a test's clock may stand still): this wait is real.
            until = time.monotonic() + self._wait_max_s
            b.in_flight += 1  # hold the slot while gathering
            while not b.full() and time.monotonic() < until:
                self._cv.wait(until - time.monotonic())
            b.in_flight -= 1
        batch = b.take()
        if not batch:
            return
        self._cv.release()
        outcome = (1, 0, 0)
        try:
            outcome = self._submit_batch(batch)
        finally:
            self._cv.acquire()
            b.landed()
            b.stats.submits += outcome[0]
            b.stats.events += outcome[1]
            b.stats.split += outcome[2]
            self._cv.notify_all()

    def _submit_batch(self, batch: list[Request]) -> tuple[int, int, int]:
        """Run :func:`send_steps` for ``batch`` (lock not held), calling ``send``."""
        steps = send_steps(batch, self._ok)
        try:
            step = next(steps)
            while True:
                try:
                    result = self._send(*step)
                except Exception as e:  # noqa: BLE001 - the generator hands it to the callers
                    step = steps.throw(e)
                else:
                    step = steps.send(result)
        except StopIteration as done:
            return done.value
