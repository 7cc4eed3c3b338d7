"""Part 1: our cluster — 3 validators on 127.0.0.1 with durable journals, driven through the SDK.

A fresh cluster (:mod:`node.localcluster`: ``init_cluster`` + ``LocalCluster``) on a
port block reserved for the run (``reserve_ports``); the client is a separate process (:mod:`node.bench.driver`) so its CPU
does not share the validators' GIL. Two phases: *peak* (closed loop,
``concurrency`` clients each with one batch in flight) and *half load* (open
loop at half the peak rate, the issue's latency target); then one transfer per request (issue 16): every
caller thread shares member 0's one ``LedgerClient`` and calls ``create_transfers``
with one transfer, at 1 and 8 callers (``single_sweep_transfers`` each), at
``single_concurrency`` callers (``single_transfers``) and open loop at half of
that rate (``single_half_load_transfers``). A count of 0 skips its phase; half load
needs its peak. CPU per transfer is
the validators' user+system CPU over the phase (/proc), divided by transfers.
Validators are stopped by PID at the end.
"""
from __future__ import annotations

import math
import os
import sys
import time

from rich.markup import escape

from raft_ledger_node.bench import profiler, ui
from raft_ledger_node.bench.measure import CpuMeter, cpu_seconds, latency_summary
from raft_ledger_node.bench.config import SINGLE_SWEEP_CALLERS
from raft_ledger_node.bench.proc import JsonLineProcess
from raft_ledger_node.bench.workload import LEDGER, Workload, member_names
from raft_ledger_node.localcluster import LocalCluster, cluster_port_offsets, init_cluster, reserve_ports, status_rows

#: Seconds the driver may take to open accounts and sign every batch.
DRIVER_SETUP_S_MAX = 600.0
#: Seconds without a line from the driver (it prints progress every 0.5 s) before a phase counts as stuck.
PHASE_SILENCE_S_MAX = 60.0
#: Seconds for the conservation check (it reads every account from every validator).
CHECK_S_MAX = 180.0
#: Seconds the idle validators' CPU is measured for, before the first phase.
IDLE_MEASURE_S = 2.0
#: Distance between probed port bases, and bases probed (gRPC base+1.., Raft base+101..).
PORT_BASE_STEP = 1000
PORT_PROBES_MAX = 20


def _leader(cluster_dir: str):
    for v, st in status_rows(os.path.join(cluster_dir, "genesis.json"), timeout_s=2.0):
        if not isinstance(st, Exception) and st.role == "leader":
            return v.id, st
    return None, None


def run(cfg, wl: Workload, work_dir: str) -> dict:
    with reserve_ports(cluster_port_offsets(3), start=cfg.base_port, step=PORT_BASE_STEP, probes_max=PORT_PROBES_MAX) as ports:
        return _run(cfg, wl, work_dir, ports.base)


def plan_single(cfg) -> tuple[list[tuple[str, int, int]], int]:
    """The one-transfer-per-request phases: ([(label, callers, transfers)] in the order run,
    the last being ``single_concurrency`` callers, if run; transfers at half its peak).
    A count of 0 leaves its phase out; half load needs its peak."""
    plan = [(f"1/request, {n} caller{'s' if n > 1 else ''}", n, cfg.single_sweep_transfers)
            for n in SINGLE_SWEEP_CALLERS if cfg.single_sweep_transfers]
    if cfg.single_transfers:
        plan.append((f"1/request, {cfg.single_concurrency} callers", cfg.single_concurrency, cfg.single_transfers))
    return plan, (cfg.single_half_load_transfers if cfg.single_transfers else 0)


def _run(cfg, wl: Workload, work_dir: str, base: int) -> dict:
    cluster_dir = os.path.join(work_dir, "ours")
    # The benchmark's accounts have no balance-limit flags and may go negative: its
    # members issue its ledger, so issuance leaves the workload identical to before.
    members = member_names(cfg.members)
    init_cluster(cluster_dir, 3, members, "127.0.0.1", base, force=True, issuers={LEDGER: members})
    cluster = LocalCluster(cluster_dir)
    peak_batches = math.ceil(cfg.transfers / cfg.batch) if cfg.transfers else 0
    # Half load is half of the measured peak: no peak, no half load.
    half_batches = math.ceil(cfg.half_load_transfers / cfg.batch) if (cfg.half_load_transfers and peak_batches) else 0
    assert peak_batches + half_batches == cfg.ours_batches()  # PostgreSQL's per-transfer phase starts there too
    single_plan, single_half = plan_single(cfg)
    single_rows_total = sum(n for _, _, n in single_plan) + single_half
    ui.step(f"ours: 3 validators on 127.0.0.1:{base + 1}-{base + 3} (Raft {base + 101}-{base + 103}), data in {cluster_dir}")
    cluster.start_all()
    driver = None
    result: dict = {"ports": {"grpc": [base + i for i in (1, 2, 3)], "raft": [base + 100 + i for i in (1, 2, 3)]}}
    try:
        cluster.wait_ready()
        pids = {vid: p.pid for vid, p in cluster.procs.items()}
        result["validator_pids"] = pids
        driver = JsonLineProcess([sys.executable, "-m", "raft_ledger_node.bench.driver"], log_path=os.path.join(work_dir, "ours-driver.log"))
        driver.send({"cluster": cluster_dir, "workload": wl.spec(), "batches_total": peak_batches + half_batches,
                     "single_rows_total": single_rows_total, "single_in_flight": cfg.single_in_flight})
        ui.note(f"driver pid {driver.pid}: opening {cfg.accounts:,} accounts for {cfg.members} members, signing {peak_batches + half_batches:,} batches in advance")
        ready = driver.recv_event("ready", DRIVER_SETUP_S_MAX)
        ui.note(f"accounts opened in {ready['accounts_s']:.1f}s, batches signed in {ready['presign_s']:.1f}s "
                f"(signed transaction ≈ {ready['envelope_bytes']:,.0f} bytes)")
        result["envelope_bytes"] = ready["envelope_bytes"]
        # What the validators burn with nothing submitted (Raft heartbeats, tick loops): a
        # slow phase's CPU per transfer is mostly this, so the report shows it beside them.
        idle = CpuMeter(lambda: list(pids.values()))
        idle.start()
        time.sleep(IDLE_MEASURE_S)
        result["idle_cpu_cores"] = idle.stop() / IDLE_MEASURE_S
        ui.note(f"idle validators: {result['idle_cpu_cores']:.2f} cores of CPU together")

        def phase(name: str, first: int, count: int, rate_tps: float | None, profile: bool, *, cmd: str = "run",
                  concurrency: int = cfg.concurrency, per_unit: int = cfg.batch) -> dict:
            """One phase: ``count`` requests of ``per_unit`` transfers from ``concurrency`` callers
            (``cmd`` "run": presigned batches; "run_single": one transfer per create_transfers)."""
            leader_id, st0 = _leader(cluster_dir)
            meter = CpuMeter(lambda: list(pids.values()))
            drv0 = cpu_seconds(driver.pid) or 0.0
            spy = None
            raw = os.path.join(cfg.out_dir, f"profile-{leader_id}-leader.txt")
            if profile and leader_id is not None:
                spy = profiler.start(pids[leader_id], raw, os.path.join(work_dir, "py-spy.log"))
                if spy is None:
                    ui.warn("py-spy not found: no profile (pip install py-spy)")
            meter.start()
            driver.send({"cmd": cmd, "first": first, "count": count, "concurrency": concurrency, "rate_tps": rate_tps})
            label = f"ours {name}" + (f" @ {rate_tps:,.0f}/s" if rate_tps else "")
            with ui.progress(label, count * per_unit) as update:
                done = driver.recv_event(
                    "done", PHASE_SILENCE_S_MAX,
                    on_other=lambda m: update(m["transfers"], m["transfers"] / max(1e-9, m["elapsed_s"])),
                )
                update(done["transfers_ok"] + done["transfers_rejected"], (done["transfers_ok"] + done["transfers_rejected"]) / done["elapsed_s"])
            cpu = meter.stop()
            profiler.stop(spy)
            drv_cpu = (cpu_seconds(driver.pid) or 0.0) - drv0
            _, st1 = _leader(cluster_dir)
            n = done["transfers_ok"] + done["transfers_rejected"]
            entries = (st1.commit_index - st0.commit_index) if (st0 is not None and st1 is not None) else None
            out = {
                "transfers": n,
                "transfers_ok": done["transfers_ok"],
                "transfers_rejected": done["transfers_rejected"],
                "batches_failed": done["batches_failed"],
                "errors": done["errors"],
                "elapsed_s": done["elapsed_s"],
                "transfers_per_s": n / done["elapsed_s"],
                "latency": latency_summary(done["latencies_s"]),
                "latencies_s": done["latencies_s"],
                "cpu_s": cpu,
                "cpu_per_validator_s": {vid: meter.per_pid.get(pid, 0.0) for vid, pid in pids.items()},
                "cpu_us_per_transfer": cpu / n * 1e6 if n else float("nan"),
                "client_cpu_s": drv_cpu,
                "machine_cpu_s": meter.machine_seconds,
                # Busy CPU of everything else on the machine (other programs disturb the numbers).
                "other_cpu_s": None if meter.machine_seconds is None else max(0.0, meter.machine_seconds - cpu - drv_cpu),
                "leader": leader_id,
                "raft_entries": entries,
                "transfers_per_entry": (n / entries) if entries else None,
                "offered_tps": rate_tps,
                "callers": concurrency,
                "transfers_per_request": per_unit,
                # How late the driver itself sent (open loop); part of the latency above.
                "send_lag_p99_ms": done.get("send_lag_p99_ms"),
            }
            if spy is not None and os.path.exists(raw):
                out["profile"] = {"raw": raw, **profiler.summarize(raw)}
            return out

        if peak_batches:
            peak = phase("peak", 0, peak_batches, None, cfg.profile)
            result["peak"] = peak
            ui.note(_line(peak))
        if half_batches:
            half = phase("half load", peak_batches, half_batches, peak["transfers_per_s"] / 2, False)
            result["half_load"] = half
            ui.note(_line(half))
        row = 0
        for label, callers, n in single_plan:
            r = phase(label, row, n, None, False, cmd="run_single", concurrency=callers, per_unit=1)
            row += n
            result.setdefault("single_sweep", []).append(r)
            ui.note(_line(r))
        if cfg.single_transfers:
            result["single_peak"] = result["single_sweep"].pop()
            if not result["single_sweep"]:
                del result["single_sweep"]
        rate = result["single_peak"]["transfers_per_s"] / 2 if single_half else 0.0
        if rate > 0:
            r = phase(f"1/request, {cfg.single_concurrency} callers, half load", row, single_half, rate, False,
                      cmd="run_single", concurrency=cfg.single_concurrency, per_unit=1)
            result["single_half_load"] = r
            ui.note(_line(r))
        driver.send({"cmd": "check"})
        check = driver.recv_event("checked", CHECK_S_MAX)
        check.pop("event", None)
        result["check"] = check
        if check.get("skipped"):
            ui.warn(escape(f"conservation check skipped: {check['skipped']}"))
        elif check["balanced"] and check["same_head"]:
            ui.note("[green]check: every validator at the same head, debits = credits = sum of submitted amounts[/]")
        else:
            ui.warn(escape(f"check FAILED: {check}"))
        driver.send({"cmd": "quit"})
    finally:
        if driver is not None:
            driver.stop()
        ui.note("stopping validators")
        cluster.stop_all()
    return result


def _line(r: dict) -> str:
    lat = r["latency"]
    per_entry = f", {r['transfers_per_entry']:.{0 if r['transfers_per_entry'] >= 10 else 1}f} transfers/Raft entry" if r.get("transfers_per_entry") else ""
    what = "batch" if r.get("transfers_per_request", 2) > 1 else "request"
    return (f"{r['transfers_per_s']:,.0f} transfers/s; per {what} p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms; "
            f"{r['cpu_us_per_transfer']:.0f} µs validator CPU/transfer{per_entry}"
            + (f"; driver send lag p99 {r['send_lag_p99_ms']:.1f} ms" if r.get("send_lag_p99_ms") is not None else "")
            + (f"; [yellow]{r['batches_failed']} batches failed[/]" if r["batches_failed"] else ""))
