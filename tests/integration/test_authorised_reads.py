"""Authorised reads through the real gRPC API over mutual TLS (issue 11, item 2).

A member reads its own accounts and the transfers and balances that touch them;
another member's account answers exactly as a missing one (same status, same
fields: compared here as whole response messages, the height aside); the
``auditor`` reads everything; the ``operator`` owns no account and sees none.
Access table: raft_ledger_node/api/authz.py.

Money comes from the issuer (``central-bank``, issuer of ledger 840 in generated
clusters): C (central-bank) -> A1 (bank-a), then A1 -> B1 (bank-b). Member accounts
carry ``debits_must_not_exceed_credits`` and ``history``.
"""
from __future__ import annotations

import grpc
import pytest

from raft_ledger_client import (
    Account,
    AccountFilter,
    AccountFlags as AF,
    CreateAccountResult as AR,
    CreateTransferResult as TR,
    QueryFilter,
    Transfer,
)
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
from raft_ledger_client.wire import u128

pytestmark = pytest.mark.integration

BASE = 93_000_000
C, A1, A2, B1 = BASE + 1, BASE + 2, BASE + 3, BASE + 4
MISSING = BASE + 99
T1, T2 = BASE + 11, BASE + 12  # C -> A1, A1 -> B1
CODE = 7  # only this module's accounts and transfers carry it


@pytest.fixture(scope="module")
def ledger(cluster_module):
    c = cluster_module
    member_flags = AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.HISTORY
    with c.client("central-bank") as cb, c.client("bank-a") as a, c.client("bank-b") as b:
        assert [r.result for r in cb.create_accounts([Account(id=C, ledger=840, code=CODE, flags=AF.HISTORY)])] == [AR.ok]
        assert {r.result for r in a.create_accounts([Account(id=A1, ledger=840, code=CODE, flags=member_flags),
                                                     Account(id=A2, ledger=840, code=CODE, flags=member_flags)])} == {AR.ok}
        assert [r.result for r in b.create_accounts([Account(id=B1, ledger=840, code=CODE, flags=member_flags)])] == [AR.ok]
        [r] = cb.create_transfers([Transfer(id=T1, debit_account_id=C, credit_account_id=A1, amount=100, ledger=840, code=CODE)])
        assert r.result is TR.ok
        [r] = a.create_transfers([Transfer(id=T2, debit_account_id=A1, credit_account_id=B1, amount=30, ledger=840, code=CODE)])
        assert r.result is TR.ok
        a.head(linearizable=True)
    return c


def _raw(c, identity: str, method: str, request):
    """The response of ``method`` from the leader as ``identity``, height cleared."""
    with c.channel(c.leader(), identity) as ch:
        resp = getattr(pb_grpc.LedgerServiceStub(ch), method)(request, timeout=10)
    resp.ClearField("height")
    return resp


def _lookup_accounts(ids):
    return pb.LookupAccountsRequest(ids=[u128(i) for i in ids], consistency=pb.READ_CONSISTENCY_LINEARIZABLE)


def test_a_member_looks_up_only_its_own_accounts(ledger):
    with ledger.client("bank-b") as b:
        assert [x.id for x in b.lookup_accounts([A1, A2, B1, C, MISSING], linearizable=True)] == [B1]
    with ledger.client("bank-a") as a:
        assert [x.id for x in a.lookup_accounts([A1, A2, B1, C], linearizable=True)] == [A1, A2]
    # Someone else's id and a missing id: the very same answer.
    assert _raw(ledger, "bank-b", "LookupAccounts", _lookup_accounts([A1])) == \
        _raw(ledger, "bank-b", "LookupAccounts", _lookup_accounts([MISSING]))


def test_a_member_looks_up_only_transfers_touching_its_accounts(ledger):
    with ledger.client("bank-b") as b:
        assert [t.id for t in b.lookup_transfers([T1, T2], linearizable=True)] == [T2]
    with ledger.client("bank-a") as a:
        assert [t.id for t in a.lookup_transfers([T1, T2], linearizable=True)] == [T1, T2]
    with ledger.client("central-bank") as cb:
        assert [t.id for t in cb.lookup_transfers([T1, T2], linearizable=True)] == [T1]
    req = lambda i: pb.LookupTransfersRequest(ids=[u128(i)])  # noqa: E731
    assert _raw(ledger, "bank-b", "LookupTransfers", req(T1)) == _raw(ledger, "bank-b", "LookupTransfers", req(MISSING))


def test_another_members_history_answers_as_a_missing_account(ledger):
    with ledger.client("bank-b") as b:
        assert b.get_account_transfers(AccountFilter(account_id=A1)).items == []
        assert b.get_account_balances(AccountFilter(account_id=A1)).items == []
        # Its own account shows the transfer that touched it, although A1 is bank-a's.
        assert [t.id for t in b.get_account_transfers(AccountFilter(account_id=B1)).items] == [T2]
        assert len(b.get_account_balances(AccountFilter(account_id=B1)).items) == 1
    for method, cls in (("GetAccountTransfers", pb.GetAccountTransfersRequest),
                        ("GetAccountBalances", pb.GetAccountBalancesRequest)):
        foreign = _raw(ledger, "bank-b", method, cls(filter=pb.AccountFilter(account_id=u128(A1), limit=10)))
        missing = _raw(ledger, "bank-b", method, cls(filter=pb.AccountFilter(account_id=u128(MISSING), limit=10)))
        assert foreign == missing
        # The refusal of a bad filter is the same too (validation comes first).
        codes = []
        for aid in (A1, MISSING):
            with ledger.channel(ledger.leader(), "bank-b") as ch:
                with pytest.raises(grpc.RpcError) as e:
                    getattr(pb_grpc.LedgerServiceStub(ch), method)(
                        cls(filter=pb.AccountFilter(account_id=u128(aid), timestamp_min=5, timestamp_max=4)), timeout=10)
            codes.append((e.value.code(), e.value.details()))
        assert codes[0] == codes[1]


def test_queries_are_filtered_by_owner(ledger):
    f = QueryFilter(code=CODE, limit=100)
    with ledger.client("bank-b") as b:
        assert [x.id for x in b.query_accounts(f).items] == [B1]
        assert [t.id for t in b.query_transfers(f).items] == [T2]
    with ledger.client("bank-a") as a:
        assert [x.id for x in a.query_accounts(f).items] == [A1, A2]
        assert [t.id for t in a.query_transfers(f).items] == [T1, T2]


def test_the_auditor_reads_everything(ledger):
    f = QueryFilter(code=CODE, limit=100)
    with ledger.client("auditor") as au:
        assert [x.id for x in au.lookup_accounts([C, A1, A2, B1], linearizable=True)] == [C, A1, A2, B1]
        assert [t.id for t in au.lookup_transfers([T1, T2])] == [T1, T2]
        assert [x.id for x in au.query_accounts(f).items] == [C, A1, A2, B1]
        assert [t.id for t in au.query_transfers(f).items] == [T1, T2]
        assert [t.id for t in au.get_account_transfers(AccountFilter(account_id=A1)).items] == [T1, T2]
        assert len(au.get_account_balances(AccountFilter(account_id=A1)).items) == 2


def test_the_operator_owns_nothing_and_sees_no_account(ledger):
    with ledger.client("operator") as op:
        assert op.lookup_accounts([C, A1, B1], linearizable=True) == []
        assert op.query_accounts(QueryFilter(code=CODE)).items == []
        assert op.head().height >= 1  # heads and blocks are open to every identity
