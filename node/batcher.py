"""Group commit: collect verified transactions from concurrent submissions into Raft entries.

One thread takes submissions from a queue, in order, and proposes them as Raft
entries (up to ``block_events_max`` events / ``entry_bytes_max`` bytes each,
at most ``inflight_entries_max`` entries proposed and not yet committed). An
entry is proposed

* at once when no entry is in flight: under light load a submission waits for
  nothing;
* otherwise when it is full (the next submission does not fit), or when its
  oldest submission has waited ``group_commit_wait_s_max``, or as soon as the entries
  in flight have all committed, whichever comes first.

So while entries are in flight, concurrent submissions accumulate into the next
entry and transfers per entry follow load (MySQL's and PostgreSQL's group commit
do the same for their log flush: the followers of a flush in progress join the
next one). Before this, the batcher proposed as soon as any of 4 slots was free:
16 callers of one transfer each gave ~3 transfers per entry (issue 16).

The leader stamps each entry with its wall-clock time (ns) when it proposes;
the core makes block timestamps strictly increasing from there. Submissions go
into entries in the order they were submitted, each whole in one entry, so a
Submit's transactions stay in order and atomic.

Failure contract: a proposal that pysyncobj reports as not committed
(leader changed, discarded, queue full, no leader) fails every submission in it
with :class:`ProposalFailed`; its outcome is unknown and the client retries the
same signed transactions, which the core deduplicates by hash and by id.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from pysyncobj import FAIL_REASON

from raft_ledger_node.ledger import codec, limits
from raft_ledger_node.ledger.types import Entry, Operation, Tx, TxResult
from raft_ledger_node.metrics import UNREGISTERED, LedgerMetrics

log = logging.getLogger("ledger.batcher")

_REASONS = {v: k for k, v in vars(FAIL_REASON).items() if k.isupper()}

#: Longest time (s) a submission waits for company while entries are in flight
#: (see the module docstring); none at all when nothing is in flight, so it only
#: matters once a Raft commit takes longer than this, i.e. under load, when bigger
#: entries are what frees CPU. Chosen by node/bench/group_commit.py on our shared,
#: heavily loaded 2-core machine: transfers per entry at 8 and 64 callers of one
#: transfer, 0 vs 20 ms in one run, 1.6 vs 3.4 and 3.0 vs 5.2 (5 ms in another run:
#: 2.2 and 3.6); at 8 callers of 100 transfers, 0 / 5 / 20 ms in one run, 152 / 168
#: / 223, with the most transfers/s at 20 ms.
GROUP_COMMIT_WAIT_S_MAX = 0.02


class ProposalFailed(RuntimeError):
    """The entry was not committed as proposed; the outcome is unknown."""


class SubmissionTooLarge(ValueError):
    """The submission alone exceeds one block (``block_events_max`` events or
    ``entry_bytes_max`` bytes); it was not proposed. The API's door checks
    (``submit_events_max``, ``submit_bytes_max``) keep this from happening."""


@dataclass
class Submission:
    txs: list[Tx]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[TxResult] | None = None
    error: Exception | None = None
    enqueued_ns: int = field(default_factory=time.monotonic_ns)

    def events(self) -> int:
        return sum(len(t.events) for t in self.txs)

    def size(self) -> int:
        """Upper bound of the bytes these transactions add to an encoded entry (an
        entry carries only the envelopes since version 3; the per-event allowance
        is kept as a margin)."""
        return sum(
            len(t.envelope) + limits.entry_tx_bytes_max + limits.entry_event_bytes_max * len(t.events)
            for t in self.txs
        )


class Batcher:
    """Turns submissions into entries proposed via ``propose(entry_bytes, entry, callback)``.

    ``entry`` is the decoded form of ``entry_bytes`` (what the leader's own ingress
    decoded from the same envelopes), so the leader need not decode its own entries.
    ``metrics`` counts each entry's transfers and its outcome (node/metrics.py:
    ``ledger_batch_size_transfers`` is the transfers-per-entry histogram).
    ``group_commit_wait_s_max``: see :data:`GROUP_COMMIT_WAIT_S_MAX`; 0 proposes as soon as a slot
    is free (the behaviour before group commit).
    """

    def __init__(self, propose, *, inflight_entries_max: int = 4, block_events_max: int = limits.block_events_max,
                 group_commit_wait_s_max: float = GROUP_COMMIT_WAIT_S_MAX, metrics: LedgerMetrics = UNREGISTERED) -> None:
        if inflight_entries_max < 1 or group_commit_wait_s_max < 0:
            raise ValueError("inflight_entries_max >= 1 and group_commit_wait_s_max >= 0")
        self._propose = propose
        self._metrics = metrics
        self._pending: deque[Submission] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._inflight = 0
        self._inflight_max = inflight_entries_max
        self._wait_ns = int(group_commit_wait_s_max * 1e9)
        self._block_events_max = block_events_max
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    def submit(self, sub: Submission) -> None:
        with self._cv:
            self._pending.append(sub)
            self._cv.notify_all()

    def inflight(self) -> int:
        """Entries proposed and not yet reported committed or failed."""
        return self._inflight

    def _too_large(self, sub: Submission) -> bool:
        return sub.events() > self._block_events_max or sub.size() > limits.entry_bytes_max

    def _fill(self, batch: list[Submission], events: int, size: int) -> tuple[int, int, bool]:
        """Move pending submissions that fit into ``batch`` (caller holds the lock);
        returns (events, size, full): full when the next pending one does not fit."""
        pending = self._pending
        while pending:
            nxt = pending[0]
            if not nxt.txs:
                pending.popleft()
                continue
            e, b = nxt.events(), nxt.size()
            if self._too_large(nxt) or events + e > self._block_events_max or size + b > limits.entry_bytes_max:
                return events, size, True  # a submission too large alone is refused as the first of a round
            pending.popleft()
            batch.append(nxt)
            events += e
            size += b
        return events, size, events >= self._block_events_max

    def _run(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while not self._pending and not self._stopped:
                    cv.wait()
                if self._stopped:
                    return
                first = self._pending.popleft()
                if not first.txs:
                    continue
                if self._too_large(first):
                    events, size = first.events(), first.size()
                    first.error = SubmissionTooLarge(
                        f"{events} events / {size} bytes exceed one block "
                        f"(block_events_max={self._block_events_max}, entry_bytes_max={limits.entry_bytes_max})"
                    )
                    first.done.set()
                    continue
                batch = [first]
                events, size, full = self._fill(batch, first.events(), first.size())
                deadline_ns = first.enqueued_ns + self._wait_ns
                while not self._stopped:
                    if self._inflight < self._inflight_max:
                        now = time.monotonic_ns()
                        if self._inflight == 0 or full or now >= deadline_ns:
                            break
                        cv.wait((deadline_ns - now) / 1e9)
                    else:
                        cv.wait()
                    if not full:
                        events, size, full = self._fill(batch, events, size)
                if self._stopped:
                    return
                self._inflight += 1
            self._dispatch(batch)

    def _released(self) -> None:
        with self._cv:
            self._inflight -= 1
            self._cv.notify_all()

    def _dispatch(self, batch: list[Submission]) -> None:
        txs = tuple(tx for sub in batch for tx in sub.txs)
        decoded = Entry(proposed_timestamp=time.time_ns(), txs=txs)
        entry = codec.encode_entry(decoded)
        metrics = self._metrics
        metrics.batch(sum(len(tx.events) for tx in txs if tx.operation == Operation.create_transfers))

        def on_result(res, err) -> None:
            self._released()
            ok = err == FAIL_REASON.SUCCESS and res is not None
            metrics.proposal("committed" if ok else "not_applied" if err == FAIL_REASON.SUCCESS
                             else _REASONS.get(err, str(err)).lower())
            if err == FAIL_REASON.SUCCESS and res is not None:
                pos = 0
                for sub in batch:
                    sub.results = res[pos : pos + len(sub.txs)]
                    pos += len(sub.txs)
                    sub.done.set()
            else:
                reason = _REASONS.get(err, str(err)) if err != FAIL_REASON.SUCCESS else "NOT_APPLIED"
                for sub in batch:
                    sub.error = ProposalFailed(reason)
                    sub.done.set()

        try:
            self._propose(entry, decoded, on_result)
        except Exception as e:  # a broken replica must not kill the batcher thread
            log.exception("proposal failed")
            metrics.proposal("error")
            self._released()
            for sub in batch:
                sub.error = ProposalFailed(str(e))
                sub.done.set()
