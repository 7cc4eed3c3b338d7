"""ledger-validator: the node operator's CLI.

Commands: init-cluster, start, status, demo. Every command has --help.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

import click
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)

DEFAULT_CLUSTER_DIR = "data/cluster"


def _write_private_key(path: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def init_cluster(directory: str, validators: int, members: list[str], host: str, base_port: int, force: bool) -> None:
    """Write genesis.json, one config per validator and one key per member under ``directory``."""
    if os.path.exists(os.path.join(directory, "genesis.json")):
        if not force:
            raise click.ClickException(f"{directory} already holds a cluster; use --force to replace it (its data is deleted)")
        shutil.rmtree(directory)
    os.makedirs(os.path.join(directory, "members"), exist_ok=True)
    vals = [
        {
            "id": f"v{i}",
            "grpc_address": f"{host}:{base_port + i}",
            "raft_address": f"{host}:{base_port + 100 + i}",
        }
        for i in range(1, validators + 1)
    ]
    mems = []
    for m in members:
        pub = _write_private_key(os.path.join(directory, "members", f"{m}.pem"))
        mems.append({"id": m, "roles": ["member"], "keys": [{"key_id": "k1", "public_key": pub.hex()}]})
    genesis = {"chain_id": f"local-{secrets.token_hex(4)}", "validators": vals, "members": mems}
    with open(os.path.join(directory, "genesis.json"), "w") as f:
        json.dump(genesis, f, indent=2)
    password = secrets.token_urlsafe(24)
    for v in vals:
        vdir = os.path.join(directory, v["id"])
        os.makedirs(vdir, exist_ok=True)
        cfg = {
            "validator_id": v["id"],
            "data_dir": "data",
            "genesis_file": "../genesis.json",
            "raft_password": password,
        }
        path = os.path.join(vdir, "config.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f, indent=2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run and operate validators of the Raft-replicated ledger."""


@main.command("init-cluster")
@click.option("--dir", "directory", default=DEFAULT_CLUSTER_DIR, show_default=True, help="Where to write the cluster.")
@click.option("--validators", default=3, show_default=True, help="Number of validators (odd: a majority decides).")
@click.option("--members", default="bank-a,bank-b", show_default=True, help="Comma-separated member ids; each gets an Ed25519 key.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address all validators listen on.")
@click.option("--base-port", default=7100, show_default=True, help="gRPC ports are base+1.., Raft ports base+101..")
@click.option("--force", is_flag=True, help="Replace an existing cluster in --dir (deletes its data).")
def init_cluster_cmd(directory, validators, members, host, base_port, force):
    """Generate a local cluster: genesis file, validator configs, member keys."""
    if validators < 1:
        raise click.BadParameter("need at least one validator", param_hint="--validators")
    init_cluster(directory, validators, [m.strip() for m in members.split(",") if m.strip()], host, base_port, force)
    console.print(f"[green]cluster written to {directory}[/]: genesis.json, v1..v{validators}/config.json, members/*.pem")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Validator config (JSON).")
@click.option("--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def start(config_path, log_level):
    """Start a validator from its config and serve until SIGTERM/SIGINT."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pysyncobj").setLevel(logging.WARNING)
    from raft_ledger_node.config import ConfigError, load_config
    from raft_ledger_node.store import StoreError

    try:
        cfg = load_config(config_path)
        from raft_ledger_node.main import run

        run(cfg)
    except (ConfigError, StoreError) as e:
        console.print(f"[red]cannot start:[/] {e}")
        sys.exit(2)


def _status_rows(genesis_path: str, timeout_s: float = 2.0):
    import grpc

    from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
    from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
    from raft_ledger_node.config import load_genesis

    genesis = load_genesis(genesis_path)
    rows = []
    for v in genesis.validators:
        with grpc.insecure_channel(v.grpc_address) as ch:
            try:
                st = pb_grpc.AdminStub(ch).GetStatus(pb.GetStatusRequest(), timeout=timeout_s)
                rows.append((v, st))
            except grpc.RpcError as e:
                rows.append((v, e))
    return rows


def _genesis_path(cluster: str) -> str:
    path = os.path.join(cluster, "genesis.json")
    if not os.path.exists(path):
        raise click.ClickException(f"no genesis.json in {cluster}; run `ledger-validator init-cluster --dir {cluster}` first")
    return path


@main.command()
@click.option("--cluster", default=DEFAULT_CLUSTER_DIR, show_default=True, help="Cluster directory (holds genesis.json).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(cluster, as_json):
    """Show each validator's role, term, commit/applied index and chain head."""
    rows = _status_rows(_genesis_path(cluster))
    if as_json:
        out = []
        for v, st in rows:
            if isinstance(st, Exception):
                out.append({"validator": v.id, "address": v.grpc_address, "error": st.code().name})
            else:
                out.append(
                    {
                        "validator": v.id,
                        "address": v.grpc_address,
                        "role": st.role,
                        "term": st.term,
                        "commit_index": st.commit_index,
                        "applied_index": st.applied_index,
                        "head_height": st.head.height,
                        "head_hash": st.head.hash.hex(),
                        "ready": st.ready,
                    }
                )
        click.echo(json.dumps(out, indent=2))
        return
    table = Table(title=f"cluster {cluster}")
    for col in ("validator", "address", "role", "term", "commit index", "applied index", "head height", "head hash", "ready"):
        table.add_column(col)
    for v, st in rows:
        if isinstance(st, Exception):
            table.add_row(v.id, v.grpc_address, f"[red]down ({st.code().name})[/]", "", "", "", "", "", "")
        else:
            role = f"[bold green]{st.role}[/]" if st.role == "leader" else st.role
            table.add_row(
                v.id,
                v.grpc_address,
                role,
                str(st.term),
                str(st.commit_index),
                str(st.applied_index),
                str(st.head.height),
                st.head.hash.hex()[:16],
                "yes" if st.ready else "no",
            )
    Console().print(table)


# -- member commands: the SDK from the shell ------------------------------------------


def _member_client(cluster: str, member: str, key_file: str | None):
    from raft_ledger_client import LedgerClient, load_private_key

    genesis = json.load(open(_genesis_path(cluster)))
    addresses = [v["grpc_address"] for v in genesis["validators"]]
    key_file = key_file or os.path.join(cluster, "members", f"{member}.pem")
    if not os.path.exists(key_file):
        raise click.ClickException(f"no key file {key_file}; pass --key-file")
    return LedgerClient(addresses, member_id=member, key_id="k1", private_key=load_private_key(key_file))


def _flags(enum, names: str) -> int:
    value = 0
    for name in filter(None, (n.strip() for n in names.split(","))):
        try:
            value |= enum[name.upper()]
        except KeyError:
            raise click.BadParameter(f"unknown flag {name!r}; one of {', '.join(m.name.lower() for m in enum if m.name != 'NONE')}")
    return value


def _print_rows(items, columns) -> None:
    table = Table()
    for c in columns:
        table.add_column(c)
    for it in items:
        table.add_row(*[str(getattr(it, c)) for c in columns])
    Console().print(table)


_member_opts = [
    click.option("--cluster", default=DEFAULT_CLUSTER_DIR, show_default=True, help="Cluster directory (genesis.json)."),
    click.option("--member", default="bank-a", show_default=True, help="Member id that signs."),
    click.option("--key-file", default=None, help="Member's Ed25519 PEM key (default: CLUSTER/members/MEMBER.pem)."),
]


def member_options(f):
    for opt in reversed(_member_opts):
        f = opt(f)
    return f


@main.group()
def member():
    """Act as a member bank through the SDK: create accounts and transfers, query."""


@member.command("create-account")
@member_options
@click.option("--id", "account_id", type=int, required=True)
@click.option("--ledger", type=int, required=True, help="Ledger (currency), e.g. 840.")
@click.option("--code", type=int, default=1, show_default=True)
@click.option("--flags", default="", help="Comma-separated: linked, debits_must_not_exceed_credits, credits_must_not_exceed_debits, history, closed.")
@click.option("--user-data-128", type=int, default=0)
def member_create_account(cluster, member, key_file, account_id, ledger, code, flags, user_data_128):
    """Create one account owned by --member."""
    from raft_ledger_client import Account, AccountFlags

    with _member_client(cluster, member, key_file) as c:
        [r] = c.create_accounts([Account(id=account_id, ledger=ledger, code=code, flags=_flags(AccountFlags, flags), user_data_128=user_data_128)])
    click.echo(r.name)
    sys.exit(0 if r.name in ("ok", "exists") else 1)


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
def member_create_transfer(cluster, member, key_file, transfer_id, debit_account_id, credit_account_id, amount, ledger, code, pending_id, timeout, flags):
    """Create one transfer (single-phase, pending, post or void), signed by --member."""
    from raft_ledger_client import Transfer, TransferFlags

    f = _flags(TransferFlags, flags)
    if f & (TransferFlags.POST_PENDING_TRANSFER | TransferFlags.VOID_PENDING_TRANSFER):
        code = 0 if code == 1 else code
    t = Transfer(id=transfer_id, debit_account_id=debit_account_id, credit_account_id=credit_account_id, amount=amount,
                 ledger=ledger, code=code, flags=f, pending_id=pending_id, timeout=timeout)
    with _member_client(cluster, member, key_file) as c:
        [r] = c.create_transfers([t])
    click.echo(r.name)
    sys.exit(0 if r.name in ("ok", "exists") else 1)


@member.command("lookup-accounts")
@member_options
@click.argument("ids", type=int, nargs=-1, required=True)
def member_lookup_accounts(cluster, member, key_file, ids):
    """Show accounts by id (balances in minor units)."""
    with _member_client(cluster, member, key_file) as c:
        _print_rows(c.lookup_accounts(list(ids)), ["id", "ledger", "code", "owner", "flags", "debits_pending", "debits_posted", "credits_pending", "credits_posted"])


@member.command("account-transfers")
@member_options
@click.argument("account_id", type=int)
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--reversed", "reverse", is_flag=True, help="Newest first.")
@click.option("--after", "cursor", type=int, default=0, help="Cursor printed by the previous page.")
def member_account_transfers(cluster, member, key_file, account_id, limit, reverse, cursor):
    """List an account's transfers by time, a page at a time."""
    from raft_ledger_client import AccountFilter

    f = AccountFilter(account_id=account_id, limit=limit, reversed=reverse,
                      **({"timestamp_max": cursor} if reverse and cursor else {"timestamp_min": cursor}))
    with _member_client(cluster, member, key_file) as c:
        page = c.get_account_transfers(f)
    _print_rows(page.items, ["id", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "flags", "pending_id", "timestamp"])
    click.echo(f"next page: --after {page.next_timestamp}" if page.next_timestamp else "(last page)")


@member.command("account-balances")
@member_options
@click.argument("account_id", type=int)
@click.option("--limit", type=int, default=20, show_default=True)
def member_account_balances(cluster, member, key_file, account_id, limit):
    """Balance history of an account created with the `history` flag."""
    from raft_ledger_client import AccountFilter

    with _member_client(cluster, member, key_file) as c:
        page = c.get_account_balances(AccountFilter(account_id=account_id, limit=limit))
    _print_rows(page.items, ["timestamp", "debits_pending", "debits_posted", "credits_pending", "credits_posted"])


# -- demo: the README's main job -------------------------------------------------------


class LocalCluster:
    """Validator processes started from a cluster directory; stopped by PID."""

    def __init__(self, directory: str) -> None:
        from raft_ledger_node.config import load_genesis

        self.directory = directory
        self.genesis = load_genesis(_genesis_path(directory))
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, validator_id: str) -> None:
        vdir = os.path.join(self.directory, validator_id)
        log = open(os.path.join(vdir, "validator.log"), "ab")
        self.procs[validator_id] = subprocess.Popen(
            [sys.executable, "-m", "raft_ledger_node.cli", "start", "--config", os.path.join(vdir, "config.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=os.getcwd(),
        )

    def start_all(self) -> None:
        for v in self.genesis.validators:
            self.start(v.id)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for vid, p in self.procs.items():
                if p.poll() is not None:
                    raise click.ClickException(
                        f"validator {vid} exited with code {p.returncode}; see {self.directory}/{vid}/validator.log"
                    )
            rows = _status_rows(os.path.join(self.directory, "genesis.json"), timeout_s=1.0)
            ok = [st for _, st in rows if not isinstance(st, Exception)]
            if len(ok) == len(rows) and any(st.role == "leader" for st in ok) and all(st.ready for st in ok):
                return
            time.sleep(0.3)
        raise click.ClickException(f"cluster not ready after {timeout_s}s; see {self.directory}/v*/validator.log")

    def stop(self, validator_id: str, sig: int = signal.SIGTERM, wait_s: float = 15.0) -> None:
        p = self.procs.get(validator_id)
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        try:
            p.wait(wait_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def stop_all(self) -> None:
        for vid in list(self.procs):
            self.stop(vid)


@main.command()
@click.option("--dir", "directory", default="data/demo", show_default=True, help="Cluster and data directory.")
@click.option("--accounts", default=1000, show_default=True, help="Accounts opened (split across members and ledgers).")
@click.option("--transfers", default=100_000, show_default=True, help="Transfers to submit.")
@click.option("--batch", default=100, show_default=True, help="Transfers per signed transaction.")
@click.option("--concurrency", default=8, show_default=True, help="Concurrent submitting clients.")
@click.option("--zipf", default=1.1, show_default=True, help="Zipf exponent of account popularity.")
@click.option("--seed", default=1, show_default=True)
@click.option("--keep-running", is_flag=True, help="Leave the validators running when the workload is done.")
def demo(directory, accounts, transfers, batch, concurrency, zipf, seed, keep_running):
    """Start a fresh local 3-validator cluster and drive a bank workload through the SDK."""
    init_cluster(directory, 3, ["bank-a", "bank-b"], "127.0.0.1", 7100, force=True)
    cluster = LocalCluster(directory)
    console.print(f"[bold]starting 3 validators[/] (data and logs under {directory}/)")
    cluster.start_all()
    try:
        cluster.wait_ready()
        status.callback(cluster=directory, as_json=False)
        rc = subprocess.call(
            [
                sys.executable, "-m", "raft_ledger_node.workload",
                "--cluster", directory,
                "--accounts", str(accounts),
                "--transfers", str(transfers),
                "--batch", str(batch),
                "--concurrency", str(concurrency),
                "--zipf", str(zipf),
                "--seed", str(seed),
            ]
        )
        status.callback(cluster=directory, as_json=False)
        if rc != 0:
            raise click.ClickException(f"workload failed with exit code {rc}")
    finally:
        if keep_running:
            pids = ", ".join(f"{v}={p.pid}" for v, p in cluster.procs.items())
            console.print(f"validators left running (PIDs {pids}); stop them with `kill <pid>`")
        else:
            console.print("stopping validators")
            cluster.stop_all()


# -- bench: issue 5's measuring stick ----------------------------------------------------


@main.command()
@click.option("--accounts", default=10_000, show_default=True, help="Accounts the transfers move between.")
@click.option("--skew", type=click.Choice(["uniform", "zipf"]), default="uniform", show_default=True, help="Account popularity.")
@click.option("--zipf-exponent", default=1.1, show_default=True, help="s of P(rank k) ∝ 1/(k+1)^s with --skew zipf.")
@click.option("--batch", default=100, show_default=True, help="Transfers per signed transaction (and per PostgreSQL transaction).")
@click.option("--concurrency", default=8, show_default=True, help="Concurrent clients (SDK threads, Raft proposers, SQL connections).")
@click.option("--transfers", type=int, default=None, help="Transfers at peak load on our cluster [100,000; --quick 30,000].")
@click.option("--half-load-transfers", type=int, default=None, help="Transfers at half the peak rate, 0 = skip [60,000; --quick 15,000].")
@click.option("--raft-entries", type=int, default=None, help="Entries for bare pysyncobj, one batch each [2,000; --quick 1,000].")
@click.option("--pg-transfers", type=int, default=None, help="PostgreSQL transfers, one SQL transaction per batch [100,000; --quick 30,000].")
@click.option("--pg-single-transfers", type=int, default=None, help="PostgreSQL transfers, one SQL transaction each, 0 = skip [20,000; --quick 8,000].")
@click.option("--history-max", type=click.Choice(["10000", "100000", "1000000", "10000000"]), default=None,
              help="Largest stored history measured [1000000; --quick 100000]. 10000000 (an 8 GB RocksDB) takes about 5 minutes more.")
@click.option("--quick", is_flag=True, help="About 2 minutes: smaller counts (explicit options still win).")
@click.option("--skip-ours", is_flag=True, help="Skip our cluster.")
@click.option("--skip-raft", is_flag=True, help="Skip bare pysyncobj.")
@click.option("--skip-crypto", is_flag=True, help="Skip the Ed25519 rates.")
@click.option("--skip-postgres", is_flag=True, help="Skip PostgreSQL.")
@click.option("--skip-history", is_flag=True, help="Skip history growth.")
@click.option("--profile", is_flag=True, help="py-spy the leader during the peak phase; pyinstrument the core apply.")
@click.option("--out", "out_dir", default="data/bench", show_default=True, help="Where the JSON, table and latency plot go.")
@click.option("--base-port", default=21100, show_default=True, help="First port tried (gRPC base+1.., Raft base+101.., bare Raft base+201.., PostgreSQL base+300).")
@click.option("--seed", default=1, show_default=True, help="Workload seed (every part sees the same transfers).")
@click.option("--keep-data", is_flag=True, help="Keep the temporary cluster, journals and logs.")
def bench(accounts, skew, zipf_exponent, batch, concurrency, transfers, half_load_transfers, raft_entries, pg_transfers,
          pg_single_transfers, history_max, quick, skip_ours, skip_raft, skip_crypto, skip_postgres, skip_history, profile,
          out_dir, base_port, seed, keep_data):
    """Benchmark our cluster against bare pysyncobj, Ed25519 and PostgreSQL on one workload (issue 5).

    Runs one after the other: a fresh 3-validator cluster on 127.0.0.1 driven
    through the SDK; a bare pysyncobj cluster replicating the same bytes with the
    same journal settings; Ed25519 verification rates; PostgreSQL (Debian's
    package, started in a temporary directory) executing the same transfers as
    double-entry SQL transactions; and the CPU cost per transfer as stored
    history grows. Prints one table, writes JSON, text and a latency plot to --out.
    """
    from raft_ledger_node.bench.config import BenchConfig
    from raft_ledger_node.bench.runner import run

    given = {
        "transfers": transfers, "half_load_transfers": half_load_transfers, "raft_entries": raft_entries,
        "pg_transfers": pg_transfers, "pg_single_transfers": pg_single_transfers,
        "history_max": int(history_max) if history_max else None,
    }
    kw = dict(
        accounts=accounts, skew=skew, zipf_exponent=zipf_exponent, batch=batch, concurrency=concurrency, profile=profile,
        out_dir=out_dir, base_port=base_port, seed=seed, keep_data=keep_data,
        skip=frozenset(n for n, f in (("ours", skip_ours), ("raft", skip_raft), ("crypto", skip_crypto),
                                      ("postgres", skip_postgres), ("history", skip_history)) if f),
        **{k: v for k, v in given.items() if v is not None},
    )
    try:
        cfg = BenchConfig.quick(**kw) if quick else BenchConfig(**kw)
    except ValueError as e:
        raise click.UsageError(str(e))
    run(cfg)


if __name__ == "__main__":
    main()
