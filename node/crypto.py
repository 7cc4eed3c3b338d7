"""Ed25519 verification (RFC 8032, via `cryptography`) and SHA-256 helpers.

`cryptography` releases the GIL during verification, so :class:`Verifier`
spreads a batch over a thread pool.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class UnknownKey(LookupError):
    """The member or key id is not in the member registry."""


class Verifier:
    """Verifies envelopes against the member registry (member id -> key id -> public key)."""

    def __init__(self, members: dict[str, dict[str, bytes]], threads: int = 2) -> None:
        self._keys = {
            (member, key_id): Ed25519PublicKey.from_public_bytes(raw)
            for member, keys in members.items()
            for key_id, raw in keys.items()
        }
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ed25519")
        self._threads = threads

    def verify_one(self, member_id: str, key_id: str, signature: bytes, body: bytes) -> bool:
        """True iff ``signature`` is member/key's Ed25519 signature over ``body``.

        Raises UnknownKey for an unknown member or key id.
        """
        key = self._keys.get((member_id, key_id))
        if key is None:
            raise UnknownKey(f"unknown member {member_id!r} / key {key_id!r}")
        try:
            key.verify(signature, body)
            return True
        except InvalidSignature:
            return False

    def verify_many(self, items: list[tuple[str, str, bytes, bytes]]) -> list[bool | UnknownKey]:
        """Verify (member, key_id, signature, body) tuples; one bool or UnknownKey each."""

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
