"""The access table of the gRPC API (node/api/authz.py), method by method, and the
caller's view of rows. Through the real gRPC API: tests/integration/test_mtls.py and
test_authorised_reads.py."""
from __future__ import annotations

import pytest

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.api.authz import ANONYMOUS, ANY, LEDGER_METHODS, LEDGER_ROLE_METHODS, Caller, required_role
from raft_ledger_node.ledger.types import Account, Transfer


def test_every_ledger_method_of_the_contract_has_a_rule():
    # A new RPC must be added to the table consciously; until then it is refused (default deny).
    for m in pb.DESCRIPTOR.services_by_name["LedgerService"].methods:
        assert m.name in LEDGER_METHODS or m.name in LEDGER_ROLE_METHODS, f"no access rule for Ledger/{m.name}"
        assert required_role(f"/ledger.v1.LedgerService/{m.name}") == LEDGER_ROLE_METHODS.get(m.name, ANY)


@pytest.mark.parametrize("method, role", [
    ("/ledger.v1.AdminService/GetStatus", "operator"),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "operator"),
    ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "operator"),
    ("/grpc.health.v1.Health/Check", ANY),
    ("/ledger.v1.LedgerService/ExportAudit", "auditor"),
    ("/ledger.v1.LedgerService/NoSuchMethod", None),
    ("/other.Service/Call", None),
])
def test_required_roles(method, role):
    assert required_role(method) == role


def test_rows_a_caller_sees():
    mine, theirs = Account(id=1, ledger=840, code=1, owner="bank-a"), Account(id=2, ledger=840, code=1, owner="bank-b")
    accounts = {1: mine, 2: theirs}
    a = Caller("bank-a", frozenset({"member"}))
    auditor = Caller("auditor", frozenset({"auditor"}))
    assert a.sees_account(mine) and not a.sees_account(theirs)
    assert auditor.sees_account(theirs) and ANONYMOUS.sees_account(theirs)
    across = Transfer(id=9, debit_account_id=2, credit_account_id=1, amount=1, ledger=840, code=1)
    foreign = Transfer(id=10, debit_account_id=2, credit_account_id=2, amount=1, ledger=840, code=1)
    assert a.sees_transfer(across, accounts.get) and not a.sees_transfer(foreign, accounts.get)
    assert (a.owner_filter, auditor.owner_filter, ANONYMOUS.owner_filter) == ("bank-a", None, None)
    assert not a.has_role("operator") and ANONYMOUS.has_role("operator")
