"""Full disks for the drills: a validator's data directory on a small tmpfs that fills under load.

:class:`SmallDisk` mounts a size-limited tmpfs (``mount -t tmpfs -o size=...``, root
only) over a validator's stopped data directory, copying what it held in, and can
grow it (``mount -o remount,size=...``) and take it away again (copying the data
back onto the real disk first). The ``disk-full`` fault (chaos/nemesis.py) uses it
through :func:`fill_disk` and :func:`heal_disks`:

1. stop a follower (SIGTERM), put its data directory on a tmpfs of its current size
   plus ``headroom_bytes``, start it again;
2. under the bank workload the disk fills; the validator must stop by itself with
   exit code 74 (EX_IOERR) and its "storage write failed" log line (RocksDB writes:
   raft/replica.py; journal and meta writes: raft/journal_guard.py), while the other
   two keep committing;
3. at heal the disk grows by ``GROW_BYTES`` and the validator starts again; the
   checkers then show it caught up with nothing lost.

An exit with any other code (a SIGBUS is -7) stays an unexpected exit, which the
drill's checkers report.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

#: Free space left on a validator's tmpfs when it is put there (bytes): a few seconds of
#: the bank workload (about 150 KB/s of journal and RocksDB writes here).
HEADROOM_BYTES = 2 * 1024 * 1024
#: How much a full disk grows at heal (bytes).
GROW_BYTES = 256 * 1024 * 1024
#: How long fill_disk waits for the validator to stop on the full disk (seconds).
FILL_WAIT_S = 45.0
#: The fail-stop exit code of a validator whose storage write failed (raft/replica.py).
EXIT_STORAGE_FAILURE = 74
#: Bound on one mount/umount command (seconds).
MOUNT_TIMEOUT_S = 20.0
#: The log line a validator writes when it stops on a failed storage write.
STORAGE_FAILURE_MARK = "storage write failed"
_PAGE = 4096


class DiskError(RuntimeError):
    """A small disk cannot be made here (not root, no tmpfs, mount refused)."""


def mount_supported() -> str | None:
    """None if this process may mount a tmpfs, else why not (for a skip reason)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI runs as root)"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount not on PATH"
    return None


def _run(*cmd: str) -> None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=MOUNT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DiskError(f"{' '.join(cmd)}: {e}") from e
    if r.returncode != 0:
        raise DiskError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}")


def tree_bytes(path: str) -> int:
    """Bytes allocated by the files under ``path`` (st_blocks, so sparse files count as stored)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def _round_up(n: int) -> int:
    return (n + _PAGE - 1) // _PAGE * _PAGE


class SmallDisk:
    """A tmpfs of ``size_bytes`` mounted over the directory ``path`` (made by :meth:`mount`)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.size_bytes = 0
        self.mounted = False

    def mount(self, headroom_bytes: int = HEADROOM_BYTES) -> int:
        """Put what ``path`` holds on a new tmpfs of its size plus ``headroom_bytes``; return
        the size (bytes). The directory must not be in use. Raises DiskError."""
        why = mount_supported()
        if why is not None:
            raise DiskError(why)
        staging = self.path + ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        os.rename(self.path, staging)
        os.mkdir(self.path, 0o700)
        size = _round_up(tree_bytes(staging) + headroom_bytes)
        try:
            _run("mount", "-t", "tmpfs", "-o", f"size={size // 1024}k,mode=0700", "tmpfs", self.path)
        except DiskError:
            os.rmdir(self.path)
            os.rename(staging, self.path)
            raise
        self.mounted, self.size_bytes = True, size
        shutil.copytree(staging, self.path, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(staging)
        return size

    def grow(self, extra_bytes: int = GROW_BYTES) -> int:
        """Make the tmpfs ``extra_bytes`` larger (free space); return the new size. Raises DiskError."""
        size = _round_up(self.size_bytes + extra_bytes)
        _run("mount", "-o", f"remount,size={size // 1024}k", self.path)
        self.size_bytes = size
        return size

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def unmount(self, keep_data: bool = True) -> None:
        """Unmount (the directory must not be in use), copying the data back onto the real disk
        first if ``keep_data``. Idempotent."""
        if not self.mounted:
            return
        staging = self.path + ".staging"
        if keep_data:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(self.path, staging, symlinks=True)
        _run("umount", self.path)
        self.mounted = False
        if keep_data:
            os.rmdir(self.path)
            os.rename(staging, self.path)


def last_lines(path: str, n: int = 20) -> list[str]:
    """The last ``n`` lines of the text file ``path`` ([] if absent)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 64 * 1024))
            return f.read().decode(errors="replace").splitlines()[-n:]
    except FileNotFoundError:
        return []


def wait_exit(proc, deadline_s: float) -> int | None:
    """The exit code of ``proc`` (a Popen) once it exits, or None at the deadline (seconds)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        rc = proc.poll()
        if rc is not None:
            return rc
        time.sleep(0.1)
    return proc.poll()


def fill_disk(cluster, vid: str, *, headroom_bytes: int = HEADROOM_BYTES, wait_s: float = FILL_WAIT_S) -> dict:
    """The ``disk-full`` fault on ``cluster`` (a ChaosCluster): stop ``vid``, put its data
    directory on a small tmpfs, start it, and wait (up to ``wait_s``) for it to stop on
    the full disk. Returns the detail for the timeline: tmpfs size, exit code (None: still
    running at the deadline), seconds until it stopped, its storage-failure log line."""
    why = mount_supported()
    if why is not None:  # before touching the validator
        raise DiskError(f"the disk-full fault needs a tmpfs mount: {why}")
    data = os.path.join(cluster.directory, vid, "data")
    cluster.kill(vid, 15)  # SIGTERM: a clean stop, then the directory is free to move
    disk = cluster.small_disks.get(vid) or SmallDisk(data)
    if disk.mounted:
        disk.unmount()
    size = disk.mount(headroom_bytes)
    cluster.small_disks[vid] = disk
    cluster.start_validator(vid)
    started = time.monotonic()
    proc = cluster._procs()[vid]
    rc = wait_exit(proc, wait_s)
    marks = [ln for ln in last_lines(cluster._local.log_path(vid), 200) if STORAGE_FAILURE_MARK in ln]
    if rc == EXIT_STORAGE_FAILURE:
        cluster.expect_exit(vid)  # the fail-stop the drill wants: heal starts it again
    return {"tmpfs_bytes": size, "exit_code": rc, "stopped_after_s": round(time.monotonic() - started, 1),
            "message": marks[-1][-400:] if marks else None}


def heal_disks(cluster) -> list[str]:
    """Grow every full small disk of ``cluster`` by ``GROW_BYTES`` (its validator is started
    again by the heal); returns the validators whose disk grew."""
    grown = []
    for vid, disk in sorted(cluster.small_disks.items()):
        if disk.mounted and disk.free_bytes() < GROW_BYTES // 2:
            disk.grow(GROW_BYTES)
            grown.append(vid)
    return grown


def unmount_all(cluster) -> None:
    """Unmount every small disk of the (stopped) cluster, keeping the data on the real disk."""
    errors = []
    for vid, disk in sorted(cluster.small_disks.items()):
        try:
            disk.unmount(keep_data=True)
        except (DiskError, OSError) as e:
            errors.append(f"{vid}: {e}")
    if errors:
        raise DiskError("; ".join(errors))
