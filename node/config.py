"""Validator configuration and the genesis file: frozen, every limit and timeout explicit.

A validator config (JSON) names its own id, data directory and the genesis file;
the genesis file (JSON) fixes the validators (id, gRPC and Raft addresses) and
the members (id, Ed25519 public keys by key id, roles). Both are written by
``ledger-validator init-cluster``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A config or genesis file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class ValidatorInfo:
    id: str
    grpc_address: str
    raft_address: str


@dataclass(frozen=True)
class MemberInfo:
    id: str
    keys: dict[str, bytes]  # key id -> raw Ed25519 public key (32 bytes)
    roles: tuple[str, ...] = ("member",)


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    validators: tuple[ValidatorInfo, ...]
    members: tuple[MemberInfo, ...]
    hash: bytes

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
    #: Seconds between attempts to reconnect a lost Raft connection.
    connection_retry_time_s: float = 1.0
    #: Safety switches for the chaos suite only: never turn off in production.
    durable_journal: bool = True
    raft_fixes: bool = True

    @property
    def journal_file(self) -> str:
        return os.path.join(self.data_dir, "raft", "journal")

    @property
    def full_dump_file(self) -> str:
        return os.path.join(self.data_dir, "raft", "snapshot")

    @property
    def db_path(self) -> str:
        return os.path.join(self.data_dir, "db")


def load_genesis(path: str) -> Genesis:
    """Parse a genesis file. Raises ConfigError naming what is wrong."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        doc = json.loads(raw)
    except OSError as e:
        raise ConfigError(f"cannot read genesis file {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"genesis file {path} is not valid JSON: {e}") from e
    try:
        validators = tuple(ValidatorInfo(v["id"], v["grpc_address"], v["raft_address"]) for v in doc["validators"])
        members = tuple(
            MemberInfo(
                m["id"],
                {k["key_id"]: bytes.fromhex(k["public_key"]) for k in m["keys"]},
                tuple(m.get("roles", ["member"])),
            )
            for m in doc["members"]
        )
        chain_id = doc["chain_id"]
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"genesis file {path} is missing or has a bad field: {e}") from e
    if len({v.id for v in validators}) != len(validators) or not validators:
        raise ConfigError(f"genesis file {path}: validator ids must be unique and non-empty")
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return Genesis(chain_id, validators, members, hashlib.sha256(canonical).digest())


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,)}


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
    doc["data_dir"] = os.path.join(base, doc["data_dir"])
    doc["genesis_file"] = os.path.join(base, doc["genesis_file"])
    return ValidatorConfig(**doc)
