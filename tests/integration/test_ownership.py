"""Ownership rules and issuance through the real gRPC API of a running 3-validator cluster.

The four attacks of issue 11, tried as a member bank would, each refused with its
specific result code and nothing applied (balances and flags read back, by each
account's owner, with linearizable reads). The rules are ledger result codes,
documented deviations from TigerBeetle (node/ledger/types.py); the core's own tests
of the same rules are tests/unit/test_ownership_core.py.

The cluster's genesis makes ``central-bank`` the only issuer of ledger 840: the banks'
accounts get ``debits_must_not_exceed_credits`` from the ledger, and central-bank
funds them.
"""
from __future__ import annotations

import itertools

import pytest

from conftest import _start_port, running_cluster
from raft_ledger_client import Account, AccountFlags as AF, CreateAccountResult as AR, CreateTransferResult as TR
from raft_ledger_client import Transfer, TransferFlags as TF

pytestmark = pytest.mark.integration

USD = 840
ISSUER, A, B = "central-bank", "bank-a", "bank-b"
FUNDS = 100
#: Width of each test's id range (accounts and transfers).
ID_RANGE = 1_000_000
_bases = itertools.count(ID_RANGE, ID_RANGE)


@pytest.fixture(scope="module")
def owned(tmp_path_factory):
    """Clients of the issuer and both banks on a cluster where only central-bank issues 840."""
    with running_cluster(str(tmp_path_factory.mktemp("ownership")), _start_port(), issuers={USD: [ISSUER]}) as c:
        clients = {m: c.client(m) for m in (ISSUER, A, B)}
        [r] = clients[ISSUER].create_accounts([Account(id=1, ledger=USD, code=1)])
        assert r.result == AR.ok
        yield clients
        for cl in clients.values():
            cl.close()


@pytest.fixture
def bank(owned):
    """A fresh id range: A owns base+1, B owns base+2 and base+3; base+1 and base+2 hold FUNDS."""
    base = next(_bases)
    assert [r.result for r in owned[A].create_accounts([Account(id=base + 1, ledger=USD, code=1)])] == [AR.ok]
    assert [r.result for r in owned[B].create_accounts([Account(id=base + i, ledger=USD, code=1) for i in (2, 3)])] == [AR.ok] * 2
    funding = [Transfer(id=base + i, debit_account_id=1, credit_account_id=base + i, amount=FUNDS, ledger=USD, code=1) for i in (1, 2)]
    assert [r.result for r in owned[ISSUER].create_transfers(funding)] == [TR.ok, TR.ok]
    return owned, base


def _read(client, account_id: int) -> Account:
    [a] = client.lookup_accounts([account_id], linearizable=True)
    return a


def _balances(a: Account) -> tuple[int, int, int, int, int]:
    return a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, int(a.flags)


def test_squatting_an_account_id_answers_exists_with_different_owner(bank):
    c, base = bank
    squat = base + 2005
    assert [r.result for r in c[A].create_accounts([Account(id=squat, ledger=USD, code=1)])] == [AR.ok]
    # B's create of "its" account: never `exists` (which the SDK and CLI treat as success).
    [r] = c[B].create_accounts([Account(id=squat, ledger=USD, code=1)])
    assert r.result == AR.exists_with_different_owner and not r.ok
    assert _read(c[A], squat).owner == A
    # B's funds stay with B: it has no account to fund, and cannot move money out of A's.
    assert _balances(_read(c[B], base + 2)) == (0, 0, 0, FUNDS, int(AF.DEBITS_MUST_NOT_EXCEED_CREDITS))
    [r] = c[B].create_transfers([Transfer(id=base + 10, debit_account_id=squat, credit_account_id=base + 2, amount=1, ledger=USD, code=1)])
    assert r.result == TR.debit_account_not_owned


@pytest.mark.parametrize("timeout", [0, 3600])
def test_freezing_another_members_account_with_closing_credit_is_refused(bank, timeout):
    c, base = bank
    before = _balances(_read(c[B], base + 2))
    freeze = Transfer(id=base + 20, debit_account_id=base + 1, credit_account_id=base + 2, amount=0, ledger=USD, code=1,
                      flags=TF.PENDING | TF.CLOSING_CREDIT, timeout=timeout)
    [r] = c[A].create_transfers([freeze])
    assert r.result == TR.credit_account_not_owned
    after = _read(c[B], base + 2)
    assert _balances(after) == before and not after.flags & AF.CLOSED
    assert c[A].lookup_transfers([base + 20], linearizable=True) == []
    # B still moves its money.
    [r] = c[B].create_transfers([Transfer(id=base + 21, debit_account_id=base + 2, credit_account_id=base + 3, amount=5, ledger=USD, code=1)])
    assert r.result == TR.ok


def test_post_or_void_of_another_members_pending_transfer_is_refused(bank):
    c, base = bank
    [r] = c[B].create_transfers([Transfer(id=base + 30, debit_account_id=base + 2, credit_account_id=base + 1, amount=7, ledger=USD,
                                          code=1, flags=TF.PENDING | TF.CLOSING_DEBIT)])
    assert r.result == TR.ok
    before = _balances(_read(c[B], base + 2))
    for flag in (TF.POST_PENDING_TRANSFER, TF.VOID_PENDING_TRANSFER):
        [r] = c[A].create_transfers([Transfer(id=base + 31, debit_account_id=0, credit_account_id=0, amount=0, ledger=0, code=0,
                                              flags=flag, pending_id=base + 30)])
        assert r.result == TR.debit_account_not_owned
    assert _balances(_read(c[B], base + 2)) == before  # still pending, still closed by its owner


def test_minting_by_a_non_issuer_is_refused(bank):
    c, base = bank
    mint = base + 40
    assert [r.result for r in c[A].create_accounts([Account(id=mint, ledger=USD, code=1)])] == [AR.ok]
    # The ledger forced the flag; a retry of the same request is still `exists`.
    assert _read(c[A], mint).flags == AF.DEBITS_MUST_NOT_EXCEED_CREDITS
    assert [r.result for r in c[A].create_accounts([Account(id=mint, ledger=USD, code=1)])] == [AR.exists]
    before_b = _balances(_read(c[B], base + 2))
    # Saturation attempt: mint and push it into B's account.
    [r] = c[A].create_transfers([Transfer(id=base + 41, debit_account_id=mint, credit_account_id=base + 2, amount=10**30, ledger=USD, code=1)])
    assert r.result == TR.exceeds_credits
    assert _balances(_read(c[B], base + 2)) == before_b
    assert _balances(_read(c[A], mint)) == (0, 0, 0, 0, int(AF.DEBITS_MUST_NOT_EXCEED_CREDITS))
    # An account that may only carry a debit balance: reserved for issuers.
    [r] = c[A].create_accounts([Account(id=base + 42, ledger=USD, code=1, flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS)])
    assert r.result == AR.credits_must_not_exceed_debits_reserved_for_issuer
    assert c[A].lookup_accounts([base + 42], linearizable=True) == []
    # B can still be credited (no saturation).
    [r] = c[ISSUER].create_transfers([Transfer(id=base + 43, debit_account_id=1, credit_account_id=base + 2, amount=1, ledger=USD, code=1)])
    assert r.result == TR.ok


def test_burning_another_members_transfer_id_is_impossible(bank):
    c, base = bank
    tid = base + 70000
    # A's 70000 fails (more than its funds): A's id is burnt, for A only.
    [r] = c[A].create_transfers([Transfer(id=tid, debit_account_id=base + 1, credit_account_id=base + 2, amount=FUNDS + 1, ledger=USD, code=1)])
    assert r.result == TR.exceeds_credits
    [r] = c[A].create_transfers([Transfer(id=tid, debit_account_id=base + 1, credit_account_id=base + 2, amount=1, ledger=USD, code=1)])
    assert r.result == TR.id_already_failed
    # B's later 70000 succeeds.
    mine = Transfer(id=tid, debit_account_id=base + 2, credit_account_id=base + 3, amount=30, ledger=USD, code=1)
    [r] = c[B].create_transfers([mine])
    assert r.result == TR.ok
    assert _balances(_read(c[B], base + 3))[:4] == (0, 0, 0, 30)
    # Now A's 70000 is B's transfer: A learns only that the id is taken, never `exists`.
    before = _balances(_read(c[A], base + 1))
    [r] = c[A].create_transfers([mine])
    assert r.result == TR.exists_with_different_owner
    assert _balances(_read(c[A], base + 1)) == before
    [r] = c[B].create_transfers([mine])
    assert r.result == TR.exists
