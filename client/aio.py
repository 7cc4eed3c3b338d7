"""AsyncLedgerClient: the member SDK's writes and plain reads for asyncio (``grpc.aio``).

The same semantics as :class:`~raft_ledger_client.LedgerClient`, from one event loop::

    from raft_ledger_client.aio import AsyncLedgerClient
    async with AsyncLedgerClient.from_genesis("genesis.json", member_id="bank-a", key_id="k1",
                                              key_file="bank-a.pem", tls_key_file="bank-a.tls.key.pem",
                                              tls_cert_file="bank-a.tls.crt.pem") as c:
        results = await asyncio.gather(*(c.create_transfers([t]) for t in transfers))

Shared with the thread client, not copied: signing (``valid_until``, chain id, the
member's key), the validator list and redirect rules (only to configured validators),
result rebuilding from the failures-only reply, the status-to-exception mapping
(:func:`~raft_ledger_client._transport.status_to_exception`), and coalescing's queue and
batch rule (:class:`~raft_ledger_client.coalescing.Batches`, ``deliver``): concurrent
tasks' ``create_*`` calls become one signed transaction per Submit, with the guarantees
listed in ``raft_ledger_client.coalescing``. Its own: the awaiting retry loop
(:meth:`AsyncLedgerClient._call_leader`, step for step the thread client's) and the
asyncio driver of the queue.

Not here (use LedgerClient): verified reads (proofs, checkpoints, receipts), queries,
governance, change-data capture.
"""
from __future__ import annotations

import asyncio
import copy
import random
import time
from typing import Awaitable, Callable, Sequence

import grpc

from raft_ledger_client._client import (
    DEFAULT_VALIDITY_S,
    Account,
    AccountFlags,
    EventResult,
    LedgerClient,
    RetryPolicy,
    TransactionResult,
    Transfer,
    TransferFlags,
    _OPERATIONS,
    _account_from_pb,
    _account_pb,
    _applied,
    _genesis_ca,
    _rebuild,
    _transfer_from_pb,
    _transfer_pb,
    _u128,
    load_private_key,
    read_genesis,
)
from raft_ledger_client.coalescing import (
    ENVELOPE_OVERHEAD_BYTES_MAX,
    FLUSH,
    TX_BYTES_MAX,
    TX_EVENTS_MAX,
    Batches,
    CoalescingStats,
    Request,
    framed_bytes,
    send_steps,
)
from raft_ledger_client import _attempts
from raft_ledger_client._exceptions import LedgerError, Unavailable
from raft_ledger_client._transport import ClientTLS, InProcessTransport, status_to_exception
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc

__all__ = ["AsyncGrpcTransport", "AsyncInProcessTransport", "AsyncLedgerClient"]


class AsyncGrpcTransport:
    """:class:`~raft_ledger_client.GrpcTransport` on ``grpc.aio``: one channel per
    validator, mutual TLS with ``tls`` or plaintext with an explicit ``insecure=True``
    (ValueError when neither or both). ``await call(...)`` raises only the SDK's
    exceptions, mapped as for the thread transport. Channels belong to the event loop
    they were first used on."""

    def __init__(self, *, tls: ClientTLS | None = None, insecure: bool = False,
                 max_message_bytes: int = 64 << 20) -> None:
        if (tls is None) == (not insecure):
            raise ValueError("AsyncGrpcTransport needs tls=ClientTLS(...) or insecure=True; not both")
        self._credentials = None if tls is None else grpc.ssl_channel_credentials(
            root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem)
        self._options = [("grpc.max_receive_message_length", max_message_bytes),
                         ("grpc.max_send_message_length", max_message_bytes)]
        self._stubs: dict[str, pb_grpc.LedgerServiceStub] = {}
        self._channels: list = []

    def _stub(self, address: str) -> pb_grpc.LedgerServiceStub:
        stub = self._stubs.get(address)
        if stub is None:  # one event loop: no lock needed
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=self._options)
            else:
                channel = grpc.aio.secure_channel(address, self._credentials, options=self._options)
            self._channels.append(channel)
            stub = self._stubs[address] = pb_grpc.LedgerServiceStub(channel)
        return stub

    async def call(self, address: str, method: str, request, timeout_s: float):
        try:
            return await getattr(self._stub(address), method)(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            raise status_to_exception(e.code(), e.details(), tuple(e.trailing_metadata() or ()),
                                      f"{address} {method}") from e

    async def close(self) -> None:
        channels, self._channels = self._channels, []
        self._stubs.clear()
        for c in channels:
            await c.close()


class AsyncInProcessTransport:
    """:class:`~raft_ledger_client.InProcessTransport` for the async client (tests): each
    call runs the servicer in a worker thread (``asyncio.to_thread``), so a servicer may
    block, as a validator's gRPC worker does, without stopping the event loop."""

    def __init__(self, servicers) -> None:
        self._inner = InProcessTransport(servicers)

    @property
    def calls(self) -> list[tuple[str, str]]:
        return self._inner.calls

    async def call(self, address: str, method: str, request, timeout_s: float):
        return await asyncio.to_thread(self._inner.call, address, method, request, timeout_s)

    async def close(self) -> None:
        pass


class _NoTransport:
    """The transport of the thread client an AsyncLedgerClient signs with: never called."""

    def call(self, address, method, request, timeout_s):  # pragma: no cover - a bug if reached
        raise LedgerError("AsyncLedgerClient's signing core made a synchronous call")

    def close(self) -> None:
        pass


class AsyncLedgerClient:
    """A member bank's asyncio connection to the validators.

    Arguments as :class:`~raft_ledger_client.LedgerClient` (``transport`` an async one:
    :class:`AsyncGrpcTransport` by default, built from ``tls`` / ``insecure``;
    :class:`AsyncInProcessTransport` in tests), ``sleep`` a coroutine function.
    Coalescing as there (on by default; ``coalesce``, ``coalesce_wait_max_s``,
    ``coalesce_in_flight_max``). Use from one event loop. Raises the SDK's exceptions.
    """

    def __init__(self, addresses: Sequence[str], *, member_id: str, key_id: str, private_key, chain_id: str,
                 validity_s: float = DEFAULT_VALIDITY_S, retry: RetryPolicy | None = None, transport=None,
                 tls: ClientTLS | None = None, insecure: bool = False, validators: Sequence[str] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None, wall_clock_ns: Callable[[], int] = time.time_ns,
                 coalesce: bool = True, coalesce_wait_max_s: float = 0.0, coalesce_in_flight_max: int = 1) -> None:
        # The thread client holds the identity, the validator list and the signing: shared code.
        self._core = LedgerClient(addresses, member_id=member_id, key_id=key_id, private_key=private_key,
                                  chain_id=chain_id, validity_s=validity_s, retry=retry, transport=_NoTransport(),
                                  validators=validators, clock=clock, rng=rng, wall_clock_ns=wall_clock_ns,
                                  verify=False, coalesce=False)
        self._transport = transport or AsyncGrpcTransport(tls=tls, insecure=insecure)
        self._clock = clock
        self._sleep = sleep
        self._coalescers = None
        if coalesce:
            ids = len(chain_id.encode()) + len(member_id.encode()) + len(key_id.encode())
            self._coalescers = {op: _AsyncCoalescer(
                (lambda op: lambda events, deadline: self._send_events(op, events, deadline))(op), _OPERATIONS[op][3],
                events_max=TX_EVENTS_MAX, bytes_max=TX_BYTES_MAX - ENVELOPE_OVERHEAD_BYTES_MAX - ids,
                wait_max_s=coalesce_wait_max_s, in_flight_max=coalesce_in_flight_max, clock=clock)
                for op in _OPERATIONS}

    @classmethod
    def from_genesis(cls, genesis_file: str, *, member_id: str, key_id: str, key_file: str,
                     tls_key_file: str | None = None, tls_cert_file: str | None = None,
                     extra_addresses: Sequence[str] = (), **kw) -> "AsyncLedgerClient":
        """A client for the chain of ``genesis_file``, as :meth:`LedgerClient.from_genesis`
        (its addresses, chain id and CA; the member's TLS key and certificate), without
        verified reads. Raises OSError, ValueError."""
        addresses, chain_id = read_genesis(genesis_file)
        addresses = list(dict.fromkeys([*addresses, *extra_addresses]))
        ca = _genesis_ca(genesis_file)
        if not kw.get("insecure") and "transport" not in kw and "tls" not in kw:
            if ca is None:
                raise ValueError(f"{genesis_file} names no tls_ca_certificate: pass insecure=True")
            if not tls_key_file or not tls_cert_file:
                raise ValueError("tls_key_file and tls_cert_file are required to reach the validators")
            with open(tls_key_file, "rb") as f:
                key_pem = f.read()
            with open(tls_cert_file, "rb") as f:
                cert_pem = f.read()
            kw["tls"] = ClientTLS(ca_pem=ca, cert_pem=cert_pem, key_pem=key_pem)
        kw.setdefault("validators", addresses)
        return cls(addresses, member_id=member_id, key_id=key_id, private_key=load_private_key(key_file),
                   chain_id=chain_id, **kw)

    @property
    def retry(self) -> RetryPolicy:
        return self._core.retry

    @property
    def retries(self) -> int:
        return self._core.retries

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> "AsyncLedgerClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- writes -------------------------------------------------------------------
    def sign_accounts(self, accounts) -> pb.SignedTransaction:
        return self._core.sign_accounts(accounts)

    def sign_transfers(self, transfers) -> pb.SignedTransaction:
        return self._core.sign_transfers(transfers)

    async def create_accounts(self, accounts: Sequence[Account]) -> list[EventResult]:
        """As :meth:`LedgerClient.create_accounts`."""
        accounts = list(accounts)  # an iterable is read once
        if self._coalescers is not None and accounts:
            return await self._coalesced("create_accounts", [_account_pb(a) for a in accounts],
                                         bool(accounts[-1].flags & AccountFlags.LINKED))
        return list(_applied((await self.submit([self.sign_accounts(accounts)]))[0]).results)

    async def create_transfers(self, transfers: Sequence[Transfer]) -> list[EventResult]:
        """As :meth:`LedgerClient.create_transfers`."""
        transfers = list(transfers)  # an iterable is read once
        if self._coalescers is not None and transfers:
            return await self._coalesced("create_transfers", [_transfer_pb(t) for t in transfers],
                                         bool(transfers[-1].flags & TransferFlags.LINKED))
        return list(_applied((await self.submit([self.sign_transfers(transfers)]))[0]).results)

    async def _coalesced(self, operation: str, events: list, chained: bool) -> list[EventResult]:
        r = Request(events, sum(framed_bytes(e) for e in events), chained, self._clock() + self.retry.deadline_s)
        return await self._coalescers[operation].run(r)

    async def _send_events(self, operation: str, events: list, deadline: float) -> TransactionResult:
        field = _OPERATIONS[operation][0]
        wrapper = pb.CreateAccounts if operation == "create_accounts" else pb.CreateTransfers
        signed = self._core._sign(pb.Transaction(**{operation: wrapper(**{field: events})}))
        return (await self._submit([signed], deadline))[0]

    def coalescing_stats(self) -> dict[str, CoalescingStats]:
        """As :meth:`LedgerClient.coalescing_stats`."""
        return {op: c.stats for op, c in (self._coalescers or {}).items()}

    async def submit(self, signed: Sequence[pb.SignedTransaction]) -> list[TransactionResult]:
        """As :meth:`LedgerClient.submit`: retries resend the same bytes."""
        return await self._submit(signed, None)

    async def _submit(self, signed, deadline: float | None) -> list[TransactionResult]:
        signed = list(signed)
        resp = await self._call_leader("Submit", pb.SubmitRequest(transactions=signed), deadline)
        if len(resp.results) != len(signed):
            raise LedgerError(f"a validator answered {len(resp.results)} results for {len(signed)} transactions")
        results = [_rebuild(stx, r) for stx, r in zip(signed, resp.results)]
        if results:
            self._core._written_height = max(self._core._written_height, max(r.height for r in results))
        return results

    # -- reads (unverified) ---------------------------------------------------------
    async def lookup_accounts(self, ids: Sequence[int], *, linearizable: bool = False) -> list[Account]:
        """Accounts found among ``ids``, unverified: LOCAL from any validator, or with
        ``linearizable=True`` from the leader after a read barrier."""
        req = pb.LookupAccountsRequest(ids=[_u128(i) for i in ids], consistency=self._consistency(linearizable))
        resp = await (self._call_leader("LookupAccounts", req) if linearizable else self._call_read("LookupAccounts", req))
        return [_account_from_pb(a) for a in resp.accounts]

    async def lookup_transfers(self, ids: Sequence[int], *, linearizable: bool = False) -> list[Transfer]:
        """Transfers found among ``ids``, as :meth:`lookup_accounts`."""
        req = pb.LookupTransfersRequest(ids=[_u128(i) for i in ids], consistency=self._consistency(linearizable))
        resp = await (self._call_leader("LookupTransfers", req) if linearizable else self._call_read("LookupTransfers", req))
        return [_transfer_from_pb(t) for t in resp.transfers]

    @staticmethod
    def _consistency(linearizable: bool) -> int:
        return pb.READ_CONSISTENCY_LINEARIZABLE if linearizable else pb.READ_CONSISTENCY_LOCAL

    # -- plumbing: LedgerClient's, awaiting ---------------------------------------------
    async def _call_read(self, method: str, req):
        """A LOCAL read, as LedgerClient._call_read (``_attempts.local_read``)."""
        return await self._drive(_attempts.local_read(self._core, method, self._clock() + self.retry.deadline_s),
                                 method, req, None)

    async def _drive(self, steps: "_attempts.Attempts", method: str, req, deadline: float | None):
        """LedgerClient._drive, awaiting the transport and the sleep."""
        try:
            step = next(steps)
            while True:
                if step.__class__ is _attempts.Call:
                    try:
                        outcome = await self._transport.call(step.addr, method, req, step.timeout_s)
                    except _attempts.RETRIED as e:
                        outcome = e
                    step = steps.send(outcome)
                elif step.__class__ is _attempts.Learn:
                    await self._learn_validators(step.addr, deadline)
                    step = steps.send(None)
                else:
                    await self._sleep(step.seconds)
                    step = steps.send(None)
        except StopIteration as done:
            return done.value

    async def _learn_validators(self, addr: str, deadline: float) -> None:
        try:
            resp = await self._transport.call(addr, "GetConfiguration", pb.GetConfigurationRequest(),
                                              self._core._attempt_timeout(deadline))
            import json

            found = [v["grpc_address"] for v in json.loads(resp.configuration_json).get("validators", ())]
        except (LedgerError, ValueError, KeyError, TypeError):
            return
        self._core._know(found)

    async def _call_leader(self, method: str, req, deadline: float | None = None):
        """LedgerClient._call_leader, awaiting: the same rule (``_attempts.leader_call``),
        so the same redirects (configured validators only), the same retries of the same
        request, the same final exception."""
        if deadline is None:
            deadline = self._clock() + self.retry.deadline_s
        return await self._drive(_attempts.leader_call(self._core, method, deadline), method, req, deadline)


class _AsyncCoalescer:
    """The asyncio driver of one operation's :class:`Batches`: the thread driver's
    (``raft_ledger_client.coalescing.Coalescer``) rules with an ``asyncio.Condition``."""

    def __init__(self, send, ok_results, *, events_max: int, bytes_max: int, wait_max_s: float,
                 in_flight_max: int, clock: Callable[[], float]) -> None:
        if wait_max_s < 0:
            raise ValueError("wait_max_s must be >= 0")
        self._send, self._ok, self._clock, self._wait_max_s = send, ok_results, clock, wait_max_s
        self._batches = Batches(events_max=events_max, bytes_max=bytes_max, in_flight_max=in_flight_max)
        self._cond: asyncio.Condition | None = None

    @property
    def stats(self) -> CoalescingStats:
        return copy.copy(self._batches.stats)

    def pending(self) -> int:
        return len(self._batches.queue)

    async def _wait(self, cond: asyncio.Condition, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(cond.wait(), max(0.001, timeout_s))
        except asyncio.TimeoutError:
            pass

    async def run(self, r: Request) -> list:
        if self._cond is None:
            self._cond = asyncio.Condition()
        cond, b = self._cond, self._batches
        async with cond:
            b.queue.append(r)
            b.stats.calls += 1
            try:
                await self._until_done(cond, r)
            except asyncio.CancelledError:
                if not r.taken:  # never sent: nobody would collect its results
                    b.withdraw(r)
                raise
        return r.outcome()

    async def _until_done(self, cond: asyncio.Condition, r: Request) -> None:
        b = self._batches
        while (step := b.step(r, self._clock())) is not None:
            if step is FLUSH:
                await self._flush_locked(cond)
            else:
                await self._wait(cond, step)

    async def _flush_locked(self, cond: asyncio.Condition) -> None:
        b = self._batches
        if self._wait_max_s > 0:
            until = time.monotonic() + self._wait_max_s  # real time, as the thread driver
            b.in_flight += 1
            while not b.full() and time.monotonic() < until:
                await self._wait(cond, until - time.monotonic())
            b.in_flight -= 1
        batch = b.take()
        if not batch:
            return
        cond.release()
        submits, events, split = 1, 0, 0
        try:
            submits, events, split = await self._submit_batch(batch)
        finally:
            await cond.acquire()
            b.landed()
            b.stats.submits += submits
            b.stats.events += events
            b.stats.split += split
            cond.notify_all()

    async def _submit_batch(self, batch: list[Request]) -> tuple[int, int, int]:
        """Run :func:`~raft_ledger_client.coalescing.send_steps` for ``batch``, awaiting ``send``."""
        steps = send_steps(batch, self._ok)
        try:
            step = next(steps)
            while True:
                try:
                    result = await self._send(*step)
                except asyncio.CancelledError:
                    # The task sending the batch was cancelled mid-Submit: for the others of
                    # the batch the outcome is unknown; the cancellation goes on.
                    steps.close()
                    err = Unavailable("the task sending this write's batch was cancelled mid-Submit; "
                                      "outcome unknown: resubmit the same events (ids deduplicate)")
                    for r in batch:
                        if not r.done:
                            r.finish(error=err)
                    raise
                except Exception as e:  # noqa: BLE001 - the generator hands it to the callers
                    step = steps.throw(e)
                else:
                    step = steps.send(result)
        except StopIteration as done:
            return done.value
