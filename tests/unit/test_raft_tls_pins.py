"""The pure pieces of the Raft links' TLS (node/raft/tls.py): pinning a verified peer
certificate to a genesis validator, binding pysyncobj's hello to it, and the in-memory
TLS channel (real TLS 1.3 between two SSLObjects over memory BIOs, no socket)."""
from __future__ import annotations

import os
import ssl

import pytest

from raft_ledger_node import pki
from raft_ledger_node.raft.tls import (
    PinnedPeer,
    PinVerdict,
    RaftTls,
    RaftTlsError,
    TlsChannel,
    check_certificate,
    check_hello,
)


def _der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


@pytest.fixture(scope="module")
def pkix(tmp_path_factory):
    """A CA, three validator certificates written to files, a member certificate, a foreign CA."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = pki.make_ca("test CA")
    out = {"dir": d, "ca_key": ca_key, "ca_cert": ca_cert, "validators": []}
    for i in (1, 2, 3):
        key, cert = pki.issue_certificate(ca_key, ca_cert, kind="validator", identity=f"v{i}", hosts=("127.0.0.1",))
        (d / f"v{i}.key").write_bytes(key)
        (d / f"v{i}.crt").write_bytes(cert)
        out["validators"].append((f"v{i}", f"127.0.0.1:{7100 + i}", key, cert))
    out["member"] = pki.issue_certificate(ca_key, ca_cert, kind="member", identity="bank-a")
    other_key, other_cert = pki.make_ca("another CA")
    out["foreign"] = pki.issue_certificate(other_key, other_cert, kind="validator", identity="v2")
    return out


class _V:
    def __init__(self, vid, addr, cert):
        self.id, self.raft_address, self.tls_cert_sha256 = vid, addr, pki.certificate_sha256(cert)


def _genesis_validators(pkix):
    return [_V(vid, addr, cert) for vid, addr, _, cert in pkix["validators"]]


def _peers(pkix, self_id="v1"):
    return {addr: PinnedPeer(vid, addr, pki.certificate_sha256(cert))
            for vid, addr, _, cert in pkix["validators"] if vid != self_id}


def test_a_pinned_certificate_is_its_validator_both_ways(pkix):
    peers = _peers(pkix)
    _, addr2, _, cert2 = pkix["validators"][1]
    assert check_certificate(_der(cert2), peers, dialled=addr2) == (PinVerdict.ok, peers[addr2])
    assert check_certificate(_der(cert2), peers, dialled=None) == (PinVerdict.ok, peers[addr2])


def test_refusals_in_precedence_order(pkix):
    peers = _peers(pkix)
    (_, addr1, _, cert1), (_, addr2, _, cert2), (_, addr3, _, cert3) = pkix["validators"]
    assert check_certificate(None, peers, dialled=addr2)[0] is PinVerdict.certificate_missing
    # Right CA, not pinned: a member's client certificate; v2 re-issued with a new key.
    assert check_certificate(_der(pkix["member"][1]), peers, dialled=None)[0] is PinVerdict.certificate_not_pinned
    _, reissued = pki.issue_certificate(pkix["ca_key"], pkix["ca_cert"], kind="validator", identity="v2")
    assert check_certificate(_der(reissued), peers, dialled=addr2)[0] is PinVerdict.certificate_not_pinned
    assert check_certificate(_der(reissued), peers, dialled=None)[0] is PinVerdict.certificate_not_pinned
    # Our own certificate is pinned to no *peer*: a peer showing it is refused.
    assert check_certificate(_der(cert1), peers, dialled=None)[0] is PinVerdict.certificate_not_pinned
    # Pinned, but not to the validator we dialled (e.g. a proxy routing us elsewhere).
    assert check_certificate(_der(cert3), peers, dialled=addr2)[0] is PinVerdict.certificate_of_other_validator
    # Pinned to v2 in a (wrong) genesis, but its SAN names v3.
    swapped = {addr2: PinnedPeer("v2", addr2, pki.certificate_sha256(cert3))}
    assert check_certificate(_der(cert3), swapped, dialled=addr2)[0] is PinVerdict.identity_mismatch
    assert [v.value for v in PinVerdict] == list(range(len(PinVerdict)))


def test_the_hello_must_be_the_certified_validators_address(pkix):
    peers = _peers(pkix)
    (_, _, _, _), (_, addr2, _, _), (_, addr3, _, _) = pkix["validators"]
    assert check_hello(addr2, peers[addr2]) is PinVerdict.ok
    assert check_hello(addr3, peers[addr2]) is PinVerdict.address_not_certified
    assert check_hello("readonly", peers[addr2]) is PinVerdict.address_not_certified
    assert check_hello(["status"], peers[addr2]) is PinVerdict.address_not_certified  # a utility command
    assert check_hello(addr2, None) is PinVerdict.address_not_certified


def _tls(pkix, vid):
    d = pkix["dir"]
    return RaftTls.load(cert_file=str(d / f"{vid}.crt"), key_file=str(d / f"{vid}.key"), ca_pem=pkix["ca_cert"],
                        validators=_genesis_validators(pkix), self_id=vid)


def test_load_refuses_a_certificate_genesis_does_not_pin_for_this_validator(pkix):
    d = pkix["dir"]
    with pytest.raises(RaftTlsError, match="not the certificate genesis pins"):
        RaftTls.load(cert_file=str(d / "v2.crt"), key_file=str(d / "v2.key"), ca_pem=pkix["ca_cert"],
                     validators=_genesis_validators(pkix), self_id="v1")
    with pytest.raises(RaftTlsError, match="cannot load"):
        RaftTls.load(cert_file=str(d / "missing.crt"), key_file=str(d / "v1.key"), ca_pem=pkix["ca_cert"],
                     validators=_genesis_validators(pkix), self_id="v1")
    tls = _tls(pkix, "v1")
    assert set(tls.peers) == {addr for vid, addr, _, _ in pkix["validators"] if vid != "v1"}


def _pump(a: TlsChannel, b: TlsChannel, rounds: int = 6) -> tuple[bool, bool]:
    done_a = done_b = False
    for _ in range(rounds):
        done_a = a.handshake()
        b.feed(a.outgoing())
        done_b = b.handshake()
        a.feed(b.outgoing())
    return done_a, done_b


def test_channel_completes_mutual_tls13_and_carries_bytes(pkix):
    client = TlsChannel(_tls(pkix, "v2").client_context, server_side=False)
    server = TlsChannel(_tls(pkix, "v1").server_context, server_side=True)
    assert _pump(client, server) == (True, True)
    assert client._ssl.version() == "TLSv1.3"
    # Each side sees the other's pinned certificate.
    assert pki.certificate_sha256(server.peer_certificate()) == pki.certificate_sha256(pkix["validators"][1][3])
    assert pki.certificate_sha256(client.peer_certificate()) == pki.certificate_sha256(pkix["validators"][0][3])
    payload = os.urandom(100_000)  # several records
    client.write(payload)
    server.feed(client.outgoing())
    got = bytearray()
    while (chunk := server.read(1 << 16)) is not None:
        got += chunk
    assert bytes(got) == payload and server.buffered() == 0
    assert server.read(10) is None  # nothing buffered: wants more ciphertext, never blocks


def test_channel_refuses_a_client_without_a_certificate_or_from_another_ca(pkix):
    server_ctx = _tls(pkix, "v1").server_context
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata=pkix["ca_cert"].decode())
    foreign_key, foreign_cert = pkix["foreign"]
    d = pkix["dir"]
    (d / "foreign.key").write_bytes(foreign_key)
    (d / "foreign.crt").write_bytes(foreign_cert)
    foreign = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    foreign.check_hostname = False
    foreign.load_verify_locations(cadata=pkix["ca_cert"].decode())
    foreign.load_cert_chain(str(d / "foreign.crt"), str(d / "foreign.key"))
    for ctx in (anonymous, foreign):
        client = TlsChannel(ctx, server_side=False)
        server = TlsChannel(server_ctx, server_side=True)
        with pytest.raises(ssl.SSLError):
            _pump(client, server)


def test_channel_refuses_tls12(pkix):
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.load_verify_locations(cadata=pkix["ca_cert"].decode())
    d = pkix["dir"]
    old.load_cert_chain(str(d / "v2.crt"), str(d / "v2.key"))
    client = TlsChannel(old, server_side=False)
    server = TlsChannel(_tls(pkix, "v1").server_context, server_side=True)
    with pytest.raises(ssl.SSLError):
        _pump(client, server)


def test_validator_builds_raft_tls_from_its_config_or_warns_loudly_in_plaintext(tmp_path, caplog):
    import logging

    from raft_ledger_node.config import ConfigError, load_config, load_genesis
    from raft_ledger_node.localcluster import init_cluster
    from raft_ledger_node.main import _raft_tls

    gen = init_cluster(str(tmp_path / "c"), 3, ["bank-a"], "127.0.0.1", 27_100)
    genesis = load_genesis(gen.genesis_path)
    cfg = load_config(gen.config_paths["v1"])
    tls = _raft_tls(cfg, genesis, genesis.validators)
    assert {p.validator_id for p in tls.peers.values()} == {"v2", "v3"}
    # v2's certificate in v1's config: not what genesis pins for v1.
    wrong = load_config(gen.config_paths["v2"])
    with pytest.raises(ConfigError, match="not the certificate genesis pins"):
        _raft_tls(type(cfg)(**{**cfg.__dict__, "tls_cert_file": wrong.tls_cert_file, "tls_key_file": wrong.tls_key_file}), genesis, genesis.validators)
    with caplog.at_level(logging.WARNING, logger="ledger.main"):
        assert _raft_tls(type(cfg)(**{**cfg.__dict__, "insecure_plaintext": True}), genesis, genesis.validators) is None
    assert "Raft links are PLAINTEXT" in caplog.text
