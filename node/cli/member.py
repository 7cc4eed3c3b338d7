"""Member commands: the SDK from the shell (create accounts and transfers, query)."""
from __future__ import annotations

import os
import sys

import click

from raft_ledger_node.cli.common import DEFAULT_CLUSTER_DIR, CliError, ExitCode, echo_json, json_option, print_table, table, translate_errors
from raft_ledger_node import localcluster


def _member_client(cluster: str, member: str, key_file: str | None, key_id: str = "k1",
                   tls_key: str | None = None, tls_cert: str | None = None):
    """The SDK client of ``member``: its signing key (``--key-file`` or the cluster's,
    key id ``--key-id``), its TLS client key and certificate (``--tls-key/--tls-cert``
    or the cluster directory's; mutual TLS, plaintext only for a cluster generated with
    insecure_plaintext). The cluster directory supplies genesis.json."""
    key_file = key_file or os.path.join(cluster, "members", f"{member}.pem")
    if not os.path.exists(key_file):
        raise CliError(f"no key file {key_file}; pass --key-file", ExitCode.USAGE)
    kw = {}
    if localcluster.cluster_is_tls(cluster):
        _, default_key, default_cert = localcluster.member_tls_paths(cluster, member)
        tls_key, tls_cert = tls_key or default_key, tls_cert or default_cert
        for what, path in (("TLS client certificate", tls_cert), ("TLS client key", tls_key)):
            if not os.path.exists(path):
                raise CliError(f"no {what} {path} for {member!r}; pass --tls-cert/--tls-key", ExitCode.USAGE)
        kw = {"tls_key_file": tls_key, "tls_cert_file": tls_cert}
    return localcluster.member_client(cluster, member, key_id=key_id, key_file=key_file, **kw)


def _flags(enum, names: str) -> int:
    value = 0
    for name in filter(None, (n.strip() for n in names.split(","))):
        try:
            value |= enum[name.upper()]
        except KeyError:
            raise click.BadParameter(f"unknown flag {name!r}; one of {', '.join(m.name.lower() for m in enum if m.name != 'NONE')}")
    return value


def _json_value(v):
    return int(v) if isinstance(v, int) else v  # IntEnum/IntFlag -> their number; ints stay exact


def _rows_json(items, columns) -> list[dict]:
    return [{c: _json_value(getattr(it, c)) for c in columns} for it in items]


def _print_rows(items, columns, as_json: bool = False) -> None:
    if as_json:
        echo_json(_rows_json(items, columns))
        return
    t = table(columns)
    for it in items:
        t.add_row(*[str(getattr(it, c)) for c in columns])
    print_table(t)


_member_opts = [
    click.option("--cluster", default=DEFAULT_CLUSTER_DIR, show_default=True, help="Cluster directory (genesis.json)."),
    click.option("--member", default="bank-a", show_default=True, help="Member id that signs."),
    click.option("--key-file", default=None, help="Member's Ed25519 PEM key (default: CLUSTER/members/MEMBER.pem)."),
    click.option("--key-id", default="k1", show_default=True, help="Key id of that key (e.g. k2 after a rotation)."),
    click.option("--tls-key", default=None, help="TLS client key (default: CLUSTER/members/MEMBER.tls.key.pem)."),
    click.option("--tls-cert", default=None, help="TLS client certificate (default: CLUSTER/members/MEMBER.tls.crt.pem)."),
]


def member_options(f):
    """The connection options; the command receives them as one ``conn`` tuple
    (cluster, member, key_file, key_id, tls_key, tls_cert) for :func:`_member_client`."""
    import functools

    @functools.wraps(f)
    def wrapper(*a, cluster, member, key_file, key_id, tls_key, tls_cert, **kw):
        return f(*a, conn=(cluster, member, key_file, key_id, tls_key, tls_cert), **kw)

    for opt in reversed(_member_opts):
        wrapper = opt(wrapper)
    return wrapper


@click.group()
def member():
    """Act as a member bank through the SDK: create accounts and transfers, query."""


@member.command("create-account")
@member_options
@click.option("--id", "account_id", type=int, required=True)
@click.option("--ledger", type=int, required=True, help="Ledger (currency), e.g. 840.")
@click.option("--code", type=int, default=1, show_default=True)
@click.option("--flags", default="", help="Comma-separated: linked, debits_must_not_exceed_credits, credits_must_not_exceed_debits, history, closed.")
@click.option("--user-data-128", type=int, default=0)
@translate_errors
def member_create_account(conn, account_id, ledger, code, flags, user_data_128):
    """Create one account owned by --member."""
    from raft_ledger_client import Account, AccountFlags, CreateAccountResult

    with _member_client(*conn) as c:
        [r] = c.create_accounts([Account(id=account_id, ledger=ledger, code=code, flags=_flags(AccountFlags, flags), user_data_128=user_data_128)])
    click.echo(r.name)
    sys.exit(0 if r.result in (CreateAccountResult.ok, CreateAccountResult.exists) else 1)


@member.command("create-transfer")
@member_options
@click.option("--id", "transfer_id", type=int, required=True)
@click.option("--debit", "debit_account_id", type=int, default=0, help="Debit account id (omit for post/void).")
@click.option("--credit", "credit_account_id", type=int, default=0, help="Credit account id (omit for post/void).")
@click.option("--amount", type=int, default=0, help="Minor units. Post: 0 = the full pending amount.")
@click.option("--ledger", type=int, default=0)
@click.option("--code", type=int, default=1, show_default=True)
@click.option("--pending-id", type=int, default=0, help="The pending transfer to post or void.")
@click.option("--timeout", type=int, default=0, help="Seconds until a pending transfer expires (0 = never).")
@click.option("--flags", default="", help="Comma-separated: pending, post_pending_transfer, void_pending_transfer, balancing_debit, balancing_credit, closing_debit, closing_credit.")
@translate_errors
def member_create_transfer(conn, transfer_id, debit_account_id, credit_account_id, amount, ledger, code, pending_id, timeout, flags):
    """Create one transfer (single-phase, pending, post or void), signed by --member."""
    from raft_ledger_client import CreateTransferResult, Transfer, TransferFlags

    f = _flags(TransferFlags, flags)
    if f & (TransferFlags.POST_PENDING_TRANSFER | TransferFlags.VOID_PENDING_TRANSFER):
        code = 0 if code == 1 else code
    t = Transfer(id=transfer_id, debit_account_id=debit_account_id, credit_account_id=credit_account_id, amount=amount,
                 ledger=ledger, code=code, flags=f, pending_id=pending_id, timeout=timeout)
    with _member_client(*conn) as c:
        [r] = c.create_transfers([t])
    click.echo(r.name)
    sys.exit(0 if r.result in (CreateTransferResult.ok, CreateTransferResult.exists) else 1)


@member.command("lookup-accounts")
@member_options
@click.argument("ids", type=int, nargs=-1, required=True)
@json_option
@translate_errors
def member_lookup_accounts(conn, ids, as_json):
    """Show accounts by id (balances in minor units)."""
    with _member_client(*conn) as c:
        _print_rows(c.lookup_accounts(list(ids)), ["id", "ledger", "code", "owner", "flags", "debits_pending", "debits_posted", "credits_pending", "credits_posted"], as_json)


@member.command("account-transfers")
@member_options
@click.argument("account_id", type=int)
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--reversed", "reverse", is_flag=True, help="Newest first.")
@click.option("--after", "cursor", type=int, default=0, help="Cursor printed by the previous page.")
@json_option
@translate_errors
def member_account_transfers(conn, account_id, limit, reverse, cursor, as_json):
    """List an account's transfers by time, a page at a time."""
    from raft_ledger_client import AccountFilter

    f = AccountFilter(account_id=account_id, limit=limit, reversed=reverse,
                      **({"timestamp_max": cursor} if reverse and cursor else {"timestamp_min": cursor}))
    with _member_client(*conn) as c:
        page = c.get_account_transfers(f)
    columns = ["id", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "flags", "pending_id", "timestamp"]
    if as_json:
        echo_json({"items": _rows_json(page.items, columns), "next_timestamp": page.next_timestamp})
        return
    _print_rows(page.items, ["id", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "flags", "pending_id", "timestamp"])
    click.echo(f"next page: --after {page.next_timestamp}" if page.next_timestamp else "(last page)")


@member.command("account-balances")
@member_options
@click.argument("account_id", type=int)
@click.option("--limit", type=int, default=20, show_default=True)
@json_option
@translate_errors
def member_account_balances(conn, account_id, limit, as_json):
    """Balance history of an account created with the `history` flag."""
    from raft_ledger_client import AccountFilter

    with _member_client(*conn) as c:
        page = c.get_account_balances(AccountFilter(account_id=account_id, limit=limit))
    _print_rows(page.items, ["timestamp", "debits_pending", "debits_posted", "credits_pending", "credits_posted"], as_json)


def _write_private(path: str, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only (0600); never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@member.command("keygen")
@click.option("--member", "member_id", required=True, help="Your member id (as the administrators will register it).")
@click.option("--key-id", default="k1", show_default=True, help="Id of this key (a new one for a rotation, e.g. k2).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory to write the files to.")
@click.option("--no-tls", is_flag=True, help="Only the signing key (e.g. for a key rotation).")
@translate_errors
def member_keygen(member_id, key_id, out_dir, no_tls):
    """Generate your own keys, on your own host: an Ed25519 signing key (0600) and the
    public-key file to give the operator; a TLS key (0600) and a CSR for the cluster CA.

    \b
    Writes, in --out:
      MEMBER.KEY_ID.pem        Ed25519 private key (keep it; never send it)
      MEMBER.KEY_ID.pub.json   public key for `gov propose --add-member / --add-key`
      MEMBER.tls.key.pem       TLS private key (keep it)
      MEMBER.csr.pem           CSR for `ca sign`
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from raft_ledger_client import governance
    from raft_ledger_node import pki

    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    base = os.path.join(out_dir, f"{member_id}.{key_id}")
    try:
        _write_private(base + ".pem", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    except FileExistsError:
        raise click.ClickException(f"{base}.pem exists; not overwriting a key (choose another --key-id or --out)") from None
    with open(base + ".pub.json", "w") as f:
        governance.write_public_key_file(f, member_id, key_id, governance.public_key_bytes(key))
    written = [base + ".pem", base + ".pub.json"]
    if not no_tls:
        tls_key, csr = pki.make_csr(member_id)
        tls_path = os.path.join(out_dir, f"{member_id}.tls.key.pem")
        try:
            _write_private(tls_path, tls_key)
        except FileExistsError:
            raise click.ClickException(f"{tls_path} exists; pass --no-tls for a signing-key rotation") from None
        with open(os.path.join(out_dir, f"{member_id}.csr.pem"), "wb") as f:
            f.write(csr)
        written += [tls_path, os.path.join(out_dir, f"{member_id}.csr.pem")]
    for w in written:
        click.echo(w)


# -- reconciliation and statements (raft_ledger_node.reconcile) ----------------------------

_EXIT_DISCREPANCY = 1
_EXIT_UNRECONCILABLE = 2


def _money(minor, scale: int) -> str:
    """Signed minor units as a decimal at ``scale`` digits, every digit kept."""
    if minor is None:
        return ""
    from decimal import Decimal

    return f"{Decimal(minor).scaleb(-scale):,.{scale}f}"


def _unreconcilable(e: Exception):
    err = click.ClickException(str(e))
    err.exit_code = _EXIT_UNRECONCILABLE
    return err


def _print_reconciliation(report) -> None:
    s = report.scale
    t = table(["outcome", "reference", "transfer", "statement amount", "statement date", "ledger amount", "ledger date"],
              title=f"account {report.account_id} ({report.currency}) {report.from_date} .. {report.to_date}")
    for i in report.items:
        t.add_row(i.kind, i.reference, "" if i.transfer_id is None else str(i.transfer_id),
                  _money(i.statement_amount, s), str(i.statement_date or ""), _money(i.ledger_amount, s),
                  str(i.ledger_date or ""))
    print_table(t)
    if report.items_dropped:
        click.echo(f"({report.items_dropped} more rows not shown; the counts below are complete)")
    b = table(["side", "opening", "entries", "forward-valued", "closing", "opening + entries = closing"], title="balances")

    def yes(v):
        return {True: "yes", False: "NO", None: "n/a"}[v]

    b.add_row("statement", _money(report.statement_opening, s), _money(report.statement_entries_total, s),
              _money(report.statement_forward_total, s), _money(report.statement_closing, s), yes(report.statement_balanced))
    b.add_row("ledger", _money(report.ledger_opening, s), _money(report.ledger_entries_total, s),
              _money(report.ledger_forward_total, s), _money(report.ledger_closing, s), yes(report.ledger_balanced))
    print_table(b)
    counts = ", ".join(f"{k} {v}" for k, v in report.counts.items())
    click.echo(f"{counts}; openings agree: {yes(report.openings_agree)}, closings agree: {yes(report.closings_agree)}")
    click.echo("RECONCILED" if report.ok else "DISCREPANCIES")


def _date_opt(name: str, help_: str):
    return click.option(name, "_" + name.strip("-") + "_date", type=click.DateTime(["%Y-%m-%d"]), default=None, help=help_)


@member.command("reconcile")
@member_options
@click.option("--account", "account_id", type=int, required=True, help="The account (yours) the statement is of.")
@click.option("--statement", "statement_path", type=click.Path(dir_okay=False, exists=True), required=True,
              help="camt.053 (.001.02, .04, .08) XML or CSV (date, amount|amount_minor, direction, reference[, kind]).")
@_date_opt("--from", "First day (UTC, YYYY-MM-DD); default: the statement's.")
@_date_opt("--to", "Last day (UTC, YYYY-MM-DD); default: the statement's.")
@click.option("--window-days", type=int, default=3, show_default=True,
              help="Days an unmatched entry waits for its counterpart (a date mismatch up to this far).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@translate_errors
def member_reconcile(conn, account_id, statement_path, _from_date, _to_date, window_days, as_json):
    """Reconcile an external statement against the account's posted ledger entries:
    matched, amount or date mismatches, missing on either side, and the balance checks
    (opening + entries = closing on each side; the sides' balances agree).

    Exit codes: 0 reconciled, 1 discrepancies, 2 the statement cannot be reconciled
    (invalid file, another currency, no period)."""
    import json

    from raft_ledger_node.reconcile import ReconcileError, reconcile_account
    from raft_ledger_node.statements import StatementError

    with _member_client(*conn) as c:
        try:
            report = reconcile_account(c, account_id, statement_path,
                                       from_date=_from_date.date() if _from_date else None,
                                       to_date=_to_date.date() if _to_date else None, window_days=window_days)
        except (ReconcileError, StatementError) as e:
            raise _unreconcilable(e) from None
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_reconciliation(report)
    sys.exit(0 if report.ok else _EXIT_DISCREPANCY)


@member.command("statement")
@member_options
@click.option("--account", "account_id", type=int, required=True, help="The account (yours).")
@_date_opt("--from", "First day (UTC, YYYY-MM-DD).")
@_date_opt("--to", "Last day (UTC, YYYY-MM-DD).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="The camt.053 XML file to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@translate_errors
def member_statement(conn, account_id, _from_date, _to_date, out_path, as_json):
    """Export the account's posted entries of a period as an ISO 20022 camt.053.001.08
    statement (validated against the official XSD): OPBD and CLBD balances, one entry
    per posted transfer, the transfer id as the entry reference. Exit 2 if it cannot."""
    import json

    from raft_ledger_node.reconcile import ReconcileError, export_statement
    from raft_ledger_node.statements import StatementError

    if _from_date is None or _to_date is None:
        raise click.UsageError("--from and --to are required")
    tmp = out_path + ".tmp"
    with _member_client(*conn) as c:
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                summary = export_statement(c, account_id, _from_date.date(), _to_date.date(), f)
            os.replace(tmp, out_path)
        except (ReconcileError, StatementError) as e:
            raise _unreconcilable(e) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if as_json:
        click.echo(json.dumps({"out": out_path, **summary}))
    else:
        scale = 0 if summary["currency"] == "JPY" else 2
        click.echo(f"wrote {summary['entries']} entries to {out_path} ({summary['currency']}: opening "
                   f"{_money(summary['opening'], scale)}, closing {_money(summary['closing'], scale)})")
