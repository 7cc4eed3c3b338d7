"""A validator refuses a checkpoint-signing key that the governed validator set does not name.

Its signatures would never count towards a certificate (the SDK and every peer check
them against the key in genesis or in the last ``set_validators`` change), so starting
with the wrong key is a configuration error, said at start, not a silent loss of
finality. Driven as an operator would: ``ledger-validator start`` on a generated cluster.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from raft_ledger_node.localcluster import init_cluster, write_private_key

pytestmark = pytest.mark.integration


def test_start_refuses_a_signing_key_genesis_does_not_name(tmp_path):
    d = str(tmp_path / "cluster")
    init_cluster(d, 3, ["bank-a"], "127.0.0.1", 27_500)
    other = os.path.join(d, "v1", "other.key.pem")
    write_private_key(other)
    config = os.path.join(d, "v1", "config.json")
    with open(config) as f:
        doc = json.load(f)
    doc["signing_key_file"] = "other.key.pem"
    with open(config, "w") as f:
        json.dump(doc, f)
    p = subprocess.run([sys.executable, "-m", "raft_ledger_node.cli", "start", "--config", config],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "is not the key the governed validator set names for v1" in p.stderr + p.stdout
    assert "Traceback" not in p.stderr
