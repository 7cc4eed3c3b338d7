"""pysyncobj 0.3.17 adapter: one replicated method, a durable journal, Raft §5.3 truncation.

What the library does not give, and this module adds (see ../shared/design.md):

* **Durable journal.** pysyncobj's ``FileJournal`` writes entries into an mmap
  and never flushes them; its term/vote meta file is renamed into place without
  fsync. :class:`DurableFileJournal` marks the journal dirty on every append and
  flushes it (``mmap.flush`` = ``msync(MS_SYNC)``) once per group, before any
  acknowledgement: a follower flushes before its AppendEntries reply leaves
  (``next_node_idx``, see :class:`LedgerTransport`), the leader flushes at the
  start of every tick, before it counts its own log toward the commit index.
  The meta file (currentTerm, votedFor) is fsynced, file and directory, before
  ``setCurrentTerm`` returns, i.e. before a vote is sent (Raft §5.1, Figure 2
  "Persistent state ... updated on stable storage before responding to RPCs").
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
* **The leader does not decode its own entries.** :meth:`LedgerReplica.propose`
  keeps the decoded entry the batcher encoded and applies that when it commits.
* **Exactly-once apply.** Inside the replicated method the entry's Raft index is
  ``raftLastApplied + 1``; the store writes it with the block in one WriteBatch
  and entries at or below it are skipped on replay.
* **Snapshots are RocksDB checkpoints.** Log compaction writes the snapshot
  file as a header (pysyncobj's raft data and our applied index) followed by a
  tar of a RocksDB checkpoint (hard links; the WAL is synced first), fsynced
  before pysyncobj renames it into place; the directory is fsynced before the
  journal drops the compacted entries. The deserializer runs both at start-up
  and on snapshot install and cannot tell which: it keeps the local DB when its
  applied index is at or beyond the snapshot's, else installs the checkpoint.
* **Apply never raises.** A raising ``@replicated`` method is retried forever and
  wedges the node. Malformed entries are recorded as applied with no block; a
  storage failure stops the process (fail-stop) with a clear log line, because
  skipping a block would make this validator diverge.

Both fixes can be switched off (``durable_journal=False``, ``raft_fixes=False``)
so the chaos suite can show what they prevent.
"""
from __future__ import annotations

import logging
import os
import shutil
import struct
import tarfile
import threading
import time
from typing import Callable

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj import syncobj as _syncobj_mod
from pysyncobj.journal import FileJournal, MetaStorer
from pysyncobj.pickle import dumps as _pickle_dumps
from pysyncobj.pickle import loads as _pickle_loads
from pysyncobj.monotonic import monotonic as monotonicTime
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from raft_ledger_node.ledger import codec, limits
from raft_ledger_node.ledger.apply import apply_block
from raft_ledger_node.ledger.types import Entry, TxResult

log = logging.getLogger("ledger.replication")

EXIT_STORAGE_FAILURE = 74  # EX_IOERR
SNAPSHOT_MAGIC = b"LEDGER-SNAPSHOT-1\n"


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableMetaStorer(MetaStorer):
    """MetaStorer that fsyncs the temp file and the directory around the rename."""

    def storeMeta(self, meta):  # noqa: N802 (pysyncobj's name)
        path = self.getPath()
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(_pickle_dumps(meta))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path)


class DurableFileJournal(FileJournal):
    """FileJournal whose appends reach the disk before they are acknowledged.

    ``add`` and ``deleteEntriesFrom`` only mark the journal dirty; ``sync()``
    msyncs once for the whole group. ``on_flush`` (tests) is called after each
    real flush with the number of entries the journal then holds.
    """

    def __init__(self, journalFile: str, on_flush: Callable[[int], None] | None = None):  # noqa: N803
        super().__init__(journalFile)
        self._path = journalFile
        self._FileJournal__metaStorer = DurableMetaStorer(journalFile + ".meta")
        self._dirty = False
        self._on_flush = on_flush
        self.flush_count = 0

    def add(self, command, idx, term):
        super().add(command, idx, term)
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom):  # noqa: N802,N803
        super().deleteEntriesFrom(entryFrom)
        self._dirty = True

    def deleteEntriesTo(self, entryTo):  # noqa: N802,N803
        # Log compaction: the snapshot that replaces these entries was renamed
        # into this directory; make that rename durable before they go.
        _fsync_dir(self._path)
        super().deleteEntriesTo(entryTo)
        self._dirty = True

    def clear(self):
        super().clear()
        self._dirty = True

    def sync(self) -> None:
        if not self._dirty:
            return
        self.flush()  # mmap.flush(): msync(MS_SYNC) of the mapping
        self._dirty = False
        self.flush_count += 1
        if self._on_flush is not None:
            self._on_flush(len(self))


_journal_factory_lock = threading.Lock()


class LedgerTransport(TCPTransport):
    """TCPTransport that flushes the journal before acknowledging, and fixes truncation."""

    def __init__(self, syncObj, selfNode, otherNodes):  # noqa: N803
        super().__init__(syncObj, selfNode, otherNodes)
        self._replica = syncObj
        self._reply_cap: int | None = None

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
        if message.get("type") in ("next_node_idx", "response_vote"):
            self._replica._sync_journal()
            if self._reply_cap is not None and message["type"] == "next_node_idx" and message.get("success"):
                message = dict(message, next_node_idx=min(message["next_node_idx"], self._reply_cap))
        return super().send(node, message)

    def setOnMessageReceivedCallback(self, callback):  # noqa: N802
        def on_message(node, message):
            kind = message.get("type")
            if self._replica._raft_fixes and kind == "append_entries":
                message = self._fix_append_entries(message)
            try:
                if kind == "next_node_idx" and message.get("success") and not message.get("reset"):
                    self._on_success_reply(callback, node, message)
                else:
                    callback(node, message)
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


class LedgerReplica(SyncObj):
    """The validator's Raft replica: one replicated method, ``apply_entry(bytes)``.

    ``store`` must offer the StateReader port plus ``commit(ws, applied_index)``,
    ``mark_applied(index)`` and ``applied_index()``. ``on_applied(index,
    results)`` is called in the tick thread after each applied block.
    """

    def __init__(
        self,
        self_address: str,
        peer_addresses: list[str],
        conf: SyncObjConf,
        store,
        *,
        durable_journal: bool = True,
        raft_fixes: bool = True,
        on_applied: Callable[[int, list[TxResult] | None], None] | None = None,
        on_journal_flush: Callable[[int], None] | None = None,
        peer_dial: dict[str, str] | None = None,
    ) -> None:
        if not conf.password:
            raise ValueError("the Raft port must have a password (pysyncobj unpickles what it receives)")
        if not conf.journalFile or not conf.fullDumpFile:
            raise ValueError("journalFile and fullDumpFile must be set together")
        if conf.appendEntriesBatchSizeBytes <= limits.entry_bytes_max:
            raise ValueError("appendEntriesBatchSizeBytes must exceed entry_bytes_max")
        # State before SyncObj.__init__: its tick thread starts inside it.
        self._store = store
        self._peer_dial = dict(peer_dial or {})
        self._durable = durable_journal
        self._raft_fixes = raft_fixes
        self._on_applied = on_applied
        self._on_journal_flush = on_journal_flush
        self.applied_cond = threading.Condition()
        # Entries this validator proposed, decoded: entry bytes -> Entry (see propose).
        self._proposed: dict[bytes, Entry] = {}
        self._proposed_lock = threading.Lock()
        self.snapshots_written = 0
        self.snapshots_installed = 0
        conf.serializer = self._write_snapshot
        conf.deserializer = self._read_snapshot
        with _journal_factory_lock:
            original = _syncobj_mod.createJournal
            if durable_journal:
                _syncobj_mod.createJournal = lambda path: DurableFileJournal(path, on_flush=on_journal_flush)
            try:
                super().__init__(self_address, peer_addresses, conf, transportClass=LedgerTransport)
            finally:
                _syncobj_mod.createJournal = original

    # -- durability hooks -------------------------------------------------------
    def _journal(self):
        return getattr(self, "_SyncObj__raftLog", None)

    def _sync_journal(self) -> None:
        j = self._journal()
        if self._durable and isinstance(j, DurableFileJournal):
            j.sync()

    def _onTick(self, timeToWait=0.0):  # noqa: N802,N803
        # Entries appended since the last tick (leader proposals, the leader's
        # no-op) reach the disk before the commit index is computed from them.
        self._sync_journal()
        super()._onTick(timeToWait)

    # -- the state machine ----------------------------------------------------------
    #: Proposed entries kept decoded; older ones (never committed) are dropped.
    PROPOSED_KEPT_MAX = 256

    def propose(self, entry: bytes, decoded: Entry, callback) -> None:
        """Propose ``entry`` (``codec.encode_entry(decoded)``) as the next block.

        The leader keeps ``decoded`` and applies it when the entry commits instead
        of decoding its own bytes again (3-4% of a leader's CPU at peak). Followers,
        and a leader that replays, decode the bytes: the results are the same,
        because ``decode_entry(encode_entry(e)) == e`` (tests/unit/test_codec.py).
        ``callback(result, error)`` as for any pysyncobj replicated call.
        """
        with self._proposed_lock:
            if len(self._proposed) >= self.PROPOSED_KEPT_MAX:
                del self._proposed[next(iter(self._proposed))]
            self._proposed[entry] = decoded
        self.apply_entry(entry, callback=callback)

    @replicated
    def apply_entry(self, entry: bytes):
        """Apply one Raft entry as one block. Never raises (see module docstring)."""
        raft_index = self.raftLastApplied + 1
        store = self._store
        if raft_index <= store.applied_index():
            return None  # replay after restart: already in RocksDB
        if entry == codec.READ_BARRIER_ENTRY:
            # Committed in the current term by the leader: every write acknowledged
            # before it is applied now, so a read served after this is linearizable.
            self._commit_or_die(lambda: store.mark_applied(raft_index))
            self._notify(raft_index, None)
            return store.head().height
        with self._proposed_lock:
            decoded = self._proposed.pop(entry, None)
        try:
            if decoded is None:
                decoded = codec.decode_entry(entry)
        except codec.CodecError as e:
            log.error("raft entry %d is malformed (%s); recorded as applied with no block", raft_index, e)
            self._commit_or_die(lambda: store.mark_applied(raft_index))
            self._notify(raft_index, None)
            return None
        try:
            # The entry's own term from the log, not raftCurrentTerm: a follower that
            # applies (or replays) the entry in a later term must build the same header.
            results, ws = apply_block(store, decoded, self._entry_term(raft_index), raft_index)
        except Exception:
            # A bug in the core on a well-formed entry: every replica hits it on
            # replay, so stopping is the only way not to diverge.
            log.critical("apply of raft entry %d raised; stopping this validator", raft_index, exc_info=True)
            os._exit(EXIT_STORAGE_FAILURE)
        self._commit_or_die(lambda: store.commit(ws, raft_index))
        self._notify(raft_index, results)
        return results

    def _entry_term(self, raft_index: int) -> int:
        """Term of the log entry at ``raft_index`` (it is in the log while it is applied)."""
        log_ = self._journal()
        entry = log_[raft_index - log_[0][1]]
        if entry[1] != raft_index:
            raise LookupError(f"raft log holds index {entry[1]} where {raft_index} was expected")
        return entry[2]

    def _commit_or_die(self, write: Callable[[], None]) -> None:
        try:
            write()
        except Exception as e:
            log.critical(
                "storage write failed (%s). The validator stops so it never serves or builds on a "
                "missing block. Free disk space / fix the data directory, then start it again: "
                "it replays the Raft journal from its applied index.",
                e,
                exc_info=True,
            )
            logging.shutdown()
            os._exit(EXIT_STORAGE_FAILURE)

    def _notify(self, raft_index: int, results) -> None:
        with self.applied_cond:
            self.applied_cond.notify_all()
        if self._on_applied is not None:
            try:
                self._on_applied(raft_index, results)
            except Exception:
                log.exception("on_applied callback failed")

    # -- snapshots ----------------------------------------------------------------
    def _write_snapshot(self, file_name: str, raft_data) -> None:
        """pysyncobj serializer: ``raft_data`` = (last applied entry, previous entry, cluster)."""
        started = time.monotonic()
        ckpt = file_name + ".checkpoint"
        shutil.rmtree(ckpt, ignore_errors=True)
        applied = self._store.checkpoint(ckpt)
        header = _pickle_dumps((raft_data, applied))
        with open(file_name, "wb") as f:
            f.write(SNAPSHOT_MAGIC + struct.pack(">I", len(header)) + header)
            with tarfile.open(fileobj=f, mode="w|") as tar:
                tar.add(ckpt, arcname="db")
            f.flush()
            os.fsync(f.fileno())
        shutil.rmtree(ckpt, ignore_errors=True)
        self.snapshots_written += 1
        log.info("snapshot at raft index %d (applied index %d) written in %.0f ms",
                 raft_data[0][1], applied, (time.monotonic() - started) * 1000)

    def _read_snapshot(self, file_name: str):
        """pysyncobj deserializer: install the snapshot unless the local DB is already at or beyond it."""
        with open(file_name, "rb") as f:
            magic = f.read(len(SNAPSHOT_MAGIC))
            if magic != SNAPSHOT_MAGIC:
                raise ValueError(f"{file_name} is not a ledger snapshot")
            (n,) = struct.unpack(">I", f.read(4))
            raft_data, applied = _pickle_loads(f.read(n))
            if self._store.applied_index() >= applied:
                log.info("snapshot at applied index %d: local DB is at %d, kept", applied, self._store.applied_index())
                return raft_data
            target = os.path.abspath(self._store.path) + ".installing"
            shutil.rmtree(target, ignore_errors=True)
            os.makedirs(target)
            with tarfile.open(fileobj=f, mode="r|") as tar:
                tar.extractall(target, filter="data")
        self._store.replace_from_checkpoint(os.path.join(target, "db"))
        shutil.rmtree(target, ignore_errors=True)
        self.snapshots_installed += 1
        log.warning("installed snapshot: applied index %d, head height %d", applied, self._store.head().height)
        with self.applied_cond:
            self.applied_cond.notify_all()
        return raft_data

    def read_barrier(self, timeout_s: float) -> bool:
        """Commit a read barrier through the log (Raft §8: a leader must exchange heartbeats
        with a majority before answering read-only requests; committing an entry in its
        term does that). True once applied here; False on timeout or lost leadership.
        """
        done = threading.Event()
        outcome: list[bool] = []

        def on_result(res, err) -> None:
            outcome.append(err == 0 and res is not None)
            done.set()

        self.apply_entry(codec.READ_BARRIER_ENTRY, callback=on_result)
        return done.wait(timeout_s) and bool(outcome and outcome[0])

    # -- status -------------------------------------------------------------------
    def role(self) -> str:
        state = self.getStatus()["state"]
        return {0: "follower", 1: "candidate", 2: "leader"}.get(state, str(state))

    def leader_address(self) -> str | None:
        leader = self._getLeader()
        return None if leader is None else leader.address

    def wait_applied(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Block until ``predicate()`` holds after some apply, or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        with self.applied_cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.applied_cond.wait(remaining)
        return True


def make_conf(
    *,
    journal_file: str,
    full_dump_file: str,
    password: str,
    bind_address: str | None = None,
    append_entries_period_s: float = 0.05,
    raft_min_timeout_s: float = 0.4,
    raft_max_timeout_s: float = 1.4,
    leader_fallback_timeout_s: float = 3.0,
    log_compaction_min_entries: int = 10_000,
    log_compaction_min_time_s: float = 3600.0,
    connection_retry_time_s: float = 1.0,
    on_state_changed=None,
) -> SyncObjConf:
    """pysyncobj configuration with every setting the adapter relies on made explicit.

    Log compaction runs when the journal holds more than
    ``log_compaction_min_entries`` entries or ``log_compaction_min_time_s`` passed;
    the snapshot is a RocksDB checkpoint (see LedgerReplica). ``appendEntriesUseBatch=False``: our batcher makes few large entries,
    so each is sent at once instead of waiting for the next period.
    """
    return SyncObjConf(
        journalFile=journal_file,
        fullDumpFile=full_dump_file,
        password=password,
        bindAddress=bind_address,
        appendEntriesUseBatch=False,
        appendEntriesPeriod=append_entries_period_s,
        appendEntriesBatchSizeBytes=limits.raft_append_entries_bytes_max,
        raftMinTimeout=raft_min_timeout_s,
        raftMaxTimeout=raft_max_timeout_s,
        leaderFallbackTimeout=leader_fallback_timeout_s,
        logCompactionMinEntries=log_compaction_min_entries,
        logCompactionMinTime=log_compaction_min_time_s,
        logCompactionBatchSize=1 << 20,
        commandsQueueSize=100_000,
        dynamicMembershipChange=False,
        onStateChanged=on_state_changed,
        useFork=False,
        # Peers re-resolve a restarted validator's name quickly (pysyncobj caches 600 s by default).
        connectionRetryTime=connection_retry_time_s,
        dnsCacheTime=5.0,
        dnsFailCacheTime=5.0,
    )
