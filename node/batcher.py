"""Group commit: collect verified transactions from concurrent submissions into Raft entries.

One thread takes submissions from a queue. It proposes as soon as a slot among
``inflight_entries_max`` is free, with everything that queued up meanwhile (up
to ``block_events_max`` events / ``entry_bytes_max`` bytes): under light load an
entry carries one submission and waits for nothing; under heavy load entries
grow. The leader stamps each entry with its wall-clock time (ns) when it
proposes; the core makes block timestamps strictly increasing from there.

Failure contract: a proposal that pysyncobj reports as not committed
(leader changed, discarded, queue full, no leader) fails every submission in it
with :class:`ProposalFailed`; its outcome is unknown and the client retries the
same signed transactions, which the core deduplicates by hash and by id.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from pysyncobj import FAIL_REASON

from raft_ledger_node.ledger import codec, limits
from raft_ledger_node.ledger.types import Entry, Operation, Tx, TxResult
from raft_ledger_node.metrics import UNREGISTERED, LedgerMetrics

log = logging.getLogger("ledger.batcher")

_REASONS = {v: k for k, v in vars(FAIL_REASON).items() if k.isupper()}


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
    ``metrics`` counts each entry's transfers and its outcome (node/metrics.py).
    """

    def __init__(self, propose, *, inflight_entries_max: int = 4, block_events_max: int = limits.block_events_max,
                 metrics: LedgerMetrics = UNREGISTERED) -> None:
        self._propose = propose
        self._metrics = metrics
        self._queue: queue.Queue[Submission] = queue.Queue()
        self._slots = threading.Semaphore(inflight_entries_max)
        self._block_events_max = block_events_max
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(Submission(txs=[]))

    def submit(self, sub: Submission) -> None:
        self._queue.put(sub)

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self._queue.get()
            if self._stop.is_set():
                break
            if not first.txs:
                continue
            events, size = first.events(), first.size()
            if events > self._block_events_max or size > limits.entry_bytes_max:
                first.error = SubmissionTooLarge(
                    f"{events} events / {size} bytes exceed one block "
                    f"(block_events_max={self._block_events_max}, entry_bytes_max={limits.entry_bytes_max})"
                )
                first.done.set()
                continue
            self._slots.acquire()
            batch = [first]
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not nxt.txs:
                    continue
                if nxt.events() > self._block_events_max or nxt.size() > limits.entry_bytes_max:
                    self._queue.put(nxt)  # refused as the first of the next round
                    break
                if events + nxt.events() > self._block_events_max or size + nxt.size() > limits.entry_bytes_max:
                    self._dispatch(batch)
                    self._slots.acquire()
                    batch, events, size = [], 0, 0
                batch.append(nxt)
                events += nxt.events()
                size += nxt.size()
            self._dispatch(batch)

    def _dispatch(self, batch: list[Submission]) -> None:
        txs = tuple(tx for sub in batch for tx in sub.txs)
        decoded = Entry(proposed_timestamp=time.time_ns(), txs=txs)
        entry = codec.encode_entry(decoded)
        metrics = self._metrics
        metrics.batch(sum(len(tx.events) for tx in txs if tx.operation == Operation.create_transfers))

        def on_result(res, err) -> None:
            self._slots.release()
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
            self._slots.release()
            for sub in batch:
                sub.error = ProposalFailed(str(e))
                sub.done.set()
