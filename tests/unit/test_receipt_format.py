"""Receipts in the c2sp.org/tlog-proof@v1 shape (raft_ledger_client.receipt).

* the text is the spec's: header line, ``extra`` (the envelope), ``index``, proof
  hashes leaf-sibling first (RFC 6962 §2.1.1), an empty line, the note verbatim; it
  round-trips, and parsing is strict;
* receipts cut from a real MerkleLog (node/ledger/merkle_log.py) for every index of
  several sizes verify (RFC 9162 §2.1.3.2 inclusion against the certified root), and
  each tampering is rejected with its reason.
"""
from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from raft_ledger_client import VerificationError
from raft_ledger_client import checkpoint as cp
from raft_ledger_client import merkle
from raft_ledger_client import receipt as rc
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.ledger import limits
from raft_ledger_node.ledger.merkle_log import MemoryNodeStore, MerkleLog

KEYS = {vid: Ed25519PrivateKey.generate() for vid in ("val-a", "val-b", "val-c")}
VALIDATORS = [(vid, k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)) for vid, k in KEYS.items()]
ORIGIN = cp.origin_for("receipts", hashlib.sha256(b"g").digest())


def envelope(i: int) -> bytes:
    return pb.SignedTransaction(body=b"body-%d" % i, member_id="bank-a", key_id="k1",
                                signature=hashlib.sha512(b"%d" % i).digest()).SerializeToString()


def build(size: int) -> tuple[list[bytes], MerkleLog]:
    txs = [envelope(i) for i in range(size)]
    log = MerkleLog(MemoryNodeStore())
    for tx in txs:
        log.append(merkle.leaf_hash(tx))
    return txs, log


def certificate(log: MerkleLog, size: int, signer_ids=("val-a", "val-b", "val-c")) -> str:
    vhash = cp.validator_set_hash(VALIDATORS)
    c = cp.Checkpoint(ORIGIN, size, log.root(size), size, hashlib.sha256(b"blk%d" % size).digest(),
                      hashlib.sha256(b"state").digest(), vhash, vhash)
    return cp.certify(c, [(v, KEYS[v]) for v in signer_ids])


def receipt_for(txs, log, index, size) -> rc.Receipt:
    return rc.Receipt(txs[index], index, tuple(log.inclusion_proof(index, size)), certificate(log, size))


def reason(r) -> str:
    with pytest.raises(VerificationError) as e:
        rc.verify_receipt(r, VALIDATORS, ORIGIN)
    return str(e.value)


def test_limit_matches_the_node():
    assert rc.transaction_bytes_max == limits.tx_bytes_max


def test_text_is_tlog_proof_v1():
    txs, log = build(5)
    r = receipt_for(txs, log, 2, 5)
    lines = r.encode().split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1] == "extra " + base64.b64encode(txs[2]).decode()
    assert lines[2] == "index 2"
    assert lines[3:3 + len(r.proof)] == [base64.b64encode(p).decode() for p in r.proof]
    assert lines[3 + len(r.proof)] == ""
    assert "\n".join(lines[4 + len(r.proof):]) == r.note
    assert rc.Receipt.parse(r.encode()) == r
    assert rc.Receipt.parse(r.encode().encode()) == r


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 33])
def test_every_index_verifies(size):
    txs, log = build(size)
    for index in range(size):
        r = receipt_for(txs, log, index, size)
        got = rc.verify_receipt(rc.Receipt.parse(r.encode()), VALIDATORS, ORIGIN)
        assert (got.tree_size, got.root_hash) == (size, log.root(size))
    # A proof for an old size still verifies against that size's certificate.
    assert rc.verify_receipt(receipt_for(txs, log, 0, 1).encode(), VALIDATORS, ORIGIN).tree_size == 1


def test_size_one_has_no_proof_lines():
    txs, log = build(1)
    r = receipt_for(txs, log, 0, 1)
    assert r.proof == () and r.encode().split("\n")[2:4] == ["index 0", ""]
    assert rc.Receipt.parse(r.encode()) == r


def test_tamperings_are_rejected():
    txs, log = build(9)
    good = receipt_for(txs, log, 5, 9)
    flipped_tx = bytearray(good.transaction)
    flipped_tx[3] ^= 1
    assert reason(rc.Receipt(bytes(flipped_tx), 5, good.proof, good.note)).startswith("inclusion proof")
    bad_proof = list(good.proof)
    bad_proof[1] = bytes([bad_proof[1][0] ^ 0x80]) + bad_proof[1][1:]
    assert reason(rc.Receipt(good.transaction, 5, tuple(bad_proof), good.note)).startswith("inclusion proof")
    assert reason(rc.Receipt(good.transaction, 4, good.proof, good.note)).startswith("inclusion proof")
    assert reason(rc.Receipt(good.transaction, 5, good.proof[:-1], good.note)).startswith("inclusion proof")
    assert reason(rc.Receipt(good.transaction, 5, good.proof + (good.proof[0],), good.note)).startswith("inclusion proof")
    assert reason(rc.Receipt(good.transaction, 9, good.proof, good.note)).startswith("inclusion proof: index 9")
    # The proof is for size 9; a certificate of size 8 does not match it.
    assert reason(rc.Receipt(good.transaction, 5, good.proof, certificate(log, 8))).startswith("inclusion proof")
    assert reason(rc.Receipt(good.transaction, 5, good.proof, certificate(log, 9, ("val-b",)))).startswith("too few")
    assert reason(good.encode().replace("index 5", "index 05")).startswith("malformed receipt")


def _text() -> str:
    txs, log = build(4)
    return receipt_for(txs, log, 1, 4).encode()


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda t: t.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"), id="header"),
    pytest.param(lambda t: "\n" + t, id="leading blank"),
    pytest.param(lambda t: t.replace("\nextra ", "\nExtra "), id="extra keyword"),
    pytest.param(lambda t: "\n".join(line for line in t.split("\n") if not line.startswith("extra ")), id="no extra"),
    pytest.param(lambda t: t.split("\n", 1)[0] + "\nextra \n" + t.split("\n", 2)[2], id="empty extra"),
    pytest.param(lambda t: t.replace("\nextra ", "\nextra  "), id="extra double space"),
    pytest.param(lambda t: t.replace("\nindex 1\n", "\nindex 01\n"), id="index leading zero"),
    pytest.param(lambda t: t.replace("\nindex 1\n", "\nindex -1\n"), id="index negative"),
    pytest.param(lambda t: t.replace("\nindex 1\n", "\nindex  1\n"), id="index spacing"),
    pytest.param(lambda t: t.replace("\nindex 1\n", f"\nindex {2**63}\n"), id="index 2**63"),
    pytest.param(lambda t: t.replace("\nindex 1\n", "\n"), id="no index"),
    pytest.param(lambda t: t.replace("\nindex 1\n", "\nindex 1\n" + base64.b64encode(b"x" * 31).decode() + "\n"),
                 id="31-byte hash"),
    pytest.param(lambda t: t.replace("\nindex 1\n", "\nindex 1\n" + base64.b64encode(b"x" * 32).decode().rstrip("=") + "\n"),
                 id="unpadded hash"),
    pytest.param(lambda t: t.replace("\nindex 1\n", "\nindex 1\n" + base64.b64encode(b"x" * 32).decode()[:-2] + "j=\n"),
                 id="non-canonical hash"),
    pytest.param(lambda t: t.replace("\nindex 1\n", "\nindex 1\n" + (base64.b64encode(b"x" * 32).decode() + "\n") * 64),
                 id="too many hashes"),
    pytest.param(lambda t: t.split("\n\n", 1)[0] + "\n", id="no blank line"),
    pytest.param(lambda t: t.split("\n\n", 1)[0] + "\n\n", id="no note"),
    pytest.param(lambda t: t.replace("\n— ", "\n- "), id="malformed note"),
    pytest.param(lambda t: t.replace("\n", "\r\n"), id="CRLF"),
])
def test_parse_is_strict(mutate):
    with pytest.raises(VerificationError, match="malformed"):
        rc.Receipt.parse(mutate(_text()))


def test_parse_rejects_oversize_and_non_utf8():
    with pytest.raises(VerificationError, match="over"):
        rc.Receipt.parse("x" * (rc.receipt_bytes_max + 1))
    with pytest.raises(VerificationError, match="UTF-8"):
        rc.Receipt.parse(b"\xff" + _text().encode())
    with pytest.raises(VerificationError, match="not text"):
        rc.Receipt.parse(_text() + "\ud800")


def test_constructor_rejects_fields_out_of_shape():
    with pytest.raises(ValueError):
        rc.Receipt(b"", 0, (), "n")
    with pytest.raises(ValueError):
        rc.Receipt(b"x", -1, (), "n")
    with pytest.raises(ValueError):
        rc.Receipt(b"x", 0, (b"short",), "n")
    with pytest.raises(ValueError):
        rc.Receipt(b"x", 0, (b"\0" * 32,) * 64, "n")
    with pytest.raises(ValueError):
        rc.Receipt(b"x" * (rc.transaction_bytes_max + 1), 0, (), "n")
