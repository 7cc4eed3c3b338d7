"""The Raft port's byte level: bounded frames, and pysyncobj's connection and server using them.

pysyncobj 0.3.17 (see /work/shared/pysyncobj-seams.md) reads a frame's 4-byte
length prefix (a signed native ``'i'``) and buffers up to 2 GiB before it
decrypts anything, growing the buffer with ``bytes +=`` in the tick thread: one
unauthenticated socket announcing 2³¹−1 bytes and sending junk froze a leader's
tick thread for ~22 s. Here:

* :class:`FrameBuffer` (pure, unit-tested) holds the bytes read so far in a
  ``bytearray`` and rejects a frame whose prefix is negative or above the cap
  as soon as its 4 prefix bytes are in, before any of its body is read. It never
  holds more than ``cap + 4`` bytes (the reader asks for no more than
  :meth:`FrameBuffer.room`, and stops once a whole frame is buffered).
* :class:`LedgerConnection` is pysyncobj's ``TcpConnection`` reading through a
  :class:`FrameBuffer`. Its cap starts at ``raft_handshake_frame_bytes_max``
  (the nonce and hello frames are ~200–300 bytes) and is raised to
  ``raft_frame_bytes_max`` by the transport once the peer has authenticated.
  Decryption, the timestamp and nonce checks and unpickling are the library's,
  unchanged.
* :class:`LedgerServer` is pysyncobj's ``TcpServer`` building a
  :class:`LedgerConnection` per accepted socket; an accept error no longer
  unbinds the listener for good: transient errors are ignored, resource
  exhaustion (EMFILE, ENFILE, ENOBUFS, ENOMEM) unbinds it and the transport
  binds it again on a later tick (:attr:`LedgerServer.failed`).

Every callback runs on pysyncobj's tick thread: nothing here takes a lock.
Private attributes of pysyncobj touched here are checked by :func:`check_pysyncobj`
at import (pysyncobj is pinned at 0.3.17).
"""
from __future__ import annotations

import errno
import importlib.metadata
import socket
import struct
import zlib

import pysyncobj.pickle as pysyncobj_pickle
from pysyncobj.monotonic import monotonic as monotonicTime
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.tcp_server import TcpServer

from raft_ledger_node.ledger import limits
from raft_ledger_node.ledger.invariants import verify

PYSYNCOBJ_VERSION = "0.3.17"

_PREFIX = struct.Struct("i")  # pysyncobj's prefix: signed, native byte order and size
#: The same prefix under a public name, for harness code that frames pysyncobj messages
#: itself (chaos/raftproxy.py re-encodes the frames it forwards).
FRAME_PREFIX = _PREFIX

#: Bytes one READ event may consume beyond its first whole frame before the tick
#: thread goes back to its other work (pysyncobj reads until EAGAIN, unbounded).
_READ_EVENT_BYTES_MAX = 4 << 20

#: accept() errors after which the listener is kept: the failure belongs to one connection.
_ACCEPT_TRANSIENT = frozenset(
    {errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EINTR, errno.EPROTO, errno.EPERM}
)


class FrameRejected(Exception):
    """A frame's length prefix is negative or above the cap: close the connection."""


class FrameBuffer:
    """Bytes read from one connection, split into length-prefixed frames, never above ``cap + 4``.

    ``cap`` may be raised between frames (after authentication); a prefix is
    checked against the cap in force when it is first seen whole and again when
    its frame is taken, so a frame read under the small cap is never accepted
    above it and one announced after authentication gets the large one.
    """

    __slots__ = ("_buf", "cap")

    def __init__(self, cap: int) -> None:
        self._buf = bytearray()
        self.cap = cap

    def __len__(self) -> int:
        return len(self._buf)

    def clear(self) -> None:
        self._buf = bytearray()

    def _front_length(self) -> int | None:
        """Length of the frame at the front, None while its prefix is incomplete; raises if over the cap."""
        if len(self._buf) < _PREFIX.size:
            return None
        (length,) = _PREFIX.unpack_from(self._buf)
        if length < 0 or length > self.cap:
            raise FrameRejected(f"frame length {length} outside 0..{self.cap}")
        return length

    def wanted(self) -> int:
        """Bytes still missing from the frame at the front (0: a whole frame is buffered)."""
        length = self._front_length()
        if length is None:
            return _PREFIX.size - len(self._buf)
        return max(0, _PREFIX.size + length - len(self._buf))

    def room(self) -> int:
        """Bytes that may still be read without holding more than ``cap + 4``."""
        return max(0, self.cap + _PREFIX.size - len(self._buf))

    def feed(self, data: bytes) -> None:
        """Append bytes read from the socket (at most :meth:`room`); raises FrameRejected."""
        if len(data) > self.room():
            raise FrameRejected(f"{len(self._buf) + len(data)} bytes buffered, above {self.cap} + 4")
        self._buf += data
        self._front_length()

    def pop(self) -> bytes | None:
        """The body of the frame at the front, removed from the buffer; None if not whole yet."""
        length = self._front_length()
        if length is None or len(self._buf) < _PREFIX.size + length:
            return None
        body = bytes(self._buf[_PREFIX.size : _PREFIX.size + length])
        del self._buf[: _PREFIX.size + length]  # bytearray drops a prefix without copying the rest
        return body


class LedgerConnection(TcpConnection):
    """pysyncobj's TcpConnection with a bounded, linear-time read path.

    Replaces the name-mangled ``__processRead`` and ``__processParseMessage``;
    everything else (connect, send, timeouts, callbacks) is the library's.
    ``authenticated`` is set by the transport together with :meth:`raise_cap`.
    """

    def __init__(self, *args, accepted_at: float | None = None, **kwargs) -> None:
        # The buffer exists before the base constructor subscribes the socket to the poller.
        self._frames = FrameBuffer(limits.raft_handshake_frame_bytes_max)
        self.authenticated = False
        #: monotonic time an incoming connection was accepted (None for ones we dial).
        self.accepted_at = accepted_at
        #: monotonic time we last dialled this (outgoing) connection; the transport
        #: closes it if the peer has not authenticated within raft_handshake_timeout_s.
        self.dialled_at: float | None = None
        self._event_bytes = 0
        super().__init__(*args, **kwargs)
        self._TcpConnection__writeBuffer = bytearray()

    def raise_cap(self) -> None:
        """The peer has authenticated: accept frames up to ``raft_frame_bytes_max``."""
        self.authenticated = True
        self._frames.cap = limits.raft_frame_bytes_max

    def connect(self, host, port):
        # A re-dial starts a new handshake: small cap again until the peer authenticates.
        self._frames = FrameBuffer(limits.raft_handshake_frame_bytes_max)
        self.authenticated = False
        self.dialled_at = monotonicTime()
        ok = super().connect(host, port)
        self._TcpConnection__writeBuffer = bytearray()  # the library resets it to bytes (TC:126)
        return ok

    def _buffered_below(self) -> bool:
        """Bytes already read from the socket but not yet in the frame buffer (a TLS layer's
        records): they raise no READ event, so the parse loop must drain them (see
        :mod:`raft_ledger_node.raft.tls`). Always False for plaintext."""
        return False

    def disconnect(self):
        self._frames.clear()
        super().disconnect()
        self._TcpConnection__writeBuffer = bytearray()  # the library resets it to bytes (TC:167)

    def _TcpConnection__processSend(self):  # noqa: N802 (replaces the library's private method)
        """As the library's (TC:239-254), on a ``bytearray`` write buffer.

        The library keeps ``bytes``: every queued message (``+=``, TC:148) and every
        partial send (``buf[res:]``, TC:249) copies the whole rest of the buffer, so a
        buffer of many AppendEntries to a slow follower costs time quadratic in its
        size on the tick thread. A bytearray appends in place and drops a sent prefix
        without copying the rest. False stops the send loop.
        """
        buf = self._TcpConnection__writeBuffer
        if not buf:
            return False
        try:
            res = self._TcpConnection__socket.send(buf)
        except socket.error as e:
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                self.disconnect()
            return False
        if res < 0:
            self.disconnect()
            return False
        if res == 0:
            return False
        del buf[:res]
        return True

    def send(self, message):
        """As the library's (TC:141-149), and WRITE interest is armed when bytes are left over.

        pysyncobj re-arms WRITE only inside a WRITE event (TC:204-211): after a
        send the socket took only part of, the rest waited for the next send
        (9.9 MB stayed buffered for 2 s, seams doc defect 4). The TLS connection
        overrides this and arms WRITE itself (tls.py ``_send_ciphertext``).
        """
        super().send(message)
        if self.state == CONNECTION_STATE.CONNECTED and self.getSendBufferSize() > 0:
            from pysyncobj.poller import POLL_EVENT_TYPE

            self._TcpConnection__poller.subscribe(
                self.fileno(), self._TcpConnection__processConnection,
                POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR)

    def _TcpConnection__processConnection(self, descr, eventType):  # noqa: N802,N803
        self._event_bytes = 0
        super()._TcpConnection__processConnection(descr, eventType)

    def _TcpConnection__processRead(self):  # noqa: N802 (replaces the library's private method)
        """Read while the frame at the front is incomplete, never above ``cap + 4`` buffered.

        False stops the read loop. Stops as soon as a whole frame is buffered, so the parse loop runs before
        more is read (the poller is level-triggered: what stays in the socket
        raises the next READ event).
        """
        sock = self._TcpConnection__socket
        try:
            wanted = self._frames.wanted()
        except FrameRejected:
            self.disconnect()
            return False
        if wanted == 0:
            return False
        try:
            incoming = sock.recv(min(self._frames.room(), self._TcpConnection__recvBufferSize))
        except socket.error as e:
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                self.disconnect()
            return False
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or not incoming:
            self.disconnect()
            return False
        self._event_bytes += len(incoming)
        try:
            self._frames.feed(incoming)
        except FrameRejected:
            self.disconnect()
            return False
        return True

    def _TcpConnection__processParseMessage(self):  # noqa: N802
        """As the library's, but the frame comes from the bounded buffer; same checks, same order.

        When no whole frame is left, read on (up to ``_READ_EVENT_BYTES_MAX`` per
        event), so frames already in the socket are handled in this event, as the
        library does, rather than one per tick.
        """
        try:
            data = self._frames.pop()
            if (data is None and (self._event_bytes < _READ_EVENT_BYTES_MAX or self._buffered_below())
                    and self.state != CONNECTION_STATE.DISCONNECTED):
                self._TcpConnection__tryReadBuffer()
                if self.state == CONNECTION_STATE.DISCONNECTED:
                    return None
                data = self._frames.pop()
        except FrameRejected:
            self.disconnect()
            return None
        if data is None:
            return None
        try:
            if self.encryptor:
                timestamp = self.encryptor.extract_timestamp(data)
                assert timestamp >= self.recvLastTimestamp
                self.recvLastTimestamp = timestamp
                data = self.encryptor.decrypt(data)
            message = pysyncobj_pickle.loads(zlib.decompress(data))
            if self.recvRandKey:
                rand_key, message = message
                assert rand_key == self.recvRandKey
        except Exception:  # the library's bare except: any bad frame closes the connection
            self.disconnect()
            return None
        return message


class LedgerServer(TcpServer):
    """pysyncobj's TcpServer accepting into :class:`LedgerConnection`, and surviving accept errors.

    ``clock`` is the monotonic clock used to stamp accepted connections;
    ``connection_factory(**kwargs)`` builds the connection for an accepted socket
    (default :class:`LedgerConnection`; the TLS transport passes one building
    :class:`~raft_ledger_node.raft.tls.TlsConnection`).
    """

    def __init__(self, *args, clock, connection_factory=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock
        self._connection_factory = connection_factory or LedgerConnection
        #: True after resource exhaustion unbound the listener; the transport rebinds it.
        self.failed = False

    def bind(self):
        super().bind()
        self.failed = False

    def _TcpServer__onNewConnection(self, descr, event):  # noqa: N802
        from pysyncobj.poller import POLL_EVENT_TYPE

        if event & POLL_EVENT_TYPE.READ:
            try:
                sock, _addr = self._TcpServer__socket.accept()
            except OSError as e:
                if e.errno not in _ACCEPT_TRANSIENT:
                    # Out of descriptors or memory: stop listening (a level-triggered poller
                    # would spin on the pending connection) and let the transport rebind later.
                    self.unbind()
                    self.failed = True
                return
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._TcpServer__sendBufferSize)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._TcpServer__recvBufferSize)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(0)
                conn = self._connection_factory(
                    poller=self._TcpServer__poller,
                    socket=sock,
                    timeout=self._TcpServer__connectionTimeout,
                    sendBufferSize=self._TcpServer__sendBufferSize,
                    recvBufferSize=self._TcpServer__recvBufferSize,
                    keepalive=self._TcpServer__keepalive,
                    accepted_at=self._clock(),
                )
            except OSError:
                sock.close()  # this one connection failed (e.g. reset before setup); keep listening
                return
            self._TcpServer__onNewConnectionCallback(conn)

        if event & POLL_EVENT_TYPE.ERROR:
            self.unbind()
            self.failed = True


def check_pysyncobj() -> None:
    """Fail at start-up, not in the tick thread, if pysyncobj is not the version these seams fit."""
    verify(importlib.metadata.version("pysyncobj") == PYSYNCOBJ_VERSION, "pysyncobj is pinned at 0.3.17")
    for cls, names in (
        (TcpConnection, ("_TcpConnection__processRead", "_TcpConnection__processParseMessage",
                         "_TcpConnection__tryReadBuffer", "_TcpConnection__processConnection",
                         "_TcpConnection__processSend", "_TcpConnection__trySendBuffer")),
        (TcpServer, ("_TcpServer__onNewConnection", "bind", "unbind")),
    ):
        for name in names:
            verify(callable(getattr(cls, name, None)), f"pysyncobj {cls.__name__}.{name} exists")
    # Instance attributes the overrides read, created by the constructors.
    probe = TcpConnection(poller=None)
    for name in ("_TcpConnection__socket", "_TcpConnection__recvBufferSize", "_TcpConnection__poller",
                 "_TcpConnection__writeBuffer", "recvRandKey",
                 "recvLastTimestamp", "encryptor"):
        verify(hasattr(probe, name), f"pysyncobj TcpConnection has {name}")
    server = TcpServer(None, "127.0.0.1", 0, None)
    for name in ("_TcpServer__socket", "_TcpServer__poller", "_TcpServer__sendBufferSize",
                 "_TcpServer__recvBufferSize", "_TcpServer__connectionTimeout", "_TcpServer__keepalive",
                 "_TcpServer__onNewConnectionCallback"):
        verify(hasattr(server, name), f"pysyncobj TcpServer has {name}")
    verify(CONNECTION_STATE.CONNECTED == 2, "pysyncobj CONNECTION_STATE")
