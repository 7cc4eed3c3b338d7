"""node/api/cdc.py: the events of a committed block, who sees them, the filter, the size
bound and the stream's order, over a real RocksStore fed by the replica's StateMachine."""
from __future__ import annotations

import pytest

from helpers import CHAIN, MEMBER, OTHER, Ledger, account, transfer, transfers_tx
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.wire import from_u128, u128
from raft_ledger_node.api.authz import Caller
from raft_ledger_node.api.cdc import EventStreams, Filter, block_events, block_messages
from raft_ledger_node.ledger.types import TransferFlags
from raft_ledger_node.store import RocksStore

BANK_A = Caller(MEMBER, frozenset({"member"}))
BANK_B = Caller(OTHER, frozenset({"member"}))
AUDITOR = Caller("auditor", frozenset({"auditor"}))
ALL = Filter()


@pytest.fixture
def ledger(tmp_path):
    store = RocksStore(str(tmp_path / "db"))
    lg = Ledger(store)
    # height 1: bank-a's accounts 1, 2; height 2: bank-b's 3; height 3: transfers.
    lg.create_accounts(account(1), account(2))
    lg.create_accounts(account(3), member=OTHER)
    lg.block(
        transfers_tx(transfer(10, 1, 2, 5), transfer(11, 1, 3, 7, flags=TransferFlags.PENDING, timeout=0)),
        transfers_tx(transfer(12, 3, 3, 1), transfer(13, 3, 2, 9, ledger=2), member=OTHER),  # 12: same account, fails
    )
    yield lg
    store.close()


def _ids(events, field):
    return [(from_u128(getattr(e, field).id), e.result) for e in events]


def test_a_member_sees_its_accounts_and_transfers_touching_them(ledger):
    _, accounts, _ = block_events(ledger.store, 1, BANK_A, ALL, chain_id=CHAIN)
    assert [(from_u128(a.account.id), a.account.owner, a.result) for a in accounts] == [(1, MEMBER, 0), (2, MEMBER, 0)]
    assert block_events(ledger.store, 2, BANK_A, ALL, chain_id=CHAIN)[1] == []  # bank-b's account
    _, _, transfers = block_events(ledger.store, 3, BANK_A, ALL, chain_id=CHAIN)
    # 12 and 13 failed: bank-b's attempts, one naming bank-a's account 2, are not bank-a's to see.
    assert _ids(transfers, "transfer") == [(10, 0), (11, 0)]
    assert transfers[1].pending_status == pb.PENDING_STATUS_PENDING and transfers[0].pending_status == 0


def test_the_signer_and_the_auditor_see_failed_events(ledger):
    _, _, theirs = block_events(ledger.store, 3, BANK_B, ALL, chain_id=CHAIN)
    assert [t for t, code in _ids(theirs, "transfer")] == [11, 12, 13]
    assert all(code != 0 for t, code in _ids(theirs, "transfer") if t in (12, 13))
    _, accounts, everything = block_events(ledger.store, 3, AUDITOR, ALL, chain_id=CHAIN)
    assert [t for t, _ in _ids(everything, "transfer")] == [10, 11, 12, 13]


def test_an_ok_account_is_the_creation_with_the_stored_timestamp(ledger):
    _, [a1, _], _ = block_events(ledger.store, 1, AUDITOR, ALL, chain_id=CHAIN)
    stored = ledger.store.get_account(1)
    assert a1.account.timestamp == stored.timestamp > 0
    # Later transfers moved its balances; the creation event still shows zero.
    assert stored.debits_posted == 5 and from_u128(a1.account.debits_posted) == 0


def test_filter_by_kind_ledger_and_account():
    f = Filter.from_pb(pb.EventFilter(kinds=[pb.EVENT_KIND_TRANSFERS], ledger=1, account_ids=[u128(3)]))
    assert not f.accounts and f.transfers and f.account_ids == {3}
    assert f.keeps_transfer(transfer(1, 1, 3, 1)) and not f.keeps_transfer(transfer(1, 1, 2, 1))
    assert not f.keeps_transfer(transfer(1, 1, 3, 1, ledger=2))
    with pytest.raises(Exception, match="at most 1024"):
        Filter.from_pb(pb.EventFilter(account_ids=[u128(i) for i in range(1025)]))
    with pytest.raises(Exception, match="unknown event kind"):
        Filter.from_pb(pb.EventFilter(kinds=[7]))


def test_a_large_block_is_split_into_parts_within_the_bound(ledger):
    header, accounts, transfers = block_events(ledger.store, 3, AUDITOR, ALL, chain_id=CHAIN)
    bound = 2 * max(t.ByteSize() + 6 for t in transfers)
    parts = list(block_messages(header, accounts, transfers, head_height=3, message_bytes_max=bound))
    assert len(parts) >= 2 and [t for p in parts for t in p.transfers] == transfers
    assert [p.continued for p in parts] == [True] * (len(parts) - 1) + [False] and {p.height for p in parts} == {3}
    assert all(sum(t.ByteSize() + 6 for t in p.transfers) <= bound for p in parts)
    assert [m.continued for m in block_messages(header, accounts, transfers, head_height=3)] == [False]


class _Context:
    def __init__(self, blocks_max: int):
        self.sent, self.blocks_max = 0, blocks_max
        self.trailing = ()

    def is_active(self):
        return self.sent < self.blocks_max

    def abort(self, code, details):
        raise RuntimeError(f"{code}: {details}")

    def set_trailing_metadata(self, md):
        self.trailing = md


def test_the_stream_sends_every_block_in_order_and_waits_for_new_ones(ledger):
    streams = EventStreams(ledger.store, chain_id=CHAIN, caller=lambda ctx: BANK_A, heartbeat_s=0.0,
                           clock=lambda: 0.0, sleep=lambda s: None)  # caught up: a heartbeat every poll
    ctx = _Context(blocks_max=6)
    out = []
    for m in streams.WatchEvents(pb.WatchEventsRequest(from_height=2), ctx):
        out.append(m)
        ctx.sent += 1
        if ctx.sent == 3:  # caught up at the head: a heartbeat; then a new block is applied
            assert m.heartbeat and m.head_height == 3
            ledger.create_accounts(account(4))
    assert [m.height for m in out if not m.heartbeat][:3] == [2, 3, 4]
    assert out[0].accounts == [] and [from_u128(a.account.id) for a in out[3].accounts] == [4]
    assert streams.open_streams == 0


def test_stream_slots_are_bounded_per_validator_and_per_caller(ledger):
    streams = EventStreams(ledger.store, chain_id=CHAIN, caller=lambda ctx: BANK_A, streams_max=3,
                           streams_per_caller_max=2)
    held = [streams.WatchEvents(pb.WatchEventsRequest(from_height=1), _Context(10)) for _ in range(2)]
    for g in held:
        next(g)
    ctx = _Context(10)
    with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED.*already holds 2"):
        next(streams.WatchEvents(pb.WatchEventsRequest(from_height=1), ctx))
    assert dict(ctx.trailing) == {"ledger-refused": "overloaded"}
    for g in held:
        g.close()
    assert streams.open_streams == 0
