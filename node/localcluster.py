"""A cluster of validators on one machine: generate it, reserve its ports, run it, ask its status.

The operator CLI (``ledger-validator init-cluster / status / demo``), the benchmark
(node/bench/), the chaos suite (chaos/) and the integration tests all build their
clusters with this module, so they write the same files, reserve ports the same
way and stop only what they started.

What a generated cluster directory holds (``init_cluster``)::

    genesis.json             chain id, CA certificate, validators (id, gRPC and Raft address,
                             TLS certificate pin), identities (id, roles, public key k1),
                             admins and threshold, issuers per ledger
    ca/ca.crt.pem            the cluster CA's certificate (members need it to verify validators)
    ca/ca.key.pem            the CA's private key (mode 0600; signs members' CSRs)
    v1/config.json ...       one per validator: its id, data dir, the genesis file, its TLS
                             files, the cluster's shared Raft password (mode 0600: a secret)
    v1/tls.{key,crt}.pem     the validator's TLS key (0600) and certificate
    members/<id>.pem         each identity's Ed25519 signing key, PKCS#8 PEM (mode 0600)
    members/<id>.tls.{key,crt}.pem  each identity's TLS client key (0600) and certificate
    v1/data, v1/validator.log written by the running validator (v1/data/identity.json:
                             formatted for genesis, so the genesis validators vote)
    v4/validator.json ...    a validator added later (``add_validator_files``): the entry
                             ``add_validator`` proposes (addresses, TLS pin, public key)

Validator ``i`` (1-based) listens on gRPC ``base_port + i``, Raft ``base_port + 100 + i``
and serves its metrics on ``base_port + 150 + i`` (HTTPS, operator certificates only).

Ports (``reserve_ports``): a block of ports ``base + offset`` is handed out only if an
exclusive ``flock`` on ``$TMPDIR/ledger-test-ports/<base>.lock`` is granted *and*
every port binds on the host at that moment. The lock is held until the reservation
is released (the kernel drops it when the process dies), so concurrent runs on this
machine (other worktrees, test sessions, benchmarks) never pick the same base, even
while one of them has a validator down and its ports momentarily free. Callers that
use different offset layouts are kept apart by the lock only where their bases
coincide; elsewhere only the bind probe separates them.

Exceptions (all raised by this module; it never raises or catches a CLI framework's)::

    LocalClusterError                 base class
     ├── ClusterExistsError           init_cluster: the directory holds a cluster and force is off
     ├── NoClusterError               the directory holds no genesis.json
     ├── UnknownValidatorError        a validator id that is not in the genesis file
     ├── ValidatorExitedError         a started validator exited while waiting for readiness
     ├── ClusterNotReadyError         no leader with every validator ready before the deadline
     └── NoFreePortsError             no port block free in the bases probed

A malformed genesis file raises :class:`raft_ledger_node.config.ConfigError` as ``load_genesis`` does.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Sequence

from raft_ledger_node.config import Genesis, ValidatorInfo, load_genesis

#: Time ``LocalCluster.wait_ready`` waits for a leader and every validator ready, by default.
CLUSTER_READY_TIMEOUT_S = 60.0
#: Pause between two status polls while waiting for readiness.
READY_POLL_S = 0.3
#: Deadline of one Admin GetStatus call, by default.
STATUS_TIMEOUT_S = 2.0
#: Time a validator gets to exit after its signal before it is SIGKILLed.
VALIDATOR_STOP_TIMEOUT_S = 15.0
#: Time a SIGKILLed validator gets to be reaped.
VALIDATOR_KILL_WAIT_S = 5.0
#: Raft ports are the gRPC ports plus this.
RAFT_PORT_OFFSET = 100
#: Metrics ports (node/metrics.py) are the gRPC ports plus this: validator i on base + 150 + i,
#: so a cluster has at most METRICS_PORT_OFFSET - RAFT_PORT_OFFSET - 1 validators with metrics.
METRICS_PORT_OFFSET = 150
#: Bases ``reserve_ports`` probes before it gives up, by default.
PORT_PROBES_MAX = 100
#: Highest TCP port.
PORT_MAX = 65_535


class LocalClusterError(RuntimeError):
    """A local cluster could not be generated, started or reached (see the module docstring's tree)."""


class ClusterExistsError(LocalClusterError):
    """``init_cluster`` found a cluster in its directory and was not told to replace it."""

    def __init__(self, directory: str) -> None:
        super().__init__(f"{directory} already holds a cluster")
        self.directory = directory


class NoClusterError(LocalClusterError):
    """The directory holds no genesis.json."""

    def __init__(self, directory: str) -> None:
        super().__init__(f"no genesis.json in {directory}")
        self.directory = directory


class UnknownValidatorError(LocalClusterError):
    """A validator id the genesis file does not name."""


class ValidatorExitedError(LocalClusterError):
    """A validator this object started exited while the cluster was expected to come up."""

    def __init__(self, validator_id: str, returncode: int, log_path: str) -> None:
        super().__init__(f"validator {validator_id} exited with code {returncode}; see {log_path}")
        self.validator_id = validator_id
        self.returncode = returncode
        self.log_path = log_path


class ClusterNotReadyError(LocalClusterError):
    """No leader with every validator ready before the deadline."""


class NoFreePortsError(LocalClusterError):
    """Every probed port block was reserved by someone else or had a port in use."""


# -- generation ---------------------------------------------------------------------------


def write_private_key(path: str) -> bytes:
    """Generate an Ed25519 key, write it to ``path`` as unencrypted PKCS#8 PEM with mode 0600
    (replacing the file) and return the raw 32-byte public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_secret(path, pem)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _write_secret(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # O_CREAT's mode does not apply to a file that already existed
        f.write(data)


@dataclass(frozen=True)
class GeneratedCluster:
    """The files ``init_cluster`` wrote (absolute or relative as ``directory`` was given)."""

    directory: str
    genesis_path: str
    #: validator id -> path of its config.json
    config_paths: dict[str, str] = field(default_factory=dict)
    #: identity id -> path of its Ed25519 private key (PEM)
    key_paths: dict[str, str] = field(default_factory=dict)
    #: identity id -> (TLS private key PEM path, TLS certificate PEM path); empty when plaintext
    tls_paths: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: the cluster CA's certificate (PEM); "" when plaintext
    ca_path: str = ""


#: Identities every generated cluster has besides its member banks (ids, roles).
ISSUER_ID = "central-bank"
AUDITOR_ID = "auditor"
OPERATOR_ID = "operator"
ADMIN_IDS = ("admin-1", "admin-2", "admin-3")
ADMIN_THRESHOLD = 2
#: Ledgers the generated issuer issues unless told otherwise (the demo's USD and EUR).
DEFAULT_ISSUED_LEDGERS = (840, 978)


def member_tls_paths(directory: str, identity: str) -> tuple[str, str, str]:
    """(CA certificate, TLS key, TLS certificate) paths of ``identity`` in a generated
    cluster directory (they exist unless the cluster is plaintext)."""
    return (
        os.path.join(directory, "ca", "ca.crt.pem"),
        os.path.join(directory, "members", f"{identity}.tls.key.pem"),
        os.path.join(directory, "members", f"{identity}.tls.crt.pem"),
    )


def init_cluster(directory: str, validators: int, members: Sequence[str], host: str, base_port: int, *,
                 force: bool = False, issuers: dict[int, Sequence[str]] | None = None,
                 insecure_plaintext: bool = False, metrics: bool = True) -> GeneratedCluster:
    """Write a development cluster under ``directory``: a CA, genesis.json, one config,
    TLS key and certificate per validator, and for every identity an Ed25519 signing key
    and a TLS client certificate.

    In production the members generate their own keys (``ledger-member keygen``) and
    only public keys and CSRs reach the operator; this one-command setup generates
    them all on this host, for development.

    Validators are ``v1..v<validators>`` on ``host`` (gRPC ``base_port + i``, Raft
    ``base_port + 100 + i``). Identities: each of ``members`` (role ``member``),
    ``central-bank`` (role ``member``; issuer of ledgers 840 and 978 unless ``issuers``
    says otherwise), ``auditor`` (role ``auditor``), ``operator`` (role ``operator``)
    and ``admin-1..3`` (administrators, threshold 2); every identity has key id ``k1``.
    The chain id is ``local-<8 random hex digits>``; the validators share one random
    Raft password. ``insecure_plaintext`` writes no TLS material and marks the configs
    plaintext (development only). With ``force`` an existing cluster in ``directory``
    is deleted first (its data too). With ``metrics`` each config names a
    ``metrics_listen_address`` on ``host`` (port ``base_port + 150 + i``). Raises ClusterExistsError if ``directory`` holds a
    genesis.json and ``force`` is off, ValueError if ``validators`` < 1, a port would
    exceed 65535, or an issuer is not an identity of the cluster.
    """
    from raft_ledger_node import pki
    from raft_ledger_node.raft import membership

    if validators < 1:
        raise ValueError(f"need at least one validator, got {validators}")
    if base_port + RAFT_PORT_OFFSET + validators > PORT_MAX:
        raise ValueError(f"base port {base_port} leaves no room for {validators} validators' Raft ports")
    if metrics and (validators >= METRICS_PORT_OFFSET - RAFT_PORT_OFFSET
                    or base_port + METRICS_PORT_OFFSET + validators > PORT_MAX):
        raise ValueError(f"no room for {validators} validators' metrics ports from base port {base_port} "
                         f"(at most {METRICS_PORT_OFFSET - RAFT_PORT_OFFSET - 1} validators; or metrics=False)")
    genesis_file = os.path.join(directory, "genesis.json")
    if os.path.exists(genesis_file):
        if not force:
            raise ClusterExistsError(directory)
        shutil.rmtree(directory)
    os.makedirs(os.path.join(directory, "members"), exist_ok=True)
    if issuers is None:
        issuers = {lg: [ISSUER_ID] for lg in DEFAULT_ISSUED_LEDGERS}
    roles: dict[str, list[str]] = {m: ["member"] for m in members}
    if any(ISSUER_ID in who for who in issuers.values()):
        roles.setdefault(ISSUER_ID, ["member"])
    roles.setdefault(AUDITOR_ID, ["auditor"])
    roles.setdefault(OPERATOR_ID, ["operator"])
    for a in ADMIN_IDS:
        roles.setdefault(a, [])
    for lg, who in issuers.items():
        unknown = [w for w in who if w not in roles]
        if unknown:
            raise ValueError(f"issuers of ledger {lg}: {unknown} are not identities of this cluster")

    ca_path = ""
    tls_paths: dict[str, tuple[str, str]] = {}
    genesis: dict = {"chain_id": f"local-{secrets.token_hex(4)}"}
    if not insecure_plaintext:
        os.makedirs(os.path.join(directory, "ca"), exist_ok=True)
        ca_key, ca_cert = pki.make_ca(f"raft-ledger {genesis['chain_id']} CA")
        _write_secret(os.path.join(directory, "ca", "ca.key.pem"), ca_key)
        ca_path = os.path.join(directory, "ca", "ca.crt.pem")
        with open(ca_path, "wb") as f:
            f.write(ca_cert)
        genesis["tls_ca_certificate"] = ca_cert.decode()
    vals = []
    for i in range(1, validators + 1):
        v = {
            "id": f"v{i}",
            "grpc_address": f"{host}:{base_port + i}",
            "raft_address": f"{host}:{base_port + RAFT_PORT_OFFSET + i}",
        }
        vdir = os.path.join(directory, v["id"])
        os.makedirs(vdir, exist_ok=True)
        # The validator's checkpoint-signing key (its cosignatures); in production
        # each operator generates its own and sends only the public key.
        v["public_key"] = write_private_key(os.path.join(vdir, "signing.key.pem")).hex()
        if not insecure_plaintext:
            hosts = tuple(dict.fromkeys([host, "localhost", "127.0.0.1"]))
            key, cert = pki.issue_certificate(ca_key, ca_cert, kind="validator", identity=v["id"], hosts=hosts)
            _write_secret(os.path.join(vdir, "tls.key.pem"), key)
            with open(os.path.join(vdir, "tls.crt.pem"), "wb") as f:
                f.write(cert)
            v["tls_cert_sha256"] = pki.certificate_sha256(cert).hex()
        vals.append(v)
    mems = []
    key_paths = {}
    for m, r in roles.items():
        key_paths[m] = os.path.join(directory, "members", f"{m}.pem")
        pub = write_private_key(key_paths[m])
        mems.append({"id": m, "roles": r, "keys": [{"key_id": "k1", "public_key": pub.hex()}]})
        if not insecure_plaintext:
            _, key_file, cert_file = member_tls_paths(directory, m)
            key, cert = pki.issue_certificate(ca_key, ca_cert, kind="member", identity=m)
            _write_secret(key_file, key)
            with open(cert_file, "wb") as f:
                f.write(cert)
            tls_paths[m] = (key_file, cert_file)
    genesis.update(
        validators=vals, members=mems, admins=list(ADMIN_IDS), threshold=ADMIN_THRESHOLD,
        issuers={str(lg): list(who) for lg, who in sorted(issuers.items())},
    )
    with open(genesis_file, "w") as f:
        json.dump(genesis, f, indent=2)
    password = secrets.token_urlsafe(24)
    config_paths = {}
    for v in vals:
        vdir = os.path.join(directory, v["id"])
        cfg = {
            "validator_id": v["id"],
            "data_dir": "data",
            "genesis_file": "../genesis.json",
            "raft_password": password,
            "signing_key_file": "signing.key.pem",
        }
        if insecure_plaintext:
            cfg["insecure_plaintext"] = True
        else:
            cfg.update(tls_cert_file="tls.crt.pem", tls_key_file="tls.key.pem")
        if metrics:
            port = int(v["grpc_address"].rpartition(":")[2]) + METRICS_PORT_OFFSET
            # A plaintext validator serves metrics on loopback only (node/metrics.py).
            cfg["metrics_listen_address"] = f"{'127.0.0.1' if insecure_plaintext else host}:{port}"
        config_paths[v["id"]] = os.path.join(vdir, "config.json")
        _write_secret(config_paths[v["id"]], json.dumps(cfg, indent=2).encode())
        # The genesis validators' data directories may vote from the first start (raft/membership.py).
        membership.format_data_dir(os.path.join(vdir, "data"), chain_id=genesis["chain_id"], validator_id=v["id"],
                                   genesis=True)
    return GeneratedCluster(directory=directory, genesis_path=genesis_file, config_paths=config_paths,
                            key_paths=key_paths, tls_paths=tls_paths, ca_path=ca_path)


def member_client(directory: str, identity: str, *, key_id: str = "k1", key_file: str | None = None, **kw):
    """A member SDK client (``raft_ledger_client.LedgerClient``) for ``identity`` of the
    generated cluster in ``directory``: its signing key ``members/<id>.pem`` (key id
    k1), the chain id, validator addresses and CA from genesis, and its TLS client
    key and certificate (``member_tls_paths``); plaintext (``insecure=True``) only for a
    cluster generated with ``insecure_plaintext``. ``key_id``/``key_file`` name another
    signing key (a rotated one). ``kw`` goes to LedgerClient (retry, timeouts, ...).
    Raises NoClusterError, OSError, ValueError."""
    from raft_ledger_client import LedgerClient

    gpath = genesis_path(directory)
    if not cluster_is_tls(directory):
        kw.setdefault("insecure", True)
    else:
        _, tls_key_file, tls_cert_file = member_tls_paths(directory, identity)
        kw.setdefault("tls_key_file", tls_key_file)
        kw.setdefault("tls_cert_file", tls_cert_file)
    # Validators added since genesis, so the client reaches the cluster when the genesis ones are gone.
    genesis_ids = {v.id for v in load_genesis(gpath).validators}
    kw.setdefault("extra_addresses", [v.grpc_address for v in cluster_validators(directory) if v.id not in genesis_ids])
    return LedgerClient.from_genesis(
        gpath, member_id=identity, key_id=key_id,
        key_file=key_file or os.path.join(directory, "members", f"{identity}.pem"), **kw)


def cluster_is_tls(directory: str) -> bool:
    """Whether the cluster in ``directory`` serves gRPC over mutual TLS (its genesis names a
    CA); False for one generated with ``insecure_plaintext``. Raises NoClusterError."""
    with open(genesis_path(directory)) as f:
        return bool(json.load(f).get("tls_ca_certificate"))


def client_tls(directory: str, identity: str = OPERATOR_ID):
    """``raft_ledger_client.ClientTLS`` of ``identity`` in a generated TLS cluster (the CA,
    its client certificate and key). Raises OSError if the files are missing."""
    from raft_ledger_client import ClientTLS

    ca, key_file, cert_file = member_tls_paths(directory, identity)
    return ClientTLS.from_files(ca_file=ca, cert_file=cert_file, key_file=key_file)


def grpc_channel(directory: str, address: str, identity: str = OPERATOR_ID, options=()):
    """A raw ``grpc.Channel`` to ``address`` as ``identity`` of the cluster in
    ``directory``: mutual TLS with its client certificate, or plaintext for a plaintext
    cluster. For tools that speak to a validator below the SDK (status, attacks, tests)."""
    import grpc

    if not cluster_is_tls(directory):
        return grpc.insecure_channel(address, options=list(options))
    tls = client_tls(directory, identity)
    creds = grpc.ssl_channel_credentials(root_certificates=tls.ca_pem, private_key=tls.key_pem,
                                         certificate_chain=tls.cert_pem)
    return grpc.secure_channel(address, creds, options=list(options))


def genesis_path(directory: str) -> str:
    """Path of ``directory``'s genesis.json; raises NoClusterError if there is none."""
    path = os.path.join(directory, "genesis.json")
    if not os.path.exists(path):
        raise NoClusterError(directory)
    return path


# -- validators added after genesis -------------------------------------------------------

#: The governance entry of a validator added after genesis, in its directory.
ADDED_VALIDATOR_FILE = "validator.json"


def cluster_validators(directory: str) -> tuple[ValidatorInfo, ...]:
    """The genesis validators of ``directory`` and those added with :func:`add_validator_files`,
    in id order (``v1``, ``v2``, … ``v10``). Removed ones are listed too (their files stay)."""
    genesis = load_genesis(genesis_path(directory))
    out = {v.id: v for v in genesis.validators}
    for name in os.listdir(directory):
        path = os.path.join(directory, name, ADDED_VALIDATOR_FILE)
        if name not in out and os.path.exists(path):
            with open(path) as f:
                e = json.load(f)
            out[name] = ValidatorInfo(e["id"], e["grpc_address"], e["raft_address"],
                                      bytes.fromhex(e.get("tls_cert_sha256", "")), bytes.fromhex(e["public_key"]))
    return tuple(sorted(out.values(), key=lambda v: (len(v.id), v.id)))


def validator_entry(v: ValidatorInfo) -> dict:
    """The dict ``raft_ledger_client.governance.add_validator`` takes, for ``v``."""
    return {"id": v.id, "grpc_address": v.grpc_address, "raft_address": v.raft_address,
            "tls_cert_sha256": v.tls_cert_sha256.hex(), "public_key": v.public_key.hex()}


def add_validator_files(directory: str, validator_id: str | None = None, *, host: str | None = None) -> ValidatorInfo:
    """Write a new validator's files into the cluster directory: ``<id>/`` with its
    checkpoint-signing key, a TLS certificate from the cluster CA (unless plaintext),
    ``config.json`` (the cluster's Raft password) and ``validator.json`` (its entry).

    The id defaults to the next ``v<n>``; the ports follow the cluster's layout (gRPC
    ``base + n``, Raft ``base + 100 + n``). Its data directory is not formatted: it
    starts as a learner once governance has added it. Raises ValueError if the id
    exists. In production the new operator generates its own key and CSR; this writes
    them here, for development."""
    from raft_ledger_node import pki

    genesis = load_genesis(genesis_path(directory))
    known = cluster_validators(directory)
    first = genesis.validators[0]
    base = int(first.grpc_address.rpartition(":")[2]) - int(first.id[1:]) if first.id[1:].isdigit() else None
    numbers = [int(v.id[1:]) for v in known if v.id[1:].isdigit()]
    n = max(numbers, default=0) + 1
    vid = validator_id or f"v{n}"
    if any(v.id == vid for v in known):
        raise ValueError(f"validator {vid!r} already exists in {directory}")
    if vid[1:].isdigit():
        n = int(vid[1:])
    if base is None:
        raise ValueError("the cluster's validators are not named v<n>: cannot derive ports")
    host = host or first.grpc_address.rpartition(":")[0]
    if base + RAFT_PORT_OFFSET + n > PORT_MAX:
        raise ValueError(f"no port left for validator {vid}")
    vdir = os.path.join(directory, vid)
    os.makedirs(vdir, exist_ok=True)
    entry = {"id": vid, "grpc_address": f"{host}:{base + n}", "raft_address": f"{host}:{base + RAFT_PORT_OFFSET + n}",
             "public_key": write_private_key(os.path.join(vdir, "signing.key.pem")).hex(), "tls_cert_sha256": ""}
    with open(os.path.join(directory, first.id, "config.json")) as f:
        template = json.load(f)
    cfg = {"validator_id": vid, "data_dir": "data", "genesis_file": "../genesis.json",
           "raft_password": template["raft_password"], "signing_key_file": "signing.key.pem",
           # Where it learns the current validator set (genesis validators may be gone).
           "join_grpc_addresses": [v.grpc_address for v in known]}
    if template.get("metrics_listen_address"):
        cfg["metrics_listen_address"] = f"{template['metrics_listen_address'].rpartition(':')[0]}:{base + METRICS_PORT_OFFSET + n}"
    if template.get("insecure_plaintext"):
        cfg["insecure_plaintext"] = True
    else:
        with open(os.path.join(directory, "ca", "ca.key.pem"), "rb") as f:
            ca_key = f.read()
        with open(os.path.join(directory, "ca", "ca.crt.pem"), "rb") as f:
            ca_cert = f.read()
        hosts = tuple(dict.fromkeys([host, "localhost", "127.0.0.1"]))
        key, cert = pki.issue_certificate(ca_key, ca_cert, kind="validator", identity=vid, hosts=hosts)
        _write_secret(os.path.join(vdir, "tls.key.pem"), key)
        with open(os.path.join(vdir, "tls.crt.pem"), "wb") as f:
            f.write(cert)
        entry["tls_cert_sha256"] = pki.certificate_sha256(cert).hex()
        cfg.update(tls_cert_file="tls.crt.pem", tls_key_file="tls.key.pem")
    _write_secret(os.path.join(vdir, "config.json"), json.dumps(cfg, indent=2).encode())
    with open(os.path.join(vdir, ADDED_VALIDATOR_FILE), "w") as f:
        json.dump(entry, f, indent=2)
    return ValidatorInfo(vid, entry["grpc_address"], entry["raft_address"], bytes.fromhex(entry["tls_cert_sha256"]),
                         bytes.fromhex(entry["public_key"]))


# -- status --------------------------------------------------------------------------------


def status_rows(genesis_file: str, timeout_s: float = STATUS_TIMEOUT_S, identity: str = OPERATOR_ID) -> list[tuple]:
    """Ask every validator of ``genesis_file`` for its Admin GetStatus, one after the other,
    as ``identity`` (default the ``operator``: the Admin service needs its role) of the
    cluster directory that holds ``genesis_file`` (over mutual TLS unless the cluster is
    plaintext).

    Every validator of the directory is asked: the genesis ones and those added later
    (:func:`cluster_validators`). Returns ``[(ValidatorInfo, GetStatusResponse | grpc.RpcError)]`` in id order:
    the reply (role, term, commit/applied index, head, ready, leader_address), or the
    error of a validator that did not answer within ``timeout_s`` seconds. Raises
    ConfigError if the genesis file cannot be read.
    """
    import grpc

    from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
    from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc

    rows: list[tuple] = []
    directory = os.path.dirname(os.path.abspath(genesis_file))
    for v in cluster_validators(directory):
        with grpc_channel(directory, v.grpc_address, identity) as ch:
            try:
                rows.append((v, pb_grpc.AdminServiceStub(ch).GetStatus(pb.GetStatusRequest(), timeout=timeout_s)))
            except grpc.RpcError as e:
                rows.append((v, e))
    return rows


# -- processes -----------------------------------------------------------------------------


def validator_command(config_path: str) -> list[str]:
    """The argv that runs one validator in the foreground: ``ledger-validator start --config PATH``."""
    return [sys.executable, "-m", "raft_ledger_node.cli", "start", "--config", config_path]


class LocalCluster:
    """Validator processes started from a cluster directory; stopped by PID, only those it started.

    ``procs`` maps validator id -> the ``subprocess.Popen`` of its latest start. Each
    validator appends its output to ``<directory>/<id>/validator.log``. Raises
    NoClusterError if ``directory`` holds no genesis.json, ConfigError if it is malformed.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.genesis: Genesis = load_genesis(genesis_path(directory))
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def genesis_path(self) -> str:
        return os.path.join(self.directory, "genesis.json")

    @property
    def validators(self) -> tuple[ValidatorInfo, ...]:
        """Genesis validators and those added with :func:`add_validator_files`."""
        return cluster_validators(self.directory)

    @property
    def pids(self) -> dict[str, int]:
        """Validator id -> PID, for the validators this object started that are still running."""
        return {vid: p.pid for vid, p in self.procs.items() if p.poll() is None}

    def log_path(self, validator_id: str) -> str:
        return os.path.join(self.directory, validator_id, "validator.log")

    def start(self, validator_id: str, args: Sequence[str] = ()) -> None:
        """Start one validator (it keeps its data directory); ``args`` are appended to
        ``start --config PATH`` (e.g. ``("--log-format", "json")``). Raises UnknownValidatorError."""
        known = [v.id for v in self.validators]
        if validator_id not in known:
            raise UnknownValidatorError(f"unknown validator {validator_id!r}; one of {known}")
        vdir = os.path.join(self.directory, validator_id)
        with open(self.log_path(validator_id), "ab") as log:  # the child keeps its own copy of the fd
            self.procs[validator_id] = subprocess.Popen(
                validator_command(os.path.join(vdir, "config.json")) + list(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=os.getcwd(),
            )

    def start_all(self) -> None:
        for v in self.genesis.validators:
            self.start(v.id)

    def wait_ready(self, timeout_s: float = CLUSTER_READY_TIMEOUT_S) -> None:
        """Poll every validator this object started until all answer, one is leader and all are ready.

        Raises ValidatorExitedError as soon as a started validator has exited,
        ClusterNotReadyError after ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for vid, p in self.procs.items():
                if p.poll() is not None:
                    raise ValidatorExitedError(vid, p.returncode, self.log_path(vid))
            rows = [(v, st) for v, st in status_rows(self.genesis_path, timeout_s=1.0) if v.id in self.procs]
            ok = [st for _, st in rows if not _is_error(st)]
            if len(ok) == len(rows) and any(st.role == "leader" for st in ok) and all(st.ready for st in ok):
                return
            time.sleep(READY_POLL_S)
        raise ClusterNotReadyError(f"cluster not ready after {timeout_s}s; see {self.directory}/v*/validator.log")

    def stop(self, validator_id: str, sig: int = signal.SIGTERM, wait_s: float = VALIDATOR_STOP_TIMEOUT_S) -> None:
        """Send ``sig`` to one validator this object started and wait up to ``wait_s`` seconds
        for it to exit, then SIGKILL it. No-op if it was never started or has exited."""
        p = self.procs.get(validator_id)
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        self._reap(p, wait_s)

    def stop_all(self, wait_s: float = VALIDATOR_STOP_TIMEOUT_S) -> None:
        """SIGTERM every running validator this object started (all at once, so none of them
        sees the others leave one by one), then wait for each as :meth:`stop` does."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            if p.poll() is None:
                self._reap(p, wait_s)

    @staticmethod
    def _reap(p: subprocess.Popen, wait_s: float) -> None:
        try:
            p.wait(wait_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(VALIDATOR_KILL_WAIT_S)


def _is_error(reply) -> bool:
    import grpc

    return isinstance(reply, grpc.RpcError)


# -- ports ---------------------------------------------------------------------------------


def port_lock_dir() -> str:
    """Where the port locks live: ``$TMPDIR/ledger-test-ports`` (created if missing)."""
    path = os.path.join(tempfile.gettempdir(), "ledger-test-ports")
    os.makedirs(path, exist_ok=True)
    return path


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` binds on ``host`` right now. Without SO_REUSEADDR: a port held by
    anyone, listening or in TIME_WAIT, counts as taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def cluster_port_offsets(validators: int, *, metrics: bool = False) -> list[int]:
    """Offsets from a cluster's base port of its gRPC (1..n) and Raft (101..100+n) ports,
    and with ``metrics`` of its metrics ports (151..150+n)."""
    return ([i for i in range(1, validators + 1)] + [RAFT_PORT_OFFSET + i for i in range(1, validators + 1)]
            + ([METRICS_PORT_OFFSET + i for i in range(1, validators + 1)] if metrics else []))


class PortReservation:
    """Ports ``base + offset`` held by an exclusive lock on ``<port_lock_dir>/<base>.lock``.

    ``release()`` (or leaving the ``with`` block) drops the lock; it is idempotent.
    The ports themselves are not bound: the caller's servers bind them.
    """

    def __init__(self, base: int, offsets: Sequence[int], host: str, lock_fd: int) -> None:
        self.base = base
        self.offsets = tuple(offsets)
        self.host = host
        self._fd: int | None = lock_fd

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(self.base + o for o in self.offsets)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "PortReservation":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"PortReservation(base={self.base}, ports={list(self.ports)}, held={self.held})"


def reserve_ports(offsets: Sequence[int], *, start: int, step: int, probes_max: int = PORT_PROBES_MAX,
                  host: str = "127.0.0.1", lock_dir: str | None = None) -> PortReservation:
    """Reserve the first block ``base + offsets`` for ``base = start, start + step, ...``
    that no one else holds and whose ports all bind on ``host``.

    ``offsets`` are non-negative and below ``step`` (so one caller's blocks never
    overlap); at most ``probes_max`` bases are tried. ``lock_dir`` defaults to
    :func:`port_lock_dir`. Raises NoFreePortsError if none is free, ValueError
    for offsets that break the rules above.
    """
    if not offsets or min(offsets) < 0 or max(offsets) >= step:
        raise ValueError(f"offsets {list(offsets)} must be non-empty, >= 0 and < step {step}")
    lock_dir = lock_dir or port_lock_dir()
    for k in range(probes_max):
        base = start + k * step
        if base + max(offsets) > PORT_MAX:
            break
        fd = os.open(os.path.join(lock_dir, f"{base}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if all(port_free(base + o, host) for o in offsets):
            return PortReservation(base, offsets, host, fd)
        os.close(fd)
    raise NoFreePortsError(f"no free port block (offsets {list(offsets)}) from {start} in {probes_max} probes of step {step}")
