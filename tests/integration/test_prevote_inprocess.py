"""Pre-Vote's escape hatches on the real pysyncobj, in one process (node/raft/prevote.py).

Three :class:`~raft_ledger_node.raft.durable.DurableReplica` on 127.0.0.1 (the
validators' journal and transport, plaintext links), each with its ElectionGuard:

* a leadership transfer (pysyncobj's TimeoutNow, used when governance removes the
  leader) still elects at once: the transferee skips the pre-vote and its vote requests
  carry ``transfer``, so voters in the old leader's lease grant them (Raft thesis §3.10;
  etcd's ``campaignTransfer``);
* a voter whose term got ahead of the leader's while the others stayed in the lease
  (here: its guard switched off for one election, the disruptive pysyncobj behaviour)
  does not stay out of the cluster: its vote requests are dropped in the lease, but its
  answer to the leader's lower-term AppendEntries (``TERM_NOTICE``) makes the leader step
  down, and the next election takes all three in one term (etcd's
  ``TestFreeStuckCandidateWithCheckQuorum``).
"""
from __future__ import annotations

import time

import pytest

from raft_ledger_node.localcluster import reserve_ports
from raft_ledger_node.raft.conf import make_conf
from raft_ledger_node.raft.durable import DurableReplica

pytestmark = pytest.mark.integration

#: A first leader on a loaded machine (election timeouts 0.4–1.4 s).
LEADER_TIMEOUT_S = 20.0
#: A transfer: one round trip and an election; generous for a loaded 2-core machine.
TRANSFER_TIMEOUT_S = 5.0
#: The stuck voter back in one term with the others: a notice, a step-down, a pre-vote, an election.
REJOIN_TIMEOUT_S = 15.0


@pytest.fixture
def replicas(tmp_path):
    with reserve_ports([0, 1, 2], start=47_600, step=10) as ports:
        addrs = [f"127.0.0.1:{p}" for p in ports.ports]
        reps = []
        try:
            for i, addr in enumerate(addrs):
                d = tmp_path / f"n{i}"
                d.mkdir()
                conf = make_conf(journal_file=str(d / "journal"), full_dump_file=str(d / "dump"), password="test-pw")
                reps.append(DurableReplica(addr, [a for a in addrs if a != addr], conf))
            yield reps
        finally:
            for r in reps:
                r.destroy()


def wait_for(predicate, timeout_s: float, what: str, describe):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} within {timeout_s}s: {describe()}")
        time.sleep(0.02)


def states(reps) -> list[tuple[str, str, int]]:
    return [(r.selfNode.address, r.status().role, r.status().term) for r in reps]


def one_leader(reps):
    leaders = [r for r in reps if r.is_leader()]
    return leaders[0] if len(leaders) == 1 else None


def test_a_leadership_transfer_elects_at_once_through_the_lease(replicas):
    old = wait_for(lambda: one_leader(replicas), LEADER_TIMEOUT_S, "a leader", lambda: states(replicas))
    term = old.status().term
    time.sleep(0.5)  # the followers are in its lease now
    won_before = [r._election_guard.pre_votes_won for r in replicas]
    old.transferLeadership(None, callback=lambda res, err: None)
    new = wait_for(lambda: (lambda l: l if l is not None and l is not old else None)(one_leader(replicas)),
                   TRANSFER_TIMEOUT_S, "a new leader after the transfer", lambda: states(replicas))
    assert new.status().term == term + 1, states(replicas)
    # No pre-vote round was needed, and no voter refused the transferee's vote request in the lease.
    assert [r._election_guard.pre_votes_won for r in replicas] == won_before
    assert all(r._election_guard.votes_refused_in_lease == 0 for r in replicas), states(replicas)


def test_a_voter_ahead_in_term_is_taken_back_in(replicas):
    leader = wait_for(lambda: one_leader(replicas), LEADER_TIMEOUT_S, "a leader", lambda: states(replicas))
    term = leader.status().term
    stuck = next(r for r in replicas if r is not leader)
    guard = stuck._election_guard
    # One election the pysyncobj way: no pre-vote, the term raised at once (SO:633-645).
    stuck._election_guard = None

    def force_election():
        # Again until it takes: a heartbeat handled in the same tick resets the timer (SO:945-951).
        stuck._SyncObj__raftElectionDeadline = 0
        return stuck.status().term > term

    wait_for(force_election, LEADER_TIMEOUT_S, "the voter raised its term", lambda: states(replicas))
    stuck._election_guard = guard
    # Its vote requests reached two voters in the lease and were dropped, yet it is not left out.
    wait_for(lambda: (lambda l: l is not None and len({t for _, _, t in states(replicas)}) == 1)(one_leader(replicas)),
             REJOIN_TIMEOUT_S, "one leader and one term on all three", lambda: states(replicas))
    assert one_leader(replicas).status().term > term
    # The leader stepped down because the voter told it its term, not by CheckQuorum.
    assert sum(r._election_guard.votes_refused_in_lease for r in replicas) >= 1, states(replicas)
    assert leader._election_guard.terms_adopted >= 1, states(replicas)
