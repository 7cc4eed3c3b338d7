"""Micro-benchmark: pysyncobj's write buffer against LedgerConnection's, side by side.

Usage::

    .venv/bin/python -m raft_ledger_node.bench.raft_send_buffer --base-port 53010

For each connection class, one real connection on 127.0.0.1 (the library's poller,
a plain socket as the peer) queues ``--frames`` messages of ``--frame-kib`` KiB of
random bytes while the peer reads nothing, then the peer reads until the buffer is
empty. Printed: the sending thread's CPU for the sends (pickle + zlib + queueing;
the library's ``bytes +=`` copies the whole buffer per message) and for draining
(the library copies the rest of the buffer after every partial send).
"""
from __future__ import annotations

import argparse
import os
import socket
import time

from pysyncobj.poller import createPoller
from pysyncobj.tcp_connection import TcpConnection

from raft_ledger_node.localcluster import reserve_ports
from raft_ledger_node.raft.wire import LedgerConnection

#: Longest drain (s) before giving up on a connection.
DRAIN_S_MAX = 60.0


def _run(cls, port: int, frames: int, frame_bytes: int) -> tuple[float, int, float]:
    poller = createPoller("auto")
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    conn = cls(poller=poller, timeout=120.0, sendBufferSize=2**16, recvBufferSize=2**16)
    peer = None
    try:
        conn.connect("127.0.0.1", port)
        peer, _ = srv.accept()
        peer.setblocking(False)
        for _ in range(20):
            poller.poll(0.01)
        messages = [os.urandom(frame_bytes) for _ in range(frames)]
        t = time.thread_time()
        for m in messages:
            conn.send(m)
        queued_s = time.thread_time() - t
        left = conn.getSendBufferSize()
        t, deadline = time.thread_time(), time.monotonic() + DRAIN_S_MAX
        while conn.getSendBufferSize() and time.monotonic() < deadline:
            poller.poll(0.001)
            try:
                while peer.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
        return queued_s, left, time.thread_time() - t
    finally:
        conn.disconnect()
        if peer is not None:
            peer.close()
        srv.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--frame-kib", type=int, default=64)
    ap.add_argument("--base-port", type=int, default=53010)
    args = ap.parse_args(argv)
    with reserve_ports([0, 1], start=args.base_port, step=10) as ports:
        for cls, port in ((TcpConnection, ports.ports[0]), (LedgerConnection, ports.ports[1])):
            q, left, d = _run(cls, port, args.frames, args.frame_kib << 10)
            print(f"{cls.__name__:17s} {args.frames} x {args.frame_kib} KiB: {q * 1e3:7.1f} ms CPU sending "
                  f"({left / 1e6:.1f} MB left buffered), {d * 1e3:7.1f} ms CPU draining", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
