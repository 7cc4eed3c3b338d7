"""The operation history of a chaos run (Jepsen style), one JSON object per line.

Every operation is an ``invoke`` record followed later by exactly one completion
record of the same ``process``::

    {"index": 7, "process": 2, "type": "invoke", "f": "transfer", "time_ns": 1203000,
     "value": {"id": 1001, "from": 3, "to": 5, "amount": 17}}
    {"index": 9, "process": 2, "type": "ok",     "f": "transfer", "time_ns": 1350000,
     "value": {"id": 1001, "from": 3, "to": 5, "amount": 17, "result": "ok"}}

``type`` of a completion:
  * ``ok``   — the operation took effect (transfer committed; read returned ``balances``);
  * ``fail`` — it definitely did not take effect: a transfer rejected by the ledger
    (``result`` is the result code, e.g. ``exceeds_credits`` — a rejection is still a
    definite, ordered observation of the state) or a request refused as a whole;
  * ``info`` — outcome unknown (timeout, leader change); the process is retired and
    a fresh process id takes its place, as in Jepsen.

Reads: invoke ``value`` is null; ok ``value`` is ``{"balances": {"<account id>": net}}``
with net = credits_posted - debits_posted in minor units. ``time_ns`` is
monotonic nanoseconds since the run's t0 (shared with the fault timeline).
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any, Iterator


class History:
    """Thread-safe JSONL writer of invoke/complete records."""

    def __init__(self, path: str, t0_ns: int) -> None:
        self.path = path
        self.t0_ns = t0_ns
        self._f = open(path, "w")
        self._lock = threading.Lock()
        self._index = itertools.count()

    def now_ns(self) -> int:
        return time.monotonic_ns() - self.t0_ns

    def record(self, process: int, type_: str, f: str, value: Any) -> dict:
        with self._lock:
            rec = {"index": next(self._index), "process": process, "type": type_, "f": f,
                   "time_ns": self.now_ns(), "value": value}
            self._f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            return rec

    def close(self) -> None:
        with self._lock:
            self._f.flush()
            self._f.close()


def read_history(path: str) -> Iterator[dict]:
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def pair_operations(records: list[dict]) -> list[dict]:
    """Pair each invoke with its completion: [{process, f, invoke, complete (None if missing)}]."""
    open_by_process: dict[int, dict] = {}
    ops: list[dict] = []
    for r in records:
        if r["type"] == "invoke":
            op = {"process": r["process"], "f": r["f"], "invoke": r, "complete": None}
            open_by_process[r["process"]] = op
            ops.append(op)
        else:
            op = open_by_process.pop(r["process"], None)
            if op is not None:
                op["complete"] = r
    return ops
