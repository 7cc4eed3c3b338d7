"""Part 2: the replication limit — bare pysyncobj, 3 processes, the same bytes, no ledger logic.

:class:`BareReplica` is the smallest replica with our durability: one
``@replicated`` method taking bytes that only counts them, the journal
settings of the validators (``node.raft.conf.make_conf``: journalFile +
fullDumpFile, password, ``appendEntriesUseBatch=False``) and the validators'
replica base class, :class:`~node.raft.durable.DurableReplica`: the fsynced
:class:`~node.raft.journal.DurableFileJournal` (flushed before any
acknowledgement) and :class:`~node.raft.transport.LedgerTransport` (flush before
reply, Raft §5.3 truncation fix). It imports no ledger logic.

The leader process generates the load itself (``concurrency`` threads, one
entry in flight each), so the number is what replication alone can commit.
Entries are real ones: a batch of the workload, signed, decoded and encoded
with ``node.ledger.codec`` exactly as the batcher encodes a one-transaction entry.

Usage: python -m raft_ledger_node.bench.bare_raft   (spec and commands as JSON lines on stdin)
"""
from __future__ import annotations

import json
import math
import os
import struct
import sys
import threading
import time

from pysyncobj import FAIL_REASON, replicated

from raft_ledger_node.bench import ui
from raft_ledger_node.bench.measure import CpuMeter, latency_summary
from raft_ledger_node.bench.proc import JsonLineProcess
from raft_ledger_node.raft.conf import make_conf
from raft_ledger_node.localcluster import reserve_ports
from raft_ledger_node.raft.durable import DurableReplica

PROGRESS_PERIOD_S = 0.5
#: Distinct entries written for the leader to cycle through.
DISTINCT_ENTRIES_MAX = 200
#: Seconds for three processes to elect a leader.
READY_S_MAX = 60.0
#: Seconds without a line from the leader (progress every 0.5 s) before the run counts as stuck.
SILENCE_S_MAX = 60.0


class BareReplica(DurableReplica):
    """A pysyncobj replica with the validators' journal and transport, and an apply that only counts."""

    def __init__(self, self_address: str, peers: list[str], conf) -> None:
        # State before DurableReplica.__init__: the tick thread starts inside it.
        self.applied = 0
        super().__init__(self_address, peers, conf)  # durable journal and Raft fixes on, as the validators'

    @replicated
    def apply_entry(self, entry: bytes):
        self.applied += 1
        return len(entry)


def _emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _read_entries(path: str) -> list[bytes]:
    out = []
    with open(path, "rb") as f:
        while head := f.read(4):
            (n,) = struct.unpack(">I", head)
            out.append(f.read(n))
    return out


def _load(replica: BareReplica, entries: list[bytes], count: int, concurrency: int) -> dict:
    latencies = [float("nan")] * count
    failed = 0
    lock = threading.Lock()
    nxt = iter(range(count))
    done = 0
    nbytes = 0
    t0 = time.monotonic()
    last_done = t0

    def worker() -> None:
        nonlocal failed, done, nbytes, last_done
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            entry = entries[i % len(entries)]
            ev = threading.Event()
            outcome = []

            def cb(res, err, outcome=outcome, ev=ev):
                outcome.append(err)
                ev.set()

            start = time.monotonic()
            replica.apply_entry(entry, callback=cb)
            ok = ev.wait(30.0) and outcome[0] == FAIL_REASON.SUCCESS
            end = time.monotonic()
            lat = end - start
            with lock:
                done += 1
                last_done = max(last_done, end)
                if ok:
                    latencies[i] = lat
                    nbytes += len(entry)
                else:
                    failed += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(PROGRESS_PERIOD_S)
        with lock:
            _emit(event="progress", entries=done, elapsed_s=time.monotonic() - t0)
    for t in threads:
        t.join()
    # The last completion, not now: the loop above wakes every PROGRESS_PERIOD_S.
    elapsed = last_done - t0
    return dict(elapsed_s=elapsed, entries=count - failed, failed=failed, bytes=nbytes,
                latencies_s=[x for x in latencies if x == x])


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    os.makedirs(spec["dir"], exist_ok=True)
    conf = make_conf(
        journal_file=os.path.join(spec["dir"], "journal"),
        full_dump_file=os.path.join(spec["dir"], "snapshot"),
        password=spec["password"],
        bind_address=spec["self"],
    )
    replica = BareReplica(spec["self"], spec["peers"], conf)
    entries = _read_entries(spec["entries_file"])
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "status":
            _emit(event="status", ready=replica.isReady(), leader=replica.is_leader(), applied=replica.applied)
        elif cmd["cmd"] == "run":
            _emit(event="done", **_load(replica, entries, cmd["count"], cmd["concurrency"]))
        elif cmd["cmd"] == "quit":
            break
    replica.destroy()
    return 0


# -- orchestration (runs in the bench process) ------------------------------------------


def build_entries(wl, count: int) -> list[bytes]:
    """Encoded one-transaction entries of the workload's first batches, as the batcher encodes them."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from raft_ledger_client import LedgerClient, Transfer
    from raft_ledger_node.crypto import sha256
    from raft_ledger_node.ledger import codec
    from raft_ledger_node.ledger.types import Entry, Operation, Transfer as CoreTransfer, Tx
    from raft_ledger_node.bench.workload import LEDGER, TRANSFER_CODE, member_names

    names = member_names(wl.members)
    signers = [LedgerClient(["127.0.0.1:1"], member_id=n, key_id="k1", private_key=Ed25519PrivateKey.generate(), chain_id="bench",
                              insecure=True) for n in names]  # signing only: never connects
    out = []
    for b in wl.batches(0, count):
        rows = b.transfers
        stx = signers[b.member].sign_transfers(
            Transfer(id=i, debit_account_id=d, credit_account_id=c, amount=a, ledger=LEDGER, code=TRANSFER_CODE) for i, d, c, a in rows
        )
        envelope = stx.SerializeToString(deterministic=True)
        events = tuple(CoreTransfer(id=i, debit_account_id=d, credit_account_id=c, amount=a, ledger=LEDGER, code=TRANSFER_CODE) for i, d, c, a in rows)
        tx = Tx(member_id=names[b.member], operation=Operation.create_transfers, events=events, envelope=envelope, tx_hash=sha256(envelope))
        out.append(codec.encode_entry(Entry(proposed_timestamp=time.time_ns(), txs=(tx,))))
    for s in signers:
        s.close()
    return out


def run(cfg, wl, work_dir: str) -> dict:
    """Run the bare-pysyncobj phase on ports ``base+201..203`` held for its whole duration
    (``raft_entries`` 0: skipped, nothing started)."""
    if not cfg.raft_entries:
        return {"skipped": "count 0"}
    with reserve_ports([201, 202, 203], start=cfg.base_port, step=1000, probes_max=20) as ports:
        return _run(cfg, wl, work_dir, ports.base)


def _run(cfg, wl, work_dir: str, base: int) -> dict:
    import secrets

    addrs = [f"127.0.0.1:{base + 200 + i}" for i in (1, 2, 3)]
    d = os.path.join(work_dir, "bare-raft")
    os.makedirs(d, exist_ok=True)
    entries = build_entries(wl, min(cfg.raft_entries, DISTINCT_ENTRIES_MAX))
    entries_file = os.path.join(d, "entries.bin")
    with open(entries_file, "wb") as f:
        for e in entries:
            f.write(struct.pack(">I", len(e)) + e)
    mean_bytes = sum(len(e) for e in entries) / len(entries)
    ui.step(f"bare pysyncobj: 3 processes on {addrs[0]}..{base + 203}, {cfg.raft_entries:,} entries of ≈{mean_bytes:,.0f} bytes "
            f"(one signed batch of {cfg.batch} each), {cfg.concurrency} in flight")
    password = secrets.token_urlsafe(24)
    procs = []
    try:
        for i, a in enumerate(addrs):
            p = JsonLineProcess([sys.executable, "-m", "raft_ledger_node.bench.bare_raft"], log_path=os.path.join(d, f"r{i + 1}.log"))
            p.send({"self": a, "peers": [x for x in addrs if x != a], "dir": os.path.join(d, f"r{i + 1}"),
                    "password": password, "entries_file": entries_file})
            procs.append(p)
        deadline = time.monotonic() + READY_S_MAX
        leader = None
        while time.monotonic() < deadline:
            sts = []
            for p in procs:
                p.send({"cmd": "status"})
                sts.append(p.recv_event("status", 10))
            if all(s["ready"] for s in sts) and sum(s["leader"] for s in sts) == 1:
                leader = procs[[s["leader"] for s in sts].index(True)]
                break
            time.sleep(0.3)
        if leader is None:
            raise RuntimeError(f"bare pysyncobj cluster elected no leader within {READY_S_MAX:.0f}s (logs in {d})")
        meter = CpuMeter(lambda: [p.pid for p in procs])
        meter.start()
        leader.send({"cmd": "run", "count": cfg.raft_entries, "concurrency": cfg.concurrency})
        with ui.progress("bare pysyncobj", cfg.raft_entries, unit="entries") as update:
            done = leader.recv_event("done", SILENCE_S_MAX, on_other=lambda m: update(m["entries"], m["entries"] / max(1e-9, m["elapsed_s"])))
            update(done["entries"] + done["failed"], done["entries"] / done["elapsed_s"])
        cpu = meter.stop()
        for p in procs:
            p.send({"cmd": "quit"})
    finally:
        for p in procs:
            p.stop()
    eps = done["entries"] / done["elapsed_s"]
    transfers = done["entries"] * cfg.batch
    res = {
        "entries": done["entries"],
        "entries_failed": done["failed"],
        "entry_bytes_mean": mean_bytes,
        "elapsed_s": done["elapsed_s"],
        "entries_per_s": eps,
        "bytes_per_s": done["bytes"] / done["elapsed_s"],
        "transfers_per_s": eps * cfg.batch,
        "latency": latency_summary(done["latencies_s"]),
        "latencies_s": done["latencies_s"],
        "cpu_s": cpu,
        "cpu_us_per_transfer": cpu / transfers * 1e6 if transfers else math.nan,
        "machine_cpu_s": meter.machine_seconds,
        "other_cpu_s": None if meter.machine_seconds is None else max(0.0, meter.machine_seconds - cpu),
    }
    ui.note(f"{eps:,.0f} entries/s = {res['transfers_per_s']:,.0f} transfers/s equivalent "
            f"({res['bytes_per_s'] / 1e6:.1f} MB/s); p50 {res['latency']['p50_ms']:.1f} ms, p99 {res['latency']['p99_ms']:.1f} ms")
    return res


if __name__ == "__main__":
    sys.exit(main())
