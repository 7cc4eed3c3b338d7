#!/usr/bin/env bash
# Validate the Kubernetes manifests in deploy/kubernetes (the Secret templates included) with
# kubeconform, strictly (unknown fields are errors), against the OpenAPI schemas of one pinned
# Kubernetes version. The schemas are read OFFLINE from the kubernetes-validate package in
# .venv (PyPI, pinned in deploy/constraints.txt; it ships standalone JSON schemas for
# Kubernetes 1.25..1.37): kubeconform's default schema location is a GitHub repository, which
# CI cannot reach. kustomization.yaml is kustomize's input, not a resource: not validated.
# Usage: bash deploy/check-manifests.sh [KUBERNETES_VERSION [FILE...]]   (run by .ci/run and tests/unit;
#        FILEs replace deploy/kubernetes/*.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION="${1:-1.31.0}"
shift || true
KUBECONFORM="${KUBECONFORM:-.venv/bin/kubeconform}"
schemas="$(.venv/bin/python -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')"
manifests=("$@")
if [ ${#manifests[@]} -eq 0 ]; then
  for f in deploy/kubernetes/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
  done
fi
exec "$KUBECONFORM" -strict -summary -kubernetes-version "$K8S_VERSION" \
  -schema-location "$schemas/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
  "${manifests[@]}"
