"""A Raft-aware proxy on a validator link: duplicates, delays, reorders and replays AppendEntries.

Toxiproxy (chaos/toxi.py) acts on bytes; TCP never duplicates, reorders or
replays a message, so the drills never send pysyncobj the duplicated or stale
AppendEntries that makes it truncate entries it already acknowledged (the
hazard the adapter's ``raft_fixes`` close, node/raft/transport.py
``_fix_append_entries``). This proxy decodes every pysyncobj frame on the link
(the harness knows the cluster's Raft password) and acts on messages:

* ``append_entries`` (leader -> follower) and ``next_node_idx`` (its reply) are
  **duplicated** (a copy sent again later), **delayed** (held back by a random
  time, so later messages overtake it: **reordered**) and, for AppendEntries,
  **replayed**: a stale one, seen ``replay_depth_max`` messages ago or fewer, is
  sent again after newer ones. Raft §5.3 requires a follower to ignore all of
  these (receiver rules 2-5: never truncate entries that match).
* Every other message (the nonce exchange, the hello, votes, commands) is
  forwarded at once and in order.
* A targeted fault, :meth:`RaftProxy.mark` then :meth:`RaftProxy.strike`: replay
  the AppendEntries a given leader sent a given follower before the mark, after
  all newer ones, then cut that connection (frames dropped both ways) so the
  leader cannot repair it. With a third validator paused across the window this
  is exactly the event that makes pysyncobj lose a committed entry
  (tests/integration/test_raftproxy.py ``stale_replay_run``).

Frames and encryption are pysyncobj's: the 4-byte native ``'i'`` prefix read
through :class:`~raft_ledger_node.raft.wire.FrameBuffer`, Fernet from
``pysyncobj.encryptor.getEncryptor(password)``, ``zlib`` over
``pysyncobj.pickle``, and each message after the nonce exchange wrapped as
``(receiver's nonce, message)`` (TC:141-149, TR:443-460). The proxy re-encrypts
every frame when it sends it, stamped with ``int(monotonic())`` as pysyncobj's
sender does: the receiver requires non-decreasing stamps per connection
(wire.py ``_TcpConnection__processParseMessage``), which a held-back frame with
its original stamp would break. A replayed message is wrapped in the nonce of
the connection it is replayed on, so it passes the library's checks: exactly
what a Raft peer with the password could send.

TLS. In a TLS cluster (node/raft/tls.py) each end pins the SHA-256 of the exact
certificate of the validator it means to reach, so a proxy with a certificate
of its own, even one issued by the cluster CA, is refused. The harness does
hold every validator's certificate and key (init-cluster writes them into the
validator directories), so with :class:`ProxyTls` the proxy terminates TLS
presenting the dialled validator's own certificate, identifies the dialler by
its client certificate's SHA-256, and re-originates TLS to the validator with
the dialler's own certificate and key: both pins and the hello binding hold
(the proxy *is* both validators as far as TLS can tell). Without it the
cluster must run with ``insecure_plaintext`` (the Fernet layer still on).

Wiring: ``raft_peer_dial`` (node/config.py) in the diallers' configs points the
target's Raft address at :attr:`RaftProxy.listen`. pysyncobj's dialler is the
higher Raft address, so every validator with a higher address dials the target
through the proxy: for the lowest-address validator, all its links.

In the chaos suite (:class:`RaftLinks`, ``ChaosCluster(raft_proxy=True)``) there is
one proxy per link instead, chained in front of the link's Toxiproxy proxy
(dialler -> RaftProxy -> Toxiproxy -> listener; ``raft_address`` names the
validator behind the Toxiproxy hop), and the nemesis drives it through
:func:`inject_raft_messages` (scenario ``raft-messages``) and
:func:`inject_stale_replay` (``raft-stale-replay``).

The proxy runs its own asyncio loop in one thread; :meth:`RaftProxy.stop`
closes every socket and joins the thread.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import heapq
import itertools
import os
import random
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field

import pysyncobj.pickle as pysyncobj_pickle
from pysyncobj.encryptor import getEncryptor
from pysyncobj.monotonic import monotonic as monotonicTime

from raft_ledger_node.ledger import limits
from raft_ledger_node.localcluster import cluster_validators
from raft_ledger_node.raft.tls import link_context as tls_context
from raft_ledger_node.raft.wire import FRAME_PREFIX, FrameBuffer, FrameRejected

HOST = "127.0.0.1"
#: Messages the proxy acts on (all others are forwarded at once, in order).
FAULTED_TYPES = frozenset({"append_entries", "next_node_idx"})
#: Bytes read from a socket at a time.
READ_BYTES_MAX = 1 << 16
#: Seconds stop() waits for the proxy's thread.
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftFaults:
    """Probabilities (per faulted message) and bounds of the message faults.

    ``delay_s_max`` bounds every hold-back (delays and when a duplicate is sent
    again); a message held back is overtaken by the ones sent meanwhile.
    ``replay_depth_max``: a replayed AppendEntries is one of the last that many
    seen on the connection.
    """

    duplicate: float = 0.0
    delay: float = 0.0
    replay: float = 0.0
    delay_s_max: float = 0.3
    replay_depth_max: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        for p in (self.duplicate, self.delay, self.replay):
            assert 0.0 <= p <= 1.0, p
        assert 0.0 <= self.delay_s_max <= 5.0
        assert 1 <= self.replay_depth_max <= 1024


#: No faults: a transparent (decoding) proxy.
NO_FAULTS = RaftFaults()


@dataclass(frozen=True, slots=True)
class ProxyTls:
    """TLS for a proxy in front of one validator, made of the validators' own files.

    ``server_context``: what the proxy presents to diallers (the upstream
    validator's certificate and key; a dialler's certificate must chain to the
    cluster CA). ``client_contexts``: SHA-256 of a validator's DER certificate ->
    a client context with that validator's certificate and key, used to dial
    the upstream validator as the dialler.
    """

    server_context: ssl.SSLContext
    client_contexts: dict

    @classmethod
    def for_validator(cls, directory: str, upstream_id: str, validator_ids) -> "ProxyTls":
        """From a cluster made by ``init_cluster``: ``<dir>/ca/ca.crt.pem`` and each
        ``<dir>/<id>/tls.{crt,key}.pem``."""
        with open(os.path.join(directory, "ca", "ca.crt.pem"), "rb") as f:
            ca_pem = f.read()

        def files(vid):
            return os.path.join(directory, vid, "tls.crt.pem"), os.path.join(directory, vid, "tls.key.pem")

        server = tls_context(ssl.PROTOCOL_TLS_SERVER, *files(upstream_id), ca_pem)
        clients = {}
        for vid in validator_ids:
            cert, key = files(vid)
            with open(cert, "rb") as f:
                der = ssl.PEM_cert_to_DER_cert(f.read().decode("ascii"))
            clients[hashlib.sha256(der).digest()] = tls_context(ssl.PROTOCOL_TLS_CLIENT, cert, key, ca_pem)
        return cls(server, clients)


class MessageCodec:
    """pysyncobj's frame encoding for one cluster password (the library's own primitives)."""

    def __init__(self, password: str) -> None:
        self._fernet = getEncryptor(password)

    def decode(self, body: bytes):
        """A frame's body (after the length prefix) -> the pickled object (nonce wrapping kept)."""
        return pysyncobj_pickle.loads(zlib.decompress(self._fernet.decrypt(body)))

    def encode(self, obj) -> bytes:
        """The object -> a whole frame (prefix included), stamped now, as TcpConnection.send does."""
        data = self._fernet.encrypt_at_time(zlib.compress(pysyncobj_pickle.dumps(obj), 3), int(monotonicTime()))
        return FRAME_PREFIX.pack(len(data)) + data


@dataclass
class FaultStats:
    """What the proxy did, for the test's evidence: counts per message type and fault."""

    forwarded: collections.Counter = field(default_factory=collections.Counter)
    duplicated: collections.Counter = field(default_factory=collections.Counter)
    delayed: collections.Counter = field(default_factory=collections.Counter)
    replayed: int = 0
    #: TLS diallers whose certificate is no validator's (their connection was closed).
    unknown_diallers: int = 0
    #: Frames dropped on a connection cut by a strike.
    dropped: int = 0
    strikes: int = 0
    connections: int = 0
    #: Frames that did not decode (the connection was closed): must stay 0.
    undecodable: int = 0

    def snapshot(self) -> dict:
        return {"forwarded": dict(self.forwarded), "duplicated": dict(self.duplicated),
                "delayed": dict(self.delayed), "replayed": self.replayed,
                "dropped": self.dropped, "strikes": self.strikes, "unknown_diallers": self.unknown_diallers,
                "connections": self.connections, "undecodable": self.undecodable}


class _Connection:
    """One proxied connection: its dialler (from its hello), its two directions, and
    whether a :meth:`RaftProxy.strike` has cut it (every later frame dropped, both ways)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.dialer: str | None = None
        self.cut = False
        self.to_upstream: "_Direction | None" = None
        self.to_dialer: "_Direction | None" = None
        #: Both ends' stream writers: closing them ends the connection (heal() of a cut one).
        self.writers: tuple = ()

    def direction_from(self, address: str) -> "_Direction | None":
        if address == self.dialer:
            return self.to_upstream
        if address == self.upstream:
            return self.to_dialer
        return None


class _Direction:
    """One direction of one proxied connection: decode, decide, schedule, re-encode, write.

    ``schedule`` is a heap of (send time, sequence, message): messages due
    at the same time keep their arrival order; a held-back one is overtaken.
    """

    def __init__(self, proxy: "RaftProxy", conn: _Connection, reader, writer, name: str) -> None:
        self.proxy = proxy
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.name = name
        #: Nonce this direction's receiver expects, learnt from the first wrapped message.
        self.nonce: bytes | None = None
        self.recent: collections.deque = collections.deque(maxlen=proxy.faults.replay_depth_max)
        self.schedule: list = []
        self.seq = itertools.count()
        self.wake = asyncio.Event()
        #: The newest AppendEntries when :meth:`RaftProxy.mark` was last called: what strike replays.
        self.marked: dict | None = None
        self.last_append: dict | None = None
        #: Set when a strike's stale message has been written.
        self.struck = asyncio.Event()

    def _put(self, delay_s: float, message) -> None:
        heapq.heappush(self.schedule, (self.proxy.loop.time() + delay_s, next(self.seq), message))
        self.wake.set()

    def _on_message(self, obj) -> None:
        f, rng, st = self.proxy.faults, self.proxy.rng, self.proxy.stats
        if self.conn.cut:
            st.dropped += 1
            return
        wrapped = isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], dict)
        if not wrapped:
            if self is self.conn.to_upstream and isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], str):
                self.conn.dialer = obj[1]  # the hello: the dialler's Raft address (TR:353)
            self._put(0.0, ("raw", obj))  # nonce exchange, hello: at once, in order
            return
        nonce, message = obj
        self.nonce = nonce
        kind = message.get("type")
        st.forwarded[kind] += 1
        if kind == "append_entries":
            self.last_append = message
        if kind not in FAULTED_TYPES or not self.proxy.enabled:
            self._put(0.0, ("msg", message))
            return
        if rng.random() < f.delay:
            st.delayed[kind] += 1
            self._put(rng.uniform(0.0, f.delay_s_max), ("msg", message))
        else:
            self._put(0.0, ("msg", message))
        if rng.random() < f.duplicate:
            st.duplicated[kind] += 1
            self._put(rng.uniform(0.0, f.delay_s_max), ("msg", message))
        if kind == "append_entries":
            if self.recent and rng.random() < f.replay:
                st.replayed += 1
                stale = self.recent[rng.randrange(len(self.recent))]
                self._put(rng.uniform(0.0, f.delay_s_max), ("msg", stale))
            self.recent.append(message)

    async def read_loop(self) -> None:
        frames = FrameBuffer(limits.raft_frame_bytes_max)
        try:
            while True:
                data = await self.reader.read(min(READ_BYTES_MAX, max(1, frames.room())))
                if not data:
                    return
                frames.feed(data)
                while (body := frames.pop()) is not None:
                    try:
                        obj = self.proxy.codec.decode(body)
                    except Exception:
                        self.proxy.stats.undecodable += 1
                        return
                    self._on_message(obj)
        except (FrameRejected, ConnectionError, OSError):
            return

    async def write_loop(self) -> None:
        while True:
            if not self.schedule:
                self.wake.clear()
                await self.wake.wait()
                continue
            due = self.schedule[0][0] - self.proxy.loop.time()
            if due > 0:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), due)
                except asyncio.TimeoutError:
                    pass
                continue
            _, _, (kind, payload) = heapq.heappop(self.schedule)
            if self.conn.cut:
                continue
            obj = payload if kind == "raw" else (self.nonce, payload)
            self.writer.write(self.proxy.codec.encode(obj))
            await self.writer.drain()
            if kind == "strike":
                self.conn.cut = True
                self.schedule.clear()
                self.struck.set()


class RaftProxy:
    """A decoding proxy from :attr:`listen` to ``upstream`` (a validator's Raft address).

    ``faults`` may be replaced while running (:meth:`set_faults`); ``enabled``
    False forwards everything untouched in order (still decoded and re-encoded).
    ``raft_address``: the Raft address of the validator behind ``upstream`` when
    ``upstream`` is not that validator itself but a hop in front of it (a
    Toxiproxy listener, :class:`RaftLinks`); it names the connection's far end
    for :meth:`strike`. Default: ``upstream``.
    """

    def __init__(self, upstream: str, password: str, faults: RaftFaults = NO_FAULTS, *, port: int = 0,
                 tls: ProxyTls | None = None, raft_address: str | None = None) -> None:
        self.upstream = upstream
        self.raft_address = raft_address or upstream
        self.tls = tls
        self.codec = MessageCodec(password)
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.stats = FaultStats()
        self.enabled = True
        self._port = port
        self.listen: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._tasks: set = set()
        self._conns: set[_Connection] = set()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def set_faults(self, faults: RaftFaults) -> None:
        def apply():
            self.faults = faults
            self.rng = random.Random(faults.seed)
        self.loop.call_soon_threadsafe(apply)

    # -- the targeted fault ---------------------------------------------------------
    def mark(self) -> None:
        """Remember, on every live connection, the newest AppendEntries seen so far in each
        direction: the stale message a later :meth:`strike` replays."""
        def apply():
            for c in self._conns:
                for d in (c.to_upstream, c.to_dialer):
                    d.marked = d.last_append
        self._call(apply)

    def strike(self, leader: str, follower: str, timeout_s: float = STOP_TIMEOUT_S) -> dict:
        """Replay, on the live connection between ``leader`` and ``follower`` (Raft addresses),
        the AppendEntries the leader sent before the last :meth:`mark`, after all newer ones,
        then cut that connection (every later frame dropped both ways, as a partition) so the
        leader cannot repair what the stale message did. Returns the replayed message's
        ``prevLogIdx``, ``term`` and entry count. Raises RuntimeError if there is no such
        connection or nothing was marked on it.

        This is the exact event pysyncobj's truncation needs (SO:991-1000): a follower that
        matches ``prevLogIdx`` deletes every entry after it, acknowledged or not.
        """
        async def arm():
            for c in self._conns:
                d = c.direction_from(leader) if {c.dialer, c.upstream} == {leader, follower} else None
                if d is not None and d.marked is not None:
                    d.struck.clear()
                    d._put(0.0, ("strike", d.marked))
                    self.stats.strikes += 1
                    await asyncio.wait_for(d.struck.wait(), timeout_s)
                    m = d.marked
                    return {"prevLogIdx": m.get("prevLogIdx"), "term": m.get("term"), "entries": len(m.get("entries", []))}
            raise RuntimeError(f"no marked connection from {leader} to {follower} on this proxy")
        return asyncio.run_coroutine_threadsafe(arm(), self.loop).result(timeout_s + 1)

    def heal(self) -> int:
        """No faults from now on, and every connection a :meth:`strike` cut closed (pysyncobj
        redials, on a clean connection). Messages already held back are still delivered,
        within ``delay_s_max``. Returns how many cut connections were closed."""
        def apply():
            self.faults = NO_FAULTS
            closed = 0
            for c in list(self._conns):
                if c.cut:
                    closed += 1
                    for w in c.writers:
                        w.close()
            return closed
        return self._call(apply) or 0

    def _call(self, fn):
        """Run ``fn`` in the proxy's loop and return its result (None if it did not run in time)."""
        done = threading.Event()
        out = []
        def run():
            try:
                out.append(fn())
            finally:
                done.set()
        self.loop.call_soon_threadsafe(run)
        done.wait(STOP_TIMEOUT_S)
        return out[0] if out else None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "RaftProxy":
        self._thread = threading.Thread(target=self._run, name="raftproxy", daemon=True)
        self._thread.start()
        self._ready.wait(STOP_TIMEOUT_S)
        if self._error is not None:
            raise self._error
        if self.listen is None:
            raise RuntimeError("raft proxy did not start")
        return self

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self._server = self.loop.run_until_complete(asyncio.start_server(
                self._on_client, HOST, self._port, ssl=self.tls.server_context if self.tls else None))
            host, port = self._server.sockets[0].getsockname()[:2]
            self.listen = f"{host}:{port}"
        except BaseException as e:  # surfaces in start()
            self._error = e
            self._ready.set()
            self.loop.close()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def stop(self) -> None:
        if self.loop is None or self._thread is None:
            return

        async def shutdown():
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.loop.stop()

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        self._thread.join(STOP_TIMEOUT_S)
        self._thread = None

    def __enter__(self) -> "RaftProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- connections -----------------------------------------------------------------
    async def _on_client(self, c_reader, c_writer) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        host, port = self.upstream.rsplit(":", 1)
        u_writer = None
        conn = None
        try:
            upstream_ssl = None
            if self.tls is not None:
                # Dial the validator as the dialler: its own certificate, found by the one it showed us.
                der = c_writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                upstream_ssl = self.tls.client_contexts.get(hashlib.sha256(der or b"").digest())
                if upstream_ssl is None:
                    self.stats.unknown_diallers += 1
                    return
            u_reader, u_writer = await asyncio.open_connection(host, int(port), ssl=upstream_ssl)
            self.stats.connections += 1
            conn = _Connection(self.raft_address)
            down = conn.to_upstream = _Direction(self, conn, c_reader, u_writer, "to-upstream")
            up = conn.to_dialer = _Direction(self, conn, u_reader, c_writer, "to-dialler")
            conn.writers = (c_writer, u_writer)
            self._conns.add(conn)
            loops = [asyncio.ensure_future(x) for x in
                     (down.read_loop(), down.write_loop(), up.read_loop(), up.write_loop())]
            try:
                # Either end closing (or a bad frame) closes both: pysyncobj reconnects.
                await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in loops:
                    t.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
        except (OSError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self._conns.discard(conn)
            for w in (c_writer, u_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)


# -- the chaos suite's use: one proxy per validator link, and the two scenarios ------------

#: ``raft-messages`` windows: each probability is drawn uniformly from its range (per
#: AppendEntries / next_node_idx, per link) and the proxies' generator is seeded by the window.
RAFT_MESSAGES_DUPLICATE = (0.1, 0.4)
RAFT_MESSAGES_DELAY = (0.1, 0.4)
RAFT_MESSAGES_REPLAY = (0.05, 0.25)
#: Bound on a held-back message in ``raft-messages`` windows, seconds (well under the
#: election timeout, so the faults are reorderings, not partitions).
RAFT_MESSAGES_DELAY_S_MAX = 0.2
#: ``raft-stale-replay``: how long the leader commits with one follower alone (the third
#: paused) before the stale AppendEntries is replayed, seconds: long enough for the bank
#: to have transfers acknowledged and for the follower to apply them.
STALE_REPLAY_COMMIT_S = 1.5
#: How long the stale-replay window looks for the leader, seconds.
STALE_REPLAY_LEADER_TIMEOUT_S = 5.0


def _raft_password(directory: str, validator_id: str) -> str:
    with open(os.path.join(directory, validator_id, "config.json")) as f:
        return json.load(f)["raft_password"]


def summed_stats(proxies) -> dict:
    """The :class:`FaultStats` snapshots of ``proxies`` (RaftProxy) summed: counters added,
    per-kind counters added kind by kind."""
    out: dict = {}
    for p in proxies:
        for k, v in p.stats.snapshot().items():
            if isinstance(v, dict):
                for kind, n in v.items():
                    out.setdefault(k, {}).setdefault(kind, 0)
                    out[k][kind] += n
            else:
                out[k] = out.get(k, 0) + v
    return out


class RaftLinks:
    """The RaftProxies of a chaos cluster (chaos/cluster.py ``ChaosCluster(raft_proxy=True)``).

    Chained in front of the link's Toxiproxy proxy: the dialler i dials a
    RaftProxy, which dials the Toxiproxy listener of link "i-j", which dials j.
    So every Toxiproxy fault still acts on the link (bytes, below TLS) and the
    message faults act above it (decoded pysyncobj messages, inside TLS). In a
    TLS cluster each proxy presents j's certificate and dials as i
    (:class:`ProxyTls`); in a plaintext one it dials in clear.

    ``directory`` is the cluster directory made by ``init_cluster`` (configs hold
    the Raft password; ``ca/`` exists iff the cluster runs TLS).
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.proxies: dict[str, RaftProxy] = {}
        self.faults: RaftFaults = NO_FAULTS

    def add(self, name: str, listener_id: str, dial_to: str, raft_address: str, validator_ids) -> str:
        """A proxy for link ``name`` to validator ``listener_id`` (``raft_address``), dialling
        ``dial_to`` (its Toxiproxy listener). Returns the address the dialler must dial."""
        if name not in self.proxies:
            tls = None
            if os.path.exists(os.path.join(self.directory, "ca", "ca.crt.pem")):
                tls = ProxyTls.for_validator(self.directory, listener_id, list(validator_ids))
            proxy = RaftProxy(dial_to, _raft_password(self.directory, listener_id), self._link_faults(len(self.proxies)),
                              tls=tls, raft_address=raft_address)
            self.proxies[name] = proxy.start()
        return self.proxies[name].listen

    def _link_faults(self, index: int) -> RaftFaults:
        # One generator per link, each seeded from the window's seed: a seed replays per link.
        return dataclasses.replace(self.faults, seed=self.faults.seed * 1_000 + index)

    def set_faults(self, faults: RaftFaults) -> None:
        self.faults = faults
        for i, name in enumerate(sorted(self.proxies)):
            self.proxies[name].set_faults(self._link_faults(i))

    def mark(self) -> None:
        for p in self.proxies.values():
            p.mark()

    def strike(self, leader_raft: str, follower_raft: str) -> dict:
        """:meth:`RaftProxy.strike` on whichever proxy carries the leader-follower link.
        Raises RuntimeError if none has a marked connection between them."""
        for p in self.proxies.values():
            try:
                return p.strike(leader_raft, follower_raft)
            except RuntimeError:
                continue
        raise RuntimeError(f"no marked proxied connection between {leader_raft} and {follower_raft}")

    def heal(self) -> dict:
        """No message faults anywhere; connections cut by a strike closed. Returns what it did."""
        self.faults = NO_FAULTS
        closed = sum(p.heal() for p in self.proxies.values())
        return {"raft_faults_cleared": len(self.proxies), "cut_connections_closed": closed}

    def stats(self) -> dict:
        """The proxies' :class:`FaultStats` summed over all links."""
        return summed_stats(self.proxies.values())

    def stop(self) -> None:
        for p in self.proxies.values():
            p.stop()
        self.proxies.clear()


def inject_raft_messages(cluster, draws: list[float]) -> tuple[list[str], dict]:
    """The ``raft-messages`` fault: every link duplicates, delays (so reorders) AppendEntries
    and their replies and replays stale AppendEntries after newer ones, with probabilities
    and a seed from the window's uniform ``draws`` (4 of them). Raft §5.3 (receiver rules
    2-5): a follower must treat every one of these as a no-op. Returns (targets, detail)."""
    def lerp(r, u):
        return round(r[0] + u * (r[1] - r[0]), 3)
    faults = RaftFaults(duplicate=lerp(RAFT_MESSAGES_DUPLICATE, draws[0]), delay=lerp(RAFT_MESSAGES_DELAY, draws[1]),
                        replay=lerp(RAFT_MESSAGES_REPLAY, draws[2]), delay_s_max=RAFT_MESSAGES_DELAY_S_MAX,
                        seed=int(draws[3] * 2**31))
    cluster.raft_links.set_faults(faults)
    return sorted(cluster.validator_ids), {"duplicate": faults.duplicate, "delay": faults.delay, "replay": faults.replay,
                                           "delay_s_max": faults.delay_s_max, "seed": faults.seed}


def inject_stale_replay(cluster, draws: list[float]) -> tuple[list[str], dict]:
    """The ``raft-stale-replay`` fault: the exact event that makes pysyncobj lose a committed
    entry (SO:991-1000; Raft §5.3 receiver rule 3 allows truncation only on a conflict).

    Leader L, followers F (chosen by ``draws[1]``) and G: mark the newest AppendEntries on
    every link, SIGSTOP G, let the bank commit on {L, F} for ``STALE_REPLAY_COMMIT_S``,
    replay L's marked AppendEntries to F after all newer ones and cut L-F, SIGKILL L,
    SIGCONT G. Unsafe (``raft_fixes`` off) F truncates its log to the stale message, so
    the new majority {F, G} lacks transfers the bank saw acknowledged; with the fixes F
    keeps them and wins the election (§5.4.1). The window's heal restarts L and closes the
    cut connection. No leader found: nothing injected. Returns (targets, detail)."""
    leader = cluster.leader(timeout_s=STALE_REPLAY_LEADER_TIMEOUT_S)
    if leader is None:
        return [], {"skipped": "no leader"}
    others = sorted(v for v in cluster.validator_ids if v != leader)
    follower = others[min(int(draws[1] * len(others)), len(others) - 1)]
    paused = [v for v in others if v != follower]
    raft = {v.id: v.raft_address for v in cluster_validators(cluster.directory)}
    links = cluster.raft_links
    links.mark()
    for g in paused:
        cluster.pause(g)
    time.sleep(STALE_REPLAY_COMMIT_S)
    detail = {"leader": leader, "follower": follower, "paused": paused}
    try:
        detail["replayed"] = links.strike(raft[leader], raft[follower])
    except RuntimeError as e:  # the link reconnected since the mark: nothing stale to replay
        detail["strike_error"] = str(e)
    cluster.kill(leader)
    for g in paused:
        cluster.resume(g)
    return [leader, follower, *paused], detail
