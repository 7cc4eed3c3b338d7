"""A verifier no one here wrote agrees with ours (issue 12, item 9).

``tests/go/verifier`` opens our certificates with golang.org/x/mod/sumdb/note and checks
our receipts' inclusion proofs with golang.org/x/mod/sumdb/tlog (``CheckRecord``,
``RecordHash`` = RFC 6962 leaf hash). It is built once per session with the Go toolchain
(skipped only when ``go`` is not on PATH). Receipts come from a real MerkleLog
(node/ledger/merkle_log.py over MemoryNodeStore) and are signed by three generated
validator keys; for each, Go's exit status and our verify_receipt must agree: both
accept the valid ones, both reject every tampering.

Two deliberate differences, pinned below: we reject a validator that signs twice (Go's
note.Open drops the repeat), and we check the checkpoint's ``validators`` line against
the set we verify with (Go does not know our validator-set hash).
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from raft_ledger_client import VerificationError
from raft_ledger_client import checkpoint as cp
from raft_ledger_client import merkle
from raft_ledger_client import receipt as rc
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.ledger.merkle_log import MemoryNodeStore, MerkleLog

GO_SOURCE = pathlib.Path(__file__).resolve().parents[1] / "go" / "verifier"
go_build_s_max = 600

KEYS = {vid: Ed25519PrivateKey.generate() for vid in ("val-1", "val-2", "val-3")}
VALIDATORS = [(vid, k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)) for vid, k in KEYS.items()]
VKEYS = [cp.verifier_key(vid, pk) for vid, pk in VALIDATORS]
QUORUM = len(VALIDATORS) // 2 + 1
ORIGIN = cp.origin_for("go-check", hashlib.sha256(b"genesis").digest())
OUTSIDER = Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def verifier(tmp_path_factory) -> pathlib.Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain (`go`) is not on PATH: cannot build tests/go/verifier")
    out = tmp_path_factory.mktemp("go-verifier") / "verifier"
    env = dict(os.environ, GOFLAGS="-mod=readonly", GOTOOLCHAIN="local", CGO_ENABLED="0")
    start = time.monotonic()
    done = subprocess.run([go, "build", "-o", str(out), "."], cwd=GO_SOURCE, env=env,
                          capture_output=True, text=True, timeout=go_build_s_max)
    assert done.returncode == 0, f"go build failed:\n{done.stdout}\n{done.stderr}"
    print(f"go build of tests/go/verifier took {time.monotonic() - start:.1f} s")
    return out


def envelope(i: int) -> bytes:
    return pb.SignedTransaction(body=b"transfer %d" % i, member_id="bank-%d" % (i % 3), key_id="k1",
                                signature=hashlib.sha512(b"sig %d" % i).digest()).SerializeToString()


def build(size: int) -> tuple[list[bytes], MerkleLog]:
    txs = [envelope(i) for i in range(size)]
    log = MerkleLog(MemoryNodeStore())
    for tx in txs:
        log.append(merkle.leaf_hash(tx))
    return txs, log


def checkpoint(log: MerkleLog, size: int, **changes) -> cp.Checkpoint:
    vhash = cp.validator_set_hash(VALIDATORS)
    fields = dict(origin=ORIGIN, tree_size=size, root_hash=log.root(size), height=size + 1,
                  block_hash=hashlib.sha256(b"block %d" % size).digest(),
                  state_root=hashlib.sha256(b"state %d" % size).digest(),
                  validators_hash=vhash, next_validators_hash=vhash)
    fields.update(changes)
    return cp.Checkpoint(**fields)


def signed(c: cp.Checkpoint, ids=("val-1", "val-2", "val-3")) -> str:
    return cp.certify(c, [(vid, KEYS[vid]) for vid in ids])


def go_verdict(verifier, tmp_path, text: str, *, checkpoint_only=False) -> tuple[bool, str]:
    path = tmp_path / f"input-{time.monotonic_ns()}"
    path.write_text(text, encoding="utf-8")
    args = [str(verifier), "-quorum", str(QUORUM), "-origin", ORIGIN]
    for vkey in VKEYS:
        args += ["-vkey", vkey]
    if checkpoint_only:
        args.append("-checkpoint")
    done = subprocess.run(args + [str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode in (0, 1), done.stderr
    if done.returncode == 0:
        assert done.stdout.startswith("ok "), done.stdout
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def py_verdict(text: str, *, checkpoint_only=False) -> tuple[bool, str]:
    try:
        if checkpoint_only:
            cp.verify_certificate(text, VALIDATORS, ORIGIN)
        else:
            rc.verify_receipt(text, VALIDATORS, ORIGIN)
    except VerificationError as e:
        return False, str(e)
    return True, "ok"


def agree(verifier, tmp_path, text: str, expected: bool, *, checkpoint_only=False) -> None:
    go_ok, go_why = go_verdict(verifier, tmp_path, text, checkpoint_only=checkpoint_only)
    py_ok, py_why = py_verdict(text, checkpoint_only=checkpoint_only)
    assert (go_ok, py_ok) == (expected, expected), f"go: {go_why!r}; python: {py_why!r}"


@pytest.mark.parametrize("size", [1, 2, 5, 8, 13, 64])
def test_both_accept_valid_receipts(verifier, tmp_path, size):
    txs, log = build(size)
    note = signed(checkpoint(log, size), ("val-1", "val-3"))
    for index in sorted({0, size // 2, size - 1}):
        r = rc.Receipt(txs[index], index, tuple(log.inclusion_proof(index, size)), note)
        agree(verifier, tmp_path, r.encode(), True)


def test_both_accept_valid_certificates(verifier, tmp_path):
    _, log = build(3)
    agree(verifier, tmp_path, signed(checkpoint(log, 3)), True, checkpoint_only=True)
    agree(verifier, tmp_path, signed(checkpoint(log, 3, tree_size=0, root_hash=merkle.EMPTY_ROOT), ("val-2", "val-3")),
          True, checkpoint_only=True)


def _tampered() -> dict[str, str]:
    size, index = 13, 6
    txs, log = build(size)
    proof = tuple(log.inclusion_proof(index, size))
    note = signed(checkpoint(log, size))
    tx = bytearray(txs[index])
    tx[len(tx) // 2] ^= 0x01
    bad_proof = list(proof)
    bad_proof[2] = bad_proof[2][:7] + bytes([bad_proof[2][7] ^ 0x40]) + bad_proof[2][8:]
    one_validator_plus_outsider = cp.certify(checkpoint(log, size), [("val-1", KEYS["val-1"]), ("mallory", OUTSIDER)])
    impostor = cp.certify(checkpoint(log, size), [("val-1", KEYS["val-1"]), ("val-2", OUTSIDER)])
    body_changed = note.replace(f"height {size + 1}\n", f"height {size + 2}\n")
    good = rc.Receipt(txs[index], index, proof, note).encode()
    lines = good.split("\n")
    return {
        "empty extra": "\n".join([lines[0], "extra "] + lines[2:]),
        "no extra line": "\n".join([lines[0]] + lines[2:]),
        "index with a leading zero": good.replace(f"\nindex {index}\n", f"\nindex 0{index}\n"),
        "flipped transaction byte": rc.Receipt(bytes(tx), index, proof, note).encode(),
        "flipped proof hash byte": rc.Receipt(txs[index], index, tuple(bad_proof), note).encode(),
        "wrong index": rc.Receipt(txs[index], index + 1, proof, note).encode(),
        "index beyond size": rc.Receipt(txs[index], size, proof, note).encode(),
        "truncated proof": rc.Receipt(txs[index], index, proof[:-1], note).encode(),
        "too few signatures": rc.Receipt(txs[index], index, proof, signed(checkpoint(log, size), ("val-2",))).encode(),
        "non-validator signer": rc.Receipt(txs[index], index, proof, one_validator_plus_outsider).encode(),
        "outsider key under a validator's name": rc.Receipt(txs[index], index, proof, impostor).encode(),
        "wrong size (certificate of the previous tree)": rc.Receipt(
            txs[index], index, proof, signed(checkpoint(log, size - 1))).encode(),
        "wrong size (size line of the signed note edited)": rc.Receipt(
            txs[index], index, proof, note.replace(f"\n{size}\n", f"\n{size + 1}\n", 1)).encode(),
        "wrong size (proof of a larger tree)": rc.Receipt(
            txs[index], index, tuple(log.inclusion_proof(index, 12)), signed(checkpoint(log, 9))).encode(),
        "signed body altered": rc.Receipt(txs[index], index, proof, body_changed).encode(),
        "wrong origin": rc.Receipt(txs[index], index, proof,
                                   signed(checkpoint(log, size, origin="ledger/go-check/0000000000000000"))).encode(),
        "receipt of another log": rc.Receipt(envelope(999), index, proof, note).encode(),
    }


TAMPERED = _tampered()


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_both_reject_tampering(verifier, tmp_path, case):
    agree(verifier, tmp_path, TAMPERED[case], False)


def test_both_reject_tampered_certificates(verifier, tmp_path):
    _, log = build(4)
    note = signed(checkpoint(log, 4))
    agree(verifier, tmp_path, signed(checkpoint(log, 4), ("val-3",)), False, checkpoint_only=True)
    agree(verifier, tmp_path, note.replace("\n4\n", "\n5\n", 1), False, checkpoint_only=True)
    agree(verifier, tmp_path, note.replace("\n\n", "\n"), False, checkpoint_only=True)


def test_known_differences_are_ours_being_stricter(verifier, tmp_path):
    _, log = build(4)
    # One validator twice plus another: Go's note.Open drops the repeat and counts 2.
    twice = cp.certify(checkpoint(log, 4), [(v, KEYS[v]) for v in ("val-1", "val-1", "val-2")])
    assert go_verdict(verifier, tmp_path, twice, checkpoint_only=True)[0]
    assert py_verdict(twice, checkpoint_only=True) == (False, "signed twice: validator 'val-1' has more than one signature line")
    # A checkpoint naming another certifying set: Go cannot know our validator-set hash.
    other_set = signed(checkpoint(log, 4, validators_hash=hashlib.sha256(b"other").digest()))
    assert go_verdict(verifier, tmp_path, other_set, checkpoint_only=True)[0]
    assert py_verdict(other_set, checkpoint_only=True)[1].startswith("validator-set hash")
