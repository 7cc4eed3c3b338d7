"""Finality certificates: every validator signs a checkpoint of every block it applied,
and collects its peers' signatures, outside the Raft critical path.

Formats: the checkpoint is a C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint)
whose extension lines name the block (``raft_ledger_client.checkpoint.Checkpoint``); a
signature is a C2SP signed-note line (https://c2sp.org/signed-note, Ed25519, type 0x01)
by the validator's own key (genesis/governance ``public_key``). A **certificate** is the
checkpoint note with the signatures of more than half of the validator set that
certifies the block (the set named by the header's ``validators_hash``); the SDK and
Go's ``golang.org/x/mod/sumdb/note`` verify it.

What a validator signs: the checkpoint it computed itself from the block it applied
(header hash, tree size and root, account-tree root, validator-set hashes). It never
signs two checkpoints for one height: before signing heights up to ``h`` it persists
``last_signed_height >= h`` (a synced write, reserving SIGN_RESERVE heights ahead so
the write is rare), and after a restart it signs only above it (CometBFT's privval
"last sign state" does the same for votes).

Collection: each validator asks each peer (gRPC ``GetCosignatures`` with its own pinned
validator certificate) for the peer's signatures above the last one it holds, once per
round, and stores those that name the peer's key of that height. Each one is verified
over this validator's own checkpoint of that height when a certificate of the height is
first assembled (a reader asks): a signature that does not verify means the peer signed a
different block: it is logged as a divergence, deleted, and never served.

Costs: one Ed25519 signature (~35 µs) and one small write per block on each validator,
one synced write per SIGN_RESERVE heights, one GetCosignatures call per peer per round
(ROUND_S), and one verification (~115 µs) per peer signature of a height that a reader
asks about. Nothing here runs on the apply thread.
"""
from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from raft_ledger_client.checkpoint import Checkpoint, key_hash, origin_for
from raft_ledger_node.ledger.apply import validator_set_hash
from raft_ledger_node.ledger.governance import ValidatorRecord

log = logging.getLogger("ledger.cosigner")

#: Heights signed per round at most, and cosignatures asked of a peer per call.
SIGN_BATCH_MAX = 4096
COLLECT_BATCH_MAX = 512
#: Heights reserved per synced write of the last signed height: the validator persists
#: "may have signed up to head + SIGN_RESERVE" once, then signs up to it without
#: another write. After a crash it skips the rest of the reservation (never signing a
#: height twice); the others' signatures certify those heights meanwhile.
SIGN_RESERVE = 64
#: Checkpoints kept in memory (by height) for signing, verifying and certificates.
CHECKPOINT_CACHE_MAX = 4096
#: Seconds between rounds (sign new heights, ask each peer once): the cost is per round,
#: not per block, and a height is certified about one to two rounds after it applied.
ROUND_S = 0.25
#: Seconds between signing passes (local: one Ed25519 signature per new height).
SIGN_S = 0.05
#: The signed-note signature line prefix (U+2014 EM DASH, space).
_LINE_PREFIX = "\u2014 "


def checkpoint_of(header, origin: str) -> Checkpoint:
    """The C2SP checkpoint a validator signs for block ``header`` (a BlockHeader): the log's
    size and root, and the height, header hash, account-tree root and validator-set hashes."""
    return Checkpoint(origin=origin, tree_size=header.tree_size, root_hash=header.tree_root, height=header.height,
                      block_hash=header.hash, state_root=header.state_root, validators_hash=header.validators_hash,
                      next_validators_hash=header.next_validators_hash)


@dataclass(frozen=True, slots=True)
class Certificate:
    """A checkpoint note with the signatures held for its height.

    ``note`` is the signed note text; ``signatures`` how many validators of the
    certifying set signed; ``quorum`` how many a majority needs (len(set) // 2 + 1)."""

    height: int
    checkpoint: Checkpoint
    note: str
    signatures: int
    quorum: int

    @property
    def certified(self) -> bool:
        return self.signatures >= self.quorum


class Cosigner:
    """Signs this validator's checkpoints and collects its peers' (one background thread).

    ``store``: the RocksStore (headers, configuration versions, cosignatures, last signed
    height). ``chain_id`` and ``genesis_hash`` name the log (the checkpoint's origin).
    ``signing_key``: this validator's Ed25519 key, or None (it then only collects).
    ``peers``: validator id -> ``fetch(from_height, limit) -> [(height, signature)]``
    (a gRPC call to that peer; raising is logged and retried next round), or a
    callable returning that mapping for the current validator set (read every round,
    so validators added or removed by governance are asked or no longer asked).
    """

    def __init__(self, store, *, chain_id: str, genesis_hash: bytes, validator_id: str,
                 signing_key: Ed25519PrivateKey | None,
                 peers: "dict[str, Callable] | Callable[[], dict[str, Callable]] | None" = None,
                 interval_s: float = ROUND_S) -> None:
        self.store = store
        self.origin = origin_for(chain_id, genesis_hash)
        self.validator_id = validator_id
        self._key = signing_key
        self._peers = peers if callable(peers) else dict(peers or {})
        self._interval_s = interval_s
        self._collected: dict[str, int] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        #: Set while a reader waits for a certificate: collect now, not at the next round.
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None
        #: Newest height known to be certified (monotone), for GetCheckpoint(0).
        self.latest_certified = 0
        self._sets: dict[bytes, tuple[ValidatorRecord, ...]] = {}
        self._checkpoints: dict[int, Checkpoint] = {}
        #: (height, validator id) of peer signatures already verified over our checkpoint.
        self._verified: set[tuple[int, str]] = set()
        #: Heights this validator may sign: above ``_signed``, up to ``_reserved``.
        self._signed: int | None = None
        self._reserved = 0

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        # The newest certified height below the head (a restart): look back a bounded way.
        h = self.store.head().height
        for _ in range(1024):
            if h <= 0:
                break
            cert = self.certificate(h)
            if cert is not None and cert.certified:
                self.latest_certified = h
                break
            h -= 1
        self._thread = threading.Thread(target=self._run, name="cosigner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wanted.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        # Signing is local and cheap per height: every SIGN_S. Collecting costs one RPC per
        # peer: once per round (ROUND_S), or sooner (at most every SIGN_S) while a reader
        # waits for a certificate (wait_certified sets _wanted). So under a write-only load
        # the cost is per interval, not per block, and readers do not wait a whole round.
        last_collect = 0.0
        while not self._stop.is_set():
            try:
                progressed = self.sign_new()
                now = time.monotonic()
                if self._wanted.is_set() or now - last_collect >= self._interval_s:
                    self._wanted.clear()
                    last_collect = now
                    progressed |= self.collect()
                if progressed:
                    self._advance_certified()
            except Exception:  # never let the thread die: log, back off, go on
                log.exception("cosigner round failed")
            self._wanted.wait(SIGN_S)
            if self._stop.is_set():
                break

    # -- checkpoints ----------------------------------------------------------------
    def checkpoint(self, height: int) -> Checkpoint | None:
        """This validator's checkpoint of block ``height`` (None if it has no such block)."""
        hit = self._checkpoints.get(height)
        if hit is not None:
            return hit
        h = self.store.get_header(height) if height > 0 else None
        if h is None:
            return None
        cp = checkpoint_of(h, self.origin)
        if len(self._checkpoints) >= CHECKPOINT_CACHE_MAX:
            for k in sorted(self._checkpoints)[: CHECKPOINT_CACHE_MAX // 2]:
                del self._checkpoints[k]
        self._checkpoints[height] = cp
        return cp

    def validator_set(self, set_hash: bytes) -> tuple[ValidatorRecord, ...]:
        """The voting validators whose set hash is ``set_hash`` (a version of the governed
        configuration; newest first, cached). Empty if no version has it. Learners
        certify nothing: they are in no majority, of Raft or of certificates."""
        hit = self._sets.get(set_hash)
        if hit is not None:
            return hit
        cfg = self.store.configuration()
        version = cfg.version if cfg is not None else 0
        while version >= 1:
            c = self.store.configuration_at(version)
            if c is not None and validator_set_hash(c.voters) == set_hash:
                self._sets[set_hash] = c.voters
                return c.voters
            version -= 1
        return ()

    def validators_at(self, height: int) -> tuple[ValidatorRecord, ...]:
        """The set that certifies block ``height`` (empty if unknown)."""
        cp = self.checkpoint(height)
        return self.validator_set(cp.validators_hash) if cp is not None else ()

    def certificate(self, height: int) -> Certificate | None:
        """The note for ``height`` with every held signature of its certifying set, in
        the set's id order (None if this validator has no block at ``height``)."""
        cp = self.checkpoint(height)
        if cp is None:
            return None
        members = {v.id: v for v in self.validator_set(cp.validators_hash)}
        held = self.store.cosignatures(height)
        for vid in [v for v in held if v in members and v != self.validator_id and (height, v) not in self._verified]:
            if self._verifies(vid, height, held[vid]):
                self._verified.add((height, vid))
            else:
                del held[vid]
                self.store.delete_cosignature(height, vid)
        if len(self._verified) > 4 * CHECKPOINT_CACHE_MAX:
            self._verified = {k for k in self._verified if k[0] > height - CHECKPOINT_CACHE_MAX}
        body = cp.body().decode()
        lines = [f"{_LINE_PREFIX}{vid} {base64.b64encode(held[vid]).decode()}\n" for vid in sorted(held) if vid in members]
        return Certificate(height, cp, body + "\n" + "".join(lines), len(lines), len(members) // 2 + 1)

    def wait_certified(self, height: int, timeout_s: float) -> Certificate | None:
        """The certificate of ``height`` once a majority signed it, waiting up to
        ``timeout_s``; None if it is not certified by then."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            cert = self.certificate(height)
            if cert is not None and cert.certified:
                return cert
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                return None
            self._wanted.set()
            with self._changed:
                self._changed.wait(min(remaining, 0.05))

    def _signers(self, height: int) -> tuple[int, int]:
        """(signatures held of the certifying set, majority needed) for ``height``."""
        cp = self.checkpoint(height)
        if cp is None:
            return 0, 1
        members = {v.id for v in self.validator_set(cp.validators_hash)}
        return sum(1 for vid in self.store.cosignatures(height) if vid in members), len(members) // 2 + 1

    def _advance_certified(self) -> None:
        head = self.store.head().height
        h = self.latest_certified + 1
        while h <= head:
            held, quorum = self._signers(h)
            if held < quorum:
                break
            self.latest_certified = h
            h += 1
        with self._changed:
            self._changed.notify_all()

    # -- signing ---------------------------------------------------------------------
    def sign_new(self) -> bool:
        """Sign every applied height above the last signed one (at most SIGN_BATCH_MAX).
        Persists the new last signed height before signing. True if it signed any."""
        if self._key is None:
            return False
        if self._signed is None:  # start-up: skip whatever an earlier run reserved
            self._signed = self._reserved = self.store.last_signed_height()
        last = self._signed
        head = self.store.head().height
        if head <= last:
            return False
        upto = min(head, last + SIGN_BATCH_MAX)
        if upto > self._reserved:
            self._reserved = upto + SIGN_RESERVE
            self.store.set_last_signed_height(self._reserved)  # durable before any signature
        self._signed = upto
        pub = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        khash = key_hash(self.validator_id, pub)
        items = []
        for h in range(last + 1, upto + 1):
            cp = self.checkpoint(h)
            if cp is None:
                continue
            items.append((h, self.validator_id, khash + self._key.sign(cp.body())))
        self.store.put_cosignatures(items)
        return bool(items)

    def own_signatures(self, from_height: int, limit: int) -> list[tuple[int, bytes]]:
        """This validator's stored signatures of heights >= ``from_height``, ascending."""
        return self.store.signatures_of(self.validator_id, max(1, from_height), limit)

    # -- collecting ------------------------------------------------------------------
    def collect(self) -> bool:
        """Ask every peer for its signatures above those held; store the ones that
        verify over this validator's own checkpoint. True if any were stored."""
        stored = False
        head = self.store.head().height
        peers = self._peers() if callable(self._peers) else self._peers
        for vid, fetch in peers.items():
            start = self._collected.get(vid, 0) + 1
            if start > head:
                continue
            try:
                got = fetch(start, COLLECT_BATCH_MAX)
            except Exception as e:  # a dead or slow peer: try again next round
                log.debug("cosignatures from %s: %s", vid, e)
                continue
            items = []
            last = start - 1
            for height, sig in got:
                if height > head or height < start:
                    continue
                # Only the cheap checks here (size, key hash of that validator's key at that
                # height): the Ed25519 verification waits until a certificate of that height
                # is assembled for a reader (certificate()), so a write-only load pays none.
                if self._names_its_key(vid, height, sig):
                    items.append((height, vid, sig))
                last = max(last, height)
            if items:
                self.store.put_cosignatures(items)
                stored = True
            self._collected[vid] = last
        return stored

    def _names_its_key(self, vid: str, height: int, sig: bytes) -> bool:
        cp = self.checkpoint(height)
        rec = next((v for v in self.validator_set(cp.validators_hash) if v.id == vid), None) if cp else None
        if rec is None or len(rec.public_key) != 32 or len(sig) != 68 or sig[:4] != key_hash(vid, rec.public_key):
            log.warning("cosignature of %s for height %d names no key of that validator at that height", vid, height)
            return False
        return True

    def _verifies(self, vid: str, height: int, sig: bytes) -> bool:
        if not self._names_its_key(vid, height, sig):
            return False
        cp = self.checkpoint(height)
        rec = next(v for v in self.validator_set(cp.validators_hash) if v.id == vid)
        try:
            Ed25519PublicKey.from_public_bytes(rec.public_key).verify(sig[4:], cp.body())
        except InvalidSignature:
            log.error("DIVERGENCE: validator %s signed a different checkpoint at height %d than this validator "
                      "computed (block %s): not stored", vid, height, cp.block_hash.hex()[:16])
            return False
        return True
