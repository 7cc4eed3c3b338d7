"""Fixtures for integration tests: real validator processes on 127.0.0.1.

``cluster`` (one per test) and ``cluster_module`` (one per test module) write a
fresh 3-validator cluster with ``init_cluster`` into a temporary directory, on a
range of ports probed free (never the demo's 7100 range), start the validators
with :class:`node.localcluster.LocalCluster`, wait until a leader is elected and
every validator is ready, and always stop the processes they started, by PID.

Ports: ``node.localcluster.reserve_ports`` takes a base only if all six of its
ports bind on 127.0.0.1 *and* an exclusive ``flock`` on
``$TMPDIR/ledger-test-ports/<base>.lock`` is granted. The reservation is held
until teardown (the kernel drops it if the test process dies), so concurrent test
sessions on this machine never pick the same range even while one of them has a
validator down and its ports momentarily free.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest

from raft_ledger_client import LedgerClient, RetryPolicy, load_private_key
from raft_ledger_node.localcluster import (
    OPERATOR_ID,
    LocalCluster,
    LocalClusterError,
    client_tls,
    cluster_port_offsets,
    grpc_channel,
    init_cluster,
    reserve_ports,
    status_rows,
)

VALIDATORS = 3
MEMBERS = ("bank-a", "bank-b")
#: Issuance: only an issuer's accounts may carry a debit balance. The tests move money
#: between unfunded accounts of the banks on these ledgers, so the banks issue them
#: (central-bank too); a ledger outside them (NOT_ISSUED_LEDGER) is issued by nobody.
#: tests/integration/test_ownership.py passes its own issuers.
TEST_ISSUERS = {lg: [*MEMBERS, "central-bank"] for lg in (1, 2, 4, 5, 840, 978)}
NOT_ISSUED_LEDGER = 3
#: Used by test_result_codes.py's query test alone.
QUERY_LEDGER = 5
#: First base port probed. gRPC ports are base+1..base+3, Raft ports base+101..base+103.
BASE_PORT_MIN = 17_100
#: Distance between probed bases; also keeps clusters of concurrent runs apart.
BASE_PORT_STEP = 200
#: Bases probed before giving up.
BASE_PORT_PROBES_MAX = 200
#: Attempts to bring a cluster up (a port probed free may be taken before a validator binds it).
CLUSTER_START_ATTEMPTS_MAX = 3
#: Time for a fresh cluster to elect a leader and report every validator ready.
CLUSTER_READY_TIMEOUT_S = 60.0
#: Time a validator gets to exit after SIGTERM before it is SIGKILLed.
VALIDATOR_STOP_TIMEOUT_S = 15.0


@dataclass
class Cluster:
    """A running local cluster and helpers to reach it."""

    directory: str
    base_port: int
    local: LocalCluster

    @property
    def genesis_path(self) -> str:
        return os.path.join(self.directory, "genesis.json")

    @property
    def addresses(self) -> dict[str, str]:
        """Validator id -> gRPC address."""
        return {v.id: v.grpc_address for v in self.local.genesis.validators}

    def key_file(self, member: str) -> str:
        return os.path.join(self.directory, "members", f"{member}.pem")

    def private_key(self, member: str):
        return load_private_key(self.key_file(member))

    def client(self, member: str, retry: RetryPolicy | None = None, *, tls_identity: str | None = None,
               addresses: list[str] | None = None) -> LedgerClient:
        """An SDK client signing as ``member`` over mutual TLS with the client certificate
        of ``tls_identity`` (default: ``member`` itself)."""
        return LedgerClient(
            addresses or list(self.addresses.values()),
            member_id=member,
            key_id="k1",
            private_key=self.private_key(member),
            chain_id=self.chain_id,
            retry=retry,
            tls=self.tls(tls_identity or member),
            validators=list(self.addresses.values()),
        )

    def tls(self, identity: str):
        """The ClientTLS (cluster CA, client certificate and key) of ``identity``."""
        return client_tls(self.directory, identity)

    def channel(self, vid: str, identity: str = "bank-a", options=()) -> grpc.Channel:
        """A raw gRPC channel to validator ``vid`` over mutual TLS as ``identity``."""
        return grpc_channel(self.directory, self.addresses[vid], identity, options)

    def admin_channel(self, vid: str) -> grpc.Channel:
        return self.channel(vid, OPERATOR_ID)

    @property
    def chain_id(self) -> str:
        return self.local.genesis.chain_id

    def status(self, timeout_s: float = 1.0):
        """[(ValidatorInfo, GetStatusResponse | grpc.RpcError)] for every validator."""
        return status_rows(self.genesis_path, timeout_s=timeout_s)

    def leader(self, timeout_s: float = 30.0, exclude: tuple[str, ...] = ()) -> str:
        """Id of the validator that reports itself leader (and not in ``exclude``), agreed by the others."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = [(v, st) for v, st in self.status() if not isinstance(st, grpc.RpcError)]
            leaders = [v for v, st in rows if st.role == "leader" and v.id not in exclude]
            if len(leaders) == 1:
                lead = leaders[0]
                followers = [st for v, st in rows if v.id != lead.id and v.id not in exclude]
                if all(st.leader_address == lead.grpc_address for st in followers):
                    return lead.id
            time.sleep(0.1)
        raise AssertionError(f"no single agreed leader within {timeout_s}s: {self.status()}")

    def followers(self, leader: str) -> list[str]:
        return [vid for vid in self.addresses if vid != leader]


@contextmanager
def running_cluster(directory: str, start_port: int, config_overrides: dict | None = None,
                    issuers: dict[int, list[str]] | None = None, insecure_plaintext: bool = False):
    """Init, start and wait for a 3-validator cluster in ``directory``; stop it on exit.

    ``config_overrides`` are written into every validator's config.json before start;
    ``issuers`` ({ledger: member ids}) default to TEST_ISSUERS; ``insecure_plaintext``
    makes a development cluster without TLS.
    """
    attempt_start = start_port
    for attempt in range(CLUSTER_START_ATTEMPTS_MAX):
        ports = reserve_ports(cluster_port_offsets(VALIDATORS), start=attempt_start, step=BASE_PORT_STEP,
                              probes_max=BASE_PORT_PROBES_MAX)
        base = ports.base
        local = None
        try:
            init_cluster(directory, VALIDATORS, list(MEMBERS), "127.0.0.1", base, force=True,
                         issuers=TEST_ISSUERS if issuers is None else issuers, insecure_plaintext=insecure_plaintext)
            if config_overrides:
                _override_configs(directory, config_overrides)
            local = LocalCluster(directory)
            local.start_all()
            local.wait_ready(timeout_s=CLUSTER_READY_TIMEOUT_S)
        except BaseException as e:
            try:
                if local is not None:
                    local.stop_all(wait_s=VALIDATOR_STOP_TIMEOUT_S)
            finally:
                ports.release()
            if local is None or not isinstance(e, LocalClusterError):
                raise
            logs = {vid: _tail(local.log_path(vid)) for vid in local.procs}
            if attempt + 1 == CLUSTER_START_ATTEMPTS_MAX:
                raise RuntimeError(f"cluster did not start: {e}\n{logs}") from None
            attempt_start = base + BASE_PORT_STEP  # e.g. a port was taken between probe and bind
            continue
        break
    try:
        yield Cluster(directory=directory, base_port=base, local=local)
    finally:
        try:
            local.stop_all(wait_s=VALIDATOR_STOP_TIMEOUT_S)  # SIGTERM all at once; SIGKILL one that does not exit in time
        finally:
            ports.release()
        still = {vid: p.pid for vid, p in local.procs.items() if p.poll() is None}
        assert not still, f"validators still running after teardown: {still}"


def _override_configs(directory: str, overrides: dict) -> None:
    import json

    for i in range(1, VALIDATORS + 1):
        path = os.path.join(directory, f"v{i}", "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg.update(overrides)
        with open(path, "w") as f:
            json.dump(cfg, f)


def _tail(path: str, n: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def _start_port() -> int:
    # Spread concurrent test runs (other worktrees, xdist workers) over different ranges.
    return BASE_PORT_MIN + (os.getpid() % 20) * BASE_PORT_STEP


@pytest.fixture
def cluster(tmp_path):
    """A fresh 3-validator cluster for one test (the test may kill and restart validators)."""
    with running_cluster(str(tmp_path / "cluster"), _start_port()) as c:
        yield c


@pytest.fixture
def compacting_cluster(tmp_path):
    """A fresh cluster whose validators snapshot and compact their Raft log every 10 blocks."""
    with running_cluster(str(tmp_path / "cluster"), _start_port(), {"log_compaction_min_entries": 10}) as c:
        yield c


@pytest.fixture(scope="module")
def cluster_module(tmp_path_factory):
    """A 3-validator cluster shared by the tests of one module; they must leave it running."""
    with running_cluster(str(tmp_path_factory.mktemp("cluster")), _start_port()) as c:
        yield c
