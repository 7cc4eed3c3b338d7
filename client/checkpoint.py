"""Checkpoints, signed notes and finality certificates: the C2SP formats, Ed25519 only.

A **checkpoint** (https://c2sp.org/tlog-checkpoint) is the text a validator signs
after applying a block. Ours has exactly eight lines, each ending in ``"\\n"``::

    ledger/<chain_id>/<first 16 lower-case hex chars of the genesis hash>   origin
    <tree size>                                  decimal, no leading zeros
    <root hash>                                  standard base64 of 32 bytes, padded
    height <block height>                        decimal, no leading zeros
    block <base64 block header hash>
    state <base64 account-tree root>
    validators <base64 validator-set hash>       the set that certifies this block
    next-validators <base64 validator-set hash>  the set after this block

A **signed note** (https://c2sp.org/signed-note) is a text ending in ``"\\n"``, a blank
line, then one or more lines ``— <key name> <base64(4-byte key ID || signature)>``.
We use only signature type 0x01, plain Ed25519 (RFC 8032) over the text, with the
key ID ``SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]``: the algorithm
``golang.org/x/mod/sumdb/note`` verifies (``tests/go/verifier`` checks that it does).

A **certificate** is a signed note whose text is a checkpoint and whose key names are
validator ids. It is valid for a validator set (``(id, 32-byte Ed25519 public key)``
pairs, the set that certifies the block) when more than half of that set signed the
exact text. Per the signed-note spec, a line whose (name, key ID) is not a key of the
set is ignored and never counts; a line that is a key of the set must verify.

Limits (hostile input costs little): a note is at most ``note_bytes_max`` bytes and
``note_signatures_max`` lines (Go's ``note.Open`` stops at 100 too; the spec asks
for at least 16). Parsing is strict: besides the spec's rules we require canonical
base64 (re-encoding gives the same text), where Go also accepts non-zero padding bits.

Errors: malformed or unverifiable input raises
:class:`~raft_ledger_client.VerificationError` naming the reason; a caller's own
mistakes (an invalid key name, a public key that is not 32 bytes, a duplicate id in a
validator set, a field of the wrong type) raise :class:`ValueError`.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from raft_ledger_client._exceptions import VerificationError

__all__ = [
    "Checkpoint",
    "HASH_SIZE",
    "SIGNATURE_TYPE_ED25519",
    "certify",
    "key_hash",
    "note_bytes_max",
    "note_signatures_max",
    "origin_for",
    "parse_note",
    "sign_note",
    "validator_set_hash",
    "verifier_key",
    "verify_certificate",
]

HASH_SIZE = 32
PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
#: c2sp.org/signed-note "Signature types": 0x01 is Ed25519.
SIGNATURE_TYPE_ED25519 = 0x01

#: Bytes of a whole note (text, blank line, signature lines). 100 lines of a 256-byte
#: name and an Ed25519 signature take about 35 KiB; our checkpoint text is under 400 B.
note_bytes_max = 64 << 10
#: Signature lines in one note; more is malformed (as in Go's note.Open).
note_signatures_max = 100
#: UTF-8 bytes of a key name (a validator id).
key_name_bytes_max = 256
#: Largest tree size and height: Go's tlog and note use int64.
decimal_max = (1 << 63) - 1
#: The genesis-hash prefix in the origin, in hex characters.
origin_genesis_hex_chars = 16

assert note_signatures_max >= 16  # the spec's floor
assert note_signatures_max * (len("— ") + key_name_bytes_max + 1 + 92 + 1) < note_bytes_max

_EM_DASH_PREFIX = "— "
_DECIMAL = re.compile(r"(0|[1-9][0-9]*)", re.ASCII)
_B64_32 = re.compile(r"[A-Za-z0-9+/]{43}=", re.ASCII)
_CHECKPOINT_LINES = 8
_EXTENSIONS = ("height", "block", "state", "validators", "next-validators")


def _valid_name(name: str) -> bool:
    """signed-note: a key name is non-empty, with no Unicode space and no ``+``
    (and, being in a note, no control character)."""
    return (isinstance(name, str) and name != "" and "+" not in name
            and len(name.encode("utf-8", "surrogatepass")) <= key_name_bytes_max
            and not any(c.isspace() or c < " " for c in name))


def _check_name(name: str) -> None:
    if not _valid_name(name):
        raise ValueError(f"invalid key name {name!r}: must be non-empty, at most {key_name_bytes_max} "
                         "UTF-8 bytes, without spaces, '+' or control characters")


def _check_public_key(public_key: bytes) -> bytes:
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} raw bytes")
    return bytes(public_key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode_b64(text: str) -> bytes | None:
    """Canonical standard base64 (RFC 4648 §4) or None."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return raw if _b64(raw) == text else None


def origin_for(chain_id: str, genesis_hash: bytes) -> str:
    """The checkpoint origin ``ledger/<chain_id>/<first 16 hex chars of genesis_hash>``.

    ``genesis_hash`` is 32 bytes. ``chain_id`` must be a valid key name without ``/``
    (so the origin parses one way). Raises ValueError otherwise.
    """
    _check_name(chain_id)
    if "/" in chain_id:
        raise ValueError(f"chain id {chain_id!r} contains '/'")
    if not isinstance(genesis_hash, (bytes, bytearray)) or len(genesis_hash) != HASH_SIZE:
        raise ValueError(f"genesis hash must be {HASH_SIZE} bytes")
    return f"ledger/{chain_id}/{bytes(genesis_hash).hex()[:origin_genesis_hex_chars]}"


def validator_set_hash(validators: Iterable[tuple[str, bytes]]) -> bytes:
    """SHA-256 over the validators sorted by id, each as ``u16 big-endian length of the
    UTF-8 id || id || 32-byte Ed25519 public key`` (32 bytes out).

    Code-point order of ids equals the byte order of their UTF-8, so any language sorts
    them alike. Raises ValueError on a duplicate id, an empty set, an invalid id or a key
    that is not 32 bytes.
    """
    items = sorted((str(v), _check_public_key(k)) for v, k in validators)
    if not items:
        raise ValueError("a validator set has at least one validator")
    h = hashlib.sha256()
    previous = None
    for vid, key in items:
        _check_name(vid)
        if vid == previous:
            raise ValueError(f"validator {vid!r} appears twice in the set")
        previous = vid
        raw = vid.encode("utf-8")
        h.update(len(raw).to_bytes(2, "big") + raw + key)
    return h.digest()


@dataclass(frozen=True)
class Checkpoint:
    """One block's checkpoint (see the module docstring for the text).

    ``tree_size``, ``height``: ints in ``[0, 2**63)``. ``root_hash``, ``block_hash``,
    ``state_root``, ``validators_hash``, ``next_validators_hash``: 32 bytes each.
    ``origin``: a non-empty line. Construction raises ValueError on a field out of shape.
    """

    origin: str
    tree_size: int
    root_hash: bytes
    height: int
    block_hash: bytes
    state_root: bytes
    validators_hash: bytes
    next_validators_hash: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin or any(c < " " for c in self.origin):
            raise ValueError("origin must be a non-empty line without control characters")
        for name in ("tree_size", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= decimal_max:
                raise ValueError(f"{name} must be an int in [0, 2**63), got {value!r}")
        for name in ("root_hash", "block_hash", "state_root", "validators_hash", "next_validators_hash"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != HASH_SIZE:
                raise ValueError(f"{name} must be {HASH_SIZE} bytes")

    def body(self) -> bytes:
        """The note text (UTF-8, eight lines, each ending in ``"\\n"``)."""
        lines = [
            self.origin,
            str(self.tree_size),
            _b64(self.root_hash),
            f"height {self.height}",
            f"block {_b64(self.block_hash)}",
            f"state {_b64(self.state_root)}",
            f"validators {_b64(self.validators_hash)}",
            f"next-validators {_b64(self.next_validators_hash)}",
        ]
        return "".join(line + "\n" for line in lines).encode("utf-8")

    @classmethod
    def parse(cls, body: bytes) -> "Checkpoint":
        """The inverse of :meth:`body`, strictly: exactly the eight lines in that order,
        canonical decimals (no sign, no leading zeros, ASCII digits, below 2**63),
        canonical padded base64 of exactly 32 bytes. Anything else raises
        VerificationError naming the line.
        """
        body = _utf8(body, "checkpoint", note_bytes_max)
        if len(body) > note_bytes_max:
            raise VerificationError("malformed checkpoint: not bytes, or too long")
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise VerificationError("malformed checkpoint: not UTF-8") from None
        if not text.endswith("\n"):
            raise VerificationError("malformed checkpoint: does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) != _CHECKPOINT_LINES:
            raise VerificationError(f"malformed checkpoint: {len(lines)} lines, want {_CHECKPOINT_LINES}")
        origin = lines[0]
        if not origin or any(c < " " for c in origin):
            raise VerificationError("malformed checkpoint: empty origin or control characters")
        tree_size = _parse_decimal("tree size", lines[1])
        root_hash = _parse_hash("root hash", lines[2])
        values = []
        for key, line in zip(_EXTENSIONS, lines[3:]):
            prefix = key + " "
            if not line.startswith(prefix):
                raise VerificationError(f"malformed checkpoint: expected a {key!r} line, got {line[:40]!r}")
            value = line[len(prefix):]
            values.append(_parse_decimal(key, value) if key == "height" else _parse_hash(key, value))
        return cls(origin, tree_size, root_hash, *values)


def _parse_decimal(what: str, text: str) -> int:
    if not _DECIMAL.fullmatch(text) or len(text) > 19 or int(text) > decimal_max:
        raise VerificationError(f"malformed checkpoint: {what} {text[:40]!r} is not a canonical decimal below 2**63")
    return int(text)


def _parse_hash(what: str, text: str) -> bytes:
    raw = _decode_b64(text) if _B64_32.fullmatch(text) else None
    if raw is None:
        raise VerificationError(f"malformed checkpoint: {what} {text[:60]!r} is not canonical base64 of {HASH_SIZE} bytes")
    return raw


def key_hash(name: str, public_key: bytes) -> bytes:
    """The signed-note key ID of an Ed25519 key: ``SHA-256(name || 0x0A || 0x01 ||
    public_key)[:4]`` (4 bytes; Go's ``uint32`` big-endian). Raises ValueError on an
    invalid name or a key that is not 32 bytes."""
    _check_name(name)
    key = _check_public_key(public_key)
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([SIGNATURE_TYPE_ED25519]) + key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """Go's verifier key text ``<name>+<hex8 key ID>+<base64(0x01 || public key)>``, as
    ``note.NewVerifier`` reads it."""
    return f"{name}+{key_hash(name, public_key).hex()}+{_b64(bytes([SIGNATURE_TYPE_ED25519]) + bytes(public_key))}"


def _raw_public_key(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign_note(body: bytes, name: str, private_key: Ed25519PrivateKey) -> str:
    """One signature line ``— <name> <base64(key ID || Ed25519 signature)>\\n`` over
    ``body`` (bytes, or str encoded as UTF-8), which must end in a newline and be a
    valid note text. Append the lines, after ``body + "\\n"``, to make the note."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    body = bytes(body)
    if not body.endswith(b"\n"):
        raise ValueError("a note text ends in a newline")
    _check_text(body, ValueError)
    _check_name(name)
    signature = private_key.sign(body)
    return f"{_EM_DASH_PREFIX}{name} {_b64(key_hash(name, _raw_public_key(private_key)) + signature)}\n"


def _utf8(text: str | bytes, what: str, limit: int) -> bytes:
    """``text`` as bytes; VerificationError("malformed <what>") if it is neither bytes
    nor a str that encodes (a lone surrogate does not), or if a str has more than
    ``limit`` characters (then its UTF-8 is over ``limit`` bytes: rejected unencoded)."""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text)
    if isinstance(text, str):
        if len(text) > limit:
            raise VerificationError(f"malformed {what}: over {limit} bytes")
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass
    raise VerificationError(f"malformed {what}: not text")


def _check_text(raw: bytes, error: type[Exception]) -> str:
    """signed-note: valid UTF-8, no ASCII control character other than newline."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error("malformed note: not UTF-8") from None
    if _CONTROL.search(text):
        raise error("malformed note: control character")
    return text


#: ASCII control characters but newline (one regex scan, not a Python loop per character).
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")


def parse_note(text: str | bytes) -> tuple[bytes, list[tuple[str, bytes, bytes]]]:
    """Split a signed note into ``(body, [(name, key_id, signature), ...])``.

    ``body`` is the signed text (bytes, ending in ``"\\n"``, up to the last blank
    line); ``key_id`` is 4 bytes; ``signature`` the rest of the decoded line (>= 1
    byte; 64 for Ed25519). Lines keep their order and duplicates. Nothing is verified
    here. Raises VerificationError("malformed note: ...") when the note is over
    ``note_bytes_max`` bytes or ``note_signatures_max`` lines, not UTF-8, holds a
    control character, has no blank line, no signature line, a line that is not
    ``— name base64`` with a valid name, or non-canonical base64.
    """
    raw = _utf8(text, "note", note_bytes_max)
    if len(raw) > note_bytes_max:
        raise VerificationError(f"malformed note: over {note_bytes_max} bytes")
    decoded = _check_text(raw, VerificationError)
    split = decoded.rfind("\n\n")
    if split < 0:
        raise VerificationError("malformed note: no blank line before the signatures")
    body, block = decoded[:split + 1], decoded[split + 2:]
    if not block or not block.endswith("\n"):
        raise VerificationError("malformed note: no signature line, or the last one has no newline")
    lines = block[:-1].split("\n")
    if len(lines) > note_signatures_max:
        raise VerificationError(f"malformed note: {len(lines)} signature lines, limit {note_signatures_max}")
    signatures = []
    for number, line in enumerate(lines, 1):
        if not line.startswith(_EM_DASH_PREFIX):
            raise VerificationError(f"malformed note: signature line {number} does not start with '— '")
        name, sep, b64 = line[len(_EM_DASH_PREFIX):].partition(" ")
        if not sep or not _valid_name(name):
            raise VerificationError(f"malformed note: signature line {number} has no valid key name")
        sig = _decode_b64(b64) if b64 else None
        if sig is None or len(sig) < 5:
            raise VerificationError(f"malformed note: signature line {number} is not canonical base64 of >= 5 bytes")
        signatures.append((name, sig[:4], sig[4:]))
    return body.encode("utf-8"), signatures


def verify_certificate(note_text: str | bytes, validators: Sequence[tuple[str, bytes]], origin: str) -> Checkpoint:
    """Verify a finality certificate and return its checkpoint.

    ``validators``: the set that certifies the block, ``(id, 32-byte Ed25519 public
    key)`` pairs, each id once (ValueError otherwise). ``origin``: the one this
    client pinned (:func:`origin_for` of its genesis).

    Checks, cheapest first, each raising VerificationError with its reason:
    ``malformed note`` / ``malformed checkpoint`` (:func:`parse_note`,
    :meth:`Checkpoint.parse`); ``wrong origin``; ``validator-set hash`` (the
    checkpoint's ``validators`` line is not :func:`validator_set_hash` of
    ``validators``, i.e. the note claims another certifying set); ``signed twice``
    (two lines of one validator key); ``invalid signature`` (a line of a validator
    key that does not verify over the exact body); ``too few signatures`` (the
    distinct validators with a valid signature are not more than half of the set).
    Lines of keys outside the set are ignored (signed-note: verifiers MUST ignore
    unknown keys), so they never count. Cost: at most one Ed25519 verification per
    validator of the set, whatever the note holds (a repeat raises before verifying).
    """
    validators = [(vid, bytes(public_key)) for vid, public_key in validators]
    expected_set = validator_set_hash(validators)  # ValueError on an empty set or a repeated id
    known = {(vid, key_hash(vid, public_key)): (vid, Ed25519PublicKey.from_public_bytes(public_key))
             for vid, public_key in validators}
    body, signatures = parse_note(note_text)
    checkpoint = Checkpoint.parse(body)
    if checkpoint.origin != origin:
        raise VerificationError(f"wrong origin: certificate is for {checkpoint.origin[:80]!r}, expected {origin!r}")
    if checkpoint.validators_hash != expected_set:
        raise VerificationError("validator-set hash: the checkpoint names a different certifying set "
                                f"({checkpoint.validators_hash.hex()[:16]}…, expected {expected_set.hex()[:16]}…)")
    signed: set[str] = set()
    for name, kid, signature in signatures:
        entry = known.get((name, kid))
        if entry is None:
            continue  # an unknown key, or a known name with another key ID: ignored, never counted
        vid, public_key = entry
        if vid in signed:
            raise VerificationError(f"signed twice: validator {vid!r} has more than one signature line")
        try:
            if len(signature) != ED25519_SIGNATURE_SIZE:
                raise InvalidSignature
            public_key.verify(signature, body)
        except InvalidSignature:
            raise VerificationError(f"invalid signature: validator {vid!r}'s signature does not verify") from None
        signed.add(vid)
    need = len(known) // 2 + 1
    if len(signed) < need:
        raise VerificationError(f"too few signatures: {len(signed)} of {len(known)} validators signed, need {need}")
    return checkpoint


def certify(checkpoint: Checkpoint, signers: Sequence[tuple[str, Ed25519PrivateKey]]) -> str:
    """The signed note of ``checkpoint`` with one line per ``(validator id, private
    key)`` in ``signers``, in that order (at least one; ValueError otherwise)."""
    if not signers:
        raise ValueError("a note has at least one signature")
    body = checkpoint.body()
    return body.decode("utf-8") + "\n" + "".join(sign_note(body, name, key) for name, key in signers)
