"""A validator's Prometheus metrics (``prometheus-client``) and the operator-only endpoint serving them.

Every name carries its unit (Prometheus naming guide, "Metric and label naming"):
``_seconds``, ``_bytes``, ``_total`` for counters, and for counted things the thing
(``_entries`` of the Raft log, ``_blocks``, ``_transfers``, ``_validators``); a 0/1
gauge of one state among several (OpenMetrics' StateSet) ends in ``_state``.

==============================================  =========  ==================================================
metric                                          type       what (labels)
==============================================  =========  ==================================================
ledger_raft_role_state                          gauge      1 for this validator's Raft role, 0 for the others
                                                           (``role``: follower, candidate, leader)
ledger_raft_term_total                          counter    the current Raft term (terms begun)
ledger_raft_commit_index_entries                gauge      Raft commit index
ledger_raft_applied_index_entries               gauge      Raft lastApplied (counts pysyncobj's no-op entries)
ledger_raft_apply_lag_entries                   gauge      commit index - applied index
ledger_raft_log_entries                         gauge      entries in the Raft journal (drops at compaction)
ledger_raft_snapshot_age_seconds                gauge      age of the snapshot file (absent: no snapshot yet)
ledger_chain_height_blocks                      gauge      height of the chain head in RocksDB
ledger_rocksdb_size_bytes                       gauge      bytes on disk of the RocksDB directory (recomputed
                                                           at most every ``DB_SIZE_PERIOD_S``)
ledger_membership_state                         gauge      1 for this validator's membership (``membership``:
                                                           voter, learner)
ledger_validator_set_validators                 gauge      validators in the governed set (``membership``)
ledger_raft_proposals_total                     counter    entries the batcher proposed, by outcome (``result``:
                                                           committed, or pysyncobj's FAIL_REASON in lower case)
ledger_transactions_total                       counter    transactions answered by Submit after commit
                                                           (``operation``; ``result``: accepted or the
                                                           TxRejection name)
ledger_event_results_total                      counter    events of those transactions by result code
                                                           (``operation``; ``result``: the CreateAccountResult
                                                           / CreateTransferResult name, ``ok`` included)
ledger_batch_size_transfers                     histogram  transfers per proposed Raft entry (every entry)
ledger_commit_latency_seconds                   histogram  Submit received -> results (committed and applied),
                                                           for Submits that proposed something
ledger_grpc_calls_total                         counter    finished gRPC calls (``method``
                                                           ``/package.Service/Method``, ``unknown`` for a
                                                           method no handler serves; ``code``: status name)
ledger_signature_verification_failures_total    counter    envelopes refused at ingress by the verifier
                                                           (``reason``: bad_signature, unknown_key,
                                                           key_not_permitted)
ledger_rate_limit_refusals_total                counter    Submits refused by a member's token bucket
                                                           (``member``: bounded by the member registry)
ledger_metrics_refusals_total                   counter    scrapes of this endpoint refused (``reason``)
==============================================  =========  ==================================================

The gauges that read the replica are computed when Prometheus scrapes
(:class:`ReplicaCollector`), never on the apply path: a scrape reads the replica's
typed ``status()`` (plain attribute reads of pysyncobj, in the scraping thread: the
Raft tick thread does no work for it), stats two paths, and walks the RocksDB
directory at most once per ``DB_SIZE_PERIOD_S``. The counters and histograms are
incremented where the event happens (ingress, batcher, servicers), on a lock of
their own; none is on the tick thread.

The endpoint (:class:`MetricsServer`, config ``metrics_listen_address``) is HTTPS
with mutual TLS: the client must present a certificate of the cluster CA (the TLS
handshake refuses any other before a byte of HTTP is read), and the identity that
certificate names must be admitted by ``authorise`` (the composition root admits
the ``operator`` role and the validators' pinned certificates; a member bank's or
the auditor's certificate is answered 403). prometheus-client's own
``start_http_server`` can require a client certificate but cannot tell an operator
from a member, so this module serves ``generate_latest`` from its own small
``http.server``. A development cluster without TLS (``insecure_plaintext``) serves
plain HTTP, and only on a loopback address: any other is refused at start-up
(:class:`MetricsConfigError`). Bounds: ``METRICS_CONNECTIONS_MAX`` connections at
once (more are closed unanswered), ``METRICS_IO_TIMEOUT_S`` for the handshake and
the request, only ``GET /metrics``.
"""
from __future__ import annotations

import http.server
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from collections import Counter as _Tally
from typing import Callable, Iterable

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from raft_ledger_node.ledger import limits
from raft_ledger_node.ledger.governance import TxRejection
from raft_ledger_node.ledger.types import CreateAccountResult, CreateTransferResult

log = logging.getLogger("ledger.metrics")

# prometheus-client also exports a ``<name>_created`` timestamp gauge per counter and
# histogram: it doubles every scrape and names no unit. Off for the process (a validator).
disable_created_metrics()

#: Raft roles as ReplicaStatus names them; every one is exported (0 or 1).
RAFT_ROLES = ("follower", "candidate", "leader")
MEMBERSHIPS = ("voter", "learner")
#: Seconds between two walks of the RocksDB directory (a scrape between reuses the last size).
DB_SIZE_PERIOD_S = 5.0
#: Scrapes served at once; a further connection is closed at accept.
METRICS_CONNECTIONS_MAX = 4
#: Seconds a client has for the TLS handshake, and then for each read or write.
METRICS_IO_TIMEOUT_S = 5.0
#: Transfers per entry buckets: powers of two-ish up to a full block.
BATCH_TRANSFERS_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, limits.block_events_max)
#: Commit latency buckets (seconds): a local cluster commits in ~2-20 ms, a WAN one in ~100 ms.
COMMIT_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
#: Suffixes a metric name may end with (tests/unit/test_metrics.py checks every one).
UNIT_SUFFIXES = ("_seconds", "_bytes", "_total", "_entries", "_blocks", "_transfers", "_validators", "_state")
#: What a histogram adds to its name in the exposition.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def has_unit(sample_name: str) -> bool:
    """Whether an exposed sample name (histogram parts included) ends with its unit."""
    for suffix in HISTOGRAM_SUFFIXES:
        if sample_name.endswith(suffix):
            sample_name = sample_name[: -len(suffix)]
            break
    return sample_name.endswith(UNIT_SUFFIXES)


class MetricsConfigError(ValueError):
    """``metrics_listen_address`` is malformed, not loopback without TLS, or cannot be bound."""


class LedgerMetrics:
    """The counters and histograms of one validator, in a registry of its own (so several
    validators in one test process do not mix). Thread-safe (prometheus-client's locks).

    ``registry`` also receives the scrape-time :class:`ReplicaCollector` (``register``).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.proposals = Counter("ledger_raft_proposals", "Raft entries proposed by the batcher, by outcome",
                                 ["result"], registry=r)
        self.transactions = Counter("ledger_transactions", "Transactions answered by Submit after commit, by result",
                                    ["operation", "result"], registry=r)
        self.event_results = Counter("ledger_event_results", "Events of committed transactions by result code",
                                     ["operation", "result"], registry=r)
        self.batch_transfers = Histogram("ledger_batch_size_transfers", "Transfers per proposed Raft entry",
                                         buckets=BATCH_TRANSFERS_BUCKETS, registry=r)
        self.commit_latency = Histogram("ledger_commit_latency_seconds",
                                        "Submit received to results (committed and applied), seconds",
                                        buckets=COMMIT_LATENCY_BUCKETS, registry=r)
        self.grpc_calls = Counter("ledger_grpc_calls", "Finished gRPC calls by method and status code",
                                  ["method", "code"], registry=r)
        self.signature_failures = Counter("ledger_signature_verification_failures",
                                          "Envelopes refused at ingress by signature verification",
                                          ["reason"], registry=r)
        self.rate_limit_refusals = Counter("ledger_rate_limit_refusals", "Submits refused by a member's rate limit",
                                           ["member"], registry=r)
        self.scrape_refusals = Counter("ledger_metrics_refusals", "Scrapes of the metrics endpoint refused",
                                       ["reason"], registry=r)

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def proposal(self, result: str) -> None:
        self.proposals.labels(result).inc()

    def batch(self, transfers: int) -> None:
        self.batch_transfers.observe(transfers)

    def submitted(self, txs, results, latency_s: float) -> None:
        """Count one Submit's committed transactions: ``txs`` (objects with ``operation``,
        an IntEnum) and ``results`` (with ``rejection`` and per-event ``codes``, ints), and
        observe its latency in seconds."""
        enums = {"create_accounts": CreateAccountResult, "create_transfers": CreateTransferResult}
        txs_by: _Tally = _Tally()
        events_by: _Tally = _Tally()
        for tx, r in zip(txs, results):
            op = tx.operation.name
            txs_by[(op, _name(TxRejection, r.rejection) if r.rejection else "accepted")] += 1
            enum = enums.get(op)
            if enum is not None and not r.rejection:
                for code, n in _Tally(r.codes).items():
                    events_by[(op, _name(enum, code))] += n
        for labels, n in txs_by.items():
            self.transactions.labels(*labels).inc(n)
        for labels, n in events_by.items():
            self.event_results.labels(*labels).inc(n)
        self.commit_latency.observe(latency_s)

    def signature_failure(self, reason: str) -> None:
        self.signature_failures.labels(reason).inc()

    def rate_limited(self, member: str) -> None:
        self.rate_limit_refusals.labels(member).inc()


def _name(enum, code: int) -> str:
    try:
        return enum(code).name
    except ValueError:
        return str(code)


#: For components built without a validator (unit tests, tools): counts go nowhere anyone scrapes.
UNREGISTERED = LedgerMetrics()


def directory_bytes(path: str) -> int:
    """Bytes of the regular files under ``path`` (st_size, symlinks not followed); 0 if missing.
    Files that vanish while walking (RocksDB compactions) are skipped."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


class ReplicaCollector(Collector):
    """The scrape-time gauges (see the module table), from callables the composition root passes:

    ``status()`` -> an object with ``role`` (str), ``term``, ``commit_index``, ``last_applied``,
    ``log_size`` (ints): the replica's typed ``status()``; ``head_height()`` -> int;
    ``membership()`` -> "voter" | "learner"; ``configuration()`` -> the governed configuration
    (``validators`` with ``voting``) or None; ``db_path`` and ``snapshot_file`` are paths.
    ``clock`` is wall-clock seconds (the snapshot's mtime is wall-clock too).
    A callable that raises leaves its metrics out of that scrape (logged at debug).
    """

    def __init__(self, *, status: Callable, head_height: Callable[[], int], membership: Callable[[], str],
                 configuration: Callable, db_path: str, snapshot_file: str,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._status = status
        self._head_height = head_height
        self._membership = membership
        self._configuration = configuration
        self._db_path = db_path
        self._snapshot_file = snapshot_file
        self._clock = clock
        self._monotonic = monotonic
        self._db_lock = threading.Lock()
        self._db_size: tuple[float, int] | None = None  # (monotonic time measured, bytes)

    def describe(self) -> Iterable:
        return []  # the registry must not call collect() at registration (it reads the replica)

    def db_size(self) -> int:
        """The RocksDB directory's size in bytes, walked at most once per DB_SIZE_PERIOD_S."""
        with self._db_lock:
            now = self._monotonic()
            if self._db_size is None or now - self._db_size[0] >= DB_SIZE_PERIOD_S:
                self._db_size = (now, directory_bytes(self._db_path))
            return self._db_size[1]

    def collect(self) -> Iterable:
        try:
            st = self._status()
        except Exception:  # e.g. a dict changed size while pysyncobj's status was read: skip once
            log.debug("replica status unavailable for a scrape", exc_info=True)
            st = None
        if st is not None:
            role = GaugeMetricFamily("ledger_raft_role_state", "1 for this validator's Raft role", labels=["role"])
            for r in RAFT_ROLES:
                role.add_metric([r], 1.0 if st.role == r else 0.0)
            yield role
            yield CounterMetricFamily("ledger_raft_term", "Current Raft term (terms begun)", value=st.term)
            yield GaugeMetricFamily("ledger_raft_commit_index_entries", "Raft commit index", value=st.commit_index)
            yield GaugeMetricFamily("ledger_raft_applied_index_entries", "Raft last applied index",
                                    value=st.last_applied)
            yield GaugeMetricFamily("ledger_raft_apply_lag_entries", "Raft commit index minus applied index",
                                    value=max(0, st.commit_index - st.last_applied))
            yield GaugeMetricFamily("ledger_raft_log_entries", "Entries in the Raft journal", value=st.log_size)
        try:
            age = max(0.0, self._clock() - os.stat(self._snapshot_file).st_mtime)
        except OSError:
            age = None
        if age is not None:
            yield GaugeMetricFamily("ledger_raft_snapshot_age_seconds", "Age of the Raft snapshot file, seconds",
                                    value=age)
        try:
            yield GaugeMetricFamily("ledger_chain_height_blocks", "Height of the chain head",
                                    value=self._head_height())
        except Exception:
            log.debug("head height unavailable for a scrape", exc_info=True)
        yield GaugeMetricFamily("ledger_rocksdb_size_bytes", "Bytes on disk of the RocksDB directory",
                                value=self.db_size())
        try:
            mine = self._membership()
            cfg = self._configuration()
        except Exception:
            log.debug("membership unavailable for a scrape", exc_info=True)
            return
        member = GaugeMetricFamily("ledger_membership_state", "1 for this validator's membership",
                                   labels=["membership"])
        for m in MEMBERSHIPS:
            member.add_metric([m], 1.0 if mine == m else 0.0)
        yield member
        validators = GaugeMetricFamily("ledger_validator_set_validators", "Validators in the governed set",
                                       labels=["membership"])
        records = cfg.validators if cfg is not None else ()
        voters = sum(1 for v in records if v.voting)
        validators.add_metric(["voter"], voters)
        validators.add_metric(["learner"], len(records) - voters)
        yield validators


class GrpcMetricsInterceptor(grpc.ServerInterceptor):
    """Counts every finished call in ``ledger_grpc_calls_total{method, code}``. Put it first
    in the server's interceptors so calls refused by the authorisation interceptor count
    too (PERMISSION_DENIED). Methods no handler serves are labelled ``unknown``, so a caller
    cannot grow the label set. The code is the one the handler set (``context.code()``:
    ``abort``), OK when it returned, UNKNOWN when it raised without a status."""

    def __init__(self, metrics: LedgerMetrics) -> None:
        self._metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            self._metrics.grpc_calls.labels("unknown", "UNIMPLEMENTED").inc()
            return None
        counter = self._metrics.grpc_calls
        method = handler_call_details.method

        def done(context, default: str) -> None:
            code = context.code()
            counter.labels(method, code.name if isinstance(code, grpc.StatusCode) else default).inc()

        def unary(behaviour):
            def call(request, context):
                try:
                    response = behaviour(request, context)
                except BaseException:
                    done(context, "UNKNOWN")
                    raise
                done(context, "OK")
                return response
            return call

        def streaming(behaviour):
            def stream(request, context):
                try:
                    yield from behaviour(request, context)
                except GeneratorExit:
                    done(context, "CANCELLED")
                    raise
                except BaseException:
                    done(context, "UNKNOWN")
                    raise
                done(context, "OK")
            return stream

        ser = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **ser)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **ser)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **ser)
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **ser)


# -- the endpoint -------------------------------------------------------------------------------


def parse_listen_address(address: str, *, tls: bool) -> tuple[str, int]:
    """``host:port`` -> (host, port). Without TLS the host must be a loopback address
    (``127.0.0.0/8``, ``::1`` or ``localhost``). Raises MetricsConfigError."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MetricsConfigError(f"metrics_listen_address must be host:port, not {address!r}")
    if not tls:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise MetricsConfigError(
                f"metrics_listen_address {address} is not a loopback address, and this validator has no TLS "
                "(insecure_plaintext) to authenticate scrapers: bind it to 127.0.0.1, or run with TLS "
                "(the endpoint then requires an operator's client certificate)")
    return host, int(port)


def server_ssl_context(*, cert_file: str, key_file: str, ca_pem: bytes) -> ssl.SSLContext:
    """TLS 1.2+ server context requiring a client certificate issued by ``ca_pem``.
    Raises MetricsConfigError when the files do not load."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(cert_file, key_file)
        ctx.load_verify_locations(cadata=ca_pem.decode())
    except (OSError, ssl.SSLError, ValueError) as e:
        raise MetricsConfigError(f"metrics endpoint TLS: cannot load the certificate, key or CA: {e}") from e
    return ctx


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"
    timeout = METRICS_IO_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.request.settimeout(METRICS_IO_TIMEOUT_S)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # raises on a client without a certificate of the CA
        super().setup()

    def do_GET(self) -> None:  # noqa: N802
        owner = self.server.owner
        if self.path.split("?", 1)[0] != "/metrics":
            self._answer(404, b"only /metrics is served here\n")
            return
        if isinstance(self.request, ssl.SSLSocket):
            der = self.request.getpeercert(binary_form=True)
            who = owner.authorise(der) if der else None
            if who is None:
                owner.metrics.scrape_refusals.labels("identity").inc()
                self._answer(403, b"this client certificate may not read metrics (operator or validator only)\n")
                return
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        body = encoder(owner.metrics.registry)
        self._answer(200, body, content_type)

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format, *args) -> None:  # noqa: A002 - http.server's signature
        log.debug("metrics %s: " + format, self.address_string(), *args)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, owner: "MetricsServer", family: int) -> None:
        self.address_family = family
        self.owner = owner
        self._slots = threading.BoundedSemaphore(METRICS_CONNECTIONS_MAX)
        super().__init__(address, _Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.owner.ssl_context is not None:
            # The handshake runs in the connection's thread (with its timeout), not here.
            sock = self.owner.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.owner.metrics.scrape_refusals.labels("busy").inc()
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        # A refused handshake or a client that timed out: expected, not a traceback.
        self.owner.metrics.scrape_refusals.labels("tls").inc()
        log.debug("metrics connection from %s failed", client_address, exc_info=True)


class MetricsServer:
    """Serves ``GET /metrics`` of ``metrics`` on ``address`` (see the module docstring).

    ``ssl_context`` None: plain HTTP, and then ``address`` must be loopback.
    ``authorise(certificate_der) -> str | None`` names the admitted caller (None: 403).
    Raises MetricsConfigError if the address is malformed, not loopback without TLS, or
    cannot be bound. ``start()`` serves in a daemon thread; ``stop()`` closes the socket.
    """

    def __init__(self, address: str, metrics: LedgerMetrics, *, ssl_context: ssl.SSLContext | None,
                 authorise: Callable[[bytes], str | None] | None = None) -> None:
        host, port = parse_listen_address(address, tls=ssl_context is not None)
        self.metrics = metrics
        self.ssl_context = ssl_context
        self.authorise = authorise or (lambda der: None)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._server = _Server((host, port), self, family)
        except OSError as e:
            raise MetricsConfigError(f"cannot bind the metrics address {address}: {e}") from e
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics served on %s://%s/metrics%s", "https" if self.ssl_context else "http", self.address,
                 " (mutual TLS: operator or validator certificates)" if self.ssl_context else " (loopback only)")

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
