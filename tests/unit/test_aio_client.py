"""AsyncLedgerClient (client/aio.py): many tasks sharing one client, through the async
in-process transport, against the real ledger core (test_coalescing.CoreValidator:
real signatures, the node's decoding, the real StateMachine, failures-only answers).

The async client shares signing, redirect rules, result rebuilding and the batch rule
with LedgerClient; what is its own (the awaiting retry loop and the asyncio queue
driver) is checked here: the same results as alone, the same exceptions, the same
redirect and not-submitted behaviour as tests/unit/test_sdk_client.py checks for threads.
"""
from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from helpers import CHAIN, SIGNING_KEY
from raft_ledger_client import (
    Account,
    CreateAccountResult as AR,
    CreateTransferResult as TR,
    InvalidRequest,
    NotSubmitted,
    RetryPolicy,
    TransferFlags,
    Unavailable,
)
from raft_ledger_client.aio import AsyncInProcessTransport, AsyncLedgerClient
from test_coalescing import CODE_REFUSED, LEADER, MISSING, WAIT_S, CoreValidator, alone, codes, xfer

LINKED = int(TransferFlags.LINKED)
FOLLOWER = "127.0.0.1:49002"


class Follower:
    """A follower: refuses Submit, naming the leader (node/api/servicers.py _require_leader)."""

    def __init__(self, leader: str | None) -> None:
        self.leader = leader

    def Submit(self, request, context):  # noqa: N802
        if self.leader is None:
            context.set_trailing_metadata((("ledger-refused", "no-leader"),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "no leader elected yet; nothing was proposed, retry shortly")
        context.set_trailing_metadata((("leader-address", self.leader), ("ledger-refused", "not-leader")))
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"not the leader; send writes to {self.leader}")


def make_client(servicers: dict, **kw) -> AsyncLedgerClient:
    kw.setdefault("retry", RetryPolicy(deadline_s=WAIT_S, attempt_timeout_s=WAIT_S, backoff_initial_s=0.01,
                                       backoff_max_s=0.05))
    return AsyncLedgerClient(list(servicers), member_id="bank-a", key_id="k1", private_key=SIGNING_KEY,
                             chain_id=CHAIN, transport=AsyncInProcessTransport(servicers), **kw)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT_S * 2))


async def gather(client, calls):
    return await asyncio.gather(*(client.create_transfers(c) for c in calls), return_exceptions=True)


async def gated(v: CoreValidator, client: AsyncLedgerClient, calls):
    """Hold a first Submit at the validator while ``calls`` queue behind it, then release."""
    v.gate = threading.Event()
    first = asyncio.ensure_future(client.create_transfers([xfer(100_000)]))
    while not v.entered.is_set():
        await asyncio.sleep(0.005)
    rest = asyncio.ensure_future(gather(client, calls))
    co = client._coalescers["create_transfers"]
    for _ in range(int(WAIT_S / 0.005)):
        if co.pending() == len(calls):
            break
        await asyncio.sleep(0.005)
    assert co.pending() == len(calls)
    v.gate.set()
    return await first, await rest


def test_tasks_queued_behind_a_submit_share_one_transaction_with_their_own_results():
    v = CoreValidator()
    calls = [[xfer(10 * i + k + 1, credit=MISSING if (i + k) % 3 == 0 else 2,
                   flags=LINKED if k == 0 and i % 5 == 4 else 0) for k in range(1 + i % 3)]
             for i in range(30)]

    async def main():
        async with make_client({LEADER: v}) as c:
            out = await gated(v, c, calls)
            return out, c.coalescing_stats()["create_transfers"]

    (first, out), stats = run(main())
    assert codes(first) == [0]
    assert stats.calls == 31 and stats.submits == len(v.submits) < 31
    for call, got in zip(calls, out):
        assert [r.index for r in got] == list(range(len(call)))
        assert codes(got) == alone(call)
        for t, r in zip(call, got):
            assert (v.ledger.store.get_transfer(t.id) is not None) == r.ok
    assert sum(n for s in v.submits for n in s) == 1 + sum(len(c) for c in calls)


def test_an_open_chain_fails_as_alone_and_a_door_refusal_reaches_only_its_caller():
    v = CoreValidator()
    calls = [[xfer(1)], [xfer(2, flags=LINKED), xfer(3, flags=LINKED)], [xfer(4)], [xfer(5, code=CODE_REFUSED)],
             [xfer(6)]]

    async def main():
        async with make_client({LEADER: v}) as c:
            return await gated(v, c, calls)

    _, out = run(main())
    assert [r.result for r in out[1]] == [TR.linked_event_failed, TR.linked_event_chain_open]
    assert codes(out[0]) == codes(out[2]) == codes(out[4]) == [0]
    assert type(out[3]) is InvalidRequest
    assert v.ledger.store.get_transfer(5) is None and v.ledger.store.get_transfer(6) is not None


def test_a_failed_submit_reaches_every_task():
    v = CoreValidator()
    v.abort = (grpc.StatusCode.UNAVAILABLE, "proposal not committed (LEADER_CHANGED); outcome unknown", ())
    v.abort_events_min = 10  # the batch of ten queued behind the first call

    async def main():
        async with make_client({LEADER: v}, retry=RetryPolicy(deadline_s=2.0, attempt_timeout_s=0.2,
                                                              backoff_initial_s=0.05, backoff_max_s=0.2)) as c:
            return await gated(v, c, [[xfer(i)] for i in range(1, 11)])

    first, out = run(main())
    assert codes(first) == [0]
    assert all(type(e) is Unavailable for e in out), out
    assert len({id(e) for e in out}) == 10


def test_redirect_is_followed_and_no_leader_is_not_submitted():
    v = CoreValidator()

    async def main():
        async with make_client({FOLLOWER: Follower(LEADER), LEADER: v}, validators=[FOLLOWER, LEADER],
                               rng=_InOrder()) as c:
            ok = await c.create_transfers([xfer(1)])
            accounts = await c.create_accounts([Account(id=7000, ledger=1, code=1), Account(id=1, ledger=1, code=1)])
        async with make_client({FOLLOWER: Follower(None)}, retry=RetryPolicy(
                deadline_s=0.2, attempt_timeout_s=0.1, backoff_initial_s=0.02, backoff_max_s=0.05)) as c:
            refused = await gather(c, [[xfer(2)], [xfer(3)]])
        return ok, accounts, refused

    ok, accounts, refused = run(main())
    assert codes(ok) == [0]
    assert [r.result for r in accounts] == [AR.ok, AR.exists]
    assert all(type(e) is NotSubmitted for e in refused), refused


def test_coalescing_off_sends_one_submit_per_task():
    v = CoreValidator()

    async def main():
        async with make_client({LEADER: v}, coalesce=False) as c:
            return await gather(c, [[xfer(i)] for i in range(1, 9)])

    out = run(main())
    assert all(codes(r) == [0] for r in out)
    assert v.submits == [[1]] * 8


def test_a_cancelled_task_that_was_never_sent_leaves_the_queue():
    v = CoreValidator()

    async def main():
        async with make_client({LEADER: v}) as c:
            v.gate = threading.Event()
            first = asyncio.ensure_future(c.create_transfers([xfer(1)]))
            while not v.entered.is_set():
                await asyncio.sleep(0.005)
            waiting = asyncio.ensure_future(c.create_transfers([xfer(2)]))
            co = c._coalescers["create_transfers"]
            while co.pending() != 1:
                await asyncio.sleep(0.005)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert co.pending() == 0
            v.gate.set()
            return await first

    assert codes(run(main())) == [0]
    assert v.submits == [[1]] and v.ledger.store.get_transfer(2) is None


class _InOrder:
    """Tries validators in the configured order."""

    def shuffle(self, x) -> None:
        pass


def test_a_maximum_wait_gathers_tasks_that_arrive_meanwhile():
    v = CoreValidator()

    async def main():
        async with make_client({LEADER: v}, coalesce_wait_max_s=1.0) as c:
            first = asyncio.ensure_future(c.create_transfers([xfer(1)]))
            await asyncio.sleep(0.05)  # the first task is gathering now
            rest = await gather(c, [[xfer(i)] for i in range(2, 5)])
            return [await first, *rest]

    out = run(main())
    assert all(codes(r) == [0] for r in out)
    assert v.submits == [[4]]


def test_cancelling_the_task_that_sends_a_batch_leaves_the_others_an_unknown_outcome():
    """B sends the batch [B, C, D] (it queued first behind A's Submit) and is cancelled
    while the validator holds that Submit: B gets CancelledError, C and D Unavailable
    (outcome unknown: the Submit may still commit), and the queue is free again."""
    v = CoreValidator()
    v.hold, v.hold_events_min = threading.Event(), 3

    async def main():
        async with make_client({LEADER: v}) as c:
            v.gate = threading.Event()
            a = asyncio.ensure_future(c.create_transfers([xfer(1)]))
            while not v.entered.is_set():
                await asyncio.sleep(0.005)
            b = asyncio.ensure_future(c.create_transfers([xfer(2)]))
            await asyncio.sleep(0.01)
            cd = asyncio.ensure_future(gather(c, [[xfer(3)], [xfer(4)]]))
            co = c._coalescers["create_transfers"]
            while co.pending() != 3:
                await asyncio.sleep(0.005)
            v.gate.set()
            assert codes(await a) == [0]
            while not v.held.is_set():
                await asyncio.sleep(0.005)
            b.cancel()
            with pytest.raises(asyncio.CancelledError):
                await b
            out = await cd
            v.hold.set()
            after = await c.create_transfers([xfer(5)])
            return out, after

    (c_out, d_out), after = run(main())
    assert type(c_out) is Unavailable and type(d_out) is Unavailable
    assert codes(after) == [0]
