"""The benchmark's output: one table (rich), the issue's targets, a JSON file and a latency plot."""
from __future__ import annotations

import json
import math
import os
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

#: The issue's targets (issue 5, "Targets").
TARGET_TPS_MIN = 10_000
TARGET_VS_POSTGRES_MIN = 3.0
TARGET_VS_RAFT_MIN = 0.7
TARGET_HALF_LOAD_P99_MS_MAX = 50.0
TARGET_HISTORY_GROWTH_MAX = 1.20
#: Issue 16's targets ("Targets, as ratios measured side by side in one run").
TARGET_SINGLE_VS_PG_SINGLE_MIN = 3.0
TARGET_SINGLE_VS_OUR_BATCH_MIN = 0.5
TARGET_BATCH_VS_PG_BATCH_MIN = 2.0
TARGET_BATCH_VS_PG_SYNC_BATCH_MIN = 1.5
TARGET_CPU_US_PER_TRANSFER_MAX = 45.0
TARGET_TAIL_RATIO_MAX = 2.5
#: Cores' worth of CPU used by other programs during a measurement above which the row says so.
OTHERS_CORES_WARN = 0.1
#: Width of the printed tables when stdout is not a terminal (files, CI logs).
TABLE_WIDTH_PIPED = 180


def _f(v, fmt="{:,.0f}", none="—") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return fmt.format(v)


def _others(part: dict) -> str:
    """A warning when other programs kept the machine busy during a measurement."""
    other, elapsed = part.get("other_cpu_s"), part.get("elapsed_s")
    if other is None or not elapsed:
        return ""
    cores = other / elapsed
    return f"; [yellow]others used {cores:.1f} cores[/]" if cores >= OTHERS_CORES_WARN else ""


def _rows(res: dict) -> list[dict]:
    """One row per system: name, tps, latency, cpu, note."""
    rows = []
    ours = res.get("ours", {})
    batch = res["config"]["batch"]
    if "peak" in ours:
        p = ours["peak"]
        rows.append(dict(key="ours", name="ours: 3 validators via SDK", tps=p["transfers_per_s"], lat=p["latency"],
                         cpu=p["cpu_us_per_transfer"],
                         note=f"{p['transfers']:,} transfers, {_f(p.get('transfers_per_entry'))}/Raft entry; latency per batch"
                         + (f"; [red]{p['batches_failed']} batches failed[/]" if p["batches_failed"] else "") + _others(p)))
    if "half_load" in ours:
        h = ours["half_load"]
        rows.append(dict(key="ours_half", name="ours at ½ peak (open loop)", tps=h["transfers_per_s"], lat=h["latency"],
                         cpu=h["cpu_us_per_transfer"], note=f"offered {h['offered_tps']:,.0f}/s; latency from scheduled send"
                         + (f" (driver's own send lag p99 {h['send_lag_p99_ms']:.1f} ms)" if h.get("send_lag_p99_ms") is not None else "")
                         + _others(h)))
    single = [*ours.get("single_sweep", []), *([ours["single_peak"]] if "single_peak" in ours else [])]
    in_flight = res.get("config", {}).get("single_in_flight", 1)
    shared = "1 shared client" + (f" ({in_flight} Submits in flight)" if in_flight > 1 else "")
    for p in single:
        rows.append(dict(key="ours_single" if p is ours.get("single_peak") else f"ours_single_{p['callers']}",
                         name=f"ours: 1 transfer/request, {p['callers']} caller{'s' if p['callers'] > 1 else ''}, {shared}",
                         tps=p["transfers_per_s"], lat=p["latency"], cpu=p["cpu_us_per_transfer"],
                         note=f"{p['transfers']:,} transfers, {_f(p.get('transfers_per_entry'), '{:,.1f}')}/Raft entry; latency per request"
                         + (f"; [red]{p['batches_failed']} requests failed[/]" if p["batches_failed"] else "") + _others(p)))
    if "single_half_load" in ours:
        h = ours["single_half_load"]
        rows.append(dict(key="ours_single_half", name=f"ours: 1/request at ½ peak, {h['callers']} callers (open loop)",
                         tps=h["transfers_per_s"], lat=h["latency"], cpu=h["cpu_us_per_transfer"],
                         note=f"offered {h['offered_tps']:,.0f}/s; {_f(h.get('transfers_per_entry'), '{:,.1f}')}/Raft entry"
                         + (f"; driver send lag p99 {h['send_lag_p99_ms']:.1f} ms" if h.get("send_lag_p99_ms") is not None else "")
                         + _others(h)))
    raft = res.get("raft", {})
    if "entries_per_s" in raft:
        rows.append(dict(key="raft", name="bare pysyncobj, same bytes", tps=raft["transfers_per_s"], lat=raft["latency"],
                         cpu=raft["cpu_us_per_transfer"],
                         note=f"{raft['entries_per_s']:,.0f} entries/s of {raft['entry_bytes_mean'] / 1e3:,.1f} kB × {batch}; latency per entry" + _others(raft)))
    pg = res.get("postgres", {})
    if "batch" in pg:
        b = pg["batch"]
        rows.append(dict(key="pg", name=f"PostgreSQL {pg.get('version', '').split()[0]}, SQL txn per batch", tps=b["transfers_per_s"],
                         lat=b["latency"], cpu=b["cpu_us_per_transfer"],
                         note=f"server CPU (+{b['client_cpu_us_per_transfer']:,.0f} µs client); latency per batch"
                         + (f"; [red]{b['units_failed']} txns failed[/]" if b["units_failed"] else "") + _others(b)))
    if "single" in pg:
        s = pg["single"]
        conns = f", {s['connections']} connections" if s.get("connections") else ""
        rows.append(dict(key="pg_single", name=f"PostgreSQL, SQL txn per transfer{conns}", tps=s["transfers_per_s"], lat=s["latency"],
                         cpu=s["cpu_us_per_transfer"], vs="ours_single",
                         note=f"server CPU (+{s['client_cpu_us_per_transfer']:,.0f} µs client); latency per transfer; ours = 1/request"
                         + (f"; [red]{s['units_failed']} txns failed[/]" if s["units_failed"] else "") + _others(s)))
    sync = res.get("pg_sync", {})
    for kind, name, vs, unit in (("batch", f"SQL txn per batch", "ours", "batch"),
                                 ("single", "SQL txn per transfer", "ours_single", "transfer")):
        if kind not in sync:
            continue
        s = sync[kind]
        conns = f", {s['connections']} connections" if s.get("connections") else ""
        rows.append(dict(key=f"pg_sync_{kind}", name=f"PostgreSQL sync-rep {sync.get('synchronous_standby_names', '')}, {name}{conns}",
                         tps=s["transfers_per_s"], lat=s["latency"], cpu=s["cpu_us_per_transfer"], vs=vs,
                         note=f"CPU of primary + 2 standbys (+{s['client_cpu_us_per_transfer']:,.0f} µs client); latency per {unit}"
                         + ("; ours = 1/request" if vs == "ours_single" else "")
                         + (f"; [red]{s['units_failed']} txns failed[/]" if s["units_failed"] else "") + _others(s)))
    crypto = res.get("crypto", {})
    for lib in ("cryptography", "pynacl"):
        r = crypto.get("rates", {}).get(f"{lib} 200B")
        if not r:
            continue
        body = crypto["rates"].get(f"{lib} batch body", {})
        for threads, v, vb in ((1, r["verifies_per_s_1_thread"], body.get("verifies_per_s_1_thread")),
                               (crypto["cores"], r["verifies_per_s_all_cores"], body.get("verifies_per_s_all_cores"))):
            rows.append(dict(key=f"crypto_{lib}_{threads}", name=f"Ed25519 verify, {lib}, {threads} thread{'s' if threads > 1 else ''}",
                             tps=v * batch, lat=None, cpu=threads * 1e6 / v / batch,
                             note=f"{v:,.0f} verifies/s of 200 B ({_f(vb)}/s of the {body.get('bytes', 0):,} B batch body), "
                                  f"one per {batch} transfers" + _others(crypto)))
    return rows


def tables(res: dict) -> list[Table]:
    cfg = res["config"]
    out = []
    code = res.get("code") or {}
    at = f" at {code['commit']}{'+dirty' if code.get('modified') else ''}" if code.get("commit") else ""
    t = Table(title=(f"raft-ledger bench{at}: {cfg['skew']} over {cfg['accounts']:,} accounts, batch {cfg['batch']}, "
                     f"concurrency {cfg['concurrency']}, {res['machine']['cpus']} cores"), title_justify="left")
    for col, just in (("system", "left"), ("transfers/s", "right"), ("p50 ms", "right"), ("p99 ms", "right"), ("p99.9 ms", "right"),
                      ("p99÷p50", "right"), ("CPU µs/transfer", "right"), ("ours ÷ this", "right"), ("note", "left")):
        t.add_column(col, justify=just, overflow="fold")
    rows = _rows(res)
    tps_of = {r["key"]: r["tps"] for r in rows}
    for r in rows:
        lat = r["lat"] or {}
        ours_tps = tps_of.get(r.get("vs", "ours"))
        ratio = None if ours_tps is None or r["key"].startswith("ours") or not r["tps"] else ours_tps / r["tps"]
        tail = lat.get("p99_over_p50")
        if tail is None and lat.get("p50_ms"):
            tail = lat["p99_ms"] / lat["p50_ms"]
        t.add_row(r["name"], _f(r["tps"]), _f(lat.get("p50_ms"), "{:,.1f}"), _f(lat.get("p99_ms"), "{:,.1f}"),
                  _f(lat.get("p999_ms"), "{:,.1f}"), _f(tail, "{:.2f}"), _f(r["cpu"], "{:,.1f}"), _f(ratio, "{:.3g}×"), r["note"])
    per_entry = transfers_per_entry(res)
    caption = []
    if per_entry:
        caption.append("transfers per Raft entry: " + "; ".join(f"{k} {_f(v, '{:,.1f}')}" for k, v in per_entry.items()))
    idle = res.get("ours", {}).get("idle_cpu_cores")
    if idle is not None:
        caption.append(f"idle validators use {idle:.2f} cores together (in the CPU per transfer of every phase of ours)")
    if caption:
        t.caption = "\n".join(caption)
    for part in ("ours", "raft", "crypto", "postgres", "pg_sync", "history", "proofs", "membership"):
        p = res.get(part, {})
        if "skipped" in p or "error" in p:
            t.add_row(part, "", "", "", "", "", "", "", f"[yellow]{escape(p.get('skipped') or 'ERROR: ' + p['error'])}[/]")
    out.append(t)

    pr = res.get("proofs", {})
    if pr.get("rows"):
        t2 = Table(title=f"proofs at {pr['size']:,} transactions: sizes, server build and SDK verify (median µs, one thread)"
                         + _others(pr), title_justify="left")
        for col, just in (("proof", "left"), ("hashes", "right"), ("bytes", "right"), ("build µs", "right"),
                          ("verify µs", "right")):
            t2.add_column(col, justify=just, overflow="fold")
        for r in pr["rows"]:
            t2.add_row(r["proof"], _f(r["hashes"], "{:,.0f}"), _f(r["bytes"], "{:,.0f}"), _f(r["build_us"], "{:,.1f}"),
                       _f(r["verify_us"], "{:,.1f}"))
        out.append(t2)

    mem = res.get("membership", {})
    if mem.get("changes"):
        m = Table(title=f"validator membership changes at {mem['stored_transfers']:,} stored transfers (RocksDB of v1 "
                        f"{mem['db_bytes_v1'] / 1e6:,.0f} MB), with {mem.get('probe_threads', 4)} clients writing one "
                        "transfer each, back to back", title_justify="left")
        for col, just in (("window", "left"), ("total s", "right"), ("acks/s", "right"), ("vs quiet", "right"),
                          ("longest gap s", "right"), ("p99 ms", "right"), ("steps (s)", "left")):
            m.add_column(col, justify=just, overflow="fold")
        quiet = mem["quiet"]["acks_per_s"] or None

        def row(name, w, total="", steps=""):
            m.add_row(name, total, _f(w["acks_per_s"], "{:,.1f}"),
                      _f(None if quiet is None else w["acks_per_s"] / quiet, "{:.2f}×"),
                      _f(w["longest_gap_s"], "{:,.2f}"), _f(w["p99_ms"], "{:,.1f}"), steps)

        row("quiet (before)", mem["quiet"])
        for name, ch in mem["changes"].items():
            row(name, ch["writes"], f"{ch['total_s']:,.1f}", "; ".join(f"{k} {v:,.1f}" for k, v in ch["steps_s"].items()))
        if "after" in mem:
            row("quiet (after)", mem["after"])
        m.caption = (f"loaded at {mem['load_per_s']:,} transfers/s; probe failures (gave up after the SDK's 30 s deadline): "
                     f"{mem.get('probe_failures', 0)}")
        out.append(m)

    hist = res.get("history", {})
    if hist.get("rows"):
        h = Table(title=f"history growth: core apply + RocksStore commit, no network (blocks of {hist['block_transfers']:,} transfers)"
                        + _others(hist), title_justify="left")
        for col in ("stored transfers", "CPU µs/transfer", "apply thread µs", "median block µs", "wall µs", "vs smallest",
                    "preload CPU µs", "DB MB"):
            h.add_column(col, justify="right")
        for r in hist["rows"]:
            pre = r.get("preload_cpu_us_per_transfer")
            h.add_row(f"{r['stored_transfers']:,}", f"{r['cpu_us_per_transfer']:.1f}", f"{r['thread_cpu_us_per_transfer']:.1f}",
                      f"{r['median_block_thread_cpu_us_per_transfer']:.1f}", f"{r['wall_us_per_transfer']:.1f}",
                      f"{r['vs_smallest']:.2f}×", "—" if pre is None else f"{pre:.1f}", f"{r['db_bytes'] / 1e6:,.0f}")
        h.caption = ("CPU = process CPU of the timed blocks on a settled DB (all threads); preload CPU = process CPU per "
                     "transfer of the stretch written to reach the size, flushes and compactions included")
        out.append(h)

    tg = Table(title="targets (issue 5, then issue 16: ratios side by side in this run)", title_justify="left")
    for col in ("target", "measured", ""):
        tg.add_column(col)
    for name, value, ok in [*targets(res), *targets16(res)]:
        tg.add_row(name, value, "" if ok is None else ("[green]met[/]" if ok else "[red]missed[/]"))
    out.append(tg)

    prof = res.get("ours", {}).get("peak", {}).get("profile")
    if prof and prof.get("samples"):
        peak = res["ours"]["peak"]
        leader_cpu = peak["cpu_per_validator_s"].get(peak["leader"], 0.0)
        per_t = leader_cpu / peak["transfers"] * 1e6 if peak["transfers"] else 0.0
        for kind in ("self", "inclusive"):
            pt = Table(title=f"leader {peak['leader']} profile ({kind}; py-spy, {prof['samples']:,} samples, "
                             f"leader CPU {per_t:.0f} µs/transfer)", title_justify="left")
            for col in ("function", "% samples", "≈ µs/transfer"):
                pt.add_column(col, justify="left" if col == "function" else "right")
            for fn, frac in prof[kind][:15]:
                pt.add_row(fn, f"{frac * 100:.1f}", f"{frac * per_t:.1f}")
            out.append(pt)
    return out


def targets(res: dict) -> list[tuple[str, str, bool | None]]:
    out = []
    peak = res.get("ours", {}).get("peak")
    tps = peak["transfers_per_s"] if peak else None
    out.append((f"≥ {TARGET_TPS_MIN:,} transfers/s (batch ≥ 100)", _f(tps) + "/s" if tps else "not run",
                None if tps is None else (tps >= TARGET_TPS_MIN and res["config"]["batch"] >= 100)))
    pg = res.get("postgres", {}).get("batch")
    r = tps / pg["transfers_per_s"] if (tps and pg) else None
    out.append((f"≥ {TARGET_VS_POSTGRES_MIN:g}× PostgreSQL (SQL txn per batch)", _f(r, "{:.2f}×", "not run"), None if r is None else r >= TARGET_VS_POSTGRES_MIN))
    raft = res.get("raft", {})
    r = tps / raft["transfers_per_s"] if (tps and "transfers_per_s" in raft) else None
    out.append((f"≥ {TARGET_VS_RAFT_MIN:g}× bare pysyncobj", _f(r, "{:.2f}×", "not run"), None if r is None else r >= TARGET_VS_RAFT_MIN))
    half = res.get("ours", {}).get("half_load")
    p99 = half["latency"]["p99_ms"] if half else None
    out.append((f"p99 ≤ {TARGET_HALF_LOAD_P99_MS_MAX:g} ms at ½ peak", _f(p99, "{:.1f} ms", "not run"),
                None if p99 is None else p99 <= TARGET_HALF_LOAD_P99_MS_MAX))
    rows = res.get("history", {}).get("rows") or []
    if len(rows) >= 2:
        g = max(r["cpu_us_per_transfer"] for r in rows) / min(r["cpu_us_per_transfer"] for r in rows)
        span = f"{rows[0]['stored_transfers']:,} → {rows[-1]['stored_transfers']:,}"
        out.append((f"cost/transfer within {round((TARGET_HISTORY_GROWTH_MAX - 1) * 100)}% from 10^4 to 10^7", f"max/min {g:.2f} over {span}",
                    (g <= TARGET_HISTORY_GROWTH_MAX) if rows[-1]["stored_transfers"] >= 10**7 else None))
    else:
        out.append(("cost/transfer within 20% from 10^4 to 10^7", "not run", None))
    return out


def transfers_per_entry(res: dict) -> dict[str, float | None]:
    """Label -> transfers per Raft entry of every phase of ours that ran: one per
    request at each caller count (1, 8, 64), then the batch phases."""
    ours = res.get("ours", {})
    out: dict[str, float | None] = {}
    for p in (*ours.get("single_sweep", []), *([ours["single_peak"]] if "single_peak" in ours else [])):
        out[f"1/request × {p['callers']} caller{'s' if p['callers'] > 1 else ''}"] = p.get("transfers_per_entry")
    if "single_half_load" in ours:
        out["1/request at ½ peak"] = ours["single_half_load"].get("transfers_per_entry")
    if "peak" in ours:
        out[f"batches of {res['config']['batch']} × {ours['peak'].get('callers', res['config']['concurrency'])}"] = \
            ours["peak"].get("transfers_per_entry")
    return out


def _ratio(a: dict | None, b: dict | None, key: str = "transfers_per_s") -> float | None:
    return a[key] / b[key] if (a and b and a.get(key) and b.get(key)) else None


def _tail(phase: dict | None) -> float | None:
    if not phase:
        return None
    lat = phase["latency"]
    r = lat.get("p99_over_p50")
    if r is None and lat.get("p50_ms"):
        r = lat["p99_ms"] / lat["p50_ms"]
    return None if r is None or r != r else r


def targets16(res: dict) -> list[tuple[str, str, bool | None]]:
    """Issue 16's targets: (what, measured, met or None when not run)."""
    ours = res.get("ours", {})
    peak, single = ours.get("peak"), ours.get("single_peak")
    pg, sync = res.get("postgres", {}), res.get("pg_sync", {})
    out = []

    def ratio_row(name: str, r: float | None, lo: float) -> None:
        out.append((name, _f(r, "{:.2f}×", "not run"), None if r is None else r >= lo))

    n = single["callers"] if single else res["config"].get("single_concurrency", 64)
    ratio_row(f"1/request × {n} callers, 1 shared client ≥ {TARGET_SINGLE_VS_PG_SINGLE_MIN:g}× PostgreSQL txn per transfer",
              _ratio(single, pg.get("single")), TARGET_SINGLE_VS_PG_SINGLE_MIN)
    ratio_row(f"1/request × {n} callers ≥ {TARGET_SINGLE_VS_OUR_BATCH_MIN:g}× our batches of {res['config']['batch']}",
              _ratio(single, peak), TARGET_SINGLE_VS_OUR_BATCH_MIN)
    ratio_row(f"batches ≥ {TARGET_BATCH_VS_PG_BATCH_MIN:g}× PostgreSQL txn per batch", _ratio(peak, pg.get("batch")),
              TARGET_BATCH_VS_PG_BATCH_MIN)
    ratio_row(f"batches ≥ {TARGET_BATCH_VS_PG_SYNC_BATCH_MIN:g}× PostgreSQL sync-rep (ANY 1 of 2 standbys) txn per batch",
              _ratio(peak, sync.get("batch")), TARGET_BATCH_VS_PG_SYNC_BATCH_MIN)
    cpu = peak["cpu_us_per_transfer"] if peak else None
    out.append((f"validator CPU ≤ {TARGET_CPU_US_PER_TRANSFER_MAX:g} µs/transfer at batch 100, all 3 validators",
                _f(cpu, "{:.1f} µs", "not run") + ("" if res["config"]["batch"] == 100 or cpu is None else f" (batch {res['config']['batch']})"),
                None if cpu is None or res["config"]["batch"] != 100 else cpu <= TARGET_CPU_US_PER_TRANSFER_MAX))
    for label, phase in (("batches", ours.get("half_load")), ("1/request", ours.get("single_half_load"))):
        r = _tail(phase)
        out.append((f"p99 ≤ {TARGET_TAIL_RATIO_MAX:g} × p50 at ½ peak ({label})",
                    "not run" if r is None else f"{r:.2f} ({phase['latency']['p99_ms']:.1f} / {phase['latency']['p50_ms']:.1f} ms)",
                    None if r is None else r <= TARGET_TAIL_RATIO_MAX))
    return out


def print_tables(res: dict, console: Console | None = None) -> str:
    """Print the tables to stdout and return them as plain text."""
    console = console or Console(width=None if sys.stdout.isatty() else TABLE_WIDTH_PIPED)
    for t in tables(res):
        console.print(t)
    rec = Console(record=True, width=TABLE_WIDTH_PIPED, file=open(os.devnull, "w"))
    for t in tables(res):
        rec.print(t)
    return rec.export_text()


def write_json(res: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(res, f, indent=1, default=str, allow_nan=True)


def plot_latency(res: dict, path: str) -> str | None:
    """Histogram and CDF of commit latency per system; None if matplotlib is missing or no
    part measured latencies (then matplotlib, seconds to import, is not imported)."""
    series = []
    ours = res.get("ours", {})
    if "peak" in ours:
        series.append(("ours (per batch)", ours["peak"]["latencies_s"]))
    if "half_load" in ours:
        series.append(("ours at ½ peak (per batch)", ours["half_load"]["latencies_s"]))
    if "latencies_s" in res.get("raft", {}):
        series.append(("bare pysyncobj (per entry)", res["raft"]["latencies_s"]))
    pg = res.get("postgres", {})
    if "batch" in pg:
        series.append(("PostgreSQL, txn per batch", pg["batch"]["latencies_s"]))
    if "single" in pg:
        series.append(("PostgreSQL, txn per transfer", pg["single"]["latencies_s"]))
    if "single_peak" in ours:
        series.append((f"ours 1/request × {ours['single_peak']['callers']} (per request)", ours["single_peak"]["latencies_s"]))
    for kind, name in (("batch", "per batch"), ("single", "per transfer")):
        if kind in res.get("pg_sync", {}):
            series.append((f"PostgreSQL sync-rep, txn {name}", res["pg_sync"][kind]["latencies_s"]))
    series = [(n, [x * 1e3 for x in v if x > 0]) for n, v in series if v]
    if not series:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    lo = max(0.05, min(min(v) for _, v in series))
    hi = max(max(v) for _, v in series)
    import numpy as np

    bins = np.logspace(np.log10(lo), np.log10(hi * 1.01), 60)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    for name, v in series:
        a1.hist(v, bins=bins, histtype="step", linewidth=1.5, label=f"{name} (n={len(v):,})", weights=np.full(len(v), 1 / len(v)))
        s = np.sort(v)
        a2.plot(s, np.arange(1, len(s) + 1) / len(s), label=name)
    cfg = res["config"]
    for a in (a1, a2):
        a.set_xscale("log")
        a.set_xlabel("commit latency (ms, log scale)")
        a.grid(True, which="both", alpha=0.3)
    a1.set_ylabel("fraction of commits per bin")
    a1.set_title("latency histogram")
    a2.set_ylabel("fraction ≤ x")
    a2.set_title("latency CDF")
    a2.axhline(0.99, color="grey", linestyle=":", linewidth=1)
    a1.legend(fontsize=8)
    fig.suptitle(f"{cfg['skew']} over {cfg['accounts']:,} accounts, batch {cfg['batch']}, concurrency {cfg['concurrency']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
