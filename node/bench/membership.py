"""Validator membership changes at a stored history (``ledger-validator bench``, part "membership").

A fresh 3-validator TLS cluster on 127.0.0.1 is loaded with ``membership_stored``
transfers (``LOAD_BATCH`` per signed transaction, ``LOAD_THREADS`` clients, log
compaction every ``COMPACTION_ENTRIES`` entries so a new validator catches up from a
snapshot plus the log tail, as it would on a long-lived cluster). Then, while
``PROBE_THREADS`` clients each submit one transfer after the other (the write probe),
it runs one change after the other with :mod:`raft_ledger_node.reconfigure`:

* **add v4**: add_validator (learner), start it, catch-up (snapshot + log), promotion,
  voter on every validator;
* **remove** the leader (it hands over leadership and stops);
* **replace** a follower after disk loss: SIGKILL, its data directory deleted, removed,
  added again with the same identity on an empty directory, caught up, promoted.

For each change it reports the time of each step and the write availability during
it: acknowledged probe writes per second, the longest time without any ack, the p99
latency, against the same probe in a quiet window before the first change.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import threading
import time

from raft_ledger_node.bench import ui
from raft_ledger_node.bench.history import dir_bytes

LOAD_BATCH = 100
LOAD_THREADS = 8
LOAD_ACCOUNTS = 10_000
PROBE_THREADS = 4
QUIET_S = 10.0
COMPACTION_ENTRIES = 2_000
ISSUER = "central-bank"
LEDGER = 840


class _Probe:
    """``PROBE_THREADS`` clients writing one transfer each, back to back; every ack timed."""

    def __init__(self, directory: str, first_id: int) -> None:
        from raft_ledger_client import RetryPolicy
        from raft_ledger_node.localcluster import member_client

        self._clients = [member_client(directory, ISSUER, retry=RetryPolicy(deadline_s=30.0, attempt_timeout_s=5.0))
                         for _ in range(PROBE_THREADS)]
        self._next = first_id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.acks: list[tuple[float, float]] = []  # (submitted, acknowledged), monotonic s
        self.failures = 0
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in self._clients]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _run(self, client) -> None:
        from raft_ledger_client import LedgerError, Transfer

        while not self._stop.is_set():
            with self._lock:
                tid = self._next
                self._next += 1
            t0 = time.monotonic()
            try:
                [r] = client.create_transfers([Transfer(id=tid, debit_account_id=1, credit_account_id=2, amount=1,
                                                        ledger=LEDGER, code=1)])
                if r.ok:
                    with self._lock:
                        self.acks.append((t0, time.monotonic()))
            except LedgerError:
                self.failures += 1

    def window(self, start: float, end: float) -> dict:
        """Availability of the probe between ``start`` and ``end`` (monotonic s)."""
        with self._lock:
            acks = sorted(a for _, a in self.acks if start <= a <= end)
            lat = [a - s for s, a in self.acks if start <= a <= end]
        points = [start, *acks, end]
        gap = max(b - a for a, b in zip(points, points[1:]))
        dur = max(end - start, 1e-9)
        p99 = statistics.quantiles(lat, n=100)[98] * 1000 if len(lat) >= 2 else None
        return {"seconds": round(dur, 2), "acks": len(acks), "acks_per_s": round(len(acks) / dur, 1),
                "longest_gap_s": round(gap, 2), "p99_ms": None if p99 is None else round(p99, 1)}

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=40)
        for c in self._clients:
            c.close()


def _load(directory: str, n: int) -> float:
    """Create the accounts and ``n`` transfers between them; returns the seconds the transfers took."""
    from raft_ledger_client import Account, RetryPolicy, Transfer
    from raft_ledger_node.localcluster import member_client

    retry = RetryPolicy(deadline_s=60.0, attempt_timeout_s=20.0)
    with member_client(directory, ISSUER, retry=retry) as c:
        for first in range(1, LOAD_ACCOUNTS + 1, 1000):
            c.create_accounts([Account(id=i, ledger=LEDGER, code=1) for i in range(first, min(first + 1000, LOAD_ACCOUNTS + 1))])
    batches = (n + LOAD_BATCH - 1) // LOAD_BATCH
    counter = iter(range(batches))
    lock = threading.Lock()
    done = [0]

    def worker():
        with member_client(directory, ISSUER, retry=retry) as c:
            while True:
                with lock:
                    b = next(counter, None)
                if b is None:
                    return
                base = 10**9 + b * LOAD_BATCH
                c.create_transfers([Transfer(id=base + k, debit_account_id=1 + (base + k) % LOAD_ACCOUNTS,
                                             credit_account_id=1 + (base + k * 7 + 1) % LOAD_ACCOUNTS, amount=1,
                                             ledger=LEDGER, code=1) for k in range(LOAD_BATCH)])
                with lock:
                    done[0] += LOAD_BATCH

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    last = 0.0
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        if time.monotonic() - last > 15:
            last = time.monotonic()
            ui.note(f"membership: loaded {done[0]:,} of {n:,} transfers ({done[0] / (last - started):,.0f}/s)")
    return time.monotonic() - started


def run(cfg, work_dir: str) -> dict:
    from raft_ledger_client import load_private_key
    from raft_ledger_node import localcluster as lc
    from raft_ledger_node import reconfigure

    n = cfg.membership_stored
    directory = os.path.join(work_dir, "membership")
    with lc.reserve_ports(lc.cluster_port_offsets(5), start=cfg.base_port + 1000, step=300) as ports:
        base = ports.ports[0] - 1
        lc.init_cluster(directory, 3, [], "127.0.0.1", base)
        for v in ("v1", "v2", "v3"):
            path = os.path.join(directory, v, "config.json")
            with open(path) as f:
                doc = json.load(f)
            doc["log_compaction_min_entries"] = COMPACTION_ENTRIES
            with open(path, "w") as f:
                json.dump(doc, f)
        cluster = lc.LocalCluster(directory)
        cluster.start_all()
        probe = None
        try:
            cluster.wait_ready()
            ui.note(f"membership: loading {n:,} transfers")
            load_s = _load(directory, n)
            admins = [(a, "k1", load_private_key(os.path.join(directory, "members", f"{a}.pem")))
                      for a in lc.ADMIN_IDS[: lc.ADMIN_THRESHOLD]]
            gpath = lc.genesis_path(directory)

            def statuses():
                return {v.id: st for v, st in lc.status_rows(gpath, timeout_s=1.0)}

            out = {"stored_transfers": n, "load_s": round(load_s, 1), "load_per_s": round(n / load_s), "probe_threads": PROBE_THREADS,
                   "db_bytes_v1": dir_bytes(os.path.join(directory, "v1", "data", "db")), "changes": {}}
            probe = _Probe(directory, first_id=2 * 10**9)
            probe.start()
            t = time.monotonic()
            time.sleep(QUIET_S)
            out["quiet"] = probe.window(t, time.monotonic())
            with lc.member_client(directory, lc.OPERATOR_ID) as op:
                def change(name, fn):
                    ui.note(f"membership: {name}")
                    t0 = time.monotonic()
                    times = fn()
                    t1 = time.monotonic()
                    out["changes"][name] = {"steps_s": {k: round(v, 2) for k, v in times.steps.items()},
                                            "total_s": round(t1 - t0, 2), "writes": probe.window(t0, t1)}

                v4 = lc.add_validator_files(directory)
                change("add v4", lambda: reconfigure.add(op, admins, lc.validator_entry(v4), statuses,
                                                         start=lambda: cluster.start(v4.id), catch_up_timeout_s=1800))
                leader = reconfigure.leader_of(statuses())
                leader_id = leader.validator_id if leader is not None else "v1"
                change(f"remove {leader_id} (the leader)",
                       lambda: reconfigure.remove(op, admins, leader_id, statuses))
                victim = next(v.id for v in lc.cluster_validators(directory)
                              if v.id not in (leader_id, v4.id) and v.id in cluster.pids)
                info = next(v for v in lc.cluster_validators(directory) if v.id == victim)

                def replace():
                    cluster.stop(victim, sig=signal.SIGKILL)
                    shutil.rmtree(os.path.join(directory, victim, "data"))
                    return reconfigure.replace(op, admins, victim, lc.validator_entry(info), statuses,
                                               start=lambda: cluster.start(victim), catch_up_timeout_s=1800)

                change(f"replace {victim} after disk loss", replace)
            t = time.monotonic()
            time.sleep(QUIET_S / 2)
            out["after"] = probe.window(t, time.monotonic())
            out["probe_failures"] = probe.failures
            return out
        finally:
            if probe is not None:
                probe.stop()
            cluster.stop_all()
