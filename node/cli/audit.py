"""Offline verification commands: ``audit`` (with ``export`` and ``verify-export``) and
``verify-receipt``. They only translate: the work is in raft_ledger_node.audit and the
SDK's raft_ledger_client.receipt.

Exit codes: 0 verified / clean, 1 an inconsistency or a failed verification (the
reason is printed), 2 a usage error (bad options, no DB there, another chain's DB, an
unreadable genesis file).
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sys

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from raft_ledger_node.cli.common import console

_EXIT_FOUND = 1
_EXIT_USAGE = 2


def _genesis(path: str):
    from raft_ledger_node.config import ConfigError, load_genesis

    try:
        return load_genesis(path)
    except ConfigError as e:
        console.print(f"[red]cannot read the genesis file:[/] {e}")
        sys.exit(_EXIT_USAGE)


def _db_path(data_dir: str | None, config_path: str | None) -> tuple[str, str | None]:
    """(RocksDB path, the config's genesis file or None). Exits 2 on a usage error."""
    from raft_ledger_node.audit import AuditError, resolve_db_path
    from raft_ledger_node.config import ConfigError, load_config

    if (data_dir is None) == (config_path is None):
        raise click.UsageError("give exactly one of --data-dir and --config")
    genesis_file = None
    if config_path is not None:
        try:
            cfg = load_config(config_path)
        except ConfigError as e:
            console.print(f"[red]cannot read the validator config:[/] {e}")
            sys.exit(_EXIT_USAGE)
        data_dir, genesis_file = cfg.data_dir, cfg.genesis_file
    try:
        return resolve_db_path(data_dir), genesis_file
    except AuditError as e:
        console.print(f"[red]cannot audit:[/] {e}")
        sys.exit(_EXIT_USAGE)


@contextlib.contextmanager
def _bar(what: str):
    """A rich progress bar on stderr; yields a ``progress(done, total)`` callback."""
    with Progress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


_data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False),
                                help="A stopped validator's data directory (or its db/ directory).")
_config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                              help="The validator's config (JSON): its data directory and genesis file.")
_genesis_option = click.option("--genesis", "genesis_file", type=click.Path(dir_okay=False),
                               help="The chain's genesis file (default: the config's).")


def _resolve(data_dir, config_path, genesis_file):
    db, config_genesis = _db_path(data_dir, config_path)
    genesis_file = genesis_file or config_genesis
    if genesis_file is None:
        raise click.UsageError("--genesis is required with --data-dir")
    return db, _genesis(genesis_file)


@click.group(invoke_without_command=True)
@_data_dir_option
@_config_option
@_genesis_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.pass_context
def audit(ctx, data_dir, config_path, genesis_file, as_json):
    """Replay a stopped validator's RocksDB from genesis and check every stored byte of
    history: block hashes and links, envelopes, the replayed headers (transaction log,
    state hash, account tree, validator sets), log nodes, the transaction index, member
    signatures against the keys valid at each height, cosignatures, the final state.
    Prints the FIRST inconsistency with its height (exit 1), or a summary (exit 0).

    Subcommands: `audit export` (JSON Lines with proofs) and `audit verify-export`."""
    if ctx.invoked_subcommand is not None:
        return
    from raft_ledger_node.audit import AuditError, audit as run_audit

    db, genesis = _resolve(data_dir, config_path, genesis_file)
    try:
        with _bar("auditing blocks") as progress:
            report = run_audit(db, chain_id=genesis.chain_id, genesis_hash=genesis.hash,
                               configuration=genesis.configuration, progress=progress)
    except AuditError as e:
        console.print(f"[red]cannot audit:[/] {e}")
        sys.exit(_EXIT_USAGE)
    summary = (f"{report.blocks} blocks, {report.transactions} transactions, {report.cosignatures} cosignatures "
               f"in {report.seconds:.2f} s")
    if as_json:
        i = report.inconsistency
        click.echo(json.dumps({"clean": report.clean, "blocks": report.blocks, "transactions": report.transactions,
                               "cosignatures": report.cosignatures, "seconds": round(report.seconds, 3),
                               "inconsistency": None if i is None else {"height": i.height, "kind": i.kind,
                                                                        "detail": i.detail}}, indent=2))
        sys.exit(0 if report.clean else _EXIT_FOUND)
    if report.inconsistency is not None:
        i = report.inconsistency
        click.echo(f"INCONSISTENT at height {i.height}: {i.kind}: {i.detail}")
        click.echo(f"audited before it: {summary}")
        sys.exit(_EXIT_FOUND)
    click.echo(f"clean: {summary}")


def _remote_export(cluster: str, identity: str, validator: str | None, out_path: str, from_height: int,
                   to_height: int, resume: bool) -> None:
    """Stream ``LedgerService/ExportAudit`` as ``identity`` (mutual TLS with its
    certificate from the cluster directory) from ``validator`` (default: the first that
    answers) into ``out_path``. Exit 1 refused or failed mid-stream (the file ends at a
    block boundary or mid-block: rerun with --resume), 2 usage, 4 nobody answered."""
    import grpc

    from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
    from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
    from raft_ledger_node import localcluster
    from raft_ledger_node.audit import resume_point, write_remote_export
    from raft_ledger_node.cli.common import CliError, ExitCode

    try:
        validators = localcluster.cluster_validators(cluster)
    except localcluster.NoClusterError as e:
        raise CliError(f"{e}: give the cluster directory with --cluster", ExitCode.USAGE) from None
    if validator is not None:
        validators = [v for v in validators if v.id == validator]
        if not validators:
            raise click.BadParameter(f"no validator {validator!r} in {cluster}", param_hint="--validator")
    mode = "w"
    if resume:
        if from_height:
            raise click.UsageError("give --resume or --from-height, not both")
        try:
            with open(out_path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
        keep, from_height = resume_point(lines)
        with open(out_path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines[:keep]))
        mode = "a"
        console.print(f"resuming {out_path} at height {from_height} ({keep} lines kept)")
    elif from_height > 1:
        mode = "a"  # continue an export that ended at from_height - 1
    last_error = None
    for v in validators:
        try:
            channel = localcluster.grpc_channel(cluster, v.grpc_address, identity)
        except OSError as e:
            raise CliError(f"no TLS files for {identity!r} in {cluster}: {e}", ExitCode.USAGE) from None
        with channel:
            stream = pb_grpc.LedgerServiceStub(channel).ExportAudit(
                pb.ExportAuditRequest(from_height=from_height, to_height=to_height))
            try:
                with open(out_path, mode, encoding="utf-8") as out, _bar(f"exporting blocks from {v.id}") as progress:
                    first = from_height or 1
                    report = write_remote_export(
                        stream, out, progress=lambda h, total: progress(h - first + 1, max(total - first + 1, 1)))
            except grpc.RpcError as e:
                code = e.code()
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and mode != "a":
                    last_error = e
                    continue  # nothing of it written yet: ask the next validator
                exit_code = ExitCode.UNAVAILABLE if code == grpc.StatusCode.UNAVAILABLE else ExitCode.ERROR
                hint = "; rerun with --resume to continue" if code == grpc.StatusCode.UNAVAILABLE else ""
                raise CliError(f"{v.id} ({v.grpc_address}): {code.name}: {e.details()}{hint}", exit_code) from None
        click.echo(f"exported {report.transactions} transactions from {v.id} to {out_path}; last checkpoint height "
                   f"{report.certified_height} (tree size {report.tree_size}); {report.unproven} unproven; "
                   f"{report.seconds:.2f} s")
        return
    raise CliError(f"no validator answered: {last_error.code().name if last_error else 'none listed'}",
                   ExitCode.UNAVAILABLE)


@audit.command("export")
@_data_dir_option
@_config_option
@_genesis_option
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="The JSON Lines file to write.")
@click.option("--remote", is_flag=True,
              help="Stream the export from a running validator (LedgerService/ExportAudit, auditor role) "
                   "instead of reading a stopped validator's RocksDB.")
@click.option("--cluster", default="data/cluster", show_default=True, help="--remote: the cluster directory "
              "(genesis.json, the identity's TLS certificate under members/).")
@click.option("--as", "identity", default="auditor", show_default=True, help="--remote: the identity to connect as.")
@click.option("--validator", default=None, help="--remote: the validator to ask (default: the first that answers).")
@click.option("--from-height", default=0, type=click.IntRange(min=0),
              help="--remote: first height; above 1 the file is appended to (continue an export that ended just before).")
@click.option("--to-height", default=0, type=click.IntRange(min=0),
              help="--remote: last height (default: the newest certified height).")
@click.option("--resume", is_flag=True, help="--remote: continue an interrupted export in --out: its last block is "
              "fetched again, the lines before it are kept.")
def export_cmd(data_dir, config_path, genesis_file, out_path, remote, cluster, identity, validator, from_height,
               to_height, resume):
    """Write every transaction (height, position, leaf index, hash, signer, key id,
    envelope, result, inclusion proof) as JSON Lines with the certificates that prove
    them. A third party checks it with `audit verify-export` (the SDK alone). The
    export does not audit: run `audit` for that.

    Local (--data-dir/--config): a stopped validator's RocksDB, proofs against its
    newest certified checkpoint. --remote: streamed from a running validator as the
    auditor, each block proven against its own certified checkpoint, with a progress
    bar over the heights; --resume or --from-height continue an export."""
    if remote:
        if data_dir is not None or config_path is not None:
            raise click.UsageError("--remote reads a running validator: no --data-dir or --config")
        _remote_export(cluster, identity, validator, out_path, from_height, to_height, resume)
        return
    if from_height or to_height or resume:
        raise click.UsageError("--from-height, --to-height and --resume need --remote")
    from raft_ledger_node.audit import AuditError, export

    db, genesis = _resolve(data_dir, config_path, genesis_file)
    try:
        with open(out_path, "w", encoding="utf-8") as out, _bar("exporting blocks") as progress:
            report = export(db, out, chain_id=genesis.chain_id, genesis_hash=genesis.hash, progress=progress)
    except AuditError as e:
        console.print(f"[red]cannot export:[/] {e}")
        sys.exit(_EXIT_USAGE)
    if report.certified_height == 0:
        console.print("[yellow]no certified checkpoint in this data directory: the export has no proofs[/]")
    click.echo(f"exported {report.transactions} transactions to {out_path}; proofs against the checkpoint of height "
               f"{report.certified_height} (tree size {report.tree_size}); {report.unproven} after it, unproven; "
               f"{report.seconds:.2f} s")


@audit.command("verify-export")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--genesis", "genesis_file", required=True, type=click.Path(dir_okay=False), help="The chain's genesis file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def verify_export_cmd(file, genesis_file, as_json):
    """Verify an audit export with the SDK alone: the certificate by a majority of the
    genesis validators, every inclusion proof, completeness of the log below the
    certified size, every member signature genesis has the key for (keys added later by
    governance are reported as unverifiable by key, not as failures)."""
    from raft_ledger_node.audit import verify_export

    genesis = _genesis(genesis_file)
    with open(file, encoding="utf-8") as f:
        lines = f.read().splitlines()
    member_keys = {(m.id, k.key_id): k.public_key for m in genesis.members for k in m.keys}
    with _bar("verifying transactions") as progress:
        rep = verify_export(lines, validators=genesis.validator_keys, origin=genesis.checkpoint_origin,
                            member_keys=member_keys, progress=progress)
    if as_json:
        c = rep.checkpoint
        click.echo(json.dumps({
            "verified": rep.failure is None, "transactions": rep.transactions, "proven": rep.proven,
            "unproven": rep.unproven, "signatures_verified": rep.signatures_verified,
            "unverifiable_by_key": rep.unverifiable_by_key, "rejected_invalid": rep.rejected_invalid,
            "checkpoint": None if c is None else {"height": c.height, "tree_size": c.tree_size},
            "failures": rep.failures[:100], "failures_total": len(rep.failures)}, indent=2))
        sys.exit(0 if rep.failure is None else _EXIT_FOUND)
    if rep.failure is not None:
        click.echo(f"NOT VERIFIED: {rep.failure}")
        if len(rep.failures) > 1:
            click.echo(f"({len(rep.failures) - 1} more failures)")
        sys.exit(_EXIT_FOUND)
    cp = rep.checkpoint
    where = f"height {cp.height}, tree size {cp.tree_size}" if cp else "no certified checkpoint"
    click.echo(f"verified: {rep.proven} of {rep.transactions} transactions included in the certified log ({where}); "
               f"{rep.signatures_verified} signatures verified with genesis keys, {rep.unverifiable_by_key} "
               f"unverifiable by key, {rep.rejected_invalid} invalid ones recorded as rejected; {rep.unproven} unproven")


@click.command("verify-receipt")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--genesis", "genesis_file", required=True, type=click.Path(dir_okay=False), help="The chain's genesis file.")
def verify_receipt(file, genesis_file):
    """Verify a transaction receipt (C2SP tlog-proof) offline: the certificate by a
    majority of the genesis validator set, and the transaction's inclusion in the
    certified log. Prints what it proves, or why it fails (exit 1)."""
    from raft_ledger_client import VerificationError
    from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
    from raft_ledger_client.receipt import Receipt, verify_receipt as verify

    genesis = _genesis(genesis_file)
    with open(file, "rb") as f:
        text = f.read()
    try:
        receipt = Receipt.parse(text)
        checkpoint = verify(receipt, genesis.validator_keys, genesis.checkpoint_origin)
    except VerificationError as e:
        click.echo(f"NOT VERIFIED: {e}")
        sys.exit(_EXIT_FOUND)
    stx = pb.SignedTransaction()
    try:
        stx.ParseFromString(receipt.transaction)
        signer = f"{stx.member_id} (key {stx.key_id})"
    except Exception:
        signer = "(the envelope is not a SignedTransaction)"
    key = {(m.id, k.key_id): k.public_key for m in genesis.members for k in m.keys}.get((stx.member_id, stx.key_id))
    signature = "key not in genesis (added by governance): not checked"
    if key is not None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(key).verify(stx.signature, stx.body)
            signature = "verified with the signer's genesis key"
        except (InvalidSignature, ValueError):
            signature = "does NOT verify with the signer's genesis key (the ledger recorded a rejection)"
    click.echo(json.dumps({
        "verified": True,
        "tx_hash": hashlib.sha256(receipt.transaction).hexdigest(),
        "signer": signer,
        "signature": signature,
        "leaf_index": receipt.leaf_index,
        "height": checkpoint.height,
        "tree_size": checkpoint.tree_size,
        "block_hash": base64.b64encode(checkpoint.block_hash).decode(),
        "proves": (f"this transaction is leaf {receipt.leaf_index} of the log of size {checkpoint.tree_size} that "
                   f"a majority of the genesis validators certified at height {checkpoint.height}"),
    }, indent=2))
