"""The soak mode: random scenarios back to back until the time (or the run count) is up.

``python -m raft_ledger_chaos soak --duration 30m [--seed S] [--scenarios a,b,...] [--runs N]``

Every run is a normal chaos run (chaos/cli.py ``run_scenario``: a fresh cluster, the
bank workload, the nemesis, every checker, its own ``report.md`` and plot) of a
scenario and a run seed drawn from ``random.Random(seed)`` (:func:`draw_runs`), so a
soak replays from its seed: the same sequence of (scenario, run seed), and each run
replays from its own seed. After every run the summary (``summary.md`` in the soak's
directory, chaos/report.py ``write_summary``) is rewritten, so an interrupted soak
still leaves one. The soak passes iff every run's checkers passed (none failed).

Scenarios that need something this machine lacks (``Scenario.requires``, e.g. root
or FUSE) are left out of the draw, with a line saying why.
``membership`` is left out by default (one run takes minutes: its changes wait out
the faults); name it in ``--scenarios`` to include it.
"""
from __future__ import annotations

import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

#: Seconds of faults per run by default: short, so >= 20 runs fit in ~15 minutes on a
#: 2-core machine: a run also starts a cluster, funds the bank, waits out a recovery tail,
#: reads every validator and runs Porcupine (measured: 26 s a run on average, 35 runs in
#: 15 min, with the cores lightly loaded; 40-60 s a run under heavy load).
RUN_DURATION_S = 12.0
#: Left out of the default draw (see the module docstring).
EXCLUDED_BY_DEFAULT = ("membership",)
SUMMARY_NAME = "summary.md"
#: Bound on the runs of one soak when only a duration is given (a run takes > 1 s anyway).
RUNS_MAX = 100_000

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """``"30m"`` -> 1800.0 seconds; units ms, s (default), m, h. Raises ValueError."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (e.g. 90, 90s, 30m, 2h)")
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def draw_runs(seed: int, scenarios: list[str]) -> Iterator[tuple[str, int]]:
    """Endless (scenario, run seed) pairs from ``random.Random(seed)``: the scenario uniformly
    from ``scenarios`` (sorted first, so their order does not matter), the run seed in
    [1, 2^31). Raises ValueError if ``scenarios`` is empty."""
    if not scenarios:
        raise ValueError("no scenario to draw from")
    names = sorted(scenarios)
    rng = random.Random(seed)
    while True:
        yield rng.choice(names), rng.randrange(1, 2**31)


def choose_scenarios(all_scenarios: dict, requested: list[str] | None,
                     missing: Callable[[object], list[str]]) -> tuple[list[str], dict[str, list[str]]]:
    """(scenarios to draw from, {scenario left out: why}) from the scenario table, the names
    asked for (None: every scenario but EXCLUDED_BY_DEFAULT) and ``missing(scenario)`` (the
    requirements it lacks here). Raises ValueError for an unknown name."""
    if requested:
        unknown = [n for n in requested if n not in all_scenarios]
        if unknown:
            raise ValueError(f"unknown scenario {unknown[0]!r}; one of {sorted(all_scenarios)}")
        names = list(dict.fromkeys(requested))
    else:
        names = [n for n in all_scenarios if n not in EXCLUDED_BY_DEFAULT]
    chosen, skipped = [], {}
    for n in names:
        why = missing(all_scenarios[n])
        if why:
            skipped[n] = why
        else:
            chosen.append(n)
    return chosen, skipped


@dataclass
class SoakRun:
    """One run of a soak, as its summary shows it."""

    index: int
    scenario: str
    seed: int
    duration_s: float
    elapsed_s: float = 0.0
    counts: dict = field(default_factory=dict)
    #: checker name -> True (pass), False (FAIL), None (undecided).
    checks: dict = field(default_factory=dict)
    #: evidence of the checkers that did not pass.
    evidence: dict = field(default_factory=dict)
    report: str = ""
    #: set if the run itself crashed (no verdicts): the exception.
    error: str = ""

    @property
    def ok_ops(self) -> int:
        return sum(v for k, v in self.counts.items() if k.endswith(":ok"))

    @property
    def failed_ops(self) -> int:
        return sum(v for k, v in self.counts.items() if k.endswith(":fail"))

    @property
    def unknown_ops(self) -> int:
        return sum(v for k, v in self.counts.items() if k.endswith(":info"))

    @property
    def passed(self) -> bool:
        return not self.error and False not in self.checks.values()


def run_soak(*, duration_s: float | None, runs: int | None, seed: int, scenarios: list[str], run_duration_s: float,
             out: str, runner: Callable[..., bool], write_summary: Callable[..., str],
             progress: Callable[[str], None] = print, skipped: dict | None = None) -> tuple[bool, str, list[SoakRun]]:
    """Run drawn scenarios until ``duration_s`` has passed (no new run starts after it) or
    ``runs`` runs are done, whichever comes first (at least one bound must be given).
    ``runner(name, seed=, duration_s=, out=, outcome=)`` is one chaos run (chaos/cli.py's
    run_scenario with the rest of its arguments bound); ``write_summary(path, meta, runs)``
    writes the summary. Returns (every run passed, summary path, the runs)."""
    if duration_s is None and runs is None:
        raise ValueError("give a duration or a number of runs")
    soak_dir = os.path.abspath(os.path.join(out, f"soak-seed{seed}-{time.strftime('%Y%m%dT%H%M%S')}"))
    os.makedirs(soak_dir, exist_ok=True)
    summary = os.path.join(soak_dir, SUMMARY_NAME)
    started = time.monotonic()
    deadline = started + duration_s if duration_s is not None else None
    limit = runs if runs is not None else RUNS_MAX
    meta = {"seed": seed, "scenarios": scenarios, "skipped": skipped or {}, "run_duration_s": run_duration_s,
            "duration_s": duration_s, "runs": runs, "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python -m raft_ledger_chaos soak"
                       + (f" --duration {duration_s:g}s" if duration_s is not None else "")
                       + (f" --runs {runs}" if runs is not None else "")
                       + f" --seed {seed} --run-duration {run_duration_s:g} --scenarios {','.join(scenarios)}"}
    done: list[SoakRun] = []
    for i, (name, run_seed) in zip(range(1, limit + 1), draw_runs(seed, scenarios)):
        if deadline is not None and time.monotonic() >= deadline:
            break
        left = "" if deadline is None else f", {max(0.0, deadline - time.monotonic()) / 60:.1f} min left"
        progress(f"soak run {i}{'/' + str(runs) if runs else ''}: {name} seed {run_seed}{left}")
        run = SoakRun(i, name, run_seed, run_duration_s)
        outcome: dict = {}
        t0 = time.monotonic()
        try:
            runner(name, seed=run_seed, duration_s=run_duration_s, out=soak_dir, outcome=outcome)
        except Exception as e:  # a crashed run is a failed run; the soak goes on
            run.error = f"{type(e).__name__}: {e}"
        run.elapsed_s = time.monotonic() - t0
        run.counts = outcome.get("counts", {})
        run.checks = outcome.get("checks", {})
        run.evidence = outcome.get("evidence", {})
        run.report = outcome.get("report", "")
        if not run.checks and not run.error:
            run.error = "no verdicts"
        done.append(run)
        meta["elapsed_s"] = time.monotonic() - started
        write_summary(summary, meta, done)
        failed = [c for c, v in run.checks.items() if v is False]
        progress(f"soak run {i}: {name} {'PASS' if run.passed else 'FAIL'} in {run.elapsed_s:.0f}s "
                 f"(ok {run.ok_ops}, failed {run.failed_ops}, unknown {run.unknown_ops})"
                 + (f"; failed checkers: {', '.join(failed)}" if failed else "") + (f"; error: {run.error}" if run.error else ""))
    meta["elapsed_s"] = time.monotonic() - started
    write_summary(summary, meta, done)
    return bool(done) and all(r.passed for r in done), summary, done
