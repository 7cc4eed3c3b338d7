"""``ledger-validator validator add | remove | replace | format``: validator membership changes.

Each command builds the governance proposal, approves it with the administrators'
keys given, submits it, and waits (with a progress bar) until every validator has
applied it; the work is :mod:`raft_ledger_node.reconfigure`'s.
"""
from __future__ import annotations

import json
import os
import subprocess

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from raft_ledger_node.cli.common import DEFAULT_CLUSTER_DIR, console, translate_errors


def _admins(cluster: str, admins: tuple[str, ...], admin_keys: tuple[str, ...]):
    """(member id, key id, private key) for each ``--admin ID`` (key CLUSTER/members/ID.pem)
    and each ``--admin-key ID=PATH``."""
    from raft_ledger_client import load_private_key

    out = []
    for a in admins:
        out.append((a, "k1", load_private_key(os.path.join(cluster, "members", f"{a}.pem"))))
    for spec in admin_keys:
        member, sep, path = spec.partition("=")
        if not sep:
            raise click.BadParameter(f"expected ID=PATH, not {spec!r}", param_hint="--admin-key")
        out.append((member, "k1", load_private_key(path)))
    if not out:
        raise click.UsageError("give the administrators who approve: --admin admin-1 --admin admin-2 (the threshold)")
    return out


def _statuses(cluster: str):
    from raft_ledger_node import localcluster

    gpath = localcluster.genesis_path(cluster)
    return lambda: {v.id: st for v, st in localcluster.status_rows(gpath, timeout_s=1.0)}


def _starter(cluster: str, validator_id: str):
    """Start ``validator_id`` of a local cluster in the background (its log: <id>/validator.log)."""
    from raft_ledger_node import localcluster

    def start():
        vdir = os.path.join(cluster, validator_id)
        with open(os.path.join(vdir, "validator.log"), "ab") as log:
            p = subprocess.Popen(localcluster.validator_command(os.path.join(vdir, "config.json")), stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        with open(os.path.join(vdir, "validator.pid"), "w") as f:
            f.write(f"{p.pid}\n")
        console.print(f"started {validator_id} (pid {p.pid} in {vdir}/validator.pid, log {vdir}/validator.log)")

    return start


class _Bar:
    """A progress bar of the learner's catch-up: the leader's match index for it out of its commit index."""

    def __init__(self, validator_id: str) -> None:
        self.progress = Progress(TextColumn(f"{validator_id} catching up"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("raft entries"), TimeElapsedColumn(), console=console, transient=False)
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task("catch-up", total=None)
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, match: int, commit: int) -> None:
        self.progress.update(self.task, completed=match, total=max(commit, 1))


def _operator_client(cluster: str):
    from raft_ledger_client import RetryPolicy
    from raft_ledger_node.localcluster import member_client

    return member_client(cluster, "operator", retry=RetryPolicy(deadline_s=30.0, attempt_timeout_s=10.0))


def _times(times) -> None:
    for name, seconds in times.steps.items():
        console.print(f"  {name}: {seconds:.1f} s")


_cluster_opt = click.option("--cluster", default=DEFAULT_CLUSTER_DIR, show_default=True,
                            help="Generated cluster directory (genesis.json, ca/, members/).")
_admin_opts = [
    click.option("--admin", "admins", multiple=True, metavar="ID",
                 help="An administrator who approves (key CLUSTER/members/ID.pem); repeat up to the threshold."),
    click.option("--admin-key", "admin_keys", multiple=True, metavar="ID=PATH",
                 help="An administrator and their Ed25519 PEM key, instead of --admin."),
]


def _with_admins(f):
    for opt in reversed(_admin_opts):
        f = opt(f)
    return f


@click.group()
def validator():
    """Change the validator set, one server at a time (Raft §4.1).

    \b
    grow:     ledger-validator validator add --admin admin-1 --admin admin-2 --start
    shrink:   ledger-validator validator remove v2 --admin admin-1 --admin admin-2
    replace:  ledger-validator validator replace v3 --admin admin-1 --admin admin-2 --start

    A new validator joins as a learner (non-voting: it receives the snapshot and the log
    and counts toward no majority), is promoted once it is within a few entries of the
    leader, and restarts itself as a voter. The leader refuses a change while another
    is in flight, and one that would leave the reachable voters without a majority.
    """


@validator.command()
@_cluster_opt
@click.option("--id", "validator_id", default=None, help="The new validator's id (default: the next v<n>).")
@click.option("--entry", "entry_file", type=click.File("r"), default=None,
              help="Its entry (JSON: id, grpc_address, raft_address, tls_cert_sha256, public_key) when its operator "
                   "made its key and certificate; default: generate them in the cluster directory (development).")
@click.option("--start/--no-start", default=False, show_default=True,
              help="Start the new validator here in the background (a local cluster); otherwise start it yourself "
                   "when told.")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, help="Seconds to wait for the catch-up.")
@_with_admins
@translate_errors
def add(cluster, validator_id, entry_file, start, timeout_s, admins, admin_keys):
    """Add a validator: learner, catch-up (progress bar), promotion to voter."""
    from raft_ledger_node import localcluster, reconfigure

    keys = _admins(cluster, admins, admin_keys)
    if entry_file is not None:
        entry = json.load(entry_file)
    else:
        entry = localcluster.validator_entry(localcluster.add_validator_files(cluster, validator_id))
        console.print(f"wrote {cluster}/{entry['id']}/ (TLS certificate, signing key, config.json): gRPC "
                      f"{entry['grpc_address']}, Raft {entry['raft_address']}")
    with _operator_client(cluster) as client, _Bar(entry["id"]) as bar:
        times = reconfigure.add(client, keys, entry, _statuses(cluster),
                                start=_starter(cluster, entry["id"]) if start else None,
                                catch_up_timeout_s=timeout_s, progress=bar, say=console.print)
    console.print(f"[green]{entry['id']} is a voter[/]")
    _times(times)


@validator.command()
@_cluster_opt
@click.argument("validator_id")
@_with_admins
@translate_errors
def remove(cluster, validator_id, admins, admin_keys):
    """Remove a validator (it stops; a removed leader hands over first)."""
    from raft_ledger_node import reconfigure

    keys = _admins(cluster, admins, admin_keys)
    with _operator_client(cluster) as client:
        times = reconfigure.remove(client, keys, validator_id, _statuses(cluster), say=console.print)
    console.print(f"[green]{validator_id} removed[/]")
    _times(times)


@validator.command()
@_cluster_opt
@click.argument("old_id")
@click.option("--new-id", default=None,
              help="The replacement's id (default: the same id, addresses and keys, on an empty data directory).")
@click.option("--start/--no-start", default=False, show_default=True, help="Start the replacement here (a local cluster).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, help="Seconds to wait for the catch-up.")
@_with_admins
@translate_errors
def replace(cluster, old_id, new_id, start, timeout_s, admins, admin_keys):
    """Replace a lost validator (its disk is gone): remove it, add the replacement.

    With the same id the replacement keeps the addresses and keys; its data directory is
    emptied (moved aside to <id>/data.lost-<time>) and gets a new id, so it votes only
    after it has caught up and been promoted."""
    import time

    from raft_ledger_node import localcluster, reconfigure

    keys = _admins(cluster, admins, admin_keys)
    if new_id is None:
        info = next((v for v in localcluster.cluster_validators(cluster) if v.id == old_id), None)
        if info is None:
            raise click.BadParameter(f"no validator {old_id!r} in {cluster}", param_hint="OLD_ID")
        entry = localcluster.validator_entry(info)
        data = os.path.join(cluster, old_id, "data")
        if os.path.exists(data):
            aside = f"{data}.lost-{int(time.time())}"
            os.rename(data, aside)
            console.print(f"moved {data} aside to {aside}")
    else:
        entry = localcluster.validator_entry(localcluster.add_validator_files(cluster, new_id))
    with _operator_client(cluster) as client, _Bar(entry["id"]) as bar:
        times = reconfigure.replace(client, keys, old_id, entry, _statuses(cluster),
                                    start=_starter(cluster, entry["id"]) if start else None,
                                    catch_up_timeout_s=timeout_s, progress=bar, say=console.print)
    console.print(f"[green]{old_id} replaced by {entry['id']}[/]")
    _times(times)


@validator.command("format")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="The validator's config (its data_dir is formatted).")
@click.option("--genesis", "for_genesis", is_flag=True,
              help="Format for a genesis validator's first start: it votes from the start. Only for a new cluster: "
                   "a lost disk's replacement must join as a learner (the default).")
@translate_errors
def format_cmd(config_path, for_genesis):
    """Give an empty data directory its identity (a random data directory id)."""
    from raft_ledger_node.config import load_config, load_genesis
    from raft_ledger_node.raft import membership

    cfg = load_config(config_path)
    g = load_genesis(cfg.genesis_file)
    if for_genesis and g.validator(cfg.validator_id) is None:
        raise click.BadParameter(f"{cfg.validator_id} is not a genesis validator", param_hint="--genesis")
    try:
        ident = membership.format_data_dir(cfg.data_dir, chain_id=g.chain_id, validator_id=cfg.validator_id,
                                           genesis=for_genesis)
    except membership.MembershipError as e:
        raise click.ClickException(str(e)) from None
    console.print(f"formatted {cfg.data_dir}: data directory id {ident.data_dir_id.hex()}"
                  f"{' (genesis voter)' if for_genesis else ' (joins as a learner)'}")
