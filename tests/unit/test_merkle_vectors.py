"""The published RFC 6962 / RFC 9162 test vectors of transparency-dev/merkle pass here.

Data: ``tests/data/merkle/{inclusion,consistency}/*/*.json``, copied verbatim from
github.com/transparency-dev/merkle ``testdata/`` at commit 417fb0c3 (Apache-2.0, see
``tests/data/merkle/LICENSE``); no code was copied. Each file is one probe with
``wantErr``; the trees are built from the eight leaf inputs of that repository's
``testonly.LeafInputs()`` (the RFC 6962 reference tree), copied below as data.

* every probe gives the SDK verifier's verdict ``wantErr`` (an error is a ProofError);
* every happy-path probe of sizes 1..8 is exactly what our MerkleLog generates: same
  root, same inclusion proof, same consistency proof.
"""
from __future__ import annotations

import base64
import json
import pathlib

import pytest

from raft_ledger_client import merkle as client_merkle
from raft_ledger_client.merkle import ProofError
from raft_ledger_node.ledger import merkle
from raft_ledger_node.ledger.merkle_log import MemoryNodeStore, MerkleLog

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "merkle"
LEAF_INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
# testonly.RootHashes() of the same repository, sizes 0..8.
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]


def _b64(s: str | None) -> bytes:
    return base64.b64decode(s or "")


def _load(kind: str) -> list[tuple[str, dict]]:
    files = sorted((DATA / kind).glob("*/*.json"))
    return [(str(f.relative_to(DATA)), json.loads(f.read_text())) for f in files]


INCLUSION = _load("inclusion")
CONSISTENCY = _load("consistency")


def _log() -> MerkleLog:
    log = MerkleLog(MemoryNodeStore())
    log.extend(merkle.leaf_hash(d) for d in LEAF_INPUTS)
    return log


def test_the_vectors_are_all_there():
    assert len(INCLUSION) == 86 and len(CONSISTENCY) == 98
    assert sum(not v["wantErr"] for _, v in INCLUSION) == 6  # 0..4 happy paths and single-entry
    assert all(v["desc"] for _, v in INCLUSION + CONSISTENCY)


def test_the_reference_tree_roots():
    log = _log()
    for size, want in enumerate(ROOTS):
        assert log.root(size) == want == merkle.root_from_leaf_hashes(
            [merkle.leaf_hash(d) for d in LEAF_INPUTS[:size]])


@pytest.mark.parametrize("name,v", INCLUSION, ids=[n for n, _ in INCLUSION])
def test_inclusion_vector(name, v):
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], [_b64(p) for p in v["proof"] or []], _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            client_merkle.verify_inclusion(*args)
    else:
        client_merkle.verify_inclusion(*args)


@pytest.mark.parametrize("name,v", CONSISTENCY, ids=[n for n, _ in CONSISTENCY])
def test_consistency_vector(name, v):
    args = (v["size1"], v["size2"], [_b64(p) for p in v["proof"] or []], _b64(v["root1"]), _b64(v["root2"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            client_merkle.verify_consistency(*args)
    else:
        client_merkle.verify_consistency(*args)


def _happy(vectors):
    return [(n, v) for n, v in vectors if not v["wantErr"] and n.split("/")[1][0].isdigit()]


@pytest.mark.parametrize("name,v", _happy(INCLUSION), ids=[n for n, _ in _happy(INCLUSION)])
def test_the_log_generates_the_published_inclusion_proof(name, v):
    log = _log()
    size, index = v["treeSize"], v["leafIdx"]
    assert log.leaf(index) == _b64(v["leafHash"])
    assert log.root(size) == _b64(v["root"])
    assert log.inclusion_proof(index, size) == [_b64(p) for p in v["proof"] or []]


@pytest.mark.parametrize("name,v", _happy(CONSISTENCY), ids=[n for n, _ in _happy(CONSISTENCY)])
def test_the_log_generates_the_published_consistency_proof(name, v):
    log = _log()
    assert log.root(v["size1"]) == _b64(v["root1"]) and log.root(v["size2"]) == _b64(v["root2"])
    assert log.consistency_proof(v["size1"], v["size2"]) == [_b64(p) for p in v["proof"] or []]
