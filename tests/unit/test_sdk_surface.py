"""Pins the SDK's public surface (httpx style) and its independence from the node."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import raft_ledger_client as sdk

ROOT = pathlib.Path(__file__).resolve().parents[2]

EXPECTED = {
    "Account",
    "AccountBalance",
    "AccountFilter",
    "AccountFlags",
    "BlockHeader",
    "EventResult",
    "GrpcTransport",
    "InvalidRequest",
    "LedgerClient",
    "LedgerError",
    "NotFound",
    "Page",
    "QueryFilter",
    "RetryPolicy",
    "Timeout",
    "TransactionResult",
    "Transfer",
    "TransferFlags",
    "Transport",
    "TransportError",
    "Unavailable",
    "load_private_key",
}


def test_public_api_is_pinned():
    assert set(sdk.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(sdk, name) is not None


def test_exception_tree():
    assert issubclass(sdk.Timeout, sdk.TransportError)
    assert issubclass(sdk.Unavailable, sdk.TransportError)
    assert issubclass(sdk.TransportError, sdk.LedgerError)
    assert issubclass(sdk.InvalidRequest, sdk.LedgerError)


def test_sdk_imports_without_the_node_dependencies():
    """A member bank installs the SDK without RocksDB or Raft: importing it must not load them."""
    code = (
        "import sys, raft_ledger_client; "
        "bad = [m for m in ('rocksdict', 'pysyncobj', 'raft_ledger_node') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"SDK import pulled in: {out.stdout} {out.stderr}"


def test_import_contracts_hold():
    """import-linter: node.ledger imports no adapter; client imports nothing from node;
    nothing imports the CLI; the node's libraries do not import click (every contract in
    pyproject.toml is checked and kept)."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    exe = pathlib.Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(exe), "--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(contracts)} kept, 0 broken" in out.stdout
    for c in contracts:
        assert f"{c['name']} KEPT" in out.stdout
