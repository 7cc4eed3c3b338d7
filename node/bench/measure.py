"""Measuring helpers: latency summaries, CPU time of processes, free ports (via localcluster)."""
from __future__ import annotations

import os
import time

from raft_ledger_node.stats import percentile

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def latency_summary(latencies_s: list[float]) -> dict:
    """Latencies in seconds (any order) -> count, p50/p99/p99.9/max/mean in ms and the
    tail ratio ``p99_over_p50`` (issue 16's "p99 ≤ 2.5 × p50 at half of peak").

    Percentiles are nearest rank (:func:`raft_ledger_node.stats.percentile`): each one a
    latency that was measured, so p99.9 of fewer than 1,000 samples is the maximum.
    Empty input: count 0 and NaN for the rest (NaN ratio also when p50 is 0).
    """
    s = sorted(latencies_s)
    p50, p99 = percentile(s, 50), percentile(s, 99)
    return {
        "count": len(s),
        "p50_ms": p50 * 1e3,
        "p99_ms": p99 * 1e3,
        "p999_ms": percentile(s, 99.9) * 1e3,
        "max_ms": (s[-1] * 1e3) if s else float("nan"),
        "mean_ms": (sum(s) / len(s) * 1e3) if s else float("nan"),
        "p99_over_p50": tail_ratio(p50, p99),
    }


def tail_ratio(p50: float, p99: float) -> float:
    """p99 / p50 (any one unit), NaN when p50 is 0 or NaN."""
    return p99 / p50 if p50 > 0 else float("nan")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (all its threads) from /proc; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it are fixed.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
            out.append(int(name))
    return out


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent not idle since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait.
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICKS


class CpuMeter:
    """CPU seconds used by a set of processes between ``start()`` and ``stop()``.

    Also counts the whole machine's busy CPU over the same window, so a run
    disturbed by other work on the machine can say so (``machine_seconds``).
    """

    def __init__(self, pids_fn) -> None:
        self._pids_fn = pids_fn
        self._before: dict[int, float] = {}
        self._machine0: float | None = None
        self.seconds = 0.0
        self.machine_seconds: float | None = None
        self.per_pid: dict[int, float] = {}

    def start(self) -> None:
        self._before = {p: c for p in self._pids_fn() if (c := cpu_seconds(p)) is not None}
        self._machine0 = machine_busy_seconds()

    def stop(self) -> float:
        m1 = machine_busy_seconds()
        self.machine_seconds = None if m1 is None or self._machine0 is None else m1 - self._machine0
        self.per_pid = {}
        for p in self._pids_fn():
            c = cpu_seconds(p)
            if c is not None:
                self.per_pid[p] = c - self._before.get(p, 0.0)
        self.seconds = sum(self.per_pid.values())
        return self.seconds


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0
