"""Reconciliation of camt.053 and CSV statements against ledger entries (node/reconcile.py,
node/statements/): every outcome kind, the balance checks, the streaming window, the
camt.053.001.08 export validated against the official XSD, and the published samples
(tests/data/camt053/SOURCES.md). The ledger side is given as LedgerEntry values here;
tests/integration/test_reconcile_cli.py reads it from a running cluster."""
from __future__ import annotations

import datetime as dt
import io
import os

import pytest

from raft_ledger_node import reconcile as rc
from raft_ledger_node.statements import (ExportEntry, StatementError, read_camt053, read_csv, read_statement,
                                         validate_camt053, write_camt053)

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "camt053")
D = dt.date


def _le(tid, amount, day, ud=0):
    return rc.LedgerEntry(tid, ud, amount, 0, day)


def _camt(tmp_path, entries, opening=0, closing=None, name="s.xml"):
    closing = opening + sum(e.amount for e in entries) if closing is None else closing
    path = tmp_path / name
    with open(path, "w") as f:
        write_camt053(f, statement_id="S1", account="42", currency="USD", scale=2, from_date=D(2026, 3, 1),
                      to_date=D(2026, 3, 31), opening=opening, closing=closing, entries=entries,
                      created=dt.datetime(2026, 4, 1, tzinfo=dt.timezone.utc))
    return str(path)


def _run(path, ledger, ledger_opening=0, ledger_closing=None, window_days=3, to_date=None):
    header, entries = read_statement(path, 2)
    o, c = header.balance("OPBD", "PRCD"), header.balance("CLBD")
    ledger_closing = ledger_opening + sum(e.amount for e in ledger) if ledger_closing is None else ledger_closing
    report = rc.Report(statement_opening=o.amount if o else None, statement_closing=c.amount if c else None,
                       ledger_opening=ledger_opening, ledger_closing=ledger_closing, to_date=to_date)
    return rc.reconcile(entries, ledger, report=report, window_days=window_days)


def test_export_validates_and_round_trips_to_all_matched(tmp_path):
    entries = [ExportEntry(1001, 12_345, D(2026, 3, 2)), ExportEntry(1002, -500, D(2026, 3, 2), end_to_end_id=77),
               ExportEntry(2**127 + 5, 1, D(2026, 3, 30))]
    path = _camt(tmp_path, entries, opening=-250)
    assert validate_camt053(path) == "08"
    text = open(path).read()
    assert "<NtryRef>1001</NtryRef>" in text and '<Amt Ccy="USD">123.45</Amt>' in text
    assert "<EndToEndId>77</EndToEndId>" in text and "<Cd>OPBD</Cd>" in text
    header, it = read_camt053(path)
    assert header.currency == "USD" and header.account == "42"
    assert (header.from_date, header.to_date) == (D(2026, 3, 1), D(2026, 3, 31))
    assert header.balance("OPBD").amount == -250 and header.balance("CLBD").amount == -250 + 12_345 - 500 + 1
    ledger = [_le(1001, 12_345, D(2026, 3, 2)), _le(1002, -500, D(2026, 3, 2), ud=77), _le(2**127 + 5, 1, D(2026, 3, 30))]
    r = _run(path, ledger, ledger_opening=-250)
    assert r.counts == {"matched": 3, "amount_mismatch": 0, "date_mismatch": 0, "missing_in_ledger": 0,
                        "missing_in_statement": 0}
    assert r.statement_balanced and r.ledger_balanced and r.openings_agree and r.closings_agree and r.ok


def test_every_mismatch_kind(tmp_path):
    st = [ExportEntry(1, 100, D(2026, 3, 2)),      # matched
          ExportEntry(2, 200, D(2026, 3, 3)),      # amount mismatch (ledger 201)
          ExportEntry(3, -300, D(2026, 3, 4)),     # date mismatch (ledger a day later)
          ExportEntry(4, 400, D(2026, 3, 5)),      # missing in the ledger
          ExportEntry(6, 600, D(2026, 3, 10))]     # matched by user_data_128 (transfer 66)
    path = _camt(tmp_path, st)
    ledger = [_le(1, 100, D(2026, 3, 2)), _le(2, 201, D(2026, 3, 3)), _le(3, -300, D(2026, 3, 5)),
              _le(5, 500, D(2026, 3, 6)), _le(66, 600, D(2026, 3, 10), ud=6)]
    r = _run(path, ledger)
    assert r.counts == {"matched": 2, "amount_mismatch": 1, "date_mismatch": 1, "missing_in_ledger": 1,
                        "missing_in_statement": 1}
    by = {i.kind: i for i in r.items}
    assert (by["amount_mismatch"].statement_amount, by["amount_mismatch"].ledger_amount) == (200, 201)
    assert (by["date_mismatch"].statement_date, by["date_mismatch"].ledger_date) == (D(2026, 3, 4), D(2026, 3, 5))
    assert by["missing_in_ledger"].reference == "4" and by["missing_in_statement"].transfer_id == 5
    assert [i.transfer_id for i in r.items if i.kind == "matched"] == [1, 66]
    assert not r.ok and r.statement_balanced and r.ledger_balanced
    assert r.closings_agree is False  # 1300 on the statement, 1101 in the ledger
    j = r.to_json()
    assert j["ok"] is False and j["counts"]["date_mismatch"] == 1 and j["balances"]["ledger"]["closing"] == 1101


def test_balance_checks_catch_a_wrong_closing_on_either_side(tmp_path):
    path = _camt(tmp_path, [ExportEntry(1, 100, D(2026, 3, 2))], opening=1000, closing=1099)
    r = _run(path, [_le(1, 100, D(2026, 3, 2))], ledger_opening=1000, ledger_closing=1101)
    assert r.counts["matched"] == 1
    assert r.statement_balanced is False and r.ledger_balanced is False
    assert r.openings_agree is True and r.closings_agree is False and not r.ok


def test_outside_the_window_both_sides_are_missing(tmp_path):
    path = _camt(tmp_path, [ExportEntry(9, 100, D(2026, 3, 1))])
    r = _run(path, [_le(9, 100, D(2026, 3, 20))], window_days=3)
    assert r.counts["missing_in_ledger"] == 1 and r.counts["missing_in_statement"] == 1
    r = _run(path, [_le(9, 100, D(2026, 3, 20))], window_days=30)
    assert r.counts["date_mismatch"] == 1


def test_streaming_keeps_only_the_window(tmp_path, monkeypatch):
    # 5,000 entries a day apart: the window holds a few, never all of them.
    n = 5_000
    st = [rc.StatementEntry(i, 1, D(2000, 1, 1) + dt.timedelta(days=i), (str(i),), str(i), "BOOK") for i in range(n)]
    ledger = [_le(i, 1, D(2000, 1, 1) + dt.timedelta(days=i)) for i in range(n) if i % 2 == 0]
    monkeypatch.setattr(rc, "pending_entries_max", 10)
    r = rc.reconcile(iter(st), iter(ledger))
    assert r.counts["matched"] == n // 2 and r.counts["missing_in_ledger"] == n // 2
    # A statement whose unmatched entries pile up beyond the bound is refused, not buffered.
    same_day = [rc.StatementEntry(i, 1, D(2000, 1, 1), (str(i),), str(i), "BOOK") for i in range(20)]
    with pytest.raises(rc.ReconcileError, match="wait for a counterpart"):
        rc.reconcile(iter(same_day), iter([]))


def test_csv_decimal_and_minor_units(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("kind,date,amount,amount_minor,direction,reference\n"
                 "opening,2026-03-01,10.00,,CRDT,\n"
                 "entry,2026-03-02,1.23,,C,0001001\n"
                 ",2026-03-03,,250,debit,1002\n"
                 "entry,2026-03-03,0.50,,D,no-such-ref\n"
                 "closing,2026-03-31,8.23,,CRDT,\n")
    header, it = read_csv(str(p))
    assert header.balance("OPBD").amount == 1000 and header.balance("CLBD").amount == 823
    entries = list(it)
    assert [(e.amount, e.references) for e in entries] == [(123, ("1001",)), (-250, ("1002",)), (-50, ())]
    r = _run(str(p), [_le(1001, 123, D(2026, 3, 2)), _le(1002, -250, D(2026, 3, 3))], ledger_opening=1000)
    assert r.counts["matched"] == 2 and r.counts["missing_in_ledger"] == 1
    assert r.statement_balanced and r.closings_agree is False  # the ledger lacks the 0.50 debit
    p.write_text("date,amount,direction,reference\n2026-03-02,1.234,C,1\n")
    with pytest.raises(StatementError, match="more than 2 decimals"):
        list(read_csv(str(p))[1])


def test_an_invalid_camt053_is_refused_before_parsing(tmp_path):
    path = _camt(tmp_path, [ExportEntry(1, 100, D(2026, 3, 2))])
    text = open(path).read().replace("<CdtDbtInd>CRDT</CdtDbtInd>", "<CdtDbtInd>UP</CdtDbtInd>", 1)
    bad = tmp_path / "bad.xml"
    bad.write_text(text)
    with pytest.raises(StatementError, match="not a valid camt.053.001.08"):
        read_camt053(str(bad))
    other = tmp_path / "other.xml"
    other.write_text('<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"/>')
    with pytest.raises(StatementError, match="namespace"):
        validate_camt053(str(other))


def test_published_postfinance_sample_validates_parses_and_reconciles():
    """PostFinance (CH) camt.053.001.04 production-format sample, CHF (ledger 756)."""
    path = os.path.join(DATA, "postfinance-ch-camt.053.001.04.xml")
    assert validate_camt053(path) == "04"
    header, it = read_camt053(path)
    entries = list(it)
    assert header.account == "CH2909000000250094239" and header.currency == "CHF"
    assert header.balance("OPBD").amount == 21_199_319 and header.balance("CLBD").amount == 21_511_221
    assert header.statement_id == "20201124375204229003973"
    # Its FrToDt (2020-06-24) disagrees with its balances and entries (2020-11-24): the
    # period comes from the balances.
    assert (header.from_date, rc.period_of(header)) == (D(2020, 6, 24), (D(2020, 11, 24), D(2020, 11, 24)))
    end = rc.period_of(header)[1]
    # The CLBD leaves out the credit valued the next day (1537.00); the FWAV has it.
    [forward] = [e for e in entries if e.date > end]
    assert forward.amount == 153_700 and header.balance("FWAV").amount - header.balance("CLBD").amount == 153_700
    assert header.balance("OPBD").amount + sum(e.amount for e in entries) - forward.amount == 21_511_221
    # A ledger that booked the same entries, under the statement's numeric references
    # where it has one (an AcctSvcrRef "07582000303F0C7U" and an IBAN are not ids).
    ledger = sorted((_le(int(e.references[0]) if e.references else 9000 + e.index, e.amount, e.date) for e in entries),
                    key=lambda e: e.date)
    r = _run(path, ledger, ledger_opening=21_199_319, ledger_closing=21_511_221, to_date=end)
    assert r.counts["matched"] == 3 and r.counts["missing_in_ledger"] == 2 and r.counts["missing_in_statement"] == 2
    assert {i.reference for i in r.items if i.kind == "missing_in_ledger"} == {"07582000303F0C7U", "CH7730000001250094239"}
    assert r.statement_balanced and r.ledger_balanced and r.openings_agree and r.closings_agree
    assert r.statement_forward_total == 153_700
    # The same ledger one entry short, another one off by a centime.
    numeric = [e for e in ledger if not 9000 < e.transfer_id < 9010]
    ledger2 = numeric[1:]
    ledger2[0] = _le(ledger2[0].transfer_id, ledger2[0].amount + 1, ledger2[0].date)
    r = _run(path, ledger2, ledger_opening=21_199_319, to_date=end)
    assert r.counts["missing_in_ledger"] == 3 and r.counts["amount_mismatch"] == 1
    assert r.closings_agree is False and not r.ok


def test_published_fffs_sample_validates_and_its_references_are_not_ledger_ids():
    """Federation of Finnish Financial Services camt.053.001.02 sample, EUR: its
    references are alphanumeric, so against any ledger every entry is missing in it."""
    path = os.path.join(DATA, "fffs-fi-camt.053.001.02.xml")
    assert validate_camt053(path) == "02"
    header, it = read_camt053(path)
    entries = list(it)
    assert header.currency == "EUR" and header.account == "FI7433010001222090"
    assert header.balance("OPBD").amount == 1_000_000 and entries
    r = _run(path, [], ledger_opening=1_000_000)
    assert r.counts["missing_in_ledger"] == len(entries) and sum(r.counts.values()) == len(entries)
