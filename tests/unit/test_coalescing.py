"""Coalescing in the SDK (client/coalescing.py): many threads sharing one LedgerClient.

The validator here is in process (InProcessTransport) but its door and ledger are the
real ones: each Submit passes the node's own size checks and envelope prechecks
(node/api/validation.py: submit_*_max, tx_bytes_max, tx_events_max), the real Ed25519
signature check and decoding, and is applied as one block by the real StateMachine;
its answer is the node's failures-only ``result_to_pb``. What a caller gets back is compared with what
the same events get when submitted alone to a fresh ledger (the model: "as if alone").
"""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from helpers import CHAIN, PUBLIC_KEY, SIGNING_KEY, Ledger, account
from helpers import transfer as core_transfer
from helpers import transfers_tx
from raft_ledger_client import (
    CreateTransferResult as TR,
    InProcessTransport,
    InvalidRequest,
    LedgerClient,
    NotSubmitted,
    RetryPolicy,
    Timeout,
    Transfer,
    TransactionRejected,
    TransferFlags,
    Unavailable,
)
from raft_ledger_client.coalescing import (
    TX_BYTES_MAX,
    TX_EVENTS_MAX,
    Batches,
    Request,
)
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.api import validation
from raft_ledger_node.api.mapping import result_to_pb
from raft_ledger_node.ledger import limits
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

LEADER = "127.0.0.1:49001"
LINKED = int(TransferFlags.LINKED)
#: Accounts every test ledger has (ledger 1, code 1); transfers between them succeed.
ACCOUNTS = range(1, 201)
#: An account id no ledger has: a transfer to it fails with credit_account_not_found.
MISSING = 9_999
#: A transfer code the test validator refuses at the door (INVALID_ARGUMENT).
CODE_REFUSED = 777
#: Upper bound on any wait of a test (s): a hang fails instead of blocking the suite.
WAIT_S = 20.0


class CoreValidator:
    """A leader answering Submit from the real ledger core, one block per Submit.

    ``gate``: when set to a threading.Event, every Submit waits for it (the batch that
    forms meanwhile is what the tests look at). ``abort``: (status, details, trailing)
    to answer every Submit of at least ``abort_events_min`` events with; ``hold``: an
    Event every Submit of at least ``hold_events_min`` events waits for. ``reject``: a TxRejection for every transaction.
    ``submits``: per Submit, the events of each transaction; ``attempts``: the request
    bytes of every Submit, in order.
    """

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.ledger.create_accounts(*(account(i) for i in ACCOUNTS))
        self.lock = threading.Lock()
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.abort: tuple | None = None
        self.abort_events_min = 0
        self.hold: threading.Event | None = None
        self.hold_events_min = 0
        self.held = threading.Event()
        self.reject = 0
        self.submits: list[list[int]] = []
        self.attempts: list[bytes] = []
        self._public = Ed25519PublicKey.from_public_bytes(PUBLIC_KEY)

    def Submit(self, request, context):  # noqa: N802
        with self.lock:
            self.attempts.append(request.SerializeToString())
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT_S), "the test never opened the gate"
        events = sum(len(pb.Transaction.FromString(stx.body).create_transfers.transfers)
                     for stx in request.transactions)
        if self.hold is not None and events >= self.hold_events_min:
            self.held.set()
            assert self.hold.wait(WAIT_S), "the test never released the hold"
        if self.abort is not None and events >= self.abort_events_min:
            code, details, trailing = self.abort
            context.set_trailing_metadata(trailing)
            context.abort(code, details)
        try:
            validation.check_submit_size(request)
            for i, stx in enumerate(request.transactions):
                validation.precheck_envelope(stx, i)
                self._public.verify(stx.signature, stx.body)  # raises: the handler fails (UNKNOWN)
            txs = validation.decode_submit(request, chain_id=CHAIN, now_ns=time.time_ns())
        except validation.RequestError as e:
            context.abort(getattr(grpc.StatusCode, e.status), str(e))
        for tx in txs:
            if any(t.code == CODE_REFUSED for t in tx.events):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "transaction 0: code 777 is refused here")
        with self.lock:
            self.submits.append([len(tx.events) for tx in txs])
            if self.reject:
                return pb.SubmitResponse(results=[
                    pb.TransactionResult(tx_hash=tx.tx_hash, height=1, rejection=self.reject) for tx in txs])
            results = self.ledger.block(*txs)
        return pb.SubmitResponse(results=[result_to_pb(r, tx.operation) for r, tx in zip(results, txs)])


def make_client(validator: CoreValidator, **kw) -> LedgerClient:
    kw.setdefault("retry", RetryPolicy(deadline_s=WAIT_S, attempt_timeout_s=WAIT_S, backoff_initial_s=0.01,
                                       backoff_max_s=0.05))
    return LedgerClient([LEADER], member_id="bank-a", key_id="k1", private_key=SIGNING_KEY, chain_id=CHAIN,
                        transport=InProcessTransport({LEADER: validator}), **kw)


def xfer(id: int, debit: int = 1, credit: int = 2, amount: int = 1, flags: int = 0, code: int = 1) -> Transfer:
    return Transfer(id=id, debit_account_id=debit, credit_account_id=credit, amount=amount, ledger=1, code=code,
                    flags=flags)


def alone(transfers: list[Transfer]) -> list[int]:
    """The codes ``transfers`` get as one transaction of their own on a fresh ledger (the model)."""
    lg = Ledger()
    lg.create_accounts(*(account(i) for i in ACCOUNTS))
    [r] = lg.block(transfers_tx(*(core_transfer(t.id, t.debit_account_id, t.credit_account_id, t.amount,
                                                flags=t.flags, code=t.code) for t in transfers)))
    return list(r.codes)


def run_threads(client: LedgerClient, calls: list[list[Transfer]]) -> list:
    """Each call in its own thread; per call its results, or the exception it raised."""
    out: list = [None] * len(calls)

    def one(i: int) -> None:
        try:
            out[i] = client.create_transfers(calls[i])
        except Exception as e:  # noqa: BLE001 - asserted by the test
            out[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
        assert not t.is_alive(), "a caller hung"
    return out


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def gated_batch(validator: CoreValidator, client: LedgerClient, calls: list[list[Transfer]], before_release=None):
    """Hold a first Submit (of one transfer) at the validator while ``calls`` queue up
    behind it (then ``before_release()``), then let everything through. Returns (the first
    call's outcome in a list, the calls' outcomes): results, or the exception raised."""
    validator.gate = threading.Event()
    first: list = []
    t0 = threading.Thread(target=lambda: first.extend(run_threads(client, [[xfer(100_000)]])))
    t0.start()
    assert validator.entered.wait(WAIT_S)
    out: list = [None] * len(calls)

    def one(i: int) -> None:
        try:
            out[i] = client.create_transfers(calls[i])
        except Exception as e:  # noqa: BLE001
            out[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    co = client._coalescers["create_transfers"]
    wait_until(lambda: co.pending() == len(calls), "every call to queue")
    if before_release is not None:
        before_release()
    validator.gate.set()
    for t in [t0, *threads]:
        t.join(WAIT_S)
        assert not t.is_alive()
    return first, out


def codes(results) -> list[int]:
    return [int(r.result) for r in results]


def test_the_sdk_copies_of_the_limits_are_the_validators():
    assert TX_EVENTS_MAX == limits.tx_events_max == limits.submit_events_max
    assert TX_BYTES_MAX == limits.tx_bytes_max <= limits.submit_bytes_max


def test_calls_queued_behind_a_submit_become_one_transaction_each_with_its_own_results():
    v = CoreValidator()
    calls = [[xfer(1000 + 10 * i + k, credit=MISSING if (i + k) % 3 == 0 else 2) for k in range(1 + i % 4)]
             for i in range(24)]
    with make_client(v) as c:
        first, out = gated_batch(v, c, calls)
        stats = c.coalescing_stats()["create_transfers"]
    assert codes(first[0]) == [0]
    # One Submit for the first call, one transaction for all 24 behind it.
    assert v.submits == [[1], [sum(len(x) for x in calls)]]
    assert stats.calls == 25 and stats.submits == 2
    for call, got in zip(calls, out):
        assert [r.index for r in got] == list(range(len(call)))
        assert codes(got) == alone(call)
        assert [r.result for r in got] == [TR.credit_account_not_found if t.credit_account_id == MISSING else TR.ok
                                           for t in call]


def test_linked_chains_stay_whole_and_each_open_chain_ends_its_transaction():
    v = CoreValidator()
    calls = [
        [xfer(1, flags=LINKED), xfer(2, credit=MISSING, flags=LINKED), xfer(3)],  # a chain that fails as a whole
        [xfer(4)],
        [xfer(5, flags=LINKED), xfer(6)],  # a chain that succeeds
        [xfer(7, flags=LINKED), xfer(8, flags=LINKED)],  # open: linked_event_chain_open, as alone
        [xfer(9)],  # must not be swallowed by the open chain before it
        [xfer(10, flags=LINKED)],  # an open chain of one
        [xfer(11), xfer(12, credit=MISSING)],
    ]
    with make_client(v) as c:
        _, out = gated_batch(v, c, calls)
    # A call whose last event is linked (an open chain) ends its transaction: [1..4] [5, 6] [7].
    assert v.submits[1:] == [[3 + 1 + 2 + 2], [1 + 1], [2]]
    for call, got in zip(calls, out):
        assert codes(got) == alone(call), call
    assert [r.result for r in out[0]] == [TR.linked_event_failed, TR.credit_account_not_found, TR.linked_event_failed]
    assert [r.result for r in out[3]] == [TR.linked_event_failed, TR.linked_event_chain_open]
    assert [r.result for r in out[4]] == [TR.ok]
    assert [r.result for r in out[5]] == [TR.linked_event_chain_open]
    # What the ledger holds: exactly the transfers that were ok, once each.
    held = {i for i in range(1, 13) if v.ledger.store.get_transfer(i) is not None}
    assert held == {4, 5, 6, 9, 11}


def test_a_failed_chain_of_one_caller_is_not_stored_by_the_chains_of_others():
    """The ledger core stored a failed chain's records when, in the same transaction, an
    unlinked event and then a chain that succeeds followed it (node/ledger/apply.py
    _apply_tx before 658ea93; tests/unit/test_linked.py has the core's own test). Now that
    these three callers share one transaction, caller 0's transfer 1, answered
    linked_event_failed, must not be stored."""
    v = CoreValidator()
    calls = [[xfer(1, flags=LINKED), xfer(2, credit=MISSING)], [xfer(3)], [xfer(4, flags=LINKED), xfer(5)]]
    with make_client(v) as c:
        _, out = gated_batch(v, c, calls)
    assert [codes(o) for o in out] == [alone(x) for x in calls]
    assert v.ledger.store.get_transfer(1) is None
    assert [v.ledger.store.get_transfer(i) is not None for i in (3, 4, 5)] == [True, True, True]


def test_many_threads_mixed_chains_every_transfer_applied_once_results_as_alone():
    v = CoreValidator()
    calls = []
    next_id = 1
    for i in range(48):
        call = []
        for k in range(1 + (i * 7) % 5):
            flags = LINKED if (i + k) % 4 == 1 and k < (i * 7) % 5 else 0
            credit = MISSING if (i * 3 + k) % 11 == 0 else 2 + i % 100
            call.append(xfer(next_id, debit=1 + i % 100 + 100, credit=credit, flags=flags))
            next_id += 1
        calls.append(call)
    with make_client(v) as c:
        out = run_threads(c, calls)
        stats = c.coalescing_stats()["create_transfers"]
    for call, got in zip(calls, out):
        assert not isinstance(got, Exception), got
        assert codes(got) == alone(call)
        for t, r in zip(call, got):
            assert (v.ledger.store.get_transfer(t.id) is not None) == r.ok
    assert sum(n for s in v.submits for n in s) == next_id - 1  # every event sent exactly once
    assert stats.calls == 48 and stats.submits == len(v.submits) <= 48


def test_a_failed_submit_reaches_every_caller_and_retries_resend_the_same_bytes():
    v = CoreValidator()
    with make_client(v, retry=RetryPolicy(deadline_s=2.0, attempt_timeout_s=0.2, backoff_initial_s=0.05,
                                          backoff_max_s=0.2)) as c:
        v.gate = threading.Event()
        t0 = threading.Thread(target=run_threads, args=(c, [[xfer(1)]]))
        t0.start()
        assert v.entered.wait(WAIT_S)
        v.abort = (grpc.StatusCode.UNAVAILABLE, "proposal not committed (LEADER_CHANGED); outcome unknown", ())
        v.abort_events_min = 6  # the batch of six; the first call, alone, commits
        holder: list = []
        t1 = threading.Thread(target=lambda: holder.append(run_threads(c, [[xfer(10 + i)] for i in range(6)])))
        t1.start()
        wait_until(lambda: c._coalescers["create_transfers"].pending() == 6, "six calls to queue")
        v.attempts.clear()
        v.gate.set()
        for t in (t0, t1):
            t.join(WAIT_S)
    out = holder[0]
    assert all(type(e) is Unavailable for e in out), out
    assert len({id(e) for e in out}) == 6  # each caller raised its own copy
    # The batch of six was signed once: every attempt carried the very same bytes.
    def events(attempt: bytes) -> int:
        [stx] = pb.SubmitRequest.FromString(attempt).transactions
        return len(pb.Transaction.FromString(stx.body).create_transfers.transfers)

    batch_attempts = [a for a in v.attempts if events(a) == 6]
    assert len(batch_attempts) >= 2 and len(set(batch_attempts)) == 1
    assert all(v.ledger.store.get_transfer(10 + i) is None for i in range(6))


def test_a_submit_timing_out_gives_every_caller_timeout():
    v = CoreValidator()

    def time_out():  # the batch of eight times out; the first call, alone, does not
        v.abort = (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", ())
        v.abort_events_min = 8

    with make_client(v, retry=RetryPolicy(deadline_s=1.5, attempt_timeout_s=0.1, backoff_initial_s=0.05,
                                          backoff_max_s=0.2)) as c:
        first, out = gated_batch(v, c, [[xfer(i)] for i in range(1, 9)], before_release=time_out)
        stats = c.coalescing_stats()["create_transfers"]
    assert codes(first[0]) == [0]
    assert all(type(e) is Timeout for e in out), out
    assert stats.submits == 2  # the first call's Submit, then one for the eight queued behind it


def test_a_call_whose_deadline_passes_in_the_queue_is_never_sent():
    v = CoreValidator()
    with make_client(v, retry=RetryPolicy(deadline_s=0.3, attempt_timeout_s=0.3, backoff_initial_s=0.02,
                                          backoff_max_s=0.05)) as c:
        v.gate = threading.Event()
        first: list = []
        t0 = threading.Thread(target=lambda: first.append(c.create_transfers([xfer(1)])))
        t0.start()
        assert v.entered.wait(WAIT_S)
        started = time.monotonic()
        [e] = run_threads(c, [[xfer(2)]])  # waits behind the held Submit past its 0.3 s deadline
        waited = time.monotonic() - started
        v.gate.set()
        t0.join(WAIT_S)
    assert type(e) is NotSubmitted and "never sent" in str(e)
    assert 0.25 <= waited < 5
    assert codes(first[0]) == [0]
    assert v.ledger.store.get_transfer(2) is None and v.submits == [[1]]


def test_a_batch_refused_at_the_door_is_split_so_only_the_bad_caller_fails():
    v = CoreValidator()
    calls = [[xfer(1)], [xfer(2, code=CODE_REFUSED)], [xfer(3), xfer(4, credit=MISSING)]]
    with make_client(v) as c:
        _, out = gated_batch(v, c, calls)
        stats = c.coalescing_stats()["create_transfers"]
    assert codes(out[0]) == [0]
    assert type(out[1]) is InvalidRequest
    assert [r.result for r in out[2]] == [TR.ok, TR.credit_account_not_found]
    assert stats.split == 1
    assert v.ledger.store.get_transfer(2) is None and v.ledger.store.get_transfer(3) is not None


def test_a_transaction_refused_at_apply_reaches_every_caller():
    v = CoreValidator()
    v.reject = 2  # signer_not_active, say: the signer's, so the same for every caller of this client
    with make_client(v) as c:
        out = run_threads(c, [[xfer(i)] for i in range(1, 6)])
    assert all(type(e) is TransactionRejected and e.rejection == 2 for e in out), out


def test_coalescing_off_sends_one_submit_per_call():
    v = CoreValidator()
    with make_client(v, coalesce=False) as c:
        out = run_threads(c, [[xfer(i)] for i in range(1, 17)])
        assert c.coalescing_stats() == {}
    assert all(codes(r) == [0] for r in out)
    assert v.submits == [[1]] * 16


def test_a_maximum_wait_gathers_calls_that_arrive_meanwhile():
    v = CoreValidator()
    with make_client(v, coalesce_wait_max_s=2.0) as c:
        started = time.monotonic()
        out = run_threads(c, [[xfer(i)] for i in range(1, 5)])
    assert all(codes(r) == [0] for r in out)
    assert v.submits == [[4]]  # the first caller waited for the three others
    assert time.monotonic() - started >= 1.9


def test_accounts_coalesce_too():
    v = CoreValidator()
    from raft_ledger_client import Account, CreateAccountResult as AR

    out: list = [None] * 8
    with make_client(v) as c:
        def one(i):
            out[i] = c.create_accounts([Account(id=500 + i, ledger=1, code=1), Account(id=1, ledger=1, code=1)])
        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S)
    for r in out:
        assert [x.result for x in r] == [AR.ok, AR.exists] and [x.index for x in r] == [0, 1]


def test_batches_stay_within_the_validators_limits_of_events_and_bytes():
    """Callers whose events together exceed one transaction: every batch passes the
    validator's real door (tx_events_max, tx_bytes_max), with the largest transfers the
    wire can carry, so the bytes bound is the one that binds."""
    v = CoreValidator()
    big = (1 << 128) - 1
    calls = [[Transfer(id=big - 1000 * i - k, debit_account_id=big, credit_account_id=big - 1, amount=big,
                       pending_id=big, user_data_128=big, user_data_64=(1 << 64) - 1, user_data_32=(1 << 32) - 1,
                       timeout=(1 << 32) - 1, ledger=(1 << 32) - 1, code=(1 << 16) - 1) for k in range(700)]
             for i in range(16)]
    with make_client(v) as c:
        _, out = gated_batch(v, c, calls)
    assert all(not isinstance(o, Exception) for o in out), [o for o in out if isinstance(o, Exception)]
    assert all(len(o) == 700 and [r.index for r in o] == list(range(700)) for o in out)
    sizes = [len(pb.SubmitRequest.FromString(a).transactions[0].SerializeToString()) for a in v.attempts[1:]]
    assert len(v.submits) >= 3 and all(n <= limits.tx_events_max for s in v.submits for n in s)
    assert max(sizes) <= limits.tx_bytes_max and max(sizes) > limits.tx_bytes_max * 0.9  # the bytes bound binds
    assert sum(n for s in v.submits[1:] for n in s) == 16 * 700


# -- the batch rule itself ------------------------------------------------------------


def req(n: int, *, nbytes: int = 10, chained: bool = False) -> Request:
    return Request(events=[object()] * n, nbytes=nbytes * n, chained=chained, deadline=1e9)


def test_take_keeps_arrival_order_and_the_limits():
    b = Batches(events_max=5, bytes_max=1000, in_flight_max=1)
    rs = [req(2), req(2), req(2), req(9), req(1)]
    b.queue.extend(rs)
    assert b.take() == rs[:2]  # 2+2, a third would make 6 > 5
    assert b.in_flight == 1 and not b.can_flush()
    b.landed()
    assert b.take() == [rs[2]]  # 2 + 9 > 5
    b.landed()
    assert b.take() == [rs[3]]  # too large by itself: alone (the validator answers it)
    b.landed()
    assert b.take() == [rs[4]] and not b.queue


def test_take_ends_a_batch_at_a_chained_call_and_respects_bytes():
    b = Batches(events_max=100, bytes_max=50, in_flight_max=2)
    rs = [req(1), req(1, chained=True), req(1), req(3, nbytes=10), req(2, nbytes=10)]
    b.queue.extend(rs)
    assert b.take() == rs[:2]
    assert b.can_flush()  # in_flight_max 2
    assert b.take() == rs[2:4]  # 10 + 30 bytes; +20 would pass 50
    assert not b.can_flush()  # two Submits in flight
    b.landed()
    assert b.take() == [rs[4]] and not b.queue


def test_an_iterable_of_events_is_read_once_and_its_chain_seen():
    v = CoreValidator()
    with make_client(v) as c:
        got = c.create_transfers(t for t in [xfer(1, flags=LINKED), xfer(2, credit=MISSING)])
    assert [r.result for r in got] == [TR.linked_event_failed, TR.credit_account_not_found]
    assert v.ledger.store.get_transfer(1) is None
