"""Ed25519 verification (RFC 8032, via `cryptography`) and SHA-256 helpers.

`cryptography` releases the GIL during verification, so :class:`Verifier`
spreads a batch over a thread pool.
"""
from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from raft_ledger_node.ledger.governance import Configuration


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def verify_ed25519(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` by the raw
    32-byte ``public_key``; False for any malformed key or signature. Deterministic:
    the pure core's signature port (governance approvals are verified in apply)."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


class UnknownKey(LookupError):
    """The member or key id is not in the member registry (PERMISSION_DENIED)."""


class KeyNotPermitted(UnknownKey):
    """The key is known but may not sign now: revoked or not yet valid at the next
    block, or its member suspended or removed (PERMISSION_DENIED)."""


class Verifier:
    """Verifies envelopes against the member registry.

    Built from a dict (member id -> key id -> public key: every key always valid), or
    following the governed :class:`Configuration`: ``Verifier(source=store.configuration)``
    re-reads ``source()`` on every batch and rebuilds its key table when the
    configuration object changed (a governance block, a snapshot install). A key then
    signs only while its member is active and the key is not revoked: a governance
    block's revocation takes effect at the next block, and every transaction
    admitted after that block is committed lands in a later block. Apply re-checks
    against the block's configuration (:func:`~raft_ledger_node.ledger.apply._authorise`).
    """

    def __init__(self, members: dict[str, dict[str, bytes]] | None = None, threads: int = 2, *,
                 source: Callable[[], Configuration | None] | None = None) -> None:
        # (member, key id) -> (public key, why it may not sign or None)
        self._keys: dict[tuple[str, str], tuple[Ed25519PublicKey, str | None]] = {
            (member, key_id): (Ed25519PublicKey.from_public_bytes(raw), None)
            for member, keys in (members or {}).items()
            for key_id, raw in keys.items()
        }
        self._source = source
        self._configuration: Configuration | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ed25519")
        self._threads = threads
        self._refresh()

    def _refresh(self) -> None:
        if self._source is None:
            return
        cfg = self._source()
        if cfg is None or cfg is self._configuration:
            return
        with self._lock:
            if cfg is not self._configuration:
                self.set_configuration(cfg)

    def set_configuration(self, cfg: Configuration) -> None:
        """Admit exactly the keys of ``cfg`` whose member is active and that are not revoked."""
        keys = {}
        for m in cfg.members:
            for k in m.keys:
                if not m.active:
                    why = f"member {m.id!r} is {m.status.value}"
                elif k.revoked_at:
                    why = f"key {k.key_id!r} of member {m.id!r} revoked (from height {k.revoked_at})"
                else:
                    why = None
                try:
                    keys[(m.id, k.key_id)] = (Ed25519PublicKey.from_public_bytes(k.public_key), why)
                except ValueError:
                    continue
        self._keys = keys
        self._configuration = cfg

    @property
    def configuration(self) -> Configuration | None:
        """The configuration the key table was last built from (None: built from a dict)."""
        return self._configuration

    def verify_one(self, member_id: str, key_id: str, signature: bytes, body: bytes) -> bool:
        """True iff ``signature`` is member/key's Ed25519 signature over ``body``.

        Raises UnknownKey for an unknown member or key id, KeyNotPermitted for a
        revoked key or a suspended or removed member.
        """
        entry = self._keys.get((member_id, key_id))
        if entry is None:
            raise UnknownKey(f"unknown member {member_id!r} / key {key_id!r}")
        key, why = entry
        if why is not None:
            raise KeyNotPermitted(why)
        try:
            key.verify(signature, body)
            return True
        except InvalidSignature:
            return False

    def verify_many(self, items: list[tuple[str, str, bytes, bytes]]) -> list[bool | UnknownKey]:
        """Verify (member, key_id, signature, body) tuples; one bool or UnknownKey
        (or KeyNotPermitted) each."""
        self._refresh()

        def one(item):
            try:
                return self.verify_one(*item)
            except UnknownKey as e:
                return e

        if len(items) < 8 or self._threads < 2:
            return [one(i) for i in items]
        chunk = (len(items) + self._threads - 1) // self._threads
        parts = [items[i : i + chunk] for i in range(0, len(items), chunk)]
        out: list = []
        for res in self._pool.map(lambda part: [one(i) for i in part], parts):
            out.extend(res)
        return out
