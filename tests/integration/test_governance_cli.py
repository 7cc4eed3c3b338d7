"""The onboarding workflow from the shell against a running cluster (issue 11 item 6):
``member keygen`` → ``ca sign`` → ``gov propose --add-member`` → ``gov sign`` ×2 →
``gov submit`` → ``gov show``, then the new member transacts with its own key."""
from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
from click.testing import CliRunner

from raft_ledger_client import Account, CreateAccountResult, RetryPolicy
from raft_ledger_node import pki
from raft_ledger_node.cli import main
from raft_ledger_node.localcluster import member_client

pytestmark = pytest.mark.integration


def _run(*args) -> str:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def test_onboarding_from_the_cli(cluster, tmp_path):
    d = cluster.directory
    home = tmp_path / "bank-f-host"
    _run("member", "keygen", "--member", "bank-f", "--out", str(home))
    key = home / "bank-f.k1.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home / "bank-f.tls.key.pem").st_mode) == 0o600

    crt = tmp_path / "bank-f.crt.pem"
    _run("ca", "sign", "--ca-dir", os.path.join(d, "ca"), "--csr", str(home / "bank-f.csr.pem"), "--member", "bank-f",
         "--out", str(crt))
    assert pki.identity_from_certificate(crt.read_bytes()).id == "bank-f"
    # A CSR is signed only for the identity the operator names.
    r = CliRunner().invoke(main, ["ca", "sign", "--ca-dir", os.path.join(d, "ca"), "--csr", str(home / "bank-f.csr.pem"),
                                  "--member", "bank-a", "--out", str(tmp_path / "x.pem")])
    assert r.exit_code == 1 and "expected" in r.output

    proposal = tmp_path / "proposal.json"
    _run("gov", "propose", "--cluster", d, "--add-member", str(home / "bank-f.k1.pub.json"), "--out", str(proposal))
    assert json.loads(proposal.read_text())["base_version"] == 1
    for admin in ("admin-1", "admin-2"):
        _run("gov", "sign", str(proposal), "--member", admin, "--key", os.path.join(d, "members", f"{admin}.pem"))
    assert len(json.loads(proposal.read_text())["approvals"]) == 2
    assert "configuration version 2" in _run("gov", "submit", str(proposal), "--cluster", d)

    shown = _run("gov", "show", "--cluster", d, "--as", "auditor")
    pub = json.loads((home / "bank-f.k1.pub.json").read_text())["public_key"]
    assert "configuration version 2" in shown and "bank-f" in shown and pub in shown.replace("\n", "").replace(" ", "").replace("│", "")
    doc = json.loads(_run("gov", "show", "--cluster", d, "--json"))
    assert doc["version"] == 2 and any(m["id"] == "bank-f" for m in doc["members"])

    # The member's TLS files where member_client finds them, then its first transaction.
    shutil.copy(home / "bank-f.tls.key.pem", os.path.join(d, "members", "bank-f.tls.key.pem"))
    shutil.copy(crt, os.path.join(d, "members", "bank-f.tls.crt.pem"))
    with member_client(d, "bank-f", key_file=str(key), retry=RetryPolicy(deadline_s=20)) as c:
        [res] = c.create_accounts([Account(id=5_000_001, ledger=840, code=1)])
        assert res.result is CreateAccountResult.ok

    # An edited proposal file is refused before anyone signs it.
    doc = json.loads(proposal.read_text())
    doc["summary"] = ["add_member bank-x"]
    proposal.write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["gov", "sign", str(proposal), "--member", "admin-3",
                                  "--key", os.path.join(d, "members", "admin-3.pem")])
    assert r.exit_code == 1 and "do not match" in r.output


def test_rotation_and_revocation_from_the_cli(cluster, tmp_path):
    """The README's key-rotation walkthrough: the member's own files (no copies in the
    cluster directory), a new key k2 added by governance, k1 revoked, and the refusal of
    a k1 signature afterwards is a clear error, not a traceback."""
    d = cluster.directory
    home = tmp_path / "bank-g"
    _run("member", "keygen", "--member", "bank-g", "--out", str(home))
    _run("ca", "sign", "--ca-dir", os.path.join(d, "ca"), "--csr", str(home / "bank-g.csr.pem"), "--member", "bank-g",
         "--out", str(home / "bank-g.tls.crt.pem"))

    def govern(*change):
        p = tmp_path / f"p{len(os.listdir(tmp_path))}.json"
        _run("gov", "propose", "--cluster", d, *change, "--out", str(p))
        for admin in ("admin-1", "admin-3"):
            _run("gov", "sign", str(p), "--member", admin, "--key", os.path.join(d, "members", f"{admin}.pem"))
        return _run("gov", "submit", str(p), "--cluster", d)

    govern("--add-member", str(home / "bank-g.k1.pub.json"))
    tls = ["--tls-key", str(home / "bank-g.tls.key.pem"), "--tls-cert", str(home / "bank-g.tls.crt.pem")]

    def as_bank(key_id, *args):
        return CliRunner().invoke(main, [args[0], args[1], "--cluster", d, "--member", "bank-g", "--key-id", key_id,
                                         "--key-file", str(home / f"bank-g.{key_id}.pem"), *tls, *args[2:]])

    r = as_bank("k1", "member", "create-account", "--id", "5100001", "--ledger", "840")
    assert r.exit_code == 0 and r.output.strip() == "ok", r.output
    _run("member", "keygen", "--member", "bank-g", "--key-id", "k2", "--out", str(home), "--no-tls")
    govern("--add-key", str(home / "bank-g.k2.pub.json"))
    r = as_bank("k2", "member", "create-account", "--id", "5100002", "--ledger", "840")
    assert r.exit_code == 0 and r.output.strip() == "ok", r.output
    govern("--revoke-key", "bank-g:k1")
    r = as_bank("k1", "member", "create-account", "--id", "5100003", "--ledger", "840")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception  # a click error, not a crash
    assert "PermissionDenied" in r.output and "revoked" in r.output
    r = as_bank("k2", "member", "lookup-accounts", "5100001", "5100002", "5100003")
    assert r.exit_code == 0 and "5100001" in r.output and "5100002" in r.output and "5100003" not in r.output
