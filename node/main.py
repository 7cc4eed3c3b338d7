"""Composition root: the only module that wires config, store, replica, batcher and gRPC."""
from __future__ import annotations

import functools
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from concurrent import futures
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
from raft_ledger_node.cosigner import Cosigner
from raft_ledger_node.batcher import Batcher
from raft_ledger_node.config import ConfigError, ValidatorConfig, load_genesis
from raft_ledger_node.crypto import Verifier
from raft_ledger_node.ledger import limits
from raft_ledger_node.raft import membership
from raft_ledger_node.raft.conf import make_conf
from raft_ledger_node.raft.membership import MembershipError, Role
from raft_ledger_node.raft.replica import LedgerReplica
from raft_ledger_node.raft.tls import RaftTls, RaftTlsError
from raft_ledger_node.api.authz import Authorizer, AuthzInterceptor
from raft_ledger_node.api.validation import proposal_from_signed_bytes, tx_from_committed
from raft_ledger_node.api.ratelimit import MemberRateLimiter, Rate
from raft_ledger_node.api.server import RateLimitedLog, add_servicer
from raft_ledger_node.api.servicers import AdminServicer, LedgerServicer
from raft_ledger_node.store import RocksStore, StoreError
from raft_ledger_node import integrity, pki
from raft_ledger_node.metrics import (
    GrpcMetricsInterceptor,
    LedgerMetrics,
    MetricsConfigError,
    MetricsServer,
    ReplicaCollector,
    server_ssl_context,
)

log = logging.getLogger("ledger.main")


def _check_bindable(address: str, what: str) -> None:
    """Fail at start, with a message, if ``address`` cannot be bound (pysyncobj would retry silently)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port)))
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot bind the {what} address {address}: {e}. Is another validator running, or is the "
            f"address not one of this host's? Set raft_listen_address in the config to listen elsewhere."
        ) from e


#: Files and directories the validator creates are its own: the journal holds every
#: signed envelope, RocksDB every balance.
VALIDATOR_UMASK = 0o077


def _private_data_dir(data_dir: str) -> None:
    """Directories 0700 and files 0600 from now on (process umask), and the data
    directory itself 0700 even if an older version created it 0755."""
    os.umask(VALIDATOR_UMASK)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    os.chmod(data_dir, 0o700)


class NotAValidatorError(ConfigError):
    """This validator is not in the governed validator set (never added, or removed): it does not start."""


def _raft_tls(cfg: ValidatorConfig, genesis, validators) -> RaftTls | None:
    """The Raft links' TLS (mutual, pinned to genesis), or None with a loud warning in development."""
    if cfg.insecure_plaintext:
        log.warning("Raft links are PLAINTEXT (insecure_plaintext): only the Raft password protects them; "
                    "never use this outside development")
        return None
    if genesis.tls_ca_pem is None:
        raise ConfigError("genesis has no tls_ca_certificate: Raft TLS needs it (or set insecure_plaintext for development)")
    try:
        return RaftTls.load(cert_file=cfg.tls_cert_file, key_file=cfg.tls_key_file, ca_pem=genesis.tls_ca_pem,
                            validators=validators, self_id=cfg.validator_id)
    except RaftTlsError as e:
        raise ConfigError(str(e)) from e


#: Logged at start by a validator configured with ``insecure_plaintext``.
PLAINTEXT_WARNING = (
    "!!! validator %s serves gRPC IN PLAINTEXT (insecure_plaintext): no TLS, no caller identity; every "
    "caller may read every account and call Admin. Development only: never where a member can connect. !!!"
)


def _tls_pair(cfg: ValidatorConfig) -> tuple[bytes, bytes]:
    """The validator's TLS key and certificate (PEM). Raises ConfigError if unreadable."""
    try:
        with open(cfg.tls_key_file, "rb") as f:
            key = f.read()
        with open(cfg.tls_cert_file, "rb") as f:
            cert = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read the validator's TLS key or certificate: {e}") from e
    return key, cert


def _channel_credentials(cfg: ValidatorConfig, ca_pem: bytes | None) -> grpc.ChannelCredentials | None:
    """Client credentials of this validator's certificate for calls to its peers (None in plaintext)."""
    if cfg.insecure_plaintext:
        return None
    key, cert = _tls_pair(cfg)
    return grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key, certificate_chain=cert)


def _server_credentials(cfg: ValidatorConfig, ca_pem: bytes | None) -> grpc.ServerCredentials:
    """Mutual TLS: the validator's key and certificate, client certificates required and
    verified against the genesis CA. Raises ConfigError (no CA in genesis, files unreadable)."""
    if ca_pem is None:
        raise ConfigError("genesis names no tls_ca_certificate, so client certificates cannot be verified: "
                          "add the cluster CA to genesis, or set insecure_plaintext for a development cluster")
    key, cert = _tls_pair(cfg)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca_pem, require_client_auth=True)


def _current_configuration(cfg: ValidatorConfig, genesis, local):
    """The newest governed configuration the genesis validators and ``join_grpc_addresses``
    serve (Ledger.GetConfiguration, over mutual TLS with this validator's certificate), or
    None if none answers. A new
    validator starts from it: it names this validator (added as a learner), the voters to
    replicate from and their pins. Trusted for liveness only: what the learner then applies
    comes from the Raft log, and it votes only after governance promotes it."""
    from raft_ledger_node.ledger.governance import configuration_from_doc
    import json

    creds = _channel_credentials(cfg, genesis.tls_ca_pem)
    best = None
    own = next((v.grpc_address for v in local.validators if v.id == cfg.validator_id), None)
    addresses = dict.fromkeys([*(v.grpc_address for v in local.validators), *cfg.join_grpc_addresses])
    for address in addresses:
        if address == own:
            continue
        channel = grpc.insecure_channel(address) if creds is None else grpc.secure_channel(address, creds)
        try:
            resp = pb_grpc.LedgerServiceStub(channel).GetConfiguration(pb.GetConfigurationRequest(), timeout=3)
            found = configuration_from_doc(json.loads(resp.configuration_json))
        except (grpc.RpcError, ValueError, KeyError, TypeError) as e:
            log.info("configuration from %s: %s", address, getattr(e, "details", lambda: e)())
            continue
        finally:
            channel.close()
        if best is None or found.version > best.version:
            best = found
    return best


class Validator:
    """A running validator: RocksDB store, Raft replica, batcher, gRPC server.

    The adapters are parameters with the production ones as defaults (Cosmic
    Python's bootstrap): ``open_store(path)`` opens the data directory,
    ``replica_class`` is the Raft replica (a :class:`LedgerReplica` subclass),
    ``verifier`` checks member signatures (default: one built from genesis). Tests
    and the benchmark build the same object graph as ``ledger-validator start``.

    Raises ConfigError (bad genesis, address not bindable) or StoreError (data
    directory unusable or of another chain) before anything is served.
    """

    def __init__(
        self,
        cfg: ValidatorConfig,
        *,
        open_store: Callable[[str], RocksStore] = RocksStore,
        replica_class: type[LedgerReplica] = LedgerReplica,
        verifier: Verifier | None = None,
    ) -> None:
        self.cfg = cfg
        self.genesis = load_genesis(cfg.genesis_file)
        _private_data_dir(cfg.data_dir)
        os.makedirs(os.path.dirname(cfg.journal_file), exist_ok=True)
        had_journal = os.path.exists(cfg.journal_file)
        # Bad disks: a data directory that does not verify is refused before it is opened
        # (integrity.py: raises DataCorruptError, a StoreError; `start` exits 65).
        integrity.check_data_directory(journal_file=cfg.journal_file, db_path=cfg.db_path,
                                       durable_journal=cfg.durable_journal)
        try:
            self.store = open_store(cfg.db_path)
        except StoreError as e:
            if integrity.is_corruption(e):  # found at open although the check above passed
                raise integrity.DataCorruptError(cfg.db_path, str(e)) from e
            raise
        self.store.bind_genesis(self.genesis.hash, self.genesis.configuration)
        governed = self.store.configuration()
        if governed is None:
            raise StoreError(f"{cfg.db_path} holds no governed configuration: it was written by an older build; "
                             "start from an empty data directory")
        # Who this validator is comes from the governed set at the applied index (genesis,
        # then add/promote/remove_validator), and whether this data directory may vote
        # from its identity file (raft/membership.py).
        try:
            self.identity = membership.open_identity(
                cfg.data_dir, chain_id=self.genesis.chain_id, validator_id=cfg.validator_id,
                has_data=had_journal or self.store.applied_index() > 0)
        except MembershipError as e:
            raise ConfigError(str(e)) from e
        me = governed.validator(cfg.validator_id)
        if self.store.applied_index() == 0 and not self.identity.genesis:
            # A new (or emptied) validator's store is at genesis: the set it was added to,
            # the voters to replicate from and their pins are the cluster's current ones.
            fetched = _current_configuration(cfg, self.genesis, governed)
            if fetched is not None and fetched.validator(cfg.validator_id) is not None:
                governed = fetched
                me = governed.validator(cfg.validator_id)
        self.role, why = membership.role_of(self.identity, me)
        if self.role is Role.NOT_MEMBER:
            height = self.store.head().height
            self.store.close()
            raise NotAValidatorError(
                f"{why} (data directory at height {height}); this validator does not "
                "start. To (re)join, have the administrators add it (ledger-validator validator add) and start it "
                "again; a removed validator's data directory may be reused (it starts as a learner)")
        log.warning("validator %s starts as a %s: %s (data directory %s)", cfg.validator_id, self.role.value, why,
                    self.identity.data_dir_id.hex())
        voter = self.role is Role.VOTER
        raft_listen = cfg.raft_listen_address or me.raft_address
        if voter:
            _check_bindable(raft_listen, "Raft")
        peers = [v.raft_address for v in governed.voters if v.id != cfg.validator_id]
        conf = make_conf(
            journal_file=cfg.journal_file,
            full_dump_file=cfg.full_dump_file,
            password=cfg.raft_password,
            bind_address=raft_listen if voter else None,
            append_entries_period_s=cfg.append_entries_period_s,
            raft_min_timeout_s=cfg.raft_min_timeout_s,
            raft_max_timeout_s=cfg.raft_max_timeout_s,
            leader_fallback_timeout_s=cfg.leader_fallback_timeout_s,
            log_compaction_min_entries=cfg.log_compaction_min_entries,
            log_compaction_min_time_s=cfg.log_compaction_min_time_s,
            connection_retry_time_s=cfg.connection_retry_time_s,
        )
        self.replica = replica_class(
            me.raft_address if voter else None,
            peers,
            conf,
            self.store,
            durable_journal=cfg.durable_journal,
            raft_fixes=cfg.raft_fixes,
            peer_dial=cfg.raft_peer_dial,
            raft_tls=_raft_tls(cfg, self.genesis, governed.validators),
            # Every validator applies what it decoded itself from the signed bytes.
            decode_proposal=proposal_from_signed_bytes,
            decode_envelope=functools.partial(tx_from_committed, chain_id=self.genesis.chain_id),
            chain_id=self.genesis.chain_id,
            validator_id=cfg.validator_id,
            data_dir_id=self.identity.data_dir_id,
            vote_after_term=self.identity.vote_after_term,
            election_guard=cfg.raft_prevote,
        )
        #: This validator's metrics (node/metrics.py), served on metrics_listen_address.
        self.metrics = LedgerMetrics()
        self.batcher = Batcher(
            self.replica.propose,
            inflight_entries_max=cfg.inflight_entries_max,
            metrics=self.metrics,
            group_commit_wait_s_max=cfg.group_commit_wait_s_max,
        )
        # Follows the governed configuration in the store: added keys verify, revoked
        # keys and suspended members are refused at ingress from the next block on.
        self.verifier = verifier or Verifier(source=self.store.configuration, threads=cfg.verify_threads)
        self.plaintext = cfg.insecure_plaintext
        credentials = None if self.plaintext else _server_credentials(cfg, self.genesis.tls_ca_pem)
        self.authz = Authorizer(self.store.configuration, plaintext=self.plaintext, catch_up=self.replica.read_barrier)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.grpc_workers, thread_name_prefix="grpc"),
            # The metrics interceptor first: it also counts the calls authorisation refuses.
            interceptors=(GrpcMetricsInterceptor(self.metrics), AuthzInterceptor(self.authz)),
            maximum_concurrent_rpcs=cfg.grpc_rpcs_inflight_max,
            options=[
                ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
                ("grpc.max_send_message_length", limits.grpc_message_bytes_max),
                # gRPC sets SO_REUSEPORT by default: a second process on a taken address would bind
                # silently and share its traffic. Fail instead.
                ("grpc.so_reuseport", 0),
            ],
        )
        self.cosigner = self._cosigner(cfg, me)
        quiet = RateLimitedLog()
        add_servicer(
            self.server,
            "LedgerService",
            LedgerServicer(
                store=self.store,
                replica=self.replica,
                batcher=self.batcher,
                verifier=self.verifier,
                leader_grpc_address=self.leader_grpc_address,
                submit_timeout_s=cfg.submit_timeout_s,
                chain_id=self.genesis.chain_id,
                authz=self.authz,
                scans_inflight_max=cfg.scans_inflight_max,
                cosigner=self.cosigner,
                rate_limiter=MemberRateLimiter(
                    Rate(cfg.member_events_per_s, cfg.member_events_burst),
                    {m: Rate(v["events_per_s"], v["burst"]) for m, v in cfg.member_rate_limits.items()},
                ),
                metrics=self.metrics,
            ),
            quiet,
        )
        add_servicer(
            self.server,
            "AdminService",
            AdminServicer(
                validator_id=cfg.validator_id,
                store=self.store,
                replica=self.replica,
                leader_grpc_address=self.leader_grpc_address,
                membership=lambda: (self.role.value, self.identity.data_dir_id),
            ),
            quiet,
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                pb.DESCRIPTOR.services_by_name["LedgerService"].full_name,
                pb.DESCRIPTOR.services_by_name["AdminService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        grpc_listen = cfg.grpc_listen_address or me.grpc_address
        try:
            if credentials is None:
                bound = self.server.add_insecure_port(grpc_listen)
            else:
                bound = self.server.add_secure_port(grpc_listen, credentials)
        except RuntimeError:  # grpcio raises on a failed bind; older versions returned 0
            bound = 0
        if bound == 0:
            raise ConfigError(f"cannot bind gRPC address {grpc_listen} (in use, or not an address of this host?)")
        self.grpc_address = me.grpc_address
        self.metrics_server = self._metrics_server(cfg)
        self._stop = threading.Event()
        #: Why serve() returned: "stopped", "restart" (promoted: start again as a voter) or "removed".
        self.outcome = "stopped"

    def _metrics_server(self, cfg: ValidatorConfig) -> MetricsServer | None:
        """The Prometheus endpoint on ``metrics_listen_address`` (None when empty), bound now:
        HTTPS with mutual TLS admitting the ``operator`` role and the validators' pinned
        certificates, or (plaintext validator) HTTP on a loopback address only. The
        scrape-time gauges read the replica's typed status. Raises ConfigError."""
        self.metrics.register(ReplicaCollector(
            status=self.replica.status,
            head_height=lambda: self.store.head().height,
            membership=lambda: self.role.value,
            configuration=self.store.configuration,
            db_path=cfg.db_path,
            snapshot_file=cfg.full_dump_file,
        ))
        if not cfg.metrics_listen_address:
            return None
        try:
            ctx = None if self.plaintext else server_ssl_context(
                cert_file=cfg.tls_cert_file, key_file=cfg.tls_key_file, ca_pem=self.genesis.tls_ca_pem or b"")
            return MetricsServer(cfg.metrics_listen_address, self.metrics, ssl_context=ctx,
                                 authorise=_metrics_authoriser(self.store.configuration))
        except MetricsConfigError as e:
            raise ConfigError(str(e)) from e

    def _cosigner(self, cfg: ValidatorConfig, me) -> Cosigner:
        """This validator's cosigner: its signing key (if configured) and, per peer, a
        gRPC call for the peer's own signatures over a channel authenticated by this
        validator's certificate (the peer admits it to GetCosignatures only)."""
        key = None
        if cfg.signing_key_file:
            try:
                with open(cfg.signing_key_file, "rb") as f:
                    key = serialization.load_pem_private_key(f.read(), password=None)
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read signing_key_file {cfg.signing_key_file}: {e}") from e
            if not isinstance(key, Ed25519PrivateKey):
                raise ConfigError(f"signing_key_file {cfg.signing_key_file} is not an Ed25519 private key")
            current = self.store.configuration()
            rec = next((v for v in (current.validators if current else ()) if v.id == me.id), None)
            pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            if rec is not None and rec.public_key and rec.public_key != pub:
                raise ConfigError(
                    f"signing_key_file {cfg.signing_key_file} is not the key the governed validator set names for "
                    f"{me.id} (public key {pub.hex()[:16]}…, the set has {rec.public_key.hex()[:16]}…): its "
                    "signatures would never count. Use the key whose public key is in genesis (or in the last "
                    "set_validators change)")
        else:
            log.warning("validator %s has no signing_key_file: it signs no checkpoints (certificates then need a "
                        "majority of the others)", me.id)
        creds = _channel_credentials(cfg, self.genesis.tls_ca_pem)
        stubs: dict[tuple[str, str], Callable] = {}

        def peers() -> dict[str, Callable]:
            # The voters of the governed set now (added and removed ones follow governance).
            cfg_now = self.store.configuration()
            out = {}
            for v in (cfg_now.voters if cfg_now is not None else ()):
                if v.id == me.id:
                    continue
                key = (v.id, v.grpc_address)
                if key not in stubs:
                    channel = (grpc.insecure_channel(v.grpc_address) if creds is None
                               else grpc.secure_channel(v.grpc_address, creds))
                    stub = pb_grpc.LedgerServiceStub(channel)

                    def fetch(from_height, limit, stub=stub):
                        resp = stub.GetCosignatures(pb.GetCosignaturesRequest(from_height=from_height, limit=limit),
                                                    timeout=2)
                        return [(c.height, bytes(c.signature)) for c in resp.cosignatures]

                    stubs[key] = fetch
                out[v.id] = stubs[key]
            return out

        return Cosigner(self.store, chain_id=self.genesis.chain_id, genesis_hash=self.genesis.hash,
                        validator_id=me.id, signing_key=key if self.role is Role.VOTER else None, peers=peers)

    def leader_grpc_address(self) -> str | None:
        raft = self.replica.leader_address()
        if raft is None:
            return None
        cfg = self.store.configuration()
        rec = next((v for v in (cfg.validators if cfg else ()) if v.raft_address == raft), None)
        return None if rec is None else rec.grpc_address

    def serve(self) -> None:
        _tune_gc(self.cfg.gc_gen0_threshold)
        self.batcher.start()
        self.server.start()
        self.cosigner.start()
        if self.metrics_server is not None:
            self.metrics_server.start()
        if self.plaintext:
            log.warning(PLAINTEXT_WARNING, self.cfg.validator_id)
        log.info(
            "validator %s serving gRPC%s on %s (head height %d, applied index %d)",
            self.cfg.validator_id,
            " IN PLAINTEXT" if self.plaintext else " over mutual TLS",
            self.grpc_address,
            self.store.head().height,
            self.store.applied_index(),
        )
        self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        serving = None
        while not self._stop.wait(0.2):
            if self._membership_changed():
                break
            ready = self.replica.isReady() and self.replica.leader_address() is not None
            if ready != serving:
                status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
                self.health.set("", status)
                self.health.set("ledger.v1.LedgerService", status)
                serving = ready
        log.info("validator %s stopping", self.cfg.validator_id)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.cosigner.stop()
        self.server.stop(grace=2).wait()
        self.batcher.stop()
        # Wait for the tick thread to end: it applies entries until then, and the store closes next.
        self.replica.destroy_synchronous()
        self.store.close()

    def stop(self) -> None:
        self._stop.set()

    def _membership_changed(self) -> bool:
        """Act on this validator's own record in the governed set (True: stop serving now).

        A learner's removal is decided only once it has applied everything the leader has
        committed: replaying history it passes through old configurations (its own earlier
        removal, another directory's promotion) that are not the current one.
        A learner now bound as a voter starts again as one; a validator no longer in the
        set stops (a removed leader handed over when it applied its removal).
        """
        st = self.replica.status()
        cfg = self.store.configuration()
        own = cfg.validator(self.cfg.validator_id) if cfg is not None else None
        role, why = membership.role_of(self.identity, own)
        if role is self.role:
            return False
        # A record bound to this directory's random id can only come from this directory's
        # promotion: act at once (under load a learner is rarely exactly caught up). A
        # voter applies only what follows its own state, so its removal is current (and the
        # others stop replicating to it, so it would never look caught up). Anything else
        # waits until this validator has applied all the leader has committed.
        caught_up = st.ready and st.leader_address is not None and st.last_applied >= st.commit_index
        if not (caught_up or role is Role.VOTER or (self.role is Role.VOTER and own is None)):
            return False
        if role is Role.VOTER:
            # It votes only in terms after the current one (transport.py): the lost validator
            # it replaces may have voted in them. Then it starts again on the same directory.
            ident = self.identity
            membership.write_identity(self.cfg.data_dir, membership.DataDirIdentity(
                ident.chain_id, ident.validator_id, ident.data_dir_id, ident.genesis,
                max(ident.vote_after_term, st.term)))
            log.warning("validator %s was promoted to voter (%s): restarting as a voter, voting after term %d",
                        self.cfg.validator_id, why, st.term, extra={"height": self.store.head().height})
            self.outcome = "restart"
            return True
        if role is Role.NOT_MEMBER:
            deadline = time.monotonic() + LEADER_HANDOVER_S
            while self.replica.is_leader() and time.monotonic() < deadline:
                time.sleep(0.05)
            log.warning("validator %s was removed from the validator set by governance: it stops", self.cfg.validator_id,
                        extra={"height": self.store.head().height})
            self.outcome = "removed"
            return True
        if self.role is Role.VOTER:  # LEARNER now: another directory was bound to this validator
            log.warning("validator %s stops: %s", self.cfg.validator_id, why)
            self.outcome = "removed"
            return True
        return False


def _metrics_authoriser(configuration) -> Callable[[bytes], str | None]:
    """Who may scrape metrics, given the client certificate (DER) TLS verified against the
    cluster CA: an active identity with role ``operator``, or a validator presenting the
    certificate pinned for it in the governed set. Returns the caller's name, or None."""

    def authorise(der: bytes) -> str | None:
        try:
            ident = pki.identity_from_certificate(der)
        except pki.CertificateError:
            return None
        cfg = configuration()
        if cfg is None:
            return None
        if ident.kind == "validator":
            rec = next((v for v in cfg.validators if v.id == ident.id), None)
            pinned = rec is not None and rec.tls_cert_sha256 and pki.certificate_sha256(der) == rec.tls_cert_sha256
            return f"validator/{ident.id}" if pinned else None
        m = cfg.member(ident.id)
        return m.id if m is not None and m.active and "operator" in m.roles else None

    return authorise


def _tune_gc(gen0_threshold: int) -> None:
    """Keep Python's cycle collector off the commit path.

    With the default thresholds a validator at peak ran a full (generation 2)
    collection every few seconds, 20-40 ms each with the GIL held and nothing
    to collect: every thread stalls, and a 50 ms hiccup shows at p99. The
    objects that exist once the validator is set up (modules, gRPC, protobuf
    descriptors: ~50,000) are moved out of the collector's way with
    ``gc.freeze()`` (Python docs, gc.freeze), and the young generation is
    collected every ``gen0_threshold`` allocations instead of 700. Reference
    cycles are still collected. 0 leaves Python's defaults. Collections over
    :data:`GC_PAUSE_LOG_S` are logged either way (one hook per process, however many
    validators it starts).
    """
    if not any(isinstance(cb, _GcPauseLog) for cb in gc.callbacks):
        gc.callbacks.append(_GcPauseLog())
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


#: A cycle collection longer than this is logged (WARNING): every thread waits for it.
GC_PAUSE_LOG_S = 0.05


class _GcPauseLog:
    """``gc.callbacks`` hook: log every collection that holds the GIL longer than
    :data:`GC_PAUSE_LOG_S`, with its generation, duration and what it freed, so a
    latency spike can be told from a Raft or disk stall."""

    def __init__(self) -> None:
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        if took >= GC_PAUSE_LOG_S:
            log.warning("garbage collection of generation %d held every thread for %.0f ms (%d objects collected; "
                        "%d frozen at start-up, not scanned)", info.get("generation", -1), took * 1000,
                        info.get("collected", 0), gc.get_freeze_count())


#: Seconds a removed leader waits for another validator to take over before it stops.
LEADER_HANDOVER_S = 3.0


def run(cfg: ValidatorConfig) -> str:
    """Start a validator and serve until SIGTERM/SIGINT or a membership change.

    A learner promoted to voter starts again in place (``execv`` of the same command
    line, same PID) as a voter. Returns "stopped" or "removed" (removed from the
    validator set by governance)."""
    v = Validator(cfg)
    signal.signal(signal.SIGTERM, lambda *_: v.stop())
    signal.signal(signal.SIGINT, lambda *_: v.stop())
    v.serve()
    if v.outcome == "restart":
        logging.shutdown()
        os.execv(sys.executable, sys.orig_argv)
    return v.outcome
