"""Generate the Python protobuf/gRPC code for proto/ledger/v1 into client/_gen.

Run by the install step (README, .ci/run); never edit the output by hand.
The files are generated under the import path ``client._gen.ledger.v1`` so that
both the SDK (``client``) and the validator (``node``) import one copy.

Usage: python proto/generate.py [--out DIR]   (DIR defaults to the repo root)
"""
from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE_PREFIX = "client/_gen"


def generate(out_root: pathlib.Path) -> list[pathlib.Path]:
    """Run grpcio-tools' protoc; return the generated files. Raises SystemExit on failure."""
    from grpc_tools import protoc
    import grpc_tools

    protos = sorted(p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PACKAGE_PREFIX}={PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[f"{PROTO_DIR / p}" for p in protos],
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    gen_root = out_root / PACKAGE_PREFIX
    for d in [gen_root, *[p for p in gen_root.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return sorted(p for p in gen_root.rglob("*.py*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT)
    files = generate(parser.parse_args().out)
    print(f"generated {len(files)} files under {PACKAGE_PREFIX}/", file=sys.stderr)


if __name__ == "__main__":
    main()
