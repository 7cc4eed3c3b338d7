"""Builders for unit tests of the ledger core: events, transactions, entries, a driver.

Every transaction is a real SignedTransaction (chain :data:`CHAIN`, signed with the
test key :data:`SIGNING_KEY`, ``valid_until`` made unique by a sequence number), and
``tx_hash = SHA-256(envelope)``: a Tx built here is the Tx a validator decodes from
the Raft log (:func:`decode_envelope`), less the signature fields that make apply
verify it. Reuse a Tx object (or pass the same ``nonce``) to model a client's retry.
"""
from __future__ import annotations

import hashlib
import itertools
from typing import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.wire import account_to_pb, transfer_to_pb
from raft_ledger_node.api.validation import tx_from_committed
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.types import (
    Account,
    Entry,
    Operation,
    PendingStatus,
    Transfer,
    Tx,
    TxResult,
    WriteSet,
)
from raft_ledger_node.state_machine import StateMachine
from raft_ledger_node.store_memory import MemoryStore

NS = 1_000_000_000
U128_MAX = (1 << 128) - 1
U64_MAX = (1 << 64) - 1
MEMBER = "bank-a"
OTHER = "bank-b"
#: A realistic start time (2024-01-01T00:00:00Z in ns).
T0 = 1_704_067_200 * NS

_nonces = itertools.count(1)


def account(id: int, *, ledger: int = 1, code: int = 1, flags: int = 0, **kw) -> Account:
    return Account(id=id, ledger=ledger, code=code, flags=int(flags), **kw)


def transfer(
    id: int, debit: int = 0, credit: int = 0, amount: int = 0, *, ledger: int = 1, code: int = 1, flags: int = 0, **kw
) -> Transfer:
    return Transfer(
        id=id, debit_account_id=debit, credit_account_id=credit, amount=amount, ledger=ledger, code=code, flags=int(flags), **kw
    )


def resolve(id: int, pending_id: int, flags: int, amount: int = 0, **kw) -> Transfer:
    """A post/void transfer; accounts, ledger and code default to 0 (taken from the pending transfer)."""
    fields = dict(debit_account_id=0, credit_account_id=0, ledger=0, code=0) | kw
    return Transfer(id=id, amount=amount, flags=int(flags), pending_id=pending_id, **fields)


#: The chain the test envelopes are signed for, and the one key every test member signs with.
CHAIN = "unit-test-chain"
SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC_KEY = SIGNING_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def decode_envelope(envelope: bytes) -> Tx:
    """What every validator decodes from a committed envelope of :data:`CHAIN`."""
    return tx_from_committed(envelope, chain_id=CHAIN)


def signed_envelope(member: str, body: pb.Transaction, key_id: str = "k1", key=SIGNING_KEY) -> bytes:
    raw = body.SerializeToString(deterministic=True)
    stx = pb.SignedTransaction(body=raw, member_id=member, key_id=key_id, signature=key.sign(raw))
    return stx.SerializeToString(deterministic=True)


def make_tx(member: str, operation: Operation, events: Iterable, *, nonce: int | None = None, key_id: str = "k1") -> Tx:
    events = tuple(events)
    n = next(_nonces) if nonce is None else nonce
    body = pb.Transaction(chain_id=CHAIN, valid_until=T0 + 10**15 + n)
    if operation == Operation.create_accounts:
        body.create_accounts.accounts.extend(account_to_pb(e) for e in events)
    else:
        body.create_transfers.transfers.extend(transfer_to_pb(e) for e in events)
    envelope = signed_envelope(member, body, key_id)
    return Tx(member, operation, events, envelope, hashlib.sha256(envelope).digest(), key_id)


def accounts_tx(*events: Account, member: str = MEMBER, nonce: int | None = None) -> Tx:
    return make_tx(member, Operation.create_accounts, events, nonce=nonce)


def transfers_tx(*events: Transfer, member: str = MEMBER, nonce: int | None = None) -> Tx:
    return make_tx(member, Operation.create_transfers, events, nonce=nonce)


def entry(proposed_timestamp: int, *txs: Tx) -> Entry:
    return Entry(proposed_timestamp=proposed_timestamp, txs=tuple(txs))


class Ledger:
    """Drives the replica's StateMachine (apply_block + commit) over a store, one block per call.

    The leader clock starts at ``T0`` and advances 1 ms per block unless a test
    passes ``ts`` (a proposed timestamp) or calls :meth:`advance`.
    """

    def __init__(self, store=None, *, term: int = 1) -> None:
        self.store = store if store is not None else MemoryStore()
        self.machine = StateMachine(self.store, decode_envelope=decode_envelope, chain_id=CHAIN)
        self.term = term
        self.raft_index = 0
        self.clock = T0
        self.entries: list[Entry] = []
        self.writesets: list[WriteSet] = []

    def advance(self, seconds: float) -> None:
        self.clock += int(seconds * NS)

    def block(self, *txs: Tx, ts: int | None = None) -> list[TxResult]:
        if ts is None:
            self.clock += 1_000_000
            ts = self.clock
        e = entry(ts, *txs)
        self.raft_index += 1
        done = self.machine.apply(e, self.term, self.raft_index)
        self.entries.append(e)
        self.writesets.append(done.writeset)
        return done.results

    @property
    def ws(self) -> WriteSet:
        """The WriteSet of the last block."""
        return self.writesets[-1]

    def create_accounts(self, *events: Account, member: str = MEMBER) -> tuple[int, ...]:
        [r] = self.block(accounts_tx(*events, member=member))
        return r.codes

    def create_transfers(self, *events: Transfer, member: str = MEMBER) -> tuple[int, ...]:
        [r] = self.block(transfers_tx(*events, member=member))
        return r.codes

    def acct(self, account_id: int) -> Account:
        a = self.store.get_account(account_id)
        assert a is not None, f"account {account_id} does not exist"
        return a

    def balances(self, account_id: int) -> tuple[int, int, int, int]:
        """(debits_pending, debits_posted, credits_pending, credits_posted)."""
        a = self.acct(account_id)
        return a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted

    def status(self, transfer_id: int) -> PendingStatus:
        return self.store.get_pending_status(transfer_id)


def conservation(accounts: Iterable[Account]) -> dict[int, tuple[int, int, int, int]]:
    """Per ledger: (sum debits_pending, sum credits_pending, sum debits_posted, sum credits_posted)."""
    out: dict[int, list[int]] = {}
    for a in accounts:
        s = out.setdefault(a.ledger, [0, 0, 0, 0])
        s[0] += a.debits_pending
        s[1] += a.credits_pending
        s[2] += a.debits_posted
        s[3] += a.credits_posted
    return {k: tuple(v) for k, v in out.items()}


def assert_conserved(accounts: Iterable[Account]) -> None:
    """Design invariant 1: per ledger, debits equal credits, pending and posted alike."""
    for ledger, (dp, cp, dpo, cpo) in conservation(accounts).items():
        assert dp == cp, f"ledger {ledger}: pending debits {dp} != pending credits {cp}"
        assert dpo == cpo, f"ledger {ledger}: posted debits {dpo} != posted credits {cpo}"


def configuration(issuers: dict[int, Iterable[str]] | None = None, members: Iterable[str] = (MEMBER, OTHER)):
    """A governed Configuration (version 1) for a MemoryStore: ``members`` with role member
    and a dummy key, ``issuers`` {ledger: member ids} (default: none, so nobody issues)."""
    from raft_ledger_node.ledger.governance import Configuration, Member, MemberKey

    return Configuration(
        version=1,
        members=tuple(Member(m, ("member",), (MemberKey("k1", PUBLIC_KEY),)) for m in sorted(members)),
        issuers=tuple((lg, tuple(sorted(ids))) for lg, ids in sorted((issuers or {}).items())),
        admins=(),
        threshold=0,
        validators=(),
    )
