"""The packages pyproject.toml installs are exactly the folders that hold Python packages,
under their import names (a folder left out would be missing from a wheel)."""
from __future__ import annotations

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _listed(pyproject: pathlib.Path) -> tuple[dict, set]:
    conf = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    return conf["package-dir"], set(conf["packages"])


def _on_disk(import_name: str, folder: pathlib.Path) -> set:
    return {
        ".".join([import_name, *init.parent.relative_to(folder).parts])
        for init in folder.rglob("__init__.py")
        if "__pycache__" not in init.parts and "build" not in init.relative_to(folder).parts
    }


def test_every_package_folder_is_installed_under_its_import_name():
    dirs, listed = _listed(ROOT / "pyproject.toml")
    assert dirs == {"raft_ledger_node": "node", "raft_ledger_client": "client", "raft_ledger_chaos": "chaos"}
    found = set()
    for name, folder in dirs.items():
        found |= _on_disk(name, ROOT / folder)
    assert listed == found


def test_the_sdk_alone_lists_the_same_sdk_packages():
    dirs, listed = _listed(ROOT / "client" / "pyproject.toml")
    assert dirs == {"raft_ledger_client": "."}
    assert listed == _on_disk("raft_ledger_client", ROOT / "client")
    _, whole = _listed(ROOT / "pyproject.toml")
    assert listed == {p for p in whole if p.startswith("raft_ledger_client")}
