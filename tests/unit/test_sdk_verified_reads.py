"""The SDK's trusted state and verified-read configuration, without sockets.

The chain here is a real RFC 6962 log (``MerkleLog``) certified with ``certify``; the
proof source answers from it. Network scenarios are in
tests/integration/test_malicious_validator.py."""
from __future__ import annotations

import hashlib
import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from raft_ledger_client import LedgerClient, TrustedState, VerificationError
from raft_ledger_client._client import genesis_pins
from raft_ledger_client.checkpoint import Checkpoint, certify, origin_for, validator_set_hash
from raft_ledger_node.ledger.merkle_log import MemoryNodeStore, MerkleLog

CHAIN = "unit-chain"
GENESIS = hashlib.sha256(b"unit genesis").digest()
KEYS = [(f"v{i}", Ed25519PrivateKey.generate()) for i in (1, 2, 3)]
SET = [(v, k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)) for v, k in KEYS]


class Source:
    def __init__(self, log: MerkleLog) -> None:
        self.log, self.asked = log, []

    def consistency_proof(self, first, second):
        self.asked.append((first, second))
        return self.log.consistency_proof(first, second)

    def handoffs(self, after_height, up_to_height):
        return []


def _chain(blocks: int):
    log = MerkleLog(MemoryNodeStore())
    notes = []
    vh = validator_set_hash(SET)
    for h in range(1, blocks + 1):
        for i in range(h):
            log.append(hashlib.sha256(b"\x00" + f"{h}/{i}".encode()).digest())
        cp = Checkpoint(origin_for(CHAIN, GENESIS), log.size, log.root(log.size), h, bytes(32), bytes(32), vh, vh)
        notes.append(certify(cp, KEYS[:2]))
    return log, notes


def test_every_advance_is_proven_from_the_trusted_size_and_persisted(tmp_path):
    log, notes = _chain(5)
    path = str(tmp_path / "t.json")
    state, source = TrustedState(CHAIN, GENESIS, SET, path=path), Source(log)
    sizes = []
    for note in notes[::2]:
        sizes.append(state.advance(note, source).tree_size)
    assert source.asked == list(zip(sizes, sizes[1:]))
    assert sorted(os.listdir(tmp_path)) == ["t.json"]  # atomic replace leaves no temporary file
    again = TrustedState(CHAIN, GENESIS, SET, path=path)
    assert again.checkpoint == state.checkpoint
    with pytest.raises(VerificationError, match="rollback"):
        again.advance(notes[1], source)


def test_a_state_file_for_another_chain_or_corrupted_is_refused(tmp_path):
    log, notes = _chain(2)
    path = str(tmp_path / "t.json")
    TrustedState(CHAIN, GENESIS, SET, path=path).advance(notes[1], Source(log))
    with pytest.raises(VerificationError, match="another chain"):
        TrustedState(CHAIN, hashlib.sha256(b"other").digest(), SET, path=path)
    other = [(v, Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)) for v, _ in SET]
    with pytest.raises(VerificationError, match="another pinned genesis validator set"):
        TrustedState(CHAIN, GENESIS, other, path=path)
    doc = json.load(open(path))
    doc["note"] = doc["note"].replace("height 2", "height 9")
    json.dump(doc, open(path, "w"))
    with pytest.raises(VerificationError, match="does not verify"):
        TrustedState(CHAIN, GENESIS, SET, path=path)


def test_genesis_pins_match_the_validators_genesis_hash(tmp_path):

    from raft_ledger_node.config import load_genesis
    doc = {"chain_id": CHAIN, "admins": ["bank-a"], "threshold": 1,
           "members": [{"id": "bank-a", "roles": ["member"], "keys": [{"key_id": "k1", "public_key": SET[0][1].hex()}]}],
           "validators": [{"id": v, "grpc_address": f"127.0.0.1:{7000 + i}", "raft_address": f"127.0.0.1:{8000 + i}",
                           "public_key": k.hex()} for i, (v, k) in enumerate(SET)]}
    path = str(tmp_path / "genesis.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=3)
    chain_id, genesis_hash, validators = genesis_pins(path)
    assert (chain_id, genesis_hash, validators) == (CHAIN, load_genesis(path).hash, SET)
    key = str(tmp_path / "k.pem")
    from cryptography.hazmat.primitives import serialization
    with open(key, "wb") as f:
        f.write(KEYS[0][1].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    c = LedgerClient.from_genesis(path, member_id="bank-a", key_id="k1", key_file=key, insecure=True)
    assert c.trusted.origin == origin_for(CHAIN, genesis_hash)  # verified reads on by default
    assert LedgerClient.from_genesis(path, member_id="bank-a", key_id="k1", key_file=key, insecure=True,
                                     verify=False).trusted is None
    del doc["validators"][0]["public_key"]
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(ValueError, match="verify=False"):
        LedgerClient.from_genesis(path, member_id="bank-a", key_id="k1", key_file=key, insecure=True)


def test_verify_true_without_pins_is_refused():
    with pytest.raises(ValueError, match="pinned genesis"):
        LedgerClient(["127.0.0.1:1"], member_id="m", key_id="k", private_key=KEYS[0][1], chain_id=CHAIN,
                     insecure=True, verify=True)


def test_the_sdk_splits_account_proof_lookups_at_the_validators_limit():
    from raft_ledger_client._client import ACCOUNT_PROOFS_MAX
    from raft_ledger_node.ledger import limits

    assert ACCOUNT_PROOFS_MAX == limits.account_proofs_max
