"""Hostile input at the gRPC door, through the real API of a real 3-validator cluster.

* undecodable requests are INVALID_ARGUMENT with a one-line message, logged at most
  once per period and never with a traceback (they used to be answered INTERNAL,
  each with an ERROR and a traceback in the log);
* a member over its rate limit (token bucket, config ``member_rate_limits``) gets
  RESOURCE_EXHAUSTED with ``retry-after-ms`` and nothing is proposed; the SDK waits
  the hint and succeeds within its deadline;
* RPCs in flight are bounded (``grpc_rpcs_inflight_max``): past the bound gRPC refuses
  at once, and the SDK reports it as not submitted, never as an unknown outcome;
* the validator's data directory is 0700 and its files 0600 (umask 077).
"""
from __future__ import annotations

import os
import stat
import threading
import time

import grpc
import pytest

from conftest import _start_port, running_cluster
from raft_ledger_client import Account, NotSubmitted, RetryPolicy
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb

pytestmark = pytest.mark.integration

LIMITED = "bank-b"
LIMITED_RATE = {"events_per_s": 200, "burst": 300}
INFLIGHT_MAX = 4
RPC_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    overrides = {"member_rate_limits": {LIMITED: LIMITED_RATE}, "grpc_rpcs_inflight_max": INFLIGHT_MAX}
    with running_cluster(str(tmp_path_factory.mktemp("hostile")), _start_port(), overrides) as c:
        yield c


def _raw(cluster, vid: str, method: str):
    ch = cluster.channel(vid, "bank-a")
    return ch, ch.unary_unary(f"/ledger.v1.LedgerService/{method}", request_serializer=None, response_deserializer=None)


def test_undecodable_requests_are_invalid_argument_and_logged_quietly(hostile):
    leader = hostile.leader()
    log_path = hostile.local.log_path(leader)
    before = open(log_path, errors="replace").read()
    ch, submit = _raw(hostile, leader, "Submit")
    with ch:
        for k in range(200):
            with pytest.raises(grpc.RpcError) as err:
                submit(b"\xff\xff\xff\xff\x0f" + bytes([k]), timeout=RPC_TIMEOUT_S)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == "request is not a ledger.v1.SubmitRequest message"
    time.sleep(0.5)
    new = open(log_path, errors="replace").read()[len(before):]
    assert "Traceback" not in new and "Exception deserializing" not in new, new[-2000:]
    lines = [line for line in new.splitlines() if "undecodable request" in line]
    assert 1 <= len(lines) <= 2, lines  # one line per LOG_PERIOD_S (10 s), not one per request
    with hostile.client("bank-a") as c:  # and the validator still serves
        [r] = c.create_accounts([Account(id=7_000_001, ledger=840, code=1)])
        assert r.ok


def test_a_member_over_its_rate_limit_is_refused_with_a_retry_hint(hostile):
    leader = hostile.leader()
    ids = iter(range(7_100_001, 7_200_000))
    with hostile.client(LIMITED) as c:
        burst = c.sign_accounts([Account(id=next(ids), ledger=840, code=1) for _ in range(LIMITED_RATE["burst"])])
        [r] = c.submit([burst])
        assert r.ok
        over_ids = [next(ids) for _ in range(100)]
        over = c.sign_accounts([Account(id=i, ledger=840, code=1) for i in over_ids])
        with hostile.channel(leader, LIMITED) as ch:
            stub = ch.unary_unary("/ledger.v1.LedgerService/Submit", request_serializer=pb.SubmitRequest.SerializeToString,
                                  response_deserializer=pb.SubmitResponse.FromString)
            with pytest.raises(grpc.RpcError) as err:
                stub(pb.SubmitRequest(transactions=[over]), timeout=RPC_TIMEOUT_S)
        md = dict(err.value.trailing_metadata())
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert md["ledger-refused"] == "rate-limited" and 0 < int(md["retry-after-ms"]) <= 1000
        assert "rate limit" in err.value.details()
        assert c.lookup_accounts(over_ids, linearizable=True) == []
        # The SDK waits the hint and gets through within its deadline.
        retries = c.retries
        [r] = c.submit([over])
        assert r.ok and c.retries > retries
    with hostile.client("bank-a") as other:  # other members are not limited by bank-b's bucket
        results = other.create_accounts([Account(id=next(ids), ledger=840, code=1) for _ in range(500)])
        assert all(r.ok for r in results)


def test_rate_limited_until_the_deadline_is_not_submitted(hostile):
    retry = RetryPolicy(deadline_s=0.3, attempt_timeout_s=0.2, backoff_initial_s=0.05, backoff_max_s=0.1)
    with hostile.client(LIMITED, retry=retry) as c:
        big = c.sign_accounts([Account(id=7_300_000 + k, ledger=840, code=1) for k in range(LIMITED_RATE["burst"] + 1)])
        with pytest.raises(NotSubmitted) as err:
            c.submit([big])
        assert "RateLimited" in str(err.value)


def test_rpcs_in_flight_are_bounded_and_shed_as_not_submitted(hostile):
    """More concurrent linearizable reads than grpc_rpcs_inflight_max: the extra ones are
    refused at once by gRPC (RESOURCE_EXHAUSTED), which the SDK treats as not submitted."""
    leader = hostile.leader()
    refused, ok = [], []
    start = threading.Barrier(24)

    def read():
        ch = hostile.channel(leader, "bank-a")
        stub = ch.unary_unary("/ledger.v1.LedgerService/GetHead", request_serializer=pb.GetHeadRequest.SerializeToString,
                              response_deserializer=pb.GetHeadResponse.FromString)
        start.wait(RPC_TIMEOUT_S)
        try:
            for _ in range(5):
                stub(pb.GetHeadRequest(consistency=pb.READ_CONSISTENCY_LINEARIZABLE), timeout=RPC_TIMEOUT_S)
                ok.append(1)
        except grpc.RpcError as e:
            refused.append((e.code(), e.details()))
        finally:
            ch.close()

    threads = [threading.Thread(target=read) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert refused, "no RPC was shed past grpc_rpcs_inflight_max"
    assert all(code == grpc.StatusCode.RESOURCE_EXHAUSTED and "Concurrent RPC limit" in d for code, d in refused), refused
    assert ok  # (the SDK maps this refusal to NotSubmitted: tests/unit/test_sdk_client.py)


def test_data_directory_is_private(hostile):
    for v in hostile.local.genesis.validators:
        data = os.path.join(hostile.directory, v.id, "data")
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700, data
        for root, dirs, files in os.walk(data):
            for d in dirs:
                mode = stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode)
                assert mode & 0o077 == 0, (os.path.join(root, d), oct(mode))
            for f in files:
                p = os.path.join(root, f)
                mode = stat.S_IMODE(os.lstat(p).st_mode)
                assert mode & 0o077 == 0, (p, oct(mode))
