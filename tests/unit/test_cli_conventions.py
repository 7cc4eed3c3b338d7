"""CLI conventions (issue 14): the exit codes of node/cli/common.py's ExitCode, listed in
the main group's --help; --json on the read commands; `status --watch` with every
validator down (rows say so, the watch ends after --count refreshes, exit 0); and where
an interrupted remote audit export resumes (node/audit.py resume_point)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from raft_ledger_node.audit import resume_point, verify_export
from raft_ledger_node.cli import main
from raft_ledger_node.cli.common import ExitCode
from raft_ledger_node.localcluster import init_cluster

#: Ports written into the generated (never started) cluster: nothing listens there.
BASE_PORT = 52_000


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("conv") / "cluster")
    init_cluster(d, 3, ["bank-a", "bank-b"], "127.0.0.1", BASE_PORT)
    return d


def test_the_main_help_lists_every_exit_code():
    out = CliRunner().invoke(main, ["--help"]).output
    for code in ExitCode:
        assert f"  {code.value}  " in out, out


@pytest.mark.parametrize("args", [
    ["status", "--cluster", "/nonexistent/cluster"],
    ["status", "--cluster", "/nonexistent/cluster", "--json"],
    ["status", "--count", "2"],
    ["audit", "export", "--remote", "--cluster", "/nonexistent/cluster", "--out", "/tmp/never.jsonl"],
    ["audit", "export", "--from-height", "3", "--data-dir", "/tmp", "--out", "/tmp/never.jsonl"],
    ["member", "lookup-accounts", "--cluster", "/nonexistent/cluster", "--json", "1"],
])
def test_usage_and_configuration_errors_exit_2(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == ExitCode.USAGE, r.output


def test_status_watch_with_every_validator_down_shows_down_rows_and_exits_0(cluster_dir):
    r = CliRunner().invoke(main, ["status", "--cluster", cluster_dir, "--watch", "--count", "2", "--interval", "0.2",
                                  "--json"])
    assert r.exit_code == 0, r.output
    frames = [json.loads(line) for line in r.output.splitlines()]
    assert len(frames) == 2
    for f in frames:
        assert [v["validator"] for v in f["validators"]] == ["v1", "v2", "v3"]
        assert {v["error"] for v in f["validators"]} <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    table = CliRunner().invoke(main, ["status", "--cluster", cluster_dir, "--watch", "--count", "1"])
    assert table.exit_code == 0 and table.output.count("down (") == 3 and "refresh 1/1" in table.output


def test_verify_export_json_reports_failures_with_exit_1(cluster_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"height": 1}\n')
    r = CliRunner().invoke(main, ["audit", "verify-export", str(bad), "--genesis", f"{cluster_dir}/genesis.json",
                                  "--json"])
    assert r.exit_code == ExitCode.ERROR
    rep = json.loads(r.stdout)
    assert rep["verified"] is False and rep["failures"] == ["the export holds no checkpoint line"]


def test_an_export_of_no_transactions_verifies_empty():
    rep = verify_export(['{"checkpoint": null}'], validators=[], origin="o", member_keys={})
    assert rep.failure is None and rep.transactions == 0


def test_resume_point_refetches_the_last_block():
    lines = [
        '{"checkpoint": "n1", "height": 1, "tree_size": 2}',
        '{"height": 1, "leaf_index": 0}', '{"height": 1, "leaf_index": 1}',
        '{"checkpoint": "n2", "height": 2, "tree_size": 4}',
        '{"height": 2, "leaf_index": 2}',
        '{"height": 2, "le',  # cut mid-write
    ]
    assert resume_point(lines) == (3, 2)
    assert resume_point(lines[:3]) == (0, 1)
    assert resume_point([]) == (0, 1)
