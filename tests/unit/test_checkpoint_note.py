"""Checkpoints, signed notes and certificates (raft_ledger_client.checkpoint).

* c2sp.org/tlog-checkpoint: our eight-line body round-trips and parses strictly (line
  count and order, canonical decimals, canonical base64 of 32 bytes);
* c2sp.org/signed-note with Ed25519 (type 0x01): the published vectors of
  golang.org/x/mod/sumdb/note (tests/data/note, data only) — our key IDs and verifier
  keys equal Go's, our signature line over Go's text is byte-for-byte Go's (Ed25519 is
  deterministic, RFC 8032 §5.1.6), and Go's malformed notes are malformed here too;
* a certificate is accepted iff more than half of the certifying set signed the exact
  body; every rejection reason of verify_certificate is exercised; unknown keys are
  ignored ("Verifiers MUST ignore signatures from unknown keys", signed-note §Signatures).
"""
from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from raft_ledger_client import VerificationError
from raft_ledger_client import checkpoint as cp

VECTORS = json.loads((pathlib.Path(__file__).resolve().parents[1] / "data" / "note" / "go_sumdb_note.json")
                     .read_text(encoding="utf-8"))
GENESIS = hashlib.sha256(b"genesis").digest()
ORIGIN = cp.origin_for("test-chain", GENESIS)


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


KEYS = {vid: Ed25519PrivateKey.generate() for vid in ("v1", "v2", "v3")}
VALIDATORS = [(vid, raw(k)) for vid, k in KEYS.items()]


def checkpoint(**changes) -> cp.Checkpoint:
    fields = dict(origin=ORIGIN, tree_size=7, root_hash=h("root"), height=3, block_hash=h("block"),
                  state_root=h("state"), validators_hash=cp.validator_set_hash(VALIDATORS),
                  next_validators_hash=cp.validator_set_hash(VALIDATORS))
    fields.update(changes)
    return cp.Checkpoint(**fields)


def signers(*ids: str) -> list[tuple[str, Ed25519PrivateKey]]:
    return [(vid, KEYS[vid]) for vid in ids]


def reason(note, validators=VALIDATORS, origin=ORIGIN) -> str:
    with pytest.raises(VerificationError) as e:
        cp.verify_certificate(note, validators, origin)
    return str(e.value)


# --- origin and validator-set hash ----------------------------------------------------

def test_origin_is_chain_id_and_genesis_prefix():
    assert ORIGIN == "ledger/test-chain/" + GENESIS.hex()[:16]
    for bad_chain in ("", "a b", "a+b", "a/b", "a\nb", "x" * 300):
        with pytest.raises(ValueError):
            cp.origin_for(bad_chain, GENESIS)
    with pytest.raises(ValueError):
        cp.origin_for("c", GENESIS[:31])


def test_validator_set_hash_is_the_lead_encoding_in_id_order():
    a, b = b"\x01" * 32, b"\x02" * 32
    want = hashlib.sha256(b"\x00\x02v1" + a + b"\x00\x02v2" + b).digest()
    assert cp.validator_set_hash([("v1", a), ("v2", b)]) == want
    assert cp.validator_set_hash([("v2", b), ("v1", a)]) == want  # order of input is irrelevant
    assert cp.validator_set_hash([("v1", b), ("v2", a)]) != want  # keys are bound to ids
    assert cp.validator_set_hash([("é", a)]) == hashlib.sha256(b"\x00\x02\xc3\xa9" + a).digest()
    with pytest.raises(ValueError, match="twice"):
        cp.validator_set_hash([("v1", a), ("v1", b)])
    with pytest.raises(ValueError):
        cp.validator_set_hash([])
    with pytest.raises(ValueError):
        cp.validator_set_hash([("v1", a[:31])])


# --- checkpoint body ------------------------------------------------------------------

def test_body_is_the_eight_lines_and_round_trips():
    c = checkpoint()
    b64 = lambda x: base64.b64encode(x).decode()  # noqa: E731
    assert c.body().decode() == (
        f"{ORIGIN}\n7\n{b64(h('root'))}\nheight 3\nblock {b64(h('block'))}\nstate {b64(h('state'))}\n"
        f"validators {b64(c.validators_hash)}\nnext-validators {b64(c.next_validators_hash)}\n")
    assert cp.Checkpoint.parse(c.body()) == c
    zero = checkpoint(tree_size=0, height=0)
    assert cp.Checkpoint.parse(zero.body()) == zero
    big = checkpoint(tree_size=2**63 - 1, height=2**63 - 1)
    assert cp.Checkpoint.parse(big.body()) == big


def _lines() -> list[str]:
    return checkpoint().body().decode().split("\n")[:-1]


def _join(lines) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def _with(i: int, text: str) -> bytes:
    lines = _lines()
    lines[i] = text
    return _join(lines)


NONCANONICAL_B64 = base64.b64encode(h("root"))[:-2].decode() + "B="  # nonzero padding bits
assert base64.b64decode(NONCANONICAL_B64) == base64.b64decode(base64.b64encode(h("root"))[:-2] + b"A=")


@pytest.mark.parametrize("body", [
    pytest.param(_join(_lines()[:7]), id="seven lines"),
    pytest.param(_join(_lines() + ["extra extension"]), id="nine lines"),
    pytest.param(checkpoint().body() + b"\n", id="trailing blank line"),
    pytest.param(checkpoint().body()[:-1], id="no final newline"),
    pytest.param(checkpoint().body().replace(b"\n", b"\r\n"), id="CRLF"),
    pytest.param(_with(0, ""), id="empty origin"),
    pytest.param(_with(1, "07"), id="leading zero size"),
    pytest.param(_with(1, "+7"), id="signed size"),
    pytest.param(_with(1, " 7"), id="space in size"),
    pytest.param(_with(1, "٧"), id="non-ASCII digit"),
    pytest.param(_with(1, "7_0"), id="underscore"),
    pytest.param(_with(1, str(2**63)), id="size 2**63"),
    pytest.param(_with(1, "-1"), id="negative"),
    pytest.param(_with(2, base64.b64encode(h("r")[:31]).decode()), id="31-byte root"),
    pytest.param(_with(2, base64.b64encode(h("r") + b"x").decode()), id="33-byte root"),
    pytest.param(_with(2, base64.b64encode(h("r")).decode().rstrip("=")), id="unpadded root"),
    pytest.param(_with(2, base64.urlsafe_b64encode(b"\xfb" * 32).decode()), id="url-safe base64"),
    pytest.param(_with(2, NONCANONICAL_B64), id="non-canonical padding bits"),
    pytest.param(_with(3, "height 03"), id="leading zero height"),
    pytest.param(_with(3, "height  3"), id="double space"),
    pytest.param(_with(3, "Height 3"), id="wrong case"),
    pytest.param(_join([_lines()[i] for i in (0, 1, 2, 3, 5, 4, 6, 7)]), id="extensions out of order"),
    pytest.param(_with(7, _lines()[6]), id="validators twice, no next-validators"),
    pytest.param(b"\xff" + checkpoint().body(), id="not UTF-8"),
])
def test_parse_is_strict(body):
    with pytest.raises(VerificationError, match="malformed checkpoint"):
        cp.Checkpoint.parse(body)


def test_constructor_rejects_fields_out_of_shape():
    with pytest.raises(ValueError):
        checkpoint(root_hash=b"short")
    with pytest.raises(ValueError):
        checkpoint(tree_size=-1)
    with pytest.raises(ValueError):
        checkpoint(height=True)
    with pytest.raises(ValueError):
        checkpoint(origin="a\nb")


# --- signed notes: Go's published vectors ---------------------------------------------

def _vkey_public(vkey: str) -> tuple[str, bytes, bytes]:
    name, hash_hex, key64 = vkey.split("+", 2)
    key = base64.b64decode(key64)
    assert key[0] == cp.SIGNATURE_TYPE_ED25519
    return name, bytes.fromhex(hash_hex), key[1:]


@pytest.mark.parametrize("which", ["peter_vkey", "enoch_vkey"])
def test_key_id_and_verifier_key_equal_go(which):
    name, key_id, public = _vkey_public(VECTORS[which])
    assert cp.key_hash(name, public) == key_id
    assert cp.verifier_key(name, public) == VECTORS[which]


def test_sign_note_reproduces_go_signature_line():
    *_, seed = VECTORS["peter_skey"].split("+", 4)
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed)[1:])
    text = VECTORS["text"].encode()
    assert cp.sign_note(text, "PeterNeumann", private) == VECTORS["peter_sig"]
    assert text + b"\n" + cp.sign_note(text, "PeterNeumann", private).encode() == VECTORS["signed_by_peter"].encode()


def test_parse_note_splits_go_note_and_signatures_verify():
    body, sigs = cp.parse_note(VECTORS["signed_by_both"])
    assert body == VECTORS["text"].encode()
    assert [(n, k.hex()) for n, k, _ in sigs] == [("PeterNeumann", "c74f20a3"), ("EnochRoot", "af0cfe78")]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    for (name, _, sig), vkey in zip(sigs, (VECTORS["peter_vkey"], VECTORS["enoch_vkey"])):
        Ed25519PublicKey.from_public_bytes(_vkey_public(vkey)[2]).verify(sig, body)  # raises if wrong
    # Go's corrupted signature parses (it is valid base64) but no longer verifies.
    body, [(_, _, bad)] = cp.parse_note(VECTORS["invalid_signature_peter"])
    from cryptography.exceptions import InvalidSignature
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(_vkey_public(VECTORS["peter_vkey"])[2]).verify(bad, body)


@pytest.mark.parametrize("msg", VECTORS["malformed"] + [
    "\xff".encode("latin-1") + (VECTORS["signed_by_peter"]).encode(),
    VECTORS["text"] + "\n" + VECTORS["peter_sig"] * VECTORS["too_many_signatures_repeat"],
])
def test_go_malformed_notes_are_malformed(msg):
    with pytest.raises(VerificationError, match="malformed note"):
        cp.parse_note(msg)


@pytest.mark.parametrize("suffix", [
    "— v1\n", "— v1 \n", "— v1 AAAA\n", "—  v1 AAAAAAAA\n", "— v1+x AAAAAAAA\n", "- v1 AAAAAAAA\n",
    "— v1 AAAAAAB=\n", "— v1 AAAAAAAA \n", "— v1 AAAAAAAA\n\n", "— v1\u00a0x AAAAAAAA\n",
])
def test_parse_note_rejects_bad_signature_lines(suffix):
    with pytest.raises(VerificationError, match="malformed note"):
        cp.parse_note("text\n\n" + suffix)


def test_parse_note_keeps_duplicates_and_body_blank_lines():
    body, sigs = cp.parse_note("a\n\nb\n\n— k AAAAAAAA\n— k AAAAAAAA\n")
    assert body == b"a\n\nb\n" and len(sigs) == 2 and sigs[0] == ("k", b"\0" * 4, b"\0" * 2)


def test_hostile_size_is_rejected_before_work():
    huge = "x\n" * (cp.note_bytes_max // 2) + "\n— k AAAAAAAA\n"
    start = time.perf_counter()
    with pytest.raises(VerificationError, match="over"):
        cp.parse_note(huge)
    with pytest.raises(VerificationError, match="over"):
        cp.parse_note(huge.encode())
    assert time.perf_counter() - start < 0.05


def test_non_text_inputs_are_malformed_not_crashes():
    for bad in ("a\n\n— k AAAAAAAA\ud800\n", 42, None):
        with pytest.raises(VerificationError, match="malformed note"):
            cp.parse_note(bad)
    with pytest.raises(VerificationError, match="malformed checkpoint"):
        cp.Checkpoint.parse("\ud800\n")
    with pytest.raises(VerificationError, match="over"):
        cp.parse_note("x" * (cp.note_bytes_max + 1))


def test_sign_note_rejects_bad_inputs():
    with pytest.raises(ValueError):
        cp.sign_note(b"no newline", "v1", KEYS["v1"])
    with pytest.raises(ValueError):
        cp.sign_note(b"ok\n", "bad name", KEYS["v1"])
    with pytest.raises(ValueError):
        cp.sign_note(b"ctl\x01\n", "v1", KEYS["v1"])
    with pytest.raises(ValueError):
        cp.certify(checkpoint(), [])


# --- certificates ---------------------------------------------------------------------

def test_majority_certificates_verify():
    c = checkpoint()
    assert cp.verify_certificate(cp.certify(c, signers("v1", "v2", "v3")), VALIDATORS, ORIGIN) == c
    assert cp.verify_certificate(cp.certify(c, signers("v3", "v1")), VALIDATORS, ORIGIN) == c
    assert cp.verify_certificate(cp.certify(c, signers("v2", "v3")).encode(), VALIDATORS, ORIGIN) == c


def test_too_few_signatures():
    assert reason(cp.certify(checkpoint(), signers("v2"))).startswith("too few signatures: 1 of 3")
    keys4 = dict(KEYS, v4=Ed25519PrivateKey.generate())
    vals4 = [(vid, raw(k)) for vid, k in keys4.items()]
    c4 = checkpoint(validators_hash=cp.validator_set_hash(vals4))
    half = cp.certify(c4, [("v1", keys4["v1"]), ("v4", keys4["v4"])])
    assert reason(half, vals4).startswith("too few signatures: 2 of 4")  # half is not a majority
    assert cp.verify_certificate(cp.certify(c4, [(v, keys4[v]) for v in ("v1", "v2", "v4")]), vals4, ORIGIN) == c4


def test_unknown_signers_are_ignored_and_never_count():
    c = checkpoint()
    outsider = Ed25519PrivateKey.generate()
    note = cp.certify(c, [("v1", KEYS["v1"]), ("mallory", outsider), ("v9", outsider)])
    assert reason(note).startswith("too few signatures: 1 of 3")
    # A validator's name with another key (another key ID) is an unknown key too.
    note = cp.certify(c, [("v1", KEYS["v1"]), ("v2", outsider)])
    assert reason(note).startswith("too few signatures: 1 of 3")
    note = cp.certify(c, [("v1", KEYS["v1"]), ("v2", outsider), ("v3", KEYS["v3"])])
    assert cp.verify_certificate(note, VALIDATORS, ORIGIN) == c


def test_same_validator_twice():
    c = checkpoint()
    note = cp.certify(c, signers("v1", "v1", "v2"))
    assert reason(note).startswith("signed twice: validator 'v1'")


def test_known_signature_that_does_not_verify():
    c = checkpoint()
    good = cp.certify(c, signers("v1", "v2", "v3"))
    other = cp.certify(checkpoint(height=4), signers("v2"))
    spliced = good.replace(good.splitlines(keepends=True)[-2], other.splitlines(keepends=True)[-1])
    assert reason(spliced).startswith("invalid signature: validator 'v2'")
    # A flipped byte of the body invalidates every signature over it.
    assert reason(good.replace("height 3", "height 4")).startswith("invalid signature")
    # A known key with a signature of the wrong length.
    kid = cp.key_hash("v1", raw(KEYS["v1"]))
    short = good + f"— v1 {base64.b64encode(kid + b'x' * 63).decode()}\n"
    body_only = c.body().decode() + "\n" + f"— v1 {base64.b64encode(kid + b'x' * 63).decode()}\n"
    assert reason(body_only).startswith("invalid signature: validator 'v1'")
    assert reason(short).startswith("signed twice")


def test_wrong_origin():
    note = cp.certify(checkpoint(origin="ledger/other/0000000000000000"), signers("v1", "v2"))
    assert reason(note).startswith("wrong origin")


def test_certifying_set_hash_must_match():
    note = cp.certify(checkpoint(validators_hash=h("another set")), signers("v1", "v2", "v3"))
    assert reason(note).startswith("validator-set hash")


def test_malformed_inputs():
    good = cp.certify(checkpoint(), signers("v1", "v2"))
    assert reason(good.replace("\n\n", "\n")).startswith("malformed note")
    assert reason("x\n" + good).startswith("malformed checkpoint")
    assert reason(good.replace("height 3", "height 03")).startswith("malformed checkpoint")
    with pytest.raises(ValueError):
        cp.verify_certificate(good, [], ORIGIN)
    with pytest.raises(ValueError):
        cp.verify_certificate(good, VALIDATORS + [("v1", raw(KEYS["v2"]))], ORIGIN)
