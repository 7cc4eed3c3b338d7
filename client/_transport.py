"""The SDK's one I/O seam: ``Transport.call(address, method, request, timeout_s)``.

Two implementations: :class:`GrpcTransport` (the real one) and
:class:`InProcessTransport` (servicer-like Python objects per address, for tests
of the client's own logic without sockets). Both turn a gRPC status into the
SDK's exceptions with the same function, :func:`status_to_exception` (httpx's
``map_httpcore_exceptions``): no ``grpc.RpcError`` crosses the seam.

Transport security: :class:`GrpcTransport` speaks mutual TLS (:class:`ClientTLS`:
the cluster CA that every validator's certificate must chain to, and the caller's
own client certificate and key, whose identity the validators take as the caller).
Plaintext only with an explicit ``insecure=True``, for a development cluster
started with ``insecure_plaintext``.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc

from raft_ledger_client._exceptions import (
    InvalidRequest,
    LedgerError,
    MembershipChangeRefused,
    NotFound,
    NotLeader,
    NotSubmitted,
    PermissionDenied,
    RateLimited,
    Timeout,
    Unavailable,
)
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc

#: Trailing metadata of a validator that refused the call before proposing anything.
REFUSED_KEY = "ledger-refused"
#: Trailing metadata naming the leader's gRPC address (host:port).
LEADER_KEY = "leader-address"

#: Statuses after which a write may or may not have been proposed.
#: Trailing metadata of a rate-limited Submit: milliseconds to wait before retrying.
RETRY_AFTER_KEY = "retry-after-ms"
#: How grpcio's server words a refusal past maximum_concurrent_rpcs.
_GRPC_OVERLOADED = "Concurrent RPC limit exceeded"
_UNKNOWN_OUTCOME = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}


class Transport(Protocol):
    def call(self, address: str, method: str, request, timeout_s: float):
        """Invoke ``Ledger.<method>`` at ``address`` and return its response message.

        Raises only the SDK's exceptions: :class:`NotLeader` (refused, with the
        leader's address when known), :class:`NotSubmitted` (refused before
        proposal for another reason), :class:`Timeout`, :class:`Unavailable`
        (outcome unknown), :class:`InvalidRequest`, :class:`NotFound`,
        :class:`PermissionDenied`, or :class:`LedgerError` for any other status.
        """
        ...

    def close(self) -> None: ...


def status_to_exception(
    code: grpc.StatusCode, details: str | None, trailing: Iterable[tuple[str, str]] | None, where: str
) -> LedgerError:
    """The SDK exception for a non-OK gRPC status of the call ``where`` (address and method)."""
    details = details or ""
    md = dict(trailing or ())
    refused = md.get(REFUSED_KEY)
    if refused == "membership":
        # A validator membership change the leader will not propose now (another is in
        # flight, the learner is behind, or it would leave no majority): nothing was done.
        return MembershipChangeRefused(f"{where}: {details}")
    if refused == "rate-limited":
        try:
            wait_s = max(0.0, int(md.get(RETRY_AFTER_KEY, "0")) / 1000)
        except ValueError:
            wait_s = 0.0
        return RateLimited(f"{where}: {details}", wait_s)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and (refused == "overloaded" or details.startswith(_GRPC_OVERLOADED)):
        # The validator sheds load (its range-query slots, or gRPC's own
        # maximum_concurrent_rpcs before our code ran): nothing was done, retry.
        return NotSubmitted(f"{where}: overloaded: {details}")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
        # RESOURCE_EXHAUSTED: the Submit is over a per-request limit (submit_events_max,
        # submit_bytes_max, the gRPC message cap); refused before anything was proposed.
        return InvalidRequest(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(details)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PermissionDenied(f"{where}: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION or refused in ("not-leader", "no-leader"):
        return NotLeader(f"{where}: {details}", md.get(LEADER_KEY) or None)
    if refused:
        return NotSubmitted(f"{where}: refused ({refused}): {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Timeout(f"{where}: {details}")
    if code in _UNKNOWN_OUTCOME:
        return Unavailable(f"{where}: {code.name}: {details}")
    return LedgerError(f"{where}: {code.name}: {details}")


@dataclass(frozen=True, kw_only=True)
class ClientTLS:
    """Mutual-TLS material of one caller (PEM bytes).

    ``ca_pem``: the cluster CA's certificate (genesis ``tls_ca_certificate``); a
    validator whose certificate does not chain to it, or does not name the host
    dialled (IP or DNS subject alternative name), is not talked to: the call fails
    with :class:`Unavailable`. ``cert_pem`` / ``key_pem``: the caller's client
    certificate (issued by the cluster CA, naming ``spiffe://ledger/member/<id>``)
    and its private key; the validators refuse the caller (PermissionDenied) unless
    that identity is an active identity of the governed configuration.
    """

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def from_files(cls, *, ca_file: str, cert_file: str, key_file: str) -> "ClientTLS":
        """Read the three PEM files. Raises OSError."""
        def read(path: str) -> bytes:
            with open(path, "rb") as f:
                return f.read()

        return cls(ca_pem=read(ca_file), cert_pem=read(cert_file), key_pem=read(key_file))

    def __repr__(self) -> str:  # never print a private key
        return f"ClientTLS(ca_pem=<{len(self.ca_pem)} bytes>, cert_pem=<{len(self.cert_pem)} bytes>, key_pem=<redacted>)"


class GrpcTransport:
    """One gRPC channel per validator address, created on first use: mutual TLS with
    ``tls`` (:class:`ClientTLS`), or plaintext with an explicit ``insecure=True``
    (development clusters only: anyone on the path reads and changes the traffic).
    Raises ValueError when neither or both are given.
    """

    def __init__(self, *, tls: ClientTLS | None = None, insecure: bool = False,
                 max_message_bytes: int = 64 << 20) -> None:
        if (tls is None) == (not insecure):
            raise ValueError("GrpcTransport needs tls=ClientTLS(...) (the cluster CA and this caller's client "
                             "certificate), or insecure=True for a plaintext development cluster; not both")
        self._credentials = None if tls is None else grpc.ssl_channel_credentials(
            root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem)
        self._stubs: dict[str, pb_grpc.LedgerServiceStub] = {}
        self._channels: list[grpc.Channel] = []
        self._lock = threading.Lock()
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]

    @property
    def secure(self) -> bool:
        return self._credentials is not None

    def _stub(self, address: str) -> pb_grpc.LedgerServiceStub:
        stub = self._stubs.get(address)
        if stub is None:
            with self._lock:
                stub = self._stubs.get(address)
                if stub is None:
                    if self._credentials is None:
                        channel = grpc.insecure_channel(address, options=self._options)
                    else:
                        channel = grpc.secure_channel(address, self._credentials, options=self._options)
                    self._channels.append(channel)
                    stub = self._stubs[address] = pb_grpc.LedgerServiceStub(channel)
        return stub

    def call(self, address: str, method: str, request, timeout_s: float):
        try:
            return getattr(self._stub(address), method)(request, timeout=timeout_s)
        except grpc.RpcError as e:
            # Every RpcError a unary stub raises is also a grpc.Call (code, details, metadata).
            raise status_to_exception(e.code(), e.details(), e.trailing_metadata(), f"{address} {method}") from e

    def close(self) -> None:
        for c in self._channels:
            c.close()
        self._channels.clear()
        self._stubs.clear()


class _Abort(Exception):
    """Raised by :meth:`_Context.abort`, as grpc's ``ServicerContext.abort`` raises."""


class _Context:
    """The part of ``grpc.ServicerContext`` a handler needs to answer with a status."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple = ()

    def abort(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details
        raise _Abort(details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, metadata) -> None:
        self._trailing = tuple(metadata)

    def code(self):
        return self._code

    def details(self) -> str:
        return self._details

    def invocation_metadata(self) -> tuple:
        return ()

    def auth_context(self) -> dict:
        return {}  # no TLS in process: the servicer sees an anonymous caller

    def time_remaining(self) -> float:
        return self._timeout_s


class InProcessTransport:
    """Routes calls to servicer-like objects per address, in this process: for tests.

    ``servicers`` maps an address to any object with the Ledger methods a test
    needs (the mapping is used live: remove an address to take a validator down), called as gRPC calls a servicer: ``Submit(request, context)``. The
    handler answers with a response message, or with a status through
    ``context.abort(code, details)`` / ``context.set_trailing_metadata(...)``,
    which :func:`status_to_exception` maps exactly as for a real gRPC call. An
    address with no servicer behaves as a validator that is down (Unavailable),
    as does a handler that raises (gRPC's UNKNOWN). Requests and responses
    travel as bytes, so neither side can see the other's objects.
    ``calls`` records ``(address, method)`` in order. Nothing here sleeps: a
    handler simulates a slow validator by aborting with DEADLINE_EXCEEDED.
    """

    def __init__(self, servicers: Mapping[str, object]) -> None:
        self.servicers = servicers
        self.calls: list[tuple[str, str]] = []

    def call(self, address: str, method: str, request, timeout_s: float):
        self.calls.append((address, method))
        where = f"{address} {method}"
        servicer = self.servicers.get(address)
        if servicer is None:
            raise Unavailable(f"{where}: UNAVAILABLE: no servicer at this address")
        handler = getattr(servicer, method, None)
        if handler is None:
            raise status_to_exception(grpc.StatusCode.UNIMPLEMENTED, f"no {method}", (), where)
        context = _Context(timeout_s)
        try:
            response = handler(type(request).FromString(request.SerializeToString()), context)
        except _Abort:
            raise status_to_exception(context._code, context._details, context._trailing, where) from None
        except Exception as e:
            raise status_to_exception(grpc.StatusCode.UNKNOWN, f"Exception calling application: {e}", (), where) from e
        if context._code not in (None, grpc.StatusCode.OK):
            raise status_to_exception(context._code, context._details, context._trailing, where)
        return type(response).FromString(response.SerializeToString())

    def close(self) -> None:
        pass
