"""Pre-Vote, leader stickiness and CheckQuorum (node/raft/prevote.py) on three real validators.

Real validator processes (pysyncobj 0.3.17 with the adapter, mutual TLS), their Raft
links through a real Toxiproxy (chaos/cluster.py), silent partitions both ways:

* a follower cut off for several election timeouts does not raise the cluster's term
  when it returns: the leader stays and the term is unchanged (Raft thesis §9.6:
  Pre-Vote; without it pysyncobj's follower raises its term at every timeout, SO:640,
  and its first ``request_vote`` deposes the leader, SO:920-923);
* a leader cut off from the majority steps down within about two election timeouts
  although pysyncobj's own ``leaderFallbackTimeout`` is set far longer here (thesis
  §6.2 / §9.6: CheckQuorum), and after the heal the leader the majority elected keeps
  leading in the same term (the old leader's pre-votes changed no term).

Skipped only when the toxiproxy-server binary is missing (``bash deploy/local/setup.sh``).
"""
from __future__ import annotations

import os
import time

import grpc
import pytest

from raft_ledger_chaos.toxi import find_binary

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_binary() is None, reason="toxiproxy-server binary not found: run `bash deploy/local/setup.sh`"),
]

#: pysyncobj's fallback step-down, set far beyond CheckQuorum's so only CheckQuorum can explain a quick one.
FALLBACK_S = 30.0
#: The validators' longest election timeout (config raft_max_timeout_s, the default).
ELECTION_TIMEOUT_MAX_S = 1.4
#: Slack for the status polls and a loaded 2-core machine.
SLACK_S = 1.5
#: How long a partition lasts: several election timeouts.
CUT_S = 6.0
#: After a heal: enough for reconnects (connection_retry_time_s 0.5) and any election.
SETTLE_S = 5.0
LEADER_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    from raft_ledger_chaos.cluster import ChaosCluster

    base = 47_000 + (os.getpid() % 8) * 200
    c = ChaosCluster(str(tmp_path_factory.mktemp("prevote") / "cluster"), base_port=base,
                     config_overrides={"leader_fallback_timeout_s": FALLBACK_S})
    c.start()
    try:
        yield c
    finally:
        c.stop()


def rows(chaos) -> dict[str, tuple[str, int]]:
    """Validator id -> (role, term); unreachable validators left out."""
    return {v.id: (st.role, st.term) for v, st in chaos.status(timeout_s=0.5) if not isinstance(st, grpc.RpcError)}


def stable_leader(chaos) -> tuple[str, int]:
    leader = chaos.leader(timeout_s=LEADER_TIMEOUT_S)
    assert leader is not None, f"no leader within {LEADER_TIMEOUT_S}s: {rows(chaos)}"
    return leader, rows(chaos)[leader][1]


def test_partitioned_follower_does_not_raise_the_term_on_return(chaos):
    leader, term = stable_leader(chaos)
    follower = sorted(set(chaos.addresses) - {leader})[0]
    chaos.partition([{follower}, set(chaos.addresses) - {follower}])
    try:
        time.sleep(CUT_S)
        during = rows(chaos)
        # Its pre-votes reached no one: it stood in no election, so its term did not move.
        assert during[follower][1] == term, during
        assert during[leader] == ("leader", term), during
    finally:
        chaos.heal()
    time.sleep(SETTLE_S)
    after = rows(chaos)
    assert chaos.leader(timeout_s=LEADER_TIMEOUT_S) == leader, after
    assert {t for _, t in after.values()} == {term}, f"the term moved on the return of {follower}: {after}"


def test_cut_off_leader_steps_down_and_the_new_leader_stays_after_heal(chaos):
    old, term = stable_leader(chaos)
    others = set(chaos.addresses) - {old}
    chaos.partition([{old}, others])
    cut_at = time.monotonic()
    try:
        stepped_down = None
        while time.monotonic() - cut_at < FALLBACK_S / 2:
            role = rows(chaos).get(old, ("?", 0))[0]
            if role != "leader":
                stepped_down = time.monotonic() - cut_at
                break
            time.sleep(0.1)
        assert stepped_down is not None, f"{old} still leads {FALLBACK_S / 2}s after the cut: {rows(chaos)}"
        # CheckQuorum: no reply from a majority within raftMaxTimeout, checked every tick.
        assert stepped_down <= 2 * ELECTION_TIMEOUT_MAX_S + SLACK_S, f"stepped down after {stepped_down:.2f}s"
        new = chaos.leader(timeout_s=LEADER_TIMEOUT_S)
        assert new in others, rows(chaos)
        new_term = rows(chaos)[new][1]
        assert new_term > term
        time.sleep(CUT_S)
        # The cut-off old leader stood in no election (no pre-vote majority): its term is the old one.
        assert rows(chaos)[old][1] == term, rows(chaos)
    finally:
        chaos.heal()
    time.sleep(SETTLE_S)
    after = rows(chaos)
    assert chaos.leader(timeout_s=LEADER_TIMEOUT_S) == new, after
    assert {t for _, t in after.values()} == {new_term}, f"a second election after the heal: {after}"
