"""Genesis validation is strict (issue 11 item 6): every malformed genesis is a clear
ConfigError naming the problem, never a raw ValueError or a silent replacement."""
from __future__ import annotations

import copy
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from raft_ledger_node.config import ConfigError, load_genesis


def _pub() -> str:
    return Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


BASE = {
    "chain_id": "c",
    "validators": [{"id": "v1", "grpc_address": "127.0.0.1:1", "raft_address": "127.0.0.1:2"}],
    "members": [
        {"id": "bank-a", "roles": ["member"], "keys": [{"key_id": "k1", "public_key": _pub()}]},
        {"id": "admin-1", "roles": [], "keys": [{"key_id": "k1", "public_key": _pub()}]},
        {"id": "admin-2", "roles": [], "keys": [{"key_id": "k1", "public_key": _pub()}]},
    ],
    "admins": ["admin-1", "admin-2"],
    "threshold": 2,
    "issuers": {"840": ["bank-a"]},
}


def _load(tmp_path, doc):
    p = tmp_path / "genesis.json"
    p.write_text(json.dumps(doc))
    return load_genesis(str(p))


def test_the_base_genesis_loads(tmp_path):
    g = _load(tmp_path, BASE)
    assert g.configuration.version == 1 and g.configuration.threshold == 2


def _mutate(fn):
    doc = copy.deepcopy(BASE)
    fn(doc)
    return doc


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d["members"].append(copy.deepcopy(d["members"][0])), "appears twice"),
    (lambda d: d["members"][0]["keys"][0].update(public_key="zz"), "not hex"),
    (lambda d: d["members"][0]["keys"][0].update(public_key="00" * 31), "32 bytes"),
    (lambda d: d["members"][0].update(roles=["king"]), "roles"),
    (lambda d: d.update(threshold=3), "threshold"),
    (lambda d: d.update(threshold=0), "threshold"),
    (lambda d: d.update(surprise=1), "unknown fields"),
    (lambda d: d["members"][0].update(extra=1), "only id, roles, keys"),
    (lambda d: d.update(admins=["nobody"]), "not members"),
    (lambda d: d.update(issuers={"840": ["nobody"]}), "issuers"),
    (lambda d: d["members"][0]["keys"].append(dict(d["members"][0]["keys"][0])), "appears twice"),
    (lambda d: d["validators"].append(dict(d["validators"][0])), "unique"),
])
def test_malformed_genesis_is_a_config_error(tmp_path, mutate, match):
    with pytest.raises(ConfigError, match=match):
        _load(tmp_path, _mutate(mutate))
