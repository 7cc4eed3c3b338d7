"""Validator-to-validator Raft links over mutual TLS 1.3, each peer pinned to its genesis certificate.

pysyncobj 0.3.17 has no TLS; its only protection is the shared ``password``
(Fernet: one secret for the whole cluster, no per-validator identity). Here every
Raft link is TLS 1.3, mutually authenticated, under the Fernet layer (kept as
defence in depth):

* **Where it sits.** :class:`TlsConnection` is the wire layer's
  :class:`~raft_ledger_node.raft.wire.LedgerConnection` with an ``ssl.SSLObject``
  over two ``ssl.MemoryBIO`` (:class:`TlsChannel`) between the socket and the
  frame buffer. The library's raw non-blocking socket path is kept: its write
  buffer carries ciphertext (TC:141-149, 232-254), our bounded read path
  (wire.py) reads ciphertext and feeds the channel. ``ssl.SSLSocket`` does not fit
  pysyncobj's poller on 3.11 (want-read/want-write are not EAGAIN, wrapping before
  the non-blocking connect completes sends plaintext, data ``pending()`` inside it
  raises no poll event); see /work/shared/pysyncobj-seams.md.
* **Order.** Nothing reaches the frame buffer, Fernet or pickle before the TLS
  handshake has completed and the peer's certificate passed :func:`check_certificate`.
  Outgoing: the transport's ``onConnected`` (TR:443-460, which sends the Fernet nonce)
  runs only then; the connection stays CONNECTING until then, so pysyncobj's
  ``send`` (TR:556-575, which requires CONNECTED) writes nothing in clear.
  Incoming: the connection stays in the transport's unauthenticated set (TR:205,
  324) with the handshake timeout and the connection cap of wire.py in force.
* **Pinning.** The peer's chain must verify against the genesis CA
  (``Genesis.tls_ca_pem``), and the SHA-256 of its DER certificate must equal the
  genesis ``tls_cert_sha256`` of the validator it is: for a link we dialled, the
  validator whose *genesis* Raft address we meant to reach (not the address we
  dialled, which may be a Toxiproxy listener: ``raft_peer_dial``); for a link we
  accepted, whichever validator the certificate is pinned to. Its URI SAN must name
  that validator (``spiffe://ledger/validator/<id>``). Host names are not checked
  (the pin is stronger, and a proxy's address would never match).
* **Binding the hello.** pysyncobj identifies an incoming peer by the address it
  announces in its first message after the nonce (TR:353-368), and a new
  connection for that address replaces the old one (TR:368). The transport
  refuses a hello that is not the address of the validator the certificate is
  pinned to (:func:`check_hello`), and utility connections (TR:349, 355-365) over
  TLS; a read-only hello (a learner, node/raft/membership.py) from a certificate
  pinned to a validator of the governed set: pysyncobj gives it a node of its own.
* **Pins follow governance.** ``RaftTls.peers`` starts as the governed set at the
  applied index and is replaced in the tick thread when the set changes
  (``LedgerReplica._sync_membership``): a validator added by governance can connect,
  a removed one cannot.
* **Bounds before authentication.** At most ``raft_tls_handshake_bytes_max`` bytes of
  handshake records are read from a peer before its handshake completes; after it,
  the TLS layer holds at most one recv (``raft_tls_recv_bytes_max``) plus one
  partial record undecrypted, and the plaintext frame caps of wire.py apply
  unchanged (``raft_handshake_frame_bytes_max`` until pysyncobj's nonce exchange is
  done). TLS 1.3 only; no session tickets (every link shows its certificate).

What a hostile peer can and cannot do now
-----------------------------------------
Anyone who can reach a Raft port can open up to ``raft_unauthenticated_connections_max``
connections, each holding at most ``raft_tls_handshake_bytes_max`` of our memory for at
most ``raft_handshake_timeout_s``, and make us do one TLS handshake (an ECDHE and an
ECDSA verification) per connection. Without a certificate of the genesis CA that is
pinned in genesis, and its private key, it cannot get one byte past TLS: nothing is
decrypted with the Raft password, nothing is unpickled, no Raft message is handled.
Knowing the Raft password no longer suffices. A certificate of the cluster CA that is
not pinned (a member's client certificate, a validator certificate re-issued with a
new key) is refused. A validator holding its own pinned certificate and key can
speak as that validator only: it cannot take over another validator's link by
announcing its address. It is still a Raft peer: Raft is crash-fault tolerant, so a
compromised validator *with its key and the password* can disrupt consensus (votes,
terms, entries) and pysyncobj still unpickles what it sends; the ledger's signed
blocks and the majority certificates are what stop it forging state.

Every callback runs on pysyncobj's tick thread: nothing here takes a lock.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import socket
import ssl
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

import pysyncobj.pickle as pysyncobj_pickle
from pysyncobj.monotonic import monotonic as monotonicTime
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE

from raft_ledger_node import pki
from raft_ledger_node.ledger import limits
from raft_ledger_node.raft.wire import _READ_EVENT_BYTES_MAX, FrameRejected, LedgerConnection

log = logging.getLogger("ledger.raft.tls")

_PREFIX = struct.Struct("i")  # pysyncobj's frame prefix (TC:147)

#: Seconds between two log lines for the same kind of refused peer (a flood must not flood the log).
_REFUSAL_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class PinnedPeer:
    """A validator as genesis names it: its id, its Raft address (its identity in
    pysyncobj) and the SHA-256 of its TLS certificate's DER encoding."""

    validator_id: str
    raft_address: str
    cert_sha256: bytes


class PinVerdict(IntEnum):
    """Why a peer is refused, in the order the checks run (the first failing one is reported)."""

    ok = 0
    #: The peer completed TLS without a certificate (cannot happen with CERT_REQUIRED; checked anyway).
    certificate_missing = 1
    #: Its certificate chains to the CA but is pinned to no validator in genesis
    #: (a member's client certificate; a validator certificate re-issued with a new key).
    certificate_not_pinned = 2
    #: Pinned, but to another validator than the one whose genesis address we dialled.
    certificate_of_other_validator = 3
    #: Pinned, but its URI SAN does not name that validator (a genesis error).
    identity_mismatch = 4
    #: The hello announces another address than the certificate's validator's (TR:353).
    address_not_certified = 5


def check_certificate(der: bytes | None, peers: Mapping[str, PinnedPeer], *,
                      dialled: str | None) -> tuple[PinVerdict, PinnedPeer | None]:
    """Pin a verified peer certificate to a validator of genesis. Pure.

    ``der`` is the peer's certificate (DER) after TLS verified its chain; ``peers``
    maps each *other* validator's genesis Raft address to its pin (our own is not
    in it: a peer showing our certificate is refused); ``dialled`` is the genesis
    address we meant to reach (outgoing) or None (incoming: any pinned validator).
    Returns (verdict, the validator it is when ``ok``).
    """
    if not der:
        return PinVerdict.certificate_missing, None
    digest = hashlib.sha256(der).digest()
    peer = next((p for p in peers.values() if p.cert_sha256 == digest), None)
    if peer is None:
        return PinVerdict.certificate_not_pinned, None
    if dialled is not None and peer.raft_address != dialled:
        return PinVerdict.certificate_of_other_validator, None
    try:
        identity = pki.identity_from_certificate(der)
    except pki.CertificateError:
        return PinVerdict.identity_mismatch, None
    if identity != pki.Identity("validator", peer.validator_id):
        return PinVerdict.identity_mismatch, None
    return PinVerdict.ok, peer


def check_hello(announced, certified: PinnedPeer | None) -> PinVerdict:
    """pysyncobj's hello (the peer's self-announced Raft address, TR:353) must be the
    address of the validator its certificate is pinned to. Pure."""
    if certified is None or not isinstance(announced, str) or announced != certified.raft_address:
        return PinVerdict.address_not_certified
    return PinVerdict.ok


def _context(purpose: int, cert_file: str, key_file: str, ca_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if purpose == ssl.PROTOCOL_TLS_CLIENT:
        # The pin (checked after the handshake) names the peer; its host name cannot, and
        # through a proxy (raft_peer_dial) the dialled name is the proxy's.
        ctx.check_hostname = False
    else:
        ctx.num_tickets = 0  # no resumption: every link presents its certificate
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    ctx.load_cert_chain(cert_file, key_file)
    return ctx



def link_context(purpose: int, cert_file: str, key_file: str, ca_pem: bytes) -> ssl.SSLContext:
    """The TLS context a Raft link end uses (``purpose``: ``ssl.PROTOCOL_TLS_CLIENT`` or
    ``ssl.PROTOCOL_TLS_SERVER``; TLS 1.3, peer certificate required and verified against
    ``ca_pem``, no host name check, no resumption on the server side), for harness code
    that must present a validator's own certificate exactly as it does (chaos/raftproxy.py).
    Raises ``ssl.SSLError`` / ``OSError`` on unreadable or mismatched files."""
    return _context(purpose, cert_file, key_file, ca_pem)

class RaftTlsError(ValueError):
    """The validator's TLS material is unusable for its Raft links (unreadable, or not its pin)."""


@dataclass(frozen=True, slots=True)
class RaftTls:
    """One validator's TLS settings for its Raft links: the two contexts and the other validators' pins."""

    client_context: ssl.SSLContext
    server_context: ssl.SSLContext
    #: Other validators of the governed set by Raft address (a dict the replica updates).
    peers: Mapping[str, PinnedPeer]

    @classmethod
    def load(cls, *, cert_file: str, key_file: str, ca_pem: bytes, validators: Iterable, self_id: str) -> "RaftTls":
        """Build from this validator's certificate and key files (PEM), the genesis CA
        (PEM) and the genesis validators (objects with ``id``, ``raft_address``,
        ``tls_cert_sha256``). Raises RaftTlsError if a file does not load, or the
        certificate is not the one genesis pins for ``self_id`` (peers would refuse it)."""
        validators = list(validators)
        try:
            with open(cert_file, "rb") as f:
                own = f.read()
            own_sha = pki.certificate_sha256(own)
            client = _context(ssl.PROTOCOL_TLS_CLIENT, cert_file, key_file, ca_pem)
            server = _context(ssl.PROTOCOL_TLS_SERVER, cert_file, key_file, ca_pem)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise RaftTlsError(f"Raft TLS: cannot load {cert_file} / {key_file} / the genesis CA: {e}") from e
        me = [v for v in validators if v.id == self_id]
        if not me or me[0].tls_cert_sha256 != own_sha:
            raise RaftTlsError(f"Raft TLS: {cert_file} is not the certificate genesis pins for validator {self_id!r}")
        peers = {v.raft_address: PinnedPeer(v.id, v.raft_address, v.tls_cert_sha256)
                 for v in validators if v.id != self_id}
        return cls(client, server, peers)


class TlsChannel:
    """An ``ssl.SSLObject`` over two memory BIOs: bytes in, bytes out, no socket. Never blocks."""

    __slots__ = ("_in", "_out", "_ssl")

    def __init__(self, context: ssl.SSLContext, *, server_side: bool) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_side=server_side)

    def feed(self, ciphertext: bytes) -> None:
        self._in.write(ciphertext)

    def handshake(self) -> bool:
        """Advance the handshake with what was fed; True once complete. Raises ssl.SSLError."""
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def outgoing(self) -> bytes:
        """Ciphertext to send (handshake flights, records written, alerts)."""
        return self._out.read() if self._out.pending else b""

    def read(self, n: int) -> bytes | None:
        """Up to ``n`` bytes of plaintext; None while no whole record is buffered. Raises
        ssl.SSLError (ssl.SSLZeroReturnError when the peer closed the TLS session)."""
        try:
            return self._ssl.read(n)
        except ssl.SSLWantReadError:
            return None

    def write(self, plaintext: bytes) -> None:
        view = memoryview(plaintext)
        while view:
            view = view[self._ssl.write(view):]

    def buffered(self) -> int:
        """Bytes fed but not yet returned by :meth:`read` (ciphertext, plus decrypted bytes of the current record)."""
        return self._in.pending + self._ssl.pending()

    def undecrypted(self) -> int:
        return self._in.pending

    def peer_certificate(self) -> bytes | None:
        return self._ssl.getpeercert(binary_form=True)


class _RefusalLog:
    """At most one WARNING per verdict per ``_REFUSAL_LOG_INTERVAL_S``, with the count since the last."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def __call__(self, reason: str, detail: str) -> None:
        now = monotonicTime()
        last, count = self._last.get(reason, (-_REFUSAL_LOG_INTERVAL_S, 0))
        if now - last >= _REFUSAL_LOG_INTERVAL_S:
            log.warning("Raft TLS: refused a peer: %s (%s); %d more since the last report", reason, detail, count)
            self._last[reason] = (now, 0)
        else:
            self._last[reason] = (last, count + 1)


refused = _RefusalLog()


class TlsConnection(LedgerConnection):
    """A :class:`LedgerConnection` whose bytes go through a :class:`TlsChannel`.

    ``tls`` is the validator's :class:`RaftTls`. For a connection we dial,
    ``expected_address`` is the genesis Raft address of the validator we mean to
    reach. After the handshake and pin check, ``peer`` is the validator the
    certificate is pinned to (the transport binds the hello to it).
    """

    def __init__(self, *args, tls: RaftTls, expected_address: str | None = None, **kwargs) -> None:
        self._tls = tls
        self.expected_address = expected_address
        self.peer: PinnedPeer | None = None
        self._established = False
        self._handshake_bytes = 0
        # An accepted socket (``socket=`` given) is the server side, from its first byte.
        self._channel: TlsChannel | None = (
            TlsChannel(tls.server_context, server_side=True) if kwargs.get("socket") is not None else None)
        super().__init__(*args, **kwargs)

    @property
    def established(self) -> bool:
        """The TLS handshake completed and the peer's certificate is pinned."""
        return self._established

    # -- lifecycle ---------------------------------------------------------------
    def connect(self, host, port):
        self._channel = None  # created when the TCP connect completes (first poll event)
        self._established = False
        self._handshake_bytes = 0
        self.peer = None
        return super().connect(host, port)

    def disconnect(self):
        self._channel = None
        self._established = False
        super().disconnect()

    def _buffered_below(self) -> bool:
        return self._channel is not None and self._established and self._channel.buffered() > 0

    # -- the handshake -----------------------------------------------------------
    def _TcpConnection__processConnection(self, descr, eventType):  # noqa: N802,N803
        if self._established:
            return super()._TcpConnection__processConnection(descr, eventType)
        poller = self._TcpConnection__poller
        if descr != self.fileno():
            poller.unsubscribe(descr)
            return None
        sock = self._TcpConnection__socket
        if eventType & POLL_EVENT_TYPE.ERROR or sock is None or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.disconnect()
            return None
        if self._channel is None:
            # Outgoing: the non-blocking connect has completed; TLS starts only now (wrapping
            # earlier is what made SSLSocket send plaintext). State stays CONNECTING.
            self._channel = TlsChannel(self._tls.client_context, server_side=False)
        if eventType & POLL_EVENT_TYPE.READ and not self._read_handshake(sock):
            return None
        try:
            done = self._channel.handshake()
        except ssl.SSLError as e:
            refused("TLS handshake failed", f"{e.reason or e}")
            self._send_ciphertext()  # the alert, best effort
            self.disconnect()
            return None
        self._send_ciphertext()
        if self.state == CONNECTION_STATE.DISCONNECTED:
            return None
        if not done:
            self._subscribe()
            return None
        verdict, peer = check_certificate(self._channel.peer_certificate(), self._tls.peers,
                                          dialled=self.expected_address)
        if verdict is not PinVerdict.ok:
            refused(verdict.name, f"expected {self.expected_address or 'any pinned validator'}")
            self.disconnect()
            return None
        self.peer = peer
        self._established = True
        if self.state == CONNECTION_STATE.CONNECTING:
            # What the library does when a connect completes (TC:195-202), only now.
            self._TcpConnection__state = CONNECTION_STATE.CONNECTED
            self._TcpConnection__lastReadTime = monotonicTime()
            on_connected = self._TcpConnection__onConnected
            if on_connected is not None:
                on_connected()  # the transport sends the Fernet nonce (TR:443-456), encrypted by TLS
            if self.state == CONNECTION_STATE.DISCONNECTED:
                return None
        # The peer's first records may have come with its last handshake flight.
        return super()._TcpConnection__processConnection(descr, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE)

    def _read_handshake(self, sock) -> bool:
        """Read handshake records, never more than raft_tls_handshake_bytes_max in all. False: closed."""
        room = limits.raft_tls_handshake_bytes_max - self._handshake_bytes
        try:
            data = sock.recv(min(room + 1, self._TcpConnection__recvBufferSize))
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return True
            self.disconnect()
            return False
        if not data:
            self.disconnect()
            return False
        self._handshake_bytes += len(data)
        if self._handshake_bytes > limits.raft_tls_handshake_bytes_max:
            refused("TLS handshake too large", f"over {limits.raft_tls_handshake_bytes_max} bytes")
            self.disconnect()
            return False
        self._channel.feed(data)
        return True

    def _subscribe(self) -> None:
        # pysyncobj re-arms WRITE only inside a WRITE event (TC:204-211); during the
        # handshake, and after a send that left bytes behind, we arm it ourselves.
        event = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR
        if self.getSendBufferSize() > 0:
            event |= POLL_EVENT_TYPE.WRITE
        self._TcpConnection__poller.subscribe(self.fileno(), self._TcpConnection__processConnection, event)

    def _send_ciphertext(self) -> None:
        """Move what the channel produced into the library's write buffer and send what the socket takes."""
        if self._channel is None:
            return
        out = self._channel.outgoing()
        if not out or self._TcpConnection__socket is None:
            return
        self._TcpConnection__writeBuffer += out
        self._TcpConnection__trySendBuffer()
        if self.state != CONNECTION_STATE.DISCONNECTED and self.getSendBufferSize() > 0:
            self._subscribe()

    # -- after the handshake -----------------------------------------------------
    def send(self, message):
        """As the library's (TC:141-149), but the framed bytes go through TLS. Before the
        handshake and pin check nothing may leave in clear: such a send closes the link."""
        if not self._established:
            self.disconnect()
            return
        if self.sendRandKey:
            message = (self.sendRandKey, message)
        data = zlib.compress(pysyncobj_pickle.dumps(message), 3)
        if self.encryptor:
            data = self.encryptor.encrypt_at_time(data, int(monotonicTime()))
        self._channel.write(_PREFIX.pack(len(data)) + data)
        self._send_ciphertext()

    def _TcpConnection__processRead(self):  # noqa: N802
        """wire.py's bounded read, with TLS between socket and frame buffer. False stops the read loop.

        Plaintext is taken from the channel only up to the frame buffer's room;
        ciphertext is read from the socket only when the channel holds no whole
        record, at most raft_tls_recv_bytes_max at a time, and not at all once this
        event has read _READ_EVENT_BYTES_MAX (what stays in the socket raises the next
        READ event; what the channel holds is drained by the parse loop, see
        ``_buffered_below``).
        """
        if self._channel is None:
            # Closed while this read event was being handled (a message callback dropped the
            # peer: a validator removed by governance, transport.dropNode).
            return False
        try:
            if self._frames.wanted() == 0:
                return False
            plain = self._channel.read(min(self._frames.room(), limits.raft_tls_recv_bytes_max))
        except FrameRejected:
            self.disconnect()
            return False
        except ssl.SSLError:  # a bad record, or the peer's close_notify
            self.disconnect()
            return False
        self._send_ciphertext()  # post-handshake replies (KeyUpdate), if any
        if self.state == CONNECTION_STATE.DISCONNECTED:
            return False
        if plain is None:
            if self._event_bytes >= _READ_EVENT_BYTES_MAX:
                return False
            sock = self._TcpConnection__socket
            try:
                incoming = sock.recv(limits.raft_tls_recv_bytes_max)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    self.disconnect()
                return False
            if not incoming:
                self.disconnect()
                return False
            self._event_bytes += len(incoming)
            self._channel.feed(incoming)
            return True
        if not plain:
            self.disconnect()
            return False
        try:
            self._frames.feed(plain)
        except FrameRejected:
            self.disconnect()
            return False
        return True
