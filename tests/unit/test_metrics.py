"""Metrics (node/metrics.py), the Grafana dashboard built on them, and JSON logs (node/logs.py).

Exposition is produced by prometheus-client's own ``generate_latest`` and read back
with its text parser, as Prometheus' scrape loop reads text format 0.0.4. The
scrape-time gauges read real values: a ReplicaStatus, the governed Configuration of
a generated genesis, a directory on disk. The endpoint itself, over mutual TLS
against running validators, is tests/integration/test_metrics_endpoint.py.
"""
from __future__ import annotations

import io
import json
import logging
import os
import pathlib
import re

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from helpers import account, accounts_tx, transfer, transfers_tx
from raft_ledger_node import logs
from raft_ledger_node.batcher import Batcher, Submission
from raft_ledger_node.config import ConfigError, load_config, load_genesis
from raft_ledger_node.ledger.governance import TxRejection
from raft_ledger_node.ledger.types import CreateTransferResult, TxResult
from raft_ledger_node.localcluster import METRICS_PORT_OFFSET, cluster_port_offsets, init_cluster
from raft_ledger_node.metrics import (
    DB_SIZE_PERIOD_S,
    LedgerMetrics,
    MetricsConfigError,
    MetricsServer,
    ReplicaCollector,
    directory_bytes,
    has_unit,
    parse_listen_address,
)
from raft_ledger_node.raft.durable import ReplicaStatus

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "ledger-dashboard.json"
WAIT_S = 10.0
EXPORTED = (
    "ledger_raft_role_state", "ledger_raft_term_total", "ledger_raft_commit_index_entries",
    "ledger_raft_applied_index_entries", "ledger_raft_apply_lag_entries", "ledger_raft_log_entries",
    "ledger_raft_snapshot_age_seconds", "ledger_chain_height_blocks", "ledger_rocksdb_size_bytes",
    "ledger_membership_state", "ledger_validator_set_validators", "ledger_raft_proposals_total",
    "ledger_transactions_total", "ledger_event_results_total", "ledger_batch_size_transfers",
    "ledger_commit_latency_seconds", "ledger_grpc_calls_total", "ledger_signature_verification_failures_total",
    "ledger_rate_limit_refusals_total", "ledger_metrics_refusals_total",
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def genesis_configuration(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("c"))
    made = init_cluster(d, 3, ["bank-a"], "127.0.0.1", 27_700)
    return made, load_genesis(made.genesis_path).configuration


def _collector(tmp_path, configuration, *, role="leader", commit=10, applied=7, clock=None, monotonic=None):
    db = tmp_path / "db"
    db.mkdir(exist_ok=True)
    (db / "000001.sst").write_bytes(b"x" * 1000)
    (db / "sub").mkdir(exist_ok=True)
    (db / "sub" / "LOG").write_bytes(b"y" * 24)
    snap = tmp_path / "snapshot"
    snap.write_bytes(b"s")
    os.utime(snap, (1000.0, 1000.0))
    st = ReplicaStatus(role=role, term=7, commit_index=commit, last_applied=applied, leader_address=None, ready=True,
                       log_size=42)
    return ReplicaCollector(status=lambda: st, head_height=lambda: 5, membership=lambda: "voter",
                            configuration=lambda: configuration, db_path=str(db), snapshot_file=str(snap),
                            clock=clock or Clock(1030.0), monotonic=monotonic or Clock(0.0))


def _samples(metrics: LedgerMetrics) -> dict[tuple[str, tuple], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _exercised(tmp_path, configuration) -> LedgerMetrics:
    """A registry with every metric holding at least one sample."""
    m = LedgerMetrics()
    m.register(_collector(tmp_path, configuration))
    m.proposal("committed")
    m.batch(3)
    m.signature_failure("bad_signature")
    m.rate_limited("bank-a")
    m.grpc_calls.labels("/ledger.v1.LedgerService/Submit", "OK").inc()
    m.scrape_refusals.labels("identity").inc()
    tx = transfers_tx(transfer(1, 1, 2, 5))
    m.submitted([tx], [TxResult(tx.tx_hash, 3, (0,))], 0.004)
    return m


def test_every_exported_sample_names_its_unit(tmp_path, genesis_configuration):
    s = _samples(_exercised(tmp_path, genesis_configuration[1]))
    names = {n for n, _ in s}
    # The module docstring's table, exactly.
    assert {re.sub(r"_(bucket|sum|count)$", "", n) for n in names} == set(EXPORTED)
    assert not [n for n in names if not has_unit(n)]
    assert not [n for n in names if n.endswith("_created")]  # disable_created_metrics


def test_scrape_time_gauges_read_the_status_the_set_and_the_disk(tmp_path, genesis_configuration):
    m = LedgerMetrics()
    m.register(_collector(tmp_path, genesis_configuration[1], role="leader", commit=10, applied=7))
    s = _samples(m)
    assert s[("ledger_raft_role_state", (("role", "leader"),))] == 1
    assert s[("ledger_raft_role_state", (("role", "follower"),))] == 0
    assert s[("ledger_raft_role_state", (("role", "candidate"),))] == 0
    assert s[("ledger_raft_term_total", ())] == 7
    assert s[("ledger_raft_commit_index_entries", ())] == 10
    assert s[("ledger_raft_applied_index_entries", ())] == 7
    assert s[("ledger_raft_apply_lag_entries", ())] == 3
    assert s[("ledger_raft_log_entries", ())] == 42
    assert s[("ledger_raft_snapshot_age_seconds", ())] == 30.0
    assert s[("ledger_chain_height_blocks", ())] == 5
    assert s[("ledger_rocksdb_size_bytes", ())] == 1024
    assert s[("ledger_membership_state", (("membership", "voter"),))] == 1
    assert s[("ledger_validator_set_validators", (("membership", "voter"),))] == 3
    assert s[("ledger_validator_set_validators", (("membership", "learner"),))] == 0


def test_no_snapshot_file_leaves_the_age_out(tmp_path, genesis_configuration):
    c = _collector(tmp_path, genesis_configuration[1])
    os.unlink(tmp_path / "snapshot")
    m = LedgerMetrics()
    m.register(c)
    assert not [n for n, _ in _samples(m) if n == "ledger_raft_snapshot_age_seconds"]


def test_rocksdb_size_is_walked_at_most_once_per_period(tmp_path, genesis_configuration):
    mono = Clock(100.0)
    c = _collector(tmp_path, genesis_configuration[1], monotonic=mono)
    assert c.db_size() == 1024
    (tmp_path / "db" / "000002.sst").write_bytes(b"z" * 976)
    mono.now += DB_SIZE_PERIOD_S / 2
    assert c.db_size() == 1024  # cached
    mono.now += DB_SIZE_PERIOD_S
    assert c.db_size() == 2000
    assert directory_bytes(str(tmp_path / "missing")) == 0


def test_a_status_that_raises_leaves_the_raft_gauges_out_of_that_scrape(tmp_path, genesis_configuration):
    c = _collector(tmp_path, genesis_configuration[1])

    def broken():
        raise RuntimeError("dictionary changed size during iteration")

    c._status = broken
    m = LedgerMetrics()
    m.register(c)
    names = {n for n, _ in _samples(m)}
    assert "ledger_raft_commit_index_entries" not in names
    assert "ledger_rocksdb_size_bytes" in names


def test_submitted_counts_transactions_and_events_by_code():
    m = LedgerMetrics()
    ok = transfers_tx(transfer(1, 1, 2, 5), transfer(2, 1, 2, 6), nonce=1)
    bad = transfers_tx(transfer(3, 1, 2, 5), nonce=2)
    refused = accounts_tx(account(9), nonce=3)
    m.submitted([ok, bad, refused], [
        TxResult(ok.tx_hash, 4, (0, int(CreateTransferResult.exceeds_credits))),
        TxResult(bad.tx_hash, 4, (int(CreateTransferResult.exists),)),
        TxResult(refused.tx_hash, 4, (), int(TxRejection.signer_role_not_permitted)),
    ], 0.012)
    s = _samples(m)
    tx = lambda op, r: s[("ledger_transactions_total", (("operation", op), ("result", r)))]  # noqa: E731
    ev = lambda op, r: s[("ledger_event_results_total", (("operation", op), ("result", r)))]  # noqa: E731
    assert tx("create_transfers", "accepted") == 2
    assert tx("create_accounts", "signer_role_not_permitted") == 1
    assert ev("create_transfers", "ok") == 1
    assert ev("create_transfers", "exceeds_credits") == 1
    assert ev("create_transfers", "exists") == 1
    assert not [k for k in s if k[0] == "ledger_event_results_total" and ("operation", "create_accounts") in k[1]]
    assert s[("ledger_commit_latency_seconds_count", ())] == 1
    assert s[("ledger_commit_latency_seconds_bucket", (("le", "0.02"),))] == 1
    assert s[("ledger_commit_latency_seconds_bucket", (("le", "0.01"),))] == 0


def test_the_batcher_observes_transfers_per_entry_and_each_outcome():
    m = LedgerMetrics()
    outcomes = iter([0, 5])  # SUCCESS, then LEADER_CHANGED

    def propose(entry, decoded, callback):
        err = next(outcomes)
        callback([TxResult(t.tx_hash, 1, (0,) * len(t.events)) for t in decoded.txs] if err == 0 else None, err)

    b = Batcher(propose, inflight_entries_max=1, metrics=m)
    b.start()
    try:
        first = Submission(txs=[transfers_tx(transfer(1, 1, 2, 1), transfer(2, 1, 2, 1), nonce=1)])
        b.submit(first)
        assert first.done.wait(WAIT_S) and first.error is None
        second = Submission(txs=[accounts_tx(account(5), nonce=2)])
        b.submit(second)
        assert second.done.wait(WAIT_S) and second.error is not None
    finally:
        b.stop()
    s = _samples(m)
    assert s[("ledger_raft_proposals_total", (("result", "committed"),))] == 1
    assert s[("ledger_raft_proposals_total", (("result", "leader_changed"),))] == 1
    assert s[("ledger_batch_size_transfers_count", ())] == 2
    assert s[("ledger_batch_size_transfers_sum", ())] == 2
    assert s[("ledger_batch_size_transfers_bucket", (("le", "0.0"),))] == 1


# -- the endpoint's address rule -------------------------------------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0:9464", "10.1.2.3:9464", "ledger.example:9464", "[::]:9464"])
def test_without_tls_only_a_loopback_address_is_accepted(address):
    with pytest.raises(MetricsConfigError, match="not a loopback address"):
        MetricsServer(address, LedgerMetrics(), ssl_context=None)


@pytest.mark.parametrize("address", ["9464", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000", ":9464"])
def test_a_malformed_address_is_refused(address):
    with pytest.raises(MetricsConfigError, match="host:port"):
        parse_listen_address(address, tls=True)


def test_loopback_and_tls_addresses_parse():
    assert parse_listen_address("127.0.0.1:9464", tls=False) == ("127.0.0.1", 9464)
    assert parse_listen_address("[::1]:9464", tls=False) == ("::1", 9464)
    assert parse_listen_address("localhost:9464", tls=False) == ("localhost", 9464)
    assert parse_listen_address("0.0.0.0:9464", tls=True) == ("0.0.0.0", 9464)


# -- the dashboard ---------------------------------------------------------------------------


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_is_a_current_grafana_dashboard_with_a_prometheus_datasource_variable():
    d = json.loads(DASHBOARD.read_text())
    assert d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = [v for v in variables.values() if v["type"] == "datasource"]
    assert len(ds) == 1 and ds[0]["query"] == "prometheus"
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${%s}" % ds[0]["name"], p["title"]
        assert p["targets"], p["title"]
    assert len({p["id"] for p in d["panels"]}) == len(d["panels"])


def test_every_dashboard_expression_names_exported_metrics_and_every_metric_is_shown(tmp_path, genesis_configuration):
    exported = {n for n, _ in _samples(_exercised(tmp_path, genesis_configuration[1]))}
    d = json.loads(DASHBOARD.read_text())
    used = set()
    for expr in _exprs(d) + [v["definition"] for v in d["templating"]["list"] if v.get("definition")]:
        names = set(re.findall(r"\bledger_[a-z0-9_]+", expr))
        assert names, expr
        unknown = names - exported
        assert not unknown, f"{expr}: {sorted(unknown)} are not exported"
        used |= names
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert not families - shown, f"not on the dashboard: {sorted(families - shown)}"


# -- JSON logs ---------------------------------------------------------------------------------


def test_json_logs_are_one_object_per_line_with_the_fields_and_extras():
    out = io.StringIO()
    handler = logs.configure(log_format="json", level="INFO", validator_id="v2", stream=out)
    try:
        logging.getLogger("ledger.service").info("1 of 1 transactions rejected at height %d", 12,
                                                 extra={"height": 12, "tx_hash": "ab" * 32})
        logging.getLogger("ledger.replication").warning("raft role %s -> %s in term %d", "follower", "leader", 7)
        logging.getLogger("ledger.x").debug("not at INFO")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "1 of 1 transactions rejected at height 12"
    assert (first["level"], first["logger"], first["validator_id"]) == ("INFO", "ledger.service", "v2")
    assert first["height"] == 12 and first["tx_hash"] == "ab" * 32
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", first["time"])
    assert second["message"] == "raft role follower -> leader in term 7" and "height" not in second


def test_text_logs_keep_the_usual_line():
    out = io.StringIO()
    handler = logs.configure(log_format="text", validator_id="v1", stream=out)
    try:
        logging.getLogger("ledger.main").warning("hello %s", "there")
    finally:
        logging.getLogger().removeHandler(handler)
    assert re.fullmatch(r"\S+ \S+ WARNING ledger\.main: hello there\n", out.getvalue())


def test_log_format_values_agree_and_an_unknown_one_is_refused(tmp_path, genesis_configuration):
    from raft_ledger_node import config

    assert config.LOG_FORMATS == logs.LOG_FORMATS
    with pytest.raises(ValueError):
        logs.configure(log_format="xml")
    made, _ = genesis_configuration
    path = made.config_paths["v1"]
    doc = json.loads(pathlib.Path(path).read_text())
    assert load_config(path).log_format == "text"
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({**doc, "log_format": "xml", "data_dir": os.path.join(os.path.dirname(path), "data"),
                               "genesis_file": made.genesis_path,
                               "tls_cert_file": os.path.join(os.path.dirname(path), "tls.crt.pem"),
                               "tls_key_file": os.path.join(os.path.dirname(path), "tls.key.pem"),
                               "signing_key_file": os.path.join(os.path.dirname(path), "signing.key.pem")}))
    with pytest.raises(ConfigError, match="log_format"):
        load_config(str(bad))


# -- the generated cluster ---------------------------------------------------------------------


def test_init_cluster_writes_a_metrics_address_per_validator(genesis_configuration):
    made, _ = genesis_configuration
    for i, vid in enumerate(("v1", "v2", "v3"), start=1):
        cfg = load_config(made.config_paths[vid])
        assert cfg.metrics_listen_address == f"127.0.0.1:{27_700 + METRICS_PORT_OFFSET + i}"
    assert cluster_port_offsets(3, metrics=True)[-3:] == [151, 152, 153]
    assert cluster_port_offsets(3) == [1, 2, 3, 101, 102, 103]
