"""No well-formed entry is a poison pill: ``apply_block`` never raises, on any store, and agrees with itself.

A committed entry that makes apply raise kills every replica on every replay
(docs/shared style: TigerBeetle's "poison pill"; node/state_machine.py's failure
contract). So for any Entry that ``codec.encode_entry`` can encode — any Tx of any
member, any Account/Transfer values within their types' bounds (u128/u64/u32), any
flags, linked chains left open, posts and voids of existing and missing ids,
pending transfers that expire, duplicate transactions — and for any bytes that
``codec.decode_entry`` accepts:

* ``decode_entry`` raises only ``CodecError`` or returns a RawEntry (bytes → entry → bytes
  round-trips), and whatever its envelopes decode to (``tx_from_committed``) applies;
* ``apply_block`` does not raise, on a MemoryStore and on a RocksStore (real RocksDB);
* both give identical results and heads (determinism: same hash chain, same state hash);
* the stores' invariant checks on commit (``InvariantError``, node/ledger/invariants.py) never fire;
* per ledger, debits equal credits, pending and posted (design invariant 1).

Example count: ``LEDGER_POISON_EXAMPLES`` programs, default a quarter of
``LEDGER_MODEL_EXAMPLES`` (50 of its default 200: each program opens a real RocksDB,
about 0.15 s); the bytes tests get twice as many.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raft_ledger_node.ledger import codec, limits
from raft_ledger_node.ledger.apply import apply_block
from raft_ledger_node.api.validation import tx_from_committed
from raft_ledger_node.ledger.types import Account, Entry, Operation, RawEntry, Transfer, Tx
from raft_ledger_node.store import RocksStore
from raft_ledger_node.store_memory import MemoryStore

EXAMPLES = int(os.environ.get("LEDGER_POISON_EXAMPLES", int(os.environ.get("LEDGER_MODEL_EXAMPLES", "200")) // 4))
NS = 1_000_000_000
T0 = 1_704_067_200 * NS
U128, U64, U32 = limits.u128_max, limits.u64_max, limits.u32_max
MEMBERS = ("bank-a", "bank-b")

SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def _edges(top: int) -> list[int]:
    return [0, 1, 2, top - 1, top] + ([1 << 63, (1 << 64) - 1, 1 << 64] if top > (1 << 64) else [])


u128s = st.one_of(st.integers(0, 300), st.sampled_from(_edges(U128)), st.integers(0, U128))
u64s = st.one_of(st.integers(0, 300), st.sampled_from(_edges(U64)), st.integers(0, U64))
u32s = st.one_of(st.integers(0, 300), st.sampled_from(_edges(U32)), st.integers(0, U32))
#: Ids mostly from a small pool (so events meet existing records), sometimes anything.
ids = st.one_of(st.integers(1, 8), st.integers(1, 8), st.sampled_from([0, U128, U128 - 1, 1 << 64]), st.integers(0, U128))
ledgers = st.one_of(st.sampled_from([1, 1, 2]), u32s)
codes = st.one_of(st.just(1), u32s)
#: Any combination of the known flag bits, or any u32 at all.
account_flags = st.one_of(st.integers(0, (1 << 6) - 1), u32s)
transfer_flags = st.one_of(st.integers(0, (1 << 9) - 1), st.sampled_from([2, 4, 8, 2 | 1, 16, 32, 64 | 2, 128 | 2]), u32s)
members = st.one_of(st.sampled_from(MEMBERS), st.sampled_from(["", "x" * limits.member_id_bytes_max, "bänk"]), st.text(max_size=8))


def _rare(s, default=0):
    """Mostly ``default``, sometimes a value from ``s`` (fields the ledger owns or rarely set)."""
    return st.one_of(st.just(default), st.just(default), st.just(default), s)


accounts = st.builds(
    Account, id=ids, ledger=ledgers, code=codes, owner=_rare(st.text(max_size=6), ""), flags=account_flags,
    debits_pending=_rare(u128s), debits_posted=_rare(u128s), credits_pending=_rare(u128s), credits_posted=_rare(u128s),
    user_data_128=_rare(u128s), user_data_64=_rare(u64s), user_data_32=_rare(u32s), timestamp=_rare(u64s),
)
transfers = st.builds(
    Transfer, id=ids, debit_account_id=ids, credit_account_id=ids, amount=u128s, ledger=st.one_of(ledgers, st.just(0)),
    code=st.one_of(codes, st.just(0)), flags=transfer_flags, pending_id=st.one_of(st.just(0), ids),
    timeout=st.one_of(st.sampled_from([0, 0, 1, 2, 3600]), u32s), user_data_128=_rare(u128s), user_data_64=_rare(u64s),
    user_data_32=_rare(u32s), timestamp=_rare(u64s),
)


@st.composite
def txs(draw) -> Tx:
    # Governance transactions carry a proposal, not events: tests/unit/test_governance_apply.py.
    op = draw(st.sampled_from([Operation.create_accounts, Operation.create_transfers]))
    events = draw(st.lists(accounts if op == Operation.create_accounts else transfers, max_size=10))
    # Envelopes from a small set, so the same tx (a retry) recurs within and across blocks.
    envelope = draw(st.one_of(st.binary(max_size=3), st.binary(min_size=16, max_size=24)))
    return Tx(draw(members), op, tuple(events), envelope, hashlib.sha256(envelope).digest())


#: The leader's clock: mostly forward by up to 3 s (pendings with short timeouts expire),
#: sometimes behind the head (a new leader with a slower clock), any value below 2^63 ns.
clock_steps = st.one_of(st.integers(0, 3 * NS), st.integers(-10 * NS, 0), st.integers(0, 1 << 40))


def _prelude() -> Entry:
    """Accounts 1..8 of both members on ledgers 1 and 2, with and without limit and history flags."""
    flags = [0, 2, 4, 8, 0, 2 | 8, 4 | 8, 32]
    acc = [Account(id=i, ledger=1 if i <= 6 else 2, code=1, flags=flags[i - 1]) for i in range(1, 9)]
    env_a, env_b = b"prelude/a", b"prelude/b"
    return Entry(T0, (
        Tx("bank-a", Operation.create_accounts, tuple(acc[0:4] + acc[6:7]), env_a, hashlib.sha256(env_a).digest()),
        Tx("bank-b", Operation.create_accounts, tuple(acc[4:6] + acc[7:8]), env_b, hashlib.sha256(env_b).digest()),
    ))


@st.composite
def programs(draw) -> list[Entry]:
    out = [_prelude()]
    ts = T0
    for _ in range(draw(st.integers(1, 8))):
        ts = min(max(ts + draw(clock_steps), 0), (1 << 63) - 1)
        out.append(Entry(ts, tuple(draw(st.lists(txs(), max_size=5)))))
    return out


class TwoStores:
    """A MemoryStore and a RocksStore (real RocksDB in a temporary directory) fed the same entries."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="poison-pill-")
        self.mem = MemoryStore()
        self.rocks = RocksStore(os.path.join(self.dir, "db"))
        self.index = 0

    def close(self) -> None:
        self.rocks.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def apply(self, entry: Entry, term: int = 1):
        """Apply and commit on both; return the results. Raises whatever apply or commit raises."""
        self.index += 1
        out = []
        for store in (self.mem, self.rocks):
            results, ws = apply_block(store, entry, term, self.index)
            store.commit(ws, self.index)
            out.append((results, ws.head))
        (rm, hm), (rr, hr) = out
        assert rm == rr, "MemoryStore and RocksStore gave different results"
        assert hm == hr, "MemoryStore and RocksStore reached different heads"
        return rm


def assert_conserved(store: MemoryStore) -> None:
    sums: dict[int, list[int]] = {}
    for a in store.accounts.values():
        s = sums.setdefault(a.ledger, [0, 0, 0, 0])
        s[0] += a.debits_pending
        s[1] += a.credits_pending
        s[2] += a.debits_posted
        s[3] += a.credits_posted
    for ledger, (dp, cp, dpo, cpo) in sums.items():
        assert dp == cp and dpo == cpo, f"ledger {ledger}: debits {dp}/{dpo} != credits {cp}/{cpo}"


def _check_program(program: list[Entry]) -> None:
    stores = TwoStores()
    try:
        for entry in program:
            raw = codec.encode_entry(entry)
            assert codec.decode_entry(raw).envelopes == tuple(tx.envelope for tx in entry.txs)
            results = stores.apply(entry)
            assert len(results) == len(entry.txs)
            assert_conserved(stores.mem)
    finally:
        stores.close()


@SETTINGS
@given(programs())
def test_no_well_formed_entry_makes_apply_raise(program):
    _check_program(program)


def _decodes_or_codec_error(raw: bytes) -> RawEntry | None:
    try:
        return codec.decode_entry(raw)
    except codec.CodecError:
        return None


@settings(SETTINGS, max_examples=2 * EXAMPLES)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_decode_or_raise_codec_error(raw):
    entry = _decodes_or_codec_error(raw)
    if entry is not None:
        assert codec.encode_entry(entry) == raw


@st.composite
def mutated_entries(draw) -> bytes:
    """A valid encoded entry (a hostile one) with bytes flipped, inserted, deleted or truncated."""
    b = bytearray(codec.encode_entry(Entry(T0 + NS, tuple(draw(st.lists(txs(), min_size=1, max_size=3))))))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(b)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip" and pos < len(b):
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del b[pos : pos + draw(st.integers(1, 4))]
        elif op == "truncate":
            del b[pos:]
    return bytes(b)


@settings(SETTINGS, max_examples=2 * EXAMPLES)
@given(mutated_entries())
def test_whatever_decodes_from_mutated_bytes_applies(raw):
    """Flipped bytes in a Raft entry that still decode are a well-formed entry: apply must take it."""
    entry = _decodes_or_codec_error(raw)
    if entry is None:
        return
    # What every validator applies: the envelopes decoded by itself (mostly invalid here).
    txs = tuple(tx_from_committed(e, chain_id="poison-chain") for e in entry.envelopes)
    _check_program([_prelude(), Entry(entry.proposed_timestamp, txs)])


def test_a_block_after_a_head_at_the_u64_edge_applies():
    env = b"edge"
    one = Tx("bank-a", Operation.create_accounts, (Account(id=9, ledger=1, code=1),), env, hashlib.sha256(env).digest())
    stores = TwoStores()
    try:
        stores.apply(_prelude())
        stores.apply(Entry(U64, ()))  # applies: the head timestamp is now 2^64 - 1
        stores.apply(Entry(U64, (one,)))  # max(U64, U64 + 1 + 1) does not fit the header's u64
    finally:
        stores.close()
