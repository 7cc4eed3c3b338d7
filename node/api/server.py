"""Registering the servicers so that undecodable requests are the client's mistake.

gRPC's generated ``add_*Servicer_to_server`` deserializes each request before our
code runs; bytes that are not the request message make grpcio log an ERROR with a
traceback and answer UNKNOWN/INTERNAL. Here every method takes the raw bytes and
parses them itself: undecodable input is answered INVALID_ARGUMENT with a one-line
message, and logged at most once per ``LOG_PERIOD_S`` (with the count suppressed).
"""
from __future__ import annotations

import logging
import threading
import time

import grpc
from google.protobuf.message import DecodeError

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb

log = logging.getLogger("ledger.service")

#: Seconds between two log lines about undecodable requests.
LOG_PERIOD_S = 10.0


class RateLimitedLog:
    """``warn(message)`` logs at most once per ``period_s``; later lines say how many were dropped."""

    def __init__(self, period_s: float = LOG_PERIOD_S, clock=time.monotonic) -> None:
        self._period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0.0
        self.suppressed = 0

    def warn(self, message: str) -> bool:
        with self._lock:
            now = self._clock()
            if now < self._next:
                self.suppressed += 1
                return False
            dropped, self.suppressed = self.suppressed, 0
            self._next = now + self._period_s
        log.warning("%s%s", message, f" ({dropped} similar lines suppressed)" if dropped else "")
        return True


def _handler(service: str, method_name: str, request_cls, behaviour, quiet: RateLimitedLog, streaming: bool = False):
    def parse(raw: bytes, context):
        try:
            return request_cls.FromString(raw)
        except DecodeError:
            quiet.warn(f"{service}/{method_name}: undecodable request ({len(raw)} bytes) from {context.peer()}")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"request is not a {request_cls.DESCRIPTOR.full_name} message")

    def call(raw: bytes, context):
        return behaviour(parse(raw, context), context)

    def stream(raw: bytes, context):
        yield from behaviour(parse(raw, context), context)

    serialize = lambda m: m.SerializeToString()  # noqa: E731
    if streaming:
        return grpc.unary_stream_rpc_method_handler(stream, request_deserializer=None, response_serializer=serialize)
    return grpc.unary_unary_rpc_method_handler(call, request_deserializer=None, response_serializer=serialize)


def add_servicer(server: grpc.Server, service_name: str, servicer, quiet: RateLimitedLog | None = None) -> None:
    """Register ``servicer`` for ``ledger.v1.<service_name>`` (every method of the
    service descriptor: unary, or server-streaming), parsing requests itself as described above."""
    quiet = quiet or RateLimitedLog()
    service = pb.DESCRIPTOR.services_by_name[service_name]
    handlers = {
        m.name: _handler(service.full_name, m.name, getattr(pb, m.input_type.name), getattr(servicer, m.name), quiet,
                         streaming=m.server_streaming)
        for m in service.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
