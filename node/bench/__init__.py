"""The benchmark of issue 5: our cluster side by side with the limits and the baseline.

One invocation (``ledger-validator bench``) runs, one after the other, with the
same transfer workload (:mod:`node.bench.workload`):

1. ``ours``     — a fresh 3-validator cluster on 127.0.0.1 driven through the SDK
                  from a separate process (:mod:`node.bench.ours`, :mod:`node.bench.driver`);
2. ``raft``     — bare pysyncobj, 3 processes, the same journal settings and the
                  same encoded entry bytes, no ledger logic (:mod:`node.bench.bare_raft`);
3. ``crypto``   — Ed25519 verifications per second (:mod:`node.bench.ed25519`);
4. ``postgres`` — Debian's PostgreSQL executing the same transfers as double-entry
                  SQL transactions (:mod:`node.bench.postgres`);
5. ``history``  — CPU per applied transfer of the core + RocksStore as stored
                  history grows (:mod:`node.bench.history`).

:mod:`node.bench.report` prints one table and writes JSON and a latency plot.
The benchmark is a measuring stick, not a test: nothing here asserts a target.
"""
from raft_ledger_node.bench.config import BenchConfig

__all__ = ["BenchConfig"]
