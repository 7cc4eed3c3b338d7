"""Determinism: the same Raft log gives the same chain on every validator, every time.

design.md "Determinism rules" and invariant 4 (Agreement: identical block hashes and
state at the same height). The log is a fixed pseudo-random workload (seeded) of
account creation, transfers, two-phase transfers with timeouts, linked chains,
failures, retries and a leader clock that sometimes goes backwards.
"""
from __future__ import annotations

import bisect
import random

import pytest

from helpers import NS, T0, Ledger, account, accounts_tx, assert_conserved, decode_envelope, entry, resolve, transfer, transfers_tx
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.apply import apply_block
from raft_ledger_node.ledger.types import AccountFlags as AF, CreateTransferResult as TR, Entry, TransferFlags as TF
from raft_ledger_node.store import RocksStore
from raft_ledger_node.store_memory import MemoryStore

MEMBERS = ("bank-a", "bank-b", "bank-c")
BLOCKS = 60


def workload(seed: int = 6962) -> list[Entry]:
    rnd = random.Random(seed)
    owners: dict[int, str] = {}
    ledger_of: dict[int, int] = {}
    pending: list[int] = []
    sent = []
    entries: list[Entry] = []
    clock = T0
    next_tid = 1000
    flags_choice = [0, 0, 0, AF.DEBITS_MUST_NOT_EXCEED_CREDITS, AF.CREDITS_MUST_NOT_EXCEED_DEBITS, AF.HISTORY]

    # Genesis funding: every member opens accounts on two ledgers.
    txs = []
    for m_i, m in enumerate(MEMBERS):
        accts = []
        for k in range(6):
            aid = 1 + m_i * 10 + k
            accts.append(account(aid, ledger=1 + k % 2, flags=flags_choice[k] | (AF.LINKED if k < 5 else 0)))
            owners[aid] = m
            ledger_of[aid] = 1 + k % 2
        txs.append(accounts_tx(*accts, member=m))
    entries.append(entry(clock, *txs))

    for _ in range(BLOCKS):
        step = rnd.random()
        if step < 0.1:
            clock -= rnd.randint(1, 5) * NS  # a new leader whose clock is behind
        elif step < 0.25:
            clock += rnd.randint(1, 3) * NS  # long enough for timeouts to fire
        else:
            clock += rnd.randint(1, 10**6)
        txs = []
        for _ in range(rnd.randint(0, 4)):
            if sent and rnd.random() < 0.15:
                txs.append(rnd.choice(sent))  # a client retry: same envelope
                continue
            member = rnd.choice(MEMBERS)
            mine = [a for a, o in owners.items() if o == member]
            events = []
            for j in range(rnd.randint(1, 5)):
                next_tid += 1
                kind = rnd.random()
                linked = TF.LINKED if rnd.random() < 0.2 else 0
                if kind < 0.15 and pending:
                    pid = rnd.choice(pending)
                    fl = rnd.choice([TF.POST_PENDING_TRANSFER, TF.VOID_PENDING_TRANSFER])
                    events.append(resolve(next_tid, pid, fl | linked, amount=rnd.choice([0, 0, 1, 5])))
                else:
                    dr = rnd.choice(mine + [999])  # 999 does not exist
                    same = [a for a in owners if ledger_of[a] == ledger_of.get(dr, 1) and a != dr]
                    cr = rnd.choice(same if rnd.random() < 0.9 else list(owners))
                    fl = linked
                    timeout = 0
                    if kind < 0.45:
                        fl |= TF.PENDING
                        timeout = rnd.choice([0, 1, 2])
                        pending.append(next_tid)
                    if rnd.random() < 0.1:
                        fl |= TF.BALANCING_DEBIT
                    events.append(
                        transfer(next_tid, dr, cr, rnd.randint(0, 50), ledger=ledger_of.get(dr, 1), flags=fl, timeout=timeout)
                    )
                if rnd.random() < 0.05:
                    events.append(events[-1])  # same id twice in one transaction
            tx = transfers_tx(*events, member=member)
            sent.append(tx)
            txs.append(tx)
        entries.append(entry(clock, *txs))
    return entries


ENTRIES = workload()


def replay(store, entries, term: int = 1, first_index: int = 1):
    """Apply and commit each entry as the replication adapter does; returns (results, headers)."""
    results, headers = [], []
    for i, e in enumerate(entries, start=first_index):
        res, ws = apply_block(store, e, term, i)
        store.commit(ws, i)
        results.append(res)
        headers.append(ws.header)
    return results, headers


@pytest.fixture(scope="module")
def memory_run():
    store = MemoryStore()
    results, headers = replay(store, ENTRIES)
    return store, results, headers


def test_workload_exercises_the_interesting_paths(memory_run):
    store, results, _ = memory_run
    codes = {TR(c) for block in results[1:] for r in block for c in r.codes}
    assert {
        TR.ok,
        TR.linked_event_failed,
        TR.linked_event_chain_open,
        TR.exists,
        TR.id_already_failed,
        TR.debit_account_not_found,
        TR.exceeds_credits,
        TR.pending_transfer_expired,
    } <= codes
    assert any(s == 4 for s in store.status.values())  # something expired
    assert any(s == 2 for s in store.status.values()) and any(s == 3 for s in store.status.values())


def test_memory_and_rocks_stores_give_identical_chains(memory_run, tmp_path):
    _, mem_results, mem_headers = memory_run
    rocks = RocksStore(str(tmp_path / "db"))
    try:
        rocks_results, rocks_headers = replay(rocks, ENTRIES)
        assert rocks_results == mem_results
        assert [h.hash for h in rocks_headers] == [h.hash for h in mem_headers]
        assert [h.state_hash for h in rocks_headers] == [h.state_hash for h in mem_headers]
        assert rocks_headers == mem_headers
        mem = memory_run[0]
        assert {a.id: a for a in rocks.iter_accounts()} == mem.accounts
        assert all(rocks.get_transfer(t) == mem.transfers[t] for t in mem.transfers)
    finally:
        rocks.close()


def test_replaying_the_encoded_log_into_a_fresh_store_gives_the_same_chain(memory_run):
    mem, results, headers = memory_run
    log = [codec.encode_entry(e) for e in ENTRIES]  # what the Raft journal holds
    fresh = MemoryStore()
    decoded = [codec.decode_entry(b) for b in log]
    results2, headers2 = replay(fresh, [Entry(d.proposed_timestamp, tuple(decode_envelope(x) for x in d.envelopes))
                                        for d in decoded])
    assert headers2 == headers and results2 == results
    assert fresh.accounts == mem.accounts
    assert fresh.transfers == mem.transfers
    assert fresh.status == mem.status and fresh.failed == mem.failed and fresh.expiry == mem.expiry


def test_restart_midway_continues_the_same_chain(memory_run, tmp_path):
    # A validator that stops after k blocks and restarts from its RocksDB applies the
    # rest of the log from applied_index + 1 and ends on the same head.
    _, _, headers = memory_run
    path = str(tmp_path / "db")
    k = len(ENTRIES) // 2
    s = RocksStore(path)
    replay(s, ENTRIES[:k])
    s.close()
    s = RocksStore(path)
    try:
        assert s.applied_index() == k and s.head().header == headers[k - 1]
        _, rest = replay(s, ENTRIES[k:], first_index=s.applied_index() + 1)
        assert rest == headers[k:]
    finally:
        s.close()


def test_chain_is_linked_and_hashes_are_canonical(memory_run):
    _, _, headers = memory_run
    prev = bytes(32)
    for i, h in enumerate(headers, start=1):
        assert h.height == i and h.raft_index == i and h.raft_term == 1
        assert h.prev_hash == prev
        assert h.hash == codec.block_hash(h)
        prev = h.hash


def test_block_and_event_timestamps_strictly_increase(memory_run):
    # design.md: the leader stamps each entry; timestamps are strictly increasing
    # across entries even when the proposed time goes backwards.
    store, _, headers = memory_run
    proposed = [e.proposed_timestamp for e in ENTRIES]
    assert any(b < a for a, b in zip(proposed, proposed[1:])), "the workload must propose backwards times"
    ts = [h.timestamp for h in headers]
    assert all(a < b for a, b in zip(ts, ts[1:]))
    assert all(t >= p for t, p in zip(ts, proposed))
    # Every transfer has its own timestamp, inside the slot of the block that made it:
    # after the previous block's timestamp and before its own.
    stamps = [t.timestamp for t in store.transfers.values()]
    assert len(stamps) == len(set(stamps))
    slot = {t.id: bisect.bisect_left(ts, t.timestamp) for t in store.transfers.values()}
    for tid, i in slot.items():
        t = store.transfers[tid].timestamp
        assert 0 < i < len(ts) and ts[i - 1] < t < ts[i]


def test_event_timestamps_fall_between_blocks():
    led = Ledger()
    led.block(accounts_tx(account(1), account(2)), ts=T0)
    first = led.store.head().header.timestamp
    # The proposed timestamp goes backwards by an hour: the block still moves forward.
    led.block(transfers_tx(transfer(10, 1, 2, 1), transfer(11, 1, 2, 1)), ts=T0 - 3600 * NS)
    second = led.store.head().header.timestamp
    t10, t11 = led.store.get_transfer(10).timestamp, led.store.get_transfer(11).timestamp
    assert first < t10 < t11 < second
    assert second == first + 3  # two events and the block itself, one ns each
    led.block(ts=0)
    assert led.store.head().header.timestamp == second + 1


def test_conservation_holds_after_every_block():
    store = MemoryStore()
    for i, e in enumerate(ENTRIES, start=1):
        _, ws = apply_block(store, e, 1, i)
        store.commit(ws, i)
        assert_conserved(store.accounts.values())


def test_apply_block_is_pure(memory_run):
    # Same reader, same entry: same output, and the reader is not modified.
    store = MemoryStore()
    replay(store, ENTRIES[:20])
    snapshot = (dict(store.accounts), dict(store.transfers), dict(store.status), store.head())
    r1, ws1 = apply_block(store, ENTRIES[20], 1, 21)
    r2, ws2 = apply_block(store, ENTRIES[20], 1, 21)
    assert r1 == r2 and ws1 == ws2
    assert (dict(store.accounts), dict(store.transfers), dict(store.status), store.head()) == snapshot


def test_term_and_index_are_part_of_the_block_hash():
    e = ENTRIES[0]
    _, a = apply_block(MemoryStore(), e, 1, 1)
    _, b = apply_block(MemoryStore(), e, 2, 1)
    _, c = apply_block(MemoryStore(), e, 1, 2)
    assert a.header.state_hash == b.header.state_hash == c.header.state_hash
    assert len({a.header.hash, b.header.hash, c.header.hash}) == 3


def test_state_hash_changes_with_any_state_change():
    led1, led2 = Ledger(), Ledger()
    tx = accounts_tx(account(1), account(2))
    led1.block(tx, ts=T0)
    led2.block(tx, ts=T0)
    assert led1.ws.header.state_hash == led2.ws.header.state_hash
    led1.block(transfers_tx(transfer(10, 1, 2, 1), nonce=1), ts=T0 + NS)
    led2.block(transfers_tx(transfer(10, 1, 2, 2), nonce=1), ts=T0 + NS)
    assert led1.ws.header.state_hash != led2.ws.header.state_hash
