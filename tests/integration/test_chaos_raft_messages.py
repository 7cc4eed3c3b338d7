"""The message-level Raft scenarios of the chaos suite (issue 15 item 2), run as an SRE runs them.

``python -m raft_ledger_chaos run raft-stale-replay|raft-messages``: a real
3-validator mutual-TLS cluster whose every link is validator -> RaftProxy ->
Toxiproxy -> validator (chaos/raftproxy.py ``RaftLinks``, the proxy presenting
the dialled validator's own certificate), the bank workload, the seeded nemesis
and every checker, through ``run_scenario`` (chaos/cli.py).

* ``raft-stale-replay`` is the drill that can fail: with ``--unsafe``
  (``raft_fixes`` off) pysyncobj truncates matching entries on a stale
  AppendEntries (SO:991-1000), against Raft §5.3 receiver rule 3 (truncate only on
  a conflict), so the new majority lacks acknowledged transfers and the
  ``acknowledged-present`` checker fails; with the fixes every checker passes.
* ``raft-messages``: duplicated, delayed, reordered and replayed AppendEntries and
  replies (§5.3: all no-ops for a follower) lose nothing with the fixes.
* The chaining itself: the configs dial the RaftProxies, a Toxiproxy partition
  still acts under the message faults, heal clears both.
"""
from __future__ import annotations

import glob
import json
import os
import time

import grpc
import pytest

from raft_ledger_chaos import checkers, toxi

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(toxi.find_binary() is None, reason="toxiproxy-server not installed: run `bash deploy/local/setup.sh`"),
]

SEED = 1
#: Seconds of faults: one window (quiet 3-6 s, then the strike).
DURATION_S = 10.0
BASE_PORT = 43_200
#: The unsafe run's validators diverge: the final read stops waiting for one head sooner.
UNSAFE_CONVERGE_TIMEOUT_S = 15.0


def _run(scenario: str, out: str, *, unsafe: bool) -> tuple[bool, dict]:
    from raft_ledger_chaos.cli import run_scenario

    ok = run_scenario(scenario, seed=SEED, duration_s=DURATION_S, out=out, unsafe=unsafe, concurrency=3,
                      base_port=BASE_PORT, converge_timeout_s=UNSAFE_CONVERGE_TIMEOUT_S if unsafe else 60.0)
    [run_dir] = glob.glob(os.path.join(out, f"{scenario}-seed{SEED}-*"))
    with open(os.path.join(run_dir, "final_state.json")) as f:
        final_state = json.load(f)
    with open(os.path.join(run_dir, "faults.jsonl")) as f:
        faults = [json.loads(line) for line in f]
    history = os.path.join(run_dir, "history.jsonl")
    logs = "".join(open(p).read() for p in glob.glob(os.path.join(run_dir, "cluster", "v*", "validator.log")))
    with open(os.path.join(run_dir, "raft_proxy.json")) as f:
        stats = json.load(f)  # what the proxies did, summed over the links
    return ok, {"run_dir": run_dir, "final_state": final_state, "faults": faults, "history": history, "logs": logs,
                "stats": stats}


def test_stale_replay_fails_a_checker_unsafe_and_passes_every_checker_with_the_fixes(tmp_path):
    # The unsafe run first: the drill must be able to fail on the bug it exists for.
    ok, run = _run("raft-stale-replay", str(tmp_path / "unsafe"), unsafe=True)
    [start] = [e for e in run["faults"] if e["event"] == "start"]
    assert "replayed" in start["detail"], start  # the strike happened: a stale AppendEntries was replayed
    assert run["stats"]["strikes"] == 1 and run["stats"]["undecodable"] == 0, run["stats"]
    assert "Raft links are PLAINTEXT" not in run["logs"]  # the proxy sat inside the pinned mutual TLS
    assert "truncating already-applied log entries" in run["logs"]
    assert not ok, run["run_dir"]
    lost = checkers.check_acknowledged_present(run["history"], run["final_state"])
    assert lost.passed is False and "missing on" in lost.evidence, lost

    ok, run = _run("raft-stale-replay", str(tmp_path / "fixed"), unsafe=False)
    [start] = [e for e in run["faults"] if e["event"] == "start"]
    assert "replayed" in start["detail"], start
    assert "truncating already-applied log entries" not in run["logs"]
    assert ok, f"a checker failed with the fixes on: see {run['run_dir']}/report.md"


def test_duplicated_delayed_replayed_append_entries_pass_every_checker_with_the_fixes(tmp_path):
    ok, run = _run("raft-messages", str(tmp_path), unsafe=False)
    [start] = [e for e in run["faults"] if e["event"] == "start"]
    assert start["detail"]["duplicate"] > 0 and start["detail"]["replay"] > 0, start
    st = run["stats"]
    assert st["undecodable"] == 0 and st["unknown_diallers"] == 0, st
    assert st["duplicated"].get("append_entries", 0) >= 5 and st["duplicated"].get("next_node_idx", 0) >= 5, st
    assert st["delayed"].get("append_entries", 0) >= 5 and st["replayed"] >= 5, st
    assert ok, f"a checker failed: see {run['run_dir']}/report.md"


#: A new leader after the old one is cut off (election 0.4-1.4 s, step-down 2 s), on a loaded machine.
ELECTION_TIMEOUT_S = 15.0
CONVERGE_TIMEOUT_S = 30.0


def _until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout_s}s"
        time.sleep(0.1)


def _heads(c) -> set:
    rows = c.status(timeout_s=0.5)
    if any(isinstance(st, grpc.RpcError) for _, st in rows):
        return set()
    return {(st.head.height, st.head.hash) for _, st in rows}


def test_the_raft_proxy_is_chained_in_front_of_toxiproxy_and_both_fault_layers_act(tmp_path):
    """validator -> RaftProxy -> Toxiproxy -> validator: the configs dial the RaftProxies,
    message faults and a Toxiproxy partition of the leader act together, and heal clears both
    (Raft §5.2: the majority elects a new leader; after heal one head everywhere)."""
    from raft_ledger_chaos.cluster import ChaosCluster
    from raft_ledger_chaos.raftproxy import RaftFaults
    from raft_ledger_client import Account, RetryPolicy
    from raft_ledger_node.localcluster import member_client

    c = ChaosCluster(str(tmp_path / "cluster"), base_port=BASE_PORT, raft_proxy=True)
    c.start()
    try:
        links = c.raft_links
        assert sorted(links.proxies) == sorted(c.links)  # one RaftProxy per Toxiproxy link
        for name, link in c.links.items():
            with open(os.path.join(c.directory, link["dialer"], "config.json")) as f:
                dial = json.load(f)["raft_peer_dial"]
            p = links.proxies[name]
            assert dial[p.raft_address] == p.listen and p.upstream == link["listen"], (name, dial, link)
        # replay=1.0: every AppendEntries after a link's first is followed by a stale one, so
        # the replay layer acts however few messages a loaded machine sends in the window.
        c.raft_links.set_faults(RaftFaults(duplicate=0.3, delay=0.3, replay=1.0, delay_s_max=0.2, seed=3))
        old = c.leader(timeout_s=ELECTION_TIMEOUT_S)
        assert old is not None
        c.partition([{old}])
        _until(lambda: (lambda L: L if L not in (None, old) else None)(c.leader(timeout_s=0)),
                     ELECTION_TIMEOUT_S, f"a leader other than {old}")
        with member_client(c.directory, "bank-a", retry=RetryPolicy(deadline_s=ELECTION_TIMEOUT_S, attempt_timeout_s=2.0)) as client:
            assert [r.name for r in client.create_accounts([Account(id=i, ledger=840, code=1) for i in (1, 2, 3)])] == ["ok"] * 3
        healed = c.heal()
        assert healed["raft_faults_cleared"] == len(c.links) and healed["bounced"], healed
        assert all(t == [] for t in c.toxics().values())
        _until(lambda: len(_heads(c)) == 1 and min(h for h, _ in _heads(c)) > 0, CONVERGE_TIMEOUT_S, "one head after heal")
        st = links.stats()
        assert st["undecodable"] == 0 and st["unknown_diallers"] == 0, st
        assert st["duplicated"].get("append_entries", 0) > 0 and st["replayed"] > 0, st
    finally:
        c.stop()
    assert c.raft_links is None and c.pids == {}
