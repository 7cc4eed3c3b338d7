"""Micro-benchmark: RocksDB keys and µs per applied transfer, two store builds side by side.

Usage (the baseline is another build's ``node/store.py``, e.g. main's)::

    git show main:node/store.py > /tmp/store_main.py
    .venv/bin/python -m raft_ledger_node.bench.store_writes --baseline /tmp/store_main.py

Each store gets its own temporary RocksDB, the same accounts (``--accounts``,
uniform over ``--members`` members) and the same preload of ``--stored``
transfers, applied as blocks of one create_transfers transaction of
``--block-transfers`` transfers through the replica's state machine
(``StateMachine.apply``: ``apply_block`` then ``store.commit``). Then
``--blocks`` further blocks are timed, alternating between the stores block by
block so that load from other processes falls on both alike. Printed per
transfer: WriteBatch keys (``len(WriteBatch)`` of each ``commit``), the applying
thread's CPU for apply + commit, for ``commit`` alone (the store's Python and
RocksDB's ``write``) and for the ``write`` inside it, as medians over the timed
blocks. ``--tune`` adds this build with one RocksDB setting changed (TUNINGS).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time

from raft_ledger_node.bench.history import _tx
from raft_ledger_node.bench.workload import ACCOUNT_CODE, LEDGER, TRANSFER_CODE, Workload, member_names


def _tune_db(mod, change) -> None:
    opts = mod._opts

    def tuned():
        o = opts()
        change(o)
        return o

    mod._opts = tuned


def _tune_cf(mod, names, change) -> None:
    cf_opts = mod._cf_opts

    def tuned(name, cache):
        o = cf_opts(name, cache)
        if name in names:
            change(o)
        return o

    mod._cf_opts = tuned


def _tune_write(mod, change) -> None:
    cls = mod.RocksStore
    init = cls.__init__

    def tuned(self, *a, **kw):
        init(self, *a, **kw)
        change(self._wo)

    cls.__init__ = tuned


def _no_concurrent(o) -> None:
    o.set_allow_concurrent_memtable_write(False)
    o.set_enable_write_thread_adaptive_yield(False)


def _inplace(o) -> None:
    o.set_inplace_update_support(True)


#: Variants of this build, one RocksDB setting each (applied to a private copy of the module).
TUNINGS = {
    "no-wal": lambda m: _tune_write(m, lambda wo: setattr(wo, "disable_wal", True)),
    "no-concurrent-memtable": lambda m: _tune_db(m, _no_concurrent),
    "accounts-inplace": lambda m: (_tune_db(m, _no_concurrent), _tune_cf(m, {"accounts"}, _inplace)),
    "no-accounts-inplace": lambda m: _tune_cf(m, {"accounts"}, lambda o: o.set_inplace_update_support(False)),
    "insert-hint": lambda m: _tune_write(m, lambda wo: setattr(wo, "memtable_insert_hint_per_batch", True)),
    "write-buffer-256m": lambda m: _tune_cf(m, {"accounts", "transfers", "account_transfers"},
                                            lambda o: o.set_write_buffer_size(256 << 20)),
}


def _load_store_module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class _CountingDB:
    """The store's Rdict, counting the keys of every WriteBatch written through it."""

    def __init__(self, db, counter) -> None:
        self._db, self._counter = db, counter

    def write(self, wb, wo) -> None:
        self._counter.keys += len(wb)
        t = time.thread_time()
        try:
            self._db.write(wb, wo)
        finally:
            self._counter.write_s += time.thread_time() - t

    def __getattr__(self, name):
        return getattr(self._db, name)


class _Counted:
    """One store build under test: counts WriteBatch keys and times ``commit``."""

    def __init__(self, label: str, module, path: str) -> None:
        from raft_ledger_node.state_machine import StateMachine

        self.label = label
        self.store = module.RocksStore(path)
        self.machine = StateMachine(self.store)
        self.keys = 0
        self.commit_s = 0.0
        self.write_s = 0.0
        self.store._db = _CountingDB(self.store._db, self)
        real_commit = self.store.commit

        def commit(ws, applied_index):
            t = time.thread_time()
            try:
                return real_commit(ws, applied_index)
            finally:
                self.commit_s += time.thread_time() - t

        self.store.commit = commit
        self.raft_index = 0
        self.timestamp = 1_700_000_000 * 10**9

    def apply(self, txs: tuple):
        from raft_ledger_node.ledger.types import Entry

        self.raft_index += 1
        self.timestamp += 10**6
        return self.machine.apply(Entry(proposed_timestamp=self.timestamp, txs=txs), 1, self.raft_index).results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", help="path of another build's node/store.py to compare against")
    ap.add_argument("--stored", type=int, default=100_000, help="transfers preloaded before timing")
    ap.add_argument("--blocks", type=int, default=200, help="blocks timed per store")
    ap.add_argument("--block-transfers", type=int, default=100)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tune", action="append", default=[], choices=sorted(TUNINGS),
                    help="also run this build with one RocksDB setting changed (repeatable)")
    args = ap.parse_args(argv)
    from raft_ledger_node import store as current
    from raft_ledger_node.ledger.types import Account, Operation, Transfer

    work = tempfile.mkdtemp(prefix="store-writes-")
    builds = [("this build", current)]
    if args.baseline:
        builds.insert(0, ("baseline", _load_store_module(args.baseline, "raft_ledger_store_baseline")))
    for name in args.tune:
        mod = _load_store_module(current.__file__, f"raft_ledger_store_{name.replace('-', '_')}")
        TUNINGS[name](mod)
        builds.append((name, mod))
    names = member_names(args.members)
    runs: list[_Counted] = []
    try:
        for i, (label, mod) in enumerate(builds):
            runs.append(_Counted(label, mod, os.path.join(work, f"db{i}")))
        # The same stream of blocks for every store.
        wl = Workload(accounts=args.accounts, members=args.members, skew="uniform", zipf_exponent=1.0,
                      batch=args.block_transfers, seed=args.seed)
        serial = 0
        opening = []
        for mi, m in enumerate(names):
            ids = wl.account_ids(mi)
            for j in range(0, len(ids), 8000):
                serial += 1
                events = tuple(Account(id=a, ledger=LEDGER, code=ACCOUNT_CODE) for a in ids[j : j + 8000])
                opening.append((_tx(m, Operation.create_accounts, events, 64 * len(events), serial),))
        gen = wl.stream(0, 1 << 62)

        def block() -> tuple:
            nonlocal serial
            b = next(gen)
            serial += 1
            events = tuple(Transfer(id=i, debit_account_id=dr, credit_account_id=cr, amount=a, ledger=LEDGER,
                                    code=TRANSFER_CODE) for i, dr, cr, a in b.transfers)
            return (_tx(names[b.member], Operation.create_transfers, events, 200 + 90 * len(events), serial),)

        for txs in opening:
            for r in runs:
                r.apply(txs)
        t0 = time.monotonic()
        for _ in range(args.stored // args.block_transfers):
            txs = block()
            for r in runs:
                r.apply(txs)
        print(f"preloaded {args.stored:,} transfers over {args.accounts:,} accounts into {len(runs)} store(s) "
              f"in {time.monotonic() - t0:.1f}s", flush=True)
        for r in runs:
            r.store.flush()
        per = {r.label: {"keys": [], "total": [], "commit": [], "write": []} for r in runs}
        for _ in range(args.blocks):
            txs = block()
            for r in runs:
                k0, c0, w0 = r.keys, r.commit_s, r.write_s
                t = time.thread_time()
                results = r.apply(txs)
                total = time.thread_time() - t
                assert all(c == 0 for res in results for c in res.codes), "a workload transfer was rejected"
                n = args.block_transfers
                per[r.label]["keys"].append((r.keys - k0) / n)
                per[r.label]["total"].append(total / n * 1e6)
                per[r.label]["commit"].append((r.commit_s - c0) / n * 1e6)
                per[r.label]["write"].append((r.write_s - w0) / n * 1e6)
        print(f"{args.blocks} blocks of {args.block_transfers} transfers each, at {args.stored:,} stored "
              "(medians per transfer, applying thread CPU):")
        print(f"{'store':<24} {'keys/transfer':>14} {'apply+commit µs':>16} {'commit µs':>10} {'of it write µs':>15}")
        for r in runs:
            p = per[r.label]
            print(f"{r.label:<24} {statistics.mean(p['keys']):>14.2f} {statistics.median(p['total']):>16.1f} "
                  f"{statistics.median(p['commit']):>10.1f} {statistics.median(p['write']):>15.1f}")
    finally:
        for r in runs:
            r.store.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
