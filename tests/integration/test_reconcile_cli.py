"""`ledger-validator member statement` and `member reconcile` against a running
3-validator mutual-TLS cluster, as a member bank would run them.

bank-a books single-phase transfers, a posted and a voided pending transfer on a USD
(ledger 840) account; the exported camt.053.001.08 validates against the official XSD
and reconciles with everything matched (exit 0). A CSV statement with a missing entry,
a wrong amount and an entry the ledger never saw reconciles with those discrepancies
(exit 1, --json). bank-b cannot reconcile bank-a's account.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from raft_ledger_client import Account, CreateAccountResult as AR, CreateTransferResult as TR, Transfer, TransferFlags
from raft_ledger_node.statements import read_camt053, validate_camt053

from conftest import running_cluster

pytestmark = pytest.mark.integration

CLI = os.path.join(os.path.dirname(sys.executable), "ledger-validator")
START_PORT = 48_000


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def reconcile_cluster(tmp_path):
    with running_cluster(str(tmp_path / "cluster"), START_PORT) as c:
        yield c


def test_export_then_reconcile_through_the_cli(reconcile_cluster, tmp_path):
    cluster = reconcile_cluster
    bank = cluster.client("bank-a")
    acct, other = 8_100_001, 8_100_002
    assert {r.result for r in bank.create_accounts([Account(id=acct, ledger=840, code=1),
                                                    Account(id=other, ledger=840, code=1)])} == {AR.ok}
    transfers = [
        Transfer(id=9_001, debit_account_id=other, credit_account_id=acct, amount=125_000, ledger=840, code=1),
        Transfer(id=9_002, debit_account_id=acct, credit_account_id=other, amount=4_999, ledger=840, code=1,
                 user_data_128=777_000_111),
        Transfer(id=9_003, debit_account_id=other, credit_account_id=acct, amount=20_000, ledger=840, code=1,
                 flags=TransferFlags.PENDING),
        Transfer(id=9_004, pending_id=9_003, amount=15_000, flags=TransferFlags.POST_PENDING_TRANSFER),
        Transfer(id=9_005, debit_account_id=acct, credit_account_id=other, amount=1_000, ledger=840, code=1,
                 flags=TransferFlags.PENDING),
        Transfer(id=9_006, pending_id=9_005, flags=TransferFlags.VOID_PENDING_TRANSFER),
        Transfer(id=9_007, debit_account_id=other, credit_account_id=acct, amount=1, ledger=840, code=1),
    ]
    for t in transfers:
        [r] = bank.create_transfers([t])
        assert r.result == TR.ok, (t.id, r.name)
    bank.close()
    today = dt.datetime.now(dt.timezone.utc).date()
    period = ["--from", str(today - dt.timedelta(days=1)), "--to", str(today + dt.timedelta(days=1))]
    conn = ["--cluster", cluster.directory, "--member", "bank-a"]

    out = tmp_path / "statement.xml"
    exported = _run("member", "statement", *conn, "--account", str(acct), *period, "--out", str(out), "--json")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    summary = json.loads(exported.stdout)
    # Posted: +1250.00, -49.99, +150.00 (the post of 200.00 pending), +0.01; the void moves nothing.
    assert summary == {"out": str(out), "entries": 4, "opening": 0, "closing": 125_000 - 4_999 + 15_000 + 1,
                       "currency": "USD"}
    assert validate_camt053(str(out)) == "08"
    header, entries = read_camt053(str(out))
    assert [(e.raw_reference, e.amount) for e in entries] == [("9001", 125_000), ("9002", -4_999), ("9004", 15_000),
                                                              ("9007", 1)]
    assert "<EndToEndId>777000111</EndToEndId>" in out.read_text()

    ok = _run("member", "reconcile", *conn, "--account", str(acct), "--statement", str(out))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "RECONCILED" in ok.stdout and "matched 4, amount_mismatch 0" in ok.stdout
    assert "1,350.02" in ok.stdout  # the closing balance, every digit
    print(ok.stdout)

    csv_path = tmp_path / "statement.csv"
    csv_path.write_text(
        "kind,date,amount,direction,reference\n"
        f"opening,{today},0.00,CRDT,\n"
        f"entry,{today},1250.00,CRDT,9001\n"
        f"entry,{today},49.99,DBIT,777000111\n"       # by user_data_128
        f"entry,{today},150.01,CRDT,9004\n"           # amount mismatch
        f"entry,{today},12.00,CRDT,424242\n"          # missing in the ledger
        f"closing,{today},1362.02,CRDT,\n")           # 9007 is missing in the statement
    bad = _run("member", "reconcile", *conn, "--account", str(acct), "--statement", str(csv_path), *period, "--json")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    report = json.loads(bad.stdout)
    assert report["counts"] == {"matched": 2, "amount_mismatch": 1, "date_mismatch": 0, "missing_in_ledger": 1,
                                "missing_in_statement": 1}
    assert report["balances"]["statement"]["balanced"] is True
    assert report["balances"]["ledger"]["balanced"] is True and report["balances"]["ledger"]["closing"] == 135_002
    assert report["balances"]["closings_agree"] is False and report["ok"] is False
    assert {(i["kind"], i["transfer_id"]) for i in report["items"]} >= {("amount_mismatch", 9004),
                                                                       ("missing_in_statement", 9007)}

    other_member = _run("member", "reconcile", "--cluster", cluster.directory, "--member", "bank-b",
                        "--account", str(acct), "--statement", str(out))
    assert other_member.returncode != 0 and "RECONCILED" not in other_member.stdout
    print(other_member.stderr)
