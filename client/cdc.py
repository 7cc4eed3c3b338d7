"""Change-data capture in the SDK: ``LedgerClient.watch_events`` as an iterator of blocks.

Each item is a :class:`BlockEvents`: one committed block (height, hash, timestamp) with
the account and transfer events of it that this caller may see (a member: its own; the
auditor: all; node/api/cdc.py says exactly what). Every height comes, in order, once:
a block with no visible event comes empty, so ``last.height + 1`` is always the place to
resume, and the height is a consumer's idempotency key.

Failures: when the stream breaks (the validator died, restarted, hangs, or lost a block),
the iterator reconnects to another validator (the client's candidates, leader first)
and asks it for ``last_height + 1``: no gap, no duplicate (a block split into parts is
yielded only once all its parts arrived, so a break inside one is resent whole). A
validator that is behind is waited for (it sends its blocks as it applies them). A
stream that sends nothing, not even the validator's heartbeat, for ``idle_timeout_s``
is dropped as hung. Each stream lives at most ``stream_s`` (a finite deadline); then it
is re-opened where it stopped. If no validator makes progress (a block or a heartbeat)
for the client's ``retry.deadline_s``, the iterator raises :class:`Unavailable`. It
raises :class:`PermissionDenied` and :class:`InvalidRequest` (a bad filter) at once,
and :class:`VerificationError` never: the events are unverified reads (check
``block_hash`` against a certified checkpoint with ``LedgerClient.checkpoint``).

Stop early by breaking out of the loop (or ``close()`` on the iterator): the open
stream is cancelled.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import grpc

from raft_ledger_client._enums import CreateAccountResult, CreateTransferResult
from raft_ledger_client._exceptions import InvalidRequest, LedgerError, PermissionDenied, Unavailable
from raft_ledger_client._transport import GrpcTransport, InProcessTransport, _Abort, _Context, status_to_exception
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.wire import u128

__all__ = ["AccountEvent", "BlockEvents", "TransferEvent", "watch_events"]

log = logging.getLogger("raft_ledger_client.cdc")

#: Seconds one stream stays open before it is re-opened where it stopped (its deadline).
STREAM_S = 300.0
#: Seconds a stream may send nothing (validators send a heartbeat every second when idle).
IDLE_TIMEOUT_S = 5.0
#: Pending status names (TigerBeetle's TransferPendingStatus), by wire value.
PENDING_STATUS = {0: "none", 1: "pending", 2: "posted", 3: "voided", 4: "expired"}
_KINDS = {"accounts": pb.EVENT_KIND_ACCOUNTS, "transfers": pb.EVENT_KIND_TRANSFERS}


@dataclass(frozen=True)
class AccountEvent:
    """An account created in the block (``result`` ok), or a failed creation (its signer and
    the auditor only). ``tx_hash`` and ``index`` locate the event in its transaction."""

    account: object  # raft_ledger_client.Account (cdc is imported by _client, not the other way)
    result: CreateAccountResult
    tx_hash: bytes
    index: int


@dataclass(frozen=True)
class TransferEvent:
    """A transfer applied in the block, as the ledger stores it, or a failed one (its signer
    and the auditor only). ``pending_status``: for a pending transfer, its status when the
    block was read ("pending", "posted", "voided", "expired"), else "none"."""

    transfer: object  # raft_ledger_client.Transfer
    result: CreateTransferResult
    tx_hash: bytes
    index: int
    pending_status: str = "none"


@dataclass(frozen=True)
class BlockEvents:
    """One committed block: ``height``, ``block_hash`` (SHA-256 of its header),
    ``timestamp`` (ns since the Unix epoch) and the events of it the caller may see.
    ``head_height``: the serving validator's head when it sent the block; ``source``: that
    validator's address."""

    height: int
    block_hash: bytes
    timestamp: int
    accounts: tuple[AccountEvent, ...] = ()
    transfers: tuple[TransferEvent, ...] = ()
    head_height: int = 0
    source: str = ""


def request(from_height: int, *, kinds: Iterable[str] = ("accounts", "transfers"), ledger: int = 0,
            account_ids: Iterable[int] = ()) -> pb.WatchEventsRequest:
    """The WatchEventsRequest for these options. Raises ValueError for an unknown kind."""
    kinds = list(kinds)
    bad = [k for k in kinds if k not in _KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {sorted(_KINDS)}, not {kinds}")
    return pb.WatchEventsRequest(from_height=from_height, filter=pb.EventFilter(
        kinds=[_KINDS[k] for k in kinds], ledger=ledger, account_ids=[u128(i) for i in account_ids]))


def _block(parts: list[pb.WatchEventsResponse], source: str, account_from_pb: Callable,
           transfer_from_pb: Callable) -> BlockEvents:
    first = parts[0]
    return BlockEvents(
        height=first.height, block_hash=bytes(first.block_hash), timestamp=first.timestamp,
        accounts=tuple(AccountEvent(account_from_pb(e.account), CreateAccountResult(e.result), bytes(e.tx_hash),
                                    e.index) for p in parts for e in p.accounts),
        transfers=tuple(TransferEvent(transfer_from_pb(e.transfer), CreateTransferResult(e.result), bytes(e.tx_hash),
                                      e.index, PENDING_STATUS.get(e.pending_status, str(e.pending_status)))
                        for p in parts for e in p.transfers),
        head_height=parts[-1].head_height, source=source)


class _Stream:
    """One open server stream: iterate its messages; ``cancel()`` from any thread. Raises
    the SDK's exceptions only (the transport's mapping, status_to_exception)."""

    def __init__(self, messages, cancel, where: str) -> None:
        self._messages = messages
        self._cancel = cancel
        self._where = where

    def __iter__(self):
        try:
            yield from self._messages
        except grpc.RpcError as e:
            raise status_to_exception(e.code(), e.details(), e.trailing_metadata(), self._where) from e

    def cancel(self) -> None:
        self._cancel()


def _open(transport, address: str, req: pb.WatchEventsRequest, timeout_s: float) -> _Stream:
    """Open WatchEvents at ``address`` through the client's transport: a transport with its
    own ``stream(address, method, request, timeout_s)``, the gRPC one, or the in-process one."""
    where = f"{address} WatchEvents"
    opener = getattr(transport, "stream", None)
    if opener is not None:
        return opener(address, "WatchEvents", req, timeout_s)
    if isinstance(transport, GrpcTransport):
        call = transport._stub(address).WatchEvents(req, timeout=timeout_s)
        return _Stream(call, call.cancel, where)
    if isinstance(transport, InProcessTransport):
        return _in_process(transport, address, req, timeout_s, where)
    raise TypeError(f"{type(transport).__name__} cannot open a stream (give it a stream() method)")


def _in_process(transport: InProcessTransport, address: str, req, timeout_s: float, where: str) -> _Stream:
    cancelled = threading.Event()

    def messages():
        transport.calls.append((address, "WatchEvents"))
        servicer = transport.servicers.get(address)
        if servicer is None:
            raise Unavailable(f"{where}: UNAVAILABLE: no servicer at this address")
        context = _Context(timeout_s)
        context.is_active = lambda: not cancelled.is_set() and transport.servicers.get(address) is servicer
        try:
            for m in servicer.WatchEvents(type(req).FromString(req.SerializeToString()), context):
                if not context.is_active():
                    raise Unavailable(f"{where}: CANCELLED: the stream ended")
                yield type(m).FromString(m.SerializeToString())
        except _Abort:
            raise status_to_exception(context._code, context._details, context._trailing, where) from None
        raise Unavailable(f"{where}: UNAVAILABLE: the stream ended")

    return _Stream(messages(), cancelled.set, where)


class _Watchdog:
    """Cancels ``stream`` when a wait for its next message lasts longer than ``idle_s``
    (only while the consumer waits: a slow consumer is not a hung validator)."""

    def __init__(self, stream: _Stream, idle_s: float, clock) -> None:
        self._stream, self._idle_s, self._clock = stream, idle_s, clock
        self._since: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch-events-watchdog", daemon=True)
        self._thread.start()

    def waiting(self, yes: bool) -> None:
        self._since = self._clock() if yes else None

    def _run(self) -> None:
        while not self._done.wait(min(0.25, self._idle_s / 4)):
            since = self._since
            if since is not None and self._clock() - since > self._idle_s:
                self._stream.cancel()
                return

    def stop(self) -> None:
        self._done.set()


def watch_events(client, from_height: int = 1, *, kinds: Iterable[str] = ("accounts", "transfers"),
                 ledger: int = 0, account_ids: Iterable[int] = (), address: str | None = None,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, stream_s: float = STREAM_S,
                 account_from_pb: Callable, transfer_from_pb: Callable) -> Iterator[BlockEvents]:
    """Every committed block from ``from_height`` on (0: from the block after the head),
    as :class:`BlockEvents`, surviving validator failures (module docstring). ``kinds``,
    ``ledger`` (0: all) and ``account_ids`` (empty: all the caller sees) filter the
    events, never the blocks. ``address``: stream from this validator first. ``client``: a
    LedgerClient; ``account_from_pb``/``transfer_from_pb`` build its Account and Transfer
    records (LedgerClient.watch_events passes them)."""
    account_ids = list(account_ids)
    kinds = list(kinds)
    request(1, kinds=kinds, ledger=ledger, account_ids=account_ids)  # ValueError now, not at the first next()
    if from_height == 0:
        from_height = client.head(address=address).height + 1
    next_height = from_height
    progress = client._clock()
    backoff = client.retry.backoff_initial_s
    last: LedgerError | None = None
    preferred = address
    while True:
        candidates = client._candidates()
        if preferred in candidates:
            candidates.remove(preferred)
        if preferred:
            candidates.insert(0, preferred)
        for addr in candidates:
            log.info("WatchEvents (%s): streaming from %s at height %d", client.member_id, addr, next_height)
            stream = _open(client._transport, addr, request(next_height, kinds=kinds, ledger=ledger,
                                                            account_ids=account_ids), stream_s)
            dog = _Watchdog(stream, idle_timeout_s, client._clock)
            parts: list[pb.WatchEventsResponse] = []
            messages = iter(stream)
            try:
                while True:
                    dog.waiting(True)
                    try:
                        m = next(messages)
                    except StopIteration:
                        raise Unavailable(f"{addr} WatchEvents: the stream ended") from None
                    dog.waiting(False)
                    progress = client._clock()
                    if m.heartbeat:
                        continue
                    if m.height != next_height:
                        raise LedgerError(f"{addr} WatchEvents: sent height {m.height}, expected {next_height}")
                    parts.append(m)
                    if m.continued:
                        continue
                    block, parts = _block(parts, addr, account_from_pb, transfer_from_pb), []
                    next_height += 1
                    preferred = addr
                    backoff = client.retry.backoff_initial_s
                    yield block
            except (PermissionDenied, InvalidRequest):
                raise
            except LedgerError as e:  # broken, hung, refused (overloaded) or lying: try the next one
                last = e
                log.warning("WatchEvents (%s): stream from %s broke before height %d (%s: %s); resuming there",
                            client.member_id, addr, next_height, type(e).__name__, e)
                if preferred == addr:
                    preferred = None
            finally:
                dog.stop()
                stream.cancel()
                messages.close()  # now, not when a reference cycle (a kept exception) is collected
            if client._clock() - progress >= client.retry.deadline_s:
                raise Unavailable(f"WatchEvents: no validator sent height {next_height} or a heartbeat within "
                                  f"{client.retry.deadline_s}s (last: {type(last).__name__}: {last})")
        remaining = client.retry.deadline_s - (client._clock() - progress)
        client._sleep(max(0.0, min(backoff, remaining)))
        backoff = min(2 * backoff, client.retry.backoff_max_s)
