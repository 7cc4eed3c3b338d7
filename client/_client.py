"""LedgerClient: build, sign, submit, follow the leader, retry with the same bytes, read."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from raft_ledger_client.wire import account_fields, account_filter_to_pb, query_filter_to_pb, from_u128, header_fields, transfer_fields, transfer_to_pb, u128
from raft_ledger_client._enums import AccountFlags, TransferFlags  # noqa: F401 - moved to _enums; old import path kept
from raft_ledger_client._enums import CreateAccountResult, CreateTransferResult
from raft_ledger_client._enums import TxRejection
from raft_ledger_client._exceptions import (
    LedgerError,
    NotSubmitted,
    TransactionRejected,
    TransportError,
    Unavailable,
)
from raft_ledger_client import _attempts
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client._transport import ClientTLS, GrpcTransport, Transport
from raft_ledger_client._exceptions import InvalidRequest, NotFound, VerificationError


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
    """Result of one event: ``result`` is a :class:`CreateAccountResult` or
    :class:`CreateTransferResult`, ``ok`` (0) or a TigerBeetle rejection.

    ``code`` (int) and ``name`` (TigerBeetle's lower-case name, e.g.
    ``"exceeds_credits"``) are the same value in the older spellings. Compare
    enums: ``r.result is CreateTransferResult.exceeds_credits``.
    """

    index: int
    result: CreateAccountResult | CreateTransferResult

    @property
    def code(self) -> int:
        return int(self.result)

    @property
    def name(self) -> str:
        return self.result.name

    @property
    def ok(self) -> bool:
        return self.result == 0


@dataclass(frozen=True)
class TransactionResult:
    """One submitted transaction: its hash, its block, and one EventResult per event, in
    order; or, refused as a whole at apply time, its ``rejection`` and no results."""

    tx_hash: bytes
    height: int
    results: tuple[EventResult, ...]
    rejection: TxRejection = TxRejection.none

    @property
    def ok(self) -> bool:
        return not self.rejection and all(r.ok for r in self.results)


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
    #: Issue 12: the transaction log (RFC 6962 size and root after this block), the account
    #: tree root, and the validator sets certifying this block and the next. As a validator
    #: reports them: a header is proven only through a certified checkpoint (``checkpoint()``).
    tree_size: int = 0
    tree_root: bytes = b""
    state_root: bytes = b""
    validators_hash: bytes = b""
    next_validators_hash: bytes = b""


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
    A page may hold fewer than ``limit`` items, even none, when the validator's
    scan budget ran out: continue while ``next_timestamp != 0``.
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


class _OkResults:
    """Shared ``ok`` EventResults by index (they are values): the wire carries only
    failures, and an all-ok transaction of n events becomes a slice, not n objects."""

    def __init__(self, result) -> None:
        self._ok = result(0)
        self._cache: tuple[EventResult, ...] = ()
        self._lock = threading.Lock()

    def first(self, n: int) -> tuple[EventResult, ...]:
        cache = self._cache
        if len(cache) < n:
            with self._lock:
                cache = self._cache
                if len(cache) < n:
                    grown = max(n, 2 * len(cache))
                    cache = self._cache = cache + tuple(EventResult(i, self._ok) for i in range(len(cache), grown))
        return cache[:n]


#: Per operation (the Transaction oneof): the repeated field with the events,
#: the EventResult oneof field of their result, its enum, and the ok results.
_OPERATIONS = {
    "create_accounts": ("accounts", "account", CreateAccountResult, _OkResults(CreateAccountResult)),
    "create_transfers": ("transfers", "transfer", CreateTransferResult, _OkResults(CreateTransferResult)),
}


def _rebuild(signed: pb.SignedTransaction, r: pb.TransactionResult) -> TransactionResult:
    """The complete per-event results of one transaction from its failures-only reply."""
    body = pb.Transaction.FromString(signed.body)
    operation = body.WhichOneof("operation")
    if operation is None:  # the validator would have refused it with INVALID_ARGUMENT
        raise LedgerError("a validator accepted a transaction without an operation")
    if r.rejection or operation == "governance":
        return TransactionResult(tx_hash=r.tx_hash, height=r.height, results=(), rejection=TxRejection(r.rejection))
    events_field, result_field, result_enum, ok = _OPERATIONS[operation]
    n = len(getattr(getattr(body, operation), events_field))
    results = ok.first(n)
    if r.results:
        results = list(results)
        for e in r.results:
            if not e.index < n or e.WhichOneof("result") != result_field:
                raise LedgerError(f"a validator answered for event {e.index} ({e.WhichOneof('result')}) "
                                  f"of a {operation} transaction of {n} events")
            results[e.index] = EventResult(e.index, result_enum(getattr(e, result_field)))
        results = tuple(results)
    return TransactionResult(tx_hash=r.tx_hash, height=r.height, results=results)


def _applied(r: TransactionResult) -> TransactionResult:
    """``r`` if it was applied; raises TransactionRejected naming its rejection otherwise."""
    if r.rejection:
        raise TransactionRejected(
            f"transaction {r.tx_hash.hex()[:16]}… was refused at block {r.height}: {r.rejection.name}",
            r.rejection, r.height)
    return r


def read_genesis(path: str) -> tuple[list[str], str]:
    """(validator gRPC addresses, chain id) from a genesis JSON file.
    Raises OSError, ValueError (not a genesis file, or no validators)."""
    import json

    with open(path) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not JSON: {e}") from None
    try:
        addresses = [v["grpc_address"] for v in doc["validators"]]
        chain_id = doc["chain_id"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a genesis file (missing {e})") from None
    if not addresses or not isinstance(chain_id, str) or not chain_id:
        raise ValueError(f"{path}: a genesis file names a chain_id and at least one validator")
    return addresses, chain_id


def _genesis_ca(path: str) -> bytes | None:
    """The PEM of genesis ``tls_ca_certificate``, or None (a plaintext development chain)."""
    import json

    with open(path) as f:
        ca = json.load(f).get("tls_ca_certificate")
    if ca is None:
        return None
    if not isinstance(ca, str) or "BEGIN CERTIFICATE" not in ca:
        raise ValueError(f"{path}: tls_ca_certificate is not a PEM certificate")
    return ca.encode()


def genesis_pins(path: str) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """What a member pins from a genesis file: ``(chain_id, genesis hash, validators)``.

    The genesis hash is SHA-256 of the file's canonical JSON (keys sorted, no spaces:
    ``json.dumps(doc, sort_keys=True, separators=(",", ":"))``, as the validators compute
    it in ``raft_ledger_node.config.load_genesis``); ``validators`` are ``(id, 32-byte
    Ed25519 checkpoint-signing key)`` pairs, empty when a validator of the file has no
    ``public_key`` (then nothing can be verified). Raises OSError, ValueError.
    """
    import hashlib
    import json

    with open(path, "rb") as f:
        raw = f.read()
    try:
        doc = json.loads(raw)
        chain_id = doc["chain_id"]
        docs = doc["validators"]
        keys = [(v["id"], v.get("public_key")) for v in docs]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a genesis file ({e})") from None
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    if any(not isinstance(k, str) for _, k in keys):
        return chain_id, hashlib.sha256(canonical).digest(), []
    try:
        validators = [(vid, bytes.fromhex(k)) for vid, k in keys]
    except ValueError:
        raise ValueError(f"{path}: a validator public_key is not hex") from None
    return chain_id, hashlib.sha256(canonical).digest(), validators


@dataclass(frozen=True)
class TransactionProof:
    """A transaction with its verified proof of inclusion in the certified log.

    ``transaction``: the SignedTransaction envelope bytes as committed (the log leaf;
    ``SHA-256(transaction)`` is the tx hash); ``leaf_index``: its position in the log;
    ``proof``: the RFC 6962 audit path (32-byte hashes) to the root of ``checkpoint``
    (the certified :class:`~raft_ledger_client.checkpoint.Checkpoint`, whose tree size
    the proof is for), ``note`` its certificate; ``height``: the block holding it.
    ``result``: what the validator reported as the transaction's outcome — NOT covered
    by the proof (results are not log leaves; account proofs cover their effects).
    """

    tx_hash: bytes
    transaction: bytes
    leaf_index: int
    proof: tuple[bytes, ...]
    height: int
    checkpoint: object
    note: str
    result: "TransactionResult | None"

    def receipt(self):
        """The self-contained :class:`~raft_ledger_client.receipt.Receipt` (tlog-proof)."""
        from raft_ledger_client.receipt import Receipt

        return Receipt(self.transaction, self.leaf_index, self.proof, self.note)


#: Ids per GetAccountProofs request (the validators' ``account_proofs_max``); longer
#: lookups are split, each part verified against its own certificate.
ACCOUNT_PROOFS_MAX = 256


class _ValidatorProofs:
    """The ProofSource of :class:`~raft_ledger_client.verify.TrustedState` that asks one
    validator (the one that served the checkpoint being verified). A refusal to serve a
    proof (NOT_FOUND, INVALID_ARGUMENT) is a missing proof: VerificationError."""

    def __init__(self, client: "LedgerClient", address: str | None) -> None:
        self._client, self._address = client, address

    def _call(self, method: str, req):
        try:
            return self._client._call_read(method, req, self._address)
        except (NotFound, InvalidRequest) as e:
            raise VerificationError(f"missing proof: {method} was refused: {e}") from None

    def consistency_proof(self, first: int, second: int):
        resp = self._call("GetConsistencyProof", pb.GetConsistencyProofRequest(first=first, second=second))
        return list(resp.proof)

    def handoffs(self, after_height: int, up_to_height: int):
        resp = self._call("GetHandoffs", pb.GetHandoffsRequest(after_height=after_height, up_to_height=up_to_height))
        return [(h.checkpoint.note, [(v.id, bytes(v.public_key)) for v in h.next]) for h in resp.handoffs]


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

    def __post_init__(self) -> None:
        if not (self.deadline_s > 0 and self.attempt_timeout_s > 0 and 0 <= self.backoff_initial_s <= self.backoff_max_s):
            raise ValueError(f"RetryPolicy needs positive timeouts and 0 <= backoff_initial_s <= backoff_max_s: {self}")


#: Seconds a signed transaction stays valid by default (``valid_until``): far above
#: the retry deadline, so every retry of the same bytes is still accepted.
DEFAULT_VALIDITY_S = 600.0
#: The ledger refuses a ``valid_until`` further ahead than this (tx_validity_ns_max).
VALIDITY_S_MAX = 24 * 3600.0


class LedgerClient:
    """A member bank's connection to the validators.

    ``addresses``: gRPC host:port of the validators (any subset; the client
    follows the leader). ``chain_id``: the genesis file's chain id, bound into every
    signed body, so a validator of another chain refuses it. Writes are signed with
    the member's Ed25519 key as ``key_id``, each valid for ``validity_s`` seconds of
    the validators' clock (``valid_until`` in the body; the ledger refuses it after,
    and more than 24 h ahead); a retry resends the same signed bytes within that
    window. Every call has a finite deadline. Thread-safe.

    Transport: ``tls`` (:class:`ClientTLS`: the cluster CA and this member's client
    certificate) for the real validators, which speak mutual TLS; ``insecure=True``
    for a plaintext development cluster; or an explicit ``transport`` (tests).
    ValueError if none of them is given.

    Redirects: a validator's ``leader-address`` hint is followed only to one of
    ``addresses`` or ``validators`` (every validator of genesis; :meth:`from_genesis`
    passes them), the addresses the client trusts to lead; a hint
    naming any other host is ignored, as if the validator knew no leader, so a
    compromised or confused validator cannot send a member's traffic elsewhere.

    Coalescing (``coalesce=True``, the default): concurrent ``create_accounts`` /
    ``create_transfers`` calls of threads sharing this client are merged into one signed
    transaction per Submit, each caller getting exactly its own results and exceptions
    (``raft_ledger_client.coalescing`` says what stays as if submitted alone);
    ``coalesce_wait_max_s`` (default 0: merge only what queued while a Submit was in
    flight) is how long a caller about to send waits for others to join;
    ``coalesce_in_flight_max`` Submits of one operation at once (default 1).
    ``coalescing_stats()`` counts calls and Submits.

    Raises the exceptions of :mod:`client._exceptions`. ``clock`` (seconds,
    monotonic), ``sleep`` and ``rng`` (the order validators are tried in) are
    passed in so tests can run the retry logic without waiting.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        member_id: str,
        key_id: str,
        private_key: Ed25519PrivateKey,
        chain_id: str,
        validity_s: float = DEFAULT_VALIDITY_S,
        retry: RetryPolicy | None = None,
        transport: Transport | None = None,
        tls: ClientTLS | None = None,
        insecure: bool = False,
        validators: Sequence[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        verify: bool | None = None,
        genesis_hash: bytes | None = None,
        genesis_validators: Sequence[tuple[str, bytes]] | None = None,
        trusted_state_path: str | None = None,
        coalesce: bool = True,
        coalesce_wait_max_s: float = 0.0,
        coalesce_in_flight_max: int = 1,
    ) -> None:
        if not addresses:
            raise ValueError("at least one validator address is required")
        if not chain_id:
            raise ValueError("chain_id is required (the genesis file's chain_id)")
        if not 0 < validity_s <= VALIDITY_S_MAX:
            raise ValueError(f"validity_s must be in (0, {VALIDITY_S_MAX}]")
        self._addresses = list(addresses)
        self._allowed = frozenset(self._addresses) | frozenset(validators or ())
        self._leader: str | None = None
        self.member_id = member_id
        self.key_id = key_id
        self._key = private_key
        self.chain_id = chain_id
        self.validity_s = validity_s
        self._wall_clock_ns = wall_clock_ns
        self.retry = retry or RetryPolicy()
        self._transport = transport or GrpcTransport(tls=tls, insecure=insecure)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.retries = 0
        self._written_height = 0
        self.trusted = None
        pinned = genesis_hash is not None and bool(genesis_validators)
        if verify is None:
            verify = pinned
        if verify:
            if not pinned:
                raise ValueError("verified reads need the pinned genesis hash and validator keys "
                                 "(genesis_hash=, genesis_validators=; from_genesis passes them), or verify=False")
            from raft_ledger_client.verify import TrustedState

            self.trusted = TrustedState(chain_id, genesis_hash, genesis_validators, path=trusted_state_path)
        elif trusted_state_path is not None:
            raise ValueError("trusted_state_path= without verified reads (verify=False) would never be used")
        #: Group commit (issue 16, client/coalescing.py): concurrent create_accounts /
        #: create_transfers calls become one signed transaction per Submit; None: off.
        self._coalescers = _coalescers(self, coalesce, coalesce_wait_max_s, coalesce_in_flight_max)

    @classmethod
    def from_key_file(cls, addresses: Sequence[str], *, member_id: str, key_id: str, key_file: str, **kw) -> "LedgerClient":
        return cls(addresses, member_id=member_id, key_id=key_id, private_key=load_private_key(key_file), **kw)

    @classmethod
    def from_genesis(cls, genesis_file: str, *, member_id: str, key_id: str, key_file: str,
                     tls_key_file: str | None = None, tls_cert_file: str | None = None,
                     extra_addresses: Sequence[str] = (), **kw) -> "LedgerClient":
        """A client for the chain of ``genesis_file`` (the genesis JSON the operators
        publish): its ``chain_id``, every validator's ``grpc_address`` (the only
        addresses redirects may lead to) and its CA certificate
        (``tls_ca_certificate``), with the member's TLS client key and certificate
        ``tls_key_file`` / ``tls_cert_file`` (PEM). A genesis without a CA is a
        plaintext development chain: pass ``insecure=True``. ``extra_addresses``: gRPC
        addresses of validators added since genesis (the client also learns them from the
        governed configuration it reads).
        Verified reads are on (``verify=True``) unless ``verify=False``: the client pins
        the genesis hash and every validator's checkpoint-signing key from the file, and
        keeps its trusted checkpoint in memory or, with ``trusted_state_path=``, in that
        file (see :class:`~raft_ledger_client.verify.TrustedState`).
        Raises OSError, ValueError (not a genesis file, or no validators, or TLS
        files missing for a TLS chain, or verified reads asked of a genesis that pins no
        validator keys)."""
        addresses, chain_id = read_genesis(genesis_file)
        addresses = list(dict.fromkeys([*addresses, *extra_addresses]))
        if kw.get("verify", True):
            _, genesis_hash, pinned = genesis_pins(genesis_file)
            if not pinned:
                raise ValueError(f"{genesis_file} pins no checkpoint-signing key for some validator: verified "
                                 "reads are impossible; pass verify=False to read unverified")
            kw["verify"] = True
            kw.setdefault("genesis_hash", genesis_hash)
            kw.setdefault("genesis_validators", pinned)
        ca = _genesis_ca(genesis_file)
        if not kw.get("insecure") and "transport" not in kw and "tls" not in kw:
            if ca is None:
                raise ValueError(f"{genesis_file} names no tls_ca_certificate: a plaintext development chain; "
                                 "pass insecure=True")
            if not tls_key_file or not tls_cert_file:
                raise ValueError("tls_key_file and tls_cert_file (this member's TLS client key and certificate) "
                                 "are required to reach the validators")
            with open(tls_key_file, "rb") as f:
                key_pem = f.read()
            with open(tls_cert_file, "rb") as f:
                cert_pem = f.read()
            kw["tls"] = ClientTLS(ca_pem=ca, cert_pem=cert_pem, key_pem=key_pem)
        return cls.from_key_file(addresses, member_id=member_id, key_id=key_id, key_file=key_file, chain_id=chain_id, **kw)

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
        body.chain_id = self.chain_id
        body.valid_until = self._wall_clock_ns() + int(self.validity_s * 1e9)
        raw = body.SerializeToString(deterministic=True)
        return pb.SignedTransaction(body=raw, member_id=self.member_id, key_id=self.key_id, signature=self._key.sign(raw))

    # -- writes -------------------------------------------------------------------
    def create_accounts(self, accounts: Sequence[Account]) -> list[EventResult]:
        """Create accounts in one signed transaction; one EventResult per account::

            [r] = client.create_accounts([Account(id=1, ledger=840, code=1)])
            assert r.result in (CreateAccountResult.ok, CreateAccountResult.exists)
        """
        accounts = list(accounts)  # an iterable is read once
        if self._coalescers is not None and accounts:
            return self._coalesced("create_accounts", [_account_pb(a) for a in accounts],
                                   bool(accounts[-1].flags & AccountFlags.LINKED))
        return list(_applied(self.submit([self.sign_accounts(accounts)])[0]).results)

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[EventResult]:
        """Create transfers in one signed transaction; one EventResult per transfer::

            [r] = client.create_transfers([Transfer(id=7, debit_account_id=1, credit_account_id=2,
                                                    amount=100, ledger=840, code=1)])
            if r.result is CreateTransferResult.exceeds_credits: ...
        """
        transfers = list(transfers)  # an iterable is read once
        if self._coalescers is not None and transfers:
            return self._coalesced("create_transfers", [_transfer_pb(t) for t in transfers],
                                   bool(transfers[-1].flags & TransferFlags.LINKED))
        return list(_applied(self.submit([self.sign_transfers(transfers)])[0]).results)

    def _coalesced(self, operation: str, events: list, chained: bool) -> list[EventResult]:
        from raft_ledger_client.coalescing import Request, framed_bytes

        r = Request(events, sum(framed_bytes(e) for e in events), chained, self._clock() + self.retry.deadline_s)
        return self._coalescers[operation].run(r)

    def _send_events(self, operation: str, events: list, deadline: float) -> TransactionResult:
        """Sign one transaction of ``events`` (protobuf messages) and submit it by ``deadline``."""
        field = _OPERATIONS[operation][0]
        wrapper = pb.CreateAccounts if operation == "create_accounts" else pb.CreateTransfers
        signed = self._sign(pb.Transaction(**{operation: wrapper(**{field: events})}))
        return self._submit([signed], deadline)[0]

    def coalescing_stats(self):
        """A :class:`~raft_ledger_client.coalescing.CoalescingStats` per operation
        (``{"create_accounts": ..., "create_transfers": ...}``); empty when coalescing is off."""
        return {op: c.stats for op, c in (self._coalescers or {}).items()}

    # -- governance -------------------------------------------------------------------
    def sign_governance(self, proposal_file) -> pb.SignedTransaction:
        """The governance transaction carrying ``proposal_file``'s proposal and approvals
        (a :class:`raft_ledger_client.governance.ProposalFile`, or a text file object
        holding one), signed by this client's identity (an admin or an operator)."""
        from raft_ledger_client.governance import ProposalFile

        pf = proposal_file if isinstance(proposal_file, ProposalFile) else ProposalFile.load(proposal_file)
        return self._sign(pb.Transaction(governance=pb.Governance(proposal=pf.proposal, approvals=pf.approvals)))

    def submit_governance(self, proposal_file) -> int:
        """Submit a co-signed governance proposal; returns the configuration version it
        made (its base version + 1) once applied.

        Raises :class:`TransactionRejected` with the ``rejection``
        (``approvals_below_threshold``, ``approval_not_admin``, ``approval_duplicate``,
        ``config_version_stale`` …) when the ledger refused it at apply,
        :class:`InvalidRequest` when the validator refused it at the door (malformed,
        expired, built on another version than the current one), and
        :class:`PermissionDenied` when this identity may not submit governance.
        """
        signed = self.sign_governance(proposal_file)
        gov = pb.Transaction.FromString(signed.body).governance
        base = pb.GovernanceProposal.FromString(gov.proposal).base_version
        _applied(self.submit([signed])[0])
        return base + 1

    def get_configuration(self, version: int = 0, *, address: str | None = None,
                          linearizable: bool = False) -> dict:
        """The governed configuration (version 0: the current one) as a dict: version,
        members (id, roles, status, keys with hex public key, valid_from, revoked_at),
        issuers, admins, threshold, validators; plus ``height``, the head it was read at.

        The current version is a LOCAL read by default (a lagging validator may answer
        with an older version); ``linearizable=True`` asks the leader after a read barrier:
        the version every governance proposal must be built on (a proposal on an older one
        is refused ``config_version_stale``)."""
        import json

        req = pb.GetConfigurationRequest(version=version, consistency=self._consistency(linearizable))
        resp = self._read("GetConfiguration", req, address, linearizable)
        doc = json.loads(resp.configuration_json)
        if version == 0:
            self._know([v["grpc_address"] for v in doc.get("validators", ())])
        doc["height"] = resp.height
        return doc

    def submit(self, signed: Sequence[pb.SignedTransaction]) -> list[TransactionResult]:
        """Submit signed transactions; returns one TransactionResult each, once committed.

        Retries on unknown outcomes resend the same bytes: the ledger
        deduplicates by transaction hash and by event id, so nothing applies twice.
        The validators send only the failed events (as TigerBeetle does); the
        results here are complete, one per event, ``ok`` for the rest.

        Raises :class:`Timeout` / :class:`Unavailable` when the outcome is unknown
        (resubmit the same signed transactions to learn it), :class:`NotSubmitted`
        when every attempt was refused before anything was proposed.
        """
        return self._submit(signed, None)

    def _submit(self, signed: Sequence[pb.SignedTransaction], deadline: float | None) -> list[TransactionResult]:
        """:meth:`submit` with its retries ending at ``deadline`` (monotonic s; None: the policy's)."""
        signed = list(signed)
        resp = self._call_leader("Submit", pb.SubmitRequest(transactions=signed), deadline)
        if len(resp.results) != len(signed):
            raise LedgerError(f"a validator answered {len(resp.results)} results for {len(signed)} transactions")
        results = [_rebuild(stx, r) for stx, r in zip(signed, resp.results)]
        if results:
            self._written_height = max(self._written_height, max(r.height for r in results))
        return results

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
        """Accounts found among ``ids`` (missing ids are left out), in request order.

        Verified (the default of a client built with :meth:`from_genesis`): each account
        comes with a proof against the ``state`` root of a certified checkpoint, which the
        trusted state verifies and advances to (:meth:`checkpoint`); the account is
        re-encoded from the fields returned, and must be exactly the proven record of the
        id asked for. The state read is that of the newest certified block the validator
        has, and not older than this client's own last write (read your writes: the
        client waits for that block to be certified, within the retry deadline); an
        absent account is not proven absent. Raises VerificationError on any mismatch.
        ``linearizable`` does not apply to a verified read (certification follows the
        head).

        Unverified (``verify=False``): a LOCAL read from one validator (may lag the
        leader); with ``linearizable=True`` the leader answers after a read barrier
        through the Raft log: the result reflects every write acknowledged before the call.
        """
        if self.trusted is not None:
            return self._verified_accounts(ids, address)
        req = pb.LookupAccountsRequest(ids=[_u128(i) for i in ids], consistency=self._consistency(linearizable))
        resp = self._read("LookupAccounts", req, address, linearizable)
        return [_account_from_pb(a) for a in resp.accounts]

    def get_account(self, id: int, *, address: str | None = None) -> Account | None:
        """The account ``id``, or None if the validator has none; verified as in :meth:`lookup_accounts`."""
        found = self.lookup_accounts([id], address=address)
        return found[0] if found else None

    # -- verified reads -----------------------------------------------------------------
    def _require_trusted(self):
        if self.trusted is None:
            raise ValueError("verified reads are off: build the client with from_genesis (or pass "
                             "genesis_hash= and genesis_validators=) and without verify=False")
        return self.trusted

    def _call_read_from(self, method: str, req, address: str | None):
        """``(response, address that answered)``: the proofs a checkpoint needs are asked of
        the validator that served it."""
        if address is not None:
            return self._call_read(method, req, address), address
        for addr in self._candidates():
            try:
                return self._transport.call(addr, method, req, self.retry.attempt_timeout_s), addr
            except (TransportError, NotSubmitted):
                continue
        # Every validator failed once: retry with backoff; later proofs may come from any.
        return self._call_read(method, req, None), None

    def _wait_certified(self, height: int, address: str | None) -> None:
        """Wait (GetCheckpoint's wait_ms, within the retry deadline) until ``address``
        certified ``height``; a validator that cannot is left to the verification after."""
        if height <= 0:
            return
        wait_ms = int(min(10.0, max(0.0, self.retry.attempt_timeout_s - 0.5)) * 1000)
        try:
            self._call_read("GetCheckpoint", pb.GetCheckpointRequest(height=height, wait_ms=wait_ms), address)
        except NotFound:
            pass

    def checkpoint(self, *, address: str | None = None):
        """The newest certified checkpoint a validator serves, verified, and now trusted.

        Verification (:meth:`raft_ledger_client.verify.TrustedState.advance`): the
        certificate against the trusted validator set (following handoffs), no step
        back (an older checkpoint presented as newest raises VerificationError
        ``rollback``), and a consistency proof from the trusted tree to the new one.
        Returns a :class:`~raft_ledger_client.checkpoint.Checkpoint`.
        """
        trusted = self._require_trusted()
        resp, addr = self._call_read_from("GetCheckpoint", pb.GetCheckpointRequest(height=0), address)
        if not resp.checkpoint.note:
            raise VerificationError("missing proof: the validator sent no checkpoint note")
        return trusted.advance(resp.checkpoint.note, _ValidatorProofs(self, addr))

    def _verified_accounts(self, ids: Sequence[int], address: str | None) -> list[Account]:
        ids = [int(i) for i in ids]
        if len(ids) > ACCOUNT_PROOFS_MAX:  # the validator's account_proofs_max per request
            return [a for i in range(0, len(ids), ACCOUNT_PROOFS_MAX)
                    for a in self._verified_accounts(ids[i : i + ACCOUNT_PROOFS_MAX], address)]
        from raft_ledger_client.merkle import ProofError
        from raft_ledger_client.state_proof import encode_account_record, verify_account_proof

        trusted = self._require_trusted()
        ids = [int(i) for i in ids]
        req = pb.GetAccountProofsRequest(ids=[_u128(i) for i in ids])
        resp, addr = self._call_read_from("GetAccountProofs", req, address)
        if resp.checkpoint.height < self._written_height:
            self._wait_certified(self._written_height, addr)
            resp = self._call_read("GetAccountProofs", req, addr)
        if not resp.checkpoint.note:
            raise VerificationError("missing proof: GetAccountProofs sent no checkpoint")
        cp = trusted.check_read(resp.checkpoint.note, _ValidatorProofs(self, addr))
        if len(resp.proofs) != len(resp.accounts):
            raise VerificationError(f"missing proof: {len(resp.accounts)} accounts but {len(resp.proofs)} proofs")
        order = {i: n for n, i in reversed(list(enumerate(ids)))}
        out: list[Account] = []
        last = -1
        for a, p in zip(resp.accounts, resp.proofs):
            fields = account_fields(a)
            account_id = fields["id"]
            at = order.get(account_id)
            if at is None or at <= last:
                raise VerificationError(f"account {account_id}: not asked for, repeated or out of request order")
            last = at
            try:
                record = encode_account_record(**fields)
            except ValueError as e:
                raise VerificationError(f"account {account_id}: malformed fields: {e}") from None
            if record != bytes(p.record):
                raise VerificationError(f"account {account_id}: the fields served are not the proven record")
            if record[:16] != account_id.to_bytes(16, "big"):
                raise VerificationError(f"account {account_id}: the proven record is of another account")
            try:
                verify_account_proof(record, p.position, resp.account_count, list(p.siblings), cp.state_root)
            except ProofError as e:
                raise VerificationError(f"account proof of {account_id} against the state root of height "
                                        f"{cp.height}: {e}") from None
            out.append(_account_from_pb(a))
        return out

    def get_transaction_proof(self, tx_hash: bytes, *, address: str | None = None) -> TransactionProof:
        """The transaction ``tx_hash`` (SHA-256 of its SignedTransaction bytes) with its
        inclusion proof in a certified checkpoint, verified (:meth:`verify_transaction`).

        Raises NotFound (no such transaction, or not one this member signed: an auditor
        may read any) and VerificationError (see :meth:`verify_transaction`).
        """
        self._require_trusted()
        tx_hash = bytes(tx_hash)
        req = pb.GetInclusionProofRequest(tx_hash=tx_hash, tree_size=0)
        deadline = self._clock() + self.retry.deadline_s
        backoff = self.retry.backoff_initial_s
        while True:
            try:
                resp, addr = self._call_read_from("GetInclusionProof", req, address)
                break
            except NotFound:
                # A transaction of this client's own recent write may not be certified yet:
                # wait for it within the deadline (a validator answers NOT_FOUND until then).
                if not self._written_height or self._clock() + backoff >= deadline:
                    raise
                self._sleep(backoff)
                backoff = min(2 * backoff, self.retry.backoff_max_s)
        if resp.checkpoint.height < self._written_height:
            self._wait_certified(self._written_height, addr)
            resp = self._call_read("GetInclusionProof", req, addr)
        result = None
        if resp.HasField("result") and resp.transaction:
            try:
                result = _rebuild(pb.SignedTransaction.FromString(resp.transaction), resp.result)
            except Exception:  # an unverified extra: a malformed one is simply not reported
                result = None
        proof = TransactionProof(tx_hash=tx_hash, transaction=bytes(resp.transaction), leaf_index=resp.leaf_index,
                                 proof=tuple(bytes(h) for h in resp.proof), height=resp.height, checkpoint=None,
                                 note=resp.checkpoint.note, result=result)
        return self.verify_transaction(proof, tree_size=resp.tree_size, _address=addr)

    def verify_transaction(self, proof: TransactionProof, *, tree_size: int | None = None,
                           _address: str | None = None) -> TransactionProof:
        """Verify ``proof`` against the trusted state; return it with its verified ``checkpoint``.

        Checks: ``SHA-256(transaction) == tx_hash``; the note is a certificate this client
        accepts (:meth:`raft_ledger_client.verify.TrustedState.check_read`: certified by
        the trusted set, consistent with the trusted log, the trusted state advancing to
        it when newer); ``tree_size`` (the one the validator claims, if given) is the
        checkpoint's; RFC 9162 §2.1.3.2 inclusion of ``SHA-256(0x00 || transaction)`` at
        ``leaf_index`` under the checkpoint's root. Raises VerificationError naming the check.
        """
        import hashlib

        from raft_ledger_client.merkle import ProofError, leaf_hash, verify_inclusion

        trusted = self._require_trusted()
        if not proof.transaction or hashlib.sha256(proof.transaction).digest() != bytes(proof.tx_hash):
            raise VerificationError(f"transaction {bytes(proof.tx_hash).hex()[:16]}…: the bytes served do not "
                                    "hash to the transaction asked for")
        if not proof.note:
            raise VerificationError("missing proof: no checkpoint note with the inclusion proof")
        cp = trusted.check_read(proof.note, _ValidatorProofs(self, _address))
        if tree_size is not None and tree_size != cp.tree_size:
            raise VerificationError(f"inclusion proof: for tree size {tree_size}, but the checkpoint's is {cp.tree_size}")
        if proof.leaf_index >= cp.tree_size:
            raise VerificationError(f"inclusion proof: index {proof.leaf_index} is not below the certified tree size {cp.tree_size}")
        try:
            verify_inclusion(leaf_hash(proof.transaction), proof.leaf_index, cp.tree_size, list(proof.proof), cp.root_hash)
        except (ProofError, TypeError) as e:
            raise VerificationError(f"inclusion proof: {e}") from None
        from dataclasses import replace

        return replace(proof, checkpoint=cp)

    def receipt(self, tx_hash: bytes, *, address: str | None = None):
        """A self-contained, verified :class:`~raft_ledger_client.receipt.Receipt` of
        ``tx_hash`` (C2SP tlog-proof: the envelope, its inclusion proof and the certified
        checkpoint); ``receipt.encode()`` is the text to hand over, which
        :func:`~raft_ledger_client.receipt.verify_receipt` checks offline."""
        return self.get_transaction_proof(tx_hash, address=address).receipt()

    def lookup_transfers(self, ids: Sequence[int], *, address: str | None = None, linearizable: bool = False) -> list[Transfer]:
        """Transfers found among ``ids``; consistency as in :meth:`lookup_accounts` unverified.

        Not verified: no proof covers a transfer record by id (its transaction is in the
        log: :meth:`get_transaction_proof` proves that; its effects are in the accounts)."""
        req = pb.LookupTransfersRequest(ids=[_u128(i) for i in ids], consistency=self._consistency(linearizable))
        resp = self._read("LookupTransfers", req, address, linearizable)
        return [_transfer_from_pb(t) for t in resp.transfers]

    def get_account_transfers(self, f: AccountFilter, *, address: str | None = None) -> Page:
        """A page of one account's transfers by time (LOCAL read); items are Transfers.
        Not verified (no proof covers a query's completeness), as for every page below."""
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
    def _learn_validators(self, addr: str, deadline: float) -> None:
        """Add the gRPC addresses of the governed validator set (validators added after
        genesis) to those this client may be redirected to, reading the configuration
        from ``addr`` (a validator this client already trusts, over its TLS). Best effort."""
        try:
            resp = self._transport.call(addr, "GetConfiguration", pb.GetConfigurationRequest(),
                                        self._attempt_timeout(deadline))
            import json

            found = [v["grpc_address"] for v in json.loads(resp.configuration_json).get("validators", ())]
        except (LedgerError, ValueError, KeyError, TypeError):
            return
        self._know(found)

    def _know(self, addresses) -> None:
        """Add validators of the governed set (added after genesis) to those this client
        calls and may be redirected to."""
        new = [a for a in addresses if a not in self._allowed]
        if new:
            self._allowed = self._allowed | frozenset(new)
            self._addresses.extend(a for a in new if a not in self._addresses)

    def _candidates(self) -> list[str]:
        rest = [a for a in self._addresses if a != self._leader]
        self._rng.shuffle(rest)
        return ([self._leader] if self._leader else []) + rest

    def _attempt_timeout(self, deadline: float) -> float:
        return max(0.05, min(self.retry.attempt_timeout_s, deadline - self._clock()))

    def _call_read(self, method: str, req, address: str | None):
        """A LOCAL read: any validator will do; on failure try the next, then back off
        (``_attempts.local_read``)."""
        return self._drive(_attempts.local_read(self, method, self._clock() + self.retry.deadline_s, address),
                           method, req, None)

    def _drive(self, steps: "_attempts.Attempts", method: str, req, deadline: float | None):
        """Perform the steps of a retry rule (``_attempts``) with this client's transport and sleep."""
        try:
            step = next(steps)
            while True:
                if step.__class__ is _attempts.Call:
                    try:
                        outcome = self._transport.call(step.addr, method, req, step.timeout_s)
                    except _attempts.RETRIED as e:
                        outcome = e
                    step = steps.send(outcome)
                elif step.__class__ is _attempts.Learn:
                    self._learn_validators(step.addr, deadline)
                    step = steps.send(None)
                else:
                    self._sleep(step.seconds)
                    step = steps.send(None)
        except StopIteration as done:
            return done.value

    def _call_leader(self, method: str, req, deadline: float | None = None):
        """Call the leader: follow redirects, retry unknown outcomes with the same request,
        until ``deadline`` (monotonic s; None: ``retry.deadline_s`` from now).

        Ends in :class:`NotSubmitted` if every attempt was refused before
        proposal, else (some attempt may have been proposed) :class:`Timeout` if
        one timed out, :class:`Unavailable` otherwise (``_attempts.leader_call``).
        """
        if deadline is None:
            deadline = self._clock() + self.retry.deadline_s
        return self._drive(_attempts.leader_call(self, method, deadline), method, req, deadline)

    # -- change-data capture (issue 14): raft_ledger_client.cdc ---------------------------
    def watch_events(self, from_height: int = 1, *, kinds: Iterable[str] = ("accounts", "transfers"), ledger: int = 0,
                     account_ids: Iterable[int] = (), address: str | None = None, **kw):
        """Iterator of :class:`raft_ledger_client.cdc.BlockEvents`: every committed block from
        ``from_height`` on (0: after the head), in order, once each, with the events this
        caller may see (filtered by ``kinds``, ``ledger``, ``account_ids``); it resumes on
        another validator at the last height + 1 when a stream breaks, within the retry
        deadline (raft_ledger_client.cdc's docstring). Raises Unavailable, PermissionDenied,
        InvalidRequest, ValueError (unknown kind)."""
        from raft_ledger_client.cdc import watch_events

        return watch_events(self, from_height, kinds=kinds, ledger=ledger, account_ids=account_ids,
                            address=address, account_from_pb=_account_from_pb, transfer_from_pb=_transfer_from_pb, **kw)


def _coalescers(client: "LedgerClient", on: bool, wait_max_s: float, in_flight_max: int):
    """One Coalescer per operation for ``client``, or None when coalescing is off."""
    if not on:
        return None
    from raft_ledger_client.coalescing import ENVELOPE_OVERHEAD_BYTES_MAX, TX_BYTES_MAX, TX_EVENTS_MAX, Coalescer

    ids = len(client.chain_id.encode()) + len(client.member_id.encode()) + len(client.key_id.encode())
    bytes_max = TX_BYTES_MAX - ENVELOPE_OVERHEAD_BYTES_MAX - ids

    def coalescer(operation: str) -> Coalescer:
        return Coalescer(lambda events, deadline: client._send_events(operation, events, deadline),
                         _OPERATIONS[operation][3], events_max=TX_EVENTS_MAX, bytes_max=bytes_max,
                         wait_max_s=wait_max_s, in_flight_max=in_flight_max, clock=client._clock)

    return {op: coalescer(op) for op in _OPERATIONS}

