"""Durable journal: pysyncobj's FileJournal, flushed before any acknowledgement.

pysyncobj's ``FileJournal`` writes entries into an mmap and never flushes them;
its term/vote meta file is renamed into place without fsync. Acknowledged would
mean "in the page cache". :class:`DurableFileJournal` marks the journal dirty on
every append and flushes it (``mmap.flush`` = ``msync(MS_SYNC)``) once per group,
before any acknowledgement: a follower flushes before its AppendEntries reply
leaves (``next_node_idx``, see :class:`~raft_ledger_node.raft.transport.LedgerTransport`),
the leader flushes at the start of every tick, before it counts its own log
toward the commit index (:meth:`~raft_ledger_node.raft.durable.DurableReplica._onTick`).
The meta file (currentTerm, votedFor) is fsynced, file and directory, before
``setCurrentTerm`` returns, i.e. before a vote is sent (Raft §5.1, Figure 2
"Persistent state ... updated on stable storage before responding to RPCs").

Every record and the meta file carry a CRC-32 checked when the journal opens, the
file is preallocated before it grows, and a failed write stops the validator with
exit code 74 (raft/journal_guard.py): a corrupt journal raises JournalCorruptError
at start, a full disk is a clear log line and exit 74, never a SIGBUS.
"""
from __future__ import annotations

import os
from typing import Callable

from pysyncobj.journal import FileJournal, MetaStorer
from pysyncobj.pickle import dumps as _pickle_dumps
from pysyncobj.pickle import loads as _pickle_loads

from raft_ledger_node.raft import journal_guard


def fsync_dir(path: str) -> None:
    """fsync the directory holding ``path`` (makes a rename or create in it durable)."""
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableMetaStorer(MetaStorer):
    """MetaStorer that fsyncs the temp file and the directory around the rename."""

    def getMeta(self):  # noqa: N802 (pysyncobj's name)
        """The meta dict; {} if there is no file yet. Raises JournalCorruptError
        (pysyncobj's own reader turns any failure into {}: term 0, no vote)."""
        path = self.getPath()
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        payload = journal_guard.decode_meta(path, raw)
        try:
            return _pickle_loads(payload)
        except Exception as e:  # a checksummed payload that does not unpickle: written wrong
            raise journal_guard.JournalCorruptError(path, 0, f"meta file does not decode ({e!r})") from e

    def storeMeta(self, meta):  # noqa: N802 (pysyncobj's name)
        path = self.getPath()
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(journal_guard.encode_meta(_pickle_dumps(meta)))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path)
        except OSError as e:  # ENOSPC, EIO: the term or vote would not be durable
            journal_guard.fail_stop(f"Raft meta file {path}", e)


class DurableFileJournal(FileJournal):
    """FileJournal whose appends reach the disk before they are acknowledged.

    ``add`` and ``deleteEntriesFrom`` only mark the journal dirty; ``sync()``
    msyncs once for the whole group. ``on_flush`` (tests) is called after each
    real flush with the number of entries the journal then holds.
    """

    def __init__(self, journalFile: str, on_flush: Callable[[int], None] | None = None):  # noqa: N803
        if os.path.exists(journalFile):
            journal_guard.verify_journal_file(journalFile)  # raises JournalCorruptError
        super().__init__(journalFile)
        self._path = journalFile
        # pysyncobj read the records and the meta unchecked: take out the (verified)
        # checksums, and read the meta again through the checking storer.
        self._FileJournal__journal = [
            (journal_guard.unwrap_command(c, i, t, path=journalFile), i, t) for c, i, t in self._FileJournal__journal]
        self._FileJournal__metaStorer = DurableMetaStorer(journalFile + ".meta")
        self._FileJournal__meta = self._FileJournal__metaStorer.getMeta()
        journal_guard.PreallocatedFile.adopt(self._FileJournal__journalFile)
        self._dirty = False
        self._on_flush = on_flush

    def add(self, command, idx, term):
        try:
            super().add(journal_guard.wrap_command(command, idx, term), idx, term)
        except OSError as e:  # ENOSPC from the preallocation, EIO
            journal_guard.fail_stop(f"Raft journal append of entry {idx} to {self._path}", e)
        self._FileJournal__journal[-1] = (command, idx, term)  # in memory: the command itself
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom):  # noqa: N802,N803
        super().deleteEntriesFrom(entryFrom)
        self._dirty = True

    def deleteEntriesTo(self, entryTo):  # noqa: N802,N803
        # Log compaction: the snapshot that replaces these entries was renamed
        # into this directory; make that rename durable before they go.
        fsync_dir(self._path)
        super().deleteEntriesTo(entryTo)
        self._dirty = True

    def clear(self):
        super().clear()
        self._dirty = True

    def sync(self) -> None:
        if not self._dirty:
            return
        try:
            self.flush()  # mmap.flush(): msync(MS_SYNC) of the mapping
        except OSError as e:
            journal_guard.fail_stop(f"Raft journal flush of {self._path}", e)
        self._dirty = False
        if self._on_flush is not None:
            self._on_flush(len(self))
