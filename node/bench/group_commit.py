"""Transfers per Raft entry with and without group commit, side by side in one invocation.

Usage::

    .venv/bin/python -m raft_ledger_node.bench.group_commit --base-port 53100

For each value of ``--waits`` (``group_commit_wait_s_max`` in every validator's
config; 0 = propose as soon as one of ``inflight_entries_max`` is free, the
behaviour before group commit) a fresh 3-validator mutual-TLS cluster on
127.0.0.1 (``init_cluster`` + ``LocalCluster``, as ``ledger-validator bench``'s
*ours* part) is driven by the bench's driver process (:mod:`node.bench.driver`)
with ``--batch`` transfers per request (default one), closed loop, at each of ``--callers``. Printed per
phase: transfers/s, Raft entries (the leader's commit index delta), transfers per
entry, validator CPU per transfer and p50/p99 latency per request. Short runs: the
machine is shared; read the ratios, not the absolute rates.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from raft_ledger_node.bench.measure import CpuMeter, latency_summary
from raft_ledger_node.bench.ours import DRIVER_SETUP_S_MAX, PHASE_SILENCE_S_MAX, _leader
from raft_ledger_node.bench.proc import JsonLineProcess
from raft_ledger_node.bench.workload import LEDGER, Workload, member_names
from raft_ledger_node.localcluster import LocalCluster, cluster_port_offsets, init_cluster, reserve_ports

#: Port bases tried from --base-port (gRPC base+1.., Raft base+101..): a stopped cluster's
#: ports may linger for a while, so each cluster may need the next block.
PORT_STEP = 300
PORT_PROBES_MAX = 6


def _set_wait(cluster_dir: str, wait_s: float) -> None:
    for name in sorted(os.listdir(cluster_dir)):
        path = os.path.join(cluster_dir, name, "config.json")
        if os.path.exists(path):
            with open(path) as f:
                cfg = json.load(f)
            cfg["group_commit_wait_s_max"] = wait_s
            with open(path, "w") as f:
                json.dump(cfg, f, indent=2)


def _cluster_run(wait_s: float, callers: list[int], per_caller: int, args, work: str) -> list[dict]:
    cluster_dir = os.path.join(work, f"wait-{wait_s}")
    members = member_names(2)
    rows = []
    with reserve_ports(cluster_port_offsets(3), start=args.base_port, step=PORT_STEP, probes_max=PORT_PROBES_MAX) as ports:
        init_cluster(cluster_dir, 3, members, "127.0.0.1", ports.base, force=True, issuers={LEDGER: members})
        _set_wait(cluster_dir, wait_s)
        cluster = LocalCluster(cluster_dir)
        cluster.start_all()
        driver = None
        try:
            try:
                cluster.wait_ready()
            except Exception:
                for vid in sorted(cluster.procs):
                    with open(cluster.log_path(vid), errors="replace") as f:
                        print(f"--- {vid} log (last lines)\n" + "".join(f.readlines()[-8:]), file=sys.stderr)
                raise
            pids = [p.pid for p in cluster.procs.values()]
            wl = Workload(accounts=args.accounts, members=2, skew="uniform", zipf_exponent=1.0, batch=args.batch, seed=7)
            total = sum(c * per_caller for c in callers)  # signed requests of --batch transfers
            driver = JsonLineProcess([sys.executable, "-m", "raft_ledger_node.bench.driver"],
                                     log_path=os.path.join(work, f"driver-{wait_s}.log"))
            driver.send({"cluster": cluster_dir, "workload": wl.spec(), "batches_total": total})
            driver.recv_event("ready", DRIVER_SETUP_S_MAX)
            first = 0
            for c in callers:
                count = c * per_caller
                _, st0 = _leader(cluster_dir)
                meter = CpuMeter(lambda: pids)
                meter.start()
                driver.send({"cmd": "run", "first": first, "count": count, "concurrency": c, "rate_tps": None})
                done = driver.recv_event("done", PHASE_SILENCE_S_MAX)
                cpu = meter.stop()
                _, st1 = _leader(cluster_dir)
                first += count
                n = done["transfers_ok"] + done["transfers_rejected"]
                entries = st1.commit_index - st0.commit_index
                lat = latency_summary(done["latencies_s"])
                rows.append({"wait_s": wait_s, "callers": c, "transfers": n, "failed": done["batches_failed"],
                             "transfers_per_s": n / done["elapsed_s"], "raft_entries": entries,
                             "transfers_per_entry": n / entries if entries else None,
                             "cpu_us_per_transfer": cpu / n * 1e6 if n else None,
                             "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]})
                r = rows[-1]
                print(f"wait {wait_s * 1e3:5.1f} ms  {c:3d} callers: {r['transfers_per_s']:7,.0f} transfers/s, "
                      f"{entries:5d} entries, {r['transfers_per_entry'] or 0:5.1f} transfers/entry, "
                      f"{r['cpu_us_per_transfer'] or 0:6.0f} µs CPU/transfer, p50 {r['p50_ms']:.1f} ms, "
                      f"p99 {r['p99_ms']:.1f} ms" + (f", {r['failed']} failed" if r["failed"] else ""), flush=True)
            driver.send({"cmd": "quit"})
        finally:
            if driver is not None:
                driver.stop()
            cluster.stop_all()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--waits", default="0,0.02", help="group_commit_wait_s_max values (s), comma-separated")
    ap.add_argument("--callers", default="1,8,64", help="concurrent callers per phase, comma-separated")
    ap.add_argument("--per-caller", type=int, default=40, help="requests per caller per phase")
    ap.add_argument("--batch", type=int, default=1, help="transfers per request")
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--base-port", type=int, default=53100)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    callers = [int(c) for c in args.callers.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="group-commit-") as work:
        for w in (float(x) for x in args.waits.split(",")):
            rows += _cluster_run(w, callers, args.per_caller, args, work)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
