"""Hostile-input drills: attack a fresh local 3-validator cluster and measure what it cost.

``python -m raft_ledger_chaos attack NAME [--duration S]`` starts a cluster on
127.0.0.1, runs one attack for ``--duration`` seconds while a probe commits one
small transaction every ``PROBE_PERIOD_S`` through the SDK, and prints:

* leader CPU seconds and peak RSS (MiB) during the attack (``/proc/<pid>``);
* the longest time without a commit, and how many probe commits failed;
* whether the leader or its term changed (an election);
* the attack's own figures (requests sent, how they were answered, latency).

Attacks (the numbers of the hostile-input issue):

* ``submit-flood`` (1): 8 clients send Submits of 190 transactions x 8,190 empty
  transfers (about 3 MB, under the gRPC cap) signed by an unknown member.
* ``raft-frame`` (2): one socket per Raft port sends a length prefix of 0x7fffffff
  and then junk (64 MiB at most) without the password.
* ``query-scan`` (4): after a history of ``--history`` transfers on one account, 16
  clients ask ``GetAccountTransfers(account, code=999, limit=1)`` in a loop.
* ``linearizable-reads`` (5): 16 clients call linearizable ``GetHead`` in a loop;
  reports reads/s and Raft entries per read.

Only addresses on 127.0.0.1; every loop is bounded by ``--duration``; only the
validators this drill started are stopped, by PID.
"""
from __future__ import annotations

import os
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field

import grpc

from raft_ledger_client import Account, LedgerClient, RetryPolicy, Transfer
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
from raft_ledger_node.localcluster import (
    LocalCluster,
    cluster_port_offsets,
    grpc_channel,
    init_cluster,
    member_client,
    reserve_ports,
    status_rows,
)

ATTACKS = ("submit-flood", "raft-frame", "query-scan", "linearizable-reads")
#: Seconds between two probe commits.
PROBE_PERIOD_S = 0.02
#: Seconds between two samples of the leader's RSS.
RSS_SAMPLE_S = 0.05
RPC_TIMEOUT_S = 30.0
#: Connections the raft-frame attack opens per port at most (it reconnects when closed).
RAFT_CONNECTIONS_MAX = 20_000
#: Junk the raft-frame attack sends per connection at most (bytes).
RAFT_JUNK_BYTES_MAX = 64 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _client(directory: str, genesis, member: str, retry: RetryPolicy | None = None) -> LedgerClient:
    """The member's SDK client over mutual TLS (its certificate from the cluster directory)."""
    return member_client(directory, member, retry=retry)


@dataclass
class Probe:
    """Commits one account every PROBE_PERIOD_S and samples the leader while an attack runs."""

    client: LedgerClient
    leader_pid: int
    commits: list = field(default_factory=list)
    failures: int = 0
    rss_peak_mib: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self, first_id: int) -> None:
        i = first_id
        while not self._stop.is_set():
            try:
                [r] = self.client.create_accounts([Account(id=i, ledger=840, code=1)])
                if r.ok:
                    self.commits.append(time.monotonic())
            except Exception:
                self.failures += 1
            i += 1
            self._stop.wait(PROBE_PERIOD_S)

    def sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.rss_peak_mib = max(self.rss_peak_mib, _rss_mib(self.leader_pid))
            except OSError:
                return
            self._stop.wait(RSS_SAMPLE_S)

    def stop(self) -> None:
        self._stop.set()

    def longest_gap_s(self, start: float, end: float) -> float:
        points = [start, *[t for t in self.commits if start <= t <= end], end]
        return max(b - a for a, b in zip(points, points[1:]))


def _leader(directory: str) -> tuple[str, int, object]:
    rows = status_rows(os.path.join(directory, "genesis.json"), timeout_s=2.0)
    for v, st in rows:
        if not isinstance(st, grpc.RpcError) and st.role == "leader":
            return v.id, st.term, st
    raise RuntimeError(f"no leader: {rows}")


def _run_all(target, args_list: list[tuple], duration_s: float) -> None:
    """One thread per argument tuple; join each within the attack's time plus the RPC deadline."""
    threads = [threading.Thread(target=target, args=a) for a in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + RPC_TIMEOUT_S + 5)


def _submit_flood(ctx: dict, duration_s: float) -> dict:
    transfers = pb.CreateTransfers(transfers=[pb.Transfer() for _ in range(8_190)])
    body = pb.Transaction(create_transfers=transfers).SerializeToString()
    stx = pb.SignedTransaction(body=body, member_id="intruder", key_id="k1", signature=bytes(64))
    req = pb.SubmitRequest(transactions=[stx] * 190)
    answers: dict[str, int] = {}
    lat: list[float] = []
    lock = threading.Lock()
    end = time.monotonic() + duration_s

    def flood() -> None:
        with grpc_channel(ctx["directory"], ctx["leader_address"], "bank-a",
                          options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
            stub = pb_grpc.LedgerServiceStub(ch)
            while time.monotonic() < end:
                t = time.monotonic()
                try:
                    stub.Submit(req, timeout=RPC_TIMEOUT_S)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                with lock:
                    answers[code] = answers.get(code, 0) + 1
                    lat.append(time.monotonic() - t)

    _run_all(flood, [()] * 8, duration_s)
    lat.sort()
    return {"request_bytes": req.ByteSize(), "answers": answers,
            "refusal_p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
            "refusal_max_ms": round(lat[-1] * 1000, 1) if lat else None}


def _raft_frame(ctx: dict, duration_s: float) -> dict:
    """Each socket reconnects as soon as the validator closes it, for ``duration_s``."""
    end = time.monotonic() + duration_s
    stats: dict[str, dict] = {}

    def attack(address: str) -> None:
        host, port = address.rsplit(":", 1)
        sent = connections = 0
        slowest_close = 0.0
        junk = os.urandom(1 << 20)
        while time.monotonic() < end and connections < RAFT_CONNECTIONS_MAX:
            start = time.monotonic()
            connections += 1
            try:
                with socket.create_connection((host, int(port)), timeout=5) as s:
                    s.settimeout(5)
                    s.sendall(struct.pack("i", 0x7FFFFFFF))  # pysyncobj's native signed prefix
                    n = 0
                    while n < RAFT_JUNK_BYTES_MAX and time.monotonic() < end:
                        s.sendall(junk)
                        n += len(junk)
                        sent += len(junk)
            except OSError:
                slowest_close = max(slowest_close, time.monotonic() - start)
        stats[address] = {"connections": connections, "junk_bytes_sent": sent,
                          "slowest_close_s": round(slowest_close, 3)}

    _run_all(attack, [(a,) for a in ctx["raft_addresses"]], duration_s)
    return {"per_port": stats}


def _query_scan(ctx: dict, duration_s: float) -> dict:
    answers, lat = [], []
    lock = threading.Lock()
    end = time.monotonic() + duration_s
    f = pb.AccountFilter(account_id=pb.UInt128(lo=ctx["scan_account"]), code=999, limit=1)

    def scan() -> None:
        with grpc_channel(ctx["directory"], ctx["leader_address"], "bank-a") as ch:
            stub = pb_grpc.LedgerServiceStub(ch)
            while time.monotonic() < end:
                t = time.monotonic()
                try:
                    stub.GetAccountTransfers(pb.GetAccountTransfersRequest(filter=f), timeout=RPC_TIMEOUT_S)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                with lock:
                    answers.append(code)
                    lat.append(time.monotonic() - t)

    _run_all(scan, [()] * 16, duration_s)
    lat.sort()
    return {"queries": len(lat), "history_transfers": ctx["history"],
            "query_p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
            "query_max_ms": round(lat[-1] * 1000, 1) if lat else None,
            "answers": {c: answers.count(c) for c in set(answers)}}


def _linearizable_reads(ctx: dict, duration_s: float) -> dict:
    n = [0]
    lock = threading.Lock()
    end = time.monotonic() + duration_s
    _, _, before = _leader(ctx["directory"])

    def read() -> None:
        with grpc_channel(ctx["directory"], ctx["leader_address"], "bank-a") as ch:
            stub = pb_grpc.LedgerServiceStub(ch)
            while time.monotonic() < end:
                try:
                    stub.GetHead(pb.GetHeadRequest(consistency=pb.READ_CONSISTENCY_LINEARIZABLE), timeout=RPC_TIMEOUT_S)
                    with lock:
                        n[0] += 1
                except grpc.RpcError:
                    pass

    _run_all(read, [()] * 16, duration_s)
    _, _, after = _leader(ctx["directory"])
    entries = after.commit_index - before.commit_index
    return {"reads": n[0], "reads_per_s": round(n[0] / duration_s), "raft_entries_added": entries,
            "entries_per_read": round(entries / n[0], 3) if n[0] else None}


_RUN = {"submit-flood": _submit_flood, "raft-frame": _raft_frame, "query-scan": _query_scan,
        "linearizable-reads": _linearizable_reads}


def _preload_history(directory: str, genesis, transfers: int) -> int:
    """``transfers`` transfers between accounts 1 and 2 of bank-a (batches of 8,190); returns the account."""
    with _client(directory, genesis, "bank-a") as c:
        c.create_accounts([Account(id=1, ledger=840, code=1), Account(id=2, ledger=840, code=1)])
        next_id = 1
        while next_id <= transfers:
            n = min(8_190, transfers - next_id + 1)
            c.create_transfers([Transfer(id=10**9 + next_id + k, debit_account_id=1, credit_account_id=2, amount=1,
                                         ledger=840, code=1) for k in range(n)])
            next_id += n
    return 1


def run_attack(name: str, *, duration_s: float = 10.0, history: int = 131_040, base_port: int = 23100,
               work_dir: str | None = None) -> dict:
    """Run one attack on a fresh cluster; returns the measurements (see the module docstring)."""
    if name not in _RUN:
        raise ValueError(f"unknown attack {name!r}; one of {', '.join(ATTACKS)}")
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ledger-attack-")
        work_dir = tmp.name
    directory = os.path.join(work_dir, "cluster")
    with reserve_ports(cluster_port_offsets(3), start=base_port, step=200) as ports:
        # bank-a issues 840: _preload_history moves money between its unfunded accounts,
        # which under issuance only an issuer's accounts may do (they may go negative).
        generated = init_cluster(directory, 3, ["bank-a", "bank-b"], "127.0.0.1", ports.base, force=True,
                                 issuers={840: ["bank-a"]})
        del generated
        local = LocalCluster(directory)
        local.start_all()
        try:
            local.wait_ready()
            genesis = local.genesis
            ctx = {"directory": directory, "raft_addresses": [v.raft_address for v in genesis.validators], "history": 0}
            if name == "query-scan":
                ctx["scan_account"] = _preload_history(directory, genesis, history)
                ctx["history"] = history
            leader_id, term, _ = _leader(directory)
            ctx["leader_address"] = next(v.grpc_address for v in genesis.validators if v.id == leader_id)
            pid = local.pids[leader_id]
            probe_client = _client(directory, genesis, "bank-b", RetryPolicy(deadline_s=5.0, attempt_timeout_s=2.0))
            probe = Probe(probe_client, pid)
            threads = [threading.Thread(target=probe.run, args=(5 * 10**8,)), threading.Thread(target=probe.sample)]
            cpu0 = _cpu_s(pid)
            start = time.monotonic()
            for t in threads:
                t.start()
            figures = _RUN[name](ctx, duration_s)
            end = time.monotonic()
            cpu1 = _cpu_s(pid)
            probe.stop()
            for t in threads:
                t.join(30)
            probe_client.close()
            leader_after, term_after, _ = _leader(directory)
            return {
                "attack": name, "duration_s": round(end - start, 2), "leader_cpu_s": round(cpu1 - cpu0, 2),
                "leader_rss_peak_mib": round(probe.rss_peak_mib, 1),
                "longest_without_commit_s": round(probe.longest_gap_s(start, end), 3),
                "probe_commits": len(probe.commits), "probe_failures": probe.failures,
                "election": (leader_after, term_after) != (leader_id, term),
                **figures,
            }
        finally:
            local.stop_all()
            if tmp is not None:
                tmp.cleanup()
