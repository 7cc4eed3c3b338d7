"""Error contract of the gRPC front end, through real gRPC against a running cluster.

node/api/__init__.py's module docstring is the contract: INVALID_ARGUMENT for a
malformed request, transaction or event or a bad signature, PERMISSION_DENIED
for an unknown member or key (nothing proposed); FAILED_PRECONDITION with trailing metadata ``leader-address``
on a follower, UNAVAILABLE with ``ledger-refused: no-leader`` on a validator
that knows no leader (both refusals before anything was proposed, which the SDK
reports as NotSubmitted, not as an unknown outcome); never a stack trace in a message. The standard services: gRPC
health checking (grpc/grpc doc/health-checking.md) answers SERVING, and server
reflection (grpc/grpc doc/server-reflection.md) lists ``ledger.v1.LedgerService``.

"Nothing applied" is checked with a barrier: after each rejected request a valid
control transaction is committed through the leader; it must land alone in the
very next block, and the rejected request's ids must be absent on every validator.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from raft_ledger_client import Account, CreateAccountResult as AR, LedgerClient, NotSubmitted, RetryPolicy, Transfer, TransportError
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

RPC_TIMEOUT_S = 5.0
SETTLE_TIMEOUT_S = 15.0
MESSAGE_CHARS_MAX = 300
#: Account ids of this module; each request gets its own.
_ids: Iterator[int] = iter(range(9_000_001, 9_100_000))


@pytest.fixture(scope="module")
def channels(cluster_module):
    """Validator id -> a gRPC channel to it over mutual TLS as bank-a; closed after the module."""
    chans = {vid: cluster_module.channel(vid, "bank-a") for vid in cluster_module.addresses}
    yield chans
    for ch in chans.values():
        ch.close()


@pytest.fixture(scope="module")
def signer(cluster_module):
    """An SDK client of bank-a, used here only to sign valid transactions."""
    with cluster_module.client("bank-a") as c:
        yield c


@pytest.fixture(scope="module")
def keys(cluster_module):
    """Member id -> its Ed25519 private key."""
    return {m: cluster_module.private_key(m) for m in ("bank-a", "bank-b")}


def ledger(channels, vid: str) -> pb_grpc.LedgerServiceStub:
    return pb_grpc.LedgerServiceStub(channels[vid])


def heads(channels) -> dict[str, tuple[int, bytes]]:
    out = {}
    for vid in channels:
        h = ledger(channels, vid).GetHead(pb.GetHeadRequest(), timeout=RPC_TIMEOUT_S).head
        out[vid] = (h.height, h.hash)
    return out


def settled_height(channels) -> int:
    """The head height once every validator has applied everything (bounded wait)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        seen = heads(channels)
        if len(set(seen.values())) == 1:
            return next(iter(seen.values()))[0]
        time.sleep(0.05)
    raise AssertionError(f"validators did not agree on a head within {SETTLE_TIMEOUT_S}s: {seen}")


def new_accounts(n: int = 2) -> list[Account]:
    return [Account(id=next(_ids), ledger=840, code=1) for _ in range(n)]


def u128(v: int) -> pb.UInt128:
    return pb.UInt128(hi=v >> 64, lo=v & ((1 << 64) - 1))


def absent_everywhere(channels, ids: list[int]) -> None:
    for vid in channels:
        resp = ledger(channels, vid).LookupAccounts(
            pb.LookupAccountsRequest(ids=[u128(i) for i in ids]), timeout=RPC_TIMEOUT_S
        )
        assert not resp.accounts, f"{vid} holds accounts of a rejected request: {resp.accounts}"


def assert_nothing_applied(channels, cluster, signer, height_before: int, rejected_ids: list[int]) -> None:
    """Barrier: a valid control transaction commits alone in block height_before+1; rejected ids are absent."""
    control = signer.sign_accounts(new_accounts(1))
    resp = ledger(channels, cluster.leader()).Submit(pb.SubmitRequest(transactions=[control]), timeout=RPC_TIMEOUT_S)
    (result,) = resp.results
    assert list(result.results) == [], "only failed events are sent; the control is ok"
    assert result.height == height_before + 1, "a rejected request was applied in a block of its own"
    assert settled_height(channels) == height_before + 1
    for vid in channels:
        block = ledger(channels, vid).GetBlock(pb.GetBlockRequest(height=result.height), timeout=RPC_TIMEOUT_S)
        assert list(block.tx_hashes) == [result.tx_hash], f"{vid}: the control's block holds other transactions"
    absent_everywhere(channels, rejected_ids)


def assert_clear_message(err: grpc.RpcError, code: grpc.StatusCode, *phrases: str) -> None:
    details = err.details() or ""
    assert err.code() == code, (err.code(), details)
    for p in phrases:
        assert p in details, details
    assert "Traceback" not in details and 'File "' not in details, details
    assert len(details) <= MESSAGE_CHARS_MAX, details


# -- INVALID_ARGUMENT, nothing applied --------------------------------------------------


def _signed_raw(keys, raw: bytes) -> pb.SignedTransaction:
    """``raw`` as the body, validly signed by bank-a: only the body is wrong."""
    return pb.SignedTransaction(body=raw, member_id="bank-a", key_id="k1", signature=keys["bank-a"].sign(raw))


def _malformed_body(signer, keys, ids):
    return _signed_raw(keys, b"\xff\xff\xff\xff\x0f")  # a tag with wire type 7: not protobuf


def _window(signer, **kw) -> dict:
    return {"chain_id": signer.chain_id, "valid_until": time.time_ns() + 60 * 10**9, **kw}


def _no_operation(signer, keys, ids):
    return _signed_raw(keys, pb.Transaction(**_window(signer)).SerializeToString(deterministic=True))


def _no_events(signer, keys, ids):
    return _signed_raw(keys, pb.Transaction(create_accounts=pb.CreateAccounts(), **_window(signer)).SerializeToString(deterministic=True))


def _accounts_body(signer, ids, **window) -> bytes:
    body = pb.Transaction(create_accounts=pb.CreateAccounts(accounts=[pb.Account(id=u128(i), ledger=840, code=1) for i in ids]),
                          **_window(signer, **window))
    return body.SerializeToString(deterministic=True)


def _another_chain(signer, keys, ids):
    return _signed_raw(keys, _accounts_body(signer, ids, chain_id="some-other-chain"))


def _expired(signer, keys, ids):
    return _signed_raw(keys, _accounts_body(signer, ids, valid_until=time.time_ns() - 10**9))


def _too_far_ahead(signer, keys, ids):
    return _signed_raw(keys, _accounts_body(signer, ids, valid_until=time.time_ns() + 2 * 24 * 3600 * 10**9))


def _no_valid_until(signer, keys, ids):
    return _signed_raw(keys, _accounts_body(signer, ids, valid_until=0))


def _unknown_field_in_envelope(signer, keys, ids):
    stx = signer.sign_accounts([Account(id=i, ledger=840, code=1) for i in ids])
    # Field 15, bytes: appended after a valid signature, it would change the envelope's hash.
    return pb.SignedTransaction.FromString(stx.SerializeToString() + b"\x7a\x03abc")


def _unknown_field_in_body(signer, keys, ids):
    return _signed_raw(keys, _accounts_body(signer, ids) + b"\x7a\x03abc")


def _bad_signature_over_garbage(signer, keys, ids):
    stx = _malformed_body(signer, keys, ids)
    stx.signature = bytes(64)
    return stx


def _unknown_member_with_garbage(signer, keys, ids):
    stx = _malformed_body(signer, keys, ids)
    stx.member_id = "bank-zz"
    return stx


def _bad_signature(signer, keys, ids):
    stx = signer.sign_accounts([Account(id=i, ledger=840, code=1) for i in ids])
    sig = bytearray(stx.signature)
    sig[0] ^= 0x01
    stx.signature = bytes(sig)
    return stx


def _short_signature(signer, keys, ids):
    stx = signer.sign_accounts([Account(id=i, ledger=840, code=1) for i in ids])
    stx.signature = stx.signature[:32]
    return stx


def _signed_by_another_member(signer, keys, ids):
    stx = signer.sign_accounts([Account(id=i, ledger=840, code=1) for i in ids])
    stx.signature = keys["bank-b"].sign(stx.body)  # bank-b's key, claiming to be bank-a
    return stx


def _unknown_member(signer, keys, ids):
    stx = signer.sign_accounts([Account(id=i, ledger=840, code=1) for i in ids])
    stx.member_id = "bank-zz"
    return stx


def _unknown_key(signer, keys, ids):
    stx = signer.sign_accounts([Account(id=i, ledger=840, code=1) for i in ids])
    stx.key_id = "k9"
    return stx


def _empty_member(signer, keys, ids):
    stx = signer.sign_accounts([Account(id=i, ledger=840, code=1) for i in ids])
    stx.member_id = ""
    return stx


BAD_TRANSACTIONS = {
    "malformed body": (_malformed_body, ("transaction 0", "body is not a ledger.v1.Transaction")),
    "body without operation": (_no_operation, ("transaction 0", "no operation")),
    "body without events": (_no_events, ("transaction 0", "no events")),
    "bad signature": (_bad_signature, ("transaction 0", "bad signature", "bank-a")),
    "signature not 64 bytes": (_short_signature, ("transaction 0", "signature must be 64 bytes")),
    "signed by another member": (_signed_by_another_member, ("transaction 0", "bad signature", "bank-a")),
    # Another member id than the caller's certificate: PERMISSION_DENIED before its signature (api.authz).
    "unknown member": (_unknown_member, ("transaction 0", "signed as member", "bank-zz")),
    "unknown key id": (_unknown_key, ("transaction 0", "unknown member", "k9")),
    "empty member id": (_empty_member, ("transaction 0", "member_id")),
    "signed for another chain": (_another_chain, ("transaction 0", "signed for chain 'some-other-chain'")),
    "past its validity window": (_expired, ("transaction 0", "expired")),
    "valid_until too far ahead": (_too_far_ahead, ("transaction 0", "tx_validity_ns_max=")),
    "valid_until unset": (_no_valid_until, ("transaction 0", "valid_until is required")),
    "unknown field in the envelope": (_unknown_field_in_envelope, ("transaction 0", "envelope has fields unknown")),
    "unknown field in the body": (_unknown_field_in_body, ("transaction 0", "body has fields unknown")),
    # Authentication comes before parsing: garbage with a bad signature or an unknown
    # member is refused for who signed it, never parsed.
    "bad signature over an unparseable body": (_bad_signature_over_garbage, ("transaction 0", "bad signature")),
    "unknown member with an unparseable body": (_unknown_member_with_garbage, ("transaction 0", "signed as member")),
}


#: Cases signed as a member other than the caller (bank-a's certificate).
NOT_THE_CALLER = ("unknown member", "unknown member with an unparseable body")


@pytest.mark.parametrize("case", list(BAD_TRANSACTIONS))
def test_bad_transaction_is_invalid_argument_and_nothing_is_applied(case, cluster_module, channels, signer, keys):
    build, phrases = BAD_TRANSACTIONS[case]
    ids = [a.id for a in new_accounts()]
    stx = build(signer, keys, ids)
    leader = cluster_module.leader()
    before = settled_height(channels)
    with pytest.raises(grpc.RpcError) as err:
        ledger(channels, leader).Submit(pb.SubmitRequest(transactions=[stx]), timeout=RPC_TIMEOUT_S)
    # Signed as another member than the caller (TLS identity), or with a key id the
    # signer does not have: the caller or signer may not (issue 11), not malformed.
    denied = case in NOT_THE_CALLER or case == "unknown key id"
    code = grpc.StatusCode.PERMISSION_DENIED if denied else grpc.StatusCode.INVALID_ARGUMENT
    assert_clear_message(err.value, code, *phrases)
    assert {h for h, _ in heads(channels).values()} == {before}
    assert_nothing_applied(channels, cluster_module, signer, before, ids)


def test_one_bad_transaction_rejects_the_whole_request(cluster_module, channels, signer):
    good_ids = [a.id for a in new_accounts()]
    bad_ids = [a.id for a in new_accounts()]
    good = signer.sign_accounts([Account(id=i, ledger=840, code=1) for i in good_ids])
    bad = _bad_signature(signer, {}, bad_ids)
    before = settled_height(channels)
    with pytest.raises(grpc.RpcError) as err:
        ledger(channels, cluster_module.leader()).Submit(pb.SubmitRequest(transactions=[good, bad]), timeout=RPC_TIMEOUT_S)
    assert_clear_message(err.value, grpc.StatusCode.INVALID_ARGUMENT, "transaction 1", "bad signature")
    assert_nothing_applied(channels, cluster_module, signer, before, good_ids + bad_ids)


def test_empty_request_is_invalid_argument_on_every_validator(cluster_module, channels, signer):
    before = settled_height(channels)
    for vid in channels:  # checked before the leader check: followers answer the same
        with pytest.raises(grpc.RpcError) as err:
            ledger(channels, vid).Submit(pb.SubmitRequest(), timeout=RPC_TIMEOUT_S)
        assert_clear_message(err.value, grpc.StatusCode.INVALID_ARGUMENT, "no transactions")
    assert_nothing_applied(channels, cluster_module, signer, before, [])


# -- followers ----------------------------------------------------------------------------


def test_follower_answers_submit_with_failed_precondition_and_leader_address(cluster_module, channels, signer):
    leader = cluster_module.leader()
    leader_address = cluster_module.addresses[leader]
    before = settled_height(channels)
    for follower in cluster_module.followers(leader):
        ids = [a.id for a in new_accounts()]
        stx = signer.sign_accounts([Account(id=i, ledger=840, code=1) for i in ids])
        with pytest.raises(grpc.RpcError) as err:
            ledger(channels, follower).Submit(pb.SubmitRequest(transactions=[stx]), timeout=RPC_TIMEOUT_S)
        assert_clear_message(err.value, grpc.StatusCode.FAILED_PRECONDITION, "not the leader", leader_address)
        trailing = dict(err.value.trailing_metadata() or ())
        assert trailing.get("leader-address") == leader_address
        assert trailing.get("ledger-refused") == "not-leader"
        assert_nothing_applied(channels, cluster_module, signer, before, ids)
        before += 1


def test_sdk_given_only_a_follower_follows_leader_address(cluster_module, channels):
    leader = cluster_module.leader()
    follower = cluster_module.followers(leader)[0]
    ids = [a.id for a in new_accounts()]
    with cluster_module.client("bank-b") as full:
        sdk = cluster_module.client("bank-b", addresses=[cluster_module.addresses[follower]])
        with sdk:
            results = sdk.create_accounts([Account(id=i, ledger=978, code=1) for i in ids])
        assert [r.result for r in results] == [AR.ok, AR.ok]
        settled_height(channels)
        for address in cluster_module.addresses.values():
            found = full.lookup_accounts(ids, address=address)
            assert sorted(a.id for a in found) == ids
            assert {a.owner for a in found} == {"bank-b"}


# -- standard services ------------------------------------------------------------------


def test_health_service_answers_serving(channels):
    for vid, ch in channels.items():
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "ledger.v1.LedgerService"):
            # The validator publishes its health every 0.2 s once it is ready: a short bounded wait.
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            while True:
                status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT_S).status
                if status == health_pb2.HealthCheckResponse.SERVING or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.SERVING, (vid, service, status)
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=RPC_TIMEOUT_S)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_server_reflection_lists_the_ledger_service(cluster_module):
    # Reflection is the operator's (api.authz): test_mtls.py shows a member refused.
    for vid in cluster_module.addresses:
        ch = cluster_module.admin_channel(vid)
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"ledger.v1.LedgerService", "ledger.v1.AdminService", "grpc.health.v1.Health"} <= services, (vid, services)
        # The descriptors served are the contract's: a client can build requests from them alone.
        pool = descriptor_pool.DescriptorPool(db)
        svc = pool.FindServiceByName("ledger.v1.LedgerService")
        assert {m.name for m in svc.methods} == {m.name for m in pb.DESCRIPTOR.services_by_name["LedgerService"].methods}
        submit = svc.FindMethodByName("Submit")
        assert (submit.input_type.full_name, submit.output_type.full_name) == (
            "ledger.v1.SubmitRequest",
            "ledger.v1.SubmitResponse",
        )
        ch.close()


# -- exactly once -------------------------------------------------------------------------


def test_retry_of_the_same_signed_transaction_returns_the_original_result(cluster_module, channels, signer):
    """Design invariant 3: a retry of the very same bytes answers from the index, no new block, no new effect."""
    leader = cluster_module.leader()
    debit, credit = new_accounts()
    opened = ledger(channels, leader).Submit(
        pb.SubmitRequest(transactions=[signer.sign_accounts([debit, credit])]), timeout=RPC_TIMEOUT_S
    )
    assert list(opened.results[0].results) == []  # no failures
    transfer_ids = [next(_ids), next(_ids)]
    stx = signer.sign_transfers(
        [Transfer(id=t, debit_account_id=debit.id, credit_account_id=credit.id, amount=7 + k, ledger=840, code=7)
         for k, t in enumerate(transfer_ids)]
    )

    (first,) = ledger(channels, leader).Submit(pb.SubmitRequest(transactions=[stx]), timeout=RPC_TIMEOUT_S).results
    assert list(first.results) == []  # both events ok: nothing to report
    height = settled_height(channels)
    assert first.height == height
    head_before = heads(channels)

    for _ in range(2):
        (again,) = ledger(channels, leader).Submit(pb.SubmitRequest(transactions=[stx]), timeout=RPC_TIMEOUT_S).results
        assert (again.tx_hash, again.height) == (first.tx_hash, first.height)
        assert list(again.results) == list(first.results)
    assert heads(channels) == head_before, "a retry created a new block"
    assert settled_height(channels) == height

    for vid in channels:
        block = ledger(channels, vid).GetBlock(pb.GetBlockRequest(height=first.height), timeout=RPC_TIMEOUT_S)
        assert list(block.tx_hashes) == [first.tx_hash], vid
        found = ledger(channels, vid).LookupTransfers(
            pb.LookupTransfersRequest(ids=[u128(t) for t in transfer_ids]), timeout=RPC_TIMEOUT_S
        ).transfers
        assert [f.id.lo for f in found] == transfer_ids, vid
        accounts = ledger(channels, vid).LookupAccounts(
            pb.LookupAccountsRequest(ids=[u128(debit.id), u128(credit.id)]), timeout=RPC_TIMEOUT_S
        ).accounts
        assert [(a.debits_posted.lo, a.credits_posted.lo) for a in accounts] == [(15, 0), (0, 15)], (
            f"{vid}: money moved more than once"
        )


# -- no leader: refused before proposal ---------------------------------------------------


def test_a_validator_without_leader_refuses_before_proposal_and_the_sdk_says_not_submitted(cluster):
    """A validator restarted alone knows no leader and cannot elect one (no majority,
    Raft §5.2; pysyncobj does not even start an election while connected to no one):
    it refuses writes up front, marked ``ledger-refused: no-leader``."""
    for vid in cluster.addresses:
        cluster.local.stop(vid, wait_s=15.0)
    survivor = next(iter(cluster.addresses))
    cluster.local.start(survivor)
    address = cluster.addresses[survivor]
    deadline = time.monotonic() + 30.0
    while True:  # until its gRPC port answers
        [(v, st)] = [(v, st) for v, st in cluster.status() if v.id == survivor]
        if not isinstance(st, grpc.RpcError):
            break
        assert time.monotonic() < deadline, f"{survivor} did not come back: {st}"
        time.sleep(0.1)
    assert (st.role, st.leader_address) == ("follower", ""), st

    key = cluster.private_key("bank-a")
    retry = RetryPolicy(deadline_s=1.0, attempt_timeout_s=0.5, backoff_initial_s=0.05, backoff_max_s=0.2)
    with cluster.client("bank-a", retry=retry, addresses=[address]) as sdk:
        stx = sdk.sign_accounts([Account(id=next(_ids), ledger=840, code=1)])
        with cluster.channel(survivor, "bank-a") as ch:
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.LedgerServiceStub(ch).Submit(pb.SubmitRequest(transactions=[stx]), timeout=RPC_TIMEOUT_S)
        assert_clear_message(err.value, grpc.StatusCode.UNAVAILABLE, "no leader", "nothing was proposed")
        assert dict(err.value.trailing_metadata() or ()).get("ledger-refused") == "no-leader"

        with pytest.raises(NotSubmitted) as refused:
            sdk.submit([stx])
        assert not isinstance(refused.value, TransportError), "a definite refusal counted as an unknown outcome"
        assert sdk.retries >= 2, "the SDK gave up without retrying within its deadline"
