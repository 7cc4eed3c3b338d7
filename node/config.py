"""Validator configuration and the genesis file: frozen, every limit and timeout explicit.

A validator config (JSON) names its own id, data directory, the genesis file and
its TLS key and certificate. The genesis file (JSON) fixes the chain id, the
cluster's TLS CA certificate, the validators (id, gRPC and Raft addresses, the
SHA-256 pin of their TLS certificates), the identities (id, roles, Ed25519 public
keys by key id), the administrators and their threshold, and the issuers per
ledger: version 1 of the governed configuration
(:mod:`raft_ledger_node.ledger.governance`). Both are written by
``ledger-validator init-cluster``; ``load_genesis`` validates strictly.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from raft_ledger_node.ledger import limits
from raft_ledger_node.ledger.governance import (
    PUBLIC_KEY_BYTES,
    ROLES,
    Configuration,
    Member,
    MemberKey,
    ValidatorRecord,
)


class ConfigError(ValueError):
    """A config or genesis file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class ValidatorInfo:
    id: str
    grpc_address: str
    raft_address: str
    #: SHA-256 of the validator's TLS certificate (DER): peers and clients pin it.
    tls_cert_sha256: bytes = b""
    #: Ed25519 public key (32 bytes) that verifies this validator's checkpoint
    #: signatures (cosignatures); b"" = the validator does not sign checkpoints.
    public_key: bytes = b""


@dataclass(frozen=True)
class Genesis:
    """A parsed genesis file. ``configuration`` is the governed configuration at
    version 1; ``tls_ca_pem`` the cluster CA's certificate (None: a plaintext
    development cluster); ``hash`` SHA-256 of the file's canonical JSON."""

    chain_id: str
    validators: tuple[ValidatorInfo, ...]
    configuration: Configuration
    hash: bytes
    tls_ca_pem: bytes | None = None

    @property
    def members(self) -> tuple[Member, ...]:
        return self.configuration.members

    @property
    def checkpoint_origin(self) -> str:
        """The origin line of this chain's checkpoints (raft_ledger_client.checkpoint.origin_for)."""
        from raft_ledger_client.checkpoint import origin_for

        return origin_for(self.chain_id, self.hash)

    @property
    def validator_keys(self) -> list[tuple[str, bytes]]:
        """(id, Ed25519 public key) of the genesis validators that sign checkpoints: the
        set a certificate of the first blocks is verified against."""
        return [(v.id, v.public_key) for v in self.validators if v.public_key]

    def validator(self, validator_id: str) -> ValidatorInfo:
        for v in self.validators:
            if v.id == validator_id:
                return v
        raise ConfigError(f"validator {validator_id!r} is not in the genesis file")


@dataclass(frozen=True)
class ValidatorConfig:
    """One validator's settings. Times in seconds unless the name says otherwise."""

    validator_id: str
    data_dir: str
    genesis_file: str
    raft_password: str
    #: Verification threads (Ed25519 in `cryptography` releases the GIL).
    verify_threads: int = 2
    #: gRPC server worker threads.
    grpc_workers: int = 16
    #: RPCs in flight at once, running or queued (gRPC's maximum_concurrent_rpcs);
    #: past it gRPC answers RESOURCE_EXHAUSTED at once, so memory held by requests is
    #: bounded by this x grpc_message_bytes_max.
    grpc_rpcs_inflight_max: int = 64
    #: Range queries (transfers/balances of an account, query_accounts/transfers) served
    #: at once; more wait up to 2 s, then RESOURCE_EXHAUSTED (the SDK retries).
    scans_inflight_max: int = 1
    #: Per-member rate limit: events (accounts + transfers) per second sustained, and
    #: the burst; past it Submit answers RESOURCE_EXHAUSTED with ``retry-after-ms``.
    member_events_per_s: float = 100_000.0
    member_events_burst: float = 200_000.0
    #: Per-member overrides: {"bank-a": {"events_per_s": 5000, "burst": 20000}}.
    member_rate_limits: dict = field(default_factory=dict)
    #: Python's young-generation GC threshold (allocations); startup objects are
    #: frozen out of collections (node/main.py _tune_gc). 0 = Python's default (700).
    gc_gen0_threshold: int = 50_000
    #: Raft entries proposed but not yet applied; more queue up into bigger entries.
    inflight_entries_max: int = 4
    #: How long Submit waits for its block before answering DEADLINE_EXCEEDED (outcome unknown).
    submit_timeout_s: float = 10.0
    #: Raft heartbeat period.
    append_entries_period_s: float = 0.05
    raft_min_timeout_s: float = 0.4
    raft_max_timeout_s: float = 1.4
    #: A leader that heard from no majority for this long steps down.
    leader_fallback_timeout_s: float = 3.0
    #: Log compaction: snapshot (RocksDB checkpoint) once the Raft journal holds this
    #: many entries (one entry = one block), or after this many seconds.
    log_compaction_min_entries: int = 10_000
    log_compaction_min_time_s: float = 3600.0
    #: Listen addresses when they differ from the advertised ones in genesis (NAT,
    #: containers): e.g. "0.0.0.0:7101". Empty = listen on the genesis address.
    grpc_listen_address: str = ""
    raft_listen_address: str = ""
    #: Peer Raft address (as in genesis) -> address to dial instead; the chaos suite
    #: routes every validator-to-validator link through its own Toxiproxy listener.
    raft_peer_dial: dict = field(default_factory=dict)
    #: gRPC addresses (host:port) a new validator asks for the current validator set
    #: before it joins as a learner, besides the genesis validators (some of which may
    #: have been removed since). Written by ``validator add`` for a local cluster.
    join_grpc_addresses: list = field(default_factory=list)
    #: Seconds between attempts to reconnect a lost Raft connection.
    connection_retry_time_s: float = 1.0
    #: This validator's TLS key and certificate (PEM; the certificate names
    #: spiffe://ledger/validator/<id> and is pinned in genesis). Used for the gRPC
    #: server (mutual TLS: callers present a client certificate of the cluster CA)
    #: and for the Raft links.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: This validator's Ed25519 checkpoint-signing key (PKCS#8 PEM, unencrypted);
    #: its public key is the validator's ``public_key`` in genesis. Empty: no cosigning.
    signing_key_file: str = ""
    #: Development only: gRPC and Raft in plaintext, no client identity (every
    #: caller is anonymous and refused everything but status). Logged loudly.
    insecure_plaintext: bool = False
    #: The Prometheus endpoint (node/metrics.py), host:port; empty = none. With TLS it is
    #: HTTPS requiring a client certificate of the cluster CA naming an ``operator`` (or a
    #: validator); a plaintext validator serves it over HTTP on a loopback address only.
    metrics_listen_address: str = ""
    #: Log lines: "text" or "json" (one JSON object per line; node/logs.py). The
    #: ``start --log-format`` option overrides it.
    log_format: str = "text"
    #: Safety switches for the chaos suite only: never turn off in production.
    durable_journal: bool = True
    raft_fixes: bool = True
    #: Pre-Vote and CheckQuorum (node/raft/prevote.py): a validator cut off from the others
    #: does not depose the leader when it returns. Off only to show the difference in a drill.
    raft_prevote: bool = True
    #: Group commit (node/batcher.py): while Raft entries are in flight, a submission
    #: waits up to this long for others to share its entry; 0 = propose as soon as one
    #: of inflight_entries_max is free.
    group_commit_wait_s_max: float = 0.02

    @property
    def journal_file(self) -> str:
        return os.path.join(self.data_dir, "raft", "journal")

    @property
    def full_dump_file(self) -> str:
        return os.path.join(self.data_dir, "raft", "snapshot")

    @property
    def db_path(self) -> str:
        return os.path.join(self.data_dir, "db")


#: Values of ``log_format`` (node/logs.py's LOG_FORMATS; a sibling module, so not imported).
LOG_FORMATS = ("text", "json")

GENESIS_FIELDS = {"chain_id", "validators", "members", "admins", "threshold", "issuers", "tls_ca_certificate"}
#: Identities, administrators and issuers a genesis file or configuration may hold.
members_max = 1024
admins_max = 32


def _address(where: str, value) -> str:
    if not isinstance(value, str) or ":" not in value or not value.rsplit(":", 1)[1].isdigit():
        raise ConfigError(f"{where}: address must be host:port, not {value!r}")
    return value


def _identity_id(where: str, value) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > limits.member_id_bytes_max or "/" in value:
        raise ConfigError(f"{where}: id must be a string of 1..{limits.member_id_bytes_max} bytes without '/', not {value!r}")
    return value


def parse_public_key(where: str, value) -> bytes:
    """An Ed25519 public key from lower-case hex; raises ConfigError naming ``where``."""
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: public_key is not hex") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ConfigError(f"{where}: public_key must be {PUBLIC_KEY_BYTES} bytes (Ed25519), not {len(raw)}")
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as e:
        raise ConfigError(f"{where}: public_key is not an Ed25519 key ({e})") from None
    return raw


def _members(path: str, docs) -> tuple[Member, ...]:
    if not isinstance(docs, list) or not docs:
        raise ConfigError(f"genesis file {path}: 'members' must be a non-empty list")
    if len(docs) > members_max:
        raise ConfigError(f"genesis file {path}: at most {members_max} members")
    out: dict[str, Member] = {}
    for i, m in enumerate(docs):
        if not isinstance(m, dict) or set(m) - {"id", "roles", "keys"}:
            raise ConfigError(f"genesis file {path}: members[{i}] must have only id, roles, keys")
        mid = _identity_id(f"genesis file {path}: members[{i}]", m.get("id"))
        where = f"genesis file {path}: member {mid!r}"
        if mid in out:
            raise ConfigError(f"{where} appears twice")
        roles = m.get("roles", ["member"])
        if not isinstance(roles, list) or any(r not in ROLES for r in roles) or len(set(roles)) != len(roles):
            raise ConfigError(f"{where}: roles must be distinct values of {list(ROLES)}, not {roles!r}")
        keys = m.get("keys")
        if not isinstance(keys, list) or not keys:
            raise ConfigError(f"{where}: needs at least one key")
        parsed = []
        for k in keys:
            if not isinstance(k, dict) or set(k) != {"key_id", "public_key"}:
                raise ConfigError(f"{where}: a key is {{\"key_id\": …, \"public_key\": <64 hex digits>}}")
            kid = k["key_id"]
            if not isinstance(kid, str) or not kid or len(kid.encode()) > limits.key_id_bytes_max:
                raise ConfigError(f"{where}: key_id must be 1..{limits.key_id_bytes_max} bytes")
            if any(p.key_id == kid for p in parsed):
                raise ConfigError(f"{where}: key id {kid!r} appears twice")
            parsed.append(MemberKey(kid, parse_public_key(f"{where} key {kid!r}", k["public_key"])))
        out[mid] = Member(mid, tuple(roles), tuple(parsed))
    return tuple(sorted(out.values(), key=lambda m: m.id))


def _ca_certificate(path: str, pem) -> bytes:
    from cryptography import x509

    try:
        raw = pem.encode()
        cert = x509.load_pem_x509_certificate(raw)
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (AttributeError, ValueError, x509.ExtensionNotFound) as e:
        raise ConfigError(f"genesis file {path}: tls_ca_certificate is not a PEM CA certificate ({e})") from None
    if not ca:
        raise ConfigError(f"genesis file {path}: tls_ca_certificate is not a CA certificate (basicConstraints ca=false)")
    return raw


def load_genesis(path: str) -> Genesis:
    """Parse and strictly validate a genesis file. Raises ConfigError naming what is
    wrong: unreadable or not JSON, unknown fields, duplicate validator or member ids,
    malformed addresses or keys, unknown roles, admins or issuers that are not members,
    a threshold outside 1..len(admins), a TLS CA that is not a certificate."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        doc = json.loads(raw)
    except OSError as e:
        raise ConfigError(f"cannot read genesis file {path}: {e.strerror}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"genesis file {path} is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"genesis file {path} must hold a JSON object")
    unknown = set(doc) - GENESIS_FIELDS
    if unknown:
        raise ConfigError(f"genesis file {path}: unknown fields {sorted(unknown)}")
    chain_id = doc.get("chain_id")
    if not isinstance(chain_id, str) or not chain_id:
        raise ConfigError(f"genesis file {path}: 'chain_id' must be a non-empty string")
    vdocs = doc.get("validators")
    if not isinstance(vdocs, list) or not vdocs:
        raise ConfigError(f"genesis file {path}: 'validators' must be a non-empty list")
    ca_pem = doc.get("tls_ca_certificate")
    validators = []
    for i, v in enumerate(vdocs):
        if not isinstance(v, dict) or set(v) - {"id", "grpc_address", "raft_address", "tls_cert_sha256", "public_key"}:
            raise ConfigError(f"genesis file {path}: validators[{i}] must have only id, grpc_address, raft_address, "
                              "tls_cert_sha256, public_key")
        vid = _identity_id(f"genesis file {path}: validators[{i}]", v.get("id"))
        where = f"genesis file {path}: validator {vid!r}"
        pin = b""
        if ca_pem is not None:
            try:
                pin = bytes.fromhex(v.get("tls_cert_sha256", ""))
            except (TypeError, ValueError):
                pin = b""
            if len(pin) != 32:
                raise ConfigError(f"{where}: tls_cert_sha256 must be 64 hex digits (SHA-256 of its certificate)")
        signing = parse_public_key(where, v["public_key"]) if "public_key" in v else b""
        validators.append(ValidatorInfo(vid, _address(where, v.get("grpc_address")), _address(where, v.get("raft_address")),
                                        pin, signing))
    if len({v.id for v in validators}) != len(validators):
        raise ConfigError(f"genesis file {path}: validator ids must be unique")
    for attr in ("grpc_address", "raft_address"):
        if len({getattr(v, attr) for v in validators}) != len(validators):
            raise ConfigError(f"genesis file {path}: validator {attr}es must be unique")
    members = _members(path, doc.get("members"))
    ids = {m.id for m in members}
    admins = doc.get("admins")
    if not isinstance(admins, list) or not admins or len(admins) > admins_max or len(set(admins)) != len(admins):
        raise ConfigError(f"genesis file {path}: 'admins' must be a list of 1..{admins_max} distinct member ids")
    missing = [a for a in admins if a not in ids]
    if missing:
        raise ConfigError(f"genesis file {path}: admins {missing} are not members")
    threshold = doc.get("threshold")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 1 <= threshold <= len(admins):
        raise ConfigError(f"genesis file {path}: 'threshold' must be an integer in 1..{len(admins)} (the number of admins), not {threshold!r}")
    issuers_doc = doc.get("issuers", {})
    if not isinstance(issuers_doc, dict):
        raise ConfigError(f"genesis file {path}: 'issuers' must map a ledger number to member ids")
    issuers = []
    for lg, who in issuers_doc.items():
        if not lg.isdigit() or not 1 <= int(lg) <= limits.u32_max:
            raise ConfigError(f"genesis file {path}: issuers: ledger {lg!r} must be 1..{limits.u32_max}")
        if not isinstance(who, list) or not who or any(w not in ids for w in who):
            raise ConfigError(f"genesis file {path}: issuers of ledger {lg} must be a non-empty list of member ids, not {who!r}")
        issuers.append((int(lg), tuple(sorted(set(who)))))
    tls_ca = None
    if ca_pem is not None:
        tls_ca = _ca_certificate(path, ca_pem)
    configuration = Configuration(
        version=1,
        members=members,
        issuers=tuple(sorted(issuers)),
        admins=tuple(sorted(admins)),
        threshold=threshold,
        validators=tuple(ValidatorRecord(v.id, v.grpc_address, v.raft_address, v.tls_cert_sha256, v.public_key)
                         for v in validators),
    )
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return Genesis(chain_id, tuple(validators), configuration, hashlib.sha256(canonical).digest(), tls_ca)


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,), "list": (list,)}


def _check_types(path: str, doc: dict) -> None:
    """Each setting must have its field's JSON type (a bool is not a number), so a typo
    like ``"inflight_entries_max": "4"`` is a clear start-up error, not a crash later."""
    for name, f in ValidatorConfig.__dataclass_fields__.items():
        if name not in doc:
            continue
        allowed = _TYPES.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))
        value = doc[name]
        if allowed is None:
            continue
        if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
            raise ConfigError(f"config {path}: {name!r} must be {f.type}, not {type(value).__name__} {value!r}")


def load_config(path: str) -> ValidatorConfig:
    """Parse a validator config; relative paths are relative to the config file."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"config {path} is not valid JSON: {e}") from e
    base = os.path.dirname(os.path.abspath(path))
    known = set(ValidatorConfig.__dataclass_fields__)
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"config {path}: unknown settings {sorted(unknown)}")
    for key in ("validator_id", "data_dir", "genesis_file", "raft_password"):
        if not doc.get(key):
            raise ConfigError(f"config {path}: {key!r} is required")
    _check_types(path, doc)
    for member, lim in doc.get("member_rate_limits", {}).items():
        ok = isinstance(lim, dict) and set(lim) == {"events_per_s", "burst"} and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in lim.values())
        if not ok:
            raise ConfigError(f"config {path}: member_rate_limits[{member!r}] must be "
                              '{"events_per_s": <number > 0>, "burst": <number > 0>}')
    if doc.get("log_format", "text") not in LOG_FORMATS:
        raise ConfigError(f"config {path}: 'log_format' must be one of {list(LOG_FORMATS)}, not {doc['log_format']!r}")
    if not doc.get("insecure_plaintext"):
        for key in ("tls_cert_file", "tls_key_file"):
            if not doc.get(key):
                raise ConfigError(f"config {path}: {key!r} is required (or set \"insecure_plaintext\": true for development)")
            doc[key] = os.path.join(base, doc[key])
    if doc.get("signing_key_file"):
        doc["signing_key_file"] = os.path.join(base, doc["signing_key_file"])
    doc["data_dir"] = os.path.join(base, doc["data_dir"])
    doc["genesis_file"] = os.path.join(base, doc["genesis_file"])
    return ValidatorConfig(**doc)
