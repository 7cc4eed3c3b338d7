"""chaos/lazyfs.py: the power-loss file system, mounted for real (FUSE) and driven with plain file I/O.

The model under test (the module's docstring): data survives a power cut only after fsync (or
msync of a shared mapping) of the file; a directory entry only after fsync of its directory.
Skipped where libfuse 3 / fusermount3 / /dev/fuse or the `lazyfs` extra are missing.
"""

from __future__ import annotations

import mmap
import os
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration

mount_wait_s_max = 10.0


def _fuse_available() -> str | None:
    if shutil.which("fusermount3") is None:
        return "fusermount3 missing (Debian's fuse3; deploy/local/setup.sh installs it)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse missing"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as error:
        return f"mfusepy (the lazyfs extra) not importable: {error}"
    return None


@pytest.fixture
def lazyfs(tmp_path):
    reason = _fuse_available()
    if reason:
        pytest.skip(reason)
    backing, mnt, control = tmp_path / "backing", tmp_path / "mnt", str(tmp_path / "control.sock")
    backing.mkdir()
    mnt.mkdir()
    log = open(tmp_path / "lazyfs.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "raft_ledger_chaos.lazyfs", str(backing), str(mnt), "--control", control],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + mount_wait_s_max
    while not (os.path.ismount(mnt) and os.path.exists(control)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"lazyfs did not mount: {(tmp_path / 'lazyfs.log').read_text()}")
        time.sleep(0.05)
    from raft_ledger_chaos import lazyfs as module

    yield mnt, backing, lambda: module.power_cut(control)
    subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def _write(path, data: bytes, *, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_write_then_fsync_survives_a_power_cut(lazyfs):
    mnt, backing, cut = lazyfs
    _write(mnt / "journal", b"entry-1\n", fsync=True)
    _fsync_dir(mnt)
    cut()
    assert (mnt / "journal").read_bytes() == b"entry-1\n"
    assert (backing / "journal").read_bytes() == b"entry-1\n"


def test_write_without_fsync_is_lost_and_the_file_reverts_to_its_synced_size(lazyfs):
    mnt, backing, cut = lazyfs
    _write(mnt / "journal", b"synced\n", fsync=True)
    _fsync_dir(mnt)
    with open(mnt / "journal", "ab") as f:
        f.write(b"not synced\n" * 1000)
    # Before the cut the mount shows the write; the backing file does not have it yet.
    assert (mnt / "journal").read_bytes() == b"synced\n" + b"not synced\n" * 1000
    assert (backing / "journal").read_bytes() == b"synced\n"
    cut()
    assert (mnt / "journal").read_bytes() == b"synced\n"
    assert os.stat(mnt / "journal").st_size == len(b"synced\n")


def test_overwrite_and_truncate_without_fsync_revert(lazyfs):
    mnt, _, cut = lazyfs
    _write(mnt / "meta", b"A" * 10000, fsync=True)
    _fsync_dir(mnt)
    fd = os.open(mnt / "meta", os.O_RDWR)
    os.pwrite(fd, b"B" * 10, 4090)
    os.ftruncate(fd, 5000)
    os.ftruncate(fd, 8000)  # the region 5000..8000 now reads as zeros, not the old A's
    os.close(fd)
    data = (mnt / "meta").read_bytes()
    assert data == b"A" * 4090 + b"B" * 10 + b"A" * 900 + bytes(3000)
    cut()
    assert (mnt / "meta").read_bytes() == b"A" * 10000


@pytest.mark.parametrize("sync", ["msync", "fdatasync"])
def test_msync_of_a_shared_mapping_is_durable_and_an_unsynced_mapping_write_is_not(lazyfs, sync):
    """msync(MS_SYNC) (the Raft journal's mmap.flush) and fdatasync of the mapped file
    (node/bench/journal_sync.py compares them) both make the mapping's pages durable."""
    mnt, _, cut = lazyfs
    _write(mnt / "journal.mm", bytes(8192), fsync=True)
    _fsync_dir(mnt)
    with open(mnt / "journal.mm", "r+b") as f:
        m = mmap.mmap(f.fileno(), 8192)
        m[0:5] = b"first"
        if sync == "msync":
            m.flush()  # msync(MS_SYNC): WRITE then FSYNC reach the file system
        else:
            os.fdatasync(f.fileno())
        m[4096:4102] = b"second"  # never synced
        m.close()
    cut()
    data = (mnt / "journal.mm").read_bytes()
    assert data[0:5] == b"first"
    assert data[4096:4102] == bytes(6)


def test_created_file_without_directory_fsync_disappears_even_if_its_data_was_synced(lazyfs):
    mnt, _, cut = lazyfs
    _write(mnt / "new.sst", b"data", fsync=True)
    cut()
    assert not (mnt / "new.sst").exists()
    _write(mnt / "kept.sst", b"data", fsync=True)
    _fsync_dir(mnt)
    cut()
    assert (mnt / "kept.sst").read_bytes() == b"data"


def test_rename_without_directory_fsync_is_undone(lazyfs):
    mnt, _, cut = lazyfs
    _write(mnt / "CURRENT", b"MANIFEST-1\n", fsync=True)
    _write(mnt / "CURRENT.tmp", b"MANIFEST-2\n", fsync=True)
    _fsync_dir(mnt)
    os.rename(mnt / "CURRENT.tmp", mnt / "CURRENT")  # the atomic-replace idiom, without the dir fsync
    assert (mnt / "CURRENT").read_bytes() == b"MANIFEST-2\n"
    cut()
    assert (mnt / "CURRENT").read_bytes() == b"MANIFEST-1\n"
    assert (mnt / "CURRENT.tmp").read_bytes() == b"MANIFEST-2\n"
    os.rename(mnt / "CURRENT.tmp", mnt / "CURRENT")
    _fsync_dir(mnt)
    cut()
    assert (mnt / "CURRENT").read_bytes() == b"MANIFEST-2\n"
    assert not (mnt / "CURRENT.tmp").exists()


def test_unlink_and_mkdir_without_directory_fsync_are_undone(lazyfs):
    mnt, _, cut = lazyfs
    _write(mnt / "old.log", b"old", fsync=True)
    _fsync_dir(mnt)
    os.unlink(mnt / "old.log")
    os.mkdir(mnt / "db")
    _write(mnt / "db" / "000001.log", b"x", fsync=True)
    _fsync_dir(mnt / "db")
    assert sorted(os.listdir(mnt)) == ["db"]
    cut()
    assert sorted(os.listdir(mnt)) == ["old.log"]
    assert (mnt / "old.log").read_bytes() == b"old"


_rocksdb_child = r"""
import os, signal, sys
import rocksdict
o = rocksdict.Options(raw_mode=True); o.create_if_missing(True)
db = rocksdict.Rdict(sys.argv[1], o)
synced = rocksdict.WriteOptions(); synced.sync = True
db.put(b"synced", b"1", synced)
db.put(b"unsynced", b"2")  # in the WAL, never fsynced
os.kill(os.getpid(), signal.SIGKILL)  # the validator dies with the machine
"""


def test_rocksdb_keeps_a_synced_write_and_loses_an_unsynced_one_across_kill_and_power_cut(lazyfs):
    # Without the file system, SIGKILL alone loses nothing: the page cache keeps the WAL.
    mnt, _, cut = lazyfs
    db = mnt / "db"
    os.mkdir(db)
    _fsync_dir(mnt)  # the harness makes the data directory durable before the validator starts
    child = subprocess.run([sys.executable, "-c", _rocksdb_child, str(db)], timeout=60)
    assert child.returncode == -9
    cut()
    import rocksdict

    o = rocksdict.Options(raw_mode=True)
    reopened = rocksdict.Rdict(str(db), o)
    try:
        assert reopened.get(b"synced") == b"1"
        assert reopened.get(b"unsynced") is None
    finally:
        reopened.close()
