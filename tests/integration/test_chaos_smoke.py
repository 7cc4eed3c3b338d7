"""The chaos suite's CI smoke run: a few scenarios, short, every checker must pass.

A real Toxiproxy server on every validator link, a real 3-validator cluster,
the bank workload and Porcupine (chaos/). The full drill is
`python -m raft_ledger_chaos run all --duration 60` (README).
"""
from __future__ import annotations

import os

import pytest

from raft_ledger_chaos import toxi
from raft_ledger_chaos.cli import SMOKE_SCENARIOS

pytestmark = pytest.mark.integration

SMOKE_DURATION_S = float(os.environ.get("CHAOS_SMOKE_DURATION_S", "15"))


@pytest.mark.skipif(toxi.find_binary() is None, reason="toxiproxy-server not installed: run `bash deploy/local/setup.sh` (needs Go)")
@pytest.mark.parametrize("scenario", SMOKE_SCENARIOS)
def test_chaos_smoke(scenario, tmp_path):
    from raft_ledger_chaos.cli import run_scenario
    from raft_ledger_chaos.nemesis import SCENARIOS, missing_requirements

    missing = missing_requirements(SCENARIOS[scenario])
    if missing:
        pytest.skip(f"{scenario}: " + "; ".join(missing))

    assert run_scenario(
        scenario, seed=7, duration_s=SMOKE_DURATION_S, out=str(tmp_path), unsafe=False, concurrency=3, base_port=25100
    ), f"a checker failed: see {tmp_path}/*/report.md"
