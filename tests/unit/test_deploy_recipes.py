"""The deployment recipes under deploy/ agree with the code that reads them.

The example genesis files (deploy/examples/genesis.json and the Kubernetes ConfigMap) load
with the strict ``load_genesis``; the example config loads with ``load_config``; the
StatefulSet's write-config init script, run for real on files of a generated cluster,
writes a config the validator accepts and refuses a certificate genesis does not pin; the
probes and the container HEALTHCHECK call ``ledger-validator health``; kustomization lists
files that exist and never the Secret templates. (No YAML parser is installed: the two
block scalars are cut out of the text by indentation.)
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from raft_ledger_node import pki
from raft_ledger_node.config import ValidatorConfig, load_config, load_genesis
from raft_ledger_node.localcluster import init_cluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "kubernetes")


def _text(*parts: str) -> str:
    with open(os.path.join(DEPLOY, *parts)) as f:
        return f.read()


def _block_scalar(text: str, marker: str) -> str:
    """The literal block (``|``) that follows the line ending in ``marker``, dedented."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith(marker)) + 1
    indent = len(lines[start]) - len(lines[start].lstrip())
    out = []
    for line in lines[start:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        out.append(line[indent:])
    return "\n".join(out)


def test_example_genesis_loads_with_ca_pins_and_governance():
    g = load_genesis(os.path.join(DEPLOY, "examples", "genesis.json"))
    assert g.tls_ca_pem is not None
    assert all(len(v.tls_cert_sha256) == 32 for v in g.validators)
    cfg = g.configuration
    assert cfg.admins == ("admin-1", "admin-2", "admin-3") and cfg.threshold == 2
    assert dict(cfg.issuers)[840] == ("central-bank",)
    assert {m.id for m in cfg.members if "operator" in m.roles} == {"operator"}


def test_example_config_loads_and_names_only_known_settings():
    cfg = load_config(os.path.join(DEPLOY, "examples", "config.json"))
    assert cfg.tls_cert_file == "/etc/ledger/tls.crt.pem" and cfg.tls_key_file == "/etc/ledger/tls.key.pem"
    assert not cfg.insecure_plaintext
    doc = json.loads(_text("examples", "config.json"))
    assert set(doc) <= set(ValidatorConfig.__dataclass_fields__)


def test_kubernetes_genesis_configmap_loads_and_names_the_headless_pods(tmp_path):
    path = tmp_path / "genesis.json"
    path.write_text(_block_scalar(_text("kubernetes", "genesis-configmap.yaml"), "genesis.json: |"))
    g = load_genesis(str(path))
    for n, v in enumerate(g.validators):
        assert v.id == f"v{n + 1}"
        assert v.grpc_address == f"ledger-{n}.ledger-headless.ledger.svc.cluster.local:7101"
    assert g.tls_ca_pem is not None and g.configuration.threshold == 2


@pytest.fixture
def pod(tmp_path):
    """The files a ledger-0 pod would see, from a generated 127.0.0.1 cluster: genesis,
    the Raft password, the Secret ledger-tls with every validator's pair; and the
    write-config script with its absolute paths moved under tmp_path."""
    d = str(tmp_path / "cluster")
    init_cluster(d, 3, ["bank-a"], "127.0.0.1", 27_300)
    root = tmp_path / "pod"
    for sub in ("etc/ledger/genesis", "etc/ledger/secret", "etc/ledger/tls", "run/ledger"):
        (root / sub).mkdir(parents=True)
    with open(os.path.join(d, "genesis.json")) as f:
        (root / "etc/ledger/genesis/genesis.json").write_text(f.read())
    (root / "etc/ledger/secret/raft_password").write_text("a-long-random-password\n")
    for vid in ("v1", "v2", "v3"):
        for part in ("crt", "key"):
            with open(os.path.join(d, vid, f"tls.{part}.pem"), "rb") as f:
                (root / f"etc/ledger/tls/{vid}.tls.{part}.pem").write_bytes(f.read())
        with open(os.path.join(d, vid, "signing.key.pem"), "rb") as f:
            (root / f"etc/ledger/tls/{vid}.signing.key.pem").write_bytes(f.read())
    script = _block_scalar(_text("kubernetes", "statefulset.yaml"), "- |")
    assert script.startswith("import hashlib, json") and "tls_cert_file" in script
    script = script.replace('"/etc/ledger/', f'"{root}/etc/ledger/').replace('"/run/ledger/', f'"{root}/run/ledger/')
    script = script.replace('f"/etc/ledger/', f'f"{root}/etc/ledger/')
    return root, script, d


def _run(script: str, ordinal: int = 0):
    env = {**os.environ, "POD_NAME": f"ledger-{ordinal}", "LEDGER_TUNING": '{"verify_threads": 1}'}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30)


def test_write_config_copies_its_own_pin_checked_pair_into_a_config_the_validator_accepts(pod):
    root, script, d = pod
    p = _run(script, ordinal=1)
    assert p.returncode == 0, p.stderr
    cfg = load_config(str(root / "run/ledger/config.json"))
    assert cfg.validator_id == "v2" and cfg.verify_threads == 1
    assert cfg.grpc_listen_address == "0.0.0.0:27302"
    with open(cfg.tls_cert_file, "rb") as f:
        cert = f.read()
    assert pki.identity_from_certificate(cert) == pki.Identity("validator", "v2")
    assert pki.certificate_sha256(cert) == load_genesis(cfg.genesis_file).validator("v2").tls_cert_sha256
    for name in ("config.json", "tls.crt.pem", "tls.key.pem", "signing.key.pem"):
        assert os.stat(root / "run/ledger" / name).st_mode & 0o777 == 0o600
    # The signing key copied is v2's own: its public key is the one genesis names for v2.
    from raft_ledger_client import load_private_key
    from raft_ledger_client.governance import public_key_bytes

    assert public_key_bytes(load_private_key(cfg.signing_key_file)) == load_genesis(cfg.genesis_file).validator("v2").public_key


def test_write_config_refuses_a_certificate_genesis_does_not_pin(pod):
    root, script, _ = pod
    # v2's pair under v1's name: a valid certificate of the cluster CA, the wrong pin.
    for part in ("crt", "key"):
        (root / f"etc/ledger/tls/v1.tls.{part}.pem").write_bytes((root / f"etc/ledger/tls/v2.tls.{part}.pem").read_bytes())
    p = _run(script, ordinal=0)
    assert p.returncode == 1 and "not this validator's certificate" in p.stderr
    assert not (root / "run/ledger/config.json").exists()


def test_write_config_names_the_missing_secret_key(pod):
    root, script, _ = pod
    (root / "etc/ledger/tls/v3.tls.key.pem").unlink()
    p = _run(script, ordinal=2)
    assert p.returncode == 1 and "v3.tls.key.pem" in p.stderr and "tls-secret.yaml" in p.stderr


def test_write_config_needs_the_signing_key_genesis_names(pod):
    root, script, _ = pod
    (root / "etc/ledger/tls/v1.signing.key.pem").unlink()
    p = _run(script, ordinal=0)
    assert p.returncode == 1 and "v1.signing.key.pem" in p.stderr and "public_key" in p.stderr


def test_probes_and_healthcheck_use_the_tls_health_command():
    sts = _text("kubernetes", "statefulset.yaml")
    assert re.search(r'readinessProbe:\s+exec:\s+command: \["ledger-validator", "health", "--config", '
                     r'"/run/ledger/config.json"', sts)
    assert "grpc:\n" not in sts  # the native probe cannot present a client certificate
    assert 'CMD ["ledger-validator", "health", "--quiet"]' in _text("container", "Containerfile")
    assert "LEDGER_CONFIG=/etc/ledger/config.json" in _text("container", "Containerfile")


def test_kustomization_lists_existing_files_and_no_secret_template():
    kust = _text("kubernetes", "kustomization.yaml")
    resources = re.findall(r"^  - (\S+\.yaml)$", kust, flags=re.M)
    assert resources and all(os.path.exists(os.path.join(K8S, r)) for r in resources)
    assert "secret.yaml" not in resources and "tls-secret.yaml" not in resources
    assert set(os.listdir(K8S)) - set(resources) - {"kustomization.yaml"} == {"secret.yaml", "tls-secret.yaml"}


# -- membership changes (issue 13): added validators, the genesis format step ------------------


def _nth_block_scalar(text: str, marker: str, n: int) -> str:
    """The ``n``-th (from 0) literal block after a line ending in ``marker``."""
    lines = text.split("\n")
    ends = [i for i, line in enumerate(lines) if line.rstrip().endswith(marker)]
    return _block_scalar("\n".join(lines[ends[n]:]), marker)


def test_write_config_runs_an_added_validator_from_the_added_configmap(pod):
    from raft_ledger_node.localcluster import add_validator_files, validator_entry

    root, script, d = pod
    info = add_validator_files(d, "v4")
    (root / "etc/ledger/added").mkdir()
    (root / "etc/ledger/added/v4.json").write_text(json.dumps(validator_entry(info)))
    for part in ("crt", "key"):
        with open(os.path.join(d, "v4", f"tls.{part}.pem"), "rb") as f:
            (root / f"etc/ledger/tls/v4.tls.{part}.pem").write_bytes(f.read())
    with open(os.path.join(d, "v4", "signing.key.pem"), "rb") as f:
        (root / "etc/ledger/tls/v4.signing.key.pem").write_bytes(f.read())
    p = _run(script, ordinal=3)
    assert p.returncode == 0, p.stderr
    cfg = load_config(str(root / "run/ledger/config.json"))
    assert cfg.validator_id == "v4" and cfg.raft_listen_address == f"0.0.0.0:{info.raft_address.rpartition(':')[2]}"
    with open(cfg.tls_cert_file, "rb") as f:
        assert pki.certificate_sha256(f.read()) == info.tls_cert_sha256


def test_write_config_refuses_a_pod_governance_has_not_added(pod):
    root, script, _ = pod
    p = _run(script, ordinal=3)
    assert p.returncode == 1
    assert "ledger-validators-added has no v4.json" in p.stderr and "validator add --entry" in p.stderr
    assert not (root / "run/ledger/config.json").exists()


@pytest.fixture
def format_step(tmp_path):
    """The format-data-dir init script with its paths moved to a generated cluster's v1: the
    data directory is v1's (empty), the config v1's own; ``ledger-validator`` from this venv."""
    d = str(tmp_path / "cluster")
    init_cluster(d, 3, ["bank-a"], "127.0.0.1", 27_400)
    data = os.path.join(d, "v1", "data")
    if os.path.isdir(data):  # init-cluster formats genesis directories itself: start from an empty one
        for name in os.listdir(data):
            os.remove(os.path.join(data, name))
    else:
        os.makedirs(data)
    sts = _text("kubernetes", "statefulset.yaml")
    script = _nth_block_scalar(sts, "- |", 1)
    assert script.startswith("set -eu") and "validator format --config /run/ledger/config.json --genesis" in script
    script = script.replace("/var/lib/ledger", data).replace("/run/ledger/config.json", os.path.join(d, "v1", "config.json"))

    def run(bootstrap: str | None):
        env = {k: v for k, v in os.environ.items() if k != "LEDGER_BOOTSTRAP"}
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        if bootstrap is not None:
            env["LEDGER_BOOTSTRAP"] = bootstrap
        return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)

    return data, run


def test_format_step_formats_an_empty_volume_for_genesis_only_on_the_first_rollout(format_step):
    from raft_ledger_node.raft import membership

    data, run = format_step
    os.mkdir(os.path.join(data, "lost+found"))  # a new ext4 volume's
    p = run("genesis")
    assert p.returncode == 0, p.stdout + p.stderr
    ident = membership.read_identity(data)
    assert ident is not None and ident.genesis and ident.validator_id == "v1"
    assert "(genesis voter)" in p.stdout + p.stderr
    # Again (a pod restart): the identity stays as it is.
    p = run("genesis")
    assert p.returncode == 0 and "formatted already" in p.stdout
    assert membership.read_identity(data) == ident


def test_format_step_leaves_a_new_volume_to_start_as_a_learner_after_the_first_rollout(format_step):
    from raft_ledger_node.raft import membership

    data, run = format_step
    p = run(None)  # LEDGER_BOOTSTRAP removed: a lost PVC's empty replacement
    assert p.returncode == 0 and "starts as a learner" in p.stdout
    assert membership.read_identity(data) is None  # the validator gives it a learner's identity at start
    with open(os.path.join(data, "CURRENT"), "w") as f:  # data without an identity: never formatted over
        f.write("x")
    p = run("genesis")
    assert p.returncode == 0 and "left as it is" in p.stdout and membership.read_identity(data) is None


def test_statefulset_mounts_the_added_configmap_and_formats_after_write_config():
    sts = _text("kubernetes", "statefulset.yaml")
    assert sts.index("- name: write-config") < sts.index("- name: format-data-dir") < sts.index("containers:\n")
    assert re.search(r"name: ledger-validators-added\n\s+optional: true", sts)
    assert "{name: LEDGER_BOOTSTRAP, value: genesis}" in sts


def test_docs_explain_scaling_together_with_governance():
    doc = _text("README.md")
    section = doc[doc.index("### Changing the validator set"):]
    for needle in ("validator add --entry", "kubectl -n ledger scale statefulset ledger --replicas=4",
                   "validator remove v4", "--replicas=3", "validator replace v2", "learner (non-voting)",
                   "LEDGER_BOOTSTRAP", "ledger-validators-added"):
        assert needle in section, needle
    systemd = doc[doc.index("## Bare metal / VMs with systemd"):doc.index("## Container image")]
    assert "validator format --config /etc/ledger/config.json --genesis" in systemd
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    ops = readme[readme.index("## Operating validators"):readme.index("## Onboarding a member bank")]
    for needle in ("ledger-validator validator add --cluster", "validator remove v2", "validator replace v3 --cluster",
                   "--new-id", "validator_change_pending", "MembershipChangeRefused", "tigerbeetle recover"):
        assert needle in ops, needle


# -- deployment checked (issue 14): schemas, probes, Secrets, container parity -------------------
#
# Kubernetes' schemas come from the kubernetes-validate package (PyPI, pinned in
# deploy/constraints.txt), which ships them for 1.25..1.37: nothing is downloaded (kubeconform
# was tried: it fetches its schemas from GitHub, and cannot compile these; deploy/check-manifests.sh).

import importlib.metadata

import yaml

#: The Kubernetes version the manifests are validated against (= deploy/check-manifests.sh's default).
KUBERNETES_VERSION = "1.31.0"


def _manifests() -> list[str]:
    return sorted(os.path.join(K8S, f) for f in os.listdir(K8S) if f.endswith(".yaml") and f != "kustomization.yaml")


def _resources(path: str) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _statefulset() -> dict:
    [sts] = _resources(os.path.join(K8S, "statefulset.yaml"))
    return sts


def test_kubernetes_manifests_validate_strictly_against_the_pinned_kubernetes_version():
    import kubernetes_validate

    seen = []
    for path in _manifests():
        for res in _resources(path):
            # strict: a property the schema does not name is an error, not ignored.
            kubernetes_validate.validate(res, KUBERNETES_VERSION, strict=True)
            seen.append(f"{res['kind']}/{res['metadata']['name']}")
    assert sorted(seen) == sorted([
        "ConfigMap/ledger-genesis", "Namespace/ledger", "NetworkPolicy/ledger-validator",
        "PodDisruptionBudget/ledger", "Secret/ledger-raft", "Secret/ledger-tls", "Service/ledger-headless",
        "Service/ledger", "StatefulSet/ledger"])


def test_strict_validation_refuses_a_misspelt_field():
    import kubernetes_validate

    sts = _statefulset()
    sts["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"tcpSocket": {"port": 7101}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(sts, KUBERNETES_VERSION, strict=True)


def test_check_manifests_script_passes_every_resource_offline():
    """deploy/check-manifests.sh, the command CI runs: every resource passes, strictly."""
    p = subprocess.run(["bash", os.path.join(DEPLOY, "check-manifests.sh")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    passed = re.findall(r"passed for resource (\S+) against version 1\.31", p.stdout + p.stderr)
    assert len(passed) == 9 and "statefulset/ledger" in passed, p.stdout + p.stderr


def test_check_manifests_script_fails_on_a_misspelt_field(tmp_path):
    sts = _statefulset()
    sts["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"tcpSocket": {"port": 7101}}
    bad = tmp_path / "statefulset.yaml"
    bad.write_text(yaml.safe_dump(sts))
    p = subprocess.run(["bash", os.path.join(DEPLOY, "check-manifests.sh"), KUBERNETES_VERSION, str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "readinesProbe" in p.stdout + p.stderr, p.stdout + p.stderr


def test_probes_use_the_grpc_health_service_over_mutual_tls():
    [validator] = [c for c in _statefulset()["spec"]["template"]["spec"]["containers"] if c["name"] == "validator"]
    ports = {p["name"]: p["containerPort"] for p in validator["ports"]}
    assert ports == {"grpc": 7101, "raft": 7201}
    # Readiness = grpc.health.v1 SERVING, asked with the validator's own certificate (the
    # native `grpc:` probe presents none, and the validators serve mutual TLS only).
    assert validator["readinessProbe"]["exec"]["command"] == [
        "ledger-validator", "health", "--config", "/run/ledger/config.json", "--quiet"]
    # Startup and liveness: the gRPC port accepts connections (not Health: without a majority
    # no validator is SERVING, and restarting them would not bring it back).
    assert validator["startupProbe"]["tcpSocket"]["port"] == "grpc"
    assert validator["livenessProbe"]["tcpSocket"]["port"] == "grpc"


def test_keys_and_the_raft_password_come_from_secrets_only():
    pod = _statefulset()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["raft-secret"]["secret"]["secretName"] == "ledger-raft"
    assert volumes["tls-secret"]["secret"]["secretName"] == "ledger-tls"
    secrets = {r["metadata"]["name"] for path in _manifests() for r in _resources(path) if r["kind"] == "Secret"}
    assert secrets == {"ledger-raft", "ledger-tls"}
    # Only the init container that copies this pod's own pair mounts the Secrets.
    for c in pod["initContainers"] + pod["containers"]:
        mounted = {m["name"] for m in c.get("volumeMounts", [])}
        assert ("tls-secret" in mounted) == (c["name"] == "write-config"), c["name"]
        assert ("raft-secret" in mounted) == (c["name"] == "write-config"), c["name"]
        for env in c.get("env", []):
            assert "password" not in env["name"].lower() and "KEY" not in env["name"], env
    # No key material in a ConfigMap or an env value.
    for path in _manifests():
        for r in _resources(path):
            if r["kind"] == "ConfigMap":
                assert "PRIVATE KEY" not in json.dumps(r)
    for name in ("config.json", "tls.key.pem"):
        assert f"/run/ledger/{name}" in _text("kubernetes", "statefulset.yaml")
    assert volumes["run-config"]["emptyDir"]["medium"] == "Memory"


# Container parity: the image installs the Python distributions setup.sh installs, at the same
# versions (deploy/constraints.txt, used by both), minus the test, chaos and API tools (the
# image runs the validator: its `node` extra).


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraints() -> dict[str, str]:
    pins = {}
    for line in _text("constraints.txt").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[_canonical(name)] = version
    return pins


def _installed() -> dict[str, str]:
    """The .venv's distributions as `pip freeze --exclude-editable` lists them."""
    skip = {"pip", "setuptools", "wheel", "distribute", "raft-ledger"}
    return {_canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
            if _canonical(d.metadata["Name"]) not in skip}


def _pip_installs(text: str) -> list[str]:
    """Each `pip install` command of a shell script or Containerfile, continuation lines joined."""
    joined = text.replace("\\\n", " ")
    return [m.group(0) for m in re.finditer(r"pip install [^\n&]*", joined)]


def _closure(name: str, extras) -> set[str]:
    """The distributions ``pip install name[extras]`` brings, from the installed metadata
    (markers evaluated for this platform); canonical names."""
    from packaging.requirements import Requirement

    def requires(dist: str, dist_extras: frozenset[str]) -> set[tuple[str, frozenset[str]]]:
        out = set()
        for spec in importlib.metadata.requires(dist) or []:
            req = Requirement(spec)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (dist_extras or {""})):
                out.add((_canonical(req.name), frozenset(req.extras)))
        return out

    closure, todo = set(), [(name, frozenset(extras))]
    while todo:
        dist, dist_extras = todo.pop()
        try:
            deps = requires(dist, dist_extras)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed
        for dep in deps:
            if dep[0] not in closure:
                closure.add(dep[0])
                todo.append(dep)
    return closure


def test_constraints_pin_exactly_what_setup_sh_installed():
    if not os.path.exists(os.path.join(ROOT, ".venv", "bin", "python")) or not sys.prefix.startswith(os.path.join(ROOT, ".venv")):
        pytest.skip("not running in this repository's .venv (made by deploy/local/setup.sh)")
    pins, installed = _constraints(), _installed()
    regenerate = "regenerate deploy/constraints.txt as its header says"
    # deploy/local/bench.sh adds the bench extra on top (unpinned, under the same constraints):
    # only what that extra alone brings may be installed without a pin.
    bench_only = _closure("raft-ledger", {"bench"}) - _closure("raft-ledger", {"node", "dev", "chaos", "lazyfs"})
    installed = {n: v for n, v in installed.items() if n not in bench_only or n in pins}
    assert not set(installed) - set(pins), f"installed but not pinned: {sorted(set(installed) - set(pins))}; {regenerate}"
    assert not set(pins) - set(installed), f"pinned but not installed: {sorted(set(pins) - set(installed))}; {regenerate}"
    differ = {n: (pins[n], installed[n]) for n in pins if pins[n] != installed[n]}
    assert not differ, f"pinned != installed: {differ}; {regenerate}"


def test_the_image_installs_with_the_same_commands_and_pins_as_setup_sh():
    setup, image = _text("local", "setup.sh"), _text("container", "Containerfile")
    for name, text in (("setup.sh", setup), ("Containerfile", image)):
        installs = _pip_installs(text)
        assert installs, name
        for cmd in installs:
            if "--upgrade pip" in cmd:
                continue  # the installer itself
            assert "-c deploy/constraints.txt" in cmd, f"{name}: {cmd!r} installs without the constraints"
    grpcio_tools = re.search(r'"grpcio-tools==([^"]+)"', _text("..", "pyproject.toml")).group(1)
    assert f'"grpcio-tools=={grpcio_tools}"' in setup and f"'grpcio-tools=={grpcio_tools}'" in image
    assert _constraints()["grpcio-tools"] == grpcio_tools
    # setup.sh installs the node extra (and the test and chaos tools, with the power-loss file
    # system's binding); the image the node extra.
    assert re.search(r'-e "\.\[node,dev,chaos,lazyfs\]"', setup)
    assert re.search(r'raft_ledger-\*\.whl\)\[node\]"', image)
    assert "COPY deploy/constraints.txt deploy/constraints.txt" in image
    assert "!deploy/constraints.txt" in _text("container", "Containerfile.dockerignore").splitlines()
    # The same Python: the image's base is the minor version the venv (and the tests) run.
    base = re.search(r"ARG PYTHON_IMAGE=\S+/python:(\d+\.\d+)-slim", image).group(1)
    assert base == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_the_images_node_closure_is_pinned_and_holds_no_test_tools():
    """The distributions `pip install .[node]` brings (from the installed metadata, markers
    evaluated for this platform) are all pinned, and none of setup.sh's test tools is among them."""
    closure = _closure("raft-ledger", {"node"})
    pins = _constraints()
    assert {"grpcio", "protobuf", "cryptography", "pysyncobj", "rocksdict", "grpcio-health-checking"} <= closure
    assert closure <= set(pins), sorted(closure - set(pins))
    assert not closure & {"pytest", "hypothesis", "import-linter", "matplotlib", "grpcio-tools", "kubernetes-validate"}
