"""RocksStore (real RocksDB via rocksdict) in a temporary directory.

Checks the adapter's failure contract (node/store.py docstring): one WriteBatch per
block, carrying the applied Raft index with the effects, so after a failure
nothing of the block is visible and after a restart the head and applied index
are exactly those of the last committed block (design.md "Storage layout").
"""
from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from helpers import MEMBER, NS, OTHER, Ledger, account, accounts_tx, resolve, transfer, transfers_tx
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.apply import apply_block
from raft_ledger_node.ledger.invariants import InvariantError
from raft_ledger_node.ledger.types import (
    GENESIS_HEAD,
    AccountFlags as AF,
    CreateTransferResult as TR,
    Entry,
    PendingStatus,
    TransferFlags as TF,
)
from raft_ledger_node.store import COLUMN_FAMILIES, RocksStore, StoreError

T = transfer
P = TF.PENDING


def dump(store: RocksStore) -> dict[str, dict[bytes, bytes]]:
    """Every key and value in every column family: 'nothing written' means equal dumps."""
    return {cf: dict(store._cf[cf].items()) for cf in COLUMN_FAMILIES}


def run_workload(led: Ledger) -> dict:
    """A few blocks touching every column family; returns what the test expects to read back."""
    created = led.block(
        accounts_tx(account(1, flags=AF.HISTORY), account(2), account(3, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS)),
        accounts_tx(account(4), member=OTHER),
    )
    [moved] = led.block(
        transfers_tx(
            T(10, 1, 2, 100),
            T(11, 1, 3, 40, flags=P, timeout=60),  # stays pending, in the expiry index
            T(12, 1, 2, 5, flags=P),
            T(13, 3, 2, 1),  # exceeds_credits: a transient failure
            resolve(14, 12, TF.POST_PENDING_TRANSFER, amount=2),
        )
    )
    assert moved.codes == (TR.ok, TR.ok, TR.ok, TR.exceeds_credits, TR.ok)
    return {"created": created, "moved": moved}


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "db")


def test_fresh_store_is_at_genesis(path):
    s = RocksStore(path)
    try:
        assert s.head() == GENESIS_HEAD
        assert s.applied_index() == 0
        assert s.get_account(1) is None and s.get_transfer(1) is None
        assert s.get_pending_status(1) == PendingStatus.none
        assert s.get_failed_transfer(MEMBER, 1) is None and s.get_tx_result(bytes(32)) is None
        assert s.expiring(1 << 64) == [] and s.get_block(1) is None
    finally:
        s.close()


def test_commit_then_reopen_gives_the_same_state(path):
    s = RocksStore(path)
    led = Ledger(s)
    out = run_workload(led)
    head, applied = s.head(), s.applied_index()
    tx = led.entries[-1].txs[0]
    assert head.height == 2 and applied == 2
    before = dump(s)
    s.close()

    s = RocksStore(path)
    try:
        assert s.head() == head
        assert s.applied_index() == applied
        assert dump(s) == before
        assert s.get_account(1).debits_posted == 102 and s.get_account(1).debits_pending == 40
        assert s.get_transfer(14).amount == 2
        assert s.get_pending_status(11) == PendingStatus.pending
        assert s.get_pending_status(12) == PendingStatus.posted
        assert s.get_failed_transfer(MEMBER, 13) == TR.exceeds_credits
        assert s.get_tx_result(tx.tx_hash) == (2, out["moved"].codes, 0)
        assert s.get_transaction(tx.tx_hash) == tx.envelope
        header, hashes = s.get_block(2)
        assert header == head.header and hashes == [tx.tx_hash]
        t11 = s.get_transfer(11)
        assert s.expiring(1 << 64) == [(t11.timestamp + 60 * NS, 11)]
        assert s.expiring(t11.timestamp + 60 * NS - 1) == []
        assert [tid for _, tid in s.account_transfer_ids(1)] == [10, 11, 12, 14]
        assert {a.id for a in s.iter_accounts()} == {1, 2, 3, 4}
        # The history column family holds one record per transfer of a HISTORY account.
        assert len(before["history"]) == 4  # transfers 10, 11, 12, 14
    finally:
        s.close()


def test_reads_match_the_memory_store(path):
    from raft_ledger_node.store_memory import MemoryStore

    mem, rocks = Ledger(MemoryStore()), Ledger(RocksStore(path))
    try:
        run_workload(mem)
        for e in mem.entries:  # the same log
            rocks.block(*e.txs, ts=e.proposed_timestamp)
        for i in range(1, 5):
            assert rocks.store.get_account(i) == mem.store.get_account(i)
        for t in range(10, 15):
            assert rocks.store.get_transfer(t) == mem.store.get_transfer(t)
            assert rocks.store.get_pending_status(t) == mem.store.get_pending_status(t)
            assert rocks.store.get_failed_transfer(MEMBER, t) == mem.store.get_failed_transfer(MEMBER, t)
        assert rocks.store.expiring(1 << 64) == mem.store.expiring(1 << 64)
        assert rocks.store.head() == mem.store.head()
        for e in rocks.entries:
            for tx in e.txs:
                assert rocks.store.get_tx_result(tx.tx_hash) == mem.store.get_tx_result(tx.tx_hash)
    finally:
        rocks.store.close()


def test_account_transfer_ids_range(path):
    s = RocksStore(path)
    try:
        led = Ledger(s)
        led.create_accounts(account(1), account(2), account(3))
        led.create_transfers(T(10, 1, 2, 1), T(11, 3, 1, 1), T(12, 2, 3, 1), T(13, 1, 3, 1))
        rows = list(s.account_transfer_ids(1))
        assert [tid for _, tid in rows] == [10, 11, 13]
        ts = [t for t, _ in rows]
        assert ts == sorted(ts)
        assert [tid for _, tid in s.account_transfer_ids(1, ts_min=ts[1], ts_max=ts[1])] == [11]
        assert list(s.account_transfer_ids(99)) == []
    finally:
        s.close()


def _next_block(s: RocksStore, *txs, index: int):
    _, ws = apply_block(s, Entry(proposed_timestamp=s.head().header.timestamp + NS, txs=tuple(txs)), 1, index)
    return ws


def _assert_nothing_written(path, s, before, head, applied):
    assert dump(s) == before
    assert s.head() == head and s.applied_index() == applied
    s.close()
    s2 = RocksStore(path)
    try:
        assert dump(s2) == before
        assert s2.head() == head and s2.applied_index() == applied
    finally:
        s2.close()


def test_failed_account_invariant_in_commit_writes_nothing(path):
    # TigerBeetle style: assert a record right before it is written. The block's
    # other effects (a new account, the block, the tx index) must not land either.
    s = RocksStore(path)
    led = Ledger(s)
    run_workload(led)
    before, head, applied = dump(s), s.head(), s.applied_index()
    ws = _next_block(s, accounts_tx(account(50)), transfers_tx(T(60, 1, 2, 1)), index=applied + 1)
    assert 50 in ws.accounts and 60 in ws.transfers
    bad = replace(s.get_account(3), debits_posted=10**6)  # breaks debits_must_not_exceed_credits
    ws.accounts = {**ws.accounts, 3: bad}
    with pytest.raises(InvariantError, match="debits exceed credits"):
        s.commit(ws, applied + 1)
    _assert_nothing_written(path, s, before, head, applied)


def test_out_of_order_block_writes_nothing(path):
    s = RocksStore(path)
    led = Ledger(s)
    run_workload(led)
    before, head, applied = dump(s), s.head(), s.applied_index()
    # The last block's WriteSet again: its height is not head + 1.
    with pytest.raises(InvariantError, match="in order"):
        s.commit(led.ws, applied + 1)
    _assert_nothing_written(path, s, before, head, applied)


def test_applied_index_must_grow(path):
    s = RocksStore(path)
    led = Ledger(s)
    run_workload(led)
    before, head, applied = dump(s), s.head(), s.applied_index()
    ws = _next_block(s, accounts_tx(account(50)), index=applied)
    with pytest.raises(InvariantError, match="applied index"):
        s.commit(ws, applied)
    _assert_nothing_written(path, s, before, head, applied)


def test_mark_applied_survives_a_restart_and_keeps_the_head(path):
    s = RocksStore(path)
    led = Ledger(s)
    run_workload(led)
    head = s.head()
    s.mark_applied(7)
    with pytest.raises(InvariantError):
        s.mark_applied(7)
    s.close()
    s = RocksStore(path)
    try:
        assert s.applied_index() == 7 and s.head() == head
    finally:
        s.close()


def test_posting_deletes_the_expiry_key(path):
    s = RocksStore(path)
    try:
        led = Ledger(s)
        led.create_accounts(account(1), account(2))
        led.create_transfers(T(10, 1, 2, 5, flags=P, timeout=1), T(11, 1, 2, 5, flags=P, timeout=1))
        assert len(s.expiring(1 << 64)) == 2
        led.create_transfers(resolve(12, 10, TF.VOID_PENDING_TRANSFER))
        assert [tid for _, tid in s.expiring(1 << 64)] == [11]
        led.advance(2)
        led.block()
        assert s.expiring(1 << 64) == []
        assert s.get_pending_status(11) == PendingStatus.expired
    finally:
        s.close()


def test_other_schema_version_is_refused(path):
    s = RocksStore(path)
    s._cf["meta"][b"schema_version"] = struct.pack(">Q", 99)
    s.close()
    with pytest.raises(StoreError, match="schema version 99"):
        RocksStore(path)


def test_corrupt_head_is_refused(path):
    s = RocksStore(path)
    Ledger(s).create_accounts(account(1))
    s._cf["meta"][b"head"] = codec.encode_head(s.head())[:-1]
    s.close()
    with pytest.raises(StoreError, match="chain head record is corrupt"):
        RocksStore(path)


def test_unusable_path_is_a_store_error(tmp_path):
    f = tmp_path / "not-a-dir"
    f.write_bytes(b"x")
    with pytest.raises(StoreError):
        RocksStore(str(f))


def test_pending_transfer_resolved_in_its_own_block_leaves_no_expiry_key(path):
    # The WriteSet carries the expiry key in expiry_put and expiry_delete; the
    # WriteBatch must end with it deleted, as MemoryStore does.
    s = RocksStore(path)
    try:
        led = Ledger(s)
        led.create_accounts(account(1), account(2))
        codes = led.create_transfers(
            T(10, 1, 2, 5, flags=P, timeout=1),
            resolve(11, 10, TF.POST_PENDING_TRANSFER),
            T(12, 1, 2, 5, flags=P, timeout=1),
            resolve(13, 12, TF.VOID_PENDING_TRANSFER),
            T(14, 1, 2, 5, flags=P, timeout=1),
        )
        assert codes == (TR.ok,) * 5
        assert [tid for _, tid in s.expiring(1 << 64)] == [14]
        assert dict(s._cf["expiry"].items()).keys() == {
            struct.pack(">Q", s.get_transfer(14).timestamp + NS) + codec.u128(14)
        }
    finally:
        s.close()


# -- the account cache (RocksStore.get_account) ---------------------------------


def test_account_cache_follows_commits_and_matches_rocksdb(path):
    s = RocksStore(path)
    led = Ledger(s)
    run_workload(led)
    led.block(transfers_tx(T(70, 1, 2, 7)))
    for account_id in (1, 2, 3, 4):
        cached = s.get_account(account_id)
        assert cached == codec.decode_account(s._cf["accounts"][codec.u128(account_id)])
    assert s.get_account(2).credits_posted == 100 + 2 + 7
    assert s.get_account(999) is None


class _ReadThenCommit:
    """Stands in for the accounts column family: the read returns what was on
    disk, then a block commits before the reader gets to fill the cache."""

    def __init__(self, cf, commit) -> None:
        self.cf, self.commit = cf, commit

    def get(self, key):
        raw = self.cf.get(key)
        commit, self.commit = self.commit, None
        if commit is not None:  # once: the block's own reads go straight through
            commit()
        return raw


def test_a_read_racing_a_commit_never_caches_the_older_record(path):
    s = RocksStore(path)
    led = Ledger(s)
    run_workload(led)
    s._accounts.clear()  # account 2 is not cached: the next read goes to RocksDB
    cf = s._cf
    s._cf = {**cf, "accounts": _ReadThenCommit(cf["accounts"], lambda: led.block(transfers_tx(T(71, 1, 2, 9))))}
    stale = s.get_account(2)  # read before the block, returned as read
    s._cf = cf
    assert s.get_account(2).credits_posted == stale.credits_posted + 9


def test_installing_a_snapshot_drops_cached_accounts(path, tmp_path):
    s = RocksStore(path)
    led = Ledger(s)
    run_workload(led)
    before = s.get_account(2)
    s.checkpoint(str(tmp_path / "ckpt"))
    led.block(transfers_tx(T(72, 1, 2, 11)))
    assert s.get_account(2).credits_posted == before.credits_posted + 11  # cached by the commit
    s.replace_from_checkpoint(str(tmp_path / "ckpt"))
    assert s.get_account(2) == before
    s.close()


def test_invariant_checks_stay_on_under_python_O(tmp_path):
    """``python -O`` strips ``assert``; the storage-edge checks must still refuse an
    out-of-order block (TigerBeetle's assertions are always on)."""
    import pathlib
    import subprocess
    import sys

    code = f"""
import sys
sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
from helpers import Ledger, account, accounts_tx
from raft_ledger_node.ledger.invariants import InvariantError
from raft_ledger_node.store import RocksStore
assert False, "asserts are on: this check needs python -O"
"""
    out = subprocess.run([sys.executable, "-O", "-c", code + f"""
s = RocksStore({str(tmp_path / "db")!r})
led = Ledger(s)
led.block(accounts_tx(account(1)))
try:
    s.commit(led.ws, s.applied_index() + 1)
except InvariantError as e:
    print("refused:", e)
"""], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "in order" in out.stdout
