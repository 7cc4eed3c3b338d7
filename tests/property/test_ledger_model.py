"""Model-based test of the ledger core (Hypothesis RuleBasedStateMachine).

Random programs of account creation, transfers, pending/post/void, linked chains,
retries and the passing of time run against both the pure core
(``node.ledger.apply.apply_block`` over a MemoryStore) and :class:`Model`, a small
dict-based reading of TigerBeetle's reference docs (docs/reference/account.md,
transfer.md, requests/create_transfers.md), plus our ownership and issuance rules
(issue 11): an owner per account (``exists_with_different_owner``,
``debit_account_not_owned``), a transfer's creator is its debit account's owner
(``exists_with_different_owner`` for another member's id), failed ids recorded per
(member, id), and issuance under a governed configuration in which bank-a issues
both ledgers and bank-b none (bank-b's accounts always get
``debits_must_not_exceed_credits``; asking for ``credits_must_not_exceed_debits``
is ``credits_must_not_exceed_debits_reserved_for_issuer``). After every step:
results identical to the model, per-ledger conservation (debits = credits, posted
and pending), balance-limit flags never violated, non-issuers' accounts carry the
forced flag, the chain is continuous. At the end the same log, replayed into a
fresh store, gives the same block hashes.

Example count: ``LEDGER_MODEL_EXAMPLES`` (default 200 programs of up to 40 steps).
"""
from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from raft_ledger_node.ledger.apply import apply_block
from raft_ledger_node.ledger.governance import Configuration, Member, MemberKey
from raft_ledger_node.ledger.types import (
    Account,
    AccountFlags as AF,
    CreateAccountResult as AR,
    CreateTransferResult as TR,
    Entry,
    Operation,
    Transfer,
    TransferFlags as TF,
    Tx,
)
from raft_ledger_node.store_memory import MemoryStore

EXAMPLES = int(os.environ.get("LEDGER_MODEL_EXAMPLES", "200"))
NS = 1_000_000_000
MEMBERS = ("bank-a", "bank-b")
#: ledger -> its issuers: bank-a issues both ledgers, bank-b none.
ISSUERS = {840: ("bank-a",), 978: ("bank-a",)}
CONFIGURATION = Configuration(
    version=1,
    members=tuple(Member(m, ("member",), (MemberKey("k1", bytes(32)),)) for m in MEMBERS),
    issuers=tuple(sorted(ISSUERS.items())),
    admins=(),
    threshold=0,
    validators=(),
)
ACCOUNT_IDS = st.integers(1, 9)
TRANSFER_IDS = st.integers(1, 60)
LEDGERS = st.sampled_from([840, 978])
AMOUNTS = st.integers(0, 120)
LIMIT_FLAGS = st.sampled_from(
    [0, 0, AF.DEBITS_MUST_NOT_EXCEED_CREDITS, AF.CREDITS_MUST_NOT_EXCEED_DEBITS, AF.HISTORY,
     AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CREDITS_MUST_NOT_EXCEED_DEBITS]
)

_envelopes = itertools.count()


def make_tx(member: str, op: Operation, events) -> Tx:
    env = f"{member}/{next(_envelopes)}".encode()
    return Tx(member, op, tuple(events), env, hashlib.sha256(env).digest(), key_id="k1")


# -- the reference model ------------------------------------------------------------------


@dataclass
class MAccount:
    id: int
    ledger: int
    code: int
    flags: int
    owner: str
    dp: int = 0
    dpo: int = 0
    cp: int = 0
    cpo: int = 0


@dataclass
class MTransfer:
    id: int
    dr: int
    cr: int
    amount: int
    ledger: int
    code: int
    flags: int
    pending_id: int
    timeout: int
    ts: int


@dataclass
class Model:
    accounts: dict[int, MAccount] = field(default_factory=dict)
    transfers: dict[int, MTransfer] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)  # pending | posted | voided | expired
    failed: set[tuple[str, int]] = field(default_factory=set)  # (member, transfer id)
    last_ts: int = 0

    def block(self, proposed: int, n_events: int) -> int:
        ts = max(proposed, self.last_ts + n_events + 1)
        for tid, s in list(self.status.items()):
            p = self.transfers[tid]
            if s == "pending" and p.timeout and p.ts + p.timeout * NS <= ts:
                self.status[tid] = "expired"
                self.accounts[p.dr].dp -= p.amount
                self.accounts[p.cr].cp -= p.amount
        self.last_ts = ts
        return ts - n_events  # first event timestamp

    def create_account(self, a: Account, member: str) -> AR:
        issuer = member in ISSUERS.get(a.ledger, ())
        flags = a.flags if issuer else a.flags | AF.DEBITS_MUST_NOT_EXCEED_CREDITS
        e = self.accounts.get(a.id)
        if e is not None:
            if e.owner != member:
                return AR.exists_with_different_owner
            if e.flags != flags & ~AF.LINKED:
                return AR.exists_with_different_flags
            if e.ledger != a.ledger:
                return AR.exists_with_different_ledger
            if e.code != a.code:
                return AR.exists_with_different_code
            return AR.exists
        if a.flags & AF.DEBITS_MUST_NOT_EXCEED_CREDITS and a.flags & AF.CREDITS_MUST_NOT_EXCEED_DEBITS:
            return AR.flags_are_mutually_exclusive
        if not issuer and a.flags & AF.CREDITS_MUST_NOT_EXCEED_DEBITS:
            return AR.credits_must_not_exceed_debits_reserved_for_issuer
        self.accounts[a.id] = MAccount(a.id, a.ledger, a.code, flags & ~AF.LINKED, member)
        return AR.ok

    def create_transfer(self, t: Transfer, member: str, ts: int) -> TR:
        e = self.transfers.get(t.id)
        if e is not None:
            resolve = t.flags & (TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER)
            if self.accounts[e.dr].owner != member:  # only its debit account's owner created it
                return TR.exists_with_different_owner
            if e.flags != t.flags & ~TF.LINKED:
                return TR.exists_with_different_flags
            if e.pending_id != t.pending_id:
                return TR.exists_with_different_pending_id
            if e.timeout != t.timeout:
                return TR.exists_with_different_timeout
            if (t.debit_account_id or not resolve) and e.dr != t.debit_account_id:
                return TR.exists_with_different_debit_account_id
            if (t.credit_account_id or not resolve) and e.cr != t.credit_account_id:
                return TR.exists_with_different_credit_account_id
            if resolve:
                # 0 stands for the pending amount (TigerBeetle post_or_void_pending_transfer_exists).
                full = self.transfers[t.pending_id].amount
                if e.amount != (t.amount or full):
                    return TR.exists_with_different_amount
            elif e.amount != t.amount:
                return TR.exists_with_different_amount
            if (t.ledger or not resolve) and e.ledger != t.ledger:
                return TR.exists_with_different_ledger
            return TR.exists
        if (member, t.id) in self.failed:
            return TR.id_already_failed
        if t.flags & (TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER):
            return self.resolve(t, member, ts)
        if t.debit_account_id == t.credit_account_id:
            return TR.accounts_must_be_different
        dr, cr = self.accounts.get(t.debit_account_id), self.accounts.get(t.credit_account_id)
        if dr is None:
            return self.fail(t, member, TR.debit_account_not_found)
        if cr is None:
            return self.fail(t, member, TR.credit_account_not_found)
        if dr.owner != member:
            return TR.debit_account_not_owned
        if dr.ledger != cr.ledger:
            return TR.accounts_must_have_the_same_ledger
        if t.ledger != dr.ledger:
            return TR.transfer_must_have_the_same_ledger_as_accounts
        amount = t.amount
        if dr.flags & AF.DEBITS_MUST_NOT_EXCEED_CREDITS and dr.dp + dr.dpo + amount > dr.cpo:
            return self.fail(t, member, TR.exceeds_credits)
        if cr.flags & AF.CREDITS_MUST_NOT_EXCEED_DEBITS and cr.cp + cr.cpo + amount > cr.dpo:
            return self.fail(t, member, TR.exceeds_debits)
        if t.flags & TF.PENDING:
            dr.dp += amount
            cr.cp += amount
            self.status[t.id] = "pending"
        else:
            dr.dpo += amount
            cr.cpo += amount
        self.transfers[t.id] = MTransfer(t.id, dr.id, cr.id, amount, t.ledger, t.code, t.flags & ~TF.LINKED, 0, t.timeout, ts)
        return TR.ok

    def fail(self, t: Transfer, member: str, code: TR) -> TR:
        self.failed.add((member, t.id))
        return code

    def resolve(self, t: Transfer, member: str, ts: int) -> TR:
        post = bool(t.flags & TF.POST_PENDING_TRANSFER)
        if t.pending_id == t.id:
            return TR.pending_id_must_be_different
        p = self.transfers.get(t.pending_id)
        if p is None:
            return self.fail(t, member, TR.pending_transfer_not_found)
        dr, cr = self.accounts[p.dr], self.accounts[p.cr]
        if dr.owner != member:
            return TR.debit_account_not_owned
        if not p.flags & TF.PENDING:
            return TR.pending_transfer_not_pending
        if t.amount > p.amount:
            return TR.exceeds_pending_transfer_amount
        if post:
            amount = p.amount if t.amount == 0 else t.amount
        else:
            if t.amount not in (0, p.amount):
                return TR.pending_transfer_has_different_amount
            amount = p.amount
        s = self.status[p.id]
        if s != "pending":
            return {"posted": TR.pending_transfer_already_posted, "voided": TR.pending_transfer_already_voided,
                    "expired": TR.pending_transfer_expired}[s]
        dr.dp -= p.amount
        cr.cp -= p.amount
        if post:
            dr.dpo += amount
            cr.cpo += amount
        self.status[p.id] = "posted" if post else "voided"
        self.transfers[t.id] = MTransfer(t.id, p.dr, p.cr, amount, p.ledger, p.code, t.flags & ~TF.LINKED, p.id, 0, ts)
        return TR.ok

    def apply_tx(self, tx: Tx, first_ts: int) -> tuple[int, ...]:
        """Linked chains: all or nothing; the failing event keeps its code, the rest linked_event_failed.

        An open chain (last event linked) runs like any chain and then fails at its last
        event with linked_event_chain_open (TigerBeetle state_machine.zig execute_create).
        """
        accounts = tx.operation == Operation.create_accounts
        R = AR if accounts else TR
        linked = AF.LINKED if accounts else TF.LINKED
        codes = [0] * len(tx.events)
        chains, cur = [], []
        for i, ev in enumerate(tx.events):
            cur.append(i)
            if not ev.flags & linked:
                chains.append(cur)
                cur = []
        open_chain = cur  # the last event is linked: TigerBeetle still applies the events before it
        if open_chain:
            chains.append(open_chain)
        for chain in chains:
            snapshot = _snapshot(self)
            for i in chain:
                ev = tx.events[i]
                if chain is open_chain and i == chain[-1]:
                    c = R.linked_event_chain_open
                else:
                    c = (self.create_account(ev, tx.member_id) if accounts
                         else self.create_transfer(ev, tx.member_id, first_ts + i))
                if c != R.ok:
                    failed_ids = set(self.failed)
                    _restore(self, snapshot)
                    self.failed = failed_ids  # a transient failure burns the id even in a failed chain
                    for k in chain:
                        codes[k] = R.linked_event_failed
                    codes[i] = c
                    if chain is open_chain:
                        codes[chain[-1]] = R.linked_event_chain_open
                    break
        return tuple(int(c) for c in codes)


def _snapshot(m: Model):
    import copy

    return copy.deepcopy((m.accounts, m.transfers, m.status, m.failed))


def _restore(m: Model, snap) -> None:
    m.accounts, m.transfers, m.status, m.failed = snap


# -- strategies -------------------------------------------------------------------------------


def _with_flags(t, flags: int):
    from dataclasses import replace

    return replace(t, flags=flags)


def _chain(draw, events, linked_flag):
    """Link some neighbours; now and then leave the last event linked (an open chain)."""
    out = []
    for i, ev in enumerate(events):
        last = i == len(events) - 1
        if (not last and draw(st.integers(0, 3)) == 0) or (last and draw(st.integers(0, 19)) == 0):
            ev = _with_flags(ev, ev.flags | linked_flag)
        out.append(ev)
    return out


@st.composite
def account_events(draw):
    n = draw(st.integers(1, 3))
    evs = [
        Account(id=draw(ACCOUNT_IDS), ledger=draw(LEDGERS), code=draw(st.sampled_from([1, 1, 2])), flags=draw(LIMIT_FLAGS))
        for _ in range(n)
    ]
    return _chain(draw, evs, AF.LINKED)


def transfer_events(model: "Model", member: str, next_id):
    """Mostly plausible transfers drawn from the model's state, with some deliberate misses."""

    @st.composite
    def strategy(draw):
        own = [a for a in model.accounts.values() if a.owner == member]
        pending = [tid for tid, s in model.status.items() if s == "pending"]
        n = draw(st.integers(1, 3))
        evs = []
        for _ in range(n):
            used = sorted(model.transfers) + sorted({tid for _, tid in model.failed})
            tid = draw(st.sampled_from(used)) if used and draw(st.integers(0, 9)) == 0 else next_id()
            kind = draw(st.sampled_from(["single", "single", "single", "pending", "post", "void"]))
            if kind in ("post", "void"):
                flag = TF.POST_PENDING_TRANSFER if kind == "post" else TF.VOID_PENDING_TRANSFER
                pid = draw(st.sampled_from(pending)) if pending and draw(st.integers(0, 4)) else draw(TRANSFER_IDS)
                evs.append(Transfer(id=tid, debit_account_id=0, credit_account_id=0, amount=draw(AMOUNTS),
                                    ledger=0, code=0, flags=flag, pending_id=pid))
                continue
            if own and draw(st.integers(0, 5)):
                dr = draw(st.sampled_from(own))
                same = [a.id for a in model.accounts.values() if a.ledger == dr.ledger and a.id != dr.id]
                cr = draw(st.sampled_from(same)) if same and draw(st.integers(0, 5)) else draw(ACCOUNT_IDS)
                dr_id, ledger = dr.id, dr.ledger if draw(st.integers(0, 9)) else draw(LEDGERS)
            else:
                dr_id, cr, ledger = draw(ACCOUNT_IDS), draw(ACCOUNT_IDS), draw(LEDGERS)
            pending_flag = kind == "pending"
            evs.append(Transfer(id=tid, debit_account_id=dr_id, credit_account_id=cr, amount=draw(AMOUNTS), ledger=ledger,
                                code=1, flags=TF.PENDING if pending_flag else 0,
                                timeout=draw(st.sampled_from([0, 1, 5])) if pending_flag else 0))
        return _chain(draw, evs, TF.LINKED)

    return strategy()


# -- the state machine ----------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.store = MemoryStore(CONFIGURATION)
        self.model = Model()
        self.now = 1_700_000_000 * NS
        self.index = 1
        self.log: list[tuple[Entry, int]] = []
        self.applied_txs: list[tuple[Tx, tuple[int, ...]]] = []
        self.transfer_id = 0
        # Every program starts with a few accounts per member, some with balance limits.
        for member, ids in (("bank-a", (1, 2, 3)), ("bank-b", (4, 5, 6))):
            events = [Account(id=i, ledger=840 if i % 3 else 978, code=1, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS if i in (2, 5) else 0) for i in ids]
            self._run(make_tx(member, Operation.create_accounts, events))

    def _block(self, txs: list[Tx]) -> list:
        entry = Entry(proposed_timestamp=self.now, txs=tuple(txs))
        self.index += 1
        prev = self.store.head()
        results, ws = apply_block(self.store, entry, 1, self.index)
        self.store.commit(ws, self.index)
        self.log.append((entry, self.index))
        assert self.store.head().header.prev_hash == prev.header.hash
        assert self.store.head().height == prev.height + 1
        return results

    def _run(self, tx: Tx):
        first = self.model.block(self.now, len(tx.events))
        expected = self.model.apply_tx(tx, first)
        [result] = self._block([tx])
        assert result.codes == expected, f"core {result.codes} != model {expected} for {tx.events}"
        self.applied_txs.append((tx, result.codes))

    @rule(member=st.sampled_from(MEMBERS), events=account_events())
    def create_accounts(self, member, events):
        self._run(make_tx(member, Operation.create_accounts, events))

    @rule(member=st.sampled_from(MEMBERS), data=st.data())
    def create_transfers(self, member, data):
        events = data.draw(transfer_events(self.model, member, self._next_id))
        self._run(make_tx(member, Operation.create_transfers, events))

    def _next_id(self) -> int:
        self.transfer_id += 1
        return self.transfer_id

    @rule(seconds=st.sampled_from([0, 1, 2, 6]))
    def time_passes(self, seconds):
        """An empty block after `seconds`: pending transfers expire by block time."""
        self.now += seconds * NS
        self.model.block(self.now, 0)
        self._block([])

    @precondition(lambda self: self.applied_txs)
    @rule(data=st.data())
    def retry_a_transaction(self, data):
        """Resubmitting an applied transaction returns its original result and changes nothing."""
        tx, codes = data.draw(st.sampled_from(self.applied_txs))
        before = dict(self.store.transfers)
        self.model.block(self.now, 0)
        [result] = self._block([tx])
        assert result.codes == codes
        assert self.store.transfers == before

    @invariant()
    def matches_model_balances(self):
        if not hasattr(self, "store"):
            return
        for aid, m in self.model.accounts.items():
            a = self.store.get_account(aid)
            assert a is not None
            assert (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted) == (m.dp, m.dpo, m.cp, m.cpo)
        assert set(self.store.accounts) == set(self.model.accounts)
        assert set(self.store.transfers) == set(self.model.transfers)

    @invariant()
    def conservation_per_ledger(self):
        if not hasattr(self, "store"):
            return
        totals: dict[int, list[int]] = {}
        for a in self.store.accounts.values():
            t = totals.setdefault(a.ledger, [0, 0, 0, 0])
            t[0] += a.debits_posted
            t[1] += a.credits_posted
            t[2] += a.debits_pending
            t[3] += a.credits_pending
        for ledger, (dpo, cpo, dp, cp) in totals.items():
            assert dpo == cpo, f"ledger {ledger}: posted debits {dpo} != credits {cpo}"
            assert dp == cp, f"ledger {ledger}: pending debits {dp} != credits {cp}"

    @invariant()
    def balance_limits_hold(self):
        if not hasattr(self, "store"):
            return
        for a in self.store.accounts.values():
            if a.flags & AF.DEBITS_MUST_NOT_EXCEED_CREDITS:
                assert a.debits_pending + a.debits_posted <= a.credits_posted
            if a.flags & AF.CREDITS_MUST_NOT_EXCEED_DEBITS:
                assert a.credits_pending + a.credits_posted <= a.debits_posted

    @invariant()
    def only_issuers_hold_accounts_that_may_carry_a_debit_balance(self):
        if not hasattr(self, "store"):
            return
        for a in self.store.accounts.values():
            if a.owner not in ISSUERS.get(a.ledger, ()):
                assert a.flags & AF.DEBITS_MUST_NOT_EXCEED_CREDITS and not a.flags & AF.CREDITS_MUST_NOT_EXCEED_DEBITS
                assert a.debits_pending + a.debits_posted <= a.credits_posted

    def teardown(self):
        if not hasattr(self, "store"):
            return
        replay = MemoryStore(CONFIGURATION)
        for entry, index in self.log:
            _, ws = apply_block(replay, entry, 1, index)
            replay.commit(ws, index)
            assert ws.header == self.store.blocks[ws.header.height][0]
        assert replay.head() == self.store.head()


LedgerMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerModel = LedgerMachine.TestCase
