"""Power loss in the chaos suite (chaos/power.py): a real power-cut drill, with and without the fixes.

A real 3-validator mutual-TLS cluster behind a real Toxiproxy, each validator's data directory
on a real LazyFS FUSE mount (chaos/lazyfs.py), the bank workload and Porcupine. The drill cuts
the power of all three validators at the same instant (``power-cut-all``, seed 1): with the
adapter's fixes every checker passes; with ``--unsafe`` (durable_journal and raft_fixes off,
chaos/cluster.py UNSAFE_CONFIG) the journal was never msynced nor its directory fsynced, so the
acknowledged transfers are gone and the acknowledged-present checker fails.
"""
from __future__ import annotations

import glob
import json
import os

import pytest

from raft_ledger_chaos import power, toxi

pytestmark = pytest.mark.integration

#: Seconds of faults per run: seed 1 opens one power-cut window 3.8 s in.
POWER_DURATION_S = float(os.environ.get("CHAOS_POWER_DURATION_S", "12"))
BASE_PORT = 41000


def _skip_reason() -> str | None:
    if toxi.find_binary() is None:
        return "toxiproxy-server not installed: run `bash deploy/local/setup.sh` (needs Go)"
    return power.unavailable_reason()


def _run(tmp_path, *, unsafe: bool):
    from raft_ledger_chaos import checkers
    from raft_ledger_chaos.cli import run_scenario
    from raft_ledger_chaos.history import read_history

    out = tmp_path / ("unsafe" if unsafe else "safe")
    ok = run_scenario("power-cut-all", seed=1, duration_s=POWER_DURATION_S, out=str(out), unsafe=unsafe,
                      concurrency=3, base_port=BASE_PORT)
    (run_dir,) = glob.glob(str(out / "power-cut-all-seed1-*"))
    with open(os.path.join(run_dir, "faults.jsonl")) as f:
        faults = [json.loads(line) for line in f]
    with open(os.path.join(run_dir, "final_state.json")) as f:
        final_state = json.load(f)
    records = list(read_history(os.path.join(run_dir, "history.jsonl")))
    # Nothing left mounted: stop() unmounted every validator's LazyFS.
    assert not [d for d in glob.glob(os.path.join(run_dir, "cluster", "v*", "data")) if os.path.ismount(d)]
    return ok, faults, checkers.check_acknowledged_present(records, final_state), records


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_power_cut_all_passes_with_the_fixes_and_loses_acknowledged_transfers_without(tmp_path):
    ok, faults, acknowledged, records = _run(tmp_path, unsafe=False)
    cuts = [e for e in faults if e["event"] == "start" and e["fault"] == "power-cut-all"]
    assert cuts, "the seed opened no power-cut window"
    # The cut really dropped unsynced data on every validator.
    assert all(reply.startswith("ok files_reverted=") for reply in cuts[0]["detail"]["lazyfs"].values())
    assert sorted(cuts[0]["detail"]["lazyfs"]) == ["v1", "v2", "v3"]
    assert any(r["f"] == "transfer" and r["type"] == "ok" for r in records)
    assert acknowledged.passed, acknowledged.evidence
    assert ok, "a checker failed with the fixes on"

    ok, _, acknowledged, _ = _run(tmp_path, unsafe=True)
    assert not ok, "every checker passed with --unsafe: the power cut cannot tell the fixes apart"
    assert acknowledged.passed is False, acknowledged.evidence
    assert "missing on" in acknowledged.evidence
