"""The Prometheus endpoint and the JSON logs of real validators (node/metrics.py, node/logs.py).

A 3-validator mutual-TLS cluster started with ``ledger-validator start --log-format json``,
its metrics ports reserved with its gRPC and Raft ports. The endpoint is scraped the way
Prometheus does with a ``tls_config`` (CA file, client certificate and key: HTTPS, mutual
TLS) and parsed with prometheus-client's own text parser
(``text_string_to_metric_families``), as Prometheus' scrape loop parses the text format
0.0.4. The trust model (shared/design.md: "every port authenticates before it does work")
is checked as a hostile caller meets it: no client certificate fails the TLS handshake,
a member bank's or the auditor's certificate is answered 403, the operator's and a
validator's are served.
"""
from __future__ import annotations

import http.client
import json
import os
import ssl
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raft_ledger_client import Account, CreateAccountResult as AR, CreateTransferResult as TR, Transfer
from raft_ledger_node.localcluster import (
    LocalCluster,
    cluster_port_offsets,
    init_cluster,
    member_client,
    member_tls_paths,
    reserve_ports,
)
from raft_ledger_node.metrics import has_unit
from conftest import MEMBERS, TEST_ISSUERS, Cluster

pytestmark = pytest.mark.integration

PORT_START = 40_000
PORT_STEP = 300
READY_TIMEOUT_S = 60.0
SCRAPE_TIMEOUT_S = 5.0
#: Time for the remaining validators to elect a new leader after the leader stops.
ELECTION_TIMEOUT_S = 30.0
TRANSFERS = 20


@pytest.fixture(scope="module")
def metrics_cluster(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("metrics"))
    with reserve_ports(cluster_port_offsets(3, metrics=True), start=PORT_START, step=PORT_STEP) as ports:
        init_cluster(directory, 3, list(MEMBERS), "127.0.0.1", ports.base, issuers=TEST_ISSUERS)
        local = LocalCluster(directory)
        try:
            for v in local.genesis.validators:
                local.start(v.id, args=("--log-format", "json"))
            local.wait_ready(timeout_s=READY_TIMEOUT_S)
            yield Cluster(directory=directory, base_port=ports.base, local=local)
        finally:
            local.stop_all()
        still = {vid: p.pid for vid, p in local.procs.items() if p.poll() is None}
        assert not still, f"validators still running after teardown: {still}"


def metrics_address(cluster: Cluster, vid: str) -> str:
    with open(os.path.join(cluster.directory, vid, "config.json")) as f:
        return json.load(f)["metrics_listen_address"]


def tls_files(cluster: Cluster, identity: str) -> tuple[str, str, str]:
    """(CA, client key, client certificate) of a member identity or a validator id."""
    if identity.startswith("v") and identity[1:].isdigit():
        vdir = os.path.join(cluster.directory, identity)
        return (os.path.join(cluster.directory, "ca", "ca.crt.pem"), os.path.join(vdir, "tls.key.pem"),
                os.path.join(vdir, "tls.crt.pem"))
    return member_tls_paths(cluster.directory, identity)


def scrape(cluster: Cluster, vid: str, identity: str | None) -> tuple[int, str]:
    """GET https://<metrics address>/metrics as Prometheus' tls_config would: verify the
    validator against the cluster CA, present ``identity``'s client certificate (None: none)."""
    ca, key, cert = tls_files(cluster, identity or "operator")
    ctx = ssl.create_default_context(cafile=ca)
    if identity is not None:
        ctx.load_cert_chain(cert, key)
    host, _, port = metrics_address(cluster, vid).rpartition(":")
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=SCRAPE_TIMEOUT_S)
    try:
        conn.request("GET", "/metrics", headers={"Accept": "text/plain;version=0.0.4"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, parsed by prometheus-client's text parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict, name: str, **labels) -> float:
    return parsed[(name, tuple(sorted(labels.items())))]


def test_leader_metrics_after_transfers_parse_and_hold(metrics_cluster):
    c = metrics_cluster
    leader = c.leader()
    with member_client(c.directory, "bank-a") as bank:
        base = 7_000_000
        assert {r.result for r in bank.create_accounts(
            [Account(id=base + 1, ledger=840, code=1), Account(id=base + 2, ledger=840, code=1)])} == {AR.ok}
        for n in range(1, TRANSFERS + 1):
            [r] = bank.create_transfers([Transfer(id=base + 100 + n, debit_account_id=base + 1,
                                                  credit_account_id=base + 2, amount=n, ledger=840, code=1)])
            assert r.result is TR.ok
        # One more event result code: an existing id with other fields.
        [r] = bank.create_transfers([Transfer(id=base + 101, debit_account_id=base + 1, credit_account_id=base + 2,
                                              amount=999, ledger=840, code=1)])
        assert r.result is not TR.ok

    status, text = scrape(c, leader, "operator")
    assert status == 200
    m = samples(text)
    print(text)  # the sample the report quotes (pytest -s)
    assert "_created" not in text
    names = {name for name, _ in m}
    assert all(has_unit(n) for n in names), sorted(n for n in names if not has_unit(n))

    assert value(m, "ledger_raft_role_state", role="leader") == 1
    assert value(m, "ledger_raft_role_state", role="follower") == 0
    commit = value(m, "ledger_raft_commit_index_entries")
    applied = value(m, "ledger_raft_applied_index_entries")
    assert commit >= applied > 0
    assert value(m, "ledger_raft_apply_lag_entries") == commit - applied
    assert value(m, "ledger_raft_term_total") >= 1
    assert value(m, "ledger_raft_log_entries") > 0
    assert value(m, "ledger_chain_height_blocks") >= TRANSFERS + 1
    assert value(m, "ledger_rocksdb_size_bytes") > 0
    assert value(m, "ledger_membership_state", membership="voter") == 1
    assert value(m, "ledger_validator_set_validators", membership="voter") == 3
    # Every transfer counted: ok ones and the one refused with its code.
    assert value(m, "ledger_event_results_total", operation="create_transfers", result="ok") >= TRANSFERS
    refused = [v for (n, labels), v in m.items() if n == "ledger_event_results_total"
               and dict(labels)["operation"] == "create_transfers" and dict(labels)["result"] != "ok"]
    assert sum(refused) >= 1
    assert value(m, "ledger_transactions_total", operation="create_transfers", result="accepted") >= TRANSFERS + 1
    assert value(m, "ledger_raft_proposals_total", result="committed") >= TRANSFERS + 2
    # Transfers per entry: every one of the TRANSFERS + 1 one-transfer Submits in some entry.
    assert value(m, "ledger_batch_size_transfers_sum") >= TRANSFERS + 1
    assert value(m, "ledger_batch_size_transfers_count") >= TRANSFERS + 2
    # Commit latency: one sample per Submit that proposed, all within the largest finite bucket.
    count = value(m, "ledger_commit_latency_seconds_count")
    assert count >= TRANSFERS + 2
    assert 0 < value(m, "ledger_commit_latency_seconds_sum") < count * 10
    assert value(m, "ledger_commit_latency_seconds_bucket", le="+Inf") == count
    assert value(m, "ledger_grpc_calls_total", method="/ledger.v1.LedgerService/Submit", code="OK") >= TRANSFERS + 2


def test_followers_report_their_role_and_apply(metrics_cluster):
    c = metrics_cluster
    leader = c.leader()
    for vid in c.followers(leader):
        status, text = scrape(c, vid, "operator")
        assert status == 200
        m = samples(text)
        assert value(m, "ledger_raft_role_state", role="follower") == 1
        assert value(m, "ledger_raft_role_state", role="leader") == 0
        assert value(m, "ledger_raft_commit_index_entries") >= value(m, "ledger_raft_applied_index_entries") > 0


def test_a_validator_certificate_may_scrape(metrics_cluster):
    c = metrics_cluster
    status, text = scrape(c, "v1", "v2")
    assert status == 200 and "ledger_raft_term_total" in text


@pytest.mark.parametrize("identity", ["bank-a", "auditor"])
def test_members_and_the_auditor_are_refused(metrics_cluster, identity):
    c = metrics_cluster
    status, text = scrape(c, "v1", identity)
    assert status == 403
    assert "ledger_" not in text  # nothing of the metrics leaks in the refusal
    # The refusal is itself counted (seen by the operator).
    _, text = scrape(c, "v1", "operator")
    assert value(samples(text), "ledger_metrics_refusals_total", reason="identity") >= 1


def test_a_client_without_a_certificate_fails_the_handshake(metrics_cluster):
    c = metrics_cluster
    with pytest.raises((ssl.SSLError, ConnectionError)):
        scrape(c, "v1", None)


def test_plain_http_gets_no_metrics(metrics_cluster):
    c = metrics_cluster
    host, _, port = metrics_address(c, "v1").rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=SCRAPE_TIMEOUT_S)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read()
    except (http.client.HTTPException, OSError):
        return  # the TLS server dropped the connection
    finally:
        conn.close()
    assert resp.status != 200 and b"ledger_" not in body


def _json_lines(path: str) -> list[dict]:
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"{path}: not a JSON line: {line!r}") from None
    return parsed


def test_json_logs_parse_and_record_role_and_term_changes(metrics_cluster):
    """Last in the module: it stops the leader. Every line of every validator's log is one
    JSON object with time, level, logger, message and validator_id; the new leader logged
    "raft role candidate -> leader in term T" and "raft term S -> T", and its metrics agree."""
    c = metrics_cluster
    old = c.leader()
    c.local.stop(old)
    new = c.leader(timeout_s=ELECTION_TIMEOUT_S, exclude=(old,))
    _, text = scrape(c, new, "operator")
    term = int(value(samples(text), "ledger_raft_term_total"))
    assert value(samples(text), "ledger_raft_role_state", role="leader") == 1
    deadline = time.monotonic() + 10
    while True:
        records = {vid: _json_lines(c.local.log_path(vid)) for vid in c.addresses}
        messages = [r["message"] for r in records[new]]
        if f"raft role candidate -> leader in term {term}" in messages or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for vid, recs in records.items():
        assert recs, f"{vid} logged nothing"
        for r in recs:
            assert {"time", "level", "logger", "message", "validator_id"} <= r.keys(), r
            assert r["validator_id"] == vid
    assert f"raft role candidate -> leader in term {term}" in messages, messages[-30:]
    assert any(m.startswith("raft term ") and m.endswith(f"-> {term}") for m in messages), messages[-30:]
    # The first election: some validator led term >= 1 before (its line names the term).
    assert any(m.startswith("raft role candidate -> leader in term ") for r in records.values()
               for m in (x["message"] for x in r) if r is not records[new])
