"""Generate the Python protobuf/gRPC code for proto/ledger/v1 into client/pb.

Run by the install step (``deploy/local/setup.sh``, the container build); never
edit the output by hand and never commit it. The modules are generated under the
import path ``raft_ledger_client.pb.ledger.v1`` (the folder ``client/`` is the
installed package ``raft_ledger_client``), the SDK's public wire package, which
the validator imports by that name too.

Usage: python proto/generate.py [--out DIR]
   DIR defaults to the repository root; the files land in DIR/client/pb/.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
#: Import path of the generated package, and the folder it lives in (relative to the repo).
IMPORT_PREFIX = "raft_ledger_client/pb"
OUTPUT_DIR = "client/pb"


def generate(out_root: pathlib.Path) -> list[pathlib.Path]:
    """Run grpcio-tools' protoc; write ``out_root/client/pb/**``; return the generated files.

    Raises SystemExit when protoc fails. ``client/pb/__init__.py`` (committed) is left as is.
    """
    from grpc_tools import protoc
    import grpc_tools

    protos = sorted(p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{IMPORT_PREFIX}={PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[f"{PROTO_DIR / p}" for p in protos],
        ]
        rc = protoc.main(args)
        if rc != 0:
            raise SystemExit(f"protoc failed with exit code {rc}")
        src = pathlib.Path(tmp) / IMPORT_PREFIX
        for d in [p for p in src.rglob("*") if p.is_dir()]:
            (d / "__init__.py").touch()
        dest = out_root / OUTPUT_DIR
        dest.mkdir(parents=True, exist_ok=True)
        for sub in [p for p in src.iterdir() if p.is_dir()]:
            shutil.rmtree(dest / sub.name, ignore_errors=True)
            shutil.copytree(sub, dest / sub.name)
    return sorted(p for p in dest.rglob("*.py*") if p.is_file() and p.parent != dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT)
    files = generate(parser.parse_args().out)
    print(f"generated {len(files)} files under {OUTPUT_DIR}/", file=sys.stderr)


if __name__ == "__main__":
    main()
