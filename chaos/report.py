"""The report of one chaos run: ``report.md`` plus ``throughput_latency.png`` in the run directory.

It shows the scenario, seed and duration, the fault timeline, throughput and
latency over time with the fault windows shaded, the operation counts, the time
to recover from each fault and every checker's verdict with its evidence.

The fault timeline (``faults.jsonl``, written by chaos/nemesis.py; times share
the history's t0) is one JSON object per line, an event per fault start and end::

    {"time_ns": 12000000000, "event": "start", "fault": "partition-leader", "targets": ["v1"], "detail": {"leader": "v1"}}
    {"time_ns": 19500000000, "event": "end",   "fault": "partition-leader", "targets": ["v1"], "detail": {"heal": ...}}

A window ``{"fault": ..., "start_ns": ..., "end_ns": ...}`` is accepted too. An
end is paired with the open fault of the same ``id`` if given, else of the same
fault and targets, else of the same fault; an end of fault ``"all"`` (or with no
fault) heals everything open. A fault never ended is drawn to the end of the run
and reported as not healed.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Sequence

from raft_ledger_chaos.history import pair_operations, read_history
from raft_ledger_node.stats import percentile

PLOT_NAME = "throughput_latency.png"
REPORT_NAME = "report.md"
#: Width of a throughput/latency bucket.
bucket_s = 1.0
#: Longest evidence shown in the verdict table (the full text follows it).
table_evidence_chars_max = 160

_START = {"start", "begin", "inject", "injected", "on"}
_END = {"end", "stop", "heal", "healed", "off", "recover"}
_HEAL_ALL = {"", "all", "*", "heal", "heal-all", "heal_all"}


@dataclass
class Fault:
    name: str
    target: str
    start_s: float
    end_s: float | None
    detail: str = ""
    key: str | None = None


def _first(rec: dict, *keys: str, default=None):
    for k in keys:
        if rec.get(k) is not None:
            return rec[k]
    return default


def _describe(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items())
    return str(v)


def load_timeline(path: str | None) -> list[Fault]:
    """Fault windows from a timeline file (see the module docstring); [] if there is none."""
    if not path or not os.path.exists(path):
        return []
    faults: list[Fault] = []
    open_faults: list[Fault] = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            name = str(_first(rec, "fault", "name", "kind", default=""))
            target = _describe(_first(rec, "target", "targets", "node", "nodes"))
            detail = _describe(_first(rec, "detail", "details", "description", "params"))
            key = None if rec.get("id") is None else str(rec["id"])
            if "start_ns" in rec:
                end = rec.get("end_ns")
                faults.append(Fault(name, target, rec["start_ns"] / 1e9, None if end is None else end / 1e9, detail, key))
                continue
            event = str(_first(rec, "event", "phase", "type", "action", default="")).lower()
            t = _first(rec, "time_ns", "t_ns", default=0) / 1e9
            if event in _START:
                fault = Fault(name, target, t, None, detail, key)
                faults.append(fault)
                open_faults.append(fault)
            elif event in _END:
                if name.lower() in _HEAL_ALL and key is None:
                    for fault in open_faults:
                        fault.end_s = t
                    open_faults.clear()
                    continue
                match = (
                    [x for x in open_faults if key is not None and x.key == key]
                    or [x for x in open_faults if x.name == name and x.target == target]
                    or [x for x in open_faults if x.name == name]
                )
                if match:
                    match[0].end_s = t
                    open_faults.remove(match[0])
    return sorted(faults, key=lambda x: x.start_s)


def buckets(ops: list[dict], end_s: float) -> dict:
    """Per ``bucket_s`` of the run (by completion time): {"t": bucket starts (s), "tput" and
    "reads": ok transfers and ok reads per second, "unknown": indefinite outcomes (count),
    "p50" and "p99": nearest-rank latency percentiles (ms, :func:`raft_ledger_node.stats.percentile`)
    of the ok transfers, NaN in a bucket without any}. ``ops`` as :func:`pair_operations` returns them."""
    n = max(1, round(end_s / bucket_s))  # a short tail joins the last bucket
    tput = [0] * n
    reads = [0] * n
    unknown = [0] * n
    lat: list[list[float]] = [[] for _ in range(n)]
    for op in ops:
        c = op["complete"]
        if c is None:
            continue
        b = min(n - 1, int(c["time_ns"] / 1e9 / bucket_s))
        if op["f"] == "transfer" and c["type"] == "ok":
            tput[b] += 1
            lat[b].append((c["time_ns"] - op["invoke"]["time_ns"]) / 1e6)
        elif op["f"] == "read" and c["type"] == "ok":
            reads[b] += 1
        elif c["type"] == "info":
            unknown[b] += 1
    # The last bucket is 0.5 to 1.5 buckets long: a rate over its real length.
    widths = [bucket_s] * (n - 1) + [max(end_s - (n - 1) * bucket_s, bucket_s / 2)]
    p50 = [percentile(sorted(x), 50) if x else math.nan for x in lat]
    p99 = [percentile(sorted(x), 99) if x else math.nan for x in lat]
    return {"t": [i * bucket_s for i in range(n)], "tput": [x / w for x, w in zip(tput, widths)], "reads": [x / w for x, w in zip(reads, widths)],
            "unknown": unknown, "p50": p50, "p99": p99}


def plot(run_dir: str, ops: list[dict], faults: list[Fault], end_s: float, title: str) -> str:
    """Throughput and latency per bucket with fault windows shaded; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = buckets(ops, end_s)
    mid = [t + bucket_s / 2 for t in data["t"]]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(13, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    ax1.plot(mid, data["tput"], color="tab:blue", lw=1.6, label="ok transfers/s")
    ax1.plot(mid, data["reads"], color="tab:green", lw=1.0, ls="--", label="ok reads/s")
    ax1.bar(data["t"], data["unknown"], width=bucket_s, align="edge", color="tab:red", alpha=0.5, label="unknown outcomes (info)")
    ax1.set_ylabel("operations / s")
    ax1.set_ylim(bottom=0)
    ax2.plot(mid, data["p50"], color="tab:blue", lw=1.4, marker=".", label="p50 latency, ok transfers")
    ax2.plot(mid, data["p99"], color="tab:purple", lw=1.4, marker=".", label="p99 latency, ok transfers")
    ax2.set_yscale("log")
    ax2.set_ylabel("latency (ms)")
    ax2.set_xlabel("time since t0 (s)")
    ax2.set_xlim(0, max(end_s, bucket_s))
    colors = ["#f4a582", "#92c5de", "#b8e186", "#f1b6da", "#fee08b", "#c2a5cf"]
    palette = {name: colors[i % len(colors)] for i, name in enumerate(dict.fromkeys(f.name for f in faults))}
    top = ax1.get_ylim()[1] * 1.18 or 1.0
    ax1.set_ylim(0, top)
    for i, f in enumerate(faults):
        end = f.end_s if f.end_s is not None else end_s
        for ax in (ax1, ax2):
            ax.axvspan(f.start_s, end, color=palette[f.name], alpha=0.45, lw=0)
        label = f.name + (f" {f.target}" if f.target else "") + ("" if f.end_s is not None else " (not healed)")
        ax1.text(f.start_s, top * (0.97 - 0.08 * (i % 3)), f" {label}", fontsize=8, va="top", ha="left", clip_on=True)
    ax1.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax2.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.set_title(title)
    fig.tight_layout()
    path = os.path.join(run_dir, PLOT_NAME)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _recovery(ops: list[dict], faults: list[Fault]) -> list[dict]:
    """Per fault: first ok transfer after its start (invoked at or after it) and after its end."""
    oks = sorted(
        ((op["invoke"]["time_ns"] / 1e9, op["complete"]["time_ns"] / 1e9) for op in ops
         if op["f"] == "transfer" and op["complete"] is not None and op["complete"]["type"] == "ok"),
        key=lambda x: x[1],
    )
    infos = [op["invoke"]["time_ns"] / 1e9 for op in ops if op["complete"] is not None and op["complete"]["type"] == "info"]
    rows = []
    for f in faults:
        after_start = next((done for invoked, done in oks if invoked >= f.start_s), None)
        after_end = None if f.end_s is None else next((done for _, done in oks if done >= f.end_s), None)
        end = f.end_s if f.end_s is not None else math.inf
        rows.append({
            "fault": f,
            "first_ok_after_start_s": None if after_start is None else after_start - f.start_s,
            "first_ok_after_end_s": None if after_end is None else after_end - f.end_s,
            "unknown_invoked_in_window": sum(1 for t in infos if f.start_s <= t <= end),
        })
    return rows


def _cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _secs(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} s"


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "**FAIL**", None: "undecided"}[passed]


def write_report(run_dir: str, meta: dict, results: Sequence, timeline_path: str | None, history_path: str) -> str:
    """Write ``report.md`` (and the plot) into ``run_dir``; returns the report's path.

    ``meta``: scenario, seed, duration_s and whatever else the run knows
    (description, command, unsafe, concurrency, started_at, counts); ``results``:
    the checkers' CheckResults.
    """
    records = list(read_history(history_path)) if os.path.exists(history_path) else []
    ops = pair_operations(records)
    faults = load_timeline(timeline_path)
    end_s = max([r["time_ns"] / 1e9 for r in records] + [f.end_s or 0 for f in faults] + [f.start_s for f in faults] + [0.0])
    scenario = meta.get("scenario", "?")
    png = plot(run_dir, ops, faults, end_s, f"{scenario} — seed {meta.get('seed', '?')}")

    out: list[str] = [f"# Chaos run: {scenario}", ""]
    if meta.get("description"):
        out += [str(meta["description"]), ""]
    passed = [r.passed for r in results]
    overall = "FAIL" if False in passed else ("PASS" if all(p is True for p in passed) else "PASS with undecided checks")
    out += [f"**Verdict: {overall}**", ""]
    out += ["| | |", "|---|---|", f"| scenario | `{scenario}` |", f"| seed | {meta.get('seed', '?')} |",
            f"| fault duration | {meta.get('duration_s', '?')} s |", f"| history span | {end_s:.1f} s |"]
    for k in ("unsafe", "concurrency", "started_at", "command"):
        if k in meta:
            v = f"`{meta[k]}`" if k == "command" else meta[k]
            out.append(f"| {k.replace('_', ' ')} | {_cell(v)} |")
    out.append("")

    out += ["## Fault timeline", ""]
    if faults:
        out += ["| # | fault | target | start | end | duration | detail |", "|---|---|---|---|---|---|---|"]
        for i, f in enumerate(faults, 1):
            dur = "not healed" if f.end_s is None else f"{f.end_s - f.start_s:.1f} s"
            end = "—" if f.end_s is None else f"{f.end_s:.1f} s"
            out.append(f"| {i} | {_cell(f.name)} | {_cell(f.target)} | {f.start_s:.1f} s | {end} | {dur} | {_cell(f.detail)} |")
    else:
        out.append("No faults were recorded." if timeline_path and os.path.exists(timeline_path) else "No fault timeline file.")
    out.append("")

    out += ["## Throughput and latency", "",
            f"Per {bucket_s:g} s bucket of completion time: ok transfers and ok reads per second, unknown outcomes (red bars), "
            "p50/p99 latency of ok transfers (log scale). Shaded: fault windows.", "",
            f"![throughput and latency]({os.path.basename(png)})", ""]

    out += ["## Operations", "", "| op | ok | fail | info (unknown) | not completed |", "|---|---|---|---|---|"]
    for f_name in ("transfer", "read"):
        mine = [op for op in ops if op["f"] == f_name]
        by = {t: sum(1 for op in mine if op["complete"] is not None and op["complete"]["type"] == t) for t in ("ok", "fail", "info")}
        out.append(f"| {f_name} | {by['ok']} | {by['fail']} | {by['info']} | {sum(1 for op in mine if op['complete'] is None)} |")
    fails: dict[str, int] = {}
    for op in ops:
        c = op["complete"]
        if op["f"] == "transfer" and c is not None and c["type"] == "fail":
            code = str((c.get("value") or {}).get("result", "?")).split(":")[0]
            fails[code] = fails.get(code, 0) + 1
    if fails:
        out += ["", "Failed transfers by result: " + ", ".join(f"`{k}` {v}" for k, v in sorted(fails.items(), key=lambda x: -x[1])) + "."]
    out.append("")

    out += ["## Recovery", ""]
    if faults:
        out += ["*After start*: from the fault's start to the completion of the first ok transfer invoked at or after it "
                "(one in flight when the fault began does not count as a recovery). *After end*: from the fault's end (heal) "
                "to the first ok transfer completed after it.", "",
                "| # | fault | target | first ok after start | first ok after end | unknown outcomes of ops invoked in the window |",
                "|---|---|---|---|---|---|"]
        for i, row in enumerate(_recovery(ops, faults), 1):
            f = row["fault"]
            out.append(f"| {i} | {_cell(f.name)} | {_cell(f.target)} | {_secs(row['first_ok_after_start_s'])} | "
                       f"{_secs(row['first_ok_after_end_s'])} | {row['unknown_invoked_in_window']} |")
    else:
        out.append("No faults: nothing to recover from.")
    out.append("")

    out += ["## Checkers", "", "| checker | verdict | evidence |", "|---|---|---|"]
    for r in results:
        ev = r.evidence if len(r.evidence) <= table_evidence_chars_max else r.evidence[: table_evidence_chars_max - 1] + "…"
        out.append(f"| {r.name} | {_verdict(r.passed)} | {_cell(ev)} |")
    out.append("")
    for r in results:
        out += [f"### {r.name}: {_verdict(r.passed)}", "", r.evidence, ""]
        if r.name == "clock" and (getattr(r, "details", None) or {}).get("validators"):
            out += clock_table(r.details["validators"]) + [""]
    extras = [n for n in ("final_state.json", "linearizability.html", "history.jsonl", "faults.jsonl") if os.path.exists(os.path.join(run_dir, n))]
    if extras:
        out += ["## Files", "", ", ".join(f"[{n}]({n})" for n in extras), ""]

    path = os.path.join(run_dir, REPORT_NAME)
    with open(path, "w") as f:
        f.write("\n".join(out))
    return path


CLOCK_COLUMNS = ("blocks", "min_step_ns", "max_step_s", "pending_created", "expired", "expiry_blocks", "still_pending", "chain_ahead_s")


def clock_table(rows: dict) -> list[str]:
    """Markdown lines of the clock checker's per-validator table (checkers.check_clock
    ``details["validators"]``: validator -> {column: value})."""
    out = ["| validator | " + " | ".join(c.replace("_", " ") for c in CLOCK_COLUMNS) + " |",
           "|---|" + "---|" * len(CLOCK_COLUMNS)]
    for vid, row in rows.items():
        out.append(f"| {vid} | " + " | ".join(_cell("—" if row.get(c) is None else row.get(c)) for c in CLOCK_COLUMNS) + " |")
    return out


def write_summary(path: str, meta: dict, runs: Sequence) -> str:
    """Write the soak's summary (Markdown) to ``path``; returns it.

    ``meta``: seed, scenarios, skipped ({scenario: [why]}), run_duration_s, duration_s,
    runs, started_at, elapsed_s, command. ``runs``: chaos/soak.py SoakRuns (index,
    scenario, seed, duration_s, elapsed_s, ok_ops, failed_ops, unknown_ops, checks,
    evidence, report, error, passed). One table row per run with each checker's verdict,
    then each run's throughput/latency plot (linked from its own report).
    """
    base = os.path.dirname(os.path.abspath(path))
    checkers: list[str] = []
    for r in runs:
        for name in r.checks:
            if name not in checkers:
                checkers.append(name)
    passed = sum(1 for r in runs if r.passed)
    verdict = "PASS" if runs and passed == len(runs) else "FAIL"
    out = [f"# Chaos soak: {verdict} ({passed}/{len(runs)} runs passed)", "",
           "| | |", "|---|---|",
           f"| seed | {meta.get('seed', '?')} |",
           f"| scenarios drawn from | {_cell(', '.join(meta.get('scenarios', [])))} |",
           f"| faults per run | {meta.get('run_duration_s', '?')} s |",
           f"| bound | {_cell(' and '.join(x for x in ((str(meta['duration_s']) + ' s') if meta.get('duration_s') is not None else '', (str(meta['runs']) + ' runs') if meta.get('runs') else '') if x))} |",
           f"| started at | {meta.get('started_at', '?')} |",
           f"| elapsed | {meta.get('elapsed_s', 0.0) / 60:.1f} min |",
           f"| command | `{_cell(meta.get('command', ''))}` |", ""]
    for name, why in (meta.get("skipped") or {}).items():
        out.append(f"- skipped `{name}`: {_cell('; '.join(why))}")
    if meta.get("skipped"):
        out.append("")
    out += ["## Runs", "",
            "| run | scenario | seed | faults | took | ok ops | failed ops | unknown | " + " | ".join(checkers) + " | report |",
            "|---|---|---|---|---|---|---|---|" + "---|" * len(checkers) + "---|"]
    for r in runs:
        rel = os.path.relpath(r.report, base) if r.report else ""
        cells = [_verdict(r.checks.get(c)) if c in r.checks else "—" for c in checkers]
        link = f"[report]({rel})" if rel else _cell(r.error or "—")
        out.append(f"| {r.index} | `{r.scenario}` | {r.seed} | {r.duration_s:g} s | {r.elapsed_s:.0f} s | {r.ok_ops} | "
                   f"{r.failed_ops} | {r.unknown_ops} | " + " | ".join(cells) + f" | {link} |")
    out.append("")
    bad = [r for r in runs if not r.passed]
    if bad:
        out += ["## Failures", ""]
        for r in bad:
            out.append(f"- run {r.index} `{r.scenario}` seed {r.seed}: "
                       + (_cell(r.error) if r.error else "; ".join(f"{c}: {_cell(e)}" for c, e in r.evidence.items() if r.checks.get(c) is False))
                       + f" — replay: `python -m raft_ledger_chaos run {r.scenario} --seed {r.seed} --duration {r.duration_s:g}`")
        out.append("")
    out += ["## Latency over time", ""]
    for r in runs:
        if not r.report:
            continue
        png = os.path.join(os.path.dirname(r.report), PLOT_NAME)
        if os.path.exists(png):
            out += [f"### run {r.index}: {r.scenario} (seed {r.seed}) — {'PASS' if r.passed else 'FAIL'}", "",
                    f"[![run {r.index}]({os.path.relpath(png, base)})]({os.path.relpath(r.report, base)})", ""]
    with open(path, "w") as f:
        f.write("\n".join(out))
    return path
