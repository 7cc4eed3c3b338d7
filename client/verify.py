"""The SDK's trusted checkpoint of one chain, and how it advances: light-client verification.

A :class:`TrustedState` holds what this member has verified about one chain:

* the **origin** ``ledger/<chain_id>/<genesis hash prefix>``
  (:func:`~raft_ledger_client.checkpoint.origin_for`), computed from the genesis hash the
  member pinned, never from anything a validator reports (immudb CVE-2022-39199: a state
  keyed on a server-reported id let one server's answers stand for another's);
* the **validator set** that certifies the next blocks: the genesis set (pinned with the
  genesis file), then each set a verified handoff named;
* the last trusted **checkpoint** (height, tree size, root, state root ...) and its
  certificate note, or none yet (the empty tree).

:meth:`TrustedState.advance` moves it to a newer certified checkpoint, and
:meth:`TrustedState.check_read` accepts the checkpoint a read came with. Each new
checkpoint must

1. be certified (:func:`~raft_ledger_client.checkpoint.verify_certificate`) by the set
   trusted at that point; when its ``validators`` line names another set, the handoffs
   in between are followed first, CometBFT light-client style: each handoff checkpoint
   is certified by the set before it, and its new set must hash to its
   ``next-validators`` line;
2. not go backwards: a lower height or tree size than the trusted one is a replay or a
   rollback; another body at the trusted height is a fork;
3. extend the trusted log: an RFC 9162 §2.1.4.2 consistency proof from the trusted tree
   size to the new one, checked against the trusted root and the new certified root.
   Every step is checked, handoffs included, from the size actually trusted to the next:
   never only the ends of a chain of checkpoints (immudb GHSA-672p-m5jq-mrh8, where the
   SDK checked only the ends of a linear proof and a server could rewrite history).

Proofs and handoffs come from a :class:`ProofSource` (``LedgerClient`` passes one that
asks a validator). Persistence: given a ``path``, the state is saved as JSON after each
change (written to a temporary file in the same directory, fsynced, then
``os.replace``: a crash leaves the old or the new file, never half of one) and loaded
at construction; a file for another genesis hash, origin or pinned genesis set is
refused.

Errors: anything unproven raises :class:`~raft_ledger_client.VerificationError` naming
the check (``rollback``, ``fork``, ``consistency proof``, ``handoff`` and the
certificate reasons); a state file that is unreadable or for another chain raises
VerificationError too (``trusted state file``). A caller's own mistakes (a genesis hash
that is not 32 bytes, a malformed validator set) raise ValueError.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from typing import Protocol, Sequence

from raft_ledger_client._exceptions import VerificationError
from raft_ledger_client.checkpoint import (
    HASH_SIZE,
    Checkpoint,
    origin_for,
    parse_note,
    validator_set_hash,
    verify_certificate,
)
from raft_ledger_client.merkle import ProofError, verify_consistency

__all__ = ["ProofSource", "TrustedState", "handoffs_max", "state_file_bytes_max"]

#: Handoffs followed in one advance; more is refused (a server cannot make the client
#: verify an unbounded chain in one call). Validator-set changes are governance events:
#: rare, and a client that advances regularly crosses few at a time.
handoffs_max = 64
#: Bytes of a trusted-state file (a note under 64 KiB, a set of at most 100 validators).
state_file_bytes_max = 1 << 20
_STATE_VERSION = 1

Validators = Sequence[tuple[str, bytes]]


class ProofSource(Protocol):
    """Where :class:`TrustedState` gets what a checkpoint does not carry itself."""

    def consistency_proof(self, first: int, second: int) -> Sequence[bytes]:
        """RFC 6962 consistency proof from tree size ``first`` to ``second`` (0 < first < second)."""
        ...

    def handoffs(self, after_height: int, up_to_height: int) -> Sequence[tuple[str, Validators]]:
        """For each block in ``(after_height, up_to_height]`` that changed the validator set,
        in height order: its certificate note (signed by the old set) and the new set."""
        ...


def _canonical_set(validators: Validators) -> tuple[tuple[str, bytes], ...]:
    items = tuple(sorted((str(vid), bytes(key)) for vid, key in validators))
    validator_set_hash(items)  # ValueError on an empty set, a repeated id or a bad key
    return items


class TrustedState:
    """The verified view of one chain (see the module docstring).

    ``chain_id``: the genesis file's; ``genesis_hash``: SHA-256 of the genesis file's
    canonical JSON (32 bytes), pinned by the member; ``validators``: the genesis
    validator set, ``(id, 32-byte Ed25519 public key)`` pairs. ``path``: where to persist
    (None: in memory only). Thread-safe: one lock around every change.
    """

    def __init__(self, chain_id: str, genesis_hash: bytes, validators: Validators, *, path: str | None = None) -> None:
        if not isinstance(genesis_hash, (bytes, bytearray)) or len(genesis_hash) != HASH_SIZE:
            raise ValueError(f"genesis_hash must be {HASH_SIZE} bytes")
        self.chain_id = chain_id
        self.genesis_hash = bytes(genesis_hash)
        self.origin = origin_for(chain_id, self.genesis_hash)
        self.genesis_validators = _canonical_set(validators)
        self._genesis_set_hash = validator_set_hash(self.genesis_validators)
        self.validators: tuple[tuple[str, bytes], ...] = self.genesis_validators
        self.checkpoint: Checkpoint | None = None
        self.note: str | None = None
        self.path = path
        self._lock = threading.Lock()
        if path is not None and os.path.exists(path):
            self._load(path)

    # -- what is trusted -------------------------------------------------------------
    @property
    def height(self) -> int:
        return self.checkpoint.height if self.checkpoint else 0

    @property
    def tree_size(self) -> int:
        return self.checkpoint.tree_size if self.checkpoint else 0

    # -- advancing -------------------------------------------------------------------
    def advance(self, note: str | bytes, source: ProofSource) -> Checkpoint:
        """Trust the checkpoint certified by ``note``, newer than or equal to the trusted one.

        Returns the new trusted :class:`Checkpoint`. Raises VerificationError when the
        note is not a certificate of this chain by the trusted set (after following
        handoffs), when it is older than the trusted checkpoint (``rollback``: an old
        checkpoint presented as new), another body at the trusted height (``fork``), or
        when the log does not extend the trusted one (``consistency proof``). On any error
        nothing changes.
        """
        with self._lock:
            return self._advance(note, source)

    def check_read(self, note: str | bytes, source: ProofSource) -> Checkpoint:
        """The checkpoint a read was served against, verified; the trusted state advances to it
        when it is newer.

        A validator that lags may answer against a checkpoint older than the trusted one:
        that read is accepted as what it is, an older certified state, if the note is
        certified by the current set and a consistency proof shows its tree is a prefix of
        the trusted tree; the trusted state never moves back. (Use :meth:`advance` where
        freshness is the point: there an older checkpoint is a rollback.) Older
        checkpoints of an earlier validator set are refused (VerificationError
        ``stale``), as are all the failures of :meth:`advance`.
        """
        with self._lock:
            body = _body(note)
            current = self.checkpoint
            if current is None or _is_newer_or_same(Checkpoint.parse(body), current):
                return self._advance(note, source)
            cp = self._certify(note, self.validators)
            if cp.tree_size > current.tree_size:
                raise VerificationError(f"fork: checkpoint at height {cp.height}, tree size {cp.tree_size} "
                                        f"conflicts with the trusted height {current.height}, tree size {current.tree_size}")
            self._check_extends(cp, current, source)
            return cp

    def _certify(self, note: str | bytes, validators: Validators) -> Checkpoint:
        try:
            return verify_certificate(note, validators, self.origin)
        except VerificationError as e:
            if "validator-set hash" in str(e) and self.checkpoint is not None and \
                    Checkpoint.parse(_body(note)).height < self.checkpoint.height:
                raise VerificationError(f"stale: {e} (a checkpoint older than the trusted one, of another set)") from None
            raise

    def _advance(self, note: str | bytes, source: ProofSource) -> Checkpoint:
        body = _body(note)
        claimed = Checkpoint.parse(body)
        if claimed.origin != self.origin:
            raise VerificationError(f"wrong origin: certificate is for {claimed.origin[:80]!r}, expected {self.origin!r}")
        trusted, validators = self.checkpoint, self.validators
        self._check_not_older(claimed, trusted)
        if trusted is not None and claimed.height == trusted.height:
            if body != trusted.body():
                raise VerificationError(f"fork: another checkpoint for the trusted height {trusted.height}")
            return trusted  # the same checkpoint, already verified
        if claimed.validators_hash != validator_set_hash(validators):
            trusted, validators = self._follow_handoffs(claimed, trusted, validators, source)
        cp = verify_certificate(note, validators, self.origin)
        self._check_not_older(cp, trusted)
        if trusted is not None:
            self._check_extends(trusted, cp, source)
        # Every step verified: only now does anything change.
        self.checkpoint, self.note, self.validators = cp, _text(note), validators
        self._save()
        return cp

    def _follow_handoffs(self, claimed: Checkpoint, trusted: Checkpoint | None, validators, source: ProofSource):
        """Verify each handoff between the trusted checkpoint and ``claimed``; return the last
        handoff checkpoint and the set it hands over to."""
        # A trusted checkpoint that is itself a handoff block: its new set is not known yet.
        after = trusted.height if trusted is not None else 0
        if trusted is not None and trusted.next_validators_hash != trusted.validators_hash:
            after = trusted.height - 1
        handoffs = list(source.handoffs(after, claimed.height))
        if len(handoffs) > handoffs_max:
            raise VerificationError(f"handoff: {len(handoffs)} handoffs in one step, at most {handoffs_max}")
        current_hash = validator_set_hash(validators)
        for i, (note, next_set) in enumerate(handoffs):
            if claimed.validators_hash == current_hash:
                break
            try:
                cp = verify_certificate(note, validators, self.origin)
            except VerificationError as e:
                raise VerificationError(f"handoff {i}: {e}") from None
            if trusted is not None and cp.height == trusted.height:
                if cp.body() != trusted.body():
                    raise VerificationError(f"handoff {i}: fork: another checkpoint for the trusted height {cp.height}")
            else:
                self._check_not_older(cp, trusted, f"handoff {i}: ")
                if cp.height >= claimed.height:
                    raise VerificationError(f"handoff {i}: height {cp.height} is not below the checkpoint's {claimed.height}")
                if trusted is not None:
                    self._check_extends(trusted, cp, source, f"handoff {i}: ")
            try:
                next_set = _canonical_set(next_set)
            except ValueError as e:
                raise VerificationError(f"handoff {i}: malformed validator set: {e}") from None
            if validator_set_hash(next_set) != cp.next_validators_hash:
                raise VerificationError(f"handoff {i}: the new validator set does not hash to the certified "
                                        f"next-validators of height {cp.height}")
            trusted, validators, current_hash = cp, next_set, cp.next_validators_hash
        if claimed.validators_hash != current_hash:
            raise VerificationError("handoff: the checkpoint's validators hash names a set that no verified "
                                    f"handoff up to height {claimed.height} leads to")
        return trusted, validators

    @staticmethod
    def _check_not_older(cp: Checkpoint, trusted: Checkpoint | None, prefix: str = "") -> None:
        if trusted is None:
            return
        if cp.height < trusted.height or cp.tree_size < trusted.tree_size:
            raise VerificationError(
                f"{prefix}rollback: checkpoint at height {cp.height}, tree size {cp.tree_size} is older than the "
                f"trusted height {trusted.height}, tree size {trusted.tree_size} (replayed or rolled back)")

    @staticmethod
    def _check_extends(old: Checkpoint, new: Checkpoint, source: ProofSource, prefix: str = "") -> None:
        """RFC 9162 §2.1.4.2: the tree of ``old`` is a prefix of the tree of ``new``."""
        if old.tree_size == 0:
            return  # the empty tree is a prefix of every tree
        if old.tree_size == new.tree_size:
            if old.root_hash != new.root_hash:
                raise VerificationError(f"{prefix}fork: two roots for tree size {old.tree_size}")
            return
        proof = list(source.consistency_proof(old.tree_size, new.tree_size))
        try:
            verify_consistency(old.tree_size, new.tree_size, proof, old.root_hash, new.root_hash)
        except (ProofError, TypeError) as e:
            raise VerificationError(f"{prefix}consistency proof from tree size {old.tree_size} (height {old.height}) "
                                    f"to {new.tree_size} (height {new.height}): {e}") from None

    # -- persistence -----------------------------------------------------------------
    def _document(self) -> dict:
        return {
            "version": _STATE_VERSION,
            "origin": self.origin,
            "genesis_hash": self.genesis_hash.hex(),
            "genesis_validators_hash": self._genesis_set_hash.hex(),
            "validators": [[vid, key.hex()] for vid, key in self.validators],
            "note": self.note,
        }

    def _save(self) -> None:
        if self.path is None:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".trusted-", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self._document(), f, sort_keys=True, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _load(self, path: str) -> None:
        """Load a saved state; VerificationError("trusted state file ...") if it is not ours."""
        try:
            with open(path, "rb") as f:
                raw = f.read(state_file_bytes_max + 1)
            if len(raw) > state_file_bytes_max:
                raise ValueError(f"over {state_file_bytes_max} bytes")
            doc = json.loads(raw)
            if doc.get("version") != _STATE_VERSION:
                raise ValueError(f"version {doc.get('version')!r}, want {_STATE_VERSION}")
            if doc.get("genesis_hash") != self.genesis_hash.hex() or doc.get("origin") != self.origin:
                raise ValueError(f"it is for another chain ({str(doc.get('origin'))[:80]!r}), this client pinned {self.origin!r}")
            if doc.get("genesis_validators_hash") != self._genesis_set_hash.hex():
                raise ValueError("it was reached from another pinned genesis validator set")
            validators = _canonical_set((vid, bytes.fromhex(key)) for vid, key in doc["validators"])
            note = doc.get("note")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise VerificationError(f"trusted state file {path}: {e}") from None
        if note is not None:
            # The saved checkpoint is always the one the saved set certified (handoffs
            # move the set only together with a checkpoint of the new set, or the saved
            # checkpoint is the handoff block, still certified by the old set). Our own
            # file, but re-checked: a corrupted or edited file fails here, not later.
            try:
                cp = verify_certificate(note, validators, self.origin)
            except (VerificationError, ValueError) as e:
                raise VerificationError(f"trusted state file {path}: its checkpoint does not verify: {e}") from None
            self.checkpoint, self.note = cp, note
        self.validators = validators


def _is_newer_or_same(cp: Checkpoint, trusted: Checkpoint) -> bool:
    return cp.height >= trusted.height


def _text(note: str | bytes) -> str:
    return note.decode("utf-8") if isinstance(note, (bytes, bytearray)) else note


def _body(note: str | bytes) -> bytes:
    return parse_note(note)[0]
