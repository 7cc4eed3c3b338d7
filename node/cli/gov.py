"""Governance and certificate commands: ``gov propose | sign | submit | show`` and
``ca init | issue-validator | sign``.

The Fabric workflow (``configtxlator`` + ``peer channel signconfigtx``) from the shell:
an operator writes a proposal file built on the current configuration version, each
administrator adds an approval offline with their own key, anyone with an admin or
operator identity submits it. The work is the SDK's
(:mod:`raft_ledger_client.governance`); these commands only translate.
"""
from __future__ import annotations

import json
import os
import sys

import click

from raft_ledger_node.cli.common import DEFAULT_CLUSTER_DIR, console, print_table, table, translate_errors


def _gov():
    from raft_ledger_client import governance

    return governance


def _client(cluster, genesis, identity, key_id, key_file, tls_key=None, tls_cert=None):
    """An SDK client for ``identity``: from a generated cluster directory, or from a
    genesis file plus the identity's signing key and TLS client key and certificate."""
    from raft_ledger_node.localcluster import member_client

    if genesis:
        from raft_ledger_client import LedgerClient

        if not key_file:
            raise click.UsageError("--genesis needs --key (the identity's Ed25519 PEM key)")
        if not (tls_key and tls_cert):
            raise click.UsageError("--genesis needs --tls-key and --tls-cert (the identity's TLS client key and certificate)")
        return LedgerClient.from_genesis(genesis, member_id=identity, key_id=key_id, key_file=key_file,
                                         tls_key_file=tls_key, tls_cert_file=tls_cert)
    return member_client(cluster, identity, key_id=key_id, key_file=key_file)


def _connection_options(f):
    for opt in reversed([
        click.option("--cluster", default=DEFAULT_CLUSTER_DIR, show_default=True,
                     help="Generated cluster directory (genesis.json, members/<id>.pem)."),
        click.option("--genesis", default=None, type=click.Path(dir_okay=False, exists=True),
                     help="Genesis file of the chain (instead of --cluster)."),
        click.option("--as", "identity", default="operator", show_default=True,
                     help="Identity that talks to the cluster (an admin or operator for submit)."),
        click.option("--key-id", default="k1", show_default=True, help="Key id of that identity's key."),
        click.option("--key", "key_file", default=None, type=click.Path(dir_okay=False, exists=True),
                     help="That identity's Ed25519 PEM key (default with --cluster: CLUSTER/members/ID.pem)."),
        click.option("--tls-key", default=None, type=click.Path(dir_okay=False, exists=True),
                     help="With --genesis: that identity's TLS client key (PEM)."),
        click.option("--tls-cert", default=None, type=click.Path(dir_okay=False, exists=True),
                     help="With --genesis: that identity's TLS client certificate (PEM, from `ca sign`)."),
    ]):
        f = opt(f)
    return f


def _errors(fn):
    """translate_errors (SDK and library errors), plus the file and format errors of
    proposal, key and certificate files these commands read."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except (OSError, ValueError) as e:
            raise click.ClickException(str(e)) from None

    return translate_errors(wrapper)


@click.group()
def gov():
    """Governance: propose, co-sign offline, submit and show configuration changes.

    \b
    1. ledger-validator gov propose --add-member bank-d.pub.json --out p.json
    2. ledger-validator gov sign p.json --member admin-1 --key admin-1.pem   (each admin, offline)
    3. ledger-validator gov submit p.json
    4. ledger-validator gov show
    """


def _pair(value: str, sep: str, what: str) -> tuple[str, str]:
    left, s, right = value.partition(sep)
    if not s or not left:
        raise click.BadParameter(f"expected {what}, not {value!r}")
    return left, right


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


@gov.command()
@_connection_options
@click.option("--add-member", "add_members", multiple=True, type=click.File("r"), metavar="PUBKEY.json",
              help="Add the member of a public-key file (from `member keygen`); roles from --roles.")
@click.option("--roles", default="member", show_default=True, help="Roles of the members added (comma-separated).")
@click.option("--suspend", multiple=True, metavar="ID", help="Suspend a member (signatures and reads refused).")
@click.option("--reinstate", multiple=True, metavar="ID", help="Reinstate a suspended member.")
@click.option("--remove", multiple=True, metavar="ID", help="Remove a member for good (its id is never reused).")
@click.option("--add-key", "add_keys", multiple=True, type=click.File("r"), metavar="PUBKEY.json",
              help="Add the key of a public-key file to its (existing) member; valid from the next block.")
@click.option("--revoke-key", "revoke_keys", multiple=True, metavar="MEMBER:KEY_ID",
              help="Revoke a key: its signatures are refused from the next block on.")
@click.option("--set-roles", multiple=True, metavar="MEMBER=ROLE,…", help="Replace a member's roles (member, auditor, operator).")
@click.option("--set-issuers", multiple=True, metavar="LEDGER=ID,…", help="Replace the issuers of a ledger (empty: none).")
@click.option("--set-admins", default=None, metavar="ID,…:THRESHOLD", help="Replace the administrators and the threshold.")
@click.option("--base-version", type=int, default=None,
              help="Configuration version to build on (default: the current one, read from the cluster).")
@click.option("--chain-id", default=None, help="Chain id (default: from the cluster); with --base-version, works offline.")
@click.option("--valid-hours", type=float, default=24.0, show_default=True, help="Hours the proposal stays valid.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Proposal file to write.")
@_errors
def propose(cluster, genesis, identity, key_id, key_file, tls_key, tls_cert, add_members, roles, suspend, reinstate, remove, add_keys,
            revoke_keys, set_roles, set_issuers, set_admins, base_version, chain_id, valid_hours, out):
    """Write a proposal file of one or more changes, applied in the order given
    (members added, keys added, roles, issuers, admins, suspensions, reinstatements,
    removals, revocations), all or nothing."""
    g = _gov()
    changes = []
    for f in add_members:
        mid, kid, pub = g.read_public_key_file(f)
        changes.append(g.add_member(mid, roles=_csv(roles), keys={kid: pub}))
    for f in add_keys:
        mid, kid, pub = g.read_public_key_file(f)
        changes.append(g.add_key(mid, kid, pub))
    for v in set_roles:
        mid, rs = _pair(v, "=", "MEMBER=ROLE,…")
        changes.append(g.set_roles(mid, _csv(rs)))
    for v in set_issuers:
        lg, ids = _pair(v, "=", "LEDGER=ID,…")
        if not lg.isdigit():
            raise click.BadParameter(f"ledger must be a number, not {lg!r}", param_hint="--set-issuers")
        changes.append(g.set_issuers(int(lg), _csv(ids)))
    if set_admins:
        ids, th = _pair(set_admins, ":", "ID,…:THRESHOLD")
        if not th.isdigit():
            raise click.BadParameter("threshold must be a number", param_hint="--set-admins")
        changes.append(g.set_admins(_csv(ids), int(th)))
    changes += [g.suspend_member(m) for m in suspend]
    changes += [g.reinstate_member(m) for m in reinstate]
    changes += [g.remove_member(m) for m in remove]
    for v in revoke_keys:
        mid, kid = _pair(v, ":", "MEMBER:KEY_ID")
        changes.append(g.revoke_key(mid, kid))
    if not changes:
        raise click.UsageError("name at least one change (see --help)")
    if base_version is None or chain_id is None:
        with _client(cluster, genesis, identity, key_id, key_file, tls_key, tls_cert) as c:
            chain_id = chain_id or c.chain_id
            if base_version is None:
                base_version = c.get_configuration(linearizable=True)["version"]
    p = g.build_proposal(chain_id, base_version, changes, validity_s=valid_hours * 3600)
    with open(out, "w") as f:
        p.dump(f)
    console.print(f"[green]proposal written to {out}[/] (builds on configuration version {base_version}):")
    for line in p.summary:
        console.print(f"  {line}", markup=False, highlight=False)


@gov.command()
@click.argument("proposal", type=click.Path(dir_okay=False, exists=True))
@click.option("--member", required=True, help="The administrator who approves.")
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, exists=True), help="Their Ed25519 PEM key.")
@click.option("--key-id", default="k1", show_default=True, help="Key id of that key in the configuration.")
@_errors
def sign(proposal, member, key_file, key_id):
    """Add an approval to a proposal file, offline (Fabric's signconfigtx). Shows the
    changes decoded from the signed bytes first: that is what you sign."""
    from raft_ledger_client import load_private_key

    g = _gov()
    with open(proposal) as f:
        p = g.ProposalFile.load(f)
    for line in p.summary:
        console.print(f"  {line}", markup=False, highlight=False)
    p.approve(member, key_id, load_private_key(key_file))
    tmp = proposal + ".tmp"
    with open(tmp, "w") as f:
        p.dump(f)
    os.replace(tmp, proposal)
    console.print(f"[green]{member} approved[/]: {len(p.approvals)} approval(s) in {proposal}")


@gov.command()
@click.argument("proposal", type=click.File("r"))
@_connection_options
@_errors
def submit(proposal, cluster, genesis, identity, key_id, key_file, tls_key, tls_cert):
    """Submit a co-signed proposal file; prints the configuration version it made."""
    g = _gov()
    p = g.ProposalFile.load(proposal)
    with _client(cluster, genesis, identity, key_id, key_file, tls_key, tls_cert) as c:
        version = c.submit_governance(p)
    click.echo(f"applied: configuration version {version}")


@gov.command()
@_connection_options
@click.option("--version", "version", type=int, default=0, help="A past version (default: the current one).")
@click.option("--json", "as_json", is_flag=True, help="Print the configuration as JSON.")
@_errors
def show(cluster, genesis, identity, key_id, key_file, tls_key, tls_cert, version, as_json):
    """Print the governed configuration and its version (ids and keys never truncated)."""
    with _client(cluster, genesis, identity, key_id, key_file, tls_key, tls_cert) as c:
        cfg = c.get_configuration(version)
    if as_json:
        click.echo(json.dumps(cfg, indent=2, sort_keys=True))
        return
    click.echo(f"configuration version {cfg['version']} (read at height {cfg['height']}); "
               f"admins {', '.join(cfg['admins'])}, threshold {cfg['threshold']}")
    t = table(["member", "roles", "status", "key", "public key", "valid from", "revoked at"], title="members")
    for m in cfg["members"]:
        for k in m["keys"]:
            t.add_row(m["id"], ",".join(m["roles"]) or "-", m["status"], k["key_id"], k["public_key"],
                      str(k["valid_from"]), str(k["revoked_at"] or "-"))
    print_table(t)
    t = table(["ledger", "issuers"], title="issuers")
    for lg, ids in sorted(cfg["issuers"].items(), key=lambda x: int(x[0])):
        t.add_row(lg, ",".join(ids))
    print_table(t)
    t = table(["validator", "grpc", "raft", "tls_cert_sha256"], title="validators")
    for v in cfg["validators"]:
        t.add_row(v["id"], v["grpc_address"], v["raft_address"], v["tls_cert_sha256"] or "-")
    print_table(t)


@click.group()
def ca():
    """The cluster CA: create it, issue validators' certificates, sign members' requests.

    \b
    Production: keep --ca-dir (ca.key.pem) on an offline machine of the operators.
    1. ledger-validator ca init --ca-dir ca --name "acme-ledger CA"
    2. ledger-validator ca issue-validator --ca-dir ca --id v1 --host validator-1.example.net --out-dir v1
       (each validator; then put ca.crt.pem in genesis tls_ca_certificate, the pins in
       tls_cert_sha256)
    3. ledger-validator ca sign --ca-dir ca --csr bank-a.csr.pem --member bank-a --out bank-a.tls.crt.pem
    """


def _write_new(path: str, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet, created with ``mode`` (never over a key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _read_ca(ca_dir: str) -> tuple[bytes, bytes]:
    with open(os.path.join(ca_dir, "ca.key.pem"), "rb") as f:
        ca_key = f.read()
    with open(os.path.join(ca_dir, "ca.crt.pem"), "rb") as f:
        ca_crt = f.read()
    return ca_key, ca_crt


@ca.command("init")
@click.option("--ca-dir", required=True, type=click.Path(file_okay=False), help="Directory to create ca.key.pem and ca.crt.pem in.")
@click.option("--name", "common_name", default="raft-ledger CA", show_default=True, help="The CA certificate's common name.")
@_errors
def ca_init(ca_dir, common_name):
    """Create the cluster CA: ca.key.pem (PRIVATE, 0600: keep it offline) and ca.crt.pem
    (public: genesis `tls_ca_certificate`). Refuses to overwrite an existing CA."""
    from raft_ledger_node import pki

    os.makedirs(ca_dir, mode=0o700, exist_ok=True)
    key, crt = pki.make_ca(common_name)
    for name in ("ca.key.pem", "ca.crt.pem"):
        if os.path.exists(os.path.join(ca_dir, name)):
            raise click.ClickException(f"{os.path.join(ca_dir, name)} exists: a CA is already there")
    _write_new(os.path.join(ca_dir, "ca.key.pem"), key, 0o600)
    _write_new(os.path.join(ca_dir, "ca.crt.pem"), crt, 0o644)
    console.print(f"[green]CA written to {ca_dir}[/]: ca.key.pem (private: keep offline), ca.crt.pem "
                  "(put its PEM text in genesis as tls_ca_certificate)")


@ca.command("issue-validator")
@click.option("--ca-dir", required=True, type=click.Path(file_okay=False, exists=True), help="Directory with ca.key.pem and ca.crt.pem.")
@click.option("--id", "validator_id", required=True, help="The validator's id in genesis (v1, v2, ...).")
@click.option("--host", "hosts", multiple=True, required=True, metavar="NAME|IP",
              help="A DNS name or IP the validator is dialled at (repeat): the host of its genesis grpc_address, "
                   "and any other name clients use (a load-balancer or Service name).")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False),
              help="Where to write tls.key.pem (0600) and tls.crt.pem for that validator.")
@_errors
def ca_issue_validator(ca_dir, validator_id, hosts, out_dir):
    """Issue a validator's TLS key and certificate (spiffe://ledger/validator/ID, server and
    client auth, DNS/IP names of --host) and print its pin, the genesis `tls_cert_sha256`.
    Refuses to overwrite existing files."""
    from raft_ledger_node import pki

    if not validator_id or "/" in validator_id:
        raise click.BadParameter("a validator id without '/'", param_hint="--id")
    ca_key, ca_crt = _read_ca(ca_dir)
    key_path, crt_path = os.path.join(out_dir, "tls.key.pem"), os.path.join(out_dir, "tls.crt.pem")
    for path in (key_path, crt_path):
        if os.path.exists(path):
            raise click.ClickException(f"{path} exists: move it away first (its pin may be in genesis)")
    try:
        key, crt = pki.issue_certificate(ca_key, ca_crt, kind="validator", identity=validator_id, hosts=tuple(hosts))
    except pki.CertificateError as e:
        raise click.ClickException(str(e)) from None
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    _write_new(key_path, key, 0o600)
    _write_new(crt_path, crt, 0o644)
    console.print(f"[green]validator {validator_id} certificate written to {out_dir}[/] (tls.key.pem, tls.crt.pem) "
                  f"for {', '.join(hosts)}; its genesis tls_cert_sha256:")
    click.echo(pki.certificate_sha256(crt).hex())


@ca.command("sign")
@click.option("--ca-dir", required=True, type=click.Path(file_okay=False, exists=True), help="Directory with ca.key.pem and ca.crt.pem.")
@click.option("--csr", "csr_file", required=True, type=click.Path(dir_okay=False, exists=True), help="The member's CSR (PEM).")
@click.option("--member", required=True, help="The member you mean to certify; the CSR must name it.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Certificate file to write (PEM).")
@_errors
def ca_sign(ca_dir, csr_file, member, out):
    """Issue a member's TLS client certificate from its CSR (`member keygen` writes one)."""
    from raft_ledger_node import pki

    ca_key, ca_crt = _read_ca(ca_dir)
    with open(csr_file, "rb") as f:
        csr = f.read()
    try:
        cert = pki.sign_csr(ca_key, ca_crt, csr, expected_identity=member)
    except pki.CertificateError as e:
        raise click.ClickException(str(e)) from None
    with open(out, "wb") as f:
        f.write(cert)
    console.print(f"[green]certificate for {member} written to {out}[/]")
