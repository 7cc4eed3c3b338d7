"""The SDK's watch_events iterator (client/cdc.py) over the node's real EventStreams on a
real RocksStore, through the in-process transport: a validator that goes away mid-stream
is left for another at last height + 1 (no gap, no duplicate); filters reach the server."""
from __future__ import annotations

import pytest

from helpers import CHAIN, SIGNING_KEY, Ledger, account, transfer, transfers_tx
from raft_ledger_client import InProcessTransport, LedgerClient, PermissionDenied, RetryPolicy
from raft_ledger_client.cdc import request
from raft_ledger_node.api.authz import Caller
from raft_ledger_node.api.cdc import EventStreams
from raft_ledger_node.store import RocksStore

AUDITOR = Caller("auditor", frozenset({"auditor"}))


@pytest.fixture
def ledger(tmp_path):
    store = RocksStore(str(tmp_path / "db"))
    lg = Ledger(store)
    lg.create_accounts(account(1), account(2))
    for i in range(4):
        lg.block(transfers_tx(transfer(10 + i, 1, 2, 1 + i)))
    yield lg
    store.close()


def _client(servicers) -> LedgerClient:
    return LedgerClient(list(servicers), member_id="auditor", key_id="k1", private_key=SIGNING_KEY, chain_id=CHAIN,
                        transport=InProcessTransport(servicers), retry=RetryPolicy(deadline_s=5.0, backoff_initial_s=0.0),
                        clock=lambda: 0.0, sleep=lambda s: None)  # no wall clock: the watchdog never fires


def _streams(store, caller=AUDITOR):
    return EventStreams(store, chain_id=CHAIN, caller=lambda ctx: caller, clock=lambda: 0.0, sleep=lambda s: None)


def test_a_validator_going_away_mid_stream_is_resumed_elsewhere_without_gap(ledger):
    servicers = {"v1": _streams(ledger.store), "v2": _streams(ledger.store)}
    got = []
    with _client(servicers) as c:
        for b in c.watch_events(1, address="v1"):
            got.append(b)
            if b.height == 2:
                del servicers["v1"]  # v1 is down from now on
            if b.height == ledger.store.head().height:
                break
    assert [b.height for b in got] == list(range(1, ledger.store.head().height + 1))
    assert [b.source for b in got] == ["v1", "v1", "v2", "v2", "v2"]
    assert [t.transfer.id for b in got for t in b.transfers] == [10, 11, 12, 13]
    assert got[0].accounts[0].account.id == 1 and got[0].accounts[0].result.name == "ok"
    assert all(b.block_hash == ledger.store.get_header(b.height).hash for b in got)
    assert servicers["v2"].open_streams == 0


def test_filters_travel_and_a_refusal_is_raised(ledger):
    servicers = {"v1": _streams(ledger.store)}
    with _client(servicers) as c:
        it = c.watch_events(2, kinds=["transfers"], account_ids=[2])
        b = next(it)
        it.close()
        assert b.height == 2 and [t.transfer.id for t in b.transfers] == [10]
    with pytest.raises(ValueError):
        request(1, kinds=["blocks"])

    class Refusing:
        def WatchEvents(self, req, context):  # noqa: N802
            context.abort(__import__("grpc").StatusCode.PERMISSION_DENIED, "not you")
            yield  # pragma: no cover

    with _client({"v1": Refusing()}) as c:
        with pytest.raises(PermissionDenied):
            next(c.watch_events(1))
