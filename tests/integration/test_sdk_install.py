"""A member bank installs the SDK alone (client/pyproject.toml) into a fresh virtual
environment: none of the validator's dependencies come with it, and a signed transfer
can be built and verified with nothing else installed."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import venv

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE_ONLY = ("rocksdict", "pysyncobj", "click", "rich", "raft-ledger")

BUILD_AND_VERIFY = """
import sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from raft_ledger_client import LedgerClient, Transfer, TransferFlags
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
key = Ed25519PrivateKey.generate()
c = LedgerClient(["127.0.0.1:1"], member_id="bank-a", key_id="k1", private_key=key, chain_id="local-test",
                 insecure=True)  # signing only: never connects
stx = c.sign_transfers([Transfer(id=1, debit_account_id=2, credit_account_id=3, amount=1250,
                                 ledger=840, code=1, flags=TransferFlags.PENDING, timeout=60)])
key.public_key().verify(stx.signature, stx.body)
body = pb.Transaction.FromString(stx.body)
assert body.create_transfers.transfers[0].amount.lo == 1250
bad = [m for m in ("rocksdict", "pysyncobj", "click", "rich", "raft_ledger_node") if m in sys.modules]
assert not bad, bad
print("signed", stx.SerializeToString().hex()[:16])
"""


@pytest.mark.integration
def test_sdk_installs_alone(tmp_path):
    if not (ROOT / "client" / "pb" / "ledger" / "v1" / "ledger_pb2.py").exists():
        pytest.fail("client/pb is not generated: run `python proto/generate.py`")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "client", src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(src)], check=True, timeout=600)
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], check=True,
                            capture_output=True, text=True).stdout.lower()
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert "raft-ledger-client" in names
    assert not names & set(NODE_ONLY), f"the SDK pulled in {sorted(names & set(NODE_ONLY))}"
    out = subprocess.run([str(py), "-c", BUILD_AND_VERIFY], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("signed ")
