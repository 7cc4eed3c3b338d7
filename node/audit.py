"""Offline audit of a stopped validator's RocksDB, and the audit export a third party verifies.

:func:`audit` opens the data directory **read-only** (RocksDB ``AccessType.read_only``:
the evidence is never written to) and replays every block from genesis into a fresh
in-memory state (:class:`~raft_ledger_node.store_memory.MemoryStore` bound to the genesis
configuration, :class:`~raft_ledger_node.state_machine.StateMachine` decoding each
envelope with :func:`~raft_ledger_node.api.validation.tx_from_committed`, exactly as a
validator does). A block's replay is deterministic: its envelopes (``transactions``, in
``block_txs`` order) with proposed timestamp = the stored header's timestamp and Raft
term/index = the header's, applied onto the state after the previous block, give the same
header (apply clamps nothing further: the stored timestamp already meets the bound).

Checked at each height h, in this order (the first failure is reported, with h):

==================  ==============================================================
kind                what differs
==================  ==============================================================
``block-missing``   heights are not 1..head contiguous, or ``block_txs`` is missing
``header-record``   the stored header does not decode
``header-hash``     SHA-256 of the header's canonical bytes is not its stored hash
``prev-hash``       the header does not link to the previous block's hash
``envelope-missing``a tx hash of ``block_txs`` has no envelope in ``transactions``
``envelope-hash``   SHA-256 of the stored envelope is not its tx hash
``replay``          the state machine refused the block (a core failure)
``header-field``    the replayed header differs from the stored one (fields named):
                    tx Merkle root, tree size/root, state hash, account-tree root,
                    validator-set hashes, timestamp, counts
``merkle-node``     a stored transaction-log node differs from the replayed one
``tx-index``        a ``tx_index`` entry differs from the replay's (height, position,
                    codes, or rejection: a signature that no longer verifies against
                    the keys valid at h shows up here as a rejection recorded differently)
``cosignature``     a stored cosignature of h is not a valid signed-note signature of
                    h's checkpoint by a validator of the set that certifies h
==================  ==============================================================

After the last block: ``head`` (meta head is not the last header), and the final state
(``account``, ``transfer``, ``pending-status``, ``account-position``, ``failed-transfer``,
``configuration``) and leftovers (``extra-record``: a key in ``transactions``,
``tx_index``, ``merkle`` or ``cosignatures`` that no block accounts for). A final-state
difference is reported at the last height that wrote that record (a record no block
wrote: the head height), the lowest such height first.

:func:`export` writes JSON Lines, one transaction per line with its inclusion proof
against the newest *certified* checkpoint in the data directory (a majority of the
certifying set's stored cosignatures), then one line holding that certificate.
:func:`write_remote_export` writes the same records from the gRPC stream
``LedgerService/ExportAudit`` (api.audit_stream; the ``auditor`` role), each block's
transactions proven against the block's own certified checkpoint, which precedes them
as a ``{"checkpoint": <note>, "height": h, "tree_size": n}`` line whenever it changes
(so an export resumed at a height and appended stays verifiable line by line).
:func:`verify_export` checks either file with the SDK (``raft_ledger_client``) and the
standard library only: certificates, completeness of leaves, every inclusion proof
(RFC 9162 §2.1.3.2), every member signature it has a key for.

Errors: :class:`AuditError` when the directory cannot be audited at all (missing,
unopenable, of another chain); an inconsistency is a value (:class:`Inconsistency`),
not an exception.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Iterator, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rocksdict import AccessType, Options, Rdict

from raft_ledger_client import checkpoint as cp
from raft_ledger_client import merkle as client_merkle
from raft_ledger_client import VerificationError
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.api.validation import tx_from_committed
from raft_ledger_node.cosigner import checkpoint_of
from raft_ledger_node.crypto import verify_ed25519
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.apply import validator_set_hash
from raft_ledger_node.ledger.governance import Configuration, decode_configuration, encode_configuration
from raft_ledger_node.ledger.merkle_log import MerkleLog
from raft_ledger_node.ledger.types import GENESIS_HEAD, BlockHeader, RawEntry
from raft_ledger_node.state_machine import StateMachineError, StateMachine
from raft_ledger_node.store import COLUMN_FAMILIES
from raft_ledger_node.store_memory import MemoryStore

__all__ = [
    "AuditError",
    "AuditReport",
    "ExportReport",
    "Inconsistency",
    "VerifyExportReport",
    "audit",
    "checkpoint_of",
    "export",
    "resolve_db_path",
    "resume_point",
    "verify_export",
    "write_remote_export",
]

_U64 = struct.Struct(">Q")
_TXI = struct.Struct(">QI")
#: Progress callback: (units done so far, units in total).
Progress = Callable[[int, int], None]


class AuditError(Exception):
    """The data directory cannot be audited (missing, unopenable, another chain's)."""


@dataclass(frozen=True)
class Inconsistency:
    """The first difference found: ``height`` (1-based block height; 0 = before any
    block), ``kind`` (see the module docstring's table), ``detail`` (what differs)."""

    height: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"height {self.height}: {self.kind}: {self.detail}"


@dataclass
class AuditReport:
    """``blocks`` and ``transactions`` replayed, ``cosignatures`` verified, wall
    ``seconds``; ``inconsistency`` None when the chain is clean."""

    blocks: int = 0
    transactions: int = 0
    cosignatures: int = 0
    seconds: float = 0.0
    inconsistency: Inconsistency | None = None

    @property
    def clean(self) -> bool:
        return self.inconsistency is None


def resolve_db_path(data_dir: str) -> str:
    """The RocksDB directory of a validator: ``data_dir/db`` (a validator's data
    directory) or ``data_dir`` itself, following ``<db>.active`` (an installed snapshot,
    see RocksStore). Raises AuditError if there is no DB there."""
    path = os.path.join(data_dir, "db") if os.path.isdir(os.path.join(data_dir, "db")) else data_dir
    try:
        with open(path + ".active") as f:
            path = os.path.join(os.path.dirname(os.path.abspath(path)), f.read().strip())
    except FileNotFoundError:
        pass
    if not os.path.isfile(os.path.join(path, "CURRENT")):
        raise AuditError(f"no RocksDB at {path} (give a validator's data directory or its db directory)")
    return path


class _ReadOnlyDB:
    """The validator's column families, opened read-only (nothing is ever written)."""

    def __init__(self, path: str) -> None:
        try:
            self._db = Rdict(path, Options(raw_mode=True), column_families={c: Options(raw_mode=True) for c in COLUMN_FAMILIES},
                             access_type=AccessType.read_only())
        except Exception as e:  # rocksdict raises plain Exception
            raise AuditError(f"cannot open RocksDB at {path} read-only: {e}") from e
        self.cf = {c: self._db.get_column_family(c) for c in COLUMN_FAMILIES}

    def get(self, cf: str, key: bytes) -> bytes | None:
        return self.cf[cf].get(key)

    def items(self, cf: str, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        it = self.cf[cf].iter()
        if prefix:
            it.seek(prefix)
        else:
            it.seek_to_first()
        while it.valid():
            k = it.key()
            if not k.startswith(prefix):
                break
            yield k, it.value()
            it.next()
        try:
            it.status()  # invalid at a corrupt block exactly as at the end: tell them apart
        except Exception as e:  # rocksdict raises plain Exception
            raise AuditError(f"RocksDB read of {cf} failed: {e}") from e

    def close(self) -> None:
        self.cf.clear()
        self._db.close()

    def __enter__(self) -> "_ReadOnlyDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _head_height(db: _ReadOnlyDB) -> int:
    raw = db.get("meta", b"head")
    if raw is None:
        return 0
    try:
        return codec.decode_head(raw).height
    except codec.CodecError:
        # A corrupt head is reported after the walk; walk every stored block meanwhile.
        last = 0
        for k, _ in db.items("blocks"):
            last = max(last, _U64.unpack(k)[0] if len(k) == 8 else 0)
        return last


def _check_genesis(db: _ReadOnlyDB, genesis_hash: bytes) -> None:
    stored = db.get("meta", b"genesis_hash")
    if stored is None:
        raise AuditError("the data directory is not bound to any genesis (meta genesis_hash missing)")
    if stored != genesis_hash:
        raise AuditError(f"the data directory belongs to another chain (genesis hash {stored.hex()[:16]}…, "
                         f"the genesis file has {genesis_hash.hex()[:16]}…)")


def _check_cosignature(vid: str, sig: bytes, body: bytes, validators: dict[str, bytes]) -> str | None:
    """None if ``sig`` (4-byte key hash || 64-byte Ed25519 signature) is validator
    ``vid``'s valid signed-note signature of ``body``; else what is wrong."""
    pk = validators.get(vid)
    if pk is None:
        return f"validator {vid!r} is not in the set that certifies this height"
    if len(pk) != 32:
        return f"validator {vid!r} has no checkpoint-signing key in the configuration"
    if len(sig) != 68:
        return f"validator {vid!r}'s cosignature is {len(sig)} bytes, not 68"
    if sig[:4] != cp.key_hash(vid, pk):
        return f"validator {vid!r}'s cosignature names key hash {sig[:4].hex()}, its key's is {cp.key_hash(vid, pk).hex()}"
    if not verify_ed25519(pk, sig[4:], body):
        return f"validator {vid!r}'s cosignature does not verify over the checkpoint"
    return None


def _tx_index_value(height: int, pos: int, codes: tuple[int, ...], rejection: int) -> bytes:
    """The ``tx_index`` value RocksStore.commit writes."""
    if rejection:
        return _TXI.pack(height, pos) + bytes([rejection])
    return _TXI.pack(height, pos) + struct.pack(f">{len(codes)}H", *codes)


def _header_diff(stored: BlockHeader, replayed: BlockHeader) -> list[str]:
    out = []
    for f in fields(BlockHeader):
        a, b = getattr(stored, f.name), getattr(replayed, f.name)
        if a != b:
            show = (lambda v: v.hex()[:16] + "…") if isinstance(a, bytes) else repr
            out.append(f"{f.name} stored {show(a)} replayed {show(b)}")
    return out


def _node_creation_height(level: int, index: int, sizes: list[tuple[int, int]]) -> int:
    """The height whose block completed log node (level, index): the first with tree
    size >= (index + 1) * 2**level (``sizes``: (tree size, height) ascending)."""
    need = (index + 1) << level
    for size, height in sizes:
        if size >= need:
            return height
    return sizes[-1][1] if sizes else 0


def audit(db_path: str, *, chain_id: str, genesis_hash: bytes, configuration: Configuration,
          progress: Progress | None = None) -> AuditReport:
    """Audit the RocksDB at ``db_path`` (see :func:`resolve_db_path`) against the chain
    ``chain_id`` whose genesis file hashes to ``genesis_hash`` (32 bytes) and whose
    governed configuration at version 1 is ``configuration``.

    Returns an AuditReport; its ``inconsistency`` is the first one found (module
    docstring), None for a clean chain. ``progress(done, total)`` is called per block.
    Cost: one replay of the whole history (the validator's apply cost per transaction,
    plus one Ed25519 verification per stored cosignature); memory: the final state.
    Raises AuditError if the DB cannot be opened or belongs to another chain.
    """
    started = time.monotonic()
    report = AuditReport()
    with _ReadOnlyDB(db_path) as db:
        _check_genesis(db, genesis_hash)
        report.inconsistency = _audit(db, chain_id, genesis_hash, configuration, progress, report)
    report.seconds = time.monotonic() - started
    return report


def _audit(db: _ReadOnlyDB, chain_id: str, genesis_hash: bytes, configuration: Configuration,
           progress: Progress | None, report: AuditReport) -> Inconsistency | None:
    origin = cp.origin_for(chain_id, genesis_hash)
    replay = MemoryStore(configuration)
    machine = StateMachine(replay, decode_envelope=functools.partial(tx_from_committed, chain_id=chain_id),
                           chain_id=chain_id)
    total = _head_height(db)
    stored_heights = [_U64.unpack(k)[0] for k, _ in db.items("blocks") if len(k) == 8]
    if len(stored_heights) != len(set(stored_heights)) or any(len(k) != 8 for k, _ in db.items("blocks")):
        return Inconsistency(0, "block-missing", "a key of the blocks column family is not a u64 height")
    expected_heights = list(range(1, max([total, *stored_heights]) + 1))
    if stored_heights != expected_heights:
        missing = sorted(set(expected_heights) - set(stored_heights))
        first = missing[0] if missing else max(stored_heights)
        return Inconsistency(first, "block-missing", f"stored heights are not 1..{len(expected_heights)}: "
                                                     f"{'height %d is missing' % first if missing else 'extra blocks'}")
    total = len(expected_heights)
    prev = GENESIS_HEAD.header
    last_writer: dict[tuple[str, object], int] = {}
    sizes: list[tuple[int, int]] = []
    tx_hashes_seen: set[bytes] = set()
    merkle_seen: set[tuple[int, int]] = set()
    cosig_seen: set[bytes] = set()
    versions = {configuration.version: configuration}
    for height in expected_heights:
        hb = _U64.pack(height)
        try:
            header = codec.decode_stored_header(db.get("blocks", hb))
        except codec.CodecError as e:
            return Inconsistency(height, "header-record", f"the stored header does not decode ({e})")
        recomputed = codec.block_hash(header)
        if recomputed != header.hash:
            return Inconsistency(height, "header-hash", f"stored hash {header.hash.hex()[:16]}…, the header's bytes "
                                                        f"hash to {recomputed.hex()[:16]}…")
        if header.prev_hash != prev.hash:
            return Inconsistency(height, "prev-hash", f"prev_hash {header.prev_hash.hex()[:16]}… is not block "
                                                      f"{height - 1}'s hash {prev.hash.hex()[:16]}…")
        raw_txs = db.get("block_txs", hb)
        if raw_txs is None:
            return Inconsistency(height, "block-missing", "no block_txs record")
        try:
            tx_hashes = codec.decode_tx_hashes(raw_txs)
        except codec.CodecError as e:
            return Inconsistency(height, "block-missing", f"block_txs does not decode ({e})")
        envelopes = []
        for pos, tx_hash in enumerate(tx_hashes):
            envelope = db.get("transactions", tx_hash)
            if envelope is None:
                return Inconsistency(height, "envelope-missing", f"transaction {pos} ({tx_hash.hex()[:16]}…) has no stored envelope")
            if hashlib.sha256(envelope).digest() != tx_hash:
                return Inconsistency(height, "envelope-hash", f"transaction {pos}: SHA-256 of the stored envelope is not "
                                                              f"its tx hash {tx_hash.hex()[:16]}…")
            envelopes.append(envelope)
        cfg_before = replay.configuration()
        entry = codec.encode_entry(RawEntry(proposed_timestamp=header.timestamp, envelopes=tuple(envelopes)))
        try:
            applied = machine.apply(entry, header.raft_term, header.raft_index)
        except StateMachineError as e:
            return Inconsistency(height, "replay", f"the state machine refused the block: {e}")
        ws = applied.writeset
        if ws is None:
            return Inconsistency(height, "replay", f"the block replayed as {applied.outcome.value}, not a block")
        diff = _header_diff(header, ws.header)
        if diff:
            return Inconsistency(height, "header-field", "; ".join(diff))
        for (level, index), value in sorted(ws.merkle_nodes.items()):
            stored = db.get("merkle", bytes([level]) + _U64.pack(index))
            if stored != value:
                return Inconsistency(height, "merkle-node", f"log node (level {level}, index {index}) "
                                                            f"{'missing' if stored is None else 'differs'}")
            merkle_seen.add((level, index))
        for pos, (tx, codes, rejection) in enumerate(zip(ws.txs, ws.tx_codes, ws.tx_rejections or [0] * len(ws.txs))):
            want = _tx_index_value(height, pos, codes, rejection)
            got = db.get("tx_index", tx.tx_hash)
            if got != want:
                return Inconsistency(height, "tx-index", f"transaction {pos} ({tx.tx_hash.hex()[:16]}…): stored "
                                                         f"{'nothing' if got is None else got.hex()}, replayed {want.hex()} "
                                                         f"(rejection {rejection}, codes {list(codes)})")
            tx_hashes_seen.add(tx.tx_hash)
        validators = {v.id: v.public_key for v in (cfg_before.validators if cfg_before else ())}
        body = checkpoint_of(header, origin).body()
        for k, sig in db.items("cosignatures", hb):
            cosig_seen.add(k)
            try:
                vid = k[8:].decode()
            except UnicodeDecodeError:
                return Inconsistency(height, "cosignature", f"validator id {k[8:]!r} is not UTF-8")
            problem = _check_cosignature(vid, sig, body, validators)
            if problem:
                return Inconsistency(height, "cosignature", problem)
            report.cosignatures += 1
        for a in ws.accounts:
            last_writer[("account", a)] = height
        for t in ws.transfers:
            last_writer[("transfer", t)] = height
        for t in ws.pending_status:
            last_writer[("pending-status", t)] = height
        for a in ws.account_positions:
            last_writer[("account-position", a)] = height
        for k in ws.failed_transfers:
            last_writer[("failed-transfer", k)] = height
        if ws.configuration is not None:
            last_writer[("configuration", ws.configuration.version)] = height
            versions[ws.configuration.version] = ws.configuration
        sizes.append((header.tree_size, height))
        prev = header
        report.blocks += 1
        report.transactions += len(ws.txs)
        if progress is not None:
            progress(height, total)
    return _audit_final(db, replay, prev, last_writer, sizes, versions, tx_hashes_seen, merkle_seen, cosig_seen)


def _audit_final(db: _ReadOnlyDB, replay: MemoryStore, last: BlockHeader, last_writer: dict, sizes: list,
                 versions_replayed: dict[int, Configuration], tx_hashes_seen: set, merkle_seen: set, cosig_seen: set) -> Inconsistency | None:
    head_height = last.height
    raw_head = db.get("meta", b"head")
    if head_height and raw_head != codec.encode_head(replay.head()):
        return Inconsistency(head_height, "head", "the stored chain head is not the last block's header and transaction total")
    found: list[Inconsistency] = []

    def differ(kind: str, key, what: str) -> None:
        found.append(Inconsistency(last_writer.get((kind, key), head_height), kind, what))

    def compare(kind: str, cf: str, expected: dict[bytes, bytes], key_of: Callable[[bytes], object], name: Callable[[object], str]) -> None:
        stored = dict(db.items(cf))
        for k in sorted(set(stored) | set(expected)):
            if stored.get(k) != expected.get(k):
                state = "missing" if k not in stored else "not written by any block" if k not in expected else "differs from the replay"
                differ(kind, key_of(k), f"{name(key_of(k))} {state}")

    u128 = codec.from_u128
    compare("account", "accounts", {codec.u128(i): codec.encode_account(a) for i, a in replay.accounts.items()},
            u128, lambda i: f"account {i}")
    compare("transfer", "transfers", {codec.u128(i): codec.encode_transfer(t) for i, t in replay.transfers.items()},
            u128, lambda i: f"transfer {i}")
    compare("pending-status", "pending_status",
            {codec.u128(i): codec.encode_pending_status(s) for i, s in replay.status.items()}, u128,
            lambda i: f"pending status of transfer {i}")
    compare("account-position", "account_positions", {codec.u128(i): _U64.pack(p) for i, p in replay.positions.items()},
            u128, lambda i: f"account-tree position of account {i}")

    def failed_key(member: str, tid: int) -> bytes:
        raw = member.encode()
        return len(raw).to_bytes(2, "big") + raw + tid.to_bytes(16, "big")

    def failed_of(k: bytes):
        n = int.from_bytes(k[:2], "big")
        try:
            return (k[2:2 + n].decode(), int.from_bytes(k[2 + n:], "big"))
        except UnicodeDecodeError:
            return (repr(k[2:2 + n]), int.from_bytes(k[2 + n:], "big"))

    compare("failed-transfer", "transfers_failed", {failed_key(m, t): struct.pack(">I", c) for (m, t), c in replay.failed.items()},
            failed_of, lambda k: f"failed transfer {k[1]} of {k[0]}")
    versions = {_U64.pack(v): encode_configuration(c) for v, c in versions_replayed.items()}
    stored_versions = {k[len(b"configuration/"):]: v for k, v in db.items("meta", b"configuration/")}
    for k in sorted(set(versions) | set(stored_versions)):
        if versions.get(k) != stored_versions.get(k):
            v = _U64.unpack(k)[0] if len(k) == 8 else k
            differ("configuration", v, f"governed configuration version {v} differs from the replay")
    current = db.get("meta", b"configuration")
    if replay.configuration() is not None and current != encode_configuration(replay.configuration()):
        differ("configuration", replay.configuration().version, "the current governed configuration differs from the replay")
    for k, _ in db.items("transactions"):
        if k not in tx_hashes_seen:
            found.append(Inconsistency(head_height, "extra-record", f"envelope {k.hex()[:16]}… in transactions is in no block"))
            break
    for k, _ in db.items("tx_index"):
        if k not in tx_hashes_seen:
            found.append(Inconsistency(head_height, "extra-record", f"tx_index entry {k.hex()[:16]}… is in no block"))
            break
    for k, _ in db.items("merkle"):
        node = (k[0], _U64.unpack(k[1:])[0]) if len(k) == 9 else None
        if node is None or node not in merkle_seen:
            where = head_height if node is None else _node_creation_height(node[0], node[1], sizes)
            found.append(Inconsistency(where, "merkle-node", f"log node key {k.hex()} was written by no block"))
            break
    for k, _ in db.items("cosignatures"):
        if k not in cosig_seen:
            h = _U64.unpack(k[:8])[0] if len(k) >= 8 else head_height
            found.append(Inconsistency(h, "cosignature", f"cosignature key {k.hex()[:40]} is of no stored block"))
            break
    return min(found, key=lambda i: i.height) if found else None


# -- export -------------------------------------------------------------------------


class _RocksNodes:
    """merkle_log.NodeStore over the read-only ``merkle`` column family."""

    def __init__(self, db: _ReadOnlyDB) -> None:
        self._cf = db.cf["merkle"]

    def get(self, level: int, index: int) -> bytes | None:
        return self._cf.get(bytes([level]) + _U64.pack(index))

    def put(self, level: int, index: int, value: bytes) -> None:  # pragma: no cover - read-only
        raise AuditError("the audit never writes")


@dataclass
class ExportReport:
    """``transactions`` written; ``certified_height`` / ``tree_size`` of the
    checkpoint the proofs are against (0 / 0: none certified, no proofs);
    ``unproven``: transactions after that tree size (no proof yet)."""

    transactions: int = 0
    certified_height: int = 0
    tree_size: int = 0
    unproven: int = 0
    seconds: float = 0.0


def _validator_sets(db: _ReadOnlyDB) -> dict[bytes, dict[str, bytes]]:
    """validator-set hash -> {id: public key} for every stored configuration version."""
    out = {}
    for _, raw in db.items("meta", b"configuration/"):
        try:
            cfg = decode_configuration(raw)
        except ValueError:
            continue
        if cfg.validators:
            out[validator_set_hash(cfg.voters)] = {v.id: v.public_key for v in cfg.voters}
    return out


def _newest_certificate(db: _ReadOnlyDB, origin: str, head_height: int) -> tuple[BlockHeader, str] | None:
    """The newest stored block whose stored cosignatures by its certifying set are a
    majority of that set, as (header, certificate note text); None if there is none."""
    sets = _validator_sets(db)
    for height in range(head_height, 0, -1):
        sigs = list(db.items("cosignatures", _U64.pack(height)))
        if not sigs:
            continue
        raw = db.get("blocks", _U64.pack(height))
        try:
            header = codec.decode_stored_header(raw)
        except codec.CodecError:
            continue
        validators = sets.get(header.validators_hash)
        if not validators:
            continue
        body = checkpoint_of(header, origin).body()
        good = []
        for k, sig in sigs:
            vid = k[8:].decode(errors="replace")
            if _check_cosignature(vid, sig, body, validators) is None:
                good.append((vid, sig))
        if len(good) > len(validators) // 2:
            note = body.decode() + "\n" + "".join(f"— {vid} {base64.b64encode(sig).decode()}\n" for vid, sig in sorted(good))
            return header, note
    return None


def export(db_path: str, out, *, chain_id: str, genesis_hash: bytes, progress: Progress | None = None) -> ExportReport:
    """Write the audit export of the RocksDB at ``db_path`` to ``out`` (a text file).

    One JSON object per line, per transaction in commit order: ``height``, ``index``
    (position in its block), ``leaf_index`` (position in the transaction log),
    ``tx_hash`` (hex), ``signer``, ``key_id``, ``envelope`` (base64 SignedTransaction
    bytes), ``codes`` (per-event result codes), ``rejection`` (TxRejection, 0 = none),
    ``proof`` (base64 RFC 6962 audit path against ``tree_size``, or null for a
    transaction after the certified tree size). Last line: ``{"checkpoint": <note>}``,
    the newest certified checkpoint in the DB (``null`` if none). Nothing is verified
    here (run :func:`audit` for that); :func:`verify_export` checks the file.
    Raises AuditError as :func:`audit`; MerkleLogError if log nodes are missing.
    """
    started = time.monotonic()
    report = ExportReport()
    origin = cp.origin_for(chain_id, genesis_hash)
    with _ReadOnlyDB(db_path) as db:
        _check_genesis(db, genesis_hash)
        total = _head_height(db)
        cert = _newest_certificate(db, origin, total)
        if cert is not None:
            report.certified_height, report.tree_size = cert[0].height, cert[0].tree_size
        log = MerkleLog(_RocksNodes(db), report.tree_size)
        for height in range(1, total + 1):
            hb = _U64.pack(height)
            header = codec.decode_stored_header(db.get("blocks", hb))
            hashes = codec.decode_tx_hashes(db.get("block_txs", hb) or b"")
            first_leaf = header.tree_size - len(hashes)
            for pos, tx_hash in enumerate(hashes):
                envelope = db.get("transactions", tx_hash) or b""
                stx = pb.SignedTransaction()
                try:
                    stx.ParseFromString(envelope)
                except Exception:
                    stx = pb.SignedTransaction()
                raw_index = db.get("tx_index", tx_hash) or b""
                codes: list[int] = []
                rejection = 0
                if len(raw_index) >= _TXI.size:
                    rest = raw_index[_TXI.size:]
                    if len(rest) % 2:
                        rejection = rest[-1]
                    else:
                        codes = list(struct.unpack(f">{len(rest) // 2}H", rest))
                leaf = first_leaf + pos
                proof = ([base64.b64encode(h).decode() for h in log.inclusion_proof(leaf, report.tree_size)]
                         if leaf < report.tree_size else None)
                report.unproven += proof is None
                out.write(json.dumps({
                    "height": height, "index": pos, "leaf_index": leaf, "tx_hash": tx_hash.hex(),
                    "signer": stx.member_id, "key_id": stx.key_id, "envelope": base64.b64encode(envelope).decode(),
                    "codes": codes, "rejection": rejection, "tree_size": report.tree_size, "proof": proof,
                }, separators=(",", ":")) + "\n")
                report.transactions += 1
            if progress is not None:
                progress(height, total)
        out.write(json.dumps({"checkpoint": None if cert is None else cert[1]}) + "\n")
    report.seconds = time.monotonic() - started
    return report


# -- verify-export: the SDK (raft_ledger_client) and the standard library only ---------


@dataclass
class VerifyExportReport:
    """What :func:`verify_export` established. ``checkpoint``: the certified checkpoint
    (None if the export had none); ``proven``: transactions whose inclusion verified;
    ``signatures_verified``: member signatures verified with a genesis key;
    ``unverifiable_by_key``: signatures by a key not in genesis (added later by
    governance: the SDK alone cannot know it); ``rejected_invalid``: signatures that do
    not verify on transactions the ledger recorded as rejected (as it should);
    ``unproven``: transactions after the certified tree size; ``failure``: the first
    reason the export is not proven (None: it is)."""

    checkpoint: cp.Checkpoint | None = None
    transactions: int = 0
    proven: int = 0
    signatures_verified: int = 0
    unverifiable_by_key: int = 0
    rejected_invalid: int = 0
    unproven: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def failure(self) -> str | None:
        return self.failures[0] if self.failures else None


def _event_count(stx: pb.SignedTransaction) -> int:
    """Events in the envelope's body (0 if it does not parse; a governance change: 1)."""
    body = pb.Transaction()
    try:
        body.ParseFromString(stx.body)
    except Exception:
        return 0
    kind = body.WhichOneof("operation")
    if kind == "create_accounts":
        return len(body.create_accounts.accounts)
    if kind == "create_transfers":
        return len(body.create_transfers.transfers)
    return 1 if kind else 0


def record_to_json(rec: pb.AuditRecord) -> dict:
    """An ExportAudit record as the export's JSON object (the keys :func:`export` writes,
    plus ``operation``). ``codes``: one result code per event of the body (0 = ok),
    rebuilt from the record's failed events."""
    stx = pb.SignedTransaction()
    try:
        stx.ParseFromString(rec.transaction)
    except Exception:
        stx = pb.SignedTransaction()
    codes = [0] * _event_count(stx)
    for e in rec.result.results:
        code = e.account if e.WhichOneof("result") == "account" else e.transfer
        if e.index < len(codes):
            codes[e.index] = int(code)
    return {
        "height": rec.height, "index": rec.index, "leaf_index": rec.leaf_index, "tx_hash": rec.tx_hash.hex(),
        "signer": rec.signer, "key_id": rec.key_id, "operation": rec.operation,
        "envelope": base64.b64encode(rec.transaction).decode(), "codes": codes,
        "rejection": int(rec.result.rejection), "tree_size": rec.tree_size,
        "proof": [base64.b64encode(h).decode() for h in rec.proof] if rec.tree_size else None,
    }


def write_remote_export(responses, out, *, progress: Progress | None = None) -> ExportReport:
    """Write the ExportAudit stream ``responses`` (an iterable of
    ``pb.ExportAuditResponse``) to ``out`` (a text file) as JSON Lines: a checkpoint
    line ``{"checkpoint": note, "height": h, "tree_size": n}`` per certificate, then the
    records it proves (:func:`record_to_json`). Flushes after every block, so an
    interrupted export loses at most its last block (:func:`resume_point`).
    ``progress(height, to_height)`` is called per record. Nothing is verified here
    (:func:`verify_export` does); the transport's errors propagate (``grpc.RpcError``)."""
    started = time.monotonic()
    report = ExportReport()
    last_height = 0
    for item in responses:
        kind = item.WhichOneof("item")
        if kind == "checkpoint":
            c = item.checkpoint
            try:
                size = cp.Checkpoint.parse(cp.parse_note(c.note)[0]).tree_size
            except Exception:  # an unparsable note: verify-export reports it
                size = 0
            out.write(json.dumps({"checkpoint": c.note, "height": c.height, "tree_size": size}) + "\n")
            report.certified_height, report.tree_size = c.height, size
            continue
        if kind != "record":
            continue
        rec = item.record
        if rec.height != last_height:
            out.flush()
            last_height = rec.height
        out.write(json.dumps(record_to_json(rec), separators=(",", ":")) + "\n")
        report.transactions += 1
        report.unproven += rec.tree_size == 0
        if progress is not None:
            progress(rec.height, item.to_height)
    out.flush()
    report.seconds = time.monotonic() - started
    return report


def resume_point(lines: Sequence[str]) -> tuple[int, int]:
    """Where to resume an interrupted export: (lines to keep, height to resume from).

    The last record's block may be incomplete, so it is fetched again: the lines kept
    end with the last record of an earlier block (checkpoint lines after it are
    dropped: the stream sends its checkpoint again). A file with no record: (0, 1).
    A line that is not JSON (cut mid-write) ends the file there."""
    heights: list[int | None] = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            break
        heights.append(obj.get("height") if isinstance(obj, dict) and "checkpoint" not in obj else None)
    records = [h for h in heights if h is not None]
    if not records:
        return 0, 1
    last = records[-1]
    keep = 0
    for n, h in enumerate(heights):
        if h is not None and h < last:
            keep = n + 1
    return keep, last


def verify_export(lines: Sequence[str], *, validators: Sequence[tuple[str, bytes]], origin: str,
                  member_keys: dict[tuple[str, str], bytes], progress: Progress | None = None) -> VerifyExportReport:
    """Verify an audit export (the lines :func:`export` or :func:`write_remote_export`
    wrote) with the SDK alone.

    ``validators``: the genesis validator set, (id, 32-byte Ed25519 key); ``origin``:
    :func:`raft_ledger_client.checkpoint.origin_for` of the pinned genesis;
    ``member_keys``: (member id, key id) -> 32-byte Ed25519 key of genesis.

    Checks: every checkpoint line's certificate (majority of ``validators``,
    :func:`~raft_ledger_client.checkpoint.verify_certificate`; a checkpoint certified by a
    later validator set fails: this export carries no handoff certificates); leaf
    indexes are 0, 1, 2, … with no gap or repeat, and every leaf below the tree size of
    a certified checkpoint of a height the export reaches (or of the final line, the
    local export's) is present; per line, ``tx_hash`` = SHA-256(envelope), signer/key id
    are the envelope's, the RFC 9162 §2.1.3.2 inclusion of SHA-256(0x00 || envelope) at
    ``leaf_index`` in the certified tree of the record's ``tree_size`` (whose certificate
    the file holds), and the member's Ed25519 signature over the body when genesis has
    the key. Failures are collected, first one first; nothing raises for bad input.
    ``checkpoint`` in the report: the certified checkpoint of the largest tree.
    """
    rep = VerifyExportReport()
    if not lines:
        rep.failures.append("empty export: no checkpoint line")
        return rep
    parsed: list[dict | None] = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        parsed.append(obj if isinstance(obj, dict) else None)
    certified: dict[int, cp.Checkpoint] = {}
    cp_lines = [(n, o) for n, o in enumerate(parsed) if o is not None and "checkpoint" in o]
    if not cp_lines:
        rep.failures.append("the export holds no checkpoint line")
        return rep
    for n, o in cp_lines:
        if o["checkpoint"] is None:
            continue
        try:
            c = cp.verify_certificate(o["checkpoint"], validators, origin)
        except (VerificationError, TypeError) as e:
            rep.failures.append(f"certificate: {e} (line {n + 1})")
            continue
        certified[c.tree_size] = c
    if rep.failures:
        return rep
    if certified:
        rep.checkpoint = certified[max(certified)]
    final = parsed[-1] if parsed[-1] is not None and "checkpoint" in parsed[-1] else None
    body = [(n, line, o) for n, (line, o) in enumerate(zip(lines, parsed)) if o is None or "checkpoint" not in o]
    leaf_expected = 0
    last_height = 0
    for k, (n, line, rec) in enumerate(body, 1):
        where = f"line {n + 1}"
        try:
            if rec is None:
                raise ValueError("not a JSON object")
            envelope = base64.b64decode(rec["envelope"], validate=True)
            leaf = rec["leaf_index"]
            tx_hash = bytes.fromhex(rec["tx_hash"])
            proof = rec["proof"]
            size = rec.get("tree_size") or 0
            last_height = max(last_height, int(rec.get("height") or 0))
        except (ValueError, KeyError, TypeError) as e:
            rep.failures.append(f"{where}: not an export record ({e!r})")
            continue
        rep.transactions += 1
        if leaf != leaf_expected:
            rep.failures.append(f"{where}: leaf index {leaf}, expected {leaf_expected} "
                                "(a transaction is missing or repeated)")
        leaf_expected = leaf + 1 if isinstance(leaf, int) else leaf_expected + 1
        if hashlib.sha256(envelope).digest() != tx_hash:
            rep.failures.append(f"{where}: tx_hash is not SHA-256 of the envelope")
        if size and leaf < size:
            checkpoint = certified.get(size)
            try:
                if checkpoint is None:
                    raise client_merkle.ProofError(f"no certified checkpoint of tree size {size} in the export")
                hashes = [base64.b64decode(h, validate=True) for h in (proof or [])]
                if proof is None:
                    raise client_merkle.ProofError("no proof for a leaf below the certified size")
                client_merkle.verify_inclusion(client_merkle.leaf_hash(envelope), leaf, size, hashes, checkpoint.root_hash)
                rep.proven += 1
            except (client_merkle.ProofError, ValueError) as e:
                rep.failures.append(f"{where}: inclusion proof of leaf {leaf} in the certified tree of size {size}: {e}")
        else:
            rep.unproven += 1
        stx = pb.SignedTransaction()
        try:
            stx.ParseFromString(envelope)
        except Exception:
            rep.failures.append(f"{where}: the envelope is not a SignedTransaction")
            continue
        if rec.get("signer") != stx.member_id or rec.get("key_id") != stx.key_id:
            rep.failures.append(f"{where}: signer/key_id do not match the envelope's")
        key = member_keys.get((stx.member_id, stx.key_id))
        if key is None:
            rep.unverifiable_by_key += 1
        else:
            try:
                Ed25519PublicKey.from_public_bytes(key).verify(stx.signature, stx.body)
                rep.signatures_verified += 1
            except (InvalidSignature, ValueError):
                if rec.get("rejection"):
                    rep.rejected_invalid += 1
                else:
                    rep.failures.append(f"{where}: {stx.member_id}/{stx.key_id}'s signature does not verify, "
                                        "yet the ledger applied the transaction")
        if progress is not None:
            progress(k, len(body))
    # Completeness: every leaf of a certified tree whose block the export reaches.
    reached = [c.tree_size for c in certified.values() if c.height <= last_height]
    if final is not None and final["checkpoint"] is not None and certified:
        reached.append(cp.verify_certificate(final["checkpoint"], validators, origin).tree_size)
    need = max(reached, default=0)
    if rep.transactions < need:
        rep.failures.append(f"the export holds {rep.transactions} transactions, the certified tree {need}")
    return rep
