"""LedgerTransport: pysyncobj's TCPTransport with the flush before ack and two Raft fixes.

* **Flush before acknowledging.** An AppendEntries reply (``next_node_idx``) or a
  vote (``response_vote``) leaves only after the journal is synced (Raft §5.1,
  Figure 2; see :mod:`raft_ledger_node.raft.journal`).
* **Truncate only on conflict.** On an AppendEntries whose ``prevLogIdx`` is
  behind the follower's last entry, ``syncobj.py`` deletes every later entry even
  when they match. Raft §5.3 (AppendEntries receiver rule 3) truncates only from
  the first entry whose term conflicts. :meth:`LedgerTransport._fix_append_entries`
  drops entries the follower already holds, leaves the rest to the library,
  caps the leader commit index at the last entry the message vouches for
  (receiver rule 5) and never reports a match beyond it.
* **nextIndex never moves back on success.** pysyncobj sets a follower's
  nextIndex to the index in every successful reply, so with several entries in
  flight each ack of an older one made the leader send the newer ones again
  (every entry went out about twice at peak). A successful reply now only raises
  matchIndex; a failed consistency check (``reset``) still rewinds nextIndex
  (:meth:`LedgerTransport._on_success_reply`).
* **Learners and promoted directories.** Over TLS, a read-only hello (a learner,
  node/raft/membership.py) is accepted from a certificate pinned to a validator of
  the governed set (a voter that lost its disk catches up as a learner); a ``request_vote`` of a term up to the replica's
  ``_vote_after_term`` is dropped (a directory promoted in term T may not vote in
  terms <= T: the lost validator it replaces may have voted in them).
* **Snapshot transfers longer than the link timeout.** The receiver of a snapshot
  answers every chunk (``TRANSMISSION_ACK``, ignored by pysyncobj): pysyncobj answers
  only the last, and the sender drops a link that received nothing for
  ``connectionTimeout`` (3.5 s), so a snapshot that took longer to send never arrived.
* **Pre-Vote and CheckQuorum** (see :mod:`raft_ledger_node.raft.prevote`): every
  received message passes the replica's ``_election_guard`` first (it consumes
  pre-votes and vote requests within a leader's lease), and every ``request_vote``
  sent during a leadership transfer is tagged ``transfer``.
* **Peer dial addresses.** A peer can be dialled at another address than its
  identity (a Toxiproxy listener in the chaos suite).
* **Mutual TLS pinned to genesis** (see :mod:`raft_ledger_node.raft.tls`) when the
  replica has ``_raft_tls``: every connection is a
  :class:`~raft_ledger_node.raft.tls.TlsConnection`, the one we dial pinned to the
  validator at that genesis address, and an incoming peer's hello must be the
  address of the validator its certificate is pinned to
  (:meth:`LedgerTransport._onIncomingMessageReceived`). A dialled peer that has not
  finished its handshakes within ``raft_handshake_timeout_s`` is closed too.
* **Hostile input on the Raft port** (see :mod:`raft_ledger_node.raft.wire`).
  Every connection is a :class:`~raft_ledger_node.raft.wire.LedgerConnection`
  whose frames are capped before they are buffered: at
  ``raft_handshake_frame_bytes_max`` until the peer has authenticated (the
  transport's ``_onNodeConnected``: an incoming peer has sent our nonce back
  encrypted with its address; a peer we dialled has sent its encrypted nonce),
  ``raft_frame_bytes_max`` after. At most ``raft_unauthenticated_connections_max``
  incoming connections may be unauthenticated (a new one past it is closed at
  once), each for at most ``raft_handshake_timeout_s`` (checked every tick, so an
  idle socket is closed too). A listener unbound by an accept error is bound
  again after ``bindRetryTime``.

The transport's ``syncObj`` is a :class:`~raft_ledger_node.raft.durable.DurableReplica`:
it reads ``_peer_dial``, ``_raft_fixes``, ``_journal()`` and ``_sync_journal()``
from it. With ``raft_fixes=False`` the truncation fix is off, so the chaos suite
can show what it prevents.
"""
from __future__ import annotations

import functools

from pysyncobj.dns_resolver import globalDnsResolver
from pysyncobj.monotonic import monotonic as monotonicTime
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from raft_ledger_node.ledger import limits
from raft_ledger_node.raft import tls as raft_tls
from raft_ledger_node.raft.wire import LedgerConnection, LedgerServer, check_pysyncobj

#: TCPTransport members the overrides below rely on (pysyncobj 0.3.17), checked at start-up.
_TRANSPORT_METHODS = (
    "addNode", "_createServer", "_onTick", "_onNewIncomingConnection", "_onIncomingMessageReceived",
    "_onOutgoingConnected", "_onMessageReceived", "_onDisconnected", "_onNodeConnected",
    "_onReadonlyNodeConnected", "_connectIfNecessarySingle", "_shouldConnect",
)
_TRANSPORT_ATTRIBUTES = ("_syncObj", "_server", "_connections", "_unknownConnections", "_nodes",
                         "_nodeAddrToNode", "_lastConnectAttempt", "_selfNode")


#: Sent back for every snapshot chunk received (see setOnMessageReceivedCallback).
TRANSMISSION_ACK = "ledger_transmission_ack"


class LedgerTransport(TCPTransport):
    """TCPTransport that flushes the journal before acknowledging, and fixes truncation."""

    def __init__(self, syncObj, selfNode, otherNodes):  # noqa: N803
        check_pysyncobj()
        for name in _TRANSPORT_METHODS:
            if not callable(getattr(TCPTransport, name, None)):
                raise RuntimeError(f"pysyncobj TCPTransport.{name} is missing (pinned at 0.3.17)")
        self._last_rebind = 0.0
        super().__init__(syncObj, selfNode, otherNodes)
        for name in _TRANSPORT_ATTRIBUTES:
            if not hasattr(self, name):
                raise RuntimeError(f"pysyncobj TCPTransport has no {name} (pinned at 0.3.17)")
        self._replica = syncObj
        self._reply_cap: int | None = None

    # -- hostile input: bounded frames, unauthenticated connections, the listener -----
    def addNode(self, node):  # noqa: N802
        """As pysyncobj's (TR:511-533), but the connection we dial is a LedgerConnection."""
        self._nodes.add(node)
        self._nodeAddrToNode[node.address] = node
        if self._shouldConnect(node):
            conf = self._syncObj.conf
            kwargs = dict(
                poller=self._syncObj._poller,
                timeout=conf.connectionTimeout,
                sendBufferSize=conf.sendBufferSize,
                recvBufferSize=conf.recvBufferSize,
                keepalive=conf.tcp_keepalive,
            )
            tls = self._tls()
            if tls is None:
                conn = LedgerConnection(**kwargs)
            else:
                # Pinned to the validator at this *genesis* address, wherever we dial it (peer_dial).
                conn = raft_tls.TlsConnection(tls=tls, expected_address=node.address, **kwargs)
            conn.encryptor = self._syncObj.encryptor
            conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
            conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
            self._connections[node] = conn

    def _createServer(self):  # noqa: N802
        """As pysyncobj's (TR:258-282), but the server is a LedgerServer."""
        conf = self._syncObj.conf
        bind_addr = conf.bindAddress
        self_addr = getattr(self._selfNode, "address")
        if bind_addr is not None:
            host, port = bind_addr.rsplit(":", 1)
        elif self_addr is not None:
            host, port = self_addr.rsplit(":", 1)
            host = "::" if ":" in host else "0.0.0.0"
        else:
            raise RuntimeError("Unable to determine bind address")
        if host != "0.0.0.0":
            host = globalDnsResolver().resolve(host)
        self._server = LedgerServer(
            self._syncObj._poller, host, port, onNewConnection=self._onNewIncomingConnection,
            sendBufferSize=conf.sendBufferSize, recvBufferSize=conf.recvBufferSize,
            connectionTimeout=conf.connectionTimeout, clock=monotonicTime,
            connection_factory=None if self._tls() is None else functools.partial(raft_tls.TlsConnection, tls=self._tls()),
        )

    def _tls(self) -> "raft_tls.RaftTls | None":
        # Read from the replica (set before SyncObj.__init__, which builds this transport).
        return getattr(self._syncObj, "_raft_tls", None)

    def _onNewIncomingConnection(self, conn):  # noqa: N802
        if len(self._unknownConnections) >= limits.raft_unauthenticated_connections_max:
            conn.disconnect()  # no callbacks set yet: just closes the socket
            return
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn, message):  # noqa: N802
        """Over TLS, bind pysyncobj's hello to the certificate (see :mod:`.tls`).

        The first message is the peer's Fernet nonce (TR:342-346); the next is its hello:
        its Raft address (TR:353), a ``'readonly'`` marker or a utility command (TR:349).
        Over TLS only the address of the validator the certificate is pinned to is
        accepted; anything else closes the connection before pysyncobj maps it to a node.
        """
        if isinstance(conn, raft_tls.TlsConnection) and (conn.sendRandKey or not self._syncObj.encryptor):
            if message == "readonly" and conn.peer is not None:
                # A learner (node/raft/membership.py): a validator of the governed set whose
                # pinned certificate this is (a voter's too: a voter that lost its disk runs
                # as a learner until it is replaced). pysyncobj maps a read-only link to a
                # node of its own (TR:357-362), never to the voter's: it takes over no link
                # and counts toward no majority.
                super()._onIncomingMessageReceived(conn, message)
                return
            verdict = raft_tls.check_hello(message, conn.peer)
            node = self._nodeAddrToNode.get(message) if verdict is raft_tls.PinVerdict.ok else None
            if node is not None and self._shouldConnect(node):
                # We dial this validator ourselves (TR:409: the higher address dials): pysyncobj
                # would replace our outgoing connection with this one (TR:368) and later re-dial
                # through it (TR:427). A genuine peer never does this.
                verdict = raft_tls.PinVerdict.address_not_certified
            if verdict is not raft_tls.PinVerdict.ok:
                raft_tls.refused(verdict.name, f"certificate of {conn.peer.validator_id if conn.peer else None!r}")
                conn.disconnect()
                self._unknownConnections.discard(conn)
                return
        super()._onIncomingMessageReceived(conn, message)

    def _onNodeConnected(self, node):  # noqa: N802
        # The peer has proved it holds the password (pysyncobj's handshake is done): lift the cap.
        conn = self._connections.get(node)
        if isinstance(conn, LedgerConnection):
            conn.raise_cap()
        super()._onNodeConnected(node)

    def _onReadonlyNodeConnected(self, node):  # noqa: N802
        conn = self._connections.get(node)
        if isinstance(conn, LedgerConnection):
            conn.raise_cap()
        super()._onReadonlyNodeConnected(node)

    def _onTick(self):  # noqa: N802
        super()._onTick()
        now = monotonicTime()
        for conn in list(self._unknownConnections):
            accepted_at = getattr(conn, "accepted_at", None)
            if accepted_at is not None and now - accepted_at > limits.raft_handshake_timeout_s:
                conn.disconnect()  # its callback drops it from _unknownConnections
                self._unknownConnections.discard(conn)
        for conn in list(self._connections.values()):
            # A peer we dialled that has not finished its handshakes (TLS, then pysyncobj's
            # nonce) in time: a stalled or hostile listener must not hold the link forever
            # (pysyncobj's own timeout is checked only on socket events, TC:186).
            dialled_at = getattr(conn, "dialled_at", None)
            if (dialled_at is not None and not conn.authenticated and conn.state != CONNECTION_STATE.DISCONNECTED
                    and now - dialled_at > limits.raft_handshake_timeout_s):
                conn.disconnect()
        server = self._server
        if isinstance(server, LedgerServer) and server.failed and now - self._last_rebind >= self._syncObj.conf.bindRetryTime:
            self._last_rebind = now
            try:
                server.bind()
            except OSError:
                pass  # still out of descriptors: try again after bindRetryTime

    def _connectIfNecessarySingle(self, node):  # noqa: N802
        """As pysyncobj's, but dial a peer at its configured dial address (e.g. a Toxiproxy
        listener in the chaos suite); the peer's identity stays its genesis Raft address."""
        dial = self._replica._peer_dial.get(node.address)
        if dial is None:
            return super()._connectIfNecessarySingle(node)
        if node in self._connections and self._connections[node].state != CONNECTION_STATE.DISCONNECTED:
            return True
        if not self._shouldConnect(node):
            return False
        if node in self._lastConnectAttempt and monotonicTime() - self._lastConnectAttempt[node] < self._syncObj.conf.connectionRetryTime:
            return False
        self._lastConnectAttempt[node] = monotonicTime()
        host, port = dial.rsplit(":", 1)
        return self._connections[node].connect(host, int(port))

    def send(self, node, message):
        guard = getattr(self._replica, "_election_guard", None)
        if guard is not None:
            message = guard.tag_outgoing(message)
        if message.get("type") in ("next_node_idx", "response_vote"):
            self._replica._sync_journal()
            if self._reply_cap is not None and message["type"] == "next_node_idx" and message.get("success"):
                message = dict(message, next_node_idx=min(message["next_node_idx"], self._reply_cap))
        return super().send(node, message)

    def setOnMessageReceivedCallback(self, callback):  # noqa: N802
        def on_message(node, message):
            kind = message.get("type")
            if kind == "request_vote" and message.get("term", 0) <= getattr(self._replica, "_vote_after_term", 0):
                # A promoted data directory does not vote in the terms up to its promotion:
                # the validator it replaces (same Raft address) may have voted in them.
                return
            guard = getattr(self._replica, "_election_guard", None)
            if guard is not None and guard.on_message(node, message):
                return  # a pre-vote, or a vote request within the lease (raft/prevote.py)
            if self._replica._raft_fixes and kind == "append_entries":
                message = self._fix_append_entries(message)
            try:
                if kind == "next_node_idx" and message.get("success") and not message.get("reset"):
                    self._on_success_reply(callback, node, message)
                else:
                    callback(node, message)
                if kind == "append_entries" and message.get("serialized") is not None:
                    # A snapshot chunk: pysyncobj answers only the last one, so the sender, which
                    # times a link out after connectionTimeout without a byte received (TC:228),
                    # dropped every transfer longer than that (a 127 MB snapshot never arrived).
                    # Any message refreshes its timer; pysyncobj ignores unknown types.
                    TCPTransport.send(self, node, {"type": TRANSMISSION_ACK})
            finally:
                self._reply_cap = None

        super().setOnMessageReceivedCallback(on_message if callback is not None else None)

    def _on_success_reply(self, callback, node, message) -> None:
        """Let a successful AppendEntries reply raise matchIndex, never lower nextIndex.

        pysyncobj sets nextIndex to the reply's index on every success, so with
        several entries in flight each ack of an older entry moved nextIndex back
        and the leader sent the newer entries again: at peak every entry went to
        every follower about twice (1,535 entry sends for 384 entries x 2
        followers in a traced run). Raft only needs nextIndex as a hint; a
        leader may pipeline past it and falls back on a failed consistency check,
        which pysyncobj signals with ``reset`` and still handles itself (the
        Raft paper §5.3; etcd's raft keeps next = max(next, match + 1) the same way).
        """
        next_index = getattr(self._replica, "_SyncObj__raftNextIndex", None)
        before = None if next_index is None else next_index.get(node)
        callback(node, message)
        if before is not None and next_index.get(node, before) < before:
            next_index[node] = before

    def _fix_append_entries(self, m: dict) -> dict:
        """Raft §5.3 receiver rules 3–5 around pysyncobj's handler.

        Entries the follower already holds with the same term are dropped from
        the message; if everything matched and the follower's log is longer,
        the message is rewritten so the library sees no reason to truncate,
        and the reply and the commit index are capped at the last entry the
        leader vouched for.
        """
        if "prevLogIdx" not in m or m.get("transmission") is not None:
            return m
        log_ = self._replica._journal()
        if log_ is None or len(log_) == 0:
            return m
        first_idx, last_idx = log_[0][1], log_[-1][1]
        prev_idx, prev_term = m["prevLogIdx"], m["prevLogTerm"]
        entries = list(m.get("entries", []))
        vouched = prev_idx + len(entries)
        # Receiver rule 2: without a matching prev entry the library replies failure; leave it.
        if prev_idx is None or prev_term is None or not (first_idx <= prev_idx <= last_idx):
            return m
        if log_[prev_idx - first_idx][2] != prev_term:
            return m
        skip = 0
        for command, idx, term in entries:
            if idx > last_idx:
                break
            if idx >= first_idx and log_[idx - first_idx][2] != term:
                break  # first conflict: the library truncates from here (rule 3)
            skip += 1
        m = dict(m)
        if skip:
            prev_idx, prev_term = entries[skip - 1][1], entries[skip - 1][2]
            entries = entries[skip:]
            m["prevLogIdx"], m["prevLogTerm"], m["entries"] = prev_idx, prev_term, entries
        if not entries and prev_idx < last_idx:
            # Nothing new and our log is longer: present our last entry as prev so the
            # library does not truncate, but never let it report or commit past `vouched`.
            m["prevLogIdx"], m["prevLogTerm"] = last_idx, log_[-1][2]
            self._reply_cap = vouched + 1
        m["commit_index"] = min(m["commit_index"], vouched)
        return m
