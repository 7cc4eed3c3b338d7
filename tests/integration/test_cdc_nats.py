"""The CDC sink against a real broker: ``ledger-validator cdc-sink`` publishing to NATS JetStream.

A real ``nats-server -js`` (installed into .venv/bin by deploy/local/setup.sh), a real
3-validator cluster and the sink as its own process (reading as the auditor). While
bank-a and bank-b write, the leader validator is SIGKILLed and so is the sink; the sink
is restarted (it resumes from its state file) and so is the validator. A consumer then
reads the stream from the start and deduplicates by height (the idempotency key): it
must hold every height 1..head exactly once, contiguous, with every committed transfer.
JetStream's de-duplication (Nats-Msg-Id within the duplicate window) is checked by
re-publishing a block the sink already published.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import running_cluster
from raft_ledger_client import Account, RetryPolicy, Transfer
from raft_ledger_node.cdc_sink import STREAM_NAME, SinkState, msg_id
from raft_ledger_node.localcluster import member_client, reserve_ports

pytestmark = pytest.mark.integration

START_PORT = 44_000
PORT_STEP = 300
NATS_PORT_OFFSET = 50
NATS_SERVER = os.path.join(os.path.dirname(sys.executable), "nats-server")
SUBJECT = "ledger.blocks"
LEDGER = 1
#: Seconds for the broker to listen, the sink to catch up, the consumer to read everything.
NATS_START_TIMEOUT_S = 20.0
SINK_CATCH_UP_TIMEOUT_S = 60.0
CONSUME_TIMEOUT_S = 30.0


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture
def nats_url(tmp_path):
    if not os.access(NATS_SERVER, os.X_OK):
        pytest.skip(f"{NATS_SERVER} missing: run deploy/local/setup.sh (needs `go`)")
    ports = reserve_ports([NATS_PORT_OFFSET], start=START_PORT, step=PORT_STEP)
    port = ports.ports[0]
    log = open(tmp_path / "nats.log", "wb")
    proc = subprocess.Popen([NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "js")],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def listening():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                return False

        _wait(listening, NATS_START_TIMEOUT_S, "nats-server to listen")
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        ports.release()


class Sink:
    """``ledger-validator cdc-sink`` as a child process (output appended to ``log_path``)."""

    def __init__(self, cluster_dir: str, url: str, state: str, log_path: str, prefer: str) -> None:
        self.args = [sys.executable, "-m", "raft_ledger_node.cli", "cdc-sink", "--cluster", cluster_dir, "--as",
                     "auditor", "--nats", url, "--subject", SUBJECT, "--state", state, "--prefer", prefer]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _client(cluster, identity):
    return member_client(cluster.directory, identity, verify=False,
                         retry=RetryPolicy(deadline_s=30.0, attempt_timeout_s=5.0))


def _write(a, b, n: int) -> list[int]:
    base = 5000 + 10 * n
    ra = a.create_transfers([Transfer(id=base, debit_account_id=101, credit_account_id=201, amount=3, ledger=LEDGER, code=1)])
    rb = b.create_transfers([Transfer(id=base + 1, debit_account_id=202, credit_account_id=102, amount=2, ledger=LEDGER, code=1)])
    assert [r.name for r in ra + rb] == ["ok", "ok"]
    return [base, base + 1]


async def _consume(url: str, head: int, lines: list[str]) -> dict[int, dict]:
    """Read the stream from its first message; keep the first message of each height."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(SUBJECT, durable="test-consumer", stream=STREAM_NAME)
        seen: dict[int, dict] = {}
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while (not seen or max(seen) < head or len(seen) < head) and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(256, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                doc = json.loads(m.data)
                h = doc["height"]
                dup = h in seen
                lines.append(f"consumer: seq={m.metadata.sequence.stream} Nats-Msg-Id={m.headers['Nats-Msg-Id']} "
                             f"height={h} transfers={[int(t['id']) for t in doc['transfers']]}"
                             f"{'  (duplicate height: dropped)' if dup else ''}")
                if not dup:
                    seen[h] = doc
                await m.ack()
        return seen
    finally:
        await nc.close()


async def _republish(url: str, chain: str, height: int) -> bool:
    import nats

    nc = await nats.connect(url)
    try:
        ack = await nc.jetstream().publish(SUBJECT, b"{}", headers={"Nats-Msg-Id": msg_id(chain, height)})
        return bool(ack.duplicate)
    finally:
        await nc.close()


def test_sink_delivers_every_height_once_across_sink_and_leader_kills(tmp_path, nats_url, capsys):
    state_path = str(tmp_path / "sink.state")
    state = SinkState(state_path)
    lines: list[str] = []
    with running_cluster(str(tmp_path / "cluster"), START_PORT) as cluster:
        leader = cluster.leader()
        # The sink streams from the leader first, so killing the leader breaks its stream.
        sink = Sink(cluster.directory, nats_url, state_path, str(tmp_path / "sink.log"), cluster.addresses[leader])
        committed: list[int] = []
        try:
            with _client(cluster, "bank-a") as a, _client(cluster, "bank-b") as b:
                assert [r.name for r in a.create_accounts([Account(id=i, ledger=LEDGER, code=1) for i in (101, 102)])] == ["ok"] * 2
                assert [r.name for r in b.create_accounts([Account(id=i, ledger=LEDGER, code=1) for i in (201, 202)])] == ["ok"] * 2
                sink.start()
                for n in range(5):
                    committed += _write(a, b, n)
                h = a.head(linearizable=True).height
                _wait(lambda: state.load() >= h, SINK_CATCH_UP_TIMEOUT_S, f"the sink to acknowledge height {h}")
                assert cluster.leader() == leader
                lines.append(f"-- SIGKILL leader {leader} (sink acknowledged up to {state.load()})")
                cluster.local.stop(leader, signal.SIGKILL)
                for n in range(5, 10):
                    committed += _write(a, b, n)
                h = a.head(linearizable=True).height
                _wait(lambda: state.load() >= h - 2, SINK_CATCH_UP_TIMEOUT_S, "the sink to follow the new leader")
                lines.append(f"-- SIGKILL the sink (state file: {state.load()}); writes go on")
                sink.kill()
                for n in range(10, 15):
                    committed += _write(a, b, n)
                lines.append(f"-- restart the sink (resumes at {state.load() + 1}) and {leader}")
                sink.start()
                cluster.local.start(leader)
                for n in range(15, 20):
                    committed += _write(a, b, n)
                head = a.head(linearizable=True).height
                _wait(lambda: state.load() >= head, SINK_CATCH_UP_TIMEOUT_S, f"the sink to acknowledge height {head}")
                chain = a.chain_id
        finally:
            sink.kill(signal.SIGTERM)
    # JetStream drops a re-publish of a height within the duplicate window (idempotent re-publishing).
    assert asyncio.run(_republish(nats_url, chain, 3)) is True
    seen = asyncio.run(_consume(nats_url, head, lines))
    assert sorted(seen) == list(range(1, max(seen) + 1)), "heights are not contiguous from 1"
    assert max(seen) >= head
    got = [int(t["id"]) for h in sorted(seen) for t in seen[h]["transfers"] if t["result"] == "ok"]
    assert sorted(got) == sorted(committed) and len(got) == len(set(got))
    assert all(seen[h]["chain_id"] == chain and len(seen[h]["block_hash"]) == 64 for h in seen)
    with open(tmp_path / "sink.log", errors="replace") as f:
        sink_log = ["sink: " + ln.rstrip() for ln in f]
    with capsys.disabled():
        print("\n".join(["", *sink_log, *lines]))
