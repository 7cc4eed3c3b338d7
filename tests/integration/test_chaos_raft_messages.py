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
"""
from __future__ import annotations

import glob
import json
import os

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
