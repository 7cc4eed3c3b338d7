"""Sampling profiles of validator processes with py-spy (optional: ``--profile``).

py-spy samples another process's Python stacks without changing it. The raw
(collapsed) output is summarised into the functions with the most samples:
*self* (the frame on top of the stack) and *inclusive* (anywhere on the stack).
"""
from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys

#: Samples per second.
PYSPY_RATE_HZ = 100


def pyspy_available() -> str | None:
    """The py-spy executable: on PATH, or next to this Python (a venv not activated)."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return shutil.which("py-spy") or (beside if os.access(beside, os.X_OK) else None)


def start(pid: int, out_path: str, log_path: str) -> subprocess.Popen | None:
    exe = pyspy_available()
    if exe is None:
        return None
    log = open(log_path, "ab")
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", str(PYSPY_RATE_HZ), "--format", "raw", "--output", out_path, "--nonblocking"],
        stdout=log, stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen | None, timeout_s: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


#: Frames on every thread's stack; left out of the inclusive ranking.
_THREAD_PLUMBING = ("Thread.run ", "Thread._bootstrap", "_worker (concurrent", "SyncObj._autoTickThread ")


def _frame_name(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:123)"; keep function + file tail, drop the line.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    for anchor in ("node", "client", "pysyncobj", "grpc", "rocksdict", "cryptography", "google", "concurrent", "threading.py", "queue.py"):
        if anchor in parts:
            path = "/".join(parts[parts.index(anchor):])
            break
    else:
        path = parts[-1]
    return f"{name} ({path})"


def summarize(raw_path: str, top: int = 20) -> dict:
    """Top functions by self and inclusive samples, as fractions of all samples."""
    self_c: collections.Counter = collections.Counter()
    incl_c: collections.Counter = collections.Counter()
    total = 0
    with open(raw_path) as f:
        for line in f:
            line = line.rstrip("\n")
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [_frame_name(fr) for fr in stack.split(";")]
            # The first frame is the thread ("process 123:..."/"thread (...)"), not code.
            code = [fr for fr in frames if not fr.startswith(("process ", "thread "))] or frames
            total += n
            self_c[code[-1]] += n
            for fr in set(code):
                if not fr.startswith(_THREAD_PLUMBING):
                    incl_c[fr] += n
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}
    return {
        "samples": total,
        "self": [(fn, c / total) for fn, c in self_c.most_common(top)],
        "inclusive": [(fn, c / total) for fn, c in incl_c.most_common(top)],
    }
