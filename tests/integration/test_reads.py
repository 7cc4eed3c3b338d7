"""Read consistency: LOCAL reads from any validator, LINEARIZABLE reads through a Raft read barrier.

Raft paper §8: a leader must not answer a read from its own state without
checking it is still leader; committing an entry of its term (our read barrier)
does that and also applies every earlier acknowledged write.
"""
from __future__ import annotations

import grpc
import pytest

from raft_ledger_client import Account, CreateAccountResult as AR, CreateTransferResult as TR, Transfer
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


def test_linearizable_read_sees_every_acknowledged_write(cluster_module):
    cluster = cluster_module
    bank = cluster.client("bank-a")
    base = 70_000_000
    assert {r.result for r in bank.create_accounts([Account(id=base + 1, ledger=840, code=1), Account(id=base + 2, ledger=840, code=1)])} == {AR.ok}
    for n in range(1, 21):
        [r] = bank.create_transfers([Transfer(id=base + n, debit_account_id=base + 1, credit_account_id=base + 2, amount=n, ledger=840, code=1)])
        assert r.result is TR.ok
        # Immediately after the acknowledgement, through a client that only knows a follower.
        follower = cluster.addresses[cluster.followers(cluster.leader())[0]]
        reader = cluster.client("bank-a", addresses=[follower])
        [a] = reader.lookup_accounts([base + 1], linearizable=True)
        reader.close()
        assert a.debits_posted == n * (n + 1) // 2
    head = bank.head(linearizable=True)
    assert head.height >= 21
    bank.close()


def _assert_names_the_leader(cluster, leader, call) -> None:
    """``call`` (a LINEARIZABLE read on a follower) fails FAILED_PRECONDITION naming the leader."""
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert dict(e.value.trailing_metadata())["leader-address"] == cluster.addresses[leader]


def test_follower_refuses_a_linearizable_read_and_names_the_leader(cluster_module):
    cluster = cluster_module
    leader = cluster.leader()
    follower = cluster.followers(leader)[0]
    with cluster.channel(follower) as ch:
        stub = pb_grpc.LedgerServiceStub(ch)
        _assert_names_the_leader(cluster, leader, lambda: stub.GetHead(
            pb.GetHeadRequest(consistency=pb.READ_CONSISTENCY_LINEARIZABLE), timeout=5))
        # A LOCAL read is served by the follower itself, with the height it was served at.
        local = stub.GetHead(pb.GetHeadRequest(consistency=pb.READ_CONSISTENCY_LOCAL), timeout=5)
        assert local.head.height >= 0


def test_a_linearizable_configuration_read_is_the_leaders_and_a_follower_names_it(cluster_module):
    """Governance proposals are built on this read: a LOCAL one from a lagging validator
    can give an older version (refused at Submit as config_version_stale)."""
    cluster = cluster_module
    leader = cluster.leader()
    follower = cluster.followers(leader)[0]
    with cluster.channel(follower) as ch:
        stub = pb_grpc.LedgerServiceStub(ch)
        _assert_names_the_leader(cluster, leader, lambda: stub.GetConfiguration(
            pb.GetConfigurationRequest(consistency=pb.READ_CONSISTENCY_LINEARIZABLE), timeout=5))
        # A past version is the same everywhere: served locally whatever is asked.
        past = stub.GetConfiguration(pb.GetConfigurationRequest(
            version=1, consistency=pb.READ_CONSISTENCY_LINEARIZABLE), timeout=5)
        assert past.version == 1
    with cluster.channel(leader) as ch:
        resp = pb_grpc.LedgerServiceStub(ch).GetConfiguration(
            pb.GetConfigurationRequest(consistency=pb.READ_CONSISTENCY_LINEARIZABLE), timeout=10)
    bank = cluster.client("bank-b")
    try:
        assert bank.get_configuration(linearizable=True)["version"] == resp.version >= 1
    finally:
        bank.close()


def test_read_barriers_add_no_blocks(cluster_module):
    cluster = cluster_module
    bank = cluster.client("bank-b")
    before = bank.head(linearizable=True)
    for _ in range(5):
        assert bank.head(linearizable=True).hash == before.hash
    bank.close()


def test_concurrent_linearizable_reads_share_raft_entries(cluster_module):
    """Attack 5 of the hostile-input issue: every linearizable read used to append a Raft
    entry. Concurrent readers now share read barriers (node/raft/read_barrier.py)."""
    import threading

    import grpc

    from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
    from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc

    cluster = cluster_module
    leader = cluster.leader()
    before = next(st for v, st in cluster.status() if v.id == leader).commit_index
    done = []

    def read():
        with cluster.channel(leader) as ch:
            stub = pb_grpc.LedgerServiceStub(ch)
            for _ in range(10):
                stub.GetHead(pb.GetHeadRequest(consistency=pb.READ_CONSISTENCY_LINEARIZABLE), timeout=10)
                done.append(1)

    threads = [threading.Thread(target=read) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = next(st for v, st in cluster.status() if v.id == leader).commit_index
    assert len(done) == 120
    assert after - before < len(done) * 0.7, f"{after - before} Raft entries for {len(done)} reads"
