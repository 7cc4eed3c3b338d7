"""``ledger-validator ca init`` and ``ca issue-validator`` (deploy/README.md, "Certificates
for a multi-host cluster"): the CA and validator certificates they write are what the
validators and genesis expect, private keys are 0600, nothing is overwritten."""
from __future__ import annotations

import os

from click.testing import CliRunner
from cryptography import x509

from raft_ledger_node import pki
from raft_ledger_node.cli import main as cli


def test_ca_init_then_issue_validator_writes_a_pinned_validator_certificate(tmp_path):
    ca, out = str(tmp_path / "ca"), str(tmp_path / "v1")
    r = CliRunner().invoke(cli, ["ca", "init", "--ca-dir", ca, "--name", "acme CA"])
    assert r.exit_code == 0, r.output
    assert os.stat(os.path.join(ca, "ca.key.pem")).st_mode & 0o777 == 0o600
    r = CliRunner().invoke(cli, ["ca", "issue-validator", "--ca-dir", ca, "--id", "v1", "--out-dir", out,
                                 "--host", "validator-1.example.net", "--host", "10.0.1.11"])
    assert r.exit_code == 0, r.output
    with open(os.path.join(out, "tls.crt.pem"), "rb") as f:
        cert = f.read()
    assert os.stat(os.path.join(out, "tls.key.pem")).st_mode & 0o777 == 0o600
    assert pki.identity_from_certificate(cert) == pki.Identity("validator", "v1")
    assert r.stdout.strip().splitlines()[-1] == pki.certificate_sha256(cert).hex()  # the genesis pin
    c = x509.load_pem_x509_certificate(cert)
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["validator-1.example.net"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.1.11"]
    with open(os.path.join(ca, "ca.crt.pem"), "rb") as f:
        c.verify_directly_issued_by(x509.load_pem_x509_certificate(f.read()))


def test_ca_commands_never_overwrite(tmp_path):
    ca, out = str(tmp_path / "ca"), str(tmp_path / "v1")
    assert CliRunner().invoke(cli, ["ca", "init", "--ca-dir", ca]).exit_code == 0
    with open(os.path.join(ca, "ca.key.pem"), "rb") as f:
        key = f.read()
    r = CliRunner().invoke(cli, ["ca", "init", "--ca-dir", ca])
    assert r.exit_code == 1 and "already" in r.output
    with open(os.path.join(ca, "ca.key.pem"), "rb") as f:
        assert f.read() == key
    args = ["ca", "issue-validator", "--ca-dir", ca, "--id", "v1", "--host", "h", "--out-dir", out]
    assert CliRunner().invoke(cli, args).exit_code == 0
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "exists" in r.output
    r = CliRunner().invoke(cli, ["ca", "issue-validator", "--ca-dir", ca, "--id", "v/1", "--host", "h", "--out-dir", out])
    assert r.exit_code == 2
