"""Part 5: history growth — CPU per applied transfer of the pure core + RocksStore, no network.

Blocks are applied directly (``node.state_machine.StateMachine``: ``apply_block``
then ``node.store.RocksStore.commit``, as the replica does, without Raft or gRPC) in
a temporary directory. History is preloaded with the workload up to each size
in ``HISTORY_SIZES`` (up to ``--history-max``), then a fixed batch of blocks is
timed once RocksDB's compactions of the preload have finished (see _settle).
Reported per transfer: process CPU (all threads, so RocksDB's flushes and
compactions count), the applying thread's CPU, and wall time; the median
block's thread CPU is given too, since a compaction can land in any one block;
and the process CPU of the preload stretch that reached the size (e.g. 10^6 to
10^7), the long-run cost with every flush and compaction included.
"""
from __future__ import annotations

import os
import shutil
import statistics
import time

from raft_ledger_node.bench import ui
from raft_ledger_node.bench.config import HISTORY_BLOCK_TXS, HISTORY_SIZES
from raft_ledger_node.bench.workload import ACCOUNT_CODE, LEDGER, TRANSFER_CODE, Workload, member_names, signed_batch_bytes

#: Events per create_accounts transaction while opening accounts.
OPEN_ACCOUNTS_CHUNK = 8_000


class _Chain:
    """Applies blocks to a RocksStore through the replica's state machine, one Raft index each."""

    def __init__(self, path: str) -> None:
        from raft_ledger_node.state_machine import StateMachine
        from raft_ledger_node.store import RocksStore

        self.store = RocksStore(path)
        self.machine = StateMachine(self.store)
        self.raft_index = 0
        self.timestamp = 1_700_000_000 * 10**9
        self.transfers = 0

    def apply(self, txs: tuple) -> None:
        from raft_ledger_node.ledger.types import Entry

        self.raft_index += 1
        self.timestamp += 10**6
        return self.machine.apply(Entry(proposed_timestamp=self.timestamp, txs=txs), 1, self.raft_index).results


def _tx(member: str, op, events: tuple, envelope_bytes: int, serial: int):
    from raft_ledger_node.crypto import sha256
    from raft_ledger_node.ledger.types import Tx

    # Unique envelope of the real size: the bytes are stored and hashed, never verified here.
    envelope = serial.to_bytes(8, "big") + os.urandom(max(0, envelope_bytes - 8))
    return Tx(member_id=member, operation=op, events=events, envelope=envelope, tx_hash=sha256(envelope))


def run(cfg, work_dir: str) -> dict:
    from raft_ledger_node.ledger.types import Account, Operation, Transfer

    sizes = [s for s in HISTORY_SIZES if s <= cfg.history_max]
    d = os.path.join(work_dir, "history")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    names = member_names(cfg.members)
    wl = Workload(accounts=cfg.accounts, members=cfg.members, skew=cfg.skew, zipf_exponent=cfg.zipf_exponent,
                  batch=cfg.batch, seed=cfg.seed + 1)
    envelope_bytes = signed_batch_bytes(cfg.batch)[1]
    block_transfers = HISTORY_BLOCK_TXS * cfg.batch
    measure_blocks = max(1, cfg.history_measure_transfers // block_transfers)
    ui.step(f"history growth: core + RocksStore in {d}; blocks of {HISTORY_BLOCK_TXS} signed txs × {cfg.batch} transfers; "
            f"{measure_blocks * block_transfers:,} transfers timed at each of {', '.join(f'{s:,}' for s in sizes)} stored")
    chain = _Chain(os.path.join(d, "db"))
    serial = 0
    for mi, m in enumerate(names):
        ids = wl.account_ids(mi)
        for i in range(0, len(ids), OPEN_ACCOUNTS_CHUNK):
            serial += 1
            events = tuple(Account(id=a, ledger=LEDGER, code=ACCOUNT_CODE) for a in ids[i : i + OPEN_ACCOUNTS_CHUNK])
            chain.apply((_tx(m, Operation.create_accounts, events, 64 * len(events), serial),))
    gen = wl.stream(0, 1 << 62)

    def block_txs() -> tuple:
        nonlocal serial
        txs = []
        for _ in range(HISTORY_BLOCK_TXS):
            b = next(gen)
            serial += 1
            events = tuple(Transfer(id=i, debit_account_id=dr, credit_account_id=cr, amount=a, ledger=LEDGER, code=TRANSFER_CODE)
                           for i, dr, cr, a in b.transfers)
            txs.append(_tx(names[b.member], Operation.create_transfers, events, envelope_bytes, serial))
        return tuple(txs)

    rows = []
    preload_s = 0.0
    try:
        for size in sizes:
            need = size - chain.transfers
            preload_cpu_us = None
            if need > 0:
                t = time.monotonic()
                c0, n0 = time.process_time(), chain.transfers
                with ui.progress(f"preload to {size:,}", size) as update:
                    start = chain.transfers
                    while chain.transfers < size:
                        chain.apply(block_txs())
                        chain.transfers += block_transfers
                        if chain.raft_index % 20 == 0:
                            update(chain.transfers, (chain.transfers - start) / (time.monotonic() - t))
                    update(chain.transfers, (chain.transfers - start) / (time.monotonic() - t))
                preload_s += time.monotonic() - t
                # Long-run cost of the stretch just written, every thread included: the
                # flushes and compactions of these writes mostly ran while they went on.
                preload_cpu_us = (time.process_time() - c0) / (chain.transfers - n0) * 1e6
            blocks = [block_txs() for _ in range(measure_blocks)]
            chain.store.flush()
            settle_s = _settle(chain.store)
            per_block = []
            p0, w0 = time.process_time(), time.perf_counter()
            th0 = time.thread_time()
            for txs in blocks:
                b0 = time.thread_time()
                results = chain.apply(txs)
                per_block.append(time.thread_time() - b0)
                assert all(c == 0 for r in results for c in r.codes), "a workload transfer was rejected"
            th = time.thread_time() - th0
            p, w = time.process_time() - p0, time.perf_counter() - w0
            n = measure_blocks * block_transfers
            chain.transfers += n
            row = {
                "stored_transfers": size,
                "measured_transfers": n,
                "cpu_us_per_transfer": p / n * 1e6,
                "thread_cpu_us_per_transfer": th / n * 1e6,
                "wall_us_per_transfer": w / n * 1e6,
                "median_block_thread_cpu_us_per_transfer": statistics.median(per_block) / block_transfers * 1e6,
                "db_bytes": dir_bytes(d),
                "compaction_settle_s": settle_s,
                "preload_cpu_us_per_transfer": preload_cpu_us,
            }
            rows.append(row)
            ui.note(f"{size:>12,} stored: {row['cpu_us_per_transfer']:6.1f} µs CPU/transfer (process), "
                    f"{row['thread_cpu_us_per_transfer']:6.1f} µs (apply thread), median block {row['median_block_thread_cpu_us_per_transfer']:6.1f} µs; "
                    f"DB {row['db_bytes'] / 1e6:,.0f} MB")
        profile = None
        if cfg.profile:
            profile = _profile_core(chain, [block_txs() for _ in range(measure_blocks)], cfg.out_dir)
    finally:
        chain.store.close()
        shutil.rmtree(d, ignore_errors=True)
    base = rows[0]["cpu_us_per_transfer"] if rows else None
    for r in rows:
        r["vs_smallest"] = r["cpu_us_per_transfer"] / base if base else None
    return {"block_transfers": block_transfers, "envelope_bytes": envelope_bytes, "preload_s": preload_s, "rows": rows,
            **({"profile": profile} if profile else {})}


def _profile_core(chain: _Chain, blocks: list, out_dir: str) -> dict | None:
    """pyinstrument profile of applying ``blocks`` (text report in ``out_dir``)."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        ui.warn("pyinstrument not installed: no profile of the core apply (pip install pyinstrument)")
        return None
    prof = Profiler(interval=0.0005)
    prof.start()
    for txs in blocks:
        chain.apply(txs)
    prof.stop()
    path = os.path.join(out_dir, "profile-core-apply.txt")
    with open(path, "w") as f:
        f.write(prof.output_text(unicode=True, color=False, show_all=False))
    ui.note(f"core apply profile (pyinstrument) written to {path}")
    return {"text": path}


#: Longest wait for RocksDB's background work after a preload (seconds).
SETTLE_S_MAX = 300.0


def _settle(store) -> float:
    """Wait until RocksDB has no flush or compaction running or queued; returns the wait (s).

    The preload writes up to 10^7 transfers in a few minutes and leaves a
    compaction backlog behind it; measured without waiting, that backlog (work
    for the preload's writes, not the measured ones) landed in the timed window
    and doubled the process CPU per transfer at 10^7. As in YCSB's load-then-run
    phases, the timed blocks start on a settled database and pay for the flushes
    and compactions they cause themselves.
    """
    t = time.monotonic()
    while store.background_work_pending() and time.monotonic() - t < SETTLE_S_MAX:
        time.sleep(0.25)
    waited = time.monotonic() - t
    if waited >= SETTLE_S_MAX:
        ui.warn(f"RocksDB still compacting after {SETTLE_S_MAX:.0f}s: the measurement includes backlog")
    elif waited > 1:
        ui.note(f"waited {waited:.1f}s for RocksDB's compactions of the preload to finish")
    return waited


def dir_bytes(path: str) -> int:
    """Bytes of the files under ``path`` (files that vanish meanwhile count 0)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total
