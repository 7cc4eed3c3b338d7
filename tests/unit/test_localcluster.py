"""The local-cluster library's pure parts (node/localcluster.py): the files a generated
cluster holds, and port reservation. Running validators is covered by the integration
tests, which build every cluster with this library (tests/integration/conftest.py).

Port tests bind sockets on 127.0.0.1 (no traffic) and keep their locks in tmp_path."""
from __future__ import annotations

import json
import os
import socket
import stat

import pytest

from raft_ledger_client import load_private_key
from raft_ledger_node.config import load_config, load_genesis
from raft_ledger_node.localcluster import (
    ClusterExistsError,
    LocalCluster,
    NoClusterError,
    NoFreePortsError,
    cluster_port_offsets,
    genesis_path,
    init_cluster,
    reserve_ports,
)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_cluster_writes_genesis_configs_and_keys(tmp_path):
    d = str(tmp_path / "c")
    made = init_cluster(d, 3, ["bank-a", "bank-b"], "127.0.0.1", 7100)

    g = load_genesis(made.genesis_path)
    assert [(v.id, v.grpc_address, v.raft_address) for v in g.validators] == [
        ("v1", "127.0.0.1:7101", "127.0.0.1:7201"),
        ("v2", "127.0.0.1:7102", "127.0.0.1:7202"),
        ("v3", "127.0.0.1:7103", "127.0.0.1:7203"),
    ]
    assert g.chain_id.startswith("local-") and len(g.chain_id) == len("local-") + 8
    # Each member's key file holds the private half of the public key in genesis.
    from cryptography.hazmat.primitives import serialization

    for m in g.members:
        priv = load_private_key(made.key_paths[m.id])
        raw = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert [(k.key_id, k.public_key) for k in m.keys] == [("k1", raw)]
    roles = {m.id: m.roles for m in g.members}
    assert roles["auditor"] == ("auditor",) and roles["operator"] == ("operator",) and roles["central-bank"] == ("member",)
    assert all(roles[a] == () for a in g.configuration.admins) and g.configuration.threshold == 2
    assert g.configuration.issuers == ((840, ("central-bank",)), (978, ("central-bank",)))
    # Every identity's TLS certificate names it; every validator's certificate matches its genesis pin.
    from raft_ledger_node import pki

    for ident, (_, cert) in made.tls_paths.items():
        assert pki.identity_from_certificate(open(cert, "rb").read()) == pki.Identity("member", ident)
    for v in g.validators:
        cert = open(os.path.join(os.path.dirname(made.config_paths[v.id]), "tls.crt.pem"), "rb").read()
        assert pki.certificate_sha256(cert) == v.tls_cert_sha256
    # Configs name their validator and share one Raft password; they load as real configs.
    passwords = set()
    for vid, path in made.config_paths.items():
        raw = json.load(open(path))
        passwords.add(raw["raft_password"])
        assert load_config(path).validator_id == vid
    assert len(passwords) == 1 and len(passwords.pop()) >= 24
    assert sorted(os.listdir(d)) == ["ca", "genesis.json", "members", "v1", "v2", "v3"]
    assert stat.S_IMODE(os.stat(os.path.join(d, "ca", "ca.key.pem")).st_mode) == 0o600


def test_secrets_are_written_0600_even_over_an_existing_file(tmp_path):
    d = tmp_path / "c"
    (d / "members").mkdir(parents=True)
    stale = d / "members" / "bank-a.pem"
    stale.write_text("old")
    stale.chmod(0o644)
    made = init_cluster(str(d), 1, ["bank-a"], "127.0.0.1", 7100)
    for path in [*made.config_paths.values(), *made.key_paths.values()]:
        assert _mode(path) == 0o600, path
    assert stale.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    # The genesis file is public: every validator and member reads it.
    assert _mode(made.genesis_path) & 0o600 == 0o600


def test_an_existing_cluster_is_replaced_only_with_force(tmp_path):
    d = str(tmp_path / "c")
    first = load_genesis(init_cluster(d, 1, ["bank-a"], "127.0.0.1", 7100).genesis_path)
    open(os.path.join(d, "v1", "marker"), "w").close()
    with pytest.raises(ClusterExistsError):
        init_cluster(d, 1, ["bank-a"], "127.0.0.1", 7100)
    second = load_genesis(init_cluster(d, 1, ["bank-a"], "127.0.0.1", 7100, force=True).genesis_path)
    assert second.chain_id != first.chain_id
    assert not os.path.exists(os.path.join(d, "v1", "marker"))  # force deletes the old data


def test_bad_arguments_and_missing_cluster(tmp_path):
    with pytest.raises(ValueError):
        init_cluster(str(tmp_path / "a"), 0, [], "127.0.0.1", 7100)
    with pytest.raises(ValueError):
        init_cluster(str(tmp_path / "b"), 3, [], "127.0.0.1", 65_500)
    with pytest.raises(NoClusterError):
        genesis_path(str(tmp_path))
    with pytest.raises(NoClusterError):
        LocalCluster(str(tmp_path))


def test_cluster_port_offsets_match_the_generated_addresses():
    assert cluster_port_offsets(3) == [1, 2, 3, 101, 102, 103]


def test_a_reserved_block_is_not_handed_out_again_until_released(tmp_path):
    lock_dir = str(tmp_path)
    a = reserve_ports([1, 2], start=48_100, step=200, lock_dir=lock_dir)
    b = reserve_ports([1, 2], start=48_100, step=200, lock_dir=lock_dir)
    try:
        assert a.base == 48_100 and a.ports == (48_101, 48_102)
        assert b.base == 48_300  # the first base is locked by a (flock is per open file: same rule across processes)
        assert sorted(os.listdir(lock_dir)) == ["48100.lock", "48300.lock"]
    finally:
        b.release()
    a.release()
    a.release()  # idempotent
    with reserve_ports([1, 2], start=48_100, step=200, lock_dir=lock_dir) as c:
        assert c.base == 48_100 and c.held
    assert not c.held


def test_a_block_with_a_port_in_use_is_skipped(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        busy = s.getsockname()[1]
        with reserve_ports([0], start=busy, step=1, lock_dir=str(tmp_path)) as r:
            assert r.base == busy + 1
        with pytest.raises(NoFreePortsError):
            reserve_ports([0], start=busy, step=1, probes_max=1, lock_dir=str(tmp_path))


def test_offsets_must_fit_within_a_step(tmp_path):
    with pytest.raises(ValueError):
        reserve_ports([1, 200], start=48_100, step=200, lock_dir=str(tmp_path))
    with pytest.raises(ValueError):
        reserve_ports([], start=48_100, step=200, lock_dir=str(tmp_path))
