"""The layout's rules, checked on the code as it is (issue: one room per job).

* import-linter's contracts in pyproject.toml hold (layers, no cycles among siblings,
  the core imports no adapter, the SDK never imports the node, nothing imports the CLI);
* no module outside the SDK imports a private name (leading underscore) of the SDK:
  the node, the chaos suite and the tests use its public API and its wire package.
"""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
SDK = "raft_ledger_client"


def _private_sdk_imports(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == SDK:
            parts = node.module.split(".")[1:] + [a.name for a in node.names]
            if any(p.startswith("_") for p in parts):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == SDK and any(p.startswith("_") for p in a.name.split(".")[1:]):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {a.name}")
    return found


def test_nothing_outside_the_sdk_imports_its_private_names():
    """The SDK's own unit tests (tests/unit/test_sdk_*.py) may test its private parts."""
    offenders = []
    for folder in ("node", "chaos", "tests", "proto"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.parent == ROOT / "tests" / "unit" and path.name.startswith("test_sdk_"):
                continue
            offenders += _private_sdk_imports(path)
    assert not offenders, "\n".join(offenders)


def test_import_contracts_hold():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    exe = pathlib.Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(exe), "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(contracts)} kept, 0 broken" in out.stdout, out.stdout
    for c in contracts:
        assert f"{c['name']} KEPT" in out.stdout, out.stdout
