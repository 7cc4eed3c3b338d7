"""The nemesis's schedule and fault choices replay from the seed (chaos/nemesis.py).

No cluster, no clock: the schedule is drawn without waiting, and each fault is
injected into a fake cluster that records the calls (the real one is exercised
by tests/integration/test_chaos_cluster.py). Jepsen's nemeses are seeded the
same way, so that a failing run replays.
"""
from __future__ import annotations

import signal

import pytest

from raft_ledger_chaos.nemesis import FAULT_KINDS, QUIET_S, SCENARIOS, WINDOW_S, Nemesis

REQUIRED = {
    "partition-leader", "partition-follower", "partition-majority", "one-way-cut", "latency-jitter", "bandwidth",
    "reset-peer", "kill-leader", "kill-follower", "pause-leader", "restart-all", "mixed",
}


class FakeCluster:
    """Records fault calls; ``leader()`` answers a fixed validator (or None)."""

    validator_ids = ["v1", "v2", "v3"]

    def __init__(self, leader: str | None = "v2") -> None:
        self._leader = leader
        self.calls: list[tuple] = []

    def leader(self, timeout_s: float = 0.0):
        return self._leader

    def __getattr__(self, name):
        if name in ("partition", "cut_one_way", "latency", "bandwidth", "reset_peer", "kill", "pause", "restart_all", "heal",
                    "power_cut", "start_validator", "fill_disk", "set_clock"):
            return lambda *a, **kw: self.calls.append((name, a, tuple(sorted(kw.items()))))
        raise AttributeError(name)


def nemesis(scenario: str, seed: int, cluster=None) -> Nemesis:
    return Nemesis(cluster or FakeCluster(), SCENARIOS[scenario], seed=seed, duration_s=60.0, t0_ns=0, timeline_path="/dev/null")


def injected(scenario: str, seed: int, windows: int, leader: str | None = "v2") -> list:
    n = nemesis(scenario, seed, FakeCluster(leader))
    out = []
    for w in n.schedule(windows):
        targets, detail = n._inject(w["fault"], w["draws"])
        out.append((w["fault"], targets, detail))
    return out, n.cluster.calls


def test_every_required_scenario_exists():
    assert REQUIRED <= set(SCENARIOS)
    assert set(FAULT_KINDS) == REQUIRED - {"mixed"}


def test_same_seed_same_schedule_and_choices():
    for name in SCENARIOS:
        assert nemesis(name, 7).schedule(20) == nemesis(name, 7).schedule(20)
        if SCENARIOS[name].raft_proxy:
            continue  # injects through a real RaftProxy: tests/unit/test_raft_fault_draws.py, tests/integration
        assert injected(name, 7, 20) == injected(name, 7, 20)
    assert nemesis("mixed", 7).schedule(20) != nemesis("mixed", 8).schedule(20)


def test_periods_within_bounds_and_mixed_uses_several_kinds():
    windows = nemesis("mixed", 3).schedule(200)
    assert all(QUIET_S[0] <= w["quiet_s"] <= QUIET_S[1] and WINDOW_S[0] <= w["window_s"] <= WINDOW_S[1] for w in windows)
    assert {w["fault"] for w in windows} == set(FAULT_KINDS)


@pytest.mark.parametrize(
    "kind, expected_calls, targets",
    [
        ("partition-leader", [("partition", ([{"v2"}, {"v1", "v3"}],), ())], ["v2"]),
        ("partition-majority", [("partition", ([{"v1"}, {"v2"}, {"v3"}],), ())], ["v1", "v2", "v3"]),
        ("one-way-cut", [("cut_one_way", ("v2", "v1"), ()), ("cut_one_way", ("v2", "v3"), ())], ["v2"]),
        ("kill-leader", [("kill", ("v2", signal.SIGKILL), ())], ["v2"]),
        ("pause-leader", [("pause", ("v2",), ())], ["v2"]),
        ("restart-all", [("restart_all", (), ())], ["v1", "v2", "v3"]),
    ],
)
def test_faults_hit_the_named_roles(kind, expected_calls, targets):
    n = nemesis(kind, 1)
    got_targets, _ = n._inject(kind, [0.5] * 4)
    assert n.cluster.calls == expected_calls
    assert got_targets == targets


def test_follower_faults_never_hit_the_leader():
    for u in (0.0, 0.49, 0.5, 0.99):
        for kind in ("partition-follower", "kill-follower", "disk-full"):
            n = nemesis(kind, 1)
            (target,), detail = n._inject(kind, [0.0, u, 0.0, 0.0])
            assert target != "v2" and detail == {"leader": "v2"}


def test_parameters_come_from_the_draws():
    n = nemesis("latency-jitter", 1)
    _, detail = n._inject("latency-jitter", [0.0, 1.0, 1.0, 0.0])
    assert detail == {"latency_ms": 250, "jitter_ms": 125}
    assert n.cluster.calls == [("latency", (250, 125), ())]
    _, detail = n._inject("bandwidth", [0.0, 0.0, 0.0, 0.0])
    assert detail == {"rate_kb": 4}
    _, detail = n._inject("reset-peer", [0.0, 0.5, 0.0, 0.0])
    assert detail == {"leader": "v2", "timeout_ms": 500}
    assert n.cluster.calls[-1] == ("reset_peer", (["v2"],), (("timeout_ms", 500),))


def test_unknown_leader_falls_back_to_a_seeded_pick():
    a, _ = injected("kill-leader", 5, 10, leader=None)
    b, _ = injected("kill-leader", 5, 10, leader=None)
    assert a == b
    assert all(detail == {"leader": None} for _, _, detail in a)
