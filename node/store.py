"""RocksDB storage adapter (rocksdict): column families, one WriteBatch per block.

Layout (keys big-endian so iteration is ordered):

==================  ===============================  =============================
column family       key                              value
==================  ===============================  =============================
accounts            id u128                          codec.encode_account
transfers           id u128                          codec.encode_transfer
pending_status      transfer id u128                 1 byte PendingStatus
transfers_failed    member str + transfer id u128    u32 result code
account_transfers   account id u128 + first ts u64   segment: (ts u64 + transfer id u128)*
expiry              expires_at u64 + id u128         (empty)
history             account id u128 + ts u64         codec.encode_account
transfers_by_ts     first ts u64                     segment: (ts u64 + transfer id u128)*
transfer_index      field u8 + value u128 + first ts segment: (ts u64 + transfer id u128)*
accounts_by_ts      first ts u64                     segment: (ts u64 + account id u128)*
account_index       field u8 + value u128 + first ts segment: (ts u64 + account id u128)*
blocks              height u64                       header + hash
block_txs           height u64                       tx hashes (32 bytes each)
tx_index            tx hash                          height u64 + pos u32 + codes u16*,
                                                     or + rejection u8 (odd length)
transactions        tx hash                          SignedTransaction bytes
merkle              level u8 + index u64             32-byte hash of a complete subtree of the
                                                     transaction log (merkle_log.py)
account_positions   account id u128                  position u64 in the account tree
cosignatures        height u64 + validator id        signed-note signature (key hash + Ed25519)
meta                b"applied_index" / b"head" / ..  u64 / codec.encode_head
meta                b"configuration"                 governance.encode_configuration (current)
meta                b"configuration/" + version u64  the same, every version ever applied
meta                b"handoff/" + height u64         (empty): the block changed the validator set
==================  ===============================  =============================

Index segments: the five time indexes hold one key per prefix (account, field
value, or none) per block, whose value lists that block's rows in time order
(:func:`_put_segments`); a zero field is not indexed. A plain transfer (two
accounts, ledger and code set) wrote 6 keys of its own in schema 4 (record,
``transfers_by_ts``, two ``transfer_index``, two ``account_transfers``); it now
writes its record and its two ``account_transfers`` rows, and shares the block's
``transfers_by_ts`` and per-value ``transfer_index`` keys (node/bench/store_writes.py).

Hot path: every column family read by point lookups while applying has a Bloom
filter (a new transfer id is a miss that should not touch the SST files), all share
one block cache, and decoded accounts are kept in a write-through cache
(:meth:`RocksStore.get_account`), so applying a transfer reads its two accounts from
memory. Measured with ``ledger-validator bench`` (history part): core apply + commit
from 56.7 to 24 µs per transfer at 10^4 stored on the same machine, 31 µs at 10^7.

Beside the DB: ``<path>.last-signed`` (u64), the highest height this validator may
have signed a checkpoint for (:meth:`RocksStore.set_last_signed_height`).

Failure contract: :meth:`RocksStore.commit` writes the block's effects and the
applied Raft index in one atomic WriteBatch. If RocksDB raises (disk full, I/O
error) nothing of the block is visible; the caller (the replication adapter)
must stop the validator rather than skip the block, because every later block
depends on it. The WAL is not fsynced per block: the fsynced Raft journal is
the durable record, and entries above the applied index are replayed on start.
"""
from __future__ import annotations

import os
import shutil
import struct
import threading
from typing import Callable, Iterator

from rocksdict import BlockBasedOptions, Cache, Checkpoint, Options, Rdict, WriteBatch, WriteOptions

from raft_ledger_node.ledger import codec, limits, merkle
from raft_ledger_node.ledger.account_tree import AccountTree
from raft_ledger_node.ledger.filters import AccountFilter, QueryFilter
from raft_ledger_node.ledger.governance import Configuration, decode_configuration, encode_configuration
from raft_ledger_node.ledger.invariants import fatal, verify
from raft_ledger_node.ledger.types import (
    GENESIS_HEAD,
    Account,
    AccountFlags,
    BlockHeader,
    Head,
    PendingStatus,
    Transfer,
    WriteSet,
)

#: 4: header with the transaction log, account tree and validator-set hashes;
#: ``merkle``, ``account_positions``, ``cosignatures``.
#: 5: the five time indexes (``transfers_by_ts``, ``transfer_index``,
#: ``account_transfers``, ``accounts_by_ts``, ``account_index``) hold one segment
#: per prefix per block (:func:`_put_segments`) instead of one key per row.
SCHEMA_VERSION = 5
#: Opened and marked 5 in place: their one-key-per-row indexes read as segments of one row.
UPGRADABLE_SCHEMA_VERSIONS = frozenset({4})
COLUMN_FAMILIES = (
    "accounts",
    "transfers",
    "pending_status",
    "transfers_failed",
    "account_transfers",
    "expiry",
    "history",
    "transfers_by_ts",
    "transfer_index",
    "accounts_by_ts",
    "account_index",
    "blocks",
    "block_txs",
    "tx_index",
    "transactions",
    "merkle",
    "account_positions",
    "cosignatures",
    "meta",
)
_U64 = struct.Struct(">Q")
_TXI = struct.Struct(">QI")
_U128 = codec.u128


def _failed_key(member: str, transfer_id: int) -> bytes:
    """``transfers_failed`` key: the member id (u16 length + UTF-8), then the id u128.

    Length-prefixed so no member's keys are a prefix of another's.
    """
    raw = member.encode()
    return len(raw).to_bytes(2, "big") + raw + transfer_id.to_bytes(16, "big")


#: Secondary index fields (QueryFilter): tag byte -> attribute.
INDEX_FIELDS = {1: "user_data_128", 2: "user_data_64", 3: "user_data_32", 4: "ledger", 5: "code"}


def _matches(obj, f) -> bool:
    for attr in ("user_data_128", "user_data_64", "user_data_32", "ledger", "code"):
        want = getattr(f, attr, 0)
        if want and getattr(obj, attr) != want:
            return False
    return True


class StoreError(RuntimeError):
    """The data directory cannot be used (corrupt, wrong schema, I/O error)."""


#: Column families read by point lookups on the apply path: a Bloom filter lets
#: a lookup of an absent key (every new transfer id is one) skip the SST files,
#: so the cost per transfer stays flat as history grows.
POINT_LOOKUP_CFS = frozenset({"accounts", "transfers", "pending_status", "transfers_failed", "tx_index", "merkle"})


#: Column families whose memtable entries are overwritten in place (RocksDB
#: ``inplace_update_support``): an account is rewritten by every transfer that touches
#: it, always with a record of the same size, and a rewrite then costs a lookup and a
#: copy instead of a new skiplist node. Measured with node/bench/store_writes.py at
#: 10^5 stored: RocksDB's ``write`` 34.9 -> 23.4 µs per transfer (same run, loaded
#: machine). The price is RocksDB's: no point-in-time view of these keys for
#: iterators or snapshots while blocks commit, and a point read may see a record of
#: the block being written a moment before the block is visible. Nothing here needs
#: more: reads of several accounts that must agree (:meth:`RocksStore.get_accounts`,
#: proofs) read under ``_visible_lock``, which the commit holds while it writes; a
#: single point read (:meth:`RocksStore.get_account`) sees one record, of the last
#: block or of the one being made visible; the account tree is iterated only at open, and checkpoints are taken on the thread that
#: commits (node/raft/snapshot.py), never during a write. Needs single-writer memtables
#: (``allow_concurrent_memtable_write`` off; the apply thread is the one writer of blocks).
INPLACE_CFS = frozenset({"accounts"})


def _opts() -> Options:
    o = Options(raw_mode=True)
    o.create_if_missing(True)
    o.create_missing_column_families(True)
    o.set_allow_concurrent_memtable_write(False)  # required by inplace_update_support (INPLACE_CFS)
    return o


def _cf_opts(name: str, cache: Cache) -> Options:
    o = Options(raw_mode=True)
    t = BlockBasedOptions()
    t.set_block_cache(cache)
    if name in POINT_LOOKUP_CFS:
        t.set_bloom_filter(10, False)  # 10 bits/key: about 1% false positives
    o.set_block_based_table_factory(t)
    if name in INPLACE_CFS:
        o.set_inplace_update_support(True)
    return o


class RocksStore:
    """The validator's state in RocksDB. Implements node.ledger.ports.StateReader.

    Thread safety: one writer (the Raft apply thread) and any number of readers;
    each committed block becomes visible atomically.
    """

    def __init__(self, path: str, *, scan_rows_max: int = limits.query_scan_rows_max) -> None:
        """Open (or create) the DB at ``path``. ``scan_rows_max``: index rows one query
        reads before its page ends with a cursor (tests pass a small one)."""
        verify(scan_rows_max >= 1, "a query reads at least one row")
        self.path = path
        self.scan_rows_max = scan_rows_max
        self._wo = WriteOptions()
        self._retired: list[tuple[Rdict, dict, dict, str]] = []
        # Decoded accounts by id, written through on commit (see get_account). A
        # reader thread may fill a miss only if no block committed (and no snapshot
        # was installed) since it started reading, or it could cache a stale record.
        self._accounts: dict[int, Account] = {}
        self._cache_lock = threading.Lock()
        self._cache_generation = 0
        #: Held while a commit makes a block visible (records, account tree, head), so
        #: a proof read (:meth:`account_proofs`) sees records and tree of one height.
        self._visible_lock = threading.Lock()
        self._open(self._active_dir())

    def _active_dir(self) -> str:
        """The live DB directory: ``path``, or the installed snapshot named in ``path.active``."""
        try:
            with open(self.path + ".active") as f:
                return os.path.join(os.path.dirname(os.path.abspath(self.path)), f.read().strip())
        except FileNotFoundError:
            return self.path

    def _open(self, path: str) -> None:
        try:
            cache = Cache(limits.block_cache_bytes_max)
            db = Rdict(path, _opts(), column_families={cf: _cf_opts(cf, cache) for cf in COLUMN_FAMILIES})
        except Exception as e:  # rocksdict raises plain Exception
            raise StoreError(f"cannot open RocksDB at {path}: {e}") from e
        cf = {name: db.get_column_family(name) for name in COLUMN_FAMILIES}
        cfh = {name: db.get_column_family_handle(name) for name in COLUMN_FAMILIES}
        meta = cf["meta"]
        version = meta.get(b"schema_version")
        if version is None:
            meta[b"schema_version"] = _U64.pack(SCHEMA_VERSION)
        elif _U64.unpack(version)[0] in UPGRADABLE_SCHEMA_VERSIONS:
            # Readers take both row layouts; marking it 5 keeps an older build from
            # misreading the segments this one writes from now on.
            meta[b"schema_version"] = _U64.pack(SCHEMA_VERSION)
        elif _U64.unpack(version)[0] != SCHEMA_VERSION:
            raise StoreError(
                f"{path}: schema version {_U64.unpack(version)[0]}, this build reads "
                f"{', '.join(map(str, sorted(UPGRADABLE_SCHEMA_VERSIONS | {SCHEMA_VERSION})))}: run the build that "
                "wrote it, or start this validator on an empty data directory and let it catch up from its peers")
        raw_head = meta.get(b"head")
        try:
            head = codec.decode_head(raw_head) if raw_head is not None else GENESIS_HEAD
        except codec.CodecError as e:
            raise StoreError(f"{path}: chain head record is corrupt ({e})") from e
        raw_applied = meta.get(b"applied_index")
        raw_config = meta.get(b"configuration")
        try:
            configuration = decode_configuration(raw_config) if raw_config is not None else None
        except ValueError as e:
            raise StoreError(f"{path}: governed configuration record is corrupt ({e})") from e
        positions, tree = _load_account_tree(cf)
        # Swap whole objects: a concurrent reader keeps using the old views until it returns.
        # Under the visibility lock: a proof read sees the old DB's head and tree or the new
        # one's, never a mix (a snapshot install swaps them while readers run).
        with self._visible_lock:
            self._db, self._cf, self._cfh = db, cf, cfh
            self._positions, self._tree = positions, tree
            with self._cache_lock:
                self._accounts = {}
                self._cache_generation += 1
            self.live_path = path
            self._head = head
            self._configuration = configuration
            self._applied_index = _U64.unpack(raw_applied)[0] if raw_applied is not None else 0

    def close(self) -> None:
        # Column-family views keep the DB (and its LOCK file) open while they are
        # referenced: drop them first, or reopening the path in this process fails.
        self._release_retired()
        self._cf.clear()
        self._cfh.clear()
        self._db.close()

    def bind_genesis(self, genesis_hash: bytes, configuration: Configuration | None = None) -> None:
        """Tie this data directory to one chain: record ``genesis_hash`` (32 bytes) and the
        genesis ``configuration`` (version 1 of the governed configuration) on first use;
        raise StoreError if the directory already belongs to another genesis. Later
        versions of the configuration come only from governance blocks (``commit``)."""
        meta = self._cf["meta"]
        stored = meta.get(b"genesis_hash")
        if stored is None:
            if configuration is not None:
                raw = encode_configuration(configuration)
                meta[b"configuration/" + _U64.pack(configuration.version)] = raw
                meta[b"configuration"] = raw
                self._configuration = configuration
            meta[b"genesis_hash"] = genesis_hash
        elif stored != genesis_hash:
            raise StoreError(
                f"{self.path} belongs to another chain (genesis hash {stored.hex()[:16]}…, "
                f"the genesis file has {genesis_hash.hex()[:16]}…). Point the config at the right "
                "data directory or genesis file."
            )

    def _release_retired(self) -> None:
        for db, cf, cfh, old_path in self._retired:
            cf.clear()
            cfh.clear()
            db.close()
            shutil.rmtree(old_path, ignore_errors=True)
        self._retired.clear()

    # -- snapshots ------------------------------------------------------------------
    def checkpoint(self, dest: str) -> int:
        """Write a RocksDB checkpoint (hard links, consistent, durable) to ``dest``; return its applied index.

        The WAL is synced first, so the live DB holds everything the checkpoint
        holds even after a power loss.
        """
        applied = self._applied_index
        self._db.flush_wal(True)
        Checkpoint(self._db).create_checkpoint(dest)
        return applied

    def replace_from_checkpoint(self, checkpoint_dir: str) -> None:
        """Make the checkpoint at ``checkpoint_dir`` the live DB (snapshot install).

        The old DB directory is moved aside and deleted once no reader can use it
        (at the next replace or close). Raises StoreError if the checkpoint does not open.
        """
        # RocksDB locks by path within a process, so the new DB gets a new directory
        # and ``path.active`` names it; the old one is closed and deleted later.
        self._release_retired()
        old = (self._db, self._cf, self._cfh, self.live_path)
        parent = os.path.dirname(os.path.abspath(self.path))
        generation = 1 + max(
            [int(n.rsplit("-", 1)[1]) for n in os.listdir(parent) if n.startswith(os.path.basename(self.path) + ".gen-")] or [0]
        )
        name = f"{os.path.basename(self.path)}.gen-{generation}"
        target = os.path.join(parent, name)
        os.replace(checkpoint_dir, target)
        self._open(target)
        tmp = self.path + ".active.tmp"
        with open(tmp, "w") as f:
            f.write(name)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path + ".active")
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._retired.append(old)

    # -- StateReader ------------------------------------------------------------
    def configuration(self) -> Configuration | None:
        """The governed configuration as of the last committed block (None if unbound)."""
        return self._configuration

    def configuration_at(self, version: int) -> Configuration | None:
        """A past version of the governed configuration, or None."""
        raw = self._cf["meta"].get(b"configuration/" + _U64.pack(version))
        return decode_configuration(raw) if raw is not None else None

    def head(self) -> Head:
        return self._head

    def merkle_node(self, level: int, index: int) -> bytes | None:
        return self._cf["merkle"].get(_merkle_key(level, index))

    def account_tree(self) -> AccountTree:
        """The account tree as of the last committed block (kept in memory, rebuilt on open)."""
        return self._tree

    def account_positions(self, ids) -> dict[int, int]:
        """Positions of those of ``ids`` that exist (a consistent view with ``account_tree``)."""
        pos = self._positions
        return {i: pos[i] for i in ids if i in pos}

    def account_proofs(self, ids) -> tuple[Head, int, list[tuple[Account, bytes, int, list[bytes]]]]:
        """(head, account count, [(account, record bytes, position, proof)]) for those of
        ``ids`` that exist, all as of one committed block (the head returned)."""
        with self._visible_lock:
            head, tree, pos = self._head, self._tree, self._positions
            out = []
            for i in ids:
                p = pos.get(i)
                if p is None:
                    continue
                raw = self._cf["accounts"].get(i.to_bytes(16, "big"))
                if raw is None:
                    continue
                out.append((codec.decode_account(raw), raw, p, tree.proof(p)))
            return head, tree.size, out

    # -- cosignatures (outside the block batch) -------------------------------
    def last_signed_height(self) -> int:
        """The highest height this validator may have signed (0: none). Kept in its own
        file beside the DB (``<path>.last-signed``), not in RocksDB: it is this
        validator's own state, which a snapshot installed from the leader must not
        replace, and its synced write must not hold up the block writes in RocksDB's WAL."""
        try:
            with open(self.path + ".last-signed", "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return 0
        if len(raw) != 8:
            raise StoreError(f"{self.path}.last-signed is corrupt ({len(raw)} bytes, not 8): refusing to sign anything "
                             "until an operator checks it (delete it only if this validator never signed above its head)")
        return _U64.unpack(raw)[0]

    def set_last_signed_height(self, height: int) -> None:
        """Persist ``height`` as the last signed height, durably (file fsync, rename,
        directory fsync), before any checkpoint up to it is signed: after a crash the
        validator never signs at or below it again, so never two checkpoints for one height."""
        tmp = self.path + ".last-signed.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, _U64.pack(height))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path + ".last-signed")
        dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def put_cosignatures(self, items) -> None:
        """Store (height, validator id, signature) items in one write."""
        wb = WriteBatch(raw_mode=True)
        cf = self._cfh["cosignatures"]
        for height, vid, sig in items:
            wb.put(_U64.pack(height) + vid.encode(), sig, cf)
        self._db.write(wb, self._wo)

    def delete_cosignature(self, height: int, validator_id: str) -> None:
        self._cf["cosignatures"].delete(_U64.pack(height) + validator_id.encode())

    def cosignatures(self, height: int) -> dict[str, bytes]:
        """validator id -> signature of every stored cosignature of ``height``."""
        prefix = _U64.pack(height)
        it = self._cf["cosignatures"].iter()
        it.seek(prefix)
        out = {}
        while it.valid():
            k = it.key()
            if not k.startswith(prefix):
                break
            out[k[8:].decode()] = it.value()
            it.next()
        _check_iterator(it, "cosignatures")
        return out

    def signatures_of(self, validator_id: str, from_height: int, limit: int) -> list[tuple[int, bytes]]:
        """(height, signature) of ``validator_id``'s stored cosignatures at heights >=
        ``from_height``, ascending, at most ``limit`` (reads at most 8 x limit rows)."""
        it = self._cf["cosignatures"].iter()
        it.seek(_U64.pack(from_height))
        want = validator_id.encode()
        out: list[tuple[int, bytes]] = []
        budget = 8 * limit
        while it.valid() and len(out) < limit and budget > 0:
            k = it.key()
            if k[8:] == want:
                out.append((_U64.unpack(k[:8])[0], it.value()))
            budget -= 1
            it.next()
        _check_iterator(it, "cosignatures")
        return out

    def handoff_heights(self, after: int, up_to: int, limit: int = 64) -> list[int]:
        """Heights in (after, up_to] whose block changed the validator set, ascending."""
        it = self._cf["meta"].iter()
        it.seek(b"handoff/" + _U64.pack(after + 1))
        out = []
        while it.valid() and len(out) < limit:
            k = it.key()
            if not k.startswith(b"handoff/"):
                break
            h = _U64.unpack(k[8:])[0]
            if h > up_to:
                break
            out.append(h)
            it.next()
        _check_iterator(it, "handoff heights")
        return out

    def applied_index(self) -> int:
        return self._applied_index

    def get_account(self, account_id: int) -> Account | None:
        """The committed account, or None.

        Served from a write-through cache of decoded accounts (at most
        ``limits.account_cache_entries_max``, least recently written or read out first): a
        RocksDB point read plus decode cost about 4 µs, twice per transfer, on
        every validator. Account objects are never mutated, so sharing them is safe.
        """
        a = self._accounts.get(account_id)
        if a is None:
            generation = self._cache_generation
            raw = self._cf["accounts"].get(account_id.to_bytes(16, "big"))
            if raw is None:
                return None
            a = codec.decode_account(raw)
            with self._cache_lock:
                if generation == self._cache_generation:
                    self._cache_account(a)
        return a

    def _cache_account(self, a: Account) -> None:
        """Insert ``a`` as the most recent entry; the caller holds ``_cache_lock``."""
        cache = self._accounts
        cache.pop(a.id, None)  # re-insert: dict order is the eviction order
        cache[a.id] = a
        if len(cache) > limits.account_cache_entries_max:
            del cache[next(iter(cache))]

    def get_transfer(self, transfer_id: int) -> Transfer | None:
        raw = self._cf["transfers"].get(transfer_id.to_bytes(16, "big"))
        return None if raw is None else codec.decode_transfer(raw)

    def get_pending_status(self, transfer_id: int) -> PendingStatus:
        raw = self._cf["pending_status"].get(transfer_id.to_bytes(16, "big"))
        return PendingStatus.none if raw is None else codec.decode_pending_status(raw)

    def get_failed_transfer(self, member: str, transfer_id: int) -> int | None:
        raw = self._cf["transfers_failed"].get(_failed_key(member, transfer_id))
        return None if raw is None else struct.unpack(">I", raw)[0]

    def get_tx_result(self, tx_hash: bytes) -> tuple[int, tuple[int, ...], int] | None:
        """(height, per-event codes, TxRejection) of an applied transaction, or None.

        A rejected transaction has no codes: its value is the 12-byte head plus one
        rejection byte, the only odd length (codes are u16)."""
        raw = self._cf["tx_index"].get(tx_hash)
        if raw is None:
            return None
        height, _pos = _TXI.unpack_from(raw, 0)
        if (len(raw) - _TXI.size) % 2:
            return height, (), raw[-1]
        n = (len(raw) - _TXI.size) // 2
        return height, struct.unpack_from(f">{n}H", raw, _TXI.size), 0

    def expiring(self, until_timestamp: int, limit: int = limits.block_expiries_max) -> list[tuple[int, int]]:
        """The first ``limit`` (expires_at, transfer id) with expires_at <= until, ascending;
        reads at most ``limit`` keys of the expiry index."""
        out: list[tuple[int, int]] = []
        if limit <= 0:
            return out
        it = self._cf["expiry"].iter()
        it.seek_to_first()
        while it.valid():
            k = it.key()
            expires_at = _U64.unpack_from(k, 0)[0]
            if expires_at > until_timestamp:
                break
            out.append((expires_at, codec.from_u128(k[8:24])))
            if len(out) == limit:
                break
            it.next()
        _check_iterator(it, "the expiry index")
        return out

    # -- reads for the API -----------------------------------------------------
    def get_block(self, height: int) -> tuple[BlockHeader, list[bytes]] | None:
        raw = self._cf["blocks"].get(_U64.pack(height))
        if raw is None:
            return None
        txs = self._cf["block_txs"].get(_U64.pack(height)) or b""
        return codec.decode_stored_header(raw), codec.decode_tx_hashes(txs)

    def get_header(self, height: int) -> BlockHeader | None:
        raw = self._cf["blocks"].get(_U64.pack(height))
        return codec.decode_stored_header(raw) if raw is not None else None

    def get_transaction(self, tx_hash: bytes) -> bytes | None:
        return self._cf["transactions"].get(tx_hash)

    def account_transfer_ids(self, account_id: int, ts_min: int = 0, ts_max: int = (1 << 64) - 1) -> Iterator[tuple[int, int]]:
        """(timestamp, transfer id) of an account's transfers, ascending, within [ts_min, ts_max]."""
        for ts, raw_id in self._scan_segments("account_transfers", _U128(account_id), ts_min, ts_max, False):
            yield ts, codec.from_u128(raw_id)

    def _scan(self, cf: str, prefix: bytes, ts_min: int, ts_max: int, reverse: bool) -> Iterator[tuple[int, bytes]]:
        """(ts, value) of keys ``prefix + ts`` with ts in [ts_min, ts_max], in key order or reversed.

        Cost is proportional to the entries visited, never to the column family's size
        (a segment's rows outside the range are skipped, not yielded).
        """
        if cf in SEGMENTED_CFS:
            yield from self._scan_segments(cf, prefix, ts_min, ts_max, reverse)
            return
        it = self._cf[cf].iter()
        n = len(prefix)
        if reverse:
            it.seek_for_prev(prefix + _U64.pack(ts_max))
        else:
            it.seek(prefix + _U64.pack(ts_min))
        while it.valid():
            k = it.key()
            if k[:n] != prefix:
                break
            ts = _U64.unpack_from(k, n)[0]
            if ts < ts_min or ts > ts_max:
                break
            yield ts, it.value()
            if reverse:
                it.prev()
            else:
                it.next()
        _check_iterator(it, cf)

    def _scan_segments(self, cf: str, prefix: bytes, ts_min: int, ts_max: int,
                       reverse: bool) -> Iterator[tuple[int, bytes]]:
        """:meth:`_scan` of a segmented index (:func:`_put_segments`): the same rows,
        in the same order, as one key per row would give."""
        it = self._cf[cf].iter()
        n = len(prefix)
        if reverse:
            it.seek_for_prev(prefix + _U64.pack(ts_max))
        else:
            # The segment holding ts_min starts at or before it.
            it.seek_for_prev(prefix + _U64.pack(ts_min))
            if not it.valid() or it.key()[:n] != prefix:
                it.seek(prefix + _U64.pack(ts_min))
        while it.valid():
            k = it.key()
            if k[:n] != prefix:
                break
            rows = _segment_rows(k, it.value(), n)
            if reverse:
                for ts, value in reversed(rows):
                    if ts > ts_max:
                        continue
                    if ts < ts_min:
                        return
                    yield ts, value
                it.prev()
            else:
                for ts, value in rows:
                    if ts < ts_min:
                        continue
                    if ts > ts_max:
                        return
                    yield ts, value
                it.next()
        _check_iterator(it, cf)

    def _transfer_id_at(self, ts: int) -> bytes | None:
        """The id (u128 bytes) of the transfer with timestamp ``ts``, or None."""
        it = self._cf["transfers_by_ts"].iter()
        it.seek_for_prev(_U64.pack(ts))
        if not it.valid():
            _check_iterator(it, "transfers_by_ts")
            return None
        for row_ts, raw_id in _segment_rows(it.key(), it.value(), 0):
            if row_ts == ts:
                return raw_id
        return None

    def _page(self, rows: Iterator[tuple[int, bytes]], pick: Callable[[int, bytes], object], limit: int, reverse: bool,
              *, peek: bool = True) -> tuple[list, int]:
        """One page of ``rows`` (from :meth:`_scan`): the non-None ``pick(ts, value)``, and the cursor.

        Stops at ``limit`` results or after ``scan_rows_max`` rows read, whichever
        comes first; a stopped page peeks at one more key, so its cursor is 0 only
        when nothing is left. The cursor is the timestamp after the last row read
        (the next ``timestamp_min``, or ``timestamp_max`` when reversed): index keys
        are unique per timestamp, so resuming from it reads every row once.

        ``peek=False`` for scans filtered by owner: the row after a full page may be
        another member's, and a cursor of 0 or not would tell the caller that such a
        row exists (found by tests/integration/test_red_team.py). A full page then
        always gets a cursor, and the next page may come back empty with cursor 0.
        """
        out: list = []
        budget = self.scan_rows_max
        read = 0
        ts = 0
        for ts, value in rows:
            read += 1
            item = pick(ts, value)
            if item is not None:
                out.append(item)
                if len(out) == limit:
                    break
            if read == budget:
                break
        else:
            return out, 0
        if peek and next(rows, None) is None:
            return out, 0
        # A row beyond ts exists, so ts - 1 >= 1 when reversed (0 would mean "unbounded").
        return out, ts - 1 if reverse else ts + 1

    @staticmethod
    def _bounds(f) -> tuple[int, int, int]:
        ts_min = f.timestamp_min
        ts_max = f.timestamp_max or (1 << 64) - 1
        limit = min(f.limit or limits.query_limit_max, limits.query_limit_max)
        return ts_min, ts_max, limit

    def get_account_transfers(self, f: AccountFilter) -> tuple[list[Transfer], int]:
        """An account's transfers by time (TigerBeetle get_account_transfers); (transfers, next cursor).

        Pages (all four queries): at most ``limit`` results and at most
        ``scan_rows_max`` index rows read, matching or not. The cursor is the next
        page's ``timestamp_min`` (``timestamp_max`` when reversed), 0 when nothing is
        left; a page may hold fewer than ``limit`` results, even none, when the
        budget ran out, so continue while the cursor is not 0. Paging with it
        returns every match exactly once, in order.
        """
        ts_min, ts_max, limit = self._bounds(f)
        both = f.debits == f.credits
        account_id = f.account_id

        def pick(_ts: int, raw_id: bytes) -> Transfer | None:
            t = self.get_transfer(codec.from_u128(raw_id))
            if t is None:
                return None
            if not both and not ((f.debits and t.debit_account_id == account_id) or (f.credits and t.credit_account_id == account_id)):
                return None
            return t if _matches(t, f) else None

        return self._page(self._scan("account_transfers", _U128(account_id), ts_min, ts_max, f.reversed), pick, limit, f.reversed)

    def get_account_balances(self, f: AccountFilter) -> tuple[list[tuple[int, Account]], int]:
        """Balances of a ``history`` account after each change: [(timestamp, account)], next cursor
        (paged as :meth:`get_account_transfers`)."""
        ts_min, ts_max, limit = self._bounds(f)
        filtering = any((f.user_data_128, f.user_data_64, f.user_data_32, f.code)) or f.debits != f.credits

        def pick(ts: int, raw: bytes) -> tuple[int, Account] | None:
            if filtering:
                raw_id = self._transfer_id_at(ts)
                t = None if raw_id is None else self.get_transfer(codec.from_u128(raw_id))
                if t is None or not _matches(t, f):
                    return None
                if f.debits != f.credits and not (
                    (f.debits and t.debit_account_id == f.account_id) or (f.credits and t.credit_account_id == f.account_id)
                ):
                    return None
            return ts, codec.decode_account(raw)

        return self._page(self._scan("history", _U128(f.account_id), ts_min, ts_max, f.reversed), pick, limit, f.reversed)

    def _query(self, kind: str, f: QueryFilter, get: Callable[[int], object],
               visible: Callable[[object], bool] | None) -> tuple[list, int]:
        ts_min, ts_max, limit = self._bounds(f)
        # Scan the index of the first filtering field; check the others on the records.
        for tag, attr in INDEX_FIELDS.items():
            value = getattr(f, attr)
            if value:
                cf, prefix = f"{kind}_index", bytes([tag]) + _U128(value)
                break
        else:
            cf, prefix = f"{kind}s_by_ts", b""

        def pick(_ts: int, raw_id: bytes):
            obj = get(codec.from_u128(raw_id))
            if obj is None or not _matches(obj, f):
                return None
            return obj if visible is None or visible(obj) else None

        return self._page(self._scan(cf, prefix, ts_min, ts_max, f.reversed), pick, limit, f.reversed,
                          peek=visible is None)

    def query_transfers(self, f: QueryFilter, owner: str | None = None) -> tuple[list[Transfer], int]:
        """Transfers matching ``f`` by time (TigerBeetle query_transfers); (transfers, next cursor),
        paged as :meth:`get_account_transfers`.

        ``owner`` (a member id; None = every transfer): only transfers with an account
        of ``owner`` on either side. The filter runs inside the index scan: a row of
        someone else's transfer is read and counted against ``scan_rows_max`` like a
        row that fails ``f``, so pages and cursors are exact for the caller."""
        visible = None
        if owner is not None:
            get_account = self.get_account

            def visible(t) -> bool:
                d = get_account(t.debit_account_id)
                if d is not None and d.owner == owner:
                    return True
                c = get_account(t.credit_account_id)
                return c is not None and c.owner == owner

        return self._query("transfer", f, self.get_transfer, visible)

    def query_accounts(self, f: QueryFilter, owner: str | None = None) -> tuple[list[Account], int]:
        """Accounts matching ``f`` by creation time (TigerBeetle query_accounts); (accounts, next
        cursor), paged as :meth:`get_account_transfers`. ``owner`` (None = every account):
        only accounts of that member, filtered inside the scan as in :meth:`query_transfers`."""
        visible = None if owner is None else (lambda a: a.owner == owner)
        return self._query("account", f, self.get_account, visible)

    def iter_accounts(self) -> Iterator[Account]:
        it = self._cf["accounts"].iter()
        it.seek_to_first()
        while it.valid():
            yield codec.decode_account(it.value())
            it.next()
        _check_iterator(it, "accounts")

    # -- writes ------------------------------------------------------------------
    def get_accounts(self, ids) -> tuple[int, list[Account | None]]:
        """(height, [account or None per id]) for ``ids`` (ints), all as of one committed
        block: the head and the records are read under the visibility lock, which a
        commit holds while it writes a block and updates the cache. Reading the ids one
        by one (:meth:`get_account`) can see a block half-way: one transfer's debit
        without its credit, balances that never existed together (a torn read the chaos
        suite's read-totals checker caught). One RocksDB multi-get for the ids not
        cached (at most ``limits.lookup_ids_max``), so the lock is held briefly; decoding
        happens after it is released.
        """
        with self._visible_lock:
            height = self._head.height
            cache = self._accounts
            found: list = [cache.get(i) for i in ids]
            missing = [k for k, a in enumerate(found) if a is None]
            raws = self._cf["accounts"].get([ids[k].to_bytes(16, "big") for k in missing]) if missing else []
        for k, raw in zip(missing, raws):
            if raw is not None:
                found[k] = codec.decode_account(raw)
        return height, found

    def commit(self, ws: WriteSet, applied_index: int) -> None:
        """Write a block's effects and ``applied_index`` in one atomic WriteBatch.

        Raises whatever RocksDB raises; on error nothing is written.
        """
        verify(ws.head is not None and ws.header is not None, "a committed WriteSet carries its head and header")
        if ws.header.height != self._head.height + 1:
            fatal(f"block {ws.header.height} committed after head {self._head.height}: blocks must be committed in order")
        if applied_index <= self._applied_index:
            fatal(f"applied index {applied_index} after {self._applied_index}: the applied index must grow")
        wb = WriteBatch(raw_mode=True)
        put = wb.put
        h = self._cfh
        cf_accounts = h["accounts"]
        enc_a = ws.encoded_accounts
        for a in ws.accounts.values():
            _check_account(a)
            raw = enc_a.get(a.id) or codec.encode_account(a)
            put(raw[:16], raw, cf_accounts)  # the record starts with the id (codec layout)
        cf_transfers = h["transfers"]
        enc_t = ws.encoded_transfers
        # Index segments (see _put_segments): one key per block for transfers_by_ts,
        # one per (field, value) per block for transfer_index, instead of one key per
        # transfer per index.
        by_ts: list[bytes] = []
        # (tag, value) -> rows: ints as keys, so a value's key bytes are built once per block.
        index: dict[tuple[int, int], list[bytes]] = {}
        get_rows = index.get
        for t in ws.transfers.values():
            raw = enc_t.get(t.id) or codec.encode_transfer(t)
            # The record starts with the id and ends with the timestamp (codec layout).
            tid = raw[:16]
            row = raw[-8:] + tid
            put(tid, raw, cf_transfers)
            by_ts.append(row)
            # INDEX_FIELDS' tags, spelled out: getattr per field per transfer is measurable.
            # A zero field is not indexed (a filter of 0 means "any").
            if t.user_data_128:
                _add_row(index, get_rows, (1, t.user_data_128), row)
            if t.user_data_64:
                _add_row(index, get_rows, (2, t.user_data_64), row)
            if t.user_data_32:
                _add_row(index, get_rows, (3, t.user_data_32), row)
            # Ledger and code are set on nearly every transfer: inlined.
            if t.ledger:
                rows = get_rows((4, t.ledger))
                if rows is None:
                    index[(4, t.ledger)] = [row]
                else:
                    rows.append(row)
            if t.code:
                rows = get_rows((5, t.code))
                if rows is None:
                    index[(5, t.code)] = [row]
                else:
                    rows.append(row)
        if by_ts:
            _put_segments(put, {b"": by_ts}, h["transfers_by_ts"])
            _put_segments(put, {bytes((tag,)) + v.to_bytes(16, "big"): rows for (tag, v), rows in index.items()},
                          h["transfer_index"])
        if ws.created_accounts:
            by_ts, index = [], {}
            for account_id in ws.created_accounts:
                a = ws.accounts[account_id]
                row = _U64.pack(a.timestamp) + a.id.to_bytes(16, "big")
                by_ts.append(row)
                for tag, attr in INDEX_FIELDS.items():
                    value = getattr(a, attr)
                    if value:
                        index.setdefault(bytes([tag]) + value.to_bytes(16, "big"), []).append(row)
            _put_segments(put, {b"": by_ts}, h["accounts_by_ts"])
            _put_segments(put, index, h["account_index"])
        for tid, s in ws.pending_status.items():
            wb.put(tid.to_bytes(16, "big"), codec.encode_pending_status(s), h["pending_status"])
        for (member, tid), code in ws.failed_transfers.items():
            wb.put(_failed_key(member, tid), struct.pack(">I", code), h["transfers_failed"])
        if ws.account_transfers:
            # account -> its one row (bytes), or its rows (list): most accounts have one per block.
            per_account: dict[int, bytes | list[bytes]] = {}
            get_rows = per_account.get
            pack = _U64.pack
            for account_id, ts, tid in ws.account_transfers:
                row = pack(ts) + tid.to_bytes(16, "big")
                rows = get_rows(account_id)
                if rows is None:
                    per_account[account_id] = row
                elif rows.__class__ is bytes:
                    per_account[account_id] = [rows, row]
                else:
                    rows.append(row)
            cf_account_transfers = h["account_transfers"]
            many = {}
            for account_id, rows in per_account.items():
                if rows.__class__ is bytes:
                    put(account_id.to_bytes(16, "big") + rows[:8], rows, cf_account_transfers)
                else:
                    many[account_id.to_bytes(16, "big")] = rows
            if many:
                _put_segments(put, many, cf_account_transfers)
        # Puts before deletes: a pending transfer created and resolved in the same
        # block has its expiry key in both lists, and must not stay indexed.
        for expires_at, tid in ws.expiry_put:
            wb.put(_U64.pack(expires_at) + tid.to_bytes(16, "big"), b"", h["expiry"])
        for expires_at, tid in ws.expiry_delete:
            wb.delete(_U64.pack(expires_at) + tid.to_bytes(16, "big"), h["expiry"])
        for account_id, ts, a in ws.history:
            wb.put(account_id.to_bytes(16, "big") + _U64.pack(ts), codec.encode_account(a), h["history"])
        height = ws.header.height
        rejections = ws.tx_rejections or [0] * len(ws.txs)
        for pos, (tx, codes, rejection) in enumerate(zip(ws.txs, ws.tx_codes, rejections)):
            if rejection:
                verify(not codes and 0 < rejection < 256, "a rejected transaction has no event codes and a u8 rejection")
                wb.put(tx.tx_hash, _TXI.pack(height, pos) + bytes([rejection]), h["tx_index"])
            else:
                wb.put(tx.tx_hash, _TXI.pack(height, pos) + struct.pack(f">{len(codes)}H", *codes), h["tx_index"])
            wb.put(tx.tx_hash, tx.envelope, h["transactions"])
        hb = _U64.pack(height)
        wb.put(hb, codec.encode_stored_header(ws.header), h["blocks"])
        wb.put(hb, codec.encode_tx_hashes([tx.tx_hash for tx in ws.txs]), h["block_txs"])
        cf_merkle = h["merkle"]
        for (level, index), value in ws.merkle_nodes.items():
            put(_merkle_key(level, index), value, cf_merkle)
        cf_pos = h["account_positions"]
        for account_id, position in ws.account_positions.items():
            put(account_id.to_bytes(16, "big"), _U64.pack(position), cf_pos)
        if ws.header.validators_hash != ws.header.next_validators_hash:
            wb.put(b"handoff/" + hb, b"", h["meta"])
        if ws.configuration is not None:
            raw_config = encode_configuration(ws.configuration)
            wb.put(b"configuration", raw_config, h["meta"])
            wb.put(b"configuration/" + _U64.pack(ws.configuration.version), raw_config, h["meta"])
        wb.put(b"head", codec.encode_head(ws.head), h["meta"])
        wb.put(b"applied_index", _U64.pack(applied_index), h["meta"])
        with self._visible_lock:
            self._db.write(wb, self._wo)
            with self._cache_lock:
                for a in ws.accounts.values():
                    self._cache_account(a)
                self._cache_generation += 1
            if ws.account_positions:
                self._positions.update(ws.account_positions)
            if ws.account_tree_pending is not None:
                self._tree.commit(ws.account_tree_pending)
            if ws.configuration is not None:
                self._configuration = ws.configuration
            self._head = ws.head
            self._applied_index = applied_index

    def mark_applied(self, applied_index: int) -> None:
        """Record a Raft index that carried no block (no-op, malformed entry)."""
        if applied_index <= self._applied_index:
            fatal(f"applied index {applied_index} after {self._applied_index}: the applied index must grow")
        self._cf["meta"].put(b"applied_index", _U64.pack(applied_index))
        self._applied_index = applied_index

    def flush(self) -> None:
        self._db.flush_wal(True)

    def background_work_pending(self) -> bool:
        """True while RocksDB flushes or compacts, or has compactions queued (any column family)."""
        db = self._db
        if db.property_int_value("rocksdb.num-running-flushes") or db.property_int_value("rocksdb.num-running-compactions"):
            return True
        return any(cf.property_int_value("rocksdb.compaction-pending") for cf in self._cf.values())


def _add_row(index: dict, get_rows, key, row: bytes) -> None:
    rows = get_rows(key)
    if rows is None:
        index[key] = [row]
    else:
        rows.append(row)


def _put_segments(put, groups: dict[bytes, list[bytes]], cf) -> None:
    """Write one index segment per group: key ``prefix + first ts u64``, value the
    group's rows (ts u64 + id u128, 24 bytes each) in timestamp order.

    A block's rows of one index prefix (one account, one field value, or the whole
    ``*_by_ts`` index) go into one key, so an index costs a key per prefix per
    block instead of a key per transfer. Blocks have strictly increasing
    timestamps, so the segments of one prefix never overlap and key order is
    time order. Schema 4 wrote one key per row (key ``prefix + ts``, value the
    16-byte id); :func:`_segment_rows` reads both (16 is not a multiple of 24).
    """
    for prefix, rows in groups.items():
        if len(rows) > 1:
            rows.sort()  # bytes order = ts order (big-endian u64 first); ts are unique
        first = rows[0]
        put(prefix + first[:8], b"".join(rows) if len(rows) > 1 else first, cf)


def _segment_rows(key: bytes, value: bytes, n: int) -> list[tuple[int, bytes]]:
    """(ts, id u128 bytes) of one index key with a prefix of ``n`` bytes, ascending:
    a segment (24-byte rows), or a schema-4 row (the 16-byte id; ts from the key)."""
    if len(value) == 16:
        return [(_U64.unpack_from(key, n)[0], value)]
    verify(len(value) % 24 == 0 and len(value) > 0, "an index segment holds 24-byte rows")
    unpack = _U64.unpack_from
    return [(unpack(value, i)[0], value[i + 8 : i + 24]) for i in range(0, len(value), 24)]


#: Index column families written as segments (_put_segments): values are (ts, id) rows.
SEGMENTED_CFS = frozenset({"transfers_by_ts", "transfer_index", "account_transfers", "accounts_by_ts", "account_index"})


def _merkle_key(level: int, index: int) -> bytes:
    return bytes([level]) + _U64.pack(index)


def _load_account_tree(cf) -> tuple[dict[int, int], AccountTree]:
    """Rebuild the account tree from ``account_positions`` and ``accounts`` (both keyed
    by account id, so one ordered pass over each): positions by id, and the tree."""
    positions: dict[int, int] = {}
    leaves: dict[int, bytes] = {}
    pos_it, acc_it = cf["account_positions"].iter(), cf["accounts"].iter()
    pos_it.seek_to_first()
    acc_it.seek_to_first()
    while pos_it.valid():
        key = pos_it.key()
        while acc_it.valid() and acc_it.key() < key:
            acc_it.next()
        if not acc_it.valid() or acc_it.key() != key:
            raise StoreError(f"account {int.from_bytes(key, 'big')} has a tree position but no record")
        position = _U64.unpack(pos_it.value())[0]
        positions[int.from_bytes(key, "big")] = position
        leaves[position] = merkle.leaf_hash(acc_it.value())
        pos_it.next()
    _check_iterator(pos_it, "account_positions")
    _check_iterator(acc_it, "accounts")
    if sorted(leaves) != list(range(len(leaves))):
        raise StoreError("account tree positions are not 0..n-1")
    return positions, AccountTree.from_leaf_hashes(leaves[i] for i in range(len(leaves)))


def _check_iterator(it, what: str) -> None:
    """Raise StoreError if ``it`` stopped on a read error rather than at the end of its
    data: RocksDB marks an iterator that hit a corrupt block invalid, exactly as at the
    end, and only ``status()`` tells them apart (RocksDB wiki "Iterator": "check
    status() after valid() returns false"). Without it a corrupt block reads as "no more
    rows": a missing expiry on one validator would make it diverge from the others.
    """
    try:
        it.status()
    except Exception as e:  # rocksdict raises plain Exception
        raise StoreError(f"RocksDB read of {what} failed: {e}") from e


# Plain ints: IntFlag's & runs Python-level enum code on every account written.
_DEBITS_MUST_NOT_EXCEED_CREDITS = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CREDITS_MUST_NOT_EXCEED_DEBITS = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_U128_END = 1 << 128


def _check_account(a: Account) -> None:
    """Check invariants right before an account is written (TigerBeetle style); always on.

    Raises InvariantError: a balance outside u128, or beyond the account's balance limit.
    """
    for v in (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted):
        if not 0 <= v < _U128_END:
            fatal(f"account {a.id}: balance {v} out of u128 range")
    if a.flags & _DEBITS_MUST_NOT_EXCEED_CREDITS and a.debits_pending + a.debits_posted > a.credits_posted:
        fatal(f"account {a.id}: debits exceed credits")
    if a.flags & _CREDITS_MUST_NOT_EXCEED_DEBITS and a.credits_pending + a.credits_posted > a.debits_posted:
        fatal(f"account {a.id}: credits exceed debits")
