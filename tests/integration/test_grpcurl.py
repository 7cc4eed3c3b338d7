"""The README's grpcurl lines, run as written against a real mutual-TLS cluster.

The block under README "### grpcurl" is cut out of the README, its cluster directory
(``data/cluster``) and first validator's address (``127.0.0.1:7101``) replaced by the test
cluster's, and every line run with bash from the repository root, with ``.venv/bin`` first
on PATH (grpcurl as setup.sh installs it, ``ledger-validator``). Each line's output is
checked: reflection lists the two ledger services, health and reflection; describe prints
the service's method signatures and the request message; GetStatus as the operator names this validator and a role; the
member's LookupAccounts returns its own account; the member's ``list`` is refused.
"""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from conftest import running_cluster

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
GRPCURL = os.path.join(VENV_BIN, "grpcurl")
#: First base port probed for this module's cluster (issue 14's helpers use disjoint ranges).
START_PORT = 56_000
#: Bound on one README line (grpcurl's own default dial timeout is 10 s).
LINE_TIMEOUT_S = 60


def readme_grpcurl_lines() -> list[str]:
    """The logical lines (backslash continuations joined) of the first ```bash block after
    the README heading "### grpcurl"."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("\n### grpcurl\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _run(script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=LINE_TIMEOUT_S)


@pytest.mark.skipif(not os.path.exists(GRPCURL), reason="no .venv/bin/grpcurl: run deploy/local/setup.sh (needs go)")
def test_readme_grpcurl_lines_work_against_a_tls_cluster(tmp_path):
    lines = readme_grpcurl_lines()
    assert len(lines) == 9, lines
    with running_cluster(str(tmp_path / "cluster"), START_PORT) as c:
        address = c.addresses["v1"]
        # The README's cluster directory is relative to the repository root; the test's is absolute.
        local = [ln.replace("data/cluster", c.directory).replace("127.0.0.1:7101", address) for ln in lines]
        assignments = [ln for ln in local if re.match(r"^[A-Z_]+=", ln)]
        commands = [ln for ln in local if ln not in assignments]
        assert len(assignments) == 2 and len(commands) == 7
        out = [_run("\n".join([*assignments, cmd])) for cmd in commands]

        services = out[0]
        assert services.returncode == 0, services.stderr
        assert services.stdout.split() == [  # grpcurl sorts them
            "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
            "ledger.v1.AdminService", "ledger.v1.LedgerService"], services.stdout

        describe = out[1]
        assert describe.returncode == 0, describe.stderr
        assert describe.stdout.startswith("ledger.v1.LedgerService is a service:\n")
        assert "rpc LookupAccounts ( .ledger.v1.LookupAccountsRequest ) returns ( .ledger.v1.LookupAccountsResponse );" \
            in describe.stdout
        request = out[2]
        assert request.returncode == 0, request.stderr
        assert "repeated .ledger.v1.UInt128 ids = 1;" in request.stdout, request.stdout

        status = out[3]
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert doc.get("validator_id") == "v1" and doc.get("role") in ("leader", "follower"), status.stdout[:800]

        created = out[4]
        assert created.returncode == 0 and created.stdout.strip() == "ok", (created.stdout, created.stderr)

        lookup = out[5]
        assert lookup.returncode == 0, lookup.stderr
        doc = json.loads(lookup.stdout)
        [account] = doc["accounts"]
        assert account["id"] == {"lo": "1001"} and account["ledger"] == 840 and account["owner"] == "bank-a", doc
        assert int(doc["height"]) >= 1

        refused = out[6]
        assert refused.returncode != 0
        assert "PermissionDenied" in refused.stderr, refused.stderr


def test_readme_grpcurl_block_is_the_one_this_test_runs():
    """Without a cluster: the block names the member's proto path that exists, and every
    grpcurl line uses mutual TLS (a CA, a certificate and a key)."""
    lines = readme_grpcurl_lines()
    assert os.path.exists(os.path.join(ROOT, "proto", "ledger", "v1", "ledger.proto"))
    for ln in lines:
        if ln.startswith("grpcurl "):
            assert re.match(r"grpcurl \$(OP|BANK) ", ln), ln
        elif re.match(r"^[A-Z_]+=", ln):
            assert all(f"-{flag} " in ln for flag in ("cacert", "cert", "key")), ln
