"""A full disk under load (issue 15, item 3): the validator stops cleanly, the others go on.

A follower's data directory is put on a tmpfs a few MB larger than what it holds
(chaos/disks.py), and two banks submit transfers until it fills. The follower must
stop by itself with exit code 74 (EX_IOERR) and its "storage write failed" log line
naming the error (RocksDB writes: raft/replica.py; journal and meta writes:
raft/journal_guard.py, which preallocates the journal so a full disk is ENOSPC, not
a SIGBUS). The two others are a majority and keep committing (Raft §5.4). Then the
disk grows (``mount -o remount,size=``), the follower starts again and catches up
(Raft §5.3: the leader brings its log in line): every acknowledged transfer is on
it, and all three report the same balances and the same chain head.

Needs root to mount a tmpfs (CI runs as root); skipped with the reason otherwise.
"""
from __future__ import annotations

import os
import threading
import time

import pytest

from conftest import running_cluster
from raft_ledger_chaos.disks import EXIT_STORAGE_FAILURE, STORAGE_FAILURE_MARK, SmallDisk, last_lines, mount_supported, wait_exit
from raft_ledger_client import Account, RetryPolicy, Timeout, Transfer, Unavailable

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(mount_supported() is not None, reason=f"full-disk drill: {mount_supported()}"),
]

#: This module's port range (issue 15's full/bad-disk part: 45000-46999).
START_PORT = 45_000
LEDGER = 840
ACCOUNTS = 8
TRANSFERS_PER_TX = 50
#: Free space on the follower's tmpfs when it starts (bytes).
HEADROOM_BYTES = 3 * 1024 * 1024
FILL_TIMEOUT_S = 120.0
#: After the follower stopped, the majority must acknowledge this many more transfers within
MAJORITY_ACKS_MIN = 200
MAJORITY_TIMEOUT_S = 30.0
CATCH_UP_TIMEOUT_S = 60.0
GROW_BYTES = 256 * 1024 * 1024
#: Transfers looked up per call when checking the restarted follower.
LOOKUP_CHUNK = 200
RETRY = RetryPolicy(deadline_s=8.0, attempt_timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.5)


def _load(client, ids: list[int], first_id: int, stop: threading.Event, acked: list[int], errors: list[str]) -> None:
    next_id = first_id
    n = 0
    while not stop.is_set():
        batch = []
        for k in range(TRANSFERS_PER_TX):
            dr, cr = ids[(n + k) % len(ids)], ids[(n + k + 1 + n % 3) % len(ids)]
            batch.append(Transfer(id=next_id, debit_account_id=dr, credit_account_id=cr, amount=next_id % 97 + 1,
                                  ledger=LEDGER, code=1))
            next_id += 1
        n += 1
        try:
            results = client.create_transfers(batch)
        except (Timeout, Unavailable):
            continue  # outcome unknown: not counted as acknowledged
        for t, r in zip(batch, results):
            if r.name in ("ok", "exists"):
                acked.append(t.id)
            else:
                errors.append(f"{t.id}: {r.name}")


def _heads(c) -> dict[str, tuple[int, bytes] | None]:
    out = {}
    for v, st in c.status(timeout_s=1.0):
        out[v.id] = None if isinstance(st, Exception) else (st.head.height, bytes(st.head.hash))
    return out


def test_full_disk_stops_the_validator_with_74_and_it_catches_up_after_space_is_freed(tmp_path):
    t_start = time.monotonic()
    with running_cluster(str(tmp_path / "cluster"), START_PORT) as c:
        leader = c.leader()
        follower = c.followers(leader)[0]
        bank = c.client("bank-a", retry=RETRY)
        ids = [9_000 + i for i in range(ACCOUNTS)]
        assert all(r.ok for r in bank.create_accounts([Account(id=i, ledger=LEDGER, code=1) for i in ids]))

        c.local.stop(follower)
        disk = SmallDisk(os.path.join(c.directory, follower, "data"))
        size = disk.mount(HEADROOM_BYTES)
        stop = threading.Event()
        acked: list[int] = []
        errors: list[str] = []
        loader = threading.Thread(target=_load, args=(bank, ids, 1_000_000, stop, acked, errors), daemon=True)
        try:
            c.local.start(follower)
            loader.start()
            rc = wait_exit(c.local.procs[follower], FILL_TIMEOUT_S)
            log_tail = last_lines(c.local.log_path(follower), 60)
            assert rc == EXIT_STORAGE_FAILURE, (rc, size, log_tail[-20:])
            failure = [ln for ln in log_tail if STORAGE_FAILURE_MARK in ln]
            assert failure, log_tail[-20:]
            assert "No space left on device" in failure[-1], failure[-1]
            assert disk.free_bytes() < HEADROOM_BYTES
            filled_s = time.monotonic() - t_start

            # The other two are a majority: they keep acknowledging.
            before = len(acked)
            deadline = time.monotonic() + MAJORITY_TIMEOUT_S
            while len(acked) < before + MAJORITY_ACKS_MIN and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(acked) >= before + MAJORITY_ACKS_MIN, (before, len(acked), errors[:5])
            assert all(c.local.procs[v].poll() is None for v in c.local.procs if v != follower)

            # Free space, restart: it catches up with nothing lost.
            disk.grow(GROW_BYTES)
            c.local.start(follower)
            time.sleep(2.0)
            stop.set()
            loader.join(RETRY.deadline_s + 5)
            assert not loader.is_alive()
            assert not errors, errors[:5]
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
            heads = _heads(c)
            while time.monotonic() < deadline:
                heads = _heads(c)
                if None not in heads.values() and len(set(heads.values())) == 1:
                    break
                time.sleep(0.5)
            assert None not in heads.values() and len(set(heads.values())) == 1, heads
            assert c.local.procs[follower].poll() is None

            addresses = c.addresses
            balances = {}
            for vid, addr in addresses.items():
                accounts = bank.lookup_accounts(ids, address=addr)
                balances[vid] = sorted((a.id, a.debits_posted, a.credits_posted) for a in accounts)
            assert len({tuple(b) for b in balances.values()}) == 1, balances
            assert sum(d for _, d, _ in balances[follower]) == sum(cr for _, _, cr in balances[follower])
            found = set()
            for i in range(0, len(acked), LOOKUP_CHUNK):
                found |= {t.id for t in bank.lookup_transfers(acked[i:i + LOOKUP_CHUNK],
                                                              address=addresses[follower])}
            assert found == set(acked), len(set(acked) - found)
            print(f"\ndisk-full: tmpfs {size} bytes; {follower} exited {rc} after {filled_s:.1f} s: "
                  f"{failure[-1][-300:]}\n{len(acked)} transfers acknowledged, all on {follower} after catch-up")
        finally:
            stop.set()
            loader.join(RETRY.deadline_s + 5) if loader.is_alive() else None
            bank.close()
            c.local.stop_all()
            disk.unmount(keep_data=False)


#: A journal writer on a full tmpfs: appends entries of 4 KiB until the disk is full.
_FILL_JOURNAL = r"""
import sys
from {module} import {cls} as Journal
j = Journal(sys.argv[1])
for i in range(1, 100_000):
    j.add(b"x" * 4096, i, 1)
    if hasattr(j, "sync"):
        j.sync()
print("never full", flush=True)
"""


@pytest.mark.parametrize("module,cls,expected", [
    ("raft_ledger_node.raft.journal", "DurableFileJournal", EXIT_STORAGE_FAILURE),
    # The defect it fixes: pysyncobj's journal grows its mmap with ftruncate; the first
    # store into a page the full disk cannot back is a SIGBUS, with no message at all.
    ("pysyncobj.journal", "FileJournal", -7),
])
def test_a_full_disk_under_the_raft_journal_is_exit_74_with_a_message_not_a_sigbus(tmp_path, module, cls, expected):
    import subprocess
    import sys

    mnt = tmp_path / "disk"
    mnt.mkdir()
    disk = SmallDisk(str(mnt))
    disk.mount(1024 * 1024)
    try:
        p = subprocess.run([sys.executable, "-c", _FILL_JOURNAL.format(module=module, cls=cls), str(mnt / "journal")],
                           capture_output=True, text=True, timeout=60)
    finally:
        disk.unmount(keep_data=False)
    assert p.returncode == expected, (p.returncode, p.stdout[-500:], p.stderr[-2000:])
    if expected == EXIT_STORAGE_FAILURE:
        assert STORAGE_FAILURE_MARK in p.stderr and "No space left on device" in p.stderr, p.stderr[-2000:]
        assert "Traceback" not in p.stderr
        print(f"\n{cls}: exit {p.returncode}: {p.stderr.strip().splitlines()[-1][:300]}")
