"""External account statements: ISO 20022 camt.053 (read and write) and a simple CSV (read).

Formats and sources:

- camt.053 BankToCustomerStatement, versions 001.02, 001.04 and 001.08. The official
  XSDs (ISO 20022 message definitions, as published by ISO and copied by genkgo/camt,
  see tests/data/camt053/SOURCES.md) are in ``xsd/``; the models are pyiso20022's
  xsdata bindings of the same versions. A file is validated against its version's XSD
  with ``xmlschema`` (lazily: one element at a time) *before* anything is parsed;
  then every ``Bal`` and ``Ntry`` element is parsed on its own with xsdata as it is
  read (``ElementTree.iterparse``) and dropped, so memory is bounded by the largest
  entry, not by the statement. The schema puts ``Bal`` before ``Ntry`` in a ``Stmt``,
  so the balances are known before the first entry.
- CSV (RFC 4180, header row): ``date`` (YYYY-MM-DD), ``amount`` (decimal in the
  currency's unit, at most ``scale`` decimals) *or* ``amount_minor`` (integer minor
  units), ``direction`` (CRDT/DBIT, C/D, credit/debit), ``reference``; optional
  ``kind``: ``entry`` (default), ``opening`` or ``closing`` for the balances.

Amounts everywhere here are signed integers of minor units: credits (CRDT) positive,
debits (DBIT) negative, as the account holder sees them.

Errors: :class:`StatementError` for an unreadable, invalid or unsupported file (with
the first schema error and its path). Never ``click``'s exceptions.

Export (:func:`write_camt053`): camt.053.001.08, built with pyiso20022's models,
serialised by xsdata, and validated against the official XSD before it is written.
"""
from __future__ import annotations

import csv
import datetime as dt
import importlib
import io
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Iterator
from xml.etree import ElementTree as ET

__all__ = [
    "CURRENCIES", "Balance", "StatementEntry", "StatementError", "StatementHeader", "ExportEntry",
    "read_camt053", "read_csv", "read_statement", "validate_camt053", "write_camt053", "xsd_path",
]

_NS_PREFIX = "urn:iso:std:iso:20022:tech:xsd:camt.053.001."
#: camt.053 versions read: namespace suffix -> (pyiso20022 module, entry class, balance class).
_VERSIONS = {
    "02": ("pyiso20022.camt.camt_053_001_02", "ReportEntry2", "CashBalance3"),
    "04": ("pyiso20022.camt.camt_053_001_04", "ReportEntry4", "CashBalance3"),
    "08": ("pyiso20022.camt.camt_053_001_08", "ReportEntry10", "CashBalance8"),
}
EXPORT_VERSION = "08"

#: Ledger (ISO 4217 numeric code) -> (alphabetic code, minor-unit digits).
CURRENCIES = {840: ("USD", 2), 978: ("EUR", 2), 756: ("CHF", 2), 826: ("GBP", 2), 392: ("JPY", 0)}

#: Largest CSV line read (bytes): a longer one is refused, not buffered.
csv_line_bytes_max = 4096
#: Entries one exported statement may hold (the document is built in memory to be validated).
export_entries_max = 100_000
#: References kept per statement entry (NtryRef, AcctSvcrRef, and those of its TxDtls).
entry_references_max = 16


class StatementError(Exception):
    """The statement cannot be read: unreadable, invalid against its schema, unsupported."""


@dataclass(frozen=True)
class Balance:
    """A statement balance: ``code`` (OPBD, PRCD, CLBD, ...), signed minor units, date."""

    code: str
    amount: int
    date: dt.date | None


@dataclass(frozen=True)
class StatementHeader:
    """What a statement says before its entries: id, account, currency, period, balances."""

    statement_id: str
    account: str
    currency: str | None
    from_date: dt.date | None
    to_date: dt.date | None
    balances: tuple[Balance, ...]

    def balance(self, *codes: str) -> Balance | None:
        """The first balance whose code is among ``codes``, in the order given."""
        for code in codes:
            for b in self.balances:
                if b.code == code:
                    return b
        return None


@dataclass(frozen=True)
class StatementEntry:
    """One booked entry: signed minor units, value date (else booking date), references.

    ``references`` are the entry's numeric references normalised to decimal strings
    without leading zeros (the ledger's ids and user_data are integers); ``raw_reference``
    is the first reference as written, for the report."""

    index: int
    amount: int
    date: dt.date
    references: tuple[str, ...]
    raw_reference: str
    status: str


def xsd_path(version: str = EXPORT_VERSION) -> str:
    """Path of the official camt.053.001.<version> XSD shipped in this package."""
    return os.path.join(os.path.dirname(__file__), "xsd", f"camt.053.001.{version}.xsd")


_schemas: dict[str, object] = {}


def _schema(version: str):
    import xmlschema

    if version not in _schemas:
        _schemas[version] = xmlschema.XMLSchema(xsd_path(version))
    return _schemas[version]


def _version_of(path: str) -> str:
    try:
        for _, el in ET.iterparse(path, events=("start",)):
            ns = el.tag[1:].split("}", 1)[0] if el.tag.startswith("{") else ""
            break
        else:
            raise StatementError(f"{path}: empty XML document")
    except ET.ParseError as e:
        raise StatementError(f"{path}: not well-formed XML: {e}") from None
    if not ns.startswith(_NS_PREFIX) or ns[len(_NS_PREFIX):] not in _VERSIONS:
        raise StatementError(f"{path}: namespace {ns!r} is not camt.053.001.{{{','.join(_VERSIONS)}}}")
    return ns[len(_NS_PREFIX):]


def validate_camt053(path: str) -> str:
    """Validate ``path`` against its camt.053 version's official XSD, lazily (bounded
    memory). Returns the version ("02", "04", "08"); raises StatementError with the
    first schema error."""
    import xmlschema

    version = _version_of(path)
    try:
        for err in _schema(version).iter_errors(xmlschema.XMLResource(path, lazy=True)):
            raise StatementError(f"{path}: not a valid camt.053.001.{version}: {err.reason} at {err.path}")
    except xmlschema.XMLSchemaException as e:
        raise StatementError(f"{path}: {e}") from None
    return version


def to_minor(value: Decimal, scale: int, what: str = "amount") -> int:
    """``value`` (Decimal in the currency's unit) as integer minor units at ``scale``
    digits; raises StatementError if it has more decimals than that."""
    minor = value.scaleb(scale)
    if minor != minor.to_integral_value():
        raise StatementError(f"{what} {value} has more than {scale} decimals")
    return int(minor)


def _norm_ref(r: str | None) -> str | None:
    """A reference as a decimal string if it is a u128 in decimal or in ``0x`` hex (the
    export's spelling of ids longer than camt's 35 characters), else None."""
    r = (r or "").strip()
    try:
        v = int(r[2:], 16) if r[:2].lower() == "0x" and len(r) > 2 else int(r) if r.isdigit() else None
    except ValueError:
        return None
    return str(v) if v is not None and v < 2**128 else None


def ref_text(value: int) -> str:
    """A u128 as a camt reference (Max35Text): decimal when it fits, else ``0x`` + hex."""
    text = str(value)
    return text if len(text) <= 35 else f"0x{value:x}"


def _date(choice) -> dt.date | None:
    if choice is None:
        return None
    if getattr(choice, "dt", None) is not None:
        return choice.dt.to_date()
    if getattr(choice, "dt_tm", None) is not None:
        return choice.dt_tm.to_datetime().date()
    return None


def _code(x) -> str:
    """An enum, a plain code, or a Cd/Prtry choice, as its code string."""
    if x is None:
        return ""
    for attr in ("cd", "prtry"):
        if hasattr(x, attr) and getattr(x, attr) is not None:
            return _code(getattr(x, attr))
    return getattr(x, "value", x) if not isinstance(x, str) else x


def _signed(amt, ind, scale: int, what: str) -> int:
    minor = to_minor(amt.value, scale, what)
    return minor if _code(ind) == "CRDT" else -minor


def read_camt053(path: str, scale: int = 2) -> tuple[StatementHeader, Iterator[StatementEntry]]:
    """Validate, then stream a camt.053 file: its header (balances of its first Stmt,
    period, account, currency) and an iterator of its BOOKed entries in document order
    (entries of later Stmts follow; entries with another status are skipped).

    ``scale``: the ledger's minor-unit digits; an amount with more decimals raises
    StatementError while iterating."""
    from xsdata.formats.dataclass.parsers import XmlParser
    from xsdata.formats.dataclass.parsers.config import ParserConfig

    version = validate_camt053(path)
    modname, entry_name, bal_name = _VERSIONS[version]
    mod = importlib.import_module(modname)
    entry_cls, bal_cls = getattr(mod, entry_name), getattr(mod, bal_name)
    parser = XmlParser(config=ParserConfig(fail_on_unknown_properties=False))
    ns = "{" + _NS_PREFIX + version + "}"
    events = ET.iterparse(path, events=("start", "end"))
    balances: list[Balance] = []
    state = {"id": "", "acct": "", "ccy": None, "from": None, "to": None}
    path_stack: list[str] = []
    first_entry: ET.Element | None = None

    def local(tag: str) -> str:
        return tag[len(ns):] if tag.startswith(ns) else tag

    # Read up to the first Ntry (or the end): Stmt/Id, Acct, FrToDt, Bal are before it.
    for ev, el in events:
        name = local(el.tag)
        if ev == "start":
            path_stack.append(name)
            continue
        path_stack.pop()
        where = "/".join(path_stack[-2:])
        if name == "Ntry":
            first_entry = el
            break
        if name == "Bal" and path_stack[-1:] == ["Stmt"]:
            b = parser.from_bytes(ET.tostring(el), bal_cls)
            balances.append(Balance(_code(b.tp.cd_or_prtry), _signed(b.amt, b.cdt_dbt_ind, scale, "balance"), _date(b.dt)))
            if state["ccy"] is None:
                state["ccy"] = b.amt.ccy
            el.clear()
        elif name == "Id" and path_stack[-1:] == ["Stmt"] and not state["id"]:
            state["id"] = (el.text or "").strip()
        elif name in ("IBAN", "Id") and "Acct/Id" in "/".join(path_stack[-3:]) and not state["acct"]:
            state["acct"] = (el.text or "").strip()
        elif name == "Ccy" and where.endswith("Stmt/Acct"):
            state["ccy"] = (el.text or "").strip()
        elif name in ("FrDtTm", "ToDtTm") and path_stack[-1:] == ["FrToDt"]:
            state["from" if name == "FrDtTm" else "to"] = dt.date.fromisoformat((el.text or "")[:10])
        elif name == "Stmt":
            break  # a statement without entries
    header = StatementHeader(state["id"], state["acct"], state["ccy"], state["from"], state["to"], tuple(balances))

    def entries() -> Iterator[StatementEntry]:
        index = 0

        def one(el: ET.Element) -> StatementEntry | None:
            nonlocal index
            e = parser.from_bytes(ET.tostring(el), entry_cls)
            index += 1
            status = _code(e.sts)
            raw = [e.ntry_ref, e.acct_svcr_ref]
            for d in e.ntry_dtls:
                for tx in d.tx_dtls:
                    if tx.refs is not None:
                        raw += [tx.refs.end_to_end_id, tx.refs.tx_id, tx.refs.instr_id, tx.refs.acct_svcr_ref]
            raw = [r for r in raw if r][:entry_references_max]
            refs = tuple(dict.fromkeys(r for r in map(_norm_ref, raw) if r))
            date = _date(e.val_dt) or _date(e.bookg_dt)
            if date is None:
                raise StatementError(f"{path}: entry {index} has neither a value date nor a booking date")
            if status != "BOOK":
                return None
            return StatementEntry(index, _signed(e.amt, e.cdt_dbt_ind, scale, f"entry {index} amount"), date, refs,
                                  raw[0] if raw else "", status)

        if first_entry is not None:
            s = one(first_entry)
            first_entry.clear()
            if s is not None:
                yield s
        depth_in_ntry = 0
        for ev, el in events:
            name = local(el.tag)
            if ev == "start":
                depth_in_ntry += name == "Ntry"
                continue
            if name == "Ntry":
                depth_in_ntry -= 1
                s = one(el)
                el.clear()
                if s is not None:
                    yield s
            elif name in ("Stmt", "Bal") and not depth_in_ntry:
                el.clear()

    return header, entries()


_DIRECTIONS = {"CRDT": 1, "C": 1, "CREDIT": 1, "CR": 1, "DBIT": -1, "D": -1, "DEBIT": -1, "DR": -1}


def read_csv(path: str, scale: int = 2) -> tuple[StatementHeader, Iterator[StatementEntry]]:
    """Stream a CSV statement (format in the module docstring). The balance rows
    (``kind`` opening/closing) are read in a first pass over the file, the entries in a
    second, so both passes hold one row at a time. Raises StatementError on a bad row
    (with its line number) or a line longer than ``csv_line_bytes_max``."""

    def rows() -> Iterator[tuple[int, dict]]:
        with open(path, newline="", encoding="utf-8") as f:
            def lines():
                for n, line in enumerate(f, 1):
                    if len(line.encode()) > csv_line_bytes_max:
                        raise StatementError(f"{path}:{n}: line longer than {csv_line_bytes_max} bytes")
                    yield line
            reader = csv.DictReader(lines())
            need = {"date", "direction", "reference"}
            if reader.fieldnames is None or not need <= set(reader.fieldnames) or not (
                    {"amount", "amount_minor"} & set(reader.fieldnames)):
                raise StatementError(f"{path}: header must have date, amount or amount_minor, direction, reference; "
                                     f"has {reader.fieldnames}")
            for row in reader:
                yield reader.line_num, row

    def parse(n: int, row: dict) -> tuple[str, int, dt.date, str]:
        try:
            date = dt.date.fromisoformat((row.get("date") or "").strip())
            sign = _DIRECTIONS[(row.get("direction") or "").strip().upper()]
            if (row.get("amount_minor") or "").strip():
                minor = int(row["amount_minor"].strip())
            else:
                minor = to_minor(Decimal(row["amount"].strip()), scale, f"line {n} amount")
        except (ValueError, KeyError, InvalidOperation, AttributeError) as e:
            raise StatementError(f"{path}:{n}: bad row {row}: {e!r}") from None
        if minor < 0:
            raise StatementError(f"{path}:{n}: negative amount; give the sign as the direction")
        kind = (row.get("kind") or "entry").strip().lower() or "entry"
        if kind not in ("entry", "opening", "closing"):
            raise StatementError(f"{path}:{n}: kind must be entry, opening or closing, not {kind!r}")
        return kind, sign * minor, date, (row.get("reference") or "").strip()

    balances, first, last = [], None, None
    for n, row in rows():
        kind, amount, date, _ = parse(n, row)
        if kind != "entry":
            balances.append(Balance({"opening": "OPBD", "closing": "CLBD"}[kind], amount, date))
        else:
            first, last = first or date, date
    header = StatementHeader(os.path.basename(path), "", None, first, last, tuple(balances))

    def entries() -> Iterator[StatementEntry]:
        index = 0
        for n, row in rows():
            kind, amount, date, ref = parse(n, row)
            if kind == "entry":
                index += 1
                norm = _norm_ref(ref)
                yield StatementEntry(index, amount, date, (norm,) if norm else (), ref, "BOOK")

    return header, entries()


def read_statement(path: str, scale: int = 2) -> tuple[StatementHeader, Iterator[StatementEntry]]:
    """camt.053 (by a ``.xml`` name or an XML prolog) or CSV."""
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if path.lower().endswith(".xml") or head.startswith(b"<"):
        return read_camt053(path, scale)
    return read_csv(path, scale)


@dataclass(frozen=True)
class ExportEntry:
    """One posted transfer as a statement entry: transfer id, signed minor units,
    value date, optional end-to-end reference (the transfer's user_data_128)."""

    transfer_id: int
    amount: int
    date: dt.date
    end_to_end_id: int = 0


def _amount(mod, minor: int, currency: str, scale: int):
    return mod.ActiveOrHistoricCurrencyAndAmount(value=Decimal(abs(minor)).scaleb(-scale), ccy=currency)


def write_camt053(out, *, statement_id: str, account: str, currency: str, scale: int, from_date: dt.date,
                  to_date: dt.date, opening: int, closing: int, entries, created: dt.datetime) -> int:
    """Write a camt.053.001.08 statement to the text stream ``out``: group header,
    one Stmt for ``account`` (Othr/Id, the ledger account id), OPBD (dated
    ``from_date``) and CLBD (dated ``to_date``) balances, one BOOKed Ntry per
    :class:`ExportEntry` (NtryRef and AcctSvcrRef = transfer id; TxDtls/Refs/EndToEndId
    = user_data_128 or NOTPROVIDED), amounts in ``currency`` with ``scale`` decimals.
    The document is validated against the official XSD before a byte is written
    (StatementError if it does not validate). Returns the number of entries.
    At most ``export_entries_max`` entries (StatementError past it)."""
    import xmlschema
    from xsdata.formats.dataclass.serializers import XmlSerializer
    from xsdata.formats.dataclass.serializers.config import SerializerConfig
    from xsdata.models.datatype import XmlDate, XmlDateTime

    mod = importlib.import_module(_VERSIONS[EXPORT_VERSION][0])

    def bal(code: str, minor: int, day: dt.date):
        return mod.CashBalance8(
            tp=mod.BalanceType13(cd_or_prtry=mod.BalanceType10Choice(cd=code)),
            amt=_amount(mod, minor, currency, scale),
            cdt_dbt_ind=mod.CreditDebitCode.CRDT if minor >= 0 else mod.CreditDebitCode.DBIT,
            dt=mod.DateAndDateTime2Choice(dt=XmlDate.from_date(day)))

    ntry = []
    for e in entries:
        if len(ntry) >= export_entries_max:
            raise StatementError(f"more than {export_entries_max} entries in one statement: choose a shorter period")
        day = mod.DateAndDateTime2Choice(dt=XmlDate.from_date(e.date))
        credit = e.amount >= 0
        ntry.append(mod.ReportEntry10(
            ntry_ref=ref_text(e.transfer_id), amt=_amount(mod, e.amount, currency, scale),
            cdt_dbt_ind=mod.CreditDebitCode.CRDT if credit else mod.CreditDebitCode.DBIT,
            sts=mod.EntryStatus1Choice(cd="BOOK"), bookg_dt=day, val_dt=day, acct_svcr_ref=ref_text(e.transfer_id),
            bk_tx_cd=mod.BankTransactionCodeStructure4(domn=mod.BankTransactionCodeStructure5(
                cd="PMNT", fmly=mod.BankTransactionCodeStructure6(cd="RCDT" if credit else "ICDT", sub_fmly_cd="OTHR"))),
            ntry_dtls=[mod.EntryDetails9(tx_dtls=[mod.EntryTransaction10(refs=mod.TransactionReferences6(
                acct_svcr_ref=ref_text(e.transfer_id),
                end_to_end_id=ref_text(e.end_to_end_id) if e.end_to_end_id else "NOTPROVIDED"))])]))
    created_xml = XmlDateTime.from_datetime(created.replace(microsecond=0))
    doc = mod.Document(bk_to_cstmr_stmt=mod.BankToCustomerStatementV08(
        grp_hdr=mod.GroupHeader81(msg_id=statement_id[:35], cre_dt_tm=created_xml),
        stmt=[mod.AccountStatement9(
            id=statement_id[:35], cre_dt_tm=created_xml,
            fr_to_dt=mod.DateTimePeriod1(
                fr_dt_tm=XmlDateTime.from_datetime(dt.datetime.combine(from_date, dt.time(0, 0, 0), dt.timezone.utc)),
                to_dt_tm=XmlDateTime.from_datetime(dt.datetime.combine(to_date, dt.time(23, 59, 59), dt.timezone.utc))),
            acct=mod.CashAccount39(id=mod.AccountIdentification4Choice(
                othr=mod.GenericAccountIdentification1(id=account[:34])), ccy=currency),
            bal=[bal("OPBD", opening, from_date), bal("CLBD", closing, to_date)],
            ntry=ntry)]))
    text = XmlSerializer(config=SerializerConfig(indent="  ")).render(doc, ns_map={None: _NS_PREFIX + EXPORT_VERSION})
    errors = list(_schema(EXPORT_VERSION).iter_errors(xmlschema.XMLResource(io.StringIO(text))))
    if errors:
        raise StatementError(f"the exported statement does not validate: {errors[0].reason} at {errors[0].path}")
    out.write(text)
    return len(ntry)
