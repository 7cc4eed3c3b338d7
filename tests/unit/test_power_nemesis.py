"""The power-cut faults of the nemesis (chaos/power.py): who is cut, and that a seed replays.

No cluster and no FUSE: the cuts go to a cluster that records them (the real mount and the real
drill are tests/integration/test_lazyfs.py and tests/integration/test_chaos_power.py).
"""
from __future__ import annotations

import json

from raft_ledger_chaos import power
from raft_ledger_chaos.nemesis import FAULT_KINDS, SCENARIOS, Nemesis


class RecordingCluster:
    """Answers a fixed leader; records power_cut / start_validator / heal calls in order."""

    validator_ids = ["v1", "v2", "v3"]

    def __init__(self, leader: str | None = "v2") -> None:
        self._leader = leader
        self.calls: list[tuple] = []

    def leader(self, timeout_s: float = 0.0):
        return self._leader

    def power_cut(self, vids):
        self.calls.append(("power_cut", tuple(vids)))
        return {v: "ok files_reverted=1 entries_undone=0" for v in vids}

    def start_validator(self, vid):
        self.calls.append(("start_validator", vid))

    def heal(self):
        self.calls.append(("heal",))
        return {}


def _nemesis(name: str, cluster, timeline: str = "/dev/null", duration_s: float = 60.0) -> Nemesis:
    return Nemesis(cluster, SCENARIOS[name], seed=1, duration_s=duration_s, t0_ns=0, timeline_path=timeline)


def test_power_scenarios_mount_lazyfs_and_mixed_never_picks_them():
    assert {n for n, s in SCENARIOS.items() if s.lazyfs} == set(power.POWER_FAULT_KINDS)
    assert not set(FAULT_KINDS) & set(power.POWER_FAULT_KINDS)


def test_each_power_fault_cuts_the_named_role():
    for kind, cut in [("power-cut-leader", ("v2",)), ("power-cut-all", ("v1", "v2", "v3"))]:
        c = RecordingCluster()
        targets, detail = _nemesis(kind, c)._inject(kind, [0.5] * 4)
        assert c.calls == [("power_cut", cut)] and targets == sorted(cut)
        assert sorted(detail["lazyfs"]) == sorted(cut)
    for u in (0.0, 0.49, 0.5, 0.99):
        c = RecordingCluster()
        (target,), detail = _nemesis("power-cut-follower", c)._inject("power-cut-follower", [0.0, u, 0.0, 0.0])
        assert target != "v2" and detail["leader"] == "v2" and c.calls == [("power_cut", (target,))]


def test_repeated_plan_replays_from_the_draw_and_stays_in_bounds():
    assert power.repeated_plan(0.25) == power.repeated_plan(0.25)
    assert power.repeated_plan(0.25) != power.repeated_plan(0.75)
    for u in (0.0, 0.1, 0.5, 0.9):
        plan = power.repeated_plan(u)
        assert power.REPEATED_CUTS[0] <= len(plan) <= power.REPEATED_CUTS[1]
        assert all(power.REPEATED_OFF_S[0] <= s["off_s"] <= power.REPEATED_OFF_S[1] for s in plan)
        assert all(power.REPEATED_GAP_S[0] <= s["gap_s"] <= power.REPEATED_GAP_S[1] for s in plan)


def test_repeated_window_cuts_and_restarts_each_validator_in_turn(tmp_path, monkeypatch):
    # No real waiting: every step of the plan takes 0 s.
    monkeypatch.setattr(power, "REPEATED_OFF_S", (0.0, 0.0))
    monkeypatch.setattr(power, "REPEATED_GAP_S", (0.0, 0.0))
    c = RecordingCluster()
    timeline = tmp_path / "faults.jsonl"
    n = _nemesis("power-cut-repeated", c, str(timeline))
    n._timeline = open(timeline, "a")
    try:
        n._window_locked("power-cut-repeated", [0.3, 0.0, 0.0, 0.0], window_s=5.0)
    finally:
        n._timeline.close()
    plan = power.repeated_plan(0.3)
    cuts = [call[1][0] for call in c.calls if call[0] == "power_cut"]
    starts = [call[1] for call in c.calls if call[0] == "start_validator"]
    assert len(cuts) == len(plan) and starts == cuts  # each cut validator is started again before the next cut
    assert c.calls[-1] == ("heal",)
    events = [json.loads(line) for line in timeline.read_text().splitlines()]
    sub = [(e["event"], e["targets"][0]) for e in events if e["fault"] == "power-cut"]
    assert sub == [x for t in cuts for x in (("start", t), ("end", t))]
    assert [e["event"] for e in events if e["fault"] == "power-cut-repeated"] == ["start", "end"]
