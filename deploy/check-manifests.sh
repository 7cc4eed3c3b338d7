#!/usr/bin/env bash
# Validate the Kubernetes manifests in deploy/kubernetes (the Secret templates included),
# strictly (a field the schema does not name is an error), against the OpenAPI schemas of one
# pinned Kubernetes version, OFFLINE: kubernetes-validate (PyPI, pinned in
# deploy/constraints.txt) ships the schemas of Kubernetes 1.25..1.37 inside its package.
# Not kubeconform: its schemas are fetched from a GitHub repository, which CI cannot reach,
# and it cannot compile the schemas kubernetes-validate ships (their $refs are absolute
# paths into its own registry; kubeconform v0.8.0 reports "could not find schema" for all).
# kustomization.yaml is kustomize's input, not a resource: not validated.
# Usage: bash deploy/check-manifests.sh [KUBERNETES_VERSION [FILE...]]   (run by .ci/run and
#        tests/unit/test_deploy_recipes.py; FILEs replace deploy/kubernetes/*.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION="${1:-1.31.0}"
shift || true
manifests=("$@")
if [ ${#manifests[@]} -eq 0 ]; then
  for f in deploy/kubernetes/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
  done
fi
exec .venv/bin/kubernetes-validate --strict --kubernetes-version "$K8S_VERSION" "${manifests[@]}"
