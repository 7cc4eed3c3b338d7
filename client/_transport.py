"""The SDK's one I/O seam: ``Transport.call(address, method, request, timeout_s)``."""
from __future__ import annotations

import threading
from typing import Protocol

import grpc

from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc


class Transport(Protocol):
    def call(self, address: str, method: str, request, timeout_s: float):
        """Invoke ``Ledger.<method>`` at ``address``; raises grpc.RpcError as gRPC does."""
        ...

    def close(self) -> None: ...


class GrpcTransport:
    """One insecure gRPC channel per validator address, created on first use.

    TLS is not configured yet: use it on 127.0.0.1 or a private network only.
    """

    def __init__(self, *, max_message_bytes: int = 64 << 20) -> None:
        self._stubs: dict[str, pb_grpc.LedgerStub] = {}
        self._channels: list[grpc.Channel] = []
        self._lock = threading.Lock()
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]

    def _stub(self, address: str) -> pb_grpc.LedgerStub:
        stub = self._stubs.get(address)
        if stub is None:
            with self._lock:
                stub = self._stubs.get(address)
                if stub is None:
                    channel = grpc.insecure_channel(address, options=self._options)
                    self._channels.append(channel)
                    stub = self._stubs[address] = pb_grpc.LedgerStub(channel)
        return stub

    def call(self, address: str, method: str, request, timeout_s: float):
        return getattr(self._stub(address), method)(request, timeout=timeout_s)

    def close(self) -> None:
        for c in self._channels:
            c.close()
        self._channels.clear()
        self._stubs.clear()
