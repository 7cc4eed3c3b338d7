"""Change-data capture: ``ledger.v1.LedgerService/WatchEvents``, committed blocks as a stream.

What a stream carries: for every height from ``from_height`` on, in order and with no
gap, one :class:`WatchEventsResponse` (or several, see the size bound) with the block's
height, hash and timestamp and the account and transfer events of its transactions that
the caller may see and the filter keeps. **Every block is sent, empty or not** (the
choice of the issue's "empty block or heartbeat every N blocks"): a consumer's resume
point is always its last height + 1, whatever it is allowed to see, and a block carries
no account data a member could not read with ``GetBlock`` already (height, hash, time).
When no block is committed for ``heartbeat_s`` a heartbeat (``heartbeat``, height 0)
goes out, so a consumer tells an idle chain from a validator that hangs.

Where the events come from: the validator's own store, as ``GetBlock`` reads it — the
header and transaction hashes of the height, then each transaction's committed envelope
(decoded again with :func:`validation.tx_from_committed`) and its per-event result codes
from the transaction index. An OK account is the event with the owner (its signer) and
the timestamp the ledger stored; an OK transfer is the stored record (a post of amount 0
carries the amount posted) with the pending status stored *when the block is read*
(documented on the wire: a later block may post, void or expire it). Transactions refused
as a whole (``rejection``) and governance transactions carry no event. Expiries of
pending transfers are no events of their own (they show in ``pending_status``).

Visibility, the reads' rules (:mod:`raft_ledger_node.api.authz`): an OK account when
``Caller.sees_account``, an OK transfer when ``Caller.sees_transfer`` (a member: its
account on either side; the auditor: all). A *failed* event is no part of the ledger:
only its signer and the auditor see it (a member learns nothing of what another member
tried against its accounts, as LookupTransfers shows it nothing either).

Waiting for new heights: the stream polls the store's head every ``poll_s`` from its own
gRPC worker thread; nothing runs in, or waits on, the Raft tick thread.

Bounds (each says what happens past it): at most ``streams_max`` streams per validator
and ``streams_per_caller_max`` per identity (each holds a gRPC worker thread; past
them: RESOURCE_EXHAUSTED with ``ledger-refused: overloaded``, which the SDK retries on
another validator); a filter of at most :data:`WATCH_EVENTS_ACCOUNT_IDS_MAX` ids
(more: INVALID_ARGUMENT); messages of at most ``message_bytes_max`` bytes of events (a
larger block is split into parts flagged ``continued``). The stream ends when the
client cancels it or the validator stops; it ends with DATA_LOSS if the store lacks a
block at or below its head (never expected: blocks are never pruned, snapshots carry
them all), so the SDK resumes on another validator.

Trust: a hostile member sees only what the reads show it, and holds at most
``streams_per_caller_max`` workers. A compromised validator can lie in its stream as in
any unverified read: the block hash is there for a consumer to check against a
certified checkpoint (``GetCheckpoint``), which a single validator cannot forge.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import grpc

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.wire import account_to_pb, from_u128, transfer_to_pb
from raft_ledger_node.api import validation
from raft_ledger_node.api.authz import Caller
from raft_ledger_node.ledger.types import Operation, TransferFlags

#: WatchEvents streams served at once per validator (each holds a gRPC worker thread for
#: as long as it lasts; WatchCheckpoints has its own watch_streams_max); past it: refused.
WATCH_EVENTS_STREAMS_MAX = 4
#: Of those, streams one identity may hold (a member cannot take every slot alone).
WATCH_EVENTS_STREAMS_PER_CALLER_MAX = 2
#: Bytes of events in one WatchEventsResponse; a block with more is split into parts.
#: A full block (block_events_max = 8,190 transfers of ~200 bytes) is two parts.
WATCH_EVENTS_MESSAGE_BYTES_MAX = 1 << 20
#: Account ids in one EventFilter; more: INVALID_ARGUMENT.
WATCH_EVENTS_ACCOUNT_IDS_MAX = 1024
#: Seconds between two looks at the store's head while the stream is caught up.
WATCH_EVENTS_POLL_S = 0.02
#: Seconds without a new block after which a heartbeat is sent.
WATCH_EVENTS_HEARTBEAT_S = 1.0
#: Bytes a repeated event adds to a message beyond its own size (tag and length).
_EVENT_FRAMING_BYTES = 6

_KINDS = {pb.EVENT_KIND_ACCOUNTS: "accounts", pb.EVENT_KIND_TRANSFERS: "transfers"}


@dataclass(frozen=True)
class Filter:
    """A decoded EventFilter: kinds kept, ledger (0: any), account ids (empty: any)."""

    accounts: bool = True
    transfers: bool = True
    ledger: int = 0
    account_ids: frozenset[int] = frozenset()

    @classmethod
    def from_pb(cls, f: pb.EventFilter) -> "Filter":
        """Raises validation.BadRequest for an unknown kind or too many ids."""
        kinds = set()
        for k in f.kinds:
            if k not in _KINDS:
                raise validation.BadRequest(f"unknown event kind {k} in the filter")
            kinds.add(_KINDS[k])
        if len(f.account_ids) > WATCH_EVENTS_ACCOUNT_IDS_MAX:
            raise validation.BadRequest(
                f"at most {WATCH_EVENTS_ACCOUNT_IDS_MAX} account ids in a WatchEvents filter (WATCH_EVENTS_ACCOUNT_IDS_MAX)")
        return cls(accounts=not kinds or "accounts" in kinds, transfers=not kinds or "transfers" in kinds,
                   ledger=f.ledger, account_ids=frozenset(from_u128(i) for i in f.account_ids))

    def keeps_account(self, a) -> bool:
        return (self.accounts and (not self.ledger or a.ledger == self.ledger)
                and (not self.account_ids or a.id in self.account_ids))

    def keeps_transfer(self, t) -> bool:
        return (self.transfers and (not self.ledger or t.ledger == self.ledger)
                and (not self.account_ids or t.debit_account_id in self.account_ids
                     or t.credit_account_id in self.account_ids))


def _pending_status(store, t) -> int:
    if not t.flags & TransferFlags.PENDING:
        return pb.PENDING_STATUS_NONE
    return int(store.get_pending_status(t.id))


def block_events(store, height: int, caller: Caller, flt: Filter, *, chain_id: str
                 ) -> tuple[object, list[pb.AccountEvent], list[pb.TransferEvent]] | None:
    """(header, account events, transfer events) of committed block ``height`` that
    ``caller`` may see and ``flt`` keeps, in transaction and event order; None if the
    store has no such block. Reads only the store (no clock, no Raft)."""
    block = store.get_block(height)
    if block is None:
        return None
    header, tx_hashes = block
    accounts: list[pb.AccountEvent] = []
    transfers: list[pb.TransferEvent] = []
    get_account = store.get_account
    for tx_hash in tx_hashes:
        found = store.get_tx_result(tx_hash)
        envelope = store.get_transaction(tx_hash)
        if found is None or envelope is None or found[0] != height or found[2]:
            continue  # refused as a whole (rejection): nothing of it applied
        codes = found[1]
        tx = validation.tx_from_committed(envelope, chain_id=chain_id)
        if tx.invalid or tx.operation == Operation.governance:
            continue
        signer_sees = caller.reads_all or tx.member_id == caller.id
        for i, event in enumerate(tx.events):
            code = codes[i] if i < len(codes) else 0
            if tx.operation == Operation.create_accounts:
                if code:
                    rec, visible = replace(event, owner=tx.member_id), signer_sees
                else:
                    stored = get_account(event.id)
                    rec = replace(event, owner=tx.member_id,
                                  timestamp=stored.timestamp if stored is not None else event.timestamp)
                    visible = caller.sees_account(rec)
                if visible and flt.keeps_account(rec):
                    accounts.append(pb.AccountEvent(account=account_to_pb(rec), result=code,
                                                    tx_hash=tx_hash, index=i))
            else:
                if code:
                    rec, visible, status = event, signer_sees, pb.PENDING_STATUS_NONE
                else:
                    rec = store.get_transfer(event.id) or event
                    visible = caller.sees_transfer(rec, get_account)
                    status = _pending_status(store, rec) if visible else 0
                if visible and flt.keeps_transfer(rec):
                    transfers.append(pb.TransferEvent(transfer=transfer_to_pb(rec), result=code, tx_hash=tx_hash,
                                                      index=i, pending_status=status))
    return header, accounts, transfers


def block_messages(header, accounts, transfers, *, head_height: int,
                   message_bytes_max: int = WATCH_EVENTS_MESSAGE_BYTES_MAX) -> Iterator[pb.WatchEventsResponse]:
    """The WatchEventsResponse messages of one block: one, or several whose events each
    stay within ``message_bytes_max`` bytes (all but the last flagged ``continued``;
    accounts before transfers, each in order). An event larger than the bound alone
    still goes, alone in its message."""
    def new() -> pb.WatchEventsResponse:
        return pb.WatchEventsResponse(height=header.height, block_hash=header.hash, timestamp=header.timestamp,
                                      head_height=head_height)

    msg, size = new(), 0
    for field, events in (("accounts", accounts), ("transfers", transfers)):
        for e in events:
            n = e.ByteSize() + _EVENT_FRAMING_BYTES
            if size and size + n > message_bytes_max:
                msg.continued = True
                yield msg
                msg, size = new(), 0
            getattr(msg, field).append(e)
            size += n
    yield msg


class EventStreams:
    """Serves WatchEvents over ``store`` (a RocksStore or anything with its block,
    transaction and record reads). ``caller(context)`` is the authorised caller of a call
    (:meth:`Authorizer.caller`). Thread-safe: one instance per validator, shared by
    every stream. ``clock``/``sleep`` are passed in so the waits are testable."""

    def __init__(self, store, *, chain_id: str, caller: Callable[[object], Caller],
                 streams_max: int = WATCH_EVENTS_STREAMS_MAX,
                 streams_per_caller_max: int = WATCH_EVENTS_STREAMS_PER_CALLER_MAX,
                 message_bytes_max: int = WATCH_EVENTS_MESSAGE_BYTES_MAX,
                 poll_s: float = WATCH_EVENTS_POLL_S, heartbeat_s: float = WATCH_EVENTS_HEARTBEAT_S,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self._store = store
        self._chain_id = chain_id
        self._caller = caller
        self._streams_max = streams_max
        self._per_caller_max = streams_per_caller_max
        self._message_bytes_max = message_bytes_max
        self._poll_s = poll_s
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._open: dict[str | None, int] = {}

    @property
    def open_streams(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def _acquire(self, who: str | None) -> str | None:
        """None if a slot was taken for ``who``, else why not."""
        with self._lock:
            if sum(self._open.values()) >= self._streams_max:
                return f"{self._streams_max} WatchEvents streams already open on this validator"
            if self._open.get(who, 0) >= self._per_caller_max:
                return f"{who!r} already holds {self._per_caller_max} WatchEvents streams on this validator"
            self._open[who] = self._open.get(who, 0) + 1
            return None

    def _release(self, who: str | None) -> None:
        with self._lock:
            self._open[who] -= 1
            if not self._open[who]:
                del self._open[who]

    def WatchEvents(self, request: pb.WatchEventsRequest, context) -> Iterator[pb.WatchEventsResponse]:  # noqa: N802
        """The stream described in the module docstring. Aborts INVALID_ARGUMENT (bad
        filter), RESOURCE_EXHAUSTED (no slot), DATA_LOSS (a block missing below the head)."""
        try:
            flt = Filter.from_pb(request.filter)
        except validation.BadRequest as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        caller = self._caller(context)
        refused = self._acquire(caller.id)
        if refused is not None:
            context.set_trailing_metadata((("ledger-refused", "overloaded"),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{refused}; retry later or on another validator")
        try:
            yield from self._stream(request.from_height, flt, caller, context)
        finally:
            self._release(caller.id)

    def _stream(self, from_height: int, flt: Filter, caller: Caller, context) -> Iterator[pb.WatchEventsResponse]:
        active = getattr(context, "is_active", lambda: True)
        height = from_height or self._store.head().height + 1
        last_sent = self._clock()
        while active():
            head = self._store.head().height
            if height > head:
                if self._clock() - last_sent >= self._heartbeat_s:
                    last_sent = self._clock()
                    yield pb.WatchEventsResponse(heartbeat=True, head_height=head)
                self._sleep(self._poll_s)
                continue
            found = block_events(self._store, height, caller, flt, chain_id=self._chain_id)
            if found is None:
                context.abort(grpc.StatusCode.DATA_LOSS,
                              f"block {height} is missing from this validator's store (head {head}); "
                              "resume on another validator")
            header, accounts, transfers = found
            yield from block_messages(header, accounts, transfers, head_height=head,
                                      message_bytes_max=self._message_bytes_max)
            last_sent = self._clock()
            height += 1
