"""Start-up integrity check of a validator's data directory (bad disks: issue 15, item 6).

A validator whose data directory fails this check does not start: ``ledger-validator
start`` prints what failed where and exits ``EXIT_DATA_CORRUPT`` (65, EX_DATAERR of
sysexits.h). It serves nothing, so it never serves a wrong balance; the remedy is the
one for a failed disk (move the data directory aside, start from an empty one, and
have the administrators replace it: ``ledger-validator validator replace``, README
"Replacing a failed validator").

What finds a flipped byte, file by file (tests/integration/test_bad_disk.py flips
one, at a seeded position in the data part, in each kind):

==========================  ================================================================
file                        detected by
==========================  ================================================================
``raft/journal``            our CRC-32 per record and the record framing
                            (raft/journal_guard.py: :func:`verify_journal_file`), here and
                            again when the journal opens
``raft/journal.meta``       our CRC-32 of the term/vote file (``DurableMetaStorer.getMeta``);
                            pysyncobj's own reader would read it as term 0, no vote
``db/*.sst``                RocksDB's per-block checksums (``verify_checksums``, on by
                            default for every read): here, every block of every column
                            family is read once (:func:`scan_rocksdb`) while the SST files
                            total at most ``SCAN_SST_BYTES_MAX``; above that the first read
                            of the block fails (the call errors, or applying stops the
                            validator with exit 74), and ``ledger-validator audit`` reads
                            every block of the chain
``db/MANIFEST-*``           RocksDB at open: every MANIFEST record carries a CRC-32C and
                            ``paranoid_checks`` (on by default) makes a bad one fail the open
``db/CURRENT``, ``OPTIONS``  RocksDB at open (the named MANIFEST or the options do not parse)
``db/*.log`` (WAL)          RocksDB's per-record CRC-32C; with the default
                            ``kPointInTimeRecovery`` it replays up to the first bad record and
                            drops the rest, which is safe here: the WAL is not our durable
                            record, the fsynced Raft journal is, and entries above the
                            applied index are applied again (store.py's failure contract)
==========================  ================================================================

Not checksummed (documented, not detected): ``db.last-signed`` (8 bytes, the highest
height this validator may have signed; store.py refuses one of the wrong length) and
``raft/snapshot`` (pysyncobj reads it only to install or at start; its RocksDB part
carries RocksDB's checksums).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from rocksdict import AccessType, Cache, Options, ReadOptions, Rdict

from raft_ledger_node.raft.journal import DurableMetaStorer
from raft_ledger_node.raft.journal_guard import JournalCorruptError, verify_journal_file
from raft_ledger_node.store import StoreError
from raft_ledger_node.store import _cf_opts as _store_cf_opts

log = logging.getLogger("ledger.integrity")

#: ``ledger-validator start``'s exit code when the data directory fails this check (EX_DATAERR).
EXIT_DATA_CORRUPT = 65
#: The start-up scan reads every RocksDB block while the SST files total at most this
#: (bytes); past it the scan is skipped (logged) and blocks are checked when first read.
#: Measured here: 1.0 MB of SST files, 49,724 entries, in 0.13 s (the scan's cost is per
#: entry, ~400,000/s), so this bound keeps a start-up under ~15 s.
SCAN_SST_BYTES_MAX = 128 * 1024 * 1024


class DataCorruptError(StoreError):
    """The data directory does not verify: ``path`` is the file or DB, the message says what and where."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(
            f"data directory integrity check failed: {detail}. This validator refuses to serve from it. Move the "
            "data directory aside (keep it for inspection) and start this validator from an empty one, as for a "
            "failed disk: `ledger-validator validator replace` (README: Replacing a failed validator)")
        self.path = path
        self.detail = detail


@dataclass(frozen=True, slots=True)
class IntegrityReport:
    """What :func:`check_data_directory` verified: journal entries, RocksDB column
    families and entries read, SST bytes, whether the full scan ran, seconds taken."""

    journal_entries: int
    column_families: int
    rocksdb_entries: int
    sst_bytes: int
    scanned: bool
    elapsed_s: float


def live_db_path(db_path: str) -> str:
    """The live RocksDB directory: ``db_path``, or the installed snapshot named in
    ``db_path.active`` (the rule of ``RocksStore._active_dir``)."""
    try:
        with open(db_path + ".active") as f:
            return os.path.join(os.path.dirname(os.path.abspath(db_path)), f.read().strip())
    except FileNotFoundError:
        return db_path


def sst_bytes(path: str) -> int:
    """Total size of the ``*.sst`` files in the RocksDB directory ``path`` (bytes)."""
    total = 0
    with os.scandir(path) as it:
        for e in it:
            if e.name.endswith(".sst"):
                total += e.stat().st_size
    return total


def scan_rocksdb(path: str, *, full: bool = True) -> tuple[int, int]:
    """Open the RocksDB at ``path`` read-only (paranoid checks: MANIFEST, CURRENT, OPTIONS,
    WAL) and, if ``full``, iterate every column family with checksum verification, so
    every data block is read once. Returns (column families, entries read). Raises
    DataCorruptError on any RocksDB error (rocksdict raises plain Exception)."""
    try:
        names = Rdict.list_cf(path, Options(raw_mode=True))
    except Exception as e:
        raise DataCorruptError(path, f"RocksDB at {path} cannot list its column families: {e}") from e
    opts = Options(raw_mode=True)
    opts.set_paranoid_checks(True)
    # The store's own table options (Bloom filters where it has them), so the scan reads
    # the blocks the store will read, filter blocks included; a small cache of its own.
    cache = Cache(8 * 1024 * 1024)
    try:
        db = Rdict(path, opts, column_families={n: _store_cf_opts(n, cache) for n in names},
                   access_type=AccessType.read_only())
    except Exception as e:
        raise DataCorruptError(path, f"RocksDB at {path} does not open: {e}") from e
    entries = 0
    try:
        if full:
            ro = ReadOptions()
            ro.set_verify_checksums(True)
            ro.fill_cache(False)
            for name in names:
                it = db.get_column_family(name).iter(ro)
                try:
                    it.seek_to_first()
                    while it.valid():
                        entries += 1
                        it.next()
                    it.status()  # raises on the error that ended the iteration
                except Exception as e:
                    raise DataCorruptError(path, f"RocksDB column family {name!r} at {path}: {e}") from e
                finally:
                    del it
    finally:
        db.close()
    return len(names), entries


def is_corruption(error: BaseException) -> bool:
    """Whether a RocksDB error (rocksdict raises plain Exception) reports corruption."""
    return "Corruption" in str(error) or "checksum mismatch" in str(error)


def check_data_directory(*, journal_file: str, db_path: str, durable_journal: bool = True,
                         scan_sst_bytes_max: int = SCAN_SST_BYTES_MAX) -> IntegrityReport:
    """Verify the Raft journal, its meta file and the RocksDB of one validator before it
    opens them (see the module docstring for what is detected where). Files not there yet
    (a new validator) are skipped. ``durable_journal`` False (the chaos suite's unsafe
    mode writes pysyncobj's unchecked journal): the journal is not checked. Raises
    DataCorruptError; returns what was verified."""
    started = time.monotonic()
    entries = 0
    if durable_journal:
        try:
            if os.path.exists(journal_file):
                entries = verify_journal_file(journal_file)
            DurableMetaStorer(journal_file + ".meta").getMeta()
        except JournalCorruptError as e:
            raise DataCorruptError(e.path, f"Raft journal: {e}") from e
        except OSError as e:
            raise DataCorruptError(journal_file, f"Raft journal unreadable: {e}") from e
    cfs = rows = size = 0
    scanned = False
    live = live_db_path(db_path)
    if os.path.exists(os.path.join(live, "CURRENT")):
        size = sst_bytes(live)
        scanned = size <= scan_sst_bytes_max
        if not scanned:
            log.warning("start-up scan of RocksDB skipped: %d bytes of SST files > %d; blocks are checked when "
                        "first read (run `ledger-validator audit` to read them all)", size, scan_sst_bytes_max)
        cfs, rows = scan_rocksdb(live, full=scanned)
    report = IntegrityReport(entries, cfs, rows, size, scanned, time.monotonic() - started)
    if not cfs:
        log.info("data directory verified: %d journal entries, no RocksDB yet, in %.2f s", entries, report.elapsed_s)
    else:
        log.info("data directory verified: %d journal entries, %d RocksDB entries in %d column families "
                 "(%d SST bytes%s) in %.2f s", entries, rows, cfs, size, "" if scanned else ", not scanned",
                 report.elapsed_s)
    return report
