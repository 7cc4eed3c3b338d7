"""proto/ follows buf's conventions and breaks nothing released (buf lint, buf breaking).

``buf lint`` with the STANDARD rules (proto/buf.yaml) must be clean; ``buf breaking`` with the
FILE rules against proto/breaking/ledger.v1.binpb, the image of the last released proto (see
proto/breaking/README.md), must find nothing. Both are run for real with the buf that
deploy/local/setup.sh installs (skipped with a reason where it could not: no ``go``); CI
installs it and runs the same two commands in .ci/run. Two checks show the tools have teeth:
a deleted field and a misnamed message, in a copy of proto/, are reported by rule name.
The image itself is read with protobuf's own descriptor classes, without buf.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from google.protobuf import descriptor_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO = os.path.join(ROOT, "proto")
BUF = os.path.join(ROOT, ".venv", "bin", "buf")
AGAINST = os.path.join(PROTO, "breaking", "ledger.v1.binpb")
#: Bound on one buf run (it compiles the proto in process; no network).
BUF_TIMEOUT_S = 120

needs_buf = pytest.mark.skipif(not os.path.exists(BUF), reason="no .venv/bin/buf: run deploy/local/setup.sh (needs go)")


def _buf(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([BUF, *args], cwd=cwd, capture_output=True, text=True, timeout=BUF_TIMEOUT_S)


@needs_buf
def test_buf_lint_is_clean_with_the_standard_rules():
    p = _buf("lint", "proto")
    assert p.returncode == 0 and p.stdout == "", p.stdout + p.stderr


def test_buf_yaml_uses_the_standard_lint_and_file_breaking_rules():
    with open(os.path.join(PROTO, "buf.yaml")) as f:
        text = f.read()
    assert re.search(r"^lint:\n  use:\n    - STANDARD\n", text, flags=re.M)
    assert re.search(r"^breaking:\n  use:\n    - FILE\n", text, flags=re.M)
    assert "except:" not in text and "ignore:" not in text  # no rule switched off wholesale


def test_every_lint_ignore_comment_gives_its_reason():
    with open(os.path.join(PROTO, "ledger", "v1", "ledger.proto")) as f:
        lines = f.read().splitlines()
    ignores = [i for i, line in enumerate(lines) if "buf:lint:ignore" in line]
    assert ignores
    for i in ignores:
        # The reason is the comment line right above the ignore, "// Lint: <why>".
        above = lines[i - 1].strip()
        assert above.startswith("// Lint: ") and len(above) > 30, (i + 1, above)


@needs_buf
def test_buf_breaking_finds_nothing_against_the_released_image():
    p = _buf("breaking", "proto", "--against", "proto/breaking/ledger.v1.binpb")
    assert p.returncode == 0 and p.stdout == "", p.stdout + p.stderr


def test_the_released_image_holds_the_ledger_v1_services():
    image = descriptor_pb2.FileDescriptorSet()
    with open(AGAINST, "rb") as f:
        image.ParseFromString(f.read())
    [file] = [fd for fd in image.file if fd.package == "ledger.v1"]
    assert file.name == "ledger/v1/ledger.proto"
    services = {s.name: {m.name for m in s.method} for s in file.service}
    assert set(services) == {"LedgerService", "AdminService"}
    assert {"Submit", "LookupAccounts", "WatchCheckpoints"} <= services["LedgerService"]
    assert "GetStatus" in services["AdminService"]


def _proto_copy(tmp_path) -> str:
    dst = tmp_path / "proto"
    shutil.copytree(PROTO, dst, ignore=shutil.ignore_patterns("breaking", "generate.py", "__pycache__"))
    return str(dst)


@needs_buf
def test_buf_breaking_reports_a_deleted_field(tmp_path):
    d = _proto_copy(tmp_path)
    path = os.path.join(d, "ledger", "v1", "ledger.proto")
    with open(path) as f:
        text = f.read()
    assert "  string owner = 13;\n" in text
    with open(path, "w") as f:
        f.write(text.replace("  string owner = 13;\n", "", 1))
    p = _buf("breaking", d, "--against", AGAINST)
    assert p.returncode != 0
    assert "FIELD_NO_DELETE" in p.stdout + p.stderr or 'Previously present field "13" with name "owner"' in p.stdout, p.stdout


@needs_buf
def test_buf_lint_reports_a_message_that_is_not_pascal_case(tmp_path):
    d = _proto_copy(tmp_path)
    path = os.path.join(d, "ledger", "v1", "ledger.proto")
    with open(path, "a") as f:
        f.write("\nmessage bad_name {}\n")
    p = _buf("lint", d, "--error-format", "config-ignore-yaml")
    assert p.returncode != 0 and "MESSAGE_PASCAL_CASE" in p.stdout, p.stdout + p.stderr
