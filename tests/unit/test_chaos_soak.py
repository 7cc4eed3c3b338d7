"""The soak mode's pure parts (chaos/soak.py) and its summary (chaos/report.py write_summary).

A soak's runs are real chaos runs (tests/integration/test_chaos_clock.py runs one);
here the loop is driven by a runner that returns verdicts at once, to check the
bounds, the draw, crash handling and the summary's content.
"""
from __future__ import annotations

import os
import time

import pytest

from raft_ledger_chaos import soak
from raft_ledger_chaos.nemesis import SCENARIOS, missing_requirements
from raft_ledger_chaos.report import PLOT_NAME, write_summary


def test_parse_duration():
    assert soak.parse_duration("30m") == 1800.0
    assert soak.parse_duration("90") == 90.0
    assert soak.parse_duration("1.5h") == 5400.0
    assert soak.parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        soak.parse_duration("soon")


def test_draw_replays_from_its_seed_and_ignores_the_order_of_names():
    a = [x for _, x in zip(range(50), soak.draw_runs(7, ["kill-leader", "bandwidth", "mixed"]))]
    b = [x for _, x in zip(range(50), soak.draw_runs(7, ["mixed", "kill-leader", "bandwidth"]))]
    c = [x for _, x in zip(range(50), soak.draw_runs(8, ["mixed", "kill-leader", "bandwidth"]))]
    assert a == b != c
    assert {n for n, _ in a} == {"kill-leader", "bandwidth", "mixed"}
    assert all(1 <= s < 2**31 for _, s in a)
    with pytest.raises(ValueError):
        next(soak.draw_runs(1, []))


def test_choose_scenarios_default_excludes_membership_and_skips_what_is_missing():
    chosen, skipped = soak.choose_scenarios(SCENARIOS, None, lambda s: ["needs root"] if s.name == "clock-jump" else [])
    assert "membership" not in chosen and "kill-leader" in chosen
    assert skipped == {"clock-jump": ["needs root"]}
    chosen, _ = soak.choose_scenarios(SCENARIOS, ["membership", "kill-leader", "membership"], missing_requirements)
    assert chosen == ["membership", "kill-leader"]
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        soak.choose_scenarios(SCENARIOS, ["nope"], missing_requirements)


def test_every_scenario_names_only_known_requirements():
    from raft_ledger_chaos.nemesis import REQUIREMENTS

    for s in SCENARIOS.values():
        assert set(getattr(s, "requires", ())) <= set(REQUIREMENTS), s.name
    assert SCENARIOS["clock-jump"].clock is True


def _runner(calls, fail_on=(), crash_on=()):
    def run(name, *, seed, duration_s, out, outcome):
        calls.append((name, seed))
        n = len(calls)
        if n in crash_on:
            raise RuntimeError("cluster did not start")
        run_dir = os.path.join(out, f"{name}-{n}")
        os.makedirs(run_dir)
        with open(os.path.join(run_dir, "report.md"), "w") as f:
            f.write("# run\n")
        with open(os.path.join(run_dir, PLOT_NAME), "wb") as f:
            f.write(b"\x89PNG")
        ok = n not in fail_on
        outcome.update(report=os.path.join(run_dir, "report.md"), counts={"transfer:ok": 10, "read:ok": 5, "transfer:fail": 2, "transfer:info": 1},
                       checks={"agreement": True, "linearizable": ok, "clock": None},
                       evidence={} if ok else {"linearizable": "no linearization"})
        return ok
    return run


def test_run_soak_runs_the_drawn_sequence_and_writes_the_summary(tmp_path):
    calls = []
    lines = []
    ok, summary, runs = soak.run_soak(duration_s=None, runs=4, seed=3, scenarios=["kill-leader", "bandwidth"],
                                      run_duration_s=5, out=str(tmp_path), runner=_runner(calls),
                                      write_summary=write_summary, progress=lines.append, skipped={"clock-jump": ["no faketime"]})
    assert ok is True and len(runs) == 4
    assert calls == [x for _, x in zip(range(4), soak.draw_runs(3, ["kill-leader", "bandwidth"]))]
    text = open(summary).read()
    assert text.startswith("# Chaos soak: PASS (4/4 runs passed)")
    assert "| run | scenario | seed | faults | took | ok ops | failed ops | unknown | agreement | linearizable | clock | report |" in text
    assert f"| 1 | `{calls[0][0]}` | {calls[0][1]} | 5 s |" in text
    assert "| 15 | 2 | 1 | PASS | PASS | undecided | [report](" in text
    assert "- skipped `clock-jump`: no faketime" in text
    assert text.count(f"/{PLOT_NAME})](") == 4
    assert sum("PASS in" in line for line in lines) == 4


def test_run_soak_fails_on_a_failed_checker_or_a_crash_and_goes_on(tmp_path):
    calls = []
    ok, summary, runs = soak.run_soak(duration_s=None, runs=3, seed=1, scenarios=["kill-leader"], run_duration_s=5,
                                      out=str(tmp_path), runner=_runner(calls, fail_on=(2,), crash_on=(3,)),
                                      write_summary=write_summary, progress=lambda s: None)
    assert ok is False and [r.passed for r in runs] == [True, False, False]
    text = open(summary).read()
    assert text.startswith("# Chaos soak: FAIL (1/3 runs passed)")
    assert "linearizable: no linearization — replay: `python -m raft_ledger_chaos run kill-leader --seed" in text
    assert "RuntimeError: cluster did not start" in text


def test_run_soak_stops_at_its_duration(tmp_path):
    calls = []

    def slow(name, **kw):
        time.sleep(0.3)
        return _runner(calls)(name, **kw)

    started = time.monotonic()
    ok, _, runs = soak.run_soak(duration_s=0.5, runs=None, seed=1, scenarios=["kill-leader"], run_duration_s=5,
                                out=str(tmp_path), runner=slow, write_summary=write_summary, progress=lambda s: None)
    assert ok and len(runs) == 2  # the second starts at 0.3 s < 0.5 s; none after
    assert time.monotonic() - started < 2
    with pytest.raises(ValueError):
        soak.run_soak(duration_s=None, runs=None, seed=1, scenarios=["x"], run_duration_s=1, out=str(tmp_path),
                      runner=slow, write_summary=write_summary)


def test_run_many_skips_a_scenario_missing_a_requirement_and_survives_a_crash(monkeypatch, capsys):
    """`run all` / `smoke` (chaos/cli.py _run_many): a scenario whose requirements are not met
    here is skipped with a line (never run), a crashing run is a FAIL and the next one runs."""
    from raft_ledger_chaos.cli import _run_many
    from raft_ledger_chaos.nemesis import Scenario

    monkeypatch.setitem(SCENARIOS, "needs-x", Scenario("needs-x", "needs what is not here", "kill-leader", requires=("no-such-thing",)))
    ran = []

    def run_one(name):
        ran.append(name)
        if name == "kill-leader":
            raise RuntimeError("cluster did not start")
        return True

    verdicts = _run_many(["needs-x", "kill-leader", "pause-leader"], run_one, keep_going=True)
    assert verdicts == {"needs-x": None, "kill-leader": False, "pause-leader": True}
    assert ran == ["kill-leader", "pause-leader"]
    out = capsys.readouterr().out
    assert "skip needs-x: unknown requirement 'no-such-thing'" in out
    assert "kill-leader crashed: RuntimeError: cluster did not start" in out
    with pytest.raises(RuntimeError):
        _run_many(["kill-leader"], run_one, keep_going=False)
