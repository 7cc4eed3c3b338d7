"""Raft links over mutual TLS pinned to genesis (node/raft/tls.py), attacked on a real cluster.

A 3-validator cluster from ``init_cluster`` (TLS on by default) runs on 127.0.0.1.
Each attack below targets one validator's Raft port. The attacker knows the Raft
password (the Fernet layer pysyncobj unpickles behind, TC:284-291): every attack
sends, as its first frame, a pickle that would create a marker directory if it
were unpickled (``os.mkdir``). After each attack:

* the connection was closed by the validator, in bounded time;
* the marker does not exist (nothing was unpickled);
* the cluster still commits a transfer (nothing wedged).

The control, :func:`test_control_a_pinned_validator_with_the_password_is_unpickled`,
shows the probe is live: the same frame from the holder of a pinned validator
certificate and key does create the marker (that is the trust the docstring of
node/raft/tls.py states: a validator with its key and the password is a Raft peer).
"""
from __future__ import annotations

import json
import os
import select
import socket
import ssl
import struct
import time
import zlib

import pysyncobj.pickle as pysyncobj_pickle
import pytest
from pysyncobj.encryptor import getEncryptor

from raft_ledger_client import Account, RetryPolicy, Transfer
from raft_ledger_node import pki
from raft_ledger_node.ledger import limits

pytestmark = pytest.mark.integration

MEMBER = "bank-a"
LEDGER = 840
ACCOUNTS = (9_200_001, 9_200_002)
#: A refused connection must be closed this fast (handshake or pin check, not a timeout).
CLOSE_WITHIN_S = 2.0
#: Slack on the handshake timeout: ticks run every few tens of ms; the machine is shared.
HANDSHAKE_SLACK_S = 1.5
#: How long an accepted connection must stay open to count as accepted (the control).
HELD_OPEN_S = 1.0
PATIENT_RETRY = RetryPolicy(deadline_s=20.0, attempt_timeout_s=5.0, backoff_initial_s=0.05, backoff_max_s=0.5)


class _Mkdir:
    """Unpickling this calls os.mkdir(path): evidence that a frame was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def frame(message, password: str, rand_key: bytes | None = None) -> bytes:
    """One pysyncobj frame as TcpConnection.send builds it (TC:141-149)."""
    if rand_key is not None:
        message = (rand_key, message)
    data = getEncryptor(password).encrypt_at_time(zlib.compress(pysyncobj_pickle.dumps(message), 3), int(time.monotonic()))
    return struct.pack("i", len(data)) + data


def read_frame(s, password: str, timeout_s: float = 3.0):
    """Read one pysyncobj frame (blocking, bounded) and return its message."""
    s.settimeout(timeout_s)
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack("i", buf[:4])[0]:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    (n,) = struct.unpack("i", buf[:4])
    return pysyncobj_pickle.loads(zlib.decompress(getEncryptor(password).decrypt(buf[4 : 4 + n])))


def closed_within(s, seconds: float) -> float | None:
    """Seconds until the peer closed ``s`` (EOF, reset or a TLS alert), None if still open after ``seconds``."""
    started = time.monotonic()
    s.setblocking(False)
    while True:
        left = seconds - (time.monotonic() - started)
        if left <= 0:
            return None
        readable, _, _ = select.select([s], [], [], min(left, 0.05))
        if not readable:
            continue
        try:
            if s.recv(65536) == b"":
                return time.monotonic() - started
        except (ssl.SSLWantReadError, BlockingIOError):
            continue
        except (ssl.SSLError, ConnectionError, OSError):
            return time.monotonic() - started


def tls_client_context(ca_pem: bytes, cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=ca_pem.decode())
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def tls_connect(address: str, ctx: ssl.SSLContext):
    """A blocking TLS connection; returns the SSLSocket, or None if the handshake itself was refused."""
    host, port = address.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=3.0)
    s = ctx.wrap_socket(raw)
    try:
        s.do_handshake()
    except (ssl.SSLError, ConnectionError, OSError):
        s.close()
        return None
    return s


@pytest.fixture(scope="module")
def tls_cluster(cluster_module):
    with cluster_module.client(MEMBER, retry=PATIENT_RETRY) as c:
        res = c.create_accounts([Account(id=a, ledger=LEDGER, code=1) for a in ACCOUNTS])
        assert [r.name for r in res] == ["ok", "ok"]
    return cluster_module


class Ctx:
    """What an attacker is given: the cluster's files (CA key included, to mint certificates)."""

    _next_id = 800_000_000

    def __init__(self, cluster, tmp_path):
        self.cluster = cluster
        self.dir = cluster.directory
        self.tmp = tmp_path
        with open(os.path.join(self.dir, "v1", "config.json")) as f:
            self.password = json.load(f)["raft_password"]
        with open(os.path.join(self.dir, "ca", "ca.crt.pem"), "rb") as f:
            self.ca_pem = f.read()
        with open(os.path.join(self.dir, "ca", "ca.key.pem"), "rb") as f:
            self.ca_key = f.read()
        self.validators = {v.id: v for v in cluster.local.genesis.validators}
        self.marker = str(tmp_path / "unpickled")

    def raft(self, vid: str) -> str:
        return self.validators[vid].raft_address

    def cert(self, vid: str) -> tuple[str, str]:
        return os.path.join(self.dir, vid, "tls.crt.pem"), os.path.join(self.dir, vid, "tls.key.pem")

    def write_pair(self, name: str, key_pem: bytes, cert_pem: bytes) -> tuple[str, str]:
        c, k = self.tmp / f"{name}.crt", self.tmp / f"{name}.key"
        c.write_bytes(cert_pem)
        k.write_bytes(key_pem)
        return str(c), str(k)

    def poison(self) -> bytes:
        return frame(_Mkdir(self.marker), self.password)

    def assert_not_unpickled_and_committing(self) -> None:
        assert not os.path.exists(self.marker), "the validator unpickled a frame from an unauthenticated peer"
        Ctx._next_id += 1
        t = Transfer(id=Ctx._next_id, debit_account_id=ACCOUNTS[0], credit_account_id=ACCOUNTS[1], amount=1,
                     ledger=LEDGER, code=7)
        with self.cluster.client(MEMBER, retry=PATIENT_RETRY) as c:
            (r,) = c.create_transfers([t])
        assert r.name == "ok", r
        alive = {vid: p.poll() is None for vid, p in self.cluster.local.procs.items()}
        assert all(alive.values()), alive


@pytest.fixture
def ctx(tls_cluster, tmp_path):
    return Ctx(tls_cluster, tmp_path)


def _refused_with_tls(c: Ctx, target: str, tls: ssl.SSLContext) -> None:
    """Handshake (TLS 1.3 lets the client finish before the server has judged its
    certificate), send the poison, and expect the server to close at once."""
    s = tls_connect(c.raft(target), tls)
    if s is not None:
        try:
            try:
                s.sendall(c.poison())
            except (ssl.SSLError, OSError):
                pass  # already closed by the server
            t = closed_within(s, CLOSE_WITHIN_S)
            assert t is not None, f"{target} kept a refused TLS peer open beyond {CLOSE_WITHIN_S}s"
        finally:
            s.close()
    c.assert_not_unpickled_and_committing()


def test_links_are_tls13_and_each_validator_shows_its_pinned_certificate(ctx):
    # Every validator answers TLS 1.3 with the certificate genesis pins for it; a
    # transfer commits (the failover, snapshot and adapter suites run on these links too).
    for vid, v in ctx.validators.items():
        other = next(o for o in ctx.validators if o != vid)
        s = tls_connect(v.raft_address, tls_client_context(ctx.ca_pem, *ctx.cert(other)))
        assert s is not None, f"{vid} refused a pinned peer's handshake"
        try:
            assert s.version() == "TLSv1.3"
            assert pki.certificate_sha256(s.getpeercert(binary_form=True)) == v.tls_cert_sha256
        finally:
            s.close()
    ctx.assert_not_unpickled_and_committing()
    for vid in ctx.validators:
        with open(ctx.cluster.local.log_path(vid), errors="replace") as f:
            assert "PLAINTEXT" not in f.read()


def test_plaintext_peer_with_the_password_is_refused(ctx):
    leader = ctx.cluster.leader()
    host, port = ctx.raft(leader).rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3.0) as s:
        s.sendall(ctx.poison())  # not a TLS record: the handshake fails on its first bytes
        t = closed_within(s, CLOSE_WITHIN_S)
    assert t is not None, "a plaintext pysyncobj peer was kept open"
    ctx.assert_not_unpickled_and_committing()


def test_tls_client_without_a_certificate_is_refused(ctx):
    _refused_with_tls(ctx, ctx.cluster.leader(), tls_client_context(ctx.ca_pem))


def test_certificate_from_another_ca_is_refused(ctx):
    other_key, other_ca = pki.make_ca("an attacker's CA")
    key, cert = pki.issue_certificate(other_key, other_ca, kind="validator", identity="v2", hosts=("127.0.0.1",))
    _refused_with_tls(ctx, "v1", tls_client_context(ctx.ca_pem, *ctx.write_pair("foreign", key, cert)))


def test_members_client_certificate_of_the_cluster_ca_is_refused(ctx):
    _, key_file, cert_file = (os.path.join(ctx.dir, "ca", "ca.crt.pem"),
                              os.path.join(ctx.dir, "members", f"{MEMBER}.tls.key.pem"),
                              os.path.join(ctx.dir, "members", f"{MEMBER}.tls.crt.pem"))
    _refused_with_tls(ctx, ctx.cluster.leader(), tls_client_context(ctx.ca_pem, cert_file, key_file))


def test_validator_certificate_reissued_with_a_new_key_is_refused(ctx):
    # Right CA, right SAN (spiffe://ledger/validator/v2), but not the certificate genesis pins.
    key, cert = pki.issue_certificate(ctx.ca_key, ctx.ca_pem, kind="validator", identity="v2", hosts=("127.0.0.1",))
    _refused_with_tls(ctx, "v1", tls_client_context(ctx.ca_pem, *ctx.write_pair("v2-reissued", key, cert)))


def _fernet_handshake(c: Ctx, s) -> bytes:
    """pysyncobj's nonce exchange as an outgoing peer (TR:453-456, 473-475): returns the server's nonce."""
    ours = os.urandom(32)
    s.sendall(frame(ours, c.password))
    reply = read_frame(s, c.password)
    assert isinstance(reply, tuple) and reply[0] == ours, reply
    return reply[1]


def _two_followers_by_address(c: Ctx) -> tuple[str, str]:
    """(target, peer): two followers, ``peer`` the one with the higher Raft address (the one
    that dials ``target`` in pysyncobj, TR:409), so the control does not touch the leader's links."""
    leader = c.cluster.leader()
    a, b = sorted((vid for vid in c.validators if vid != leader), key=lambda vid: c.raft(vid))
    return a, b


def test_pinned_validator_announcing_another_validators_address_is_refused(ctx):
    target, peer = _two_followers_by_address(ctx)
    leader = ctx.cluster.leader()
    # ("readonly" from a pinned validator is a learner's link: node/raft/membership.py;
    # tests/integration/test_replace_lost_validator.py shows it counts toward no majority.)
    for announced in (ctx.raft(leader),):
        s = tls_connect(ctx.raft(target), tls_client_context(ctx.ca_pem, *ctx.cert(peer)))
        assert s is not None, "a pinned validator's handshake was refused"
        try:
            server_nonce = _fernet_handshake(ctx, s)
            s.sendall(frame(announced, ctx.password, rand_key=server_nonce))
            t = closed_within(s, CLOSE_WITHIN_S)
            assert t is not None, f"{target} accepted {peer}'s certificate announcing {announced!r}"
        finally:
            s.close()
    ctx.assert_not_unpickled_and_committing()


def test_control_the_certified_hello_is_accepted(ctx):
    # The same client, announcing its own address, is held open: the refusal above is the binding.
    target, peer = _two_followers_by_address(ctx)
    s = tls_connect(ctx.raft(target), tls_client_context(ctx.ca_pem, *ctx.cert(peer)))
    assert s is not None
    try:
        server_nonce = _fernet_handshake(ctx, s)
        s.sendall(frame(ctx.raft(peer), ctx.password, rand_key=server_nonce))
        assert closed_within(s, HELD_OPEN_S) is None, "the certified hello was refused"
    finally:
        s.close()
    ctx.assert_not_unpickled_and_committing()


def test_control_a_pinned_validator_with_the_password_is_unpickled(ctx):
    target, peer = _two_followers_by_address(ctx)
    s = tls_connect(ctx.raft(target), tls_client_context(ctx.ca_pem, *ctx.cert(peer)))
    assert s is not None
    try:
        s.sendall(ctx.poison())
        deadline = time.monotonic() + CLOSE_WITHIN_S
        while not os.path.exists(ctx.marker) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        s.close()
    assert os.path.isdir(ctx.marker), "the probe is dead: even a pinned validator's frame was not unpickled"
    os.rmdir(ctx.marker)
    ctx.assert_not_unpickled_and_committing()


def _client_hello() -> bytes:
    ch = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_client_context(pki.make_ca("x")[1]).wrap_bio(*ch, server_side=False)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return ch[1].read()


def test_slow_tls_handshake_is_closed_after_the_handshake_timeout(ctx):
    leader = ctx.cluster.leader()
    hello = _client_hello()
    host, port = ctx.raft(leader).rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3.0) as s:
        s.sendall(hello[: len(hello) // 2])  # half a ClientHello, then nothing
        t = closed_within(s, limits.raft_handshake_timeout_s + HANDSHAKE_SLACK_S)
    assert t is not None, f"a stalled handshake stayed open beyond {limits.raft_handshake_timeout_s + HANDSHAKE_SLACK_S}s"
    assert t >= limits.raft_handshake_timeout_s - 0.2, f"closed after {t:.2f}s, before the handshake timeout"
    ctx.assert_not_unpickled_and_committing()


def _handshake_records(message_bytes: int) -> bytes:
    """A ClientHello announcing ``message_bytes`` of body, split into full TLS records.
    OpenSSL alone would buffer a ClientHello of up to ~128 KiB before judging it."""
    message = bytes([1]) + message_bytes.to_bytes(3, "big") + b"\x00" * message_bytes
    out = b""
    for at in range(0, len(message), 16384):
        chunk = message[at : at + 16384]
        out += b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
    return out


def test_oversized_handshake_is_closed_at_the_handshake_byte_cap(ctx):
    leader = ctx.cluster.leader()
    stream = _handshake_records(96 << 10)
    host, port = ctx.raft(leader).rsplit(":", 1)
    sent = 0
    closed = False
    with socket.create_connection((host, int(port)), timeout=3.0) as s:
        try:
            while sent < len(stream) and not closed:
                s.sendall(stream[sent : sent + 2048])
                sent += 2048
                closed = closed_within(s, 0.01) is not None
                s.setblocking(True)
        except (ConnectionError, OSError):
            closed = True
        closed = closed or closed_within(s, CLOSE_WITHIN_S) is not None
    assert closed, "an oversized handshake was kept open"
    # Slack for what was in flight when the server closed: a few 2 KiB chunks.
    assert sent <= limits.raft_tls_handshake_bytes_max + (16 << 10), f"the server took {sent} bytes of handshake"
    ctx.assert_not_unpickled_and_committing()
