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
"""
from __future__ import annotations

import os
from typing import Callable

from pysyncobj.journal import FileJournal, MetaStorer
from pysyncobj.pickle import dumps as _pickle_dumps


def fsync_dir(path: str) -> None:
    """fsync the directory holding ``path`` (makes a rename or create in it durable)."""
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
        fsync_dir(path)


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

    def add(self, command, idx, term):
        super().add(command, idx, term)
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
        self.flush()  # mmap.flush(): msync(MS_SYNC) of the mapping
        self._dirty = False
        if self._on_flush is not None:
            self._on_flush(len(self))
