"""Reconcile an external statement (camt.053 or CSV) against one account's ledger
entries, and export an account's history as a camt.053 statement.

Sides. The *statement* is read by :mod:`raft_ledger_node.statements` (validated, then
streamed entry by entry). The *ledger* is read through the SDK as the member that owns
the account (``get_account_transfers`` pages, ``lookup_accounts``): a member
reconciles only what it may read, with its own mutual-TLS identity and nothing more.
Posted entries only: a single-phase transfer or a post of a pending one moves the
posted balance; a pending transfer and a void do not, and are not statement entries.
Amounts are signed minor units seen from the account holder: a transfer crediting the
account is +amount (camt.053 CRDT), one debiting it is -amount (DBIT); the balance is
credits_posted - debits_posted. A value date is the UTC date of the transfer's
timestamp (the leader's clock when it proposed the block).

Matching (streaming, bounded memory). Both sides are walked in date order and merged;
an entry waits in a *pending window* until its counterpart arrives or it is older than
``window_days`` behind the merge point, and is then reported missing. A statement
entry matches a ledger entry by reference: one of its numeric references (NtryRef,
AcctSvcrRef, TxDtls EndToEndId/TxId/InstrId/AcctSvcrRef, or the CSV reference) equals
the transfer's id or its non-zero user_data_128. A matched pair with different signed
amounts is an ``amount_mismatch``; with equal amounts and different dates a
``date_mismatch`` (only within the window: farther apart, both sides are reported
missing). A statement entry with no numeric reference is ``missing_in_ledger`` at once
(we do not guess by amount). Memory holds the pending window, never the history:
past ``pending_entries_max`` waiting entries, :class:`ReconcileError` (a statement out
of date order by more than the window, or a window too wide, would need more).

Balances. Statement side: opening (OPBD, else PRCD) + its entries = closing (CLBD),
less the entries valued after the period's end (forward-valued: PostFinance's published
sample books a credit valued the next day, which its CLBD leaves out and its FWAV
includes); ledger entries after the period are read (``window_days``) only to match
those, and an unmatched one belongs to the next statement, not to this report.
Ledger side: the opening is the sum of the account's posted entries before the period
(streamed from its first transfer); the closing is computed independently, as the
current posted balance (``lookup_accounts``) minus the posted entries after the period;
the check is opening + the period's entries = that closing. Then statement opening and
closing are compared with the ledger's. Reads are LOCAL reads of one validator; a
transfer committed while the closing is read is retried (``closing_reads_max``).

Source of the ISO 20022 semantics (balance codes OPBD/PRCD/CLBD, CRDT/DBIT, BOOK):
the camt.053 message definition report (BankToCustomerStatementV08) and its XSD.

Errors: :class:`ReconcileError` (and the statements' StatementError) for what cannot
be reconciled (another currency, no period, too much pending); the SDK's
``LedgerError`` tree for the ledger reads. Never click's exceptions.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

from raft_ledger_node.statements import (CURRENCIES, ExportEntry, StatementEntry, StatementError, StatementHeader,
                                         read_statement, write_camt053)

__all__ = ["KINDS", "LedgerEntry", "ReconcileError", "Report", "ReportItem", "export_statement", "ledger_entries",
           "reconcile", "reconcile_account"]

#: Days an unmatched entry waits for its counterpart before it is reported missing.
window_days_default = 3
#: Entries waiting in the window (both sides together) before reconciliation refuses.
pending_entries_max = 100_000
#: Transfers read per page from the ledger (the validator's query_limit_max is 8,190).
page_transfers_max = 1_000
#: Pages read in one walk of an account's history before giving up (10^8 transfers).
pages_max = 100_000
#: Report rows kept (discrepancies first come, then matched ones); the counts are exact.
report_items_max = 10_000
#: Attempts at reading the ledger's closing balance while transfers keep arriving.
closing_reads_max = 3

KINDS = ("matched", "amount_mismatch", "date_mismatch", "missing_in_ledger", "missing_in_statement")
_NS_PER_DAY = 86_400 * 10**9


class ReconcileError(Exception):
    """The statement cannot be reconciled against this account (currency, period, bounds)."""


@dataclass(frozen=True)
class LedgerEntry:
    """A posted transfer as the account sees it: signed minor units, ns timestamp, UTC date."""

    transfer_id: int
    user_data_128: int
    amount: int
    timestamp: int
    date: dt.date

    def keys(self) -> tuple[str, ...]:
        return (str(self.transfer_id),) + ((str(self.user_data_128),) if self.user_data_128 else ())


@dataclass(frozen=True)
class ReportItem:
    """One row of the report; absent sides are None. Amounts in signed minor units."""

    kind: str
    reference: str
    statement_amount: int | None = None
    statement_date: dt.date | None = None
    ledger_amount: int | None = None
    ledger_date: dt.date | None = None
    transfer_id: int | None = None


@dataclass
class Report:
    """The outcome: counts per kind (exact), rows (up to report_items_max), balances."""

    account_id: int = 0
    currency: str = ""
    scale: int = 2
    from_date: dt.date | None = None
    to_date: dt.date | None = None
    counts: dict = field(default_factory=lambda: {k: 0 for k in KINDS})
    items: list = field(default_factory=list)
    items_dropped: int = 0
    statement_opening: int | None = None
    statement_closing: int | None = None
    statement_entries_total: int = 0
    statement_forward_total: int = 0
    ledger_opening: int | None = None
    ledger_closing: int | None = None
    ledger_entries_total: int = 0
    ledger_forward_total: int = 0
    ledger_after_period: int = 0

    def add(self, item: ReportItem) -> None:
        self.counts[item.kind] += 1
        if len(self.items) < report_items_max:
            self.items.append(item)
        else:
            self.items_dropped += 1

    @property
    def statement_balanced(self) -> bool | None:
        """opening + entries == closing on the statement (None: a balance is missing)."""
        if self.statement_opening is None or self.statement_closing is None:
            return None
        return self.statement_opening + self.statement_entries_total - self.statement_forward_total == self.statement_closing

    @property
    def ledger_balanced(self) -> bool | None:
        if self.ledger_opening is None or self.ledger_closing is None:
            return None
        return self.ledger_opening + self.ledger_entries_total - self.ledger_forward_total == self.ledger_closing

    def _same(self, a, b) -> bool | None:
        return None if a is None or b is None else a == b

    @property
    def openings_agree(self) -> bool | None:
        return self._same(self.statement_opening, self.ledger_opening)

    @property
    def closings_agree(self) -> bool | None:
        return self._same(self.statement_closing, self.ledger_closing)

    @property
    def ok(self) -> bool:
        """Everything matched and every balance check that could be made passed."""
        checks = (self.statement_balanced, self.ledger_balanced, self.openings_agree, self.closings_agree)
        return self.counts["matched"] == sum(self.counts.values()) and all(c is not False for c in checks)

    def to_json(self) -> dict:
        def plain(v):
            return v.isoformat() if isinstance(v, dt.date) else v

        return {
            "account_id": str(self.account_id), "currency": self.currency, "scale": self.scale,
            "from": plain(self.from_date), "to": plain(self.to_date), "ok": self.ok, "counts": dict(self.counts),
            "balances": {
                "statement": {"opening": self.statement_opening, "entries": self.statement_entries_total,
                              "forward_valued": self.statement_forward_total, "closing": self.statement_closing,
                              "balanced": self.statement_balanced},
                "ledger": {"opening": self.ledger_opening, "entries": self.ledger_entries_total,
                           "forward_valued": self.ledger_forward_total, "closing": self.ledger_closing,
                           "balanced": self.ledger_balanced},
                "openings_agree": self.openings_agree, "closings_agree": self.closings_agree,
            },
            "items": [{k: plain(v) for k, v in asdict(i).items()} for i in self.items],
            "items_dropped": self.items_dropped,
        }


def _best(candidates, amount: int, date: dt.date):
    """The candidate agreeing most: same amount and date, then same amount, then the first."""
    return max(candidates, key=lambda c: (c.amount == amount) * 2 + (c.date == date)) if candidates else None


def reconcile(statement: Iterable[StatementEntry], ledger: Iterable[LedgerEntry], *,
              window_days: int = window_days_default, report: Report | None = None) -> Report:
    """Match ``statement`` entries with ``ledger`` entries (both in date order; see the
    module docstring) into ``report`` (a new one by default): the counts, the rows and
    the entries' totals. Balances are the caller's (they are not in the entries).
    Raises ReconcileError past ``pending_entries_max`` waiting entries."""
    report = report or Report()
    window = dt.timedelta(days=window_days)
    pend_s: dict[int, StatementEntry] = {}
    s_index: dict[str, list[int]] = {}
    pend_l: dict[int, LedgerEntry] = {}
    l_index: dict[str, int] = {}

    def pair(s: StatementEntry, l: LedgerEntry, ref: str) -> None:
        kind = "amount_mismatch" if s.amount != l.amount else "date_mismatch" if s.date != l.date else "matched"
        report.add(ReportItem(kind, ref, s.amount, s.date, l.amount, l.date, l.transfer_id))

    def drop_s(s: StatementEntry) -> None:
        del pend_s[s.index]
        for r in s.references:
            s_index[r].remove(s.index)
            if not s_index[r]:
                del s_index[r]

    def drop_l(l: LedgerEntry) -> None:
        del pend_l[l.transfer_id]
        for k in l.keys():
            if l_index.get(k) == l.transfer_id:
                del l_index[k]

    def after(d: dt.date) -> bool:
        return report.to_date is not None and d > report.to_date

    def on_statement(s: StatementEntry) -> None:
        report.statement_entries_total += s.amount
        if after(s.date):
            report.statement_forward_total += s.amount
        if not s.references:
            report.add(ReportItem("missing_in_ledger", s.raw_reference, s.amount, s.date))
            return
        found = [pend_l[l_index[r]] for r in s.references if r in l_index]
        l = _best(found, s.amount, s.date)
        if l is not None:
            drop_l(l)
            pair(s, l, next(r for r in s.references if r in l.keys()))
            return
        pend_s[s.index] = s
        for r in s.references:
            s_index.setdefault(r, []).append(s.index)

    def on_ledger(l: LedgerEntry) -> None:
        report.ledger_entries_total += l.amount
        if after(l.date):
            report.ledger_forward_total += l.amount
        found = [pend_s[i] for k in l.keys() for i in s_index.get(k, ())]
        s = _best(found, l.amount, l.date)
        if s is not None:
            drop_s(s)
            pair(s, l, next(r for r in s.references if r in l.keys()))
            return
        pend_l[l.transfer_id] = l
        for k in l.keys():
            l_index.setdefault(k, l.transfer_id)

    def expire(now: dt.date | None) -> None:
        while pend_s:
            s = next(iter(pend_s.values()))
            if now is not None and s.date >= now - window:
                break
            drop_s(s)
            report.add(ReportItem("missing_in_ledger", s.raw_reference, s.amount, s.date))
        while pend_l:
            l = next(iter(pend_l.values()))
            if now is not None and l.date >= now - window:
                break
            drop_l(l)
            if after(l.date):  # read only to match a forward-valued statement entry: the next period's
                report.ledger_after_period += 1
                continue
            report.add(ReportItem("missing_in_statement", str(l.transfer_id), None, None, l.amount, l.date,
                                  l.transfer_id))

    s_it, l_it = iter(statement), iter(ledger)
    s_next, l_next = next(s_it, None), next(l_it, None)
    while s_next is not None or l_next is not None:
        if l_next is None or (s_next is not None and s_next.date <= l_next.date):
            expire(s_next.date)
            on_statement(s_next)
            s_next = next(s_it, None)
        else:
            expire(l_next.date)
            on_ledger(l_next)
            l_next = next(l_it, None)
        if len(pend_s) + len(pend_l) > pending_entries_max:
            raise ReconcileError(f"more than {pending_entries_max} entries wait for a counterpart: the statement is "
                                 f"out of date order or the window ({window_days} days) is too wide")
    expire(None)
    return report


# -- the ledger side, through the SDK -----------------------------------------------------

def _utc_date(ns: int) -> dt.date:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).date()


def _day_start_ns(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days * _NS_PER_DAY


def ledger_entries(client, account_id: int, timestamp_min: int = 0, timestamp_max: int = 0) -> Iterator[LedgerEntry]:
    """The account's posted entries with timestamp_min <= timestamp <= timestamp_max
    (ns; 0 = unbounded), oldest first, a page of ``page_transfers_max`` at a time."""
    from raft_ledger_client import AccountFilter, TransferFlags

    skip = TransferFlags.PENDING | TransferFlags.VOID_PENDING_TRANSFER
    cursor = timestamp_min
    for _ in range(pages_max):
        page = client.get_account_transfers(AccountFilter(account_id=account_id, timestamp_min=cursor,
                                                          timestamp_max=timestamp_max, limit=page_transfers_max))
        for t in page.items:
            if t.flags & skip:
                continue
            sign = 1 if t.credit_account_id == account_id else -1
            yield LedgerEntry(t.id, t.user_data_128, sign * t.amount, t.timestamp, _utc_date(t.timestamp))
        if not page.next_timestamp:
            return
        cursor = page.next_timestamp
    raise ReconcileError(f"account {account_id}: more than {pages_max} pages of history")


def _sum(entries: Iterable[LedgerEntry]) -> tuple[int, int]:
    total, last = 0, 0
    for e in entries:
        total, last = total + e.amount, max(last, e.timestamp)
    return total, last


def _account(client, account_id: int):
    [account] = client.lookup_accounts([account_id]) or [None]
    if account is None:
        raise ReconcileError(f"account {account_id} not found (or not yours)")
    return account


def ledger_balances(client, account_id: int, from_date: dt.date, to_date: dt.date) -> tuple[int, int]:
    """(balance before ``from_date``, balance after ``to_date``) in signed minor units:
    the first summed from the account's start, the second as the current balance less
    the entries after the period (see the module docstring)."""
    start, end = _day_start_ns(from_date), _day_start_ns(to_date + dt.timedelta(days=1))
    opening, _ = _sum(ledger_entries(client, account_id, 0, start - 1))
    for _ in range(closing_reads_max):
        after, last = _sum(ledger_entries(client, account_id, end, 0))
        a = _account(client, account_id)
        newer, _ = _sum(ledger_entries(client, account_id, max(end, last + 1), 0))
        if newer == 0:
            return opening, (a.credits_posted - a.debits_posted) - after
    raise ReconcileError(f"account {account_id}: transfers kept arriving after the period while its closing balance "
                         f"was read ({closing_reads_max} attempts)")


def _currency(client, account_id: int) -> tuple[str, int]:
    ledger = _account(client, account_id).ledger
    if ledger not in CURRENCIES:
        raise ReconcileError(f"ledger {ledger} has no known currency (known: {sorted(CURRENCIES)})")
    return CURRENCIES[ledger]


def period_of(header: StatementHeader) -> tuple[dt.date | None, dt.date | None]:
    """The period the balances speak of: from the OPBD's date (or the day after a PRCD's),
    to the CLBD's date; FrToDt only when a balance is absent. Balances first because a
    published sample (PostFinance's) has FrToDt 2020-06-24 on a statement whose balances
    and entries are of 2020-11-24."""
    o, p, c = header.balance("OPBD"), header.balance("PRCD"), header.balance("CLBD")
    start = o.date if o and o.date else (p.date + dt.timedelta(days=1)) if p and p.date else header.from_date
    end = c.date if c and c.date else header.to_date
    return start, end


def reconcile_account(client, account_id: int, statement_path: str, *, from_date: dt.date | None = None,
                      to_date: dt.date | None = None, window_days: int = window_days_default) -> Report:
    """Reconcile the statement file at ``statement_path`` against ``account_id`` as the
    SDK ``client``'s member. The period is ``from_date``..``to_date`` (UTC dates,
    inclusive), else the statement's (:func:`period_of`). Raises ReconcileError, StatementError."""
    currency, scale = _currency(client, account_id)
    header, entries = read_statement(statement_path, scale)
    if header.currency and header.currency != currency:
        raise ReconcileError(f"the statement is in {header.currency}; account {account_id} is in {currency}")
    opening, closing = header.balance("OPBD", "PRCD"), header.balance("CLBD")
    from_date = from_date or period_of(header)[0]
    to_date = to_date or period_of(header)[1]
    if from_date is None or to_date is None:
        raise ReconcileError("the statement gives no period: pass --from and --to")
    if to_date < from_date:
        raise ReconcileError(f"the period ends ({to_date}) before it starts ({from_date})")
    report = Report(account_id=account_id, currency=currency, scale=scale, from_date=from_date, to_date=to_date,
                    statement_opening=opening.amount if opening else None,
                    statement_closing=closing.amount if closing else None)
    report.ledger_opening, report.ledger_closing = ledger_balances(client, account_id, from_date, to_date)
    start, end = _day_start_ns(from_date), _day_start_ns(to_date + dt.timedelta(days=1))
    # Read window_days past the period: a statement entry valued after its closing date
    # (a forward value, as in the PostFinance sample) matches a transfer of the next days.
    lookahead = _day_start_ns(to_date + dt.timedelta(days=1 + window_days))
    return reconcile(entries, ledger_entries(client, account_id, start, lookahead - 1), window_days=window_days,
                     report=report)


def export_statement(client, account_id: int, from_date: dt.date, to_date: dt.date, out, *,
                     now: dt.datetime | None = None) -> dict:
    """Write ``account_id``'s posted entries from ``from_date`` to ``to_date`` (UTC,
    inclusive) as a camt.053.001.08 statement to the text stream ``out`` (validated
    against the official XSD first). Returns {"entries", "opening", "closing",
    "currency"} (signed minor units). ``now`` (the creation time written) is passed in
    for tests; default: the current UTC time."""
    if to_date < from_date:
        raise ReconcileError(f"the period ends ({to_date}) before it starts ({from_date})")
    currency, scale = _currency(client, account_id)
    start, end = _day_start_ns(from_date), _day_start_ns(to_date + dt.timedelta(days=1))
    opening, _ = _sum(ledger_entries(client, account_id, 0, start - 1))
    period = [ExportEntry(e.transfer_id, e.amount, e.date, e.user_data_128)
              for e in ledger_entries(client, account_id, start, end - 1)]
    closing = opening + sum(e.amount for e in period)
    created = now or dt.datetime.now(dt.timezone.utc)
    n = write_camt053(out, statement_id=f"{account_id}-{from_date:%Y%m%d}-{to_date:%Y%m%d}", account=str(account_id),
                      currency=currency, scale=scale, from_date=from_date, to_date=to_date, opening=opening,
                      closing=closing, entries=period, created=created)
    return {"entries": n, "opening": opening, "closing": closing, "currency": currency}


__all__ += ["ledger_balances", "StatementError", "StatementHeader"]
