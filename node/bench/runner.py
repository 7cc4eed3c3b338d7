"""Runs the parts one after the other and writes the report (``ledger-validator bench``)."""
from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import os
import platform
import shutil
import tempfile
import time
import traceback

from rich.markup import escape

from raft_ledger_node.bench import report, ui
from raft_ledger_node.bench.config import BenchConfig
from raft_ledger_node.bench.measure import CpuMeter
from raft_ledger_node.bench.workload import Workload, signed_batch_bytes

PARTS = ("ours", "raft", "crypto", "postgres", "pg_sync", "history", "proofs", "membership")


def _machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    versions = {}
    for mod in ("pysyncobj", "rocksdict", "cryptography", "grpc", "psycopg", "nacl"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except Exception:
            versions[mod] = None
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(), "kernel": platform.release(),
            "versions": versions}


def _code() -> dict:
    """The commit measured and any uncommitted changes to it (numbers are only comparable at the same code)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "modified": [line[3:] for line in dirty.splitlines()] if dirty else []}


def _loadavg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def run(cfg: BenchConfig) -> dict:
    os.makedirs(cfg.out_dir, exist_ok=True)
    work_dir = cfg.work_dir or tempfile.mkdtemp(prefix="ledger-bench-")
    os.makedirs(work_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    cfg_doc = {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in dataclasses.asdict(cfg).items()}
    res: dict = {"config": cfg_doc, "machine": _machine(), "started": stamp, "work_dir": work_dir, "durations_s": {}}
    res["machine"]["loadavg_at_start"] = _loadavg()
    res["code"] = _code()
    if res["machine"]["loadavg_at_start"] and res["machine"]["loadavg_at_start"][0] > 0.5:
        ui.warn(f"the machine is busy before the run (load average {res['machine']['loadavg_at_start'][0]:.2f}): "
                "numbers will be lower and noisier than on an idle machine")
    wl = Workload.from_config(cfg)
    body_bytes, envelope_bytes = signed_batch_bytes(cfg.batch)
    res["signed_batch"] = {"body_bytes": body_bytes, "envelope_bytes": envelope_bytes}
    code = res["code"]
    ui.step(f"code: {code['commit']} {code['subject'] or ''}" + (f" + uncommitted changes to {', '.join(code['modified'])}" if code["modified"] else ""))
    ui.step(f"workload: {cfg.skew} over {cfg.accounts:,} accounts of {cfg.members} members, {cfg.batch} transfers per signed "
            f"transaction (≈{envelope_bytes:,} bytes), {cfg.concurrency} concurrent clients; work dir {work_dir}")

    def part(name: str):
        from raft_ledger_node.bench import bare_raft, ed25519, history, membership, ours, pg_sync, postgres, proofs

        return {
            "ours": lambda: ours.run(cfg, wl, work_dir),
            "raft": lambda: bare_raft.run(cfg, wl, work_dir),
            "crypto": lambda: ed25519.run(cfg, body_bytes),
            "postgres": lambda: postgres.run(cfg, wl, work_dir),
            "pg_sync": lambda: pg_sync.run(cfg, wl, work_dir),
            "history": lambda: history.run(cfg, work_dir),
            "proofs": lambda: proofs.run(cfg, work_dir),
            "membership": lambda: membership.run(cfg, work_dir),
        }[name]

    counts = cfg.part_counts()
    t_all = time.monotonic()
    try:
        for name in PARTS:
            if name in cfg.skip:
                res[name] = {"skipped": f"--skip-{name.replace('_', '-')}"}
                continue
            if not counts[name]:  # every count of the part is 0: nothing to measure, nothing started
                res[name] = {"skipped": "count 0"}
                continue
            t = time.monotonic()
            meter = CpuMeter(lambda: [os.getpid()])
            meter.start()
            try:
                res[name] = part(name)()
                if name in ("crypto", "history", "proofs"):  # in-process parts: whatever else ran on the machine
                    meter.stop()
                    if meter.machine_seconds is not None:
                        res[name]["other_cpu_s"] = max(0.0, meter.machine_seconds - meter.seconds)
                        res[name]["elapsed_s"] = time.monotonic() - t
            except Exception as e:  # one broken part must not lose the others' numbers
                tb = traceback.format_exc()
                with open(os.path.join(work_dir, "errors.log"), "a") as f:
                    f.write(f"--- {name}\n{tb}\n")
                ui.warn(escape(f"{name} failed: {type(e).__name__}: {e}"))
                res[name] = {"error": f"{type(e).__name__}: {e}"}
            res["durations_s"][name] = time.monotonic() - t
    finally:
        res["durations_s"]["total"] = time.monotonic() - t_all
        if not cfg.keep_data and not cfg.work_dir and not any("error" in res.get(p, {}) for p in PARTS):
            shutil.rmtree(work_dir, ignore_errors=True)

    text = report.print_tables(res)
    base = os.path.join(cfg.out_dir, f"bench-{stamp}")
    with open(base + ".txt", "w") as f:
        f.write(text)
    report.write_json(res, base + ".json")
    png = report.plot_latency(res, os.path.join(cfg.out_dir, f"latency-{stamp}.png"))
    if png:
        plot = f", {png}"
    elif importlib.util.find_spec("matplotlib") is None:
        plot = " (no latency plot: pip install matplotlib)"
    else:
        plot = " (no latency plot: no part measured latencies)"
    ui.step(f"wrote {base}.json, {base}.txt{plot} in {res['durations_s']['total']:.0f}s")
    if any("error" in res.get(p, {}) for p in PARTS):
        ui.warn(f"some parts failed; tracebacks in {work_dir}/errors.log (kept)")
    return res
