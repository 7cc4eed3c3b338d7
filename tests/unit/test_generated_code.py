"""The generated protobuf/gRPC code in client/pb matches proto/ (never hand-edited, never stale)."""
from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_code_is_fresh(tmp_path):
    gen = _load_generator()
    fresh = gen.generate(tmp_path)
    assert fresh, "protoc generated nothing"
    for f in fresh:
        rel = f.relative_to(tmp_path)
        checked_in = ROOT / rel
        assert checked_in.exists(), f"{rel} missing: run `python proto/generate.py`"
        assert checked_in.read_bytes() == f.read_bytes(), f"{rel} is stale: run `python proto/generate.py`"


def test_services_are_in_the_versioned_package():
    from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb

    assert pb.DESCRIPTOR.package == "ledger.v1"
    assert set(pb.DESCRIPTOR.services_by_name) == {"LedgerService", "AdminService"}
