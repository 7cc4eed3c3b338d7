"""The Raft journal's checksums, its preallocation, and fail-stop on a failed journal write.

pysyncobj's ``FileJournal`` (journal layout: a 40-byte header, then records
``size u32le | idx u64le | term u64le | command | size u32le``) has no checksum,
and its ``MetaStorer`` reads the term/vote file with ``except: pass``: a flipped
byte in a command is replayed as a different entry, and a flipped byte in the meta
file silently resets ``currentTerm``/``votedFor`` to 0/None (a second vote in a
term: Raft §5.2 broken). It also grows its mmap with ``ftruncate``, which allocates
nothing: when the disk is full the next store into a new page is a SIGBUS (tmpfs,
ext4 holes alike), which kills the process with no message at all.

What this module adds (used by :class:`~raft_ledger_node.raft.journal.DurableFileJournal`):

* **Record checksums.** Each command is stored as ``RECORD_TAG | crc32 u32be | command``,
  the CRC-32 (ISO-HDLC, ``zlib.crc32``) over ``idx u64be | term u64be | command``:
  a changed byte anywhere in a record (length fields included, which must agree)
  is found by :func:`verify_journal_file` before pysyncobj reads the file, with the
  record's offset. CRC-32 detects every error burst up to 32 bits (Koopman, "32-bit
  cyclic redundancy codes for Internet applications", DSN 2002), so every single
  flipped byte.
* **Meta checksum.** The meta file is ``META_TAG | crc32 u32be | pickle``; a file that
  exists but does not verify raises :class:`JournalCorruptError` instead of reading as
  "term 0, voted for nobody".
* **Preallocation.** :class:`PreallocatedFile` ``posix_fallocate``\\ s the journal file
  before its mapping grows, so a full disk is an ``OSError(ENOSPC)`` at the write that
  needs the space, never a SIGBUS in a later store.
* **Fail-stop.** :func:`fail_stop` logs what failed and what to do, then exits the
  process with ``EXIT_STORAGE_FAILURE`` (74, EX_IOERR), the code the replica uses
  when RocksDB fails (raft/replica.py): a follower that cannot append an entry must
  not acknowledge it, and a leader that cannot record its own log must not count it.

A journal written by an older build (no tags) does not verify: start such a
validator from an empty data directory (it catches up from the others).
"""
from __future__ import annotations

import logging
import mmap
import os
import struct
import zlib

from pysyncobj.journal import (
    APP_NAME,
    FIRST_RECORD_OFFSET,
    JOURNAL_FORMAT_VERSION,
    LAST_RECORD_OFFSET_OFFSET,
    NAME_SIZE,
    VERSION_SIZE,
    ResizableFile,
)

log = logging.getLogger("ledger.replication")

#: The process exit code on a failed storage write (EX_IOERR, sysexits.h); the same as
#: raft/replica.py's for RocksDB (tests/unit/test_journal_guard.py pins that they agree).
EXIT_STORAGE_FAILURE = 74
RECORD_TAG = b"\xa5LJ1"
META_TAG = b"\xa5LM1"
_CRC = struct.Struct(">I")
_IDX_TERM = struct.Struct(">QQ")
_U32LE = struct.Struct("<I")
_RECORD_HEAD = struct.Struct("<IQQ")
#: Bytes of a record's command field taken by the tag and the CRC.
RECORD_OVERHEAD_BYTES = len(RECORD_TAG) + _CRC.size


class JournalCorruptError(RuntimeError):
    """The Raft journal or its meta file at ``path`` does not verify (``offset``: where, bytes)."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: {reason} at byte offset {offset}")
        self.path = path
        self.offset = offset
        self.reason = reason


def _crc(command: bytes, idx: int, term: int) -> int:
    return zlib.crc32(command, zlib.crc32(_IDX_TERM.pack(idx, term)))


def wrap_command(command: bytes, idx: int, term: int) -> bytes:
    """The bytes stored for ``command`` at Raft index ``idx`` of ``term``: tag, CRC, command."""
    return RECORD_TAG + _CRC.pack(_crc(command, idx, term)) + command


def unwrap_command(stored: bytes, idx: int, term: int, *, path: str = "journal", offset: int = 0) -> bytes:
    """The command in ``stored`` (see :func:`wrap_command`). Raises JournalCorruptError."""
    stored = bytes(stored)
    if stored[:len(RECORD_TAG)] != RECORD_TAG:
        raise JournalCorruptError(path, offset, f"raft entry {idx} has no checksum tag (corrupt, or written "
                                                "by an older build)")
    (want,) = _CRC.unpack_from(stored, len(RECORD_TAG))
    command = stored[RECORD_OVERHEAD_BYTES:]
    if _crc(command, idx, term) != want:
        raise JournalCorruptError(path, offset, f"raft entry {idx} (term {term}) fails its CRC-32")
    return command


def verify_journal_file(path: str) -> int:
    """Check every record of the journal file at ``path``; return the number of entries.

    Checks the header (pysyncobj's name, format version, last-record offset within
    the file), each record's two length fields, tag and CRC, and that indexes are
    consecutive and terms never decrease. Bytes past the last record (the mapping's
    zero-filled slack) are not read. Raises JournalCorruptError (OSError if unreadable).
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < FIRST_RECORD_OFFSET:
        raise JournalCorruptError(path, 0, f"file of {len(data)} bytes is shorter than the journal header")
    if data[:NAME_SIZE] != APP_NAME + b"\0" * (NAME_SIZE - len(APP_NAME)):
        raise JournalCorruptError(path, 0, "header does not name pysyncobj's journal")
    version = data[NAME_SIZE:NAME_SIZE + VERSION_SIZE].rstrip(b"\0")
    if not version or any(c not in b"0123456789." for c in version):
        raise JournalCorruptError(path, NAME_SIZE, "header's version field is not a version")
    fmt, last = struct.unpack_from("<II", data, NAME_SIZE + VERSION_SIZE)
    if fmt != JOURNAL_FORMAT_VERSION:
        raise JournalCorruptError(path, NAME_SIZE + VERSION_SIZE, f"journal format {fmt}, expected {JOURNAL_FORMAT_VERSION}")
    if not FIRST_RECORD_OFFSET <= last <= len(data):
        raise JournalCorruptError(path, LAST_RECORD_OFFSET_OFFSET, f"last-record offset {last} outside the file")
    offset, count, prev_idx, prev_term = FIRST_RECORD_OFFSET, 0, None, 0
    while offset < last:
        if offset + _RECORD_HEAD.size > last:
            raise JournalCorruptError(path, offset, "record header runs past the last-record offset")
        size, idx, term = _RECORD_HEAD.unpack_from(data, offset)
        end = offset + 4 + size
        if size < 16 + RECORD_OVERHEAD_BYTES or end + 4 > last:
            raise JournalCorruptError(path, offset, f"record length {size} impossible here")
        if _U32LE.unpack_from(data, end)[0] != size:
            raise JournalCorruptError(path, end, "record's trailing length differs from its leading length")
        if prev_idx is not None and (idx != prev_idx + 1 or term < prev_term):
            raise JournalCorruptError(path, offset, f"raft entry {idx} (term {term}) follows {prev_idx} (term {prev_term})")
        unwrap_command(data[offset + 20:end], idx, term, path=path, offset=offset)
        prev_idx, prev_term = idx, term
        offset = end + 4
        count += 1
    if offset != last:
        raise JournalCorruptError(path, offset, f"records end at {offset}, the header says {last}")
    return count


def encode_meta(payload: bytes) -> bytes:
    """The meta file's bytes for pysyncobj's pickled meta ``payload``."""
    return META_TAG + _CRC.pack(zlib.crc32(payload)) + payload


def decode_meta(path: str, raw: bytes) -> bytes:
    """The pickled meta inside the meta file's bytes ``raw``. Raises JournalCorruptError."""
    if raw[:len(META_TAG)] != META_TAG or len(raw) < len(META_TAG) + _CRC.size:
        raise JournalCorruptError(path, 0, "meta file (current term, vote) has no checksum tag")
    (want,) = _CRC.unpack_from(raw, len(META_TAG))
    payload = raw[len(META_TAG) + _CRC.size:]
    if zlib.crc32(payload) != want:
        raise JournalCorruptError(path, len(META_TAG), "meta file (current term, vote) fails its CRC-32")
    return payload


class PreallocatedFile(ResizableFile):
    """pysyncobj's mmapped journal file, with its blocks allocated before the mapping grows.

    ``write`` raises OSError (ENOSPC) when the disk cannot hold the grown file, before
    anything is stored. :meth:`adopt` turns the ``ResizableFile`` pysyncobj built into one.
    """

    @classmethod
    def adopt(cls, f: ResizableFile) -> "PreallocatedFile":
        f.__class__ = cls  # same state, other methods: pysyncobj builds the object itself
        f.allocate(len(f._ResizableFile__mm))  # a file from before (or grown by ftruncate) may have holes
        return f

    def allocate(self, size: int) -> None:
        if size > 0:
            os.posix_fallocate(self._ResizableFile__f.fileno(), 0, size)

    def write(self, offset, values):
        # ResizableFile grows the mapping while ``mm.size()`` (the FILE's size) is short;
        # after fallocate the file is long enough, so the mapping is grown here.
        mm = self._ResizableFile__mm
        end = offset + len(values)
        if end > len(mm):
            new = max(int(len(mm) * self._ResizableFile__resizeFactor), end)  # what ResizableFile grows to
            self.allocate(new)
            try:
                mm.resize(new)
            except (SystemError, OSError):  # no mremap: map the (now longer) file again
                mm.close()
                self._ResizableFile__mm = mm = mmap.mmap(self._ResizableFile__f.fileno(), 0)
        mm[offset:end] = values


def fail_stop(what: str, error: BaseException) -> None:
    """Log that the journal write ``what`` failed with ``error`` and exit 74 (never returns)."""
    log.critical(
        "storage write failed (%s: %s). The validator stops so it never acknowledges or builds on an entry "
        "it could not record. Free disk space / fix the data directory, then start it again: it catches up "
        "from its journal and the other validators.",
        what, error,
    )
    logging.shutdown()
    os._exit(EXIT_STORAGE_FAILURE)
