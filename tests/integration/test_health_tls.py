"""Health checking under mutual TLS (issue 11; deploy/README.md "Health checking").

A validator's own certificate, pinned in genesis, may call ``grpc.health.v1.Health``
and nothing else (node/api/authz.py): through the real gRPC API of a running TLS
cluster it gets SERVING from Health and PERMISSION_DENIED from every Ledger, Admin
and reflection method; a validator certificate of the cluster CA that is not the
pinned one gets nothing. ``ledger-validator health --config`` (the exec probe of the
StatefulSet and the container HEALTHCHECK) exits 0 on SERVING and 1 otherwise.
"""
from __future__ import annotations

import json
import os
import time
import subprocess
import sys

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
from raft_ledger_node import pki
from raft_ledger_node.cli import main as cli

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _validator_channel(c, target: str, key: bytes, cert: bytes) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=c.tls("bank-a").ca_pem, private_key=key,
                                         certificate_chain=cert)
    return grpc.secure_channel(c.addresses[target], creds)


def _own(c, vid: str) -> tuple[bytes, bytes]:
    d = os.path.join(c.directory, vid)
    return _read(os.path.join(d, "tls.key.pem")), _read(os.path.join(d, "tls.crt.pem"))


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def test_a_validators_own_certificate_gets_serving_from_health(cluster_module):
    c = cluster_module
    with _validator_channel(c, "v1", *_own(c, "v1")) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        # The validator refreshes its health status periodically (node/main.py): right
        # after the cluster is ready it may still say NOT_SERVING for a moment.
        deadline = time.monotonic() + 10
        while stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status != SERVING and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
        assert stub.Check(health_pb2.HealthCheckRequest(service="ledger.v1.LedgerService"), timeout=5).status == SERVING


@pytest.mark.parametrize("name, call", [
    ("Ledger/GetHead", lambda ch: pb_grpc.LedgerServiceStub(ch).GetHead(pb.GetHeadRequest(), timeout=5)),
    ("Ledger/LookupAccounts", lambda ch: pb_grpc.LedgerServiceStub(ch).LookupAccounts(pb.LookupAccountsRequest(), timeout=5)),
    ("Ledger/Submit", lambda ch: pb_grpc.LedgerServiceStub(ch).Submit(pb.SubmitRequest(), timeout=5)),
    ("Admin/GetStatus", lambda ch: pb_grpc.AdminServiceStub(ch).GetStatus(pb.GetStatusRequest(), timeout=5)),
    ("ServerReflection", lambda ch: list(reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))),
])
def test_a_validators_certificate_is_refused_everything_but_health(cluster_module, name, call):
    c = cluster_module
    with _validator_channel(c, "v1", *_own(c, "v1")) as ch:
        assert _code(lambda: call(ch)) == grpc.StatusCode.PERMISSION_DENIED, name


def test_a_validators_certificate_may_read_the_governed_configuration(cluster_module):
    # A new validator learns the current validator set from it before it joins as a
    # learner (node/main.py _current_configuration); nothing else of the Ledger API.
    c = cluster_module
    with _validator_channel(c, "v1", *_own(c, "v1")) as ch:
        resp = pb_grpc.LedgerServiceStub(ch).GetConfiguration(pb.GetConfigurationRequest(), timeout=5)
    assert resp.version >= 1 and '"validators"' in resp.configuration_json


def test_a_validator_certificate_that_is_not_the_pinned_one_gets_no_health(cluster_module):
    # Same CA, same identity spiffe://ledger/validator/v1, but a new key: not the pin in genesis.
    c = cluster_module
    ca_dir = os.path.join(c.directory, "ca")
    key, cert = pki.issue_certificate(_read(os.path.join(ca_dir, "ca.key.pem")), _read(os.path.join(ca_dir, "ca.crt.pem")),
                                      kind="validator", identity="v1", hosts=("127.0.0.1",))
    with _validator_channel(c, "v1", key, cert) as ch:
        e = _code(lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5))
        assert e == grpc.StatusCode.PERMISSION_DENIED


def test_health_cli_exits_0_on_serving(cluster_module):
    r = CliRunner().invoke(cli, ["health", "--config", os.path.join(cluster_module.directory, "v1", "config.json")])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "SERVING"
    r = CliRunner().invoke(cli, ["health", "--config", os.path.join(cluster_module.directory, "v2", "config.json"),
                                 "--service", "ledger.v1.LedgerService", "--quiet"])
    assert (r.exit_code, r.output) == (0, "")


def test_health_cli_as_the_container_runs_it(cluster_module):
    # The HEALTHCHECK's form: no --config, LEDGER_CONFIG in the environment; a real process.
    env = {**os.environ, "LEDGER_CONFIG": os.path.join(cluster_module.directory, "v3", "config.json")}
    p = subprocess.run([sys.executable, "-m", "raft_ledger_node.cli", "health", "--quiet"], env=env,
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr


def test_health_cli_probes_the_loopback_for_an_any_address_listener(cluster_module, tmp_path):
    # grpc_listen_address 0.0.0.0:<port> (Kubernetes, bridge containers): the probe dials
    # 127.0.0.1:<port> and verifies the certificate against the genesis host name.
    c = cluster_module
    src = os.path.join(c.directory, "v1", "config.json")
    with open(src) as f:
        cfg = json.load(f)
    port = c.addresses["v1"].rpartition(":")[2]
    base = os.path.dirname(src)
    cfg.update(grpc_listen_address=f"0.0.0.0:{port}", data_dir=os.path.join(base, cfg["data_dir"]),
               genesis_file=os.path.join(base, cfg["genesis_file"]),
               tls_cert_file=os.path.join(base, cfg["tls_cert_file"]), tls_key_file=os.path.join(base, cfg["tls_key_file"]))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    r = CliRunner().invoke(cli, ["health", "--config", str(path)])
    assert (r.exit_code, r.output.strip()) == (0, "SERVING")


def test_health_cli_exits_1_when_nothing_answers_or_the_certificate_is_not_a_validators(cluster_module, tmp_path):
    c = cluster_module
    config = os.path.join(c.directory, "v1", "config.json")
    r = CliRunner().invoke(cli, ["health", "--config", config, "--address", "127.0.0.1:1", "--timeout", "1"])
    assert r.exit_code == 1 and "UNAVAILABLE" in r.output
    # A validator certificate of the cluster CA for an id the configuration does not list.
    ca_dir = os.path.join(c.directory, "ca")
    key, cert = pki.issue_certificate(_read(os.path.join(ca_dir, "ca.key.pem")), _read(os.path.join(ca_dir, "ca.crt.pem")),
                                      kind="validator", identity="v9", hosts=("127.0.0.1",))
    (tmp_path / "k.pem").write_bytes(key)
    (tmp_path / "c.pem").write_bytes(cert)
    with open(config) as f:
        cfg = json.load(f)
    base = os.path.dirname(config)
    cfg.update(data_dir=os.path.join(base, cfg["data_dir"]), genesis_file=os.path.join(base, cfg["genesis_file"]),
               tls_cert_file=str(tmp_path / "c.pem"), tls_key_file=str(tmp_path / "k.pem"))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = CliRunner().invoke(cli, ["health", "--config", str(tmp_path / "config.json")])
    assert r.exit_code == 1 and "PERMISSION_DENIED" in r.output
    r = CliRunner().invoke(cli, ["health", "--config", str(tmp_path / "missing.json")])
    assert r.exit_code == 1 and "cannot probe" in r.output
