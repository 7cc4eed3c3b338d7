"""node/state_machine.py on a real RocksDB store in a temporary directory.

What the replica relies on (design.md "Storage layout", the failure contract in the
module docstring): the applied Raft index is written with the block, so an entry at
or below it is skipped on replay (exactly once across crashes); a read barrier and a
malformed entry move the applied index and write no block; a storage failure raises
a typed error, with nothing of the entry visible, and leaves stopping to the caller.
"""
from __future__ import annotations

import errno

import pytest

from helpers import T0, account, accounts_tx, decode_envelope, entry, transfer, transfers_tx
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.types import CreateAccountResult as AR, CreateTransferResult as TR
from raft_ledger_node.state_machine import CoreFailure, Outcome, StateMachine, StorageFailure
from raft_ledger_node.store import RocksStore


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "db")


@pytest.fixture
def store(path):
    s = RocksStore(path)
    yield s
    s.close()


def _accounts_entry() -> bytes:
    return codec.encode_entry(entry(T0, accounts_tx(account(1), account(2))))


def test_applies_a_block_and_records_its_raft_index(store):
    done = StateMachine(store, decode_envelope=decode_envelope).apply(_accounts_entry(), 3, 1)
    assert done.outcome is Outcome.BLOCK and done.raft_index == 1 and done.height == 1
    assert [r.codes for r in done.results] == [(AR.ok, AR.ok)]
    assert store.applied_index() == 1 and store.head().height == 1
    assert store.get_account(2) is not None
    # The entry's own term goes into the header, as given (not a current term).
    assert store.get_block(1)[0].raft_term == 3 and store.get_block(1)[0].raft_index == 1
    assert done.writeset.header == store.head().header


def test_replay_of_an_applied_raft_index_is_skipped(path):
    """A restart replays the journal from before the applied index: nothing twice."""
    store = RocksStore(path)
    sm = StateMachine(store, decode_envelope=decode_envelope)
    sm.apply(_accounts_entry(), 1, 1)
    moved = codec.encode_entry(entry(T0 + 1, transfers_tx(transfer(10, 1, 2, 5))))
    assert sm.apply(moved, 1, 2).outcome is Outcome.BLOCK
    head = store.head()
    store.close()

    reopened = RocksStore(path)
    try:
        sm = StateMachine(reopened, decode_envelope=decode_envelope)
        for index, e in ((1, _accounts_entry()), (2, moved)):
            done = sm.apply(e, 1, index)
            assert done.outcome is Outcome.REPLAYED and done.results is None and done.height == head.height
        assert reopened.head() == head and reopened.applied_index() == 2
        assert reopened.get_account(1).debits_posted == 5, "the transfer was applied twice"
    finally:
        reopened.close()


def test_malformed_entry_is_recorded_as_applied_with_no_block(store):
    sm = StateMachine(store, decode_envelope=decode_envelope)
    sm.apply(_accounts_entry(), 1, 1)
    head = store.head()
    done = sm.apply(b"\x07 not an entry", 1, 2)
    assert done.outcome is Outcome.MALFORMED and done.results is None and done.height == 1
    assert store.applied_index() == 2
    assert store.head() == head and store.get_block(2) is None
    # The chain goes on at the next height with the next index.
    nxt = codec.encode_entry(entry(T0 + 1, accounts_tx(account(3))))
    assert sm.apply(nxt, 1, 3).height == 2 and store.get_block(2)[0].raft_index == 3


def test_read_barrier_marks_applied_without_a_block(store):
    sm = StateMachine(store, decode_envelope=decode_envelope)
    sm.apply(_accounts_entry(), 1, 1)
    head = store.head()
    done = sm.apply(codec.READ_BARRIER_ENTRY, 2, 2)
    assert done.outcome is Outcome.READ_BARRIER and done.height == 1 and done.results is None
    assert store.applied_index() == 2 and store.head() == head
    assert sm.apply(codec.READ_BARRIER_ENTRY, 2, 2).outcome is Outcome.REPLAYED


def test_decoded_entry_gives_what_its_bytes_give(tmp_path):
    """The leader applies the Entry it proposed, followers its bytes: the same block."""
    e = entry(T0, accounts_tx(account(1), account(2)), transfers_tx(transfer(10, 1, 2, 5)))
    a, b = RocksStore(str(tmp_path / "a")), RocksStore(str(tmp_path / "b"))
    try:
        ra = StateMachine(a, decode_envelope=decode_envelope).apply(e, 1, 1)
        rb = StateMachine(b, decode_envelope=decode_envelope).apply(codec.encode_entry(e), 1, 1)
        assert ra.results == rb.results and [r.codes[0] for r in ra.results] == [AR.ok, TR.ok]
        assert a.head() == b.head()
    finally:
        a.close()
        b.close()


class _DiskFull(RocksStore):
    """A RocksStore whose writes fail as on a full disk (reads work)."""

    def commit(self, ws, applied_index):
        raise OSError(errno.ENOSPC, "No space left on device")

    def mark_applied(self, applied_index):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("raw", [_accounts_entry(), codec.READ_BARRIER_ENTRY, b"\x07 malformed"])
def test_storage_failure_raises_and_nothing_is_applied(path, raw):
    s = _DiskFull(path)
    try:
        with pytest.raises(StorageFailure) as info:
            StateMachine(s, decode_envelope=decode_envelope).apply(raw, 1, 1)
        assert info.value.raft_index == 1 and isinstance(info.value.__cause__, OSError)
        assert s.applied_index() == 0 and s.head().height == 0
    finally:
        s.close()


class _BrokenReads(RocksStore):
    def get_account(self, account_id):
        raise RuntimeError("corrupt record")


def test_apply_raising_on_a_well_formed_entry_is_a_core_failure(path):
    s = _BrokenReads(path)
    try:
        with pytest.raises(CoreFailure) as info:
            StateMachine(s, decode_envelope=decode_envelope).apply(_accounts_entry(), 1, 1)
        assert info.value.raft_index == 1 and isinstance(info.value.__cause__, RuntimeError)
        assert s.applied_index() == 0
    finally:
        s.close()


def test_get_accounts_never_sees_half_a_block(store):
    """A lookup of both sides of a transfer sees it on both or neither: the accounts, the
    cache and the head of one committed block (store.get_accounts), while a writer commits
    transfers 1 -> 2 from another thread. Per-id reads (get_account) could see the debit of
    block h and the credit of block h-1. Bounded: 300 blocks."""
    import threading

    from helpers import Ledger

    led = Ledger(store)
    assert led.create_accounts(account(1), account(2)) == (AR.ok, AR.ok)
    done = threading.Event()

    def write():
        try:
            for i in range(300):
                assert led.create_transfers(transfer(100 + i, 1, 2, 1)) == (TR.ok,)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    try:
        while not done.is_set() or reads == 0:
            height, (debit_side, credit_side) = store.get_accounts([1, 2])
            assert debit_side.debits_posted == credit_side.credits_posted == height - 1
            reads += 1
    finally:
        writer.join(60)
    assert reads > 0 and store.get_accounts([1, 3]) == (301, [store.get_account(1), None])
