"""LedgerClient: build, sign, submit, follow the leader, retry with the same bytes, read."""
from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from raft_ledger_client._convert import account_fields, account_filter_to_pb, query_filter_to_pb, from_u128, header_fields, transfer_fields, transfer_to_pb, u128
from raft_ledger_client._exceptions import InvalidRequest, LedgerError, NotFound, Timeout, Unavailable
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client._transport import GrpcTransport, Transport



class AccountFlags(enum.IntFlag):
    """TigerBeetle account flags."""

    NONE = 0
    LINKED = 1 << 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1
    CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2
    HISTORY = 1 << 3
    CLOSED = 1 << 5


class TransferFlags(enum.IntFlag):
    """TigerBeetle transfer flags."""

    NONE = 0
    LINKED = 1 << 0
    PENDING = 1 << 1
    POST_PENDING_TRANSFER = 1 << 2
    VOID_PENDING_TRANSFER = 1 << 3
    BALANCING_DEBIT = 1 << 4
    BALANCING_CREDIT = 1 << 5
    CLOSING_DEBIT = 1 << 6
    CLOSING_CREDIT = 1 << 7


@dataclass(frozen=True)
class Account:
    """An account. Balances in minor units (u128); ``owner`` and ``timestamp`` (ns) are set by the ledger."""

    id: int
    ledger: int
    code: int
    flags: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    timestamp: int = 0
    owner: str = ""


@dataclass(frozen=True)
class Transfer:
    """A transfer of ``amount`` minor units; ``timeout`` in seconds (pending only)."""

    id: int
    debit_account_id: int = 0
    credit_account_id: int = 0
    amount: int = 0
    ledger: int = 0
    code: int = 0
    flags: int = 0
    pending_id: int = 0
    timeout: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    timestamp: int = 0


@dataclass(frozen=True)
class EventResult:
    """Result of one event: ``code`` 0 (``ok``) or a TigerBeetle rejection name."""

    index: int
    code: int
    name: str

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass(frozen=True)
class TransactionResult:
    tx_hash: bytes
    height: int
    results: tuple[EventResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


@dataclass(frozen=True)
class BlockHeader:
    height: int
    prev_hash: bytes
    timestamp: int
    tx_merkle_root: bytes
    state_hash: bytes
    raft_term: int
    raft_index: int
    tx_count: int
    hash: bytes


@dataclass(frozen=True)
class AccountFilter:
    """One account's transfers or balances (TigerBeetle AccountFilter).

    Zero fields do not filter; timestamps are ns, inclusive, 0 = unbounded;
    ``debits``/``credits`` pick the side (neither = both); ``reversed`` = newest first.
    """

    account_id: int
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    code: int = 0
    timestamp_min: int = 0
    timestamp_max: int = 0
    limit: int = 0
    debits: bool = False
    credits: bool = False
    reversed: bool = False


@dataclass(frozen=True)
class QueryFilter:
    """All accounts or transfers matching the non-zero fields (TigerBeetle QueryFilter)."""

    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    ledger: int = 0
    code: int = 0
    timestamp_min: int = 0
    timestamp_max: int = 0
    limit: int = 0
    reversed: bool = False


@dataclass(frozen=True)
class AccountBalance:
    """A ``history`` account's balances (minor units) right after the change at ``timestamp`` (ns)."""

    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    timestamp: int


@dataclass(frozen=True)
class Page:
    """One page of a query. ``next_timestamp`` is the cursor for the next page
    (use it as timestamp_min, or timestamp_max when reversed); 0 = last page.
    ``height`` is the chain height the page was read at."""

    items: list
    next_timestamp: int
    height: int

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


_u128 = u128
_int = from_u128


def _account_pb(a: Account) -> pb.Account:
    # Balances and timestamp are sent as given: the ledger answers non-zero ones
    # with ``*_must_be_zero`` (TigerBeetle create_accounts) instead of the SDK
    # silently dropping them and reporting ``ok``.
    # Zero balances stay unset, so a valid request's signed bytes are unchanged.
    return pb.Account(
        id=_u128(a.id),
        debits_pending=_u128(a.debits_pending) if a.debits_pending else None,
        debits_posted=_u128(a.debits_posted) if a.debits_posted else None,
        credits_pending=_u128(a.credits_pending) if a.credits_pending else None,
        credits_posted=_u128(a.credits_posted) if a.credits_posted else None,
        timestamp=a.timestamp,
        ledger=a.ledger,
        code=a.code,
        flags=int(a.flags),
        user_data_128=_u128(a.user_data_128),
        user_data_64=a.user_data_64,
        user_data_32=a.user_data_32,
    )


def _account_from_pb(a: pb.Account) -> Account:
    return Account(**account_fields(a))


def _transfer_pb(t: Transfer) -> pb.Transfer:
    # Sent as given, timestamp included: non-zero is answered with ``timestamp_must_be_zero``.
    return transfer_to_pb(t)


def _transfer_from_pb(t: pb.Transfer) -> Transfer:
    return Transfer(**transfer_fields(t))


def _header(h: pb.BlockHeader) -> BlockHeader:
    return BlockHeader(**header_fields(h))


def load_private_key(path: str) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from a PEM (PKCS#8, unencrypted) file."""
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


@dataclass
class RetryPolicy:
    """Retries of calls whose outcome is unknown; they resend the very same signed bytes.

    ``deadline_s`` bounds the whole call including retries; ``attempt_timeout_s``
    each attempt; backoff grows from ``backoff_initial_s`` to ``backoff_max_s``.
    """

    deadline_s: float = 30.0
    attempt_timeout_s: float = 10.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 1.0


class LedgerClient:
    """A member bank's connection to the validators.

    ``addresses``: gRPC host:port of the validators (any subset; the client
    follows the leader). Writes are signed with the member's Ed25519 key as
    ``key_id``. Every call has a finite deadline. Thread-safe.

    Raises the exceptions of :mod:`client._exceptions`.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        member_id: str,
        key_id: str,
        private_key: Ed25519PrivateKey,
        retry: RetryPolicy | None = None,
        transport: Transport | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("at least one validator address is required")
        self._addresses = list(addresses)
        self._leader: str | None = None
        self.member_id = member_id
        self.key_id = key_id
        self._key = private_key
        self.retry = retry or RetryPolicy()
        self._transport = transport or GrpcTransport()
        self.retries = 0

    @classmethod
    def from_key_file(cls, addresses: Sequence[str], *, member_id: str, key_id: str, key_file: str, **kw) -> "LedgerClient":
        return cls(addresses, member_id=member_id, key_id=key_id, private_key=load_private_key(key_file), **kw)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> "LedgerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- signing ------------------------------------------------------------------
    def sign_accounts(self, accounts: Iterable[Account]) -> pb.SignedTransaction:
        """One signed transaction creating ``accounts`` (a linked chain may span them)."""
        body = pb.Transaction(create_accounts=pb.CreateAccounts(accounts=[_account_pb(a) for a in accounts]))
        return self._sign(body)

    def sign_transfers(self, transfers: Iterable[Transfer]) -> pb.SignedTransaction:
        """One signed transaction creating ``transfers``."""
        body = pb.Transaction(create_transfers=pb.CreateTransfers(transfers=[_transfer_pb(t) for t in transfers]))
        return self._sign(body)

    def _sign(self, body: pb.Transaction) -> pb.SignedTransaction:
        raw = body.SerializeToString(deterministic=True)
        return pb.SignedTransaction(body=raw, member_id=self.member_id, key_id=self.key_id, signature=self._key.sign(raw))

    # -- writes -------------------------------------------------------------------
    def create_accounts(self, accounts: Sequence[Account]) -> list[EventResult]:
        """Create accounts in one signed transaction; one EventResult per account."""
        return list(self.submit([self.sign_accounts(accounts)])[0].results)

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[EventResult]:
        """Create transfers in one signed transaction; one EventResult per transfer."""
        return list(self.submit([self.sign_transfers(transfers)])[0].results)

    def submit(self, signed: Sequence[pb.SignedTransaction]) -> list[TransactionResult]:
        """Submit signed transactions; returns one TransactionResult each, once committed.

        Retries on unknown outcomes resend the same bytes: the ledger
        deduplicates by transaction hash and by event id, so nothing applies twice.
        """
        req = pb.SubmitRequest(transactions=list(signed))
        resp = self._call_leader("Submit", req)
        return [
            TransactionResult(
                tx_hash=r.tx_hash,
                height=r.height,
                results=tuple(EventResult(e.index, e.code, e.name) for e in r.results),
            )
            for r in resp.results
        ]

    # -- reads ----------------------------------------------------------------------
    def _read(self, method: str, req, address: str | None, linearizable: bool):
        if linearizable:
            if address is not None:
                raise ValueError("a linearizable read goes to the leader; do not pass address")
            return self._call_leader(method, req)
        return self._call_read(method, req, address)

    @staticmethod
    def _consistency(linearizable: bool) -> int:
        return pb.READ_CONSISTENCY_LINEARIZABLE if linearizable else pb.READ_CONSISTENCY_LOCAL

    def lookup_accounts(self, ids: Sequence[int], *, address: str | None = None, linearizable: bool = False) -> list[Account]:
        """Accounts found among ``ids`` (missing ids are left out).

        Default: a LOCAL read from one validator (may lag the leader). With
        ``linearizable=True`` the leader answers after a read barrier through the
        Raft log: the result reflects every write acknowledged before the call.
        """
        req = pb.LookupAccountsRequest(ids=[_u128(i) for i in ids], consistency=self._consistency(linearizable))
        resp = self._read("LookupAccounts", req, address, linearizable)
        return [_account_from_pb(a) for a in resp.accounts]

    def lookup_transfers(self, ids: Sequence[int], *, address: str | None = None, linearizable: bool = False) -> list[Transfer]:
        """Transfers found among ``ids``; consistency as in :meth:`lookup_accounts`."""
        req = pb.LookupTransfersRequest(ids=[_u128(i) for i in ids], consistency=self._consistency(linearizable))
        resp = self._read("LookupTransfers", req, address, linearizable)
        return [_transfer_from_pb(t) for t in resp.transfers]

    def get_account_transfers(self, f: AccountFilter, *, address: str | None = None) -> Page:
        """A page of one account's transfers by time (LOCAL read); items are Transfers."""
        resp = self._call_read("GetAccountTransfers", pb.GetAccountTransfersRequest(filter=account_filter_to_pb(f)), address)
        return Page([_transfer_from_pb(t) for t in resp.transfers], resp.next_timestamp, resp.height)

    def get_account_balances(self, f: AccountFilter, *, address: str | None = None) -> Page:
        """A page of a ``history`` account's balances after each change; items are AccountBalances."""
        resp = self._call_read("GetAccountBalances", pb.GetAccountBalancesRequest(filter=account_filter_to_pb(f)), address)
        items = [
            AccountBalance(_int(b.debits_pending), _int(b.debits_posted), _int(b.credits_pending), _int(b.credits_posted), b.timestamp)
            for b in resp.balances
        ]
        return Page(items, resp.next_timestamp, resp.height)

    def query_accounts(self, f: QueryFilter, *, address: str | None = None) -> Page:
        """A page of accounts matching ``f``, by creation time."""
        resp = self._call_read("QueryAccounts", pb.QueryAccountsRequest(filter=query_filter_to_pb(f)), address)
        return Page([_account_from_pb(a) for a in resp.accounts], resp.next_timestamp, resp.height)

    def query_transfers(self, f: QueryFilter, *, address: str | None = None) -> Page:
        """A page of transfers matching ``f``, by time."""
        resp = self._call_read("QueryTransfers", pb.QueryTransfersRequest(filter=query_filter_to_pb(f)), address)
        return Page([_transfer_from_pb(t) for t in resp.transfers], resp.next_timestamp, resp.height)

    def head(self, *, address: str | None = None, linearizable: bool = False) -> BlockHeader:
        """The chain head of one validator (or, linearizable, of the leader after a read barrier)."""
        req = pb.GetHeadRequest(consistency=self._consistency(linearizable))
        return _header(self._read("GetHead", req, address, linearizable).head)

    def block(self, height: int, *, address: str | None = None) -> tuple[BlockHeader, list[bytes]]:
        resp = self._call_read("GetBlock", pb.GetBlockRequest(height=height), address)
        return _header(resp.header), list(resp.tx_hashes)

    # -- plumbing -------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        rest = [a for a in self._addresses if a != self._leader]
        random.shuffle(rest)
        return ([self._leader] if self._leader else []) + rest

    def _call_read(self, method: str, req, address: str | None):
        targets = [address] if address else self._candidates()
        deadline = time.monotonic() + self.retry.deadline_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            for addr in targets:
                try:
                    return self._transport.call(addr, method, req, self._attempt_timeout(deadline))
                except grpc.RpcError as e:
                    code = e.code()
                    if code == grpc.StatusCode.NOT_FOUND:
                        raise NotFound(e.details()) from None
                    if code == grpc.StatusCode.INVALID_ARGUMENT:
                        raise InvalidRequest(e.details()) from None
                    last = e
            time.sleep(self.retry.backoff_initial_s)
        raise Unavailable(f"{method}: no validator answered within {self.retry.deadline_s}s ({_detail(last)})")

    def _attempt_timeout(self, deadline: float) -> float:
        return max(0.05, min(self.retry.attempt_timeout_s, deadline - time.monotonic()))

    def _call_leader(self, method: str, req):
        deadline = time.monotonic() + self.retry.deadline_s
        backoff = self.retry.backoff_initial_s
        last: Exception | None = None
        timed_out = False
        candidates = self._candidates()
        i = 0
        while time.monotonic() < deadline:
            addr = candidates[i % len(candidates)]
            try:
                resp = self._transport.call(addr, method, req, self._attempt_timeout(deadline))
                self._leader = addr
                return resp
            except grpc.RpcError as e:
                last = e
                code = e.code()
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise InvalidRequest(e.details()) from None
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    leader = dict(e.trailing_metadata() or ()).get("leader-address")
                    if leader and leader != addr:
                        if leader not in self._addresses:
                            self._addresses.append(leader)
                        self._leader = leader
                        candidates = self._candidates()
                        i = 0
                        continue
                elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    timed_out = True
                elif code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN):
                    raise LedgerError(f"{method}: {code.name}: {e.details()}") from None
            self.retries += 1
            if addr == self._leader:
                self._leader = None
            i += 1
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, self.retry.backoff_max_s)
        err = Timeout if timed_out else Unavailable
        raise err(f"{method}: not committed within {self.retry.deadline_s}s, outcome unknown ({_detail(last)}); "
                  "resubmit the same signed transactions to learn it")


def _detail(e: Exception | None) -> str:
    if isinstance(e, grpc.RpcError):
        return f"{e.code().name}: {e.details()}"
    return str(e)
