"""Micro-benchmark: the Raft journal's sync, ``mmap.flush`` (msync) against ``os.fdatasync``.

Usage::

    .venv/bin/python -m raft_ledger_node.bench.journal_sync [--syncs 200] [--entry-bytes 4096] [--dir D]

A validator's journal is pysyncobj's mmapped file, synced once per group of appends
on the Raft thread (node/raft/journal.py). Both ways write the same dirty pages back
(on Linux the mapping's pages are the file's page cache), so they are equally
durable; they differ in the GIL: CPython 3.11's ``mmap.flush`` holds it during
``msync``, ``os.fdatasync`` releases it.

Each way appends ``--entry-bytes`` to its own preallocated journal file in ``--dir``
(default: a temporary directory under the current one, i.e. a real disk, not tmpfs),
syncs, and repeats ``--syncs`` times, alternating sync by sync so that disk and load
changes fall on both alike; first with no other thread, then while a second thread runs
a pure-Python loop. Printed per way and case: median and p99 sync time (µs) as the
syncing thread sees it, and the other thread's loop rate during the syncs as a
fraction of its rate alone (1.0 = the sync never stopped it).

What it showed (2 cores, ext4 on a virtio disk): alone, the same ~0.4 ms; with a busy
thread, fdatasync lets it run (0.9-1.0× against 0.02-0.05×) but the syncing thread gets
the GIL back only at the other's switch interval (5 ms): ~5.9 ms against ~1.1 ms. In the
whole cluster (bench one-transfer-per-request phases at 1, 8 and 64 callers, two runs
each way) the difference was within the run-to-run noise, so the journal keeps msync.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

from pysyncobj.journal import ResizableFile

from raft_ledger_node.raft.journal_guard import PreallocatedFile


class _Spinner(threading.Thread):
    """Counts pure-Python loop iterations until stopped: how much the GIL lets it run."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            for _ in range(1000):
                n += 1
            self.count = n


def _spin_rate(seconds: float) -> float:
    s = _Spinner()
    s.start()
    t0 = time.perf_counter()
    time.sleep(seconds)
    c, t1 = s.count, time.perf_counter()
    s.stop.set()
    s.join()
    return c / (t1 - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--syncs", type=int, default=300, help="syncs per way")
    ap.add_argument("--entry-bytes", type=int, default=4096, help="bytes appended before each sync")
    ap.add_argument("--dir", default=None, help="where the journal files go (default: a temp dir under .)")
    args = ap.parse_args(argv)
    if args.syncs <= 0:
        print("nothing to do: --syncs 0")
        return
    with tempfile.TemporaryDirectory(dir=args.dir or ".") as d:
        files = {}
        for way in ("mmap.flush (msync)", "os.fdatasync"):
            f = ResizableFile(os.path.join(d, way.split()[0] + ".journal"), initialSize=1 << 20, defaultContent=bytes(8))
            files[way] = PreallocatedFile.adopt(f)
        flushes = {"mmap.flush (msync)": lambda f: f._ResizableFile__mm.flush(),
                   "os.fdatasync": lambda f: os.fdatasync(f._ResizableFile__f.fileno())}
        payload = os.urandom(args.entry_bytes)
        offsets = dict.fromkeys(files, 8)
        idle = _spin_rate(0.5)
        results = {}
        for busy in (False, True):
            times: dict[str, list[float]] = {w: [] for w in files}
            spun: dict[str, float] = dict.fromkeys(files, 0.0)
            spent: dict[str, float] = dict.fromkeys(files, 0.0)
            spinner = _Spinner()
            if busy:
                spinner.start()
            for _ in range(args.syncs):
                for way, f in files.items():
                    f.write(offsets[way], payload)
                    offsets[way] += len(payload)
                    c0, t0 = spinner.count, time.perf_counter()
                    flushes[way](f)
                    t1, c1 = time.perf_counter(), spinner.count
                    times[way].append(t1 - t0)
                    spun[way] += c1 - c0
                    spent[way] += t1 - t0
            if busy:
                spinner.stop.set()
                spinner.join()
            results[busy] = (times, spun, spent)
        for f in files.values():
            f._ResizableFile__mm.close()
            f._ResizableFile__f.close()
    print(f"{args.syncs} syncs of {args.entry_bytes:,} appended bytes per way and case, alternating; "
          f"other thread alone: {idle:,.0f} loops/s; switch interval {sys.getswitchinterval() * 1e3:g} ms")
    print(f"{'way':<22}{'other thread':<14}{'median µs':>12}{'p99 µs':>12}{'other thread runs':>20}")
    for busy, (times, spun, spent) in results.items():
        for way, ts in times.items():
            ts = sorted(ts)
            p99 = ts[min(len(ts) - 1, int(len(ts) * 0.99))]
            share = (f"{(spun[way] / spent[way]) / idle:.2f}×" if busy and spent[way] > 0 and idle > 0 else "—")
            print(f"{way:<22}{'busy' if busy else 'none':<14}{statistics.median(ts) * 1e6:>12,.0f}"
                  f"{p99 * 1e6:>12,.0f}{share:>20}")

if __name__ == "__main__":
    main()
