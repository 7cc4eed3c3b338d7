"""The Raft journal's checksums (node/raft/journal_guard.py) on real journal files.

Every single flipped byte in a record (framing included) or in the meta file is
found: CRC-32 detects all bursts up to 32 bits (Koopman, DSN 2002). The journal
written through DurableFileJournal reads back the same entries and term/vote.
"""
from __future__ import annotations

import os
import random

import pytest

from raft_ledger_node.raft import journal_guard as g
from raft_ledger_node.raft.journal import DurableFileJournal, DurableMetaStorer
from raft_ledger_node.raft.replica import EXIT_STORAGE_FAILURE

ENTRIES = 40


def _journal(tmp_path) -> str:
    path = str(tmp_path / "journal")
    j = DurableFileJournal(path)
    for i in range(1, ENTRIES + 1):
        j.add(b"entry-%d-" % i + bytes(range(i % 50)), i, 1 + i // 10)
    j.setCurrentTerm(5, "127.0.0.1:1")
    j.sync()
    j._destroy()
    return path


def _flip(path: str, pos: int) -> None:
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))


def test_the_exit_code_is_the_replicas():
    assert g.EXIT_STORAGE_FAILURE == EXIT_STORAGE_FAILURE == 74


def test_a_checksummed_journal_reads_back_its_entries_and_meta(tmp_path):
    path = _journal(tmp_path)
    assert g.verify_journal_file(path) == ENTRIES
    j = DurableFileJournal(path)
    assert len(j) == ENTRIES
    assert j[6] == (b"entry-7-" + bytes(range(7)), 7, 1)
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (5, "127.0.0.1:1")
    j.deleteEntriesTo(10)  # log compaction rewrites the records
    j.deleteEntriesFrom(20)  # truncation
    j.sync()
    j._destroy()
    assert g.verify_journal_file(path) == 20
    j = DurableFileJournal(path)
    assert [e[1] for e in j] == list(range(11, 31))
    j._destroy()


def test_the_journal_file_is_allocated_not_sparse(tmp_path):
    path = _journal(tmp_path)
    st = os.stat(path)
    assert st.st_blocks * 512 >= st.st_size


def test_every_flipped_byte_of_the_records_is_found(tmp_path):
    path = _journal(tmp_path)
    with open(path, "rb") as f:
        f.seek(g.LAST_RECORD_OFFSET_OFFSET)
        last = int.from_bytes(f.read(4), "little")
    rng = random.Random(15)
    positions = sorted(set(rng.randrange(0, last) for _ in range(80)) | {0, g.LAST_RECORD_OFFSET_OFFSET, last - 1})
    for pos in positions:
        _flip(path, pos)
        with pytest.raises(g.JournalCorruptError) as e:
            g.verify_journal_file(path)
        with pytest.raises(g.JournalCorruptError):
            DurableFileJournal(path)
        _flip(path, pos)  # back
        assert "journal" in str(e.value)
    assert g.verify_journal_file(path) == ENTRIES


def test_every_flipped_byte_of_the_meta_file_is_found(tmp_path):
    path = _journal(tmp_path) + ".meta"
    for pos in range(os.path.getsize(path)):
        _flip(path, pos)
        with pytest.raises(g.JournalCorruptError):
            DurableMetaStorer(path).getMeta()
        _flip(path, pos)
    assert DurableMetaStorer(path).getMeta()["currentTerm"] == 5


def test_a_missing_meta_file_is_a_new_journal_but_an_empty_one_is_corrupt(tmp_path):
    path = str(tmp_path / "journal.meta")
    assert DurableMetaStorer(path).getMeta() == {}
    open(path, "wb").close()
    with pytest.raises(g.JournalCorruptError):
        DurableMetaStorer(path).getMeta()


def test_a_journal_without_checksums_is_refused(tmp_path):
    from pysyncobj.journal import FileJournal

    path = str(tmp_path / "journal")
    j = FileJournal(path)
    j.add(b"unchecked", 1, 1)
    j._destroy()
    with pytest.raises(g.JournalCorruptError, match="no checksum tag"):
        g.verify_journal_file(path)
