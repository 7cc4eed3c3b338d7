"""The start-up integrity check (node/integrity.py) on a real RocksDB and a real journal.

A clean data directory verifies and reports what it read; a flipped byte in an SST
file (anywhere before its footer), the MANIFEST or the journal raises
DataCorruptError naming the file; past ``scan_sst_bytes_max`` the block scan is
skipped but the open's checks still run. (tests/integration/test_bad_disk.py does
the same through ``ledger-validator start`` and its exit code.)
"""
from __future__ import annotations

import os
import random

import pytest

from raft_ledger_node.integrity import DataCorruptError, check_data_directory
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.types import RawEntry
from raft_ledger_node.raft.journal import DurableFileJournal
from raft_ledger_node.state_machine import StateMachine
from raft_ledger_node.store import RocksStore
from tests.unit.helpers import CHAIN, T0, account, accounts_tx, decode_envelope, transfer, transfers_tx

GENESIS_HASH = bytes(range(32))
BLOCKS = 12


def _data_dir(tmp_path) -> tuple[str, str]:
    db, journal = str(tmp_path / "db"), str(tmp_path / "raft" / "journal")
    store = RocksStore(db)
    store.bind_genesis(GENESIS_HASH)
    machine = StateMachine(store, decode_envelope=decode_envelope, chain_id=CHAIN)
    blocks = [[accounts_tx(account(1), account(2), account(3))]]
    blocks += [[transfers_tx(transfer(100 + i, 1 + i % 3, 1 + (i + 1) % 3, i + 1))] for i in range(BLOCKS - 1)]
    for index, txs in enumerate(blocks, start=1):
        machine.apply(codec.encode_entry(RawEntry(T0 + index * 1_000_000, tuple(tx.envelope for tx in txs))), 1, index)
    store.flush()
    store.close()  # flushes the memtables: SST files
    os.makedirs(os.path.dirname(journal))
    j = DurableFileJournal(journal)
    for i in range(1, BLOCKS + 1):
        j.add(b"entry %d" % i, i, 1)
    j.setCurrentTerm(1, None)
    j.sync()
    j._destroy()
    return journal, db


def _flip(path: str, first: int, end: int, seed: str) -> None:
    pos = random.Random(seed).randrange(first, end)
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))


def test_a_clean_data_directory_verifies(tmp_path):
    journal, db = _data_dir(tmp_path)
    report = check_data_directory(journal_file=journal, db_path=db)
    assert report.journal_entries == BLOCKS
    assert report.scanned and report.sst_bytes > 0 and report.rocksdb_entries > BLOCKS
    skipped = check_data_directory(journal_file=journal, db_path=db, scan_sst_bytes_max=0)
    assert not skipped.scanned and skipped.rocksdb_entries == 0


def test_a_new_data_directory_has_nothing_to_check(tmp_path):
    report = check_data_directory(journal_file=str(tmp_path / "raft" / "journal"), db_path=str(tmp_path / "db"))
    assert (report.journal_entries, report.column_families, report.scanned) == (0, 0, False)


@pytest.mark.parametrize("seed", range(6))
def test_a_flipped_byte_in_any_sst_is_found(tmp_path, seed):
    journal, db = _data_dir(tmp_path)
    ssts = sorted(n for n in os.listdir(db) if n.endswith(".sst"))
    path = os.path.join(db, ssts[seed % len(ssts)])
    _flip(path, 0, os.path.getsize(path) - 64, f"sst-{seed}")
    with pytest.raises(DataCorruptError) as e:
        check_data_directory(journal_file=journal, db_path=db)
    assert "Corruption" in str(e.value) and "refuses to serve" in str(e.value)


def test_a_flipped_byte_in_the_manifest_fails_even_without_the_scan(tmp_path):
    journal, db = _data_dir(tmp_path)
    manifest = os.path.join(db, next(n for n in os.listdir(db) if n.startswith("MANIFEST-")))
    _flip(manifest, 0, os.path.getsize(manifest), "manifest")
    with pytest.raises(DataCorruptError, match="MANIFEST|Corruption"):
        check_data_directory(journal_file=journal, db_path=db, scan_sst_bytes_max=0)


def test_a_flipped_byte_in_the_journal_is_found_unless_the_journal_is_pysyncobjs(tmp_path):
    journal, db = _data_dir(tmp_path)
    _flip(journal, 40, 80, "journal")  # the first record
    with pytest.raises(DataCorruptError, match="Raft journal"):
        check_data_directory(journal_file=journal, db_path=db)
    # The chaos suite's unsafe mode writes pysyncobj's unchecked journal: not checked.
    assert check_data_directory(journal_file=journal, db_path=db, durable_journal=False).journal_entries == 0
