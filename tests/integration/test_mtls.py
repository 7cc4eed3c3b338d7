"""Mutual TLS on the gRPC API and the caller's identity (issue 11, items 1, 2 and 7).

Through the real gRPC API of a running TLS cluster: a plaintext client, a client
with no certificate, or with a certificate of another CA never gets an answer; the
SDK refuses a validator whose certificate another CA signed; a member's client
certificate submitting a transaction another member signed is PERMISSION_DENIED
and nothing is applied; Admin and reflection are the operator's. A suspended or
unknown identity is refused before any work: shown on an in-process gRPC server
over TLS whose governed configuration (a MemoryStore's) has the member suspended.
Access table: raft_ledger_node/api/authz.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from raft_ledger_client import (
    Account,
    ClientTLS,
    CreateAccountResult as AR,
    LedgerClient,
    PermissionDenied,
    RetryPolicy,
    TransportError,
    Unavailable,
)
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
from raft_ledger_node import pki

pytestmark = pytest.mark.integration

SHORT = RetryPolicy(deadline_s=3.0, attempt_timeout_s=1.0, backoff_initial_s=0.05, backoff_max_s=0.2)
ACCOUNT_BASE = 91_000_000


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def _get_head(channel) -> pb.GetHeadResponse:
    return pb_grpc.LedgerServiceStub(channel).GetHead(pb.GetHeadRequest(), timeout=5)


def test_a_plaintext_client_gets_no_answer_from_the_tls_port(cluster_module):
    with grpc.insecure_channel(cluster_module.addresses["v1"]) as ch:
        assert _code(lambda: _get_head(ch)) == grpc.StatusCode.UNAVAILABLE


def test_a_client_without_a_certificate_is_refused_in_the_handshake(cluster_module):
    ca = cluster_module.tls("bank-a").ca_pem
    with grpc.secure_channel(cluster_module.addresses["v1"], grpc.ssl_channel_credentials(root_certificates=ca)) as ch:
        assert _code(lambda: _get_head(ch)) == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_of_another_ca_is_refused(cluster_module):
    other_key, other_ca = pki.make_ca("someone else's CA")
    key, cert = pki.issue_certificate(other_key, other_ca, kind="member", identity="bank-a")
    ca = cluster_module.tls("bank-a").ca_pem
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    with grpc.secure_channel(cluster_module.addresses["v1"], creds) as ch:
        assert _code(lambda: _get_head(ch)) == grpc.StatusCode.UNAVAILABLE
    # Through the SDK: no answer is an unknown outcome, never a success.
    sdk = LedgerClient(list(cluster_module.addresses.values()), member_id="bank-a", key_id="k1",
                       private_key=cluster_module.private_key("bank-a"), chain_id=cluster_module.chain_id,
                       retry=SHORT, tls=ClientTLS(ca_pem=ca, cert_pem=cert, key_pem=key))
    with sdk, pytest.raises(TransportError):
        sdk.head()


def test_the_sdk_refuses_a_validator_the_cluster_ca_did_not_sign(cluster_module):
    # The member trusts only the cluster CA: a server certified by another CA (an
    # impostor at a validator's address) is never talked to.
    other_key, other_ca = pki.make_ca("impostor CA")
    tls = cluster_module.tls("bank-a")
    sdk = LedgerClient([cluster_module.addresses["v1"]], member_id="bank-a", key_id="k1",
                       private_key=cluster_module.private_key("bank-a"), chain_id=cluster_module.chain_id,
                       retry=SHORT, tls=dataclasses.replace(tls, ca_pem=other_ca))
    with sdk, pytest.raises(Unavailable):
        sdk.head()


def test_a_client_certificate_of_member_a_cannot_submit_what_member_b_signed(cluster_module):
    c = cluster_module
    acct = Account(id=ACCOUNT_BASE + 1, ledger=840, code=1)
    with c.client("bank-b", retry=SHORT, tls_identity="bank-a") as forged:
        with pytest.raises(PermissionDenied, match="signed as member 'bank-b'"):
            forged.create_accounts([acct])
    # Nothing applied: the auditor, who reads everything, finds no such account.
    with c.client("auditor") as auditor:
        assert auditor.lookup_accounts([acct.id], linearizable=True) == []
    # The same transaction over bank-b's own certificate goes through.
    with c.client("bank-b") as own:
        [r] = own.create_accounts([acct])
        assert r.result is AR.ok


def test_a_mixed_submit_is_refused_as_a_whole(cluster_module):
    c = cluster_module
    with c.client("bank-a") as a, c.client("bank-b") as b:
        mine = a.sign_accounts([Account(id=ACCOUNT_BASE + 2, ledger=840, code=1)])
        theirs = b.sign_accounts([Account(id=ACCOUNT_BASE + 3, ledger=840, code=1)])
        with pytest.raises(PermissionDenied):
            a.submit([mine, theirs])
    with c.client("auditor") as auditor:
        assert auditor.lookup_accounts([ACCOUNT_BASE + 2, ACCOUNT_BASE + 3], linearizable=True) == []


def test_admin_and_reflection_are_the_operators(cluster_module):
    c = cluster_module
    leader = c.leader()
    for identity in ("bank-a", "auditor", "admin-1"):
        with c.channel(leader, identity) as ch:
            assert _code(lambda: pb_grpc.AdminServiceStub(ch).GetStatus(pb.GetStatusRequest(), timeout=5)) \
                == grpc.StatusCode.PERMISSION_DENIED
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                  timeout=5)
            assert _code(lambda: list(responses)) == grpc.StatusCode.PERMISSION_DENIED
            # Health checking stays open to any authenticated identity; the Ledger's reads too.
            assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status \
                == health_pb2.HealthCheckResponse.SERVING
            assert _get_head(ch).head.height >= 0
    with c.admin_channel(leader) as ch:
        st = pb_grpc.AdminServiceStub(ch).GetStatus(pb.GetStatusRequest(), timeout=5)
        assert st.role == "leader"
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        [resp] = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                timeout=5))
        assert "ledger.v1.LedgerService" in {s.name for s in resp.list_services_response.service}


def test_a_validator_certificate_is_no_caller(cluster_module):
    c = cluster_module
    vdir = os.path.join(c.directory, "v1")
    with open(os.path.join(vdir, "tls.key.pem"), "rb") as f:
        key = f.read()
    with open(os.path.join(vdir, "tls.crt.pem"), "rb") as f:
        cert = f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=c.tls("bank-a").ca_pem, private_key=key,
                                         certificate_chain=cert)
    with grpc.secure_channel(c.addresses["v2"], creds) as ch:
        assert _code(lambda: _get_head(ch)) == grpc.StatusCode.PERMISSION_DENIED


# -- identities the configuration does not admit: an in-process server over TLS ---------


@pytest.fixture
def suspended_server(tmp_path):
    """A Ledger service over mutual TLS on 127.0.0.1 with the cluster's certificates, its
    governed configuration (a MemoryStore's) with bank-b suspended."""
    with _suspended_server(tmp_path) as served:
        yield served[:2]


@contextlib.contextmanager
def _suspended_server(tmp_path, catch_up=None):
    """(directory, address, store) of the server above; ``catch_up`` is the Authorizer's."""
    from concurrent import futures

    from raft_ledger_node.api.authz import Authorizer, AuthzInterceptor
    from raft_ledger_node.api.server import add_servicer
    from raft_ledger_node.api.servicers import AdminServicer, LedgerServicer
    from raft_ledger_node.config import load_genesis
    from raft_ledger_node.ledger.governance import MemberStatus
    from raft_ledger_node.localcluster import init_cluster
    from raft_ledger_node.store_memory import MemoryStore

    d = str(tmp_path / "c")
    init_cluster(d, 1, ["bank-a", "bank-b"], "127.0.0.1", 27_000)
    genesis = load_genesis(os.path.join(d, "genesis.json"))
    cfg = genesis.configuration
    cfg = cfg.with_members([dataclasses.replace(m, status=MemberStatus.suspended) if m.id == "bank-b" else m
                            for m in cfg.members])
    store = MemoryStore(cfg)
    authz = Authorizer(store.configuration, catch_up=None if catch_up is None else lambda t: catch_up(store, t))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=(AuthzInterceptor(authz),))
    add_servicer(server, "LedgerService", LedgerServicer(
        store=store, replica=None, batcher=None, verifier=None, leader_grpc_address=lambda: None,
        submit_timeout_s=1.0, chain_id=genesis.chain_id, authz=authz))
    add_servicer(server, "AdminService", AdminServicer(validator_id="v1", store=store, replica=None,
                                                leader_grpc_address=lambda: None))
    with open(os.path.join(d, "v1", "tls.key.pem"), "rb") as f:
        key = f.read()
    with open(os.path.join(d, "v1", "tls.crt.pem"), "rb") as f:
        cert = f.read()
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=genesis.tls_ca_pem, require_client_auth=True))
    server.start()
    try:
        yield d, f"127.0.0.1:{port}", store
    finally:
        server.stop(0).wait()


def _channel(directory: str, address: str, identity: str, key: bytes | None = None, cert: bytes | None = None):
    from raft_ledger_node.localcluster import client_tls

    tls = client_tls(directory, identity if key is None else "bank-a")
    creds = grpc.ssl_channel_credentials(root_certificates=tls.ca_pem, private_key=key or tls.key_pem,
                                         certificate_chain=cert or tls.cert_pem)
    return grpc.secure_channel(address, creds)


def test_a_suspended_member_is_refused_before_any_work(suspended_server):
    d, address = suspended_server
    with _channel(d, address, "bank-a") as ch:
        assert _get_head(ch).head.height == 0  # an active member is served
    with _channel(d, address, "bank-b") as ch:
        stub = pb_grpc.LedgerServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.GetHead(pb.GetHeadRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "is suspended in this ledger's configuration" in e.value.details()
        # Submit too, before anything (the servicer has no replica: any work would fail INTERNAL).
        assert _code(lambda: stub.Submit(pb.SubmitRequest(transactions=[pb.SignedTransaction(member_id="bank-b")]),
                                         timeout=5)) == grpc.StatusCode.PERMISSION_DENIED


def test_an_unknown_identity_is_refused_before_any_work(suspended_server):
    d, address = suspended_server
    with open(os.path.join(d, "ca", "ca.key.pem"), "rb") as f:
        ca_key = f.read()
    with open(os.path.join(d, "ca", "ca.crt.pem"), "rb") as f:
        ca_cert = f.read()
    key, cert = pki.issue_certificate(ca_key, ca_cert, kind="member", identity="bank-stranger")
    with _channel(d, address, "", key, cert) as ch:
        with pytest.raises(grpc.RpcError) as stranger:
            _get_head(ch)
    with _channel(d, address, "bank-b") as ch:
        with pytest.raises(grpc.RpcError) as suspended:
            _get_head(ch)
    assert stranger.value.code() == suspended.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Each holder learns its own identity's status only.
    assert "'bank-stranger' is unknown to this ledger's configuration" in stranger.value.details()
    assert "'bank-b' is suspended in" in suspended.value.details()


def test_genesis_names_the_ca_the_sdk_trusts(cluster_module):
    with open(cluster_module.genesis_path) as f:
        ca = json.load(f)["tls_ca_certificate"].encode()
    assert ca == cluster_module.tls("bank-a").ca_pem


def test_a_member_reinstated_by_a_change_not_yet_applied_here_is_served_after_the_catch_up(tmp_path):
    """A validator a few entries behind (or a new leader whose applied index trails its
    commit index) must not refuse a member an acknowledged governance change admitted:
    the refusal waits for the catch-up (the replica's read barrier) and looks again."""
    from raft_ledger_node.ledger.governance import MemberStatus

    calls = []

    def apply_pending_reinstatement(store, timeout_s):
        calls.append(timeout_s)
        cfg = store.configuration()
        store._configuration = cfg.with_members([dataclasses.replace(m, status=MemberStatus.active)
                                                 for m in cfg.members])
        return True

    with _suspended_server(tmp_path, catch_up=apply_pending_reinstatement) as (d, address, _):
        with _channel(d, address, "bank-a") as ch:
            assert _get_head(ch).head.height == 0
        assert calls == []  # an active member costs no barrier
        with _channel(d, address, "bank-b") as ch:
            assert _get_head(ch).head.height == 0
        assert len(calls) == 1


def test_the_refusal_stands_when_the_catch_up_changes_nothing(tmp_path):
    calls = []
    with _suspended_server(tmp_path, catch_up=lambda store, t: calls.append(t) or True) as (d, address, _):
        with _channel(d, address, "bank-b") as ch:
            with pytest.raises(grpc.RpcError) as e:
                _get_head(ch)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "is suspended in" in e.value.details()
    assert len(calls) == 1
