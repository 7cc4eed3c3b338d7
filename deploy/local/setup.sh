#!/usr/bin/env bash
# Set up a development/demo environment from a fresh clone:
#   .venv with the validator, the SDK, the test tools and the chaos suite; generated
#   protobuf code; the Toxiproxy server (a Go program) as .venv/bin/toxiproxy-server.
# Idempotent: re-running only installs what changed. Usage: bash deploy/local/setup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# The generated package (client/pb) must exist before the project is installed: it is
# one of the packages it lists. grpcio-tools has the same pin as the `dev` extra.
echo "==> generating protobuf/gRPC code from proto/ into client/pb" >&2
.venv/bin/python -m pip install --quiet -c deploy/constraints.txt "grpcio-tools==1.85.1"
.venv/bin/python proto/generate.py
echo "==> installing the validator, SDK and test dependencies into .venv" >&2
# deploy/constraints.txt pins every distribution (the container image installs with it too).
.venv/bin/python -m pip install --quiet -c deploy/constraints.txt -e ".[node,dev,chaos]"

# The chaos suite's fault injector. Built from source with the Go toolchain, pinned;
# re-installed only when the pin changes. Without `go` the chaos suite (and its
# integration test) cannot run; everything else still works.
TOXIPROXY_VERSION=v2.12.0
if [ "$(cat .venv/toxiproxy-server.version 2>/dev/null)" != "$TOXIPROXY_VERSION" ] || [ ! -x .venv/bin/toxiproxy-server ]; then
  if command -v go >/dev/null 2>&1; then
    echo "==> installing toxiproxy-server $TOXIPROXY_VERSION into .venv/bin" >&2
    gobin="$(mktemp -d)"
    if ! GOBIN="$gobin" go install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" >"$gobin/go.log" 2>&1; then
      cat "$gobin/go.log" >&2
      echo "ERROR: go install of toxiproxy-server $TOXIPROXY_VERSION failed (output above)" >&2
      exit 1
    fi
    cp "$gobin/server" .venv/bin/toxiproxy-server
    rm -rf "$gobin"
    echo "$TOXIPROXY_VERSION" > .venv/toxiproxy-server.version
  else
    echo "WARNING: 'go' not found: toxiproxy-server not installed; the chaos suite will not run" >&2
  fi
fi

# The chaos suite's linearizability checker (Porcupine, a Go library): built from
# chaos/porcupine (go.mod/go.sum pin it) into .venv/bin; `go build` is incremental, so
# re-running is cheap. Without `go` the linearizability check of a chaos run is
# reported as undecided; everything else still works.
if command -v go >/dev/null 2>&1; then
  echo "==> building ledger-porcupine into .venv/bin" >&2
  repo="$PWD"
  if ! (cd chaos/porcupine && go build -o "$repo/.venv/bin/ledger-porcupine" .); then
    echo "WARNING: go build of chaos/porcupine failed (output above): the chaos suite's linearizability check will be undecided" >&2
  fi
else
  echo "WARNING: 'go' not found: ledger-porcupine not built; the chaos suite's linearizability check will be undecided" >&2
fi

# The CDC sink's broker for its integration test (tests/integration/test_cdc_nats.py):
# nats-server with JetStream, a Go program, built pinned into .venv/bin like toxiproxy.
# Without `go` that one test is skipped; everything else still works.
NATS_SERVER_VERSION=v2.14.9
if [ "$(cat .venv/nats-server.version 2>/dev/null)" != "$NATS_SERVER_VERSION" ] || [ ! -x .venv/bin/nats-server ]; then
  if command -v go >/dev/null 2>&1; then
    echo "==> installing nats-server $NATS_SERVER_VERSION into .venv/bin" >&2
    gobin="$(mktemp -d)"
    if ! GOBIN="$gobin" go install "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION" >"$gobin/go.log" 2>&1; then
      cat "$gobin/go.log" >&2
      echo "ERROR: go install of nats-server $NATS_SERVER_VERSION failed (output above)" >&2
      exit 1
    fi
    cp "$gobin/nats-server" .venv/bin/nats-server
    rm -rf "$gobin"
    echo "$NATS_SERVER_VERSION" > .venv/nats-server.version
  else
    echo "WARNING: 'go' not found: nats-server not installed; the CDC sink's broker test will be skipped" >&2
  fi
fi

# API checks (CI's .ci/run, tests/unit/test_proto_conventions.py, tests/integration/test_grpcurl.py):
# buf (lint and breaking-change detection of proto/) and grpcurl (the README's examples). The
# Kubernetes manifests are checked by kubernetes-validate, a Python package (dev extra).
# Built from source with the Go toolchain, pinned; each re-installed only when its pin changes.
# Without `go` those checks are skipped with a reason; CI has go and fails if an install fails.
go_tools=(
  "buf github.com/bufbuild/buf/cmd/buf@v1.75.0"
  "grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"
)
for tool in "${go_tools[@]}"; do
  name="${tool%% *}"; pkg="${tool#* }"
  if [ "$(cat ".venv/$name.version" 2>/dev/null)" = "$pkg" ] && [ -x ".venv/bin/$name" ]; then
    continue
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "WARNING: 'go' not found: $name not installed; its checks will be skipped" >&2
    continue
  fi
  echo "==> installing $name (${pkg#*@}) into .venv/bin" >&2
  gobin="$(mktemp -d)"
  if ! GOBIN="$gobin" go install "$pkg" >"$gobin/go.log" 2>&1; then
    cat "$gobin/go.log" >&2
    echo "ERROR: go install $pkg failed (output above)" >&2
    exit 1
  fi
  cp "$gobin/$name" ".venv/bin/$name"
  rm -rf "$gobin"
  echo "$pkg" > ".venv/$name.version"
done
