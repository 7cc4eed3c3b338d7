"""The composition root takes its adapters as parameters (node/main.py ``Validator``):
a test builds the production object graph in-process and swaps one adapter — here the
signature verifier — without monkeypatching, then drives it through real gRPC."""
from __future__ import annotations

import threading
import time

import pytest

from raft_ledger_client import Account
from raft_ledger_node.config import load_config, load_genesis
from raft_ledger_node.crypto import Verifier
from raft_ledger_node.localcluster import cluster_port_offsets, init_cluster, member_client, reserve_ports
from raft_ledger_node.main import Validator
from raft_ledger_node.store import RocksStore, StoreError

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 30.0
PORT_START = 43_100


class RecordingVerifier(Verifier):
    """The production verifier, recording which members it was asked about."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.seen: list[str] = []

    def verify_many(self, items):
        self.seen.extend(member for member, *_ in items)
        return super().verify_many(items)


@pytest.fixture
def one_validator(tmp_path):
    with reserve_ports(cluster_port_offsets(1), start=PORT_START, step=200) as ports:
        generated = init_cluster(str(tmp_path / "c"), 1, ["bank-a"], "127.0.0.1", ports.base)
        yield generated, load_config(generated.config_paths["v1"])


def test_validator_built_in_process_with_a_swapped_verifier(one_validator):
    generated, cfg = one_validator
    genesis = load_genesis(cfg.genesis_file)
    verifier = RecordingVerifier({m.id: {k.key_id: k.public_key for k in m.keys} for m in genesis.members}, threads=1)
    v = Validator(cfg, verifier=verifier)
    t = threading.Thread(target=v.serve, name="validator", daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (v.replica.status().ready and v.replica.is_leader()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert v.replica.is_leader(), "a single validator elects itself"
        with member_client(generated.directory, "bank-a") as c:  # mutual TLS, as a member connects
            [r] = c.create_accounts([Account(id=1, ledger=840, code=1)])
            assert r.ok
            assert [a.id for a in c.lookup_accounts([1], linearizable=True)] == [1]
        assert verifier.seen == ["bank-a"]
        assert v.store.head().height == 1
    finally:
        v.stop()
        t.join(30)
    assert not t.is_alive()


def test_a_data_directory_of_another_chain_is_refused(one_validator, tmp_path):
    _, cfg = one_validator
    s = RocksStore(cfg.db_path)
    try:
        s.bind_genesis(b"\x01" * 32)
    finally:
        s.close()
    with pytest.raises(StoreError, match="belongs to another chain"):
        Validator(cfg)
