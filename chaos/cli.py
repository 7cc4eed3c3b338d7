"""The chaos suite's CLI: ``python -m raft_ledger_chaos list | run SCENARIO|all | smoke | soak``.

A run starts a fresh 3-validator cluster whose validator-to-validator links go
through Toxiproxy, funds the bank, runs the bank workload while a seeded nemesis
injects faults, heals, waits for the validators to converge, reads their final
state, runs the checkers and writes a report (Markdown + plot) into the run
directory. Exit code 0 iff every checker passed. The ``membership`` scenario also
changes the validator set meanwhile (chaos/membership.py): the workload runs until
those changes are done, and a ``membership`` checker joins the others.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time

import click
from rich.console import Console
from rich.table import Table

console = Console()

DEFAULT_OUT = "data/chaos"
#: Quiet tail after the nemesis healed, so recovery shows in the history.
RECOVERY_TAIL_S = 5.0
#: Scenarios of the CI smoke run (short: a few minutes in all). Add one by appending its
#: name; tests/integration/test_chaos_smoke.py runs exactly this list.
SMOKE_SCENARIOS = ("partition-leader", "kill-leader", "pause-leader", "power-cut-all")


def _porcupine_binary() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "ledger-porcupine")
    return here if os.path.exists(here) else shutil.which("ledger-porcupine")


def run_scenario(name: str, *, seed: int, duration_s: float, out: str, unsafe: bool, concurrency: int, base_port: int,
                 converge_timeout_s: float = 60.0, config_overrides: dict | None = None,
                 outcome: dict | None = None) -> bool:
    """One run of ``name``; returns True iff every checker passed. ``converge_timeout_s``: how
    long the final read waits for one head everywhere (a run expected to diverge waits less);
    ``config_overrides`` go into every validator's config.json last (e.g.
    ``{"raft_prevote": False}``); ``outcome``, if given, is filled with what the soak's
    summary needs: run_dir, report, counts, checks ({checker: True/False/None}), elapsed_s."""
    from raft_ledger_chaos import checkers
    from raft_ledger_chaos.bank import Bank, BankConfig, collect_final_state
    from raft_ledger_chaos.cluster import ChaosCluster
    from raft_ledger_chaos.history import History, read_history
    from raft_ledger_chaos.nemesis import SCENARIOS, Nemesis
    from raft_ledger_chaos.report import write_report

    scenario = SCENARIOS[name]
    run_dir = os.path.abspath(os.path.join(out, f"{name}-seed{seed}-{time.strftime('%Y%m%dT%H%M%S')}"))
    os.makedirs(run_dir, exist_ok=True)
    console.rule(f"[bold]{name}[/] (seed {seed}, {duration_s:.0f}s{', UNSAFE: adapter fixes off' if unsafe else ''})")
    console.print(scenario.description)
    cluster_class = ChaosCluster
    if getattr(scenario, "clock", False):
        from raft_ledger_chaos.clock import ClockChaosCluster as cluster_class
    cluster = cluster_class(os.path.join(run_dir, "cluster"), base_port=base_port, unsafe=unsafe,
                            lazyfs=scenario.lazyfs, raft_proxy=scenario.raft_proxy, config_overrides=config_overrides)
    if outcome is not None:
        outcome.update(run_dir=run_dir, started=time.time())
    history_path = os.path.join(run_dir, "history.jsonl")
    timeline_path = os.path.join(run_dir, "faults.jsonl")
    started = time.time()
    try:
        cluster.start()
        bank = Bank(addresses=list(cluster.addresses.values()), cluster_dir=cluster.directory,
                    cfg=BankConfig(concurrency=concurrency), seed=seed)
        bank.setup()
        t0 = time.monotonic_ns()
        history = History(history_path, t0)
        nemesis = Nemesis(cluster, scenario, seed=seed, duration_s=duration_s, t0_ns=t0, timeline_path=timeline_path)
        counts: dict = {}
        reconfigurer = None
        bank_stop = threading.Event()
        bank_s = duration_s + RECOVERY_TAIL_S
        if scenario.membership:
            from raft_ledger_chaos.membership import PLAN_TIMEOUT_S, Reconfigurer

            bank_s += PLAN_TIMEOUT_S  # stopped by bank_stop once the changes are done
            reconfigurer = Reconfigurer(cluster, t0_ns=t0, record=nemesis.record)
        worker = threading.Thread(target=lambda: counts.update(bank.run(history, bank_s, stop=bank_stop)))
        worker.start()
        nemesis.start()
        if reconfigurer is not None:
            reconfigurer.start()
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.5)
        nemesis.stop()  # heals everything
        if reconfigurer is not None:
            reconfigurer.join()
            time.sleep(RECOVERY_TAIL_S)
            bank_stop.set()
            console.print("membership: " + ", ".join(
                f"{s.kind} {s.target}{'->' + s.replacement if s.replacement else ''} "
                f"{'done' if s.done else 'NOT done'} ({s.attempts} attempt(s), {len(s.refusals)} refused)"
                for s in reconfigurer.steps))
        worker.join()
        history.close()
        console.print(f"workload: {counts}")
        records = list(read_history(history_path))
        transfer_ids = sorted({r["value"]["id"] for r in records if r["f"] == "transfer" and r["type"] == "invoke"})
        final_state = collect_final_state(bank, cluster.addresses, transfer_ids, timeout_s=converge_timeout_s)
        bank.close()
        raft_stats = cluster.raft_links.stats() if cluster.raft_links is not None else None
        if raft_stats is not None:
            console.print(f"raft proxy: {raft_stats}")
        if reconfigurer is not None:
            from raft_ledger_chaos.membership import check_membership, final_statuses

            steps = [s.to_doc() for s in reconfigurer.steps]
            membership_result = check_membership(steps, final_statuses(cluster),
                                                 error=repr(reconfigurer.error) if reconfigurer.error else "")
            with open(os.path.join(run_dir, "membership.json"), "w") as f:
                json.dump(membership_result.details, f, indent=2)
    finally:
        cluster.stop()
    with open(os.path.join(run_dir, "final_state.json"), "w") as f:
        json.dump(final_state, f)
    total = final_state["total"]
    porcupine = _porcupine_binary()
    results = [
        checkers.check_read_totals(records, total),
        checkers.check_acknowledged_present(records, final_state),
        checkers.check_failed_absent(records, final_state),
        checkers.check_agreement(final_state),
        checkers.check_limits(records, final_state),
        checkers.check_conservation(final_state, total, records),
        checkers.check_linearizable(history_path, final_state["initial_balances"], porcupine, 120.0),
        checkers.check_clock(final_state),
    ]
    if scenario.membership:
        results.append(membership_result)
    meta = {
        "scenario": name,
        "description": scenario.description,
        "seed": seed,
        "duration_s": duration_s,
        "unsafe": unsafe,
        "concurrency": concurrency,
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "counts": counts,
        "command": f"python -m raft_ledger_chaos run {name} --seed {seed} --duration {duration_s:g}" + (" --unsafe" if unsafe else "")
                   + (" --no-prevote" if (config_overrides or {}).get("raft_prevote") is False else ""),
    }
    if raft_stats is not None:
        meta["raft_proxy"] = raft_stats
        with open(os.path.join(run_dir, "raft_proxy.json"), "w") as f:
            json.dump(raft_stats, f, indent=2)
    report = write_report(run_dir, meta, results, timeline_path, history_path)
    table = Table(title=f"{name} seed {seed}")
    table.add_column("checker")
    table.add_column("verdict")
    table.add_column("evidence")
    ok = True
    for r in results:
        verdict = "[green]pass" if r.passed else ("[yellow]undecided" if r.passed is None else "[red]FAIL")
        ok &= r.passed is not False
        table.add_row(r.name, verdict, r.evidence[:120])
    console.print(table)
    clock = next((r for r in results if r.name == "clock" and r.details.get("validators")), None)
    if clock is not None and scenario.fault == "clock-jump":
        console.print(_clock_table(clock.details["validators"]))
    console.print(f"report: {report}")
    if outcome is not None:
        outcome.update(report=report, counts=counts, checks={r.name: r.passed for r in results},
                       evidence={r.name: r.evidence for r in results if r.passed is not True},
                       elapsed_s=time.time() - started)
    return ok


def _clock_table(rows: dict) -> Table:
    """The clock checker's per-validator table (checkers.check_clock details["validators"])."""
    table = Table(title="clock checker")
    cols = ["blocks", "min_step_ns", "max_step_s", "pending_created", "expired", "expiry_blocks", "still_pending", "chain_ahead_s"]
    table.add_column("validator")
    for c in cols:
        table.add_column(c.replace("_", " "))
    for vid, row in rows.items():
        table.add_row(vid, *(str(row.get(c)) for c in cols))
    return table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Resilience drills against a local 3-validator cluster behind Toxiproxy."""


@main.command("list")
def list_cmd() -> None:
    """List the scenarios."""
    from raft_ledger_chaos.nemesis import SCENARIOS

    table = Table()
    table.add_column("scenario")
    table.add_column("what it does")
    for name, s in SCENARIOS.items():
        table.add_row(name, s.description)
    console.print(table)


@main.command()
@click.argument("scenario")
@click.option("--seed", default=1, show_default=True, help="Seed of the nemesis schedule and the workload: a run replays from it.")
@click.option("--duration", default=60.0, show_default=True, help="Seconds of faults per scenario (plus a recovery tail).")
@click.option("--out", default=DEFAULT_OUT, show_default=True, help="Where run directories (history, faults, report) go.")
@click.option("--unsafe", is_flag=True, help="Switch the adapter's durability and truncation fixes off (demonstration only).")
@click.option("--concurrency", default=4, show_default=True, help="Concurrent bank clients.")
@click.option("--base-port", default=19100, show_default=True, help="First port of the cluster's range.")
@click.option("--no-prevote", is_flag=True, help="Validators without Pre-Vote and CheckQuorum (raft_prevote false): the before of the partition-leader drill.")
def run(scenario, seed, duration, out, unsafe, concurrency, base_port, no_prevote) -> None:
    """Run SCENARIO (or `all`) and check the history; exit 1 if a checker failed."""
    from raft_ledger_chaos.nemesis import SCENARIOS

    names = list(SCENARIOS) if scenario == "all" else [scenario]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise click.BadParameter(f"unknown scenario {unknown[0]!r}; see `python -m raft_ledger_chaos list`")
    overrides = {"raft_prevote": False} if no_prevote else None
    verdicts = _run_many(names, lambda n: run_scenario(n, seed=seed, duration_s=duration, out=out, unsafe=unsafe,
                                                       concurrency=concurrency, base_port=base_port,
                                                       config_overrides=overrides),
                         keep_going=len(names) > 1)
    sys.exit(0 if all(v is not False for v in verdicts.values()) and any(v for v in verdicts.values()) else 1)


def _run_many(names: list[str], run_one, keep_going: bool) -> dict[str, bool | None]:
    """Run each scenario in turn: one whose requirements are missing here (nemesis
    ``missing_requirements``) is skipped with a line saying why (verdict None); with
    ``keep_going`` a run that crashes is a FAIL with its error, and the next one runs.
    Prints a verdict line per scenario when there are several. Returns {name: verdict}."""
    from raft_ledger_chaos.nemesis import SCENARIOS, missing_requirements

    verdicts: dict[str, bool | None] = {}
    notes: dict[str, str] = {}
    for n in names:
        why = missing_requirements(SCENARIOS[n])
        if why:
            console.print(f"[yellow]skip {n}[/]: {'; '.join(why)}")
            verdicts[n], notes[n] = None, "skipped: " + "; ".join(why)
            continue
        try:
            verdicts[n] = run_one(n)
        except Exception as e:
            if not keep_going:
                raise
            console.print(f"[red]{n} crashed[/]: {type(e).__name__}: {e}")
            verdicts[n], notes[n] = False, f"crashed: {type(e).__name__}: {e}"
    if len(names) > 1:
        for n, v in verdicts.items():
            label = "[green]pass" if v else ("[yellow]skipped" if v is None else "[red]FAIL")
            console.print(f"{n:20} {label}[/] {notes.get(n, '')}")
    return verdicts


@main.command()
@click.argument("name", type=click.Choice(["submit-flood", "raft-frame", "query-scan", "linearizable-reads"]))
@click.option("--duration", default=10.0, show_default=True, help="Seconds the attack runs.")
@click.option("--history", default=131_040, show_default=True, help="query-scan: transfers preloaded on the scanned account.")
@click.option("--base-port", default=23100, show_default=True, help="First port of the cluster's range.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def attack(name, duration, history, base_port, as_json) -> None:
    """Attack a fresh local cluster (hostile input) and print what it cost the leader.

    Leader CPU and peak memory, the longest time without a commit of a probe that
    commits every 20 ms, whether an election happened, and the attack's own figures.
    See raft_ledger_chaos/attacks.py for the attacks.
    """
    from raft_ledger_chaos.attacks import run_attack

    result = run_attack(name, duration_s=duration, history=history, base_port=base_port)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"attack {name}")
    table.add_column("measure")
    table.add_column("value", overflow="fold")
    for k, v in result.items():
        table.add_row(k, str(v))
    console.print(table)


@main.command()
@click.option("--duration", default=20.0, show_default=True)
@click.option("--seed", default=1, show_default=True)
@click.option("--out", default=DEFAULT_OUT, show_default=True)
@click.option("--base-port", default=19100, show_default=True, help="First port of the cluster's range.")
def smoke(duration, seed, out, base_port) -> None:
    """The short CI subset (SMOKE_SCENARIOS), `--duration` seconds each; a scenario whose
    requirements are missing here is skipped with a line. Exit 1 if a checker failed."""
    verdicts = _run_many(list(SMOKE_SCENARIOS), lambda n: run_scenario(
        n, seed=seed, duration_s=duration, out=out, unsafe=False, concurrency=4, base_port=base_port), keep_going=True)
    sys.exit(0 if all(v is not False for v in verdicts.values()) else 1)


@main.command()
@click.option("--duration", "duration_text", default=None, help="Time bound of the soak, e.g. 900, 15m, 2h (no run starts after it).")
@click.option("--runs", type=int, default=None, help="Number of runs (with --duration: whichever comes first).")
@click.option("--seed", default=1, show_default=True, help="Seed of the scenario draw; each run gets its own seed from it.")
@click.option("--scenarios", default=None, help="Comma-separated scenarios to draw from (default: all but membership).")
@click.option("--run-duration", default=None, type=float, help="Seconds of faults per run [default: 12].")
@click.option("--out", default=DEFAULT_OUT, show_default=True, help="The soak's directory goes here (its runs inside).")
@click.option("--concurrency", default=4, show_default=True, help="Concurrent bank clients.")
@click.option("--base-port", default=19100, show_default=True, help="First port of the cluster's range.")
def soak(duration_text, runs, seed, scenarios, run_duration, out, concurrency, base_port) -> None:
    """Random scenarios back to back (chaos/soak.py) until --duration or --runs is up; one
    summary.md for all (a row per run, every checker's verdict, the latency plots).
    Exit 0 iff every run's checkers passed."""
    from raft_ledger_chaos import soak as soak_mod
    from raft_ledger_chaos.nemesis import SCENARIOS, missing_requirements
    from raft_ledger_chaos.report import write_summary

    if duration_text is None and runs is None:
        raise click.UsageError("give --duration (e.g. 30m) or --runs N")
    try:
        duration_s = soak_mod.parse_duration(duration_text) if duration_text is not None else None
        requested = [n.strip() for n in scenarios.split(",") if n.strip()] if scenarios else None
        chosen, skipped = soak_mod.choose_scenarios(SCENARIOS, requested, missing_requirements)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    for n, why in skipped.items():
        console.print(f"[yellow]skip {n}[/]: {'; '.join(why)}")
    if not chosen:
        raise click.UsageError("no scenario can run here (see the skip lines above)")
    run_s = run_duration if run_duration is not None else soak_mod.RUN_DURATION_S

    def runner(name, *, seed, duration_s, out, outcome):
        return run_scenario(name, seed=seed, duration_s=duration_s, out=out, unsafe=False, concurrency=concurrency,
                            base_port=base_port, outcome=outcome)

    ok, summary, done = soak_mod.run_soak(duration_s=duration_s, runs=runs, seed=seed, scenarios=chosen,
                                          run_duration_s=run_s, out=out, runner=runner, write_summary=write_summary,
                                          progress=console.print, skipped=skipped)
    console.print(f"soak: {sum(r.passed for r in done)}/{len(done)} runs passed; summary: {summary}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
