"""Operator commands: init-cluster, start, status, health, signing-key."""
from __future__ import annotations

import json
import sys

import click

from raft_ledger_node import localcluster
from raft_ledger_node.cli.common import DEFAULT_CLUSTER_DIR, ExitCode, console, json_option, print_table, table, translate_errors


@click.command("init-cluster")
@click.option("--dir", "directory", default=DEFAULT_CLUSTER_DIR, show_default=True, help="Where to write the cluster.")
@click.option("--validators", default=3, show_default=True, help="Number of validators (odd: a majority decides).")
@click.option("--members", default="bank-a,bank-b", show_default=True, help="Comma-separated member ids; each gets an Ed25519 key.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address all validators listen on.")
@click.option("--base-port", default=7100, show_default=True, help="gRPC ports are base+1.., Raft ports base+101..")
@click.option("--force", is_flag=True, help="Replace an existing cluster in --dir (deletes its data).")
@click.option("--insecure-plaintext", is_flag=True,
              help="Development only: no CA, no TLS (gRPC and Raft in plaintext, every caller anonymous).")
@translate_errors
def init_cluster_cmd(directory, validators, members, host, base_port, force, insecure_plaintext):
    """Generate a local development cluster in one command: a CA, the genesis file,
    validator configs and TLS certificates, and for every identity (the member banks,
    central-bank as issuer of ledgers 840 and 978, auditor, operator, admin-1..3 with
    threshold 2) an Ed25519 signing key and a TLS client certificate.

    In production the members generate their own keys (`member keygen`) and the
    administrators add them by governance (`gov propose/sign/submit`): private keys
    never leave the member's host. This command generates them all here."""
    if validators < 1:
        raise click.BadParameter("need at least one validator", param_hint="--validators")
    try:
        made = localcluster.init_cluster(directory, validators, [m.strip() for m in members.split(",") if m.strip()],
                                         host, base_port, force=force, insecure_plaintext=insecure_plaintext)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--base-port")
    console.print(f"[green]cluster written to {directory}[/]: genesis.json, ca/, v1..v{validators}/ (config, TLS), "
                  f"members/ ({len(made.key_paths)} identities: {', '.join(sorted(made.key_paths))})")
    console.print("[yellow]development setup:[/] this host generated every identity's private keys and holds the CA key "
                  "(ca/ca.key.pem). In production each member runs `ledger-validator member keygen` on its own host "
                  "and only public keys and CSRs reach the operator.")
    if insecure_plaintext:
        console.print("[bold red]PLAINTEXT cluster: no TLS, no caller identity. Never expose it.[/]")


#: `start` exits with this code when the validator is not in the governed validator set.
EXIT_NOT_A_VALIDATOR = ExitCode.NOT_A_VALIDATOR


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Validator config (JSON).")
@click.option("--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines as text or one JSON object per line (time, level, logger, message, validator_id, "
                   "height/tx_hash where known). Default: the config's log_format (text).")
def start(config_path, log_level, log_format):
    """Start a validator from its config and serve until SIGTERM/SIGINT.

    A data directory formatted for genesis (`init-cluster`, `format --genesis`) votes as a
    genesis validator; any other new directory starts as a learner (non-voting) and votes
    only once governance promotes it (`validator add`). A learner promoted to voter
    restarts itself in place. Exits 0 when stopped or removed by governance, 2 on a
    config or storage error, 3 if this validator is not in the validator set, 65 if its
    data directory fails the start-up integrity check, 74 if a storage write fails."""
    from raft_ledger_node import logs
    from raft_ledger_node.config import ConfigError, load_config
    from raft_ledger_node.store import StoreError

    from raft_ledger_node.main import NotAValidatorError
    from raft_ledger_node.integrity import EXIT_DATA_CORRUPT, DataCorruptError

    logs.configure(log_format=log_format or "text", level=log_level)
    try:
        cfg = load_config(config_path)
        logs.configure(log_format=log_format or cfg.log_format, level=log_level, validator_id=cfg.validator_id)
        from raft_ledger_node.main import run

        outcome = run(cfg)
    except NotAValidatorError as e:
        console.print(f"[red]not starting:[/] {e}")
        sys.exit(EXIT_NOT_A_VALIDATOR)
    except DataCorruptError as e:
        console.print(f"[red]refusing to start:[/] {e}")
        sys.exit(EXIT_DATA_CORRUPT)
    except (ConfigError, StoreError) as e:
        console.print(f"[red]cannot start:[/] {e}")
        sys.exit(ExitCode.USAGE)
    if outcome == "removed":
        console.print("[yellow]stopped: this validator was removed from the validator set by governance[/]")


STATUS_COLUMNS = ("validator", "address", "membership", "role", "term", "commit index", "applied index", "apply lag",
                  "head height", "head hash", "ready")
#: Seconds between refreshes of `status --watch`, by default, and the shortest allowed.
WATCH_INTERVAL_S = 1.0
WATCH_INTERVAL_S_MIN = 0.2
#: Seconds each validator gets to answer one status round (a down one costs at most this).
WATCH_STATUS_TIMEOUT_S = 1.0


def _governed_ids(rows) -> set[str] | None:
    """Validator ids of the governed set as the most advanced answering validator reports it."""
    answering = [st for _, st in rows if not isinstance(st, Exception)]
    if not answering:
        return None
    best = max(answering, key=lambda st: st.configuration_version)
    return {e.id for e in best.validators}


def status_json(rows) -> list[dict]:
    """The rows of :func:`raft_ledger_node.localcluster.status_rows` as JSON objects."""
    governed = _governed_ids(rows)
    out = []
    for v, st in rows:
        if isinstance(st, Exception):
            out.append({"validator": v.id, "address": v.grpc_address, "error": st.code().name,
                        "in_validator_set": None if governed is None else v.id in governed})
        else:
            out.append(
                {
                    "validator": v.id,
                    "address": v.grpc_address,
                    "membership": st.membership,
                    "data_dir_id": st.data_dir_id.hex(),
                    "raft_configuration": list(st.raft_configuration),
                    "configuration_version": st.configuration_version,
                    "role": st.role,
                    "term": st.term,
                    "commit_index": st.commit_index,
                    "applied_index": st.applied_index,
                    "apply_lag": max(0, st.commit_index - st.applied_index),
                    "head_height": st.head.height,
                    "head_hash": st.head.hash.hex(),
                    "ready": st.ready,
                }
            )
    return out


def status_table(cluster: str, rows, *, secure: bool = True, caption: str | None = None):
    """The status rows as a rich Table (a down validator's row says "down (CODE)")."""
    governed = _governed_ids(rows)
    title = f"cluster {cluster}" if secure else (
        f"cluster {cluster} [bold red]PLAINTEXT (insecure_plaintext): no TLS, every caller reads everything[/]")
    t = table(STATUS_COLUMNS, title=title)
    if caption:
        t.caption = caption
    for v, st in rows:
        if isinstance(st, Exception):
            member = "" if governed is None or v.id in governed else "[dim]removed[/]"
            t.add_row(v.id, v.grpc_address, member, f"[red]down ({st.code().name})[/]", "", "", "", "", "", "", "")
        else:
            role = f"[bold green]{st.role}[/]" if st.role == "leader" else st.role
            member = "voter" if st.membership == "voter" else f"[yellow]{st.membership or 'voter'} (non-voting)[/]"
            lag = max(0, st.commit_index - st.applied_index)
            t.add_row(
                v.id,
                v.grpc_address,
                member,
                role,
                str(st.term),
                str(st.commit_index),
                str(st.applied_index),
                str(lag) if lag == 0 else f"[yellow]{lag}[/]",
                str(st.head.height),
                st.head.hash.hex()[:16],
                "yes" if st.ready else "[red]no[/]",
            )
    return t


def print_status(cluster: str, as_json: bool) -> None:
    """Print every validator's status as a table (stdout) or JSON. Raises NoClusterError."""
    rows = localcluster.status_rows(localcluster.genesis_path(cluster))
    if as_json:
        if not localcluster.cluster_is_tls(cluster):
            click.echo("WARNING: this cluster serves gRPC in plaintext (insecure_plaintext); development only", err=True)
        click.echo(json.dumps(status_json(rows), indent=2))
        return
    print_table(status_table(cluster, rows, secure=localcluster.cluster_is_tls(cluster)))


def watch_status(cluster: str, *, interval_s: float, count: int | None, as_json: bool, out=None) -> int:
    """Refresh the status table every ``interval_s`` seconds until Ctrl-C (or ``count``
    refreshes): a live table (rich.live.Live) on a terminal; on a pipe or file each
    refresh is printed after the last one (a text capture), and with ``as_json`` one
    JSON line per refresh (``{"time": unix s, "validators": [...]}``). A validator that
    dies shows "down" until it answers again. Returns the refreshes made. Raises
    NoClusterError."""
    import time

    from rich.console import Console
    from rich.live import Live

    genesis = localcluster.genesis_path(cluster)
    secure = localcluster.cluster_is_tls(cluster)
    out_console = Console(file=out) if out is not None else Console()
    done = 0

    def frame():
        nonlocal done
        rows = localcluster.status_rows(genesis, timeout_s=WATCH_STATUS_TIMEOUT_S)
        done += 1
        stamp = time.strftime("%H:%M:%S")
        return rows, stamp

    def caption(stamp: str) -> str:
        return f"refresh {done}{'/' + str(count) if count else ''} at {stamp}, every {interval_s:g} s; Ctrl-C to stop"

    try:
        if as_json or not out_console.is_terminal:
            while count is None or done < count:
                rows, stamp = frame()
                if as_json:
                    out_console.file.write(json.dumps({"time": time.time(), "validators": status_json(rows)}) + "\n")
                    out_console.file.flush()
                else:
                    print_table(status_table(cluster, rows, secure=secure, caption=caption(stamp)), out_console)
                if count is None or done < count:
                    time.sleep(interval_s)
            return done
        rows, stamp = frame()
        with Live(status_table(cluster, rows, secure=secure, caption=caption(stamp)), console=out_console,
                  auto_refresh=False, transient=False) as live:
            while count is None or done < count:
                time.sleep(interval_s)
                rows, stamp = frame()
                live.update(status_table(cluster, rows, secure=secure, caption=caption(stamp)), refresh=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: exit 0
    return done


@click.command()
@click.option("--cluster", default=DEFAULT_CLUSTER_DIR, show_default=True, help="Cluster directory (holds genesis.json).")
@json_option
@click.option("--watch", is_flag=True, help="Refresh the table until Ctrl-C (exit 0); down validators show 'down'.")
@click.option("--interval", "interval_s", default=WATCH_INTERVAL_S, show_default=True,
              type=click.FloatRange(min=WATCH_INTERVAL_S_MIN), help="--watch: seconds between refreshes.")
@click.option("--count", default=None, type=click.IntRange(min=1),
              help="--watch: stop after this many refreshes (a capture for a log).")
@translate_errors
def status(cluster, as_json, watch, interval_s, count):
    """Show each validator's membership (voter, or learner: non-voting), role, term,
    commit/applied index, apply lag (commit - applied) and chain head: the genesis
    validators and those added since. --watch refreshes it live (rich) until Ctrl-C;
    on a pipe it prints one table (or with --json one JSON line) per refresh."""
    if count is not None and not watch:
        raise click.UsageError("--count needs --watch")
    if watch:
        watch_status(cluster, interval_s=interval_s, count=count, as_json=as_json)
        return
    print_status(cluster, as_json)


#: Seconds the health probe waits for the validator's answer (connect and call).
HEALTH_TIMEOUT_S = 3.0


def _probe_target(cfg, genesis, address: str | None) -> tuple[str, str]:
    """(address to dial, TLS host name to verify) for this validator's own Health.

    The address: ``address``, else ``grpc_listen_address`` with an any-address
    (0.0.0.0, [::]) replaced by the loopback, else this validator's genesis gRPC
    address. The name verified is the host of its genesis gRPC address, which its
    certificate names (clients dial it), whatever address the probe dials."""
    me = genesis.validator(cfg.validator_id)
    host = me.grpc_address.rpartition(":")[0].strip("[]")
    if not address:
        listen = cfg.grpc_listen_address
        lhost, _, lport = listen.rpartition(":")
        if lhost in ("0.0.0.0", ""):
            address = f"127.0.0.1:{lport}" if listen else me.grpc_address
        elif lhost in ("[::]", "::"):
            address = f"[::1]:{lport}"
        else:
            address = listen
    return address, host


def health_status(config_path: str, service: str = "", address: str | None = None,
                  timeout_s: float = HEALTH_TIMEOUT_S) -> str:
    """Ask this validator's own ``grpc.health.v1.Health/Check`` for ``service`` and return
    the status name (``SERVING``, ``NOT_SERVING``, ``SERVICE_UNKNOWN``, ...).

    Over mutual TLS with the validator's own key and certificate (``tls_key_file``,
    ``tls_cert_file``; the validators admit a validator's pinned certificate to Health
    only) and the genesis CA; plaintext if the config sets ``insecure_plaintext``.
    Raises ConfigError (config or genesis unreadable), OSError (TLS files), and
    ``grpc.RpcError`` if the validator does not answer within ``timeout_s`` seconds."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from raft_ledger_node.config import load_config, load_genesis

    cfg = load_config(config_path)
    genesis = load_genesis(cfg.genesis_file)
    target, host = _probe_target(cfg, genesis, address)
    if cfg.insecure_plaintext:
        channel = grpc.insecure_channel(target)
    else:
        with open(cfg.tls_key_file, "rb") as f:
            key = f.read()
        with open(cfg.tls_cert_file, "rb") as f:
            cert = f.read()
        creds = grpc.ssl_channel_credentials(root_certificates=genesis.tls_ca_pem, private_key=key,
                                             certificate_chain=cert)
        channel = grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", host)])
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                          timeout=timeout_s)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), envvar="LEDGER_CONFIG",
              show_envvar=True, help="This validator's config (JSON): its TLS key and certificate, genesis, listen address.")
@click.option("--service", default="", show_default=True, help='Health service name ("" or ledger.v1.LedgerService).')
@click.option("--address", default=None, envvar="LEDGER_HEALTH_ADDRESS", show_envvar=True,
              help="Address to probe (default: grpc_listen_address with 0.0.0.0 as 127.0.0.1, else the genesis gRPC address).")
@click.option("--timeout", "timeout_s", default=HEALTH_TIMEOUT_S, show_default=True, help="Seconds to wait for the answer.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing; the exit code is the answer.")
@json_option
def health(config_path, service, address, timeout_s, quiet, as_json):
    """Probe this validator's gRPC Health over mutual TLS with its own certificate: exit 0
    if it is SERVING (Raft ready, a leader known), 1 otherwise (NOT_SERVING, unreachable,
    refused, or a config error). For exec probes: Kubernetes, the container HEALTHCHECK."""
    import grpc

    from raft_ledger_node.config import ConfigError

    try:
        status = health_status(config_path, service, address, timeout_s)
    except (ConfigError, OSError) as e:
        status = f"cannot probe: {e}"
    except grpc.RpcError as e:
        status = f"{e.code().name}: {e.details()}"
    if as_json and not quiet:
        click.echo(json.dumps({"status": status, "serving": status == "SERVING"}))
    elif not quiet:
        click.echo(status)
    sys.exit(0 if status == "SERVING" else 1)


@click.command("signing-key")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Where to write the validator's Ed25519 checkpoint-signing key (PKCS#8 PEM, mode 0600).")
@click.option("--force", is_flag=True, help="Replace an existing key file.")
def signing_key(out_path, force):
    """Generate a validator's checkpoint-signing key, on the validator's own host.

    The validator signs a checkpoint of every block with it (its cosignatures, which form
    the finality certificates members verify). Point the validator config's
    `signing_key_file` at the file, and put the printed public key in genesis as the
    validator's `public_key` (or in a `set_validators` governance change). Only the
    public key leaves the host.
    """
    import os

    if os.path.exists(out_path) and not force:
        raise click.ClickException(f"{out_path} exists: a validator keeps its key (use --force to replace it)")
    public = localcluster.write_private_key(out_path)
    console.print(f"wrote {out_path} (0600)")
    click.echo(json.dumps({"public_key": public.hex()}))
