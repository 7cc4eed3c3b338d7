"""Pending-transfer expiry is bounded per block (limits.block_expiries_max).

A block processes at most ``expiries_max`` expiries, the first in expiry-key order
(expires_at, id); the rest follow in later blocks. Deterministic: decided from
the log's block timestamps and the committed index, so MemoryStore and RocksStore
produce the same blocks. It changes no result code (TigerBeetle transfer.md
``timeout``: a post/void after the timeout is ``pending_transfer_expired``), only
when the reserved amounts are released. TigerBeetle bounds its expiry pulse the
same way (src/state_machine.zig: ``.pulse => constants.batch_max.create_transfers``).
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from helpers import NS, T0, account, accounts_tx, assert_conserved, entry, resolve, transfer, transfers_tx
from raft_ledger_node.ledger import limits
from raft_ledger_node.ledger.apply import apply_block
from raft_ledger_node.ledger.types import AccountFlags as AF, CreateTransferResult as TR, PendingStatus, TransferFlags as TF
from raft_ledger_node.store import RocksStore
from raft_ledger_node.store_memory import MemoryStore

P, POST, VOID = TF.PENDING, TF.POST_PENDING_TRANSFER, TF.VOID_PENDING_TRANSFER
A, B = 1, 2


class Chain:
    """Applies blocks to ``store`` with an injected expiry bound (apply_block + commit)."""

    def __init__(self, store, expiries_max: int) -> None:
        self.store, self.expiries_max = store, expiries_max
        self.index = 0
        self.clock = T0
        self.writesets = []

    def block(self, *txs, ts: int | None = None):
        self.clock = self.clock + 1_000_000 if ts is None else ts
        self.index += 1
        results, ws = apply_block(self.store, entry(self.clock, *txs), 1, self.index, expiries_max=self.expiries_max)
        self.store.commit(ws, self.index)
        self.writesets.append(ws)
        return results

    def codes(self, *txs, ts: int | None = None):
        return [r.codes for r in self.block(*txs, ts=ts)]


def expired_ids(ws) -> list[int]:
    return [tid for tid, s in ws.pending_status.items() if s == PendingStatus.expired]


def setup_pendings(chain: Chain, n: int, *, flags: int = 0) -> list[int]:
    """Accounts A, B and ``n`` pending transfers A -> B of 1 with a 1 s timeout, in one block."""
    assert chain.codes(accounts_tx(account(A, flags=flags), account(B))) == [(0, 0)]
    ids = [100 + i for i in range(n)]
    assert chain.codes(transfers_tx(*[transfer(i, A, B, 1, flags=P, timeout=1) for i in ids])) == [(TR.ok,) * n]
    return ids


@pytest.mark.parametrize("n,bound", [(10, 3), (7, 7), (8, 1)])
def test_expiries_spread_over_blocks_in_key_order(n, bound):
    chain = Chain(MemoryStore(), bound)
    setup_pendings(chain, n)
    due = chain.store.expiring(1 << 64, n + 1)
    assert len(due) == n
    chain.clock += 2 * NS  # every deadline has passed
    batches = []
    for _ in range(math.ceil(n / bound)):
        chain.block()
        batches.append(expired_ids(chain.writesets[-1]))
        assert_conserved(chain.store.accounts.values())
        a = chain.store.get_account(A)
        assert a.debits_pending == n - sum(map(len, batches))
    assert [len(b) for b in batches] == [min(bound, n - i * bound) for i in range(len(batches))]
    assert [tid for b in batches for tid in b] == [tid for _, tid in due]  # expiry-key order
    assert chain.store.expiring(1 << 64, n + 1) == []
    chain.block()
    assert expired_ids(chain.writesets[-1]) == []


def test_expiring_reads_at_most_the_limit(tmp_path):
    rocks = RocksStore(str(tmp_path / "db"))
    try:
        for store in (MemoryStore(), rocks):
            chain = Chain(store, 1)
            setup_pendings(chain, 5)
            assert len(store.expiring(1 << 64, 2)) == 2
            assert store.expiring(1 << 64, 0) == []
            assert store.expiring(1 << 64, 99) == store.expiring(1 << 64)[:5]
    finally:
        rocks.close()


def test_memory_and_rocks_stores_expire_the_same_in_the_same_block(tmp_path):
    # Design: determinism rules; invariant 4 (agreement): same log, same bytes.
    n = 11
    log = [
        (T0 + 1_000_000, (accounts_tx(account(A), account(B)),)),
        (T0 + 2_000_000, (transfers_tx(*[transfer(100 + i, A, B, 1, flags=P, timeout=1) for i in range(n)]),)),
        (T0 + 3 * NS, (transfers_tx(resolve(900, 105, POST)),)),  # due, not yet processed
    ] + [(T0 + 3 * NS + k * 1_000_000, ()) for k in range(1, 4)]
    rocks = RocksStore(str(tmp_path / "db"))
    try:
        mem, rck = Chain(MemoryStore(), 4), Chain(rocks, 4)
        for ts, txs in log:
            assert [r.codes for r in mem.block(*txs, ts=ts)] == [r.codes for r in rck.block(*txs, ts=ts)]
            assert_conserved(mem.store.accounts.values())
        assert [len(expired_ids(ws)) for ws in mem.writesets] == [0, 0, 4, 4, 3, 0]
        assert [ws.header for ws in mem.writesets] == [ws.header for ws in rck.writesets]
        for wm, wr in zip(mem.writesets, rck.writesets):
            assert (wm.accounts, wm.pending_status, wm.expiry_delete) == (wr.accounts, wr.pending_status, wr.expiry_delete)
        assert mem.store.head() == rck.store.head()
        assert [rck.store.get_account(i) for i in (A, B)] == [mem.store.get_account(i) for i in (A, B)]
    finally:
        rocks.close()


def test_post_and_void_of_a_timed_out_unprocessed_pending_are_expired():
    # transfer.md timeout / two-phase-transfers.md: resolving after the timeout
    # fails with pending_transfer_expired, processed or not.
    chain = Chain(MemoryStore(), 1)
    ids = setup_pendings(chain, 4)
    chain.clock += 2 * NS
    assert chain.codes(transfers_tx(resolve(900, ids[3], POST)), transfers_tx(resolve(901, ids[2], VOID))) == [
        (TR.pending_transfer_expired,),
        (TR.pending_transfer_expired,),
    ]
    assert expired_ids(chain.writesets[-1]) == [ids[0]]  # only one processed in that block
    assert chain.store.get_pending_status(ids[3]) == PendingStatus.pending
    assert chain.store.get_account(A).debits_pending == 3  # released later, not by the failed post
    for _ in range(3):
        chain.block()
    assert [chain.store.get_pending_status(i) for i in ids] == [PendingStatus.expired] * 4
    assert chain.store.get_account(A).debits_pending == 0


def test_a_deadline_between_the_event_and_the_block_time_is_expired():
    # A block's events are stamped before its timestamp; every transfer due by the
    # block's timestamp is expired in it (the unbounded behaviour), even one the
    # bound leaves unprocessed, so a post there must not succeed.
    chain = Chain(MemoryStore(), 1)
    ids = setup_pendings(chain, 2)
    deadline = chain.store.get_transfer(ids[1]).timestamp + NS
    [codes] = chain.codes(transfers_tx(resolve(900, ids[1], POST)), ts=deadline)
    assert chain.store.get_transfer(900) is None
    assert codes == (TR.pending_transfer_expired,)
    assert chain.writesets[-1].header.timestamp == deadline


def test_unreleased_reservation_still_counts_for_balance_limits():
    # The documented cost of the bound: until its expiry is processed, a timed-out
    # reservation stays in debits_pending, so a debits_must_not_exceed_credits
    # account can refuse a transfer that unbounded expiry would accept.
    def run(bound: int):
        chain = Chain(MemoryStore(), bound)
        assert chain.codes(accounts_tx(account(A, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS), account(B))) == [(0, 0)]
        assert chain.codes(transfers_tx(transfer(10, B, A, 100))) == [(TR.ok,)]
        assert chain.codes(transfers_tx(transfer(11, A, B, 50, flags=P, timeout=1), transfer(12, A, B, 50, flags=P, timeout=1))) == [
            (TR.ok, TR.ok)
        ]
        chain.clock += 2 * NS
        return chain.codes(transfers_tx(transfer(13, A, B, 100)))

    assert run(limits.block_expiries_max) == [(TR.ok,)]
    assert run(1) == [(TR.exceeds_credits,)]


# -- property: the bound changes no result code and conserves after every block -------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("pending"), st.integers(1, 20), st.integers(1, 3)),  # id offset, timeout s
        st.tuples(st.just("post"), st.integers(1, 20), st.just(0)),
        st.tuples(st.just("void"), st.integers(1, 20), st.just(0)),
        st.tuples(st.just("move"), st.integers(1, 5), st.just(0)),
        st.tuples(st.just("wait"), st.integers(0, 3), st.just(0)),  # seconds
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=_ops, bound=st.integers(1, 4))
def test_bound_changes_no_result_and_conserves(ops, bound):
    # Accounts without balance limits or closing flags: there the bound is invisible
    # in result codes (see the test above for accounts with limits).
    small, big = Chain(MemoryStore(), bound), Chain(MemoryStore(), 1 << 30)
    for c in (small, big):
        c.codes(accounts_tx(account(A), account(B)))
    next_id = 1000
    for kind, x, y in ops:
        next_id += 1
        if kind == "wait":
            for c in (small, big):
                c.clock += x * NS
            txs = ()
        elif kind == "pending":
            txs = (transfers_tx(transfer(x, A, B, 1, flags=P, timeout=y), nonce=next_id),)
        elif kind in ("post", "void"):
            txs = (transfers_tx(resolve(next_id, x, POST if kind == "post" else VOID), nonce=next_id),)
        else:
            txs = (transfers_tx(transfer(next_id, B, A, x), nonce=next_id),)
        assert small.codes(*txs) == big.codes(*txs)
        assert_conserved(small.store.accounts.values())
        assert small.writesets[-1].header.timestamp == big.writesets[-1].header.timestamp
    # Enough empty blocks later, the released balances agree too.
    for c in (small, big):
        c.clock += 4 * NS
        for _ in range(20 // bound + 1):
            c.block()
    assert small.store.accounts == big.store.accounts
    assert small.store.status == big.store.status
