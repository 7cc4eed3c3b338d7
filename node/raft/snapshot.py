"""The snapshot file: log compaction writes a RocksDB checkpoint, not pysyncobj's pickle.

Format: ``SNAPSHOT_MAGIC``, a big-endian u32 header length, the header (pysyncobj's
pickle of ``(raft_data, applied_index)``: raft_data = last applied entry, previous
entry, cluster nodes), then a tar stream of a RocksDB checkpoint (hard links; the
WAL is synced first) under ``db/``. The file is fsynced before pysyncobj renames
it into place; the directory is fsynced before the journal drops the compacted
entries (DurableFileJournal.deleteEntriesTo).

pysyncobj calls the serializer and deserializer synchronously in the tick thread,
where they block heartbeats: keep them short (a checkpoint took 8–20 ms here). The
deserializer runs both at start-up and on snapshot install and cannot tell which:
:func:`read_snapshot` keeps the local DB when its applied index is at or beyond
the snapshot's, else installs the checkpoint.

``store`` offers ``checkpoint(dest) -> applied_index``, ``applied_index()``,
``replace_from_checkpoint(dir)``, ``head()`` and ``path`` (node.store.RocksStore).
"""
from __future__ import annotations

import logging
import os
import shutil
import struct
import tarfile
import time

from pysyncobj.pickle import dumps as _pickle_dumps
from pysyncobj.pickle import loads as _pickle_loads

log = logging.getLogger("ledger.replication")

SNAPSHOT_MAGIC = b"LEDGER-SNAPSHOT-1\n"


def write_snapshot(store, file_name: str, raft_data) -> None:
    """Write the snapshot of ``store`` with pysyncobj's ``raft_data`` to ``file_name`` (fsynced)."""
    started = time.monotonic()
    ckpt = file_name + ".checkpoint"
    shutil.rmtree(ckpt, ignore_errors=True)
    applied = store.checkpoint(ckpt)
    header = _pickle_dumps((raft_data, applied))
    with open(file_name, "wb") as f:
        f.write(SNAPSHOT_MAGIC + struct.pack(">I", len(header)) + header)
        with tarfile.open(fileobj=f, mode="w|") as tar:
            tar.add(ckpt, arcname="db")
        f.flush()
        os.fsync(f.fileno())
    shutil.rmtree(ckpt, ignore_errors=True)
    log.info("snapshot at raft index %d (applied index %d) written in %.0f ms",
             raft_data[0][1], applied, (time.monotonic() - started) * 1000,
             extra={"raft_index": raft_data[0][1], "height": store.head().height})


def read_snapshot(store, file_name: str):
    """Install the snapshot in ``file_name`` into ``store`` unless the local DB is already
    at or beyond it; return pysyncobj's raft data either way. Raises ValueError on a
    file that is not a ledger snapshot."""
    with open(file_name, "rb") as f:
        magic = f.read(len(SNAPSHOT_MAGIC))
        if magic != SNAPSHOT_MAGIC:
            raise ValueError(f"{file_name} is not a ledger snapshot")
        (n,) = struct.unpack(">I", f.read(4))
        raft_data, applied = _pickle_loads(f.read(n))
        if store.applied_index() >= applied:
            log.info("snapshot at applied index %d: local DB is at %d, kept", applied, store.applied_index())
            return raft_data
        target = os.path.abspath(store.path) + ".installing"
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(target)
        with tarfile.open(fileobj=f, mode="r|") as tar:
            tar.extractall(target, filter="data")
    store.replace_from_checkpoint(os.path.join(target, "db"))
    shutil.rmtree(target, ignore_errors=True)
    log.warning("installed snapshot: applied index %d, head height %d", applied, store.head().height,
                extra={"raft_index": applied, "height": store.head().height})
    return raft_data
