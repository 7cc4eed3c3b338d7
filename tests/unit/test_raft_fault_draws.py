"""The ``raft-messages`` window's faults replay from the nemesis's draws (chaos/raftproxy.py).

No cluster: ``inject_raft_messages`` is handed a recorder in place of the
cluster's RaftLinks, and ``RaftLinks`` (no proxy started) shows how one window's
seed becomes one generator per link. The proxies themselves run in
tests/integration/test_raftproxy.py and test_chaos_raft_messages.py.
"""
from __future__ import annotations

import pytest

from raft_ledger_chaos.nemesis import FAULT_KINDS, RAFT_FAULT_KINDS, SCENARIOS, Nemesis
from raft_ledger_chaos.raftproxy import (
    NO_FAULTS,
    RAFT_MESSAGES_DELAY,
    RAFT_MESSAGES_DELAY_S_MAX,
    RAFT_MESSAGES_DUPLICATE,
    RAFT_MESSAGES_REPLAY,
    RaftFaults,
    RaftLinks,
    inject_raft_messages,
)


class Recorder:
    def __init__(self) -> None:
        self.faults: list[RaftFaults] = []

    def set_faults(self, faults: RaftFaults) -> None:
        self.faults.append(faults)


class FakeCluster:
    validator_ids = ["v1", "v2", "v3"]

    def __init__(self) -> None:
        self.raft_links = Recorder()


def _windows(seed: int, n: int) -> list[RaftFaults]:
    cluster = FakeCluster()
    nem = Nemesis(cluster, SCENARIOS["raft-messages"], seed=seed, duration_s=60.0, t0_ns=0, timeline_path="/dev/null")
    for w in nem.schedule(n):
        assert w["fault"] == "raft-messages"
        inject_raft_messages(cluster, w["draws"])
    return cluster.raft_links.faults


def test_the_raft_scenarios_exist_need_the_proxy_and_are_not_in_mixed():
    assert set(RAFT_FAULT_KINDS) == {"raft-messages", "raft-stale-replay"}
    for kind in RAFT_FAULT_KINDS:
        assert SCENARIOS[kind].raft_proxy and SCENARIOS[kind].fault == kind
    assert not any(s.raft_proxy for name, s in SCENARIOS.items() if name not in RAFT_FAULT_KINDS)
    assert not set(RAFT_FAULT_KINDS) & set(FAULT_KINDS)  # what mixed chooses from


def test_same_seed_same_message_faults_within_bounds():
    a, b, c = _windows(7, 20), _windows(7, 20), _windows(8, 20)
    assert a == b and a != c
    for f in a:
        assert RAFT_MESSAGES_DUPLICATE[0] <= f.duplicate <= RAFT_MESSAGES_DUPLICATE[1]
        assert RAFT_MESSAGES_DELAY[0] <= f.delay <= RAFT_MESSAGES_DELAY[1]
        assert RAFT_MESSAGES_REPLAY[0] <= f.replay <= RAFT_MESSAGES_REPLAY[1]
        assert f.delay_s_max == RAFT_MESSAGES_DELAY_S_MAX
    assert len({f.seed for f in a}) == len(a)  # every window reseeds the proxies


def test_one_generator_per_link_from_the_window_seed():
    links = RaftLinks("/nonexistent")
    links.faults = RaftFaults(duplicate=0.2, seed=5)
    seeds = [links._link_faults(i).seed for i in range(3)]
    assert seeds == [5_000, 5_001, 5_002]
    assert links._link_faults(0).duplicate == 0.2
    assert links.heal() == {"raft_faults_cleared": 0, "cut_connections_closed": 0} and links.faults == NO_FAULTS


@pytest.mark.parametrize("bad", [-0.1, 1.1])
def test_fault_probabilities_are_bounded(bad):
    with pytest.raises(AssertionError):
        RaftFaults(duplicate=bad)
