"""Red team: the permissioned ledger attacked through the real gRPC API (mutual TLS)
of a running 3-validator cluster, as a hostile member bank, a removed or suspended
identity, an administrator acting alone and an operator (issue 11 item 7).

One test per attack. Each docstring names the attack and the expected defence; each
test asserts the specific result code, rejection or status AND that nothing changed
(balances, flags, configuration version read back by an owner or the auditor, with
linearizable reads).

The genesis makes ``central-bank`` the only issuer of ledger 840; ledger 978 is issued
by nobody. Account and transfer ids are global (TigerBeetle's): that an id is taken
is revealed to everyone by ``exists_with_different_owner`` (it must be, or squatting
would succeed), so existence of an id is not a secret here; owners, balances, flags,
ledgers and fields of another member's records are.
"""
from __future__ import annotations

import itertools
import time

import pytest

from conftest import _start_port, running_cluster
from test_governance import _admin_key, _new_identity
from raft_ledger_client import Account, AccountFlags as AF, CreateAccountResult as AR, CreateTransferResult as TR
from raft_ledger_client import (
    InvalidRequest,
    PermissionDenied,
    QueryFilter,
    RetryPolicy,
    Transfer,
    TransactionRejected,
    TransferFlags as TF,
    TxRejection,
)
from raft_ledger_client import governance as gov
from raft_ledger_node.localcluster import member_client

pytestmark = pytest.mark.integration

USD, EUR = 840, 978
ISSUER, A, B = "central-bank", "bank-a", "bank-b"
FUNDS = 100
RETRY = RetryPolicy(deadline_s=20.0, attempt_timeout_s=10.0)
#: Width of each test's id range (accounts and transfers).
ID_RANGE = 1_000_000
_bases = itertools.count(ID_RANGE, ID_RANGE)
#: Central bank's issuing account on USD.
MINT = 1


@pytest.fixture(scope="module")
def red(tmp_path_factory):
    """(cluster, clients of central-bank, bank-a, bank-b, auditor) where only central-bank issues 840."""
    with running_cluster(str(tmp_path_factory.mktemp("red")), _start_port(), issuers={USD: [ISSUER]}) as c:
        clients = {m: c.client(m) for m in (ISSUER, A, B, "auditor")}
        [r] = clients[ISSUER].create_accounts([Account(id=MINT, ledger=USD, code=1)])
        assert r.result == AR.ok
        yield c, clients
        for cl in clients.values():
            cl.close()


@pytest.fixture
def bank(red):
    """A fresh id range: A owns base+1, B owns base+2 and base+3; base+1 and base+2 hold FUNDS."""
    c, cl = red
    base = next(_bases)
    assert [r.result for r in cl[A].create_accounts([Account(id=base + 1, ledger=USD, code=1)])] == [AR.ok]
    assert [r.result for r in cl[B].create_accounts([Account(id=base + i, ledger=USD, code=1) for i in (2, 3)])] == [AR.ok] * 2
    funding = [Transfer(id=base + i, debit_account_id=MINT, credit_account_id=base + i, amount=FUNDS, ledger=USD, code=1) for i in (1, 2)]
    assert [r.result for r in cl[ISSUER].create_transfers(funding)] == [TR.ok, TR.ok]
    return c, cl, base


def _bal(cl, account_id: int) -> tuple[int, int, int, int, int]:
    """(debits_pending, debits_posted, credits_pending, credits_posted, flags) read by the auditor."""
    [a] = cl["auditor"].lookup_accounts([account_id], linearizable=True)
    return a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, int(a.flags)


def _snapshot(cl, *ids: int):
    return [_bal(cl, i) for i in ids]


def _version(directory: str) -> int:
    with member_client(directory, "auditor", retry=RETRY) as c:
        return c.get_configuration(linearizable=True)["version"]


def _proposal(directory: str, changes, approvers=("admin-1", "admin-2"), *, chain_id: str | None = None, base=None):
    with member_client(directory, "operator", retry=RETRY) as op:
        p = gov.build_proposal(chain_id or op.chain_id, _version(directory) if base is None else base, changes)
    for a in approvers:
        p.approve(a, "k1", _admin_key(directory, a))
    return p


def _governed(directory: str, changes) -> int:
    with member_client(directory, "operator", retry=RETRY) as op:
        return op.submit_governance(_proposal(directory, changes))


def _onboard(c, cl, member: str, account_id: int, funds: int) -> None:
    """Add ``member`` (role member) by a 2-of-3 proposal; give it a funded USD account."""
    d = c.directory
    _, pub = _new_identity(d, member)
    _governed(d, [gov.add_member(member, roles=["member"], keys={"k1": pub})])
    with member_client(d, member, retry=RETRY) as m:
        assert [r.result for r in m.create_accounts([Account(id=account_id, ledger=USD, code=1)])] == [AR.ok]
    [r] = cl[ISSUER].create_transfers([Transfer(id=account_id, debit_account_id=MINT, credit_account_id=account_id, amount=funds,
                                                ledger=USD, code=1)])
    assert r.result == TR.ok


# -- (a) a hostile member bank --------------------------------------------------------


def test_balancing_credit_against_another_members_account_is_refused(bank):
    """Attack: A sends a ``balancing_credit`` transfer into an issuer's account: the
    ledger would clamp the amount to that account's net debit balance and record it in
    a transfer A reads back, i.e. A reads another member's balance through the write
    path. Defence: balancing against the credit side needs its owner (like closing it):
    ``credit_account_not_owned``, nothing moved."""
    c, cl, base = bank
    probe = base + 50
    assert [r.result for r in cl[ISSUER].create_accounts([Account(id=probe, ledger=USD, code=1)])] == [AR.ok]
    [r] = cl[ISSUER].create_transfers([Transfer(id=base + 51, debit_account_id=probe, credit_account_id=base + 1, amount=3,
                                                ledger=USD, code=1)])
    assert r.result == TR.ok
    before = _snapshot(cl, base + 1, probe)
    [r] = cl[A].create_transfers([Transfer(id=base + 52, debit_account_id=base + 1, credit_account_id=probe, amount=FUNDS,
                                           ledger=USD, code=1, flags=TF.BALANCING_CREDIT)])
    assert r.result == TR.credit_account_not_owned
    assert cl[A].lookup_transfers([base + 52], linearizable=True) == []
    assert _snapshot(cl, base + 1, probe) == before
    # A plain payment into the same account is still a payment.
    [r] = cl[A].create_transfers([Transfer(id=base + 53, debit_account_id=base + 1, credit_account_id=probe, amount=1,
                                           ledger=USD, code=1)])
    assert r.result == TR.ok


def test_balancing_debit_of_another_members_account_is_refused(bank):
    """Attack: A names B's account as the debit side of a ``balancing_debit`` transfer
    (drain B by B's own balance). Defence: ``debit_account_not_owned``, nothing moved."""
    c, cl, base = bank
    before = _snapshot(cl, base + 1, base + 2)
    [r] = cl[A].create_transfers([Transfer(id=base + 60, debit_account_id=base + 2, credit_account_id=base + 1, amount=10**20,
                                           ledger=USD, code=1, flags=TF.BALANCING_DEBIT)])
    assert r.result == TR.debit_account_not_owned
    assert _snapshot(cl, base + 1, base + 2) == before


def test_a_linked_chain_mixing_own_and_foreign_accounts_applies_nothing(bank):
    """Attack: a linked chain whose first transfer is A's own payment to B and whose
    second drains B's account back to A (hoping the chain's first success carries it).
    Defence: the foreign debit fails with ``debit_account_not_owned``, the chain rolls
    back (``linked_event_failed``), neither transfer exists."""
    c, cl, base = bank
    before = _snapshot(cl, base + 1, base + 2)
    chain = [
        Transfer(id=base + 70, debit_account_id=base + 1, credit_account_id=base + 2, amount=5, ledger=USD, code=1, flags=TF.LINKED),
        Transfer(id=base + 71, debit_account_id=base + 2, credit_account_id=base + 1, amount=50, ledger=USD, code=1),
    ]
    assert [r.result for r in cl[A].create_transfers(chain)] == [TR.linked_event_failed, TR.debit_account_not_owned]
    assert _snapshot(cl, base + 1, base + 2) == before
    assert cl["auditor"].lookup_transfers([base + 70, base + 71], linearizable=True) == []


def test_posting_another_members_settled_transfer_reveals_nothing_of_it(bank):
    """Attack: A "posts" B's transfers by guessed ids, to learn from the result code
    which of them are pending and which are settled (flags of another member's
    transfer). Defence: ownership comes before every state of the named transfer: a
    settled one answers ``debit_account_not_owned`` exactly as a pending one does;
    nothing changes."""
    c, cl, base = bank
    settled = Transfer(id=base + 80, debit_account_id=base + 2, credit_account_id=base + 3, amount=1, ledger=USD, code=1)
    pending = Transfer(id=base + 81, debit_account_id=base + 2, credit_account_id=base + 3, amount=1, ledger=USD, code=1, flags=TF.PENDING)
    assert [r.result for r in cl[B].create_transfers([settled, pending])] == [TR.ok, TR.ok]
    before = _snapshot(cl, base + 2, base + 3)
    codes = []
    for i, target in enumerate((settled.id, pending.id)):
        [r] = cl[A].create_transfers([Transfer(id=base + 82 + i, debit_account_id=0, credit_account_id=0, amount=0, ledger=0, code=0,
                                               flags=TF.POST_PENDING_TRANSFER, pending_id=target)])
        codes.append(r.result)
    assert codes == [TR.debit_account_not_owned, TR.debit_account_not_owned]
    assert _snapshot(cl, base + 2, base + 3) == before


def test_recreating_another_members_records_reveals_none_of_their_fields(bank):
    """Attack: A re-creates B's account and B's transfer under their ids with varied
    fields, reading which ``exists_with_different_*`` code comes back (ledger, flags,
    code, amount, accounts). Defence: every variant answers
    ``exists_with_different_owner`` first; B's records are unchanged."""
    c, cl, base = bank
    [r] = cl[B].create_transfers([Transfer(id=base + 90, debit_account_id=base + 2, credit_account_id=base + 3, amount=7, ledger=USD, code=1)])
    assert r.result == TR.ok
    before = _snapshot(cl, base + 2, base + 3)
    accounts = [Account(id=base + 2, ledger=USD, code=1), Account(id=base + 2, ledger=EUR, code=9),
                Account(id=base + 2, ledger=USD, code=1, flags=AF.HISTORY, user_data_64=5)]
    for acct in accounts:
        [r] = cl[A].create_accounts([acct])
        assert r.result == AR.exists_with_different_owner
    transfers = [Transfer(id=base + 90, debit_account_id=base + 1, credit_account_id=base + 3, amount=7, ledger=USD, code=1),
                 Transfer(id=base + 90, debit_account_id=base + 2, credit_account_id=base + 3, amount=8, ledger=USD, code=1),
                 Transfer(id=base + 90, debit_account_id=base + 1, credit_account_id=base + 2, amount=1, ledger=EUR, code=2, flags=TF.PENDING)]
    for t in transfers:
        [r] = cl[A].create_transfers([t])
        assert r.result == TR.exists_with_different_owner
    assert _snapshot(cl, base + 2, base + 3) == before
    [t] = cl[B].lookup_transfers([base + 90], linearizable=True)
    assert t.amount == 7


def test_a_member_cannot_mint_on_a_ledger_nobody_issues(bank):
    """Attack: A opens accounts on ledger 978, which no issuer covers, hoping an
    unissued ledger has no balance rule, and moves money out of nothing. Defence: every
    account of a non-issuer gets ``debits_must_not_exceed_credits`` from the ledger;
    the transfer is ``exceeds_credits``; the debit-only flag is reserved for issuers;
    nothing moves."""
    c, cl, base = bank
    src, dst = base + 100, base + 101
    assert [r.result for r in cl[A].create_accounts([Account(id=src, ledger=EUR, code=1)])] == [AR.ok]
    assert [r.result for r in cl[B].create_accounts([Account(id=dst, ledger=EUR, code=1)])] == [AR.ok]
    assert _bal(cl, src)[4] == int(AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    [r] = cl[A].create_transfers([Transfer(id=base + 102, debit_account_id=src, credit_account_id=dst, amount=1, ledger=EUR, code=1)])
    assert r.result == TR.exceeds_credits
    [r] = cl[A].create_accounts([Account(id=base + 103, ledger=EUR, code=1, flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS)])
    assert r.result == AR.credits_must_not_exceed_debits_reserved_for_issuer
    # The central bank issues 840 only: on 978 it is a member like any other.
    [r] = cl[ISSUER].create_accounts([Account(id=base + 104, ledger=EUR, code=1)])
    assert r.result == AR.ok and _bal(cl, base + 104)[4] == int(AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    assert _snapshot(cl, src, dst) == [(0, 0, 0, 0, int(AF.DEBITS_MUST_NOT_EXCEED_CREDITS))] * 2


def test_squatting_the_issuers_next_account_id_gains_no_issuing_power(bank):
    """Attack: A creates, first, the id the central bank is about to use for an issuing
    account, hoping to own an account the issuer then treats as its own and to debit it
    freely. Defence: the issuer's create answers ``exists_with_different_owner`` (not
    ``exists``); A's squatted account carries ``debits_must_not_exceed_credits`` and
    cannot mint (``exceeds_credits``)."""
    c, cl, base = bank
    squat = base + 110
    assert [r.result for r in cl[A].create_accounts([Account(id=squat, ledger=USD, code=7)])] == [AR.ok]
    [r] = cl[ISSUER].create_accounts([Account(id=squat, ledger=USD, code=7)])
    assert r.result == AR.exists_with_different_owner
    [r] = cl[A].create_transfers([Transfer(id=base + 111, debit_account_id=squat, credit_account_id=base + 2, amount=1, ledger=USD, code=1)])
    assert r.result == TR.exceeds_credits
    assert _bal(cl, squat) == (0, 0, 0, 0, int(AF.DEBITS_MUST_NOT_EXCEED_CREDITS))


def test_a_closing_transfer_locks_only_the_signers_own_account_and_expires(bank):
    """Attack: A closes its own account with a pending ``closing_debit`` to B (timeout
    1 s), then B tries to post it (keeping A's funds in flight) or A tries to keep its
    account closed past the timeout. Defence: the counterparty cannot post or void
    another member's pending transfer (``debit_account_not_owned``); while closed A's
    account refuses debits; the expiry voids it and reopens the account."""
    c, cl, base = bank
    [r] = cl[A].create_transfers([Transfer(id=base + 120, debit_account_id=base + 1, credit_account_id=base + 2, amount=10, ledger=USD,
                                           code=1, flags=TF.PENDING | TF.CLOSING_DEBIT, timeout=1)])
    assert r.result == TR.ok
    assert _bal(cl, base + 1)[4] & AF.CLOSED
    for i, flag in enumerate((TF.POST_PENDING_TRANSFER, TF.VOID_PENDING_TRANSFER)):
        [r] = cl[B].create_transfers([Transfer(id=base + 121 + i, debit_account_id=0, credit_account_id=0, amount=0, ledger=0, code=0,
                                               flags=flag, pending_id=base + 120)])
        assert r.result == TR.debit_account_not_owned
    [r] = cl[A].create_transfers([Transfer(id=base + 123, debit_account_id=base + 1, credit_account_id=base + 2, amount=1, ledger=USD, code=1)])
    assert r.result == TR.debit_account_already_closed
    time.sleep(1.5)
    # Expiry runs when a block is applied: any transaction makes one.
    assert [r.result for r in cl[B].create_accounts([Account(id=base + 124, ledger=USD, code=1)])] == [AR.ok]
    assert _bal(cl, base + 1) == (0, 0, 0, FUNDS, int(AF.DEBITS_MUST_NOT_EXCEED_CREDITS))
    assert _bal(cl, base + 2)[:4] == (0, 0, 0, FUNDS)


def test_a_query_cursor_does_not_reveal_another_members_rows(bank):
    """Attack: B tags a transfer with user_data_128 = X (an invoice id). A creates one
    transfer of its own with X, later, then queries user_data_128 = X, reversed, limit 1:
    A's row fills the page, and the cursor says whether the index holds any earlier row
    with X, whoever owns it. Defence expected: the cursor of A's page is the same
    whether or not another member has a row with X (0, or a cursor whose next page is
    empty either way)."""
    c, cl, base = bank
    tag_b, tag_none = base + 130, base + 131
    [r] = cl[B].create_transfers([Transfer(id=base + 132, debit_account_id=base + 2, credit_account_id=base + 3, amount=1, ledger=USD,
                                           code=1, user_data_128=tag_b)])
    assert r.result == TR.ok
    cursors = []
    for i, tag in enumerate((tag_b, tag_none)):
        [r] = cl[A].create_transfers([Transfer(id=base + 133 + i, debit_account_id=base + 1, credit_account_id=MINT, amount=1,
                                               ledger=USD, code=1, user_data_128=tag)])
        assert r.result == TR.ok
        page = cl[A].query_transfers(QueryFilter(user_data_128=tag, limit=1, reversed=True))
        assert [t.id for t in page] == [base + 133 + i]
        cursors.append(page.next_timestamp != 0)
    assert cursors[0] == cursors[1], f"cursor reveals B's row: {cursors}"
    # The next page after A's full page is empty either way (the cursor was not a peek).
    for i, tag in enumerate((tag_b, tag_none)):
        first = cl[A].query_transfers(QueryFilter(user_data_128=tag, limit=1, reversed=True))
        rest = cl[A].query_transfers(QueryFilter(user_data_128=tag, limit=1, reversed=True,
                                                  timestamp_max=first.next_timestamp))
        assert list(rest) == [] and rest.next_timestamp == 0


# -- (b) identities that are not (or no longer) members in good standing --------------


def test_a_removed_members_certificate_is_refused_and_its_id_never_returns(red):
    """Attack: a member removed by governance keeps its cluster-CA certificate and
    signing key and calls again; or asks to be re-added under the same id (inheriting
    its old accounts). Defence: PERMISSION_DENIED on reads and submits before any work;
    an add of a removed id is ``member_exists`` (ids are never reused)."""
    c, cl = red
    d = c.directory
    base = next(_bases)
    _onboard(c, cl, "bank-r", base + 1, 10)
    _governed(d, [gov.remove_member("bank-r")])
    with member_client(d, "bank-r", retry=RETRY) as r:
        with pytest.raises(PermissionDenied, match="removed"):
            r.lookup_accounts([base + 1])
        with pytest.raises(PermissionDenied):
            r.create_transfers([Transfer(id=base + 2, debit_account_id=base + 1, credit_account_id=MINT, amount=10, ledger=USD, code=1)])
    assert _bal(cl, base + 1)[:4] == (0, 0, 0, 10)
    v0 = _version(d)
    _, pub = _new_identity(d, "bank-r", key_id="k2")
    with member_client(d, "operator", retry=RETRY) as op, pytest.raises(TransactionRejected) as e:
        op.submit_governance(_proposal(d, [gov.add_member("bank-r", roles=["member"], keys={"k2": pub})]))
    assert e.value.rejection == TxRejection.member_exists
    assert _version(d) == v0


def test_a_suspended_members_pending_transfer_cannot_be_posted_by_the_counterparty_and_expires(red):
    """Attack: a member with a pending transfer to B is suspended; B posts it to collect
    the money the suspended member can no longer release. Defence: only the debit
    account's owner resolves a pending transfer (``debit_account_not_owned``), and the
    suspended member's own calls are PERMISSION_DENIED; its timeout still expires it
    (the ledger's clock, not the signer), returning the funds."""
    c, cl = red
    d = c.directory
    base = next(_bases)
    assert [r.result for r in cl[B].create_accounts([Account(id=base + 9, ledger=USD, code=1)])] == [AR.ok]
    _onboard(c, cl, "bank-s", base + 1, 20)
    with member_client(d, "bank-s", retry=RETRY) as s:
        [r] = s.create_transfers([Transfer(id=base + 2, debit_account_id=base + 1, credit_account_id=base + 9, amount=20, ledger=USD,
                                           code=1, flags=TF.PENDING, timeout=2)])
        assert r.result == TR.ok
    _governed(d, [gov.suspend_member("bank-s")])
    for i, flag in enumerate((TF.POST_PENDING_TRANSFER, TF.VOID_PENDING_TRANSFER)):
        [r] = cl[B].create_transfers([Transfer(id=base + 3 + i, debit_account_id=0, credit_account_id=0, amount=0, ledger=0, code=0,
                                               flags=flag, pending_id=base + 2)])
        assert r.result == TR.debit_account_not_owned
    with member_client(d, "bank-s", retry=RETRY) as s, pytest.raises(PermissionDenied, match="suspended"):
        s.create_transfers([Transfer(id=base + 5, debit_account_id=0, credit_account_id=0, amount=0, ledger=0, code=0,
                                     flags=TF.POST_PENDING_TRANSFER, pending_id=base + 2)])
    assert _bal(cl, base + 9)[:4] == (0, 0, 20, 0)
    time.sleep(2.5)
    assert [r.result for r in cl[B].create_accounts([Account(id=base + 10, ledger=USD, code=1)])] == [AR.ok]
    assert _bal(cl, base + 9)[:4] == (0, 0, 0, 0)
    assert _bal(cl, base + 1)[:4] == (0, 0, 0, 20)


# -- (c) an administrator acting alone, and governance replays -----------------------


def test_an_admin_alone_cannot_make_itself_sole_admin(red):
    """Attack: admin-1 proposes ``set_admins([admin-1], 1)`` with its own approval only.
    Defence: ``approvals_below_threshold``; the configuration keeps its version."""
    c, _ = red
    d = c.directory
    v0 = _version(d)
    p = _proposal(d, [gov.set_admins(["admin-1"], 1)], approvers=("admin-1",))
    with member_client(d, "admin-1", retry=RETRY) as adm, pytest.raises(TransactionRejected) as e:
        adm.submit_governance(p)
    assert e.value.rejection == TxRejection.approvals_below_threshold
    assert _version(d) == v0


def test_an_admin_has_no_member_powers(red):
    """Attack: an administrator (no roles) creates accounts or reads a bank's account.
    Defence: its Submit of accounts is PERMISSION_DENIED (role member needed) and its
    lookup answers as for a missing id."""
    c, cl = red
    base = next(_bases)
    assert [r.result for r in cl[B].create_accounts([Account(id=base + 1, ledger=USD, code=1)])] == [AR.ok]
    with member_client(c.directory, "admin-1", retry=RETRY) as adm:
        with pytest.raises(PermissionDenied):
            adm.create_accounts([Account(id=base + 2, ledger=USD, code=1)])
        assert adm.lookup_accounts([base + 1], linearizable=True) == []
    assert cl["auditor"].lookup_accounts([base + 2], linearizable=True) == []


def test_approvals_of_one_proposal_do_not_authorise_another(red):
    """Attack: take two admins' valid approvals of a harmless proposal and attach them to
    a different one (suspend bank-a). Defence: every approval is verified over the exact
    proposal bytes at apply: ``approval_signature_invalid``; nothing changes."""
    c, _ = red
    d = c.directory
    v0 = _version(d)
    harmless = _proposal(d, [gov.set_issuers(4242, [ISSUER])])
    hostile = _proposal(d, [gov.suspend_member(A)], approvers=())
    for a in harmless.approvals:
        hostile.approvals.append(a)
    with member_client(d, "operator", retry=RETRY) as op, pytest.raises(TransactionRejected) as e:
        op.submit_governance(hostile)
    assert e.value.rejection == TxRejection.approval_signature_invalid
    assert _version(d) == v0
    with member_client(d, "auditor", retry=RETRY) as au:
        [m] = [m for m in au.get_configuration()["members"] if m["id"] == A]
    assert m["status"] == "active"


def test_replaying_a_governance_transaction_applies_it_once(red):
    """Attack: resubmit an applied governance transaction, byte for byte (same hash),
    then re-wrapped in a fresh envelope (new hash, same co-signed proposal). Defence: the
    same bytes get the original answer (same hash and block, no new version); the fresh
    envelope is a stale proposal (its base version is gone): refused, no new version."""
    c, _ = red
    d = c.directory
    v0 = _version(d)
    p = _proposal(d, [gov.set_issuers(4243, [ISSUER])])
    with member_client(d, "operator", retry=RETRY) as op:
        signed = op.sign_governance(p)
        [first] = op.submit([signed])
        assert first.ok
        assert _version(d) == v0 + 1
        [again] = op.submit([signed])
        assert (again.tx_hash, again.height, again.rejection) == (first.tx_hash, first.height, TxRejection.none)
        assert _version(d) == v0 + 1
        fresh = op.sign_governance(p)
        assert fresh.body != signed.body or fresh.signature != signed.signature
        try:
            [r] = op.submit([fresh])
        except InvalidRequest as e:  # refused at the door: built on a version that is gone
            assert "version" in str(e)
        else:
            assert r.rejection == TxRejection.config_version_stale
    assert _version(d) == v0 + 1


def test_a_proposal_for_another_chain_is_refused(red):
    """Attack: replay admins' approvals of a proposal built for another chain (a test
    network with the same admins). Defence: the validator refuses it at the door
    (INVALID_ARGUMENT naming the chain); nothing changes."""
    c, _ = red
    d = c.directory
    v0 = _version(d)
    p = _proposal(d, [gov.suspend_member(A)], chain_id="some-other-chain")
    with member_client(d, "operator", retry=RETRY) as op, pytest.raises(InvalidRequest, match="chain"):
        op.submit_governance(p)
    assert _version(d) == v0


def test_a_governance_transaction_mixed_with_other_transactions_is_refused(red):
    """Attack: smuggle a co-signed governance transaction into one Submit with an
    ordinary transaction (to share its batch, its fate or its rate budget). Defence: the
    whole Submit is refused before anything is proposed; nothing changes."""
    c, cl = red
    d = c.directory
    v0 = _version(d)
    base = next(_bases)
    p = _proposal(d, [gov.set_issuers(4244, [ISSUER])])
    with member_client(d, "admin-1", retry=RETRY) as adm:
        signed = [adm.sign_governance(p), adm.sign_accounts([Account(id=base + 1, ledger=USD, code=1)])]
        with pytest.raises((InvalidRequest, PermissionDenied)):
            adm.submit(signed)
    assert _version(d) == v0
    assert cl["auditor"].lookup_accounts([base + 1], linearizable=True) == []


@pytest.mark.parametrize("changes,refusal", [
    ([gov.set_admins(["admin-1", "admin-2", "admin-3"], 0)], "threshold"),
    ([gov.set_admins(["admin-1", "admin-2", "admin-3"], 4)], "threshold"),
    ([gov.revoke_key(a, "k1") for a in ("admin-1", "admin-2", "admin-3")], TxRejection.admin_quorum_lost),
    ([gov.revoke_key("admin-1", "k1"), gov.revoke_key("admin-2", "k1")], TxRejection.admin_quorum_lost),
], ids=["threshold-0", "threshold-above-admins", "revoke-every-admin-key", "revoke-below-threshold"])
def test_governance_cannot_lock_itself_out(red, changes, refusal):
    """Attack (careless or hostile quorum): lower the threshold to 0 (anyone governs),
    raise it above the admins (nobody ever governs again), or revoke the admins' keys
    until fewer than ``threshold`` can sign. Defence: a threshold outside 1..admins is
    INVALID_ARGUMENT at the door; a change leaving fewer than ``threshold`` active
    admins with a usable key is ``admin_quorum_lost`` at apply; the configuration keeps
    its version and the admins keep governing."""
    c, _ = red
    d = c.directory
    v0 = _version(d)
    with member_client(d, "operator", retry=RETRY) as op:
        if isinstance(refusal, str):
            with pytest.raises(InvalidRequest, match=refusal):
                op.submit_governance(_proposal(d, changes))
        else:
            with pytest.raises(TransactionRejected) as e:
                op.submit_governance(_proposal(d, changes))
            assert e.value.rejection == refusal
    assert _version(d) == v0
    with member_client(d, "auditor", retry=RETRY) as au:
        cfg = au.get_configuration()
    assert cfg["threshold"] == 2 and all(k["revoked_at"] == 0 for m in cfg["members"] if m["id"].startswith("admin-") for k in m["keys"])


# -- (d) the auditor and the operator --------------------------------------------------


@pytest.mark.parametrize("identity", ["auditor", "operator"])
def test_auditor_and_operator_cannot_move_money(red, identity):
    """Attack: the auditor (reads everything) or the operator (runs the validators)
    creates an account or a transfer. Defence: Submit of accounts/transfers needs role
    ``member``: PERMISSION_DENIED; nothing created."""
    c, cl = red
    base = next(_bases)
    with member_client(c.directory, identity, retry=RETRY) as x:
        with pytest.raises(PermissionDenied):
            x.create_accounts([Account(id=base + 1, ledger=USD, code=1)])
        with pytest.raises(PermissionDenied):
            x.create_transfers([Transfer(id=base + 2, debit_account_id=MINT, credit_account_id=base + 1, amount=1, ledger=USD, code=1)])
    assert cl["auditor"].lookup_accounts([base + 1], linearizable=True) == []
    assert cl["auditor"].lookup_transfers([base + 2], linearizable=True) == []
