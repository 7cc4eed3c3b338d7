"""Power loss in the chaos suite: a LazyFS mount under each validator's data directory, and the cuts.

SIGKILL keeps the kernel's page cache, so the kill scenarios never lose a write a validator
forgot to sync. The power-cut scenarios (``power-cut-follower``, ``power-cut-leader``,
``power-cut-all``, ``power-cut-repeated``) run every validator's data directory (Raft journal
and its meta file, snapshots, RocksDB, the identity file) on :mod:`raft_ledger_chaos.lazyfs`,
which keeps every write not yet fsynced/msynced in its own memory.

Layout, per validator ``<cluster>/<vid>/``::

    data/          the mount point (what the validator opens, unchanged config)
    data.durable/  the backing directory: exactly what survived the last power cut
    lazyfs.log     the file system process's output

``init_cluster`` writes the data directory before anything is mounted; :meth:`PowerMount.prepare`
renames it to ``data.durable`` and fsyncs ``<vid>/``, so the files the harness made count as
durable (the backing directory's content is the file system's starting state). The control
sockets live in a short temporary directory (a Unix socket path is limited to 108 bytes).

A power cut of validator ``vid`` (:meth:`PowerMount.cut`, driven by ``ChaosCluster.power_cut``):

1. SIGKILL the validator and reap it: the process dies with the power; nothing it did after
   this instant reaches the disk, and every write(2) it made has reached the file system
   (FUSE without writeback caching sends writes synchronously).
2. ``power-cut`` on the control socket: every unsynced write and every directory entry not
   made durable by fsync of its directory is discarded (chaos/lazyfs.py's model).
3. Unmount (``fusermount3 -u``; ``-uz`` lazy unmount as a fallback) and reap the file system
   process: the kernel's page cache over the mount goes too, as it would with the power, so
   a shared mapping's dirty pages that were never written back cannot reappear.

4. Mount a fresh LazyFS over ``data.durable`` at once (all cut validators' mounts in parallel),
   so the window's heal (``ChaosCluster.start_validator``) only has to start the validator:
   it starts on what was durable.

msync and directory fsync: pysyncobj's journal is a shared mmap; ``msync(MS_SYNC)`` makes the
kernel send WRITE then FSYNC for its dirty pages (durable), background writeback sends WRITE
alone (lost at a cut). fsync of a directory (the adapter's meta file rename, RocksDB's new
files) arrives as FSYNCDIR. Both are modelled in chaos/lazyfs.py and tested in
tests/integration/test_lazyfs.py.

What the drill shows (seeded runs, see README): ``power-cut-all`` loses every acknowledged
transfer with ``--unsafe`` and nothing with the fixes; a cut of one validator is tolerated
even with ``--unsafe`` (two others hold every committed entry). A cut in ``power-cut-repeated``
may hit a validator that is still starting (``files_reverted=0``): a crash during recovery.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from raft_ledger_chaos import lazyfs

#: Bound on mounting one file system (process start + FUSE init).
MOUNT_TIMEOUT_S = 15.0
#: Bound on one ``fusermount3 -u`` attempt, and attempts before the lazy unmount.
UNMOUNT_TIMEOUT_S = 10.0
UNMOUNT_ATTEMPTS_MAX = 5
UNMOUNT_RETRY_S = 0.3
#: Time the file system process gets to exit after its unmount, then SIGKILL.
FS_EXIT_TIMEOUT_S = 10.0
#: Time a SIGKILLed validator gets to be reaped.
VALIDATOR_KILL_WAIT_S = 10.0
POLL_S = 0.05

#: The nemesis fault kinds of the power-cut scenarios (chaos/nemesis.py).
POWER_FAULT_KINDS = ("power-cut-follower", "power-cut-leader", "power-cut-all", "power-cut-repeated")
#: power-cut-repeated: cuts per window, time the cut validator stays off, and time between cuts.
REPEATED_CUTS = (2, 4)
REPEATED_OFF_S = (0.5, 1.5)
REPEATED_GAP_S = (1.0, 2.5)


class PowerError(RuntimeError):
    """A LazyFS mount could not be made or removed, or its control socket refused a cut."""


def unavailable_reason() -> str | None:
    """Why LazyFS cannot mount here (None if it can): fusermount3, /dev/fuse, the mfusepy extra."""
    if shutil.which("fusermount3") is None:
        return "fusermount3 missing (Debian's fuse3; deploy/local/setup.sh installs it)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse missing"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as error:
        return f"mfusepy (the lazyfs extra) not importable: {error}"
    return None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PowerMount:
    """One LazyFS file system mounted at a validator's ``data`` directory.

    ``data_dir``: the mount point (the validator's configured data directory); the backing
    directory is ``data_dir + ".durable"``; ``control_path``: the Unix socket of the file
    system process. Not thread-safe: the cluster calls it under its fault lock.
    """

    def __init__(self, data_dir: str, *, control_path: str, log_path: str) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.backing = self.data_dir + ".durable"
        self.control_path = control_path
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        #: Replies of the control socket to each cut ("ok files_reverted=N entries_undone=M").
        self.cuts: list[str] = []

    def prepare(self) -> None:
        """Move the data directory the harness wrote to the backing directory (once) and leave
        an empty mount point; fsync the parent so both entries are durable. Raises OSError."""
        parent = os.path.dirname(self.data_dir)
        if not os.path.isdir(self.backing):
            if os.path.isdir(self.data_dir):
                os.rename(self.data_dir, self.backing)
            else:
                os.makedirs(self.backing, mode=0o700)
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        _fsync_dir(self.backing)
        _fsync_dir(parent)

    @property
    def mounted(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and os.path.ismount(self.data_dir)

    def mount(self) -> None:
        """Start the file system process and wait (bounded) until the mount answers. No-op if
        mounted. Raises PowerError (with the process's log) if it does not come up."""
        self.spawn()
        self.wait_mounted()

    def spawn(self) -> None:
        """Start the file system process (no wait; :meth:`wait_mounted`). No-op if it runs."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.prepare()
        if os.path.exists(self.control_path):
            os.unlink(self.control_path)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "raft_ledger_chaos.lazyfs", self.backing, self.data_dir,
                 "--control", self.control_path],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def wait_mounted(self) -> None:
        """Wait (``MOUNT_TIMEOUT_S``) until the spawned mount answers ``ping``. Raises PowerError."""
        if self.proc is None:
            raise PowerError(f"no lazyfs process for {self.data_dir}")
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while True:
            if os.path.ismount(self.data_dir) and os.path.exists(self.control_path):
                try:
                    lazyfs.send_control(self.control_path, "ping", timeout_s=2.0)
                    os.chmod(self.data_dir, 0o700)  # the validator checks its data directory is private
                    return
                except OSError:
                    pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._reap_fs()
                with open(self.log_path, errors="replace") as f:
                    tail = f.read()[-2000:]
                raise PowerError(f"lazyfs did not mount at {self.data_dir}: {tail}")
            time.sleep(POLL_S)

    def cut(self) -> str:
        """Discard what is not durable and unmount. The processes using the mount must be dead
        already (see the module docstring). Returns the control socket's reply."""
        if not self.mounted:
            return "off already"  # cut again before a heal started it: nothing more to lose
        reply = lazyfs.power_cut(self.control_path)
        self.cuts.append(reply)
        self.unmount()
        return reply

    def unmount(self) -> None:
        """``fusermount3 -u`` (bounded retries while busy), then ``-uz``; reap the process by PID.
        Idempotent."""
        for attempt in range(UNMOUNT_ATTEMPTS_MAX):
            if not os.path.ismount(self.data_dir):
                break
            lazy = attempt == UNMOUNT_ATTEMPTS_MAX - 1
            subprocess.run(["fusermount3", "-uz" if lazy else "-u", self.data_dir],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=UNMOUNT_TIMEOUT_S, check=False)
            if os.path.ismount(self.data_dir):
                time.sleep(UNMOUNT_RETRY_S)
        self._reap_fs()

    def _reap_fs(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(FS_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(FS_EXIT_TIMEOUT_S)
        self.proc = None


class PowerMounts:
    """The LazyFS mounts of a drill cluster, by validator id (chaos/cluster.py's ``lazyfs=True``)."""

    def __init__(self, cluster_dir: str) -> None:
        """Raises PowerError at once if LazyFS cannot mount here (:func:`unavailable_reason`)."""
        reason = unavailable_reason()
        if reason is not None:
            raise PowerError(f"the power-cut scenarios need LazyFS: {reason}")
        self.cluster_dir = cluster_dir
        self._sockets = tempfile.mkdtemp(prefix="lazyfs-")
        self.mounts: dict[str, PowerMount] = {}

    def _get(self, vid: str) -> PowerMount:
        m = self.mounts.get(vid)
        if m is None:
            vdir = os.path.join(self.cluster_dir, vid)
            m = self.mounts[vid] = PowerMount(
                os.path.join(vdir, "data"), control_path=os.path.join(self._sockets, f"{vid}.sock"),
                log_path=os.path.join(vdir, "lazyfs.log"))
        return m

    def mount(self, vid: str) -> PowerMount:
        """Mount ``vid``'s file system (no-op if mounted). Raises PowerError, OSError."""
        m = self._get(vid)
        if not m.mounted:
            m.mount()
        return m

    def mount_many(self, vids) -> None:
        """Mount several at once: every process is started before the first wait."""
        pending = [m for m in (self._get(v) for v in vids) if not m.mounted]
        for m in pending:
            m.spawn()
        for m in pending:
            m.wait_mounted()

    def cut(self, vid: str) -> str:
        return self.mounts[vid].cut()

    def unmount_all(self) -> None:
        """Unmount every file system (the validators must be stopped), remove the socket directory."""
        errors = []
        for m in self.mounts.values():
            try:
                m.unmount()
            except Exception as e:  # try every mount; report the first failure
                errors.append(e)
        shutil.rmtree(self._sockets, ignore_errors=True)
        if errors:
            raise errors[0]

    def cut_counts(self) -> dict[str, list[str]]:
        return {vid: list(m.cuts) for vid, m in self.mounts.items()}


def _pick(items: list[str], u: float) -> str:
    return sorted(items)[min(int(u * len(items)), len(items) - 1)]


def kill_now(proc: subprocess.Popen | None) -> None:
    """SIGKILL a validator process and reap it (bounded). No-op if it is not running."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGKILL)
    proc.wait(VALIDATOR_KILL_WAIT_S)


def inject(nemesis, kind: str, d: list[float]) -> tuple[list[str], dict]:
    """Put power-cut fault ``kind`` in place for the nemesis (chaos/nemesis.py); ``d`` are the
    window's uniform draws. Returns (targets, detail) as the other faults do.

    * ``power-cut-follower`` / ``power-cut-leader``: one validator loses power; it stays off
      until the window's heal.
    * ``power-cut-all``: all members lose power at the same instant (killed first, then cut).
    * ``power-cut-repeated``: the first of 2–4 cuts (:func:`repeated_plan`); the window runs
      the rest (:func:`run_repeated`).
    """
    c = nemesis.cluster
    ids = list(c.validator_ids)
    if kind in ("power-cut-leader", "power-cut-follower"):
        leader, known = nemesis._leader_or_pick(d[0])
        target = leader if kind == "power-cut-leader" else _pick([v for v in ids if v != leader], d[1])
        reply = c.power_cut([target])
        return [target], {"leader": leader if known else None, "lazyfs": reply}
    if kind == "power-cut-all":
        reply = c.power_cut(ids)
        return sorted(ids), {"lazyfs": reply}
    if kind == "power-cut-repeated":
        plan = repeated_plan(d[0])
        target, cut = _cut_one(c, ids, plan[0]["u"])
        return [target], {"plan": plan, "cuts": [cut]}
    raise ValueError(f"unknown power fault {kind!r}")


def repeated_plan(u: float) -> list[dict]:
    """The cuts of one ``power-cut-repeated`` window: 2–4 steps ``{"off_s", "gap_s", "u"}`` (time
    the cut validator stays off, time before the next cut, the draw choosing leader or follower),
    from a generator seeded by the window's draw ``u`` in [0, 1), so a seed replays them."""
    rng = random.Random(int(u * 2**32))
    return [{"off_s": round(rng.uniform(*REPEATED_OFF_S), 3), "gap_s": round(rng.uniform(*REPEATED_GAP_S), 3),
             "u": rng.random()} for _ in range(rng.randint(*REPEATED_CUTS))]


def _cut_one(c, ids: list[str], u: float) -> tuple[str, dict]:
    """Cut the leader (``u`` < 0.5, if one is known) or a follower picked by ``u``."""
    leader = c.leader(timeout_s=3.0)
    target = leader if (leader is not None and u < 0.5) else _pick([v for v in ids if v != leader], u)
    reply = c.power_cut([target])
    return target, {"target": target, "was_leader": target == leader, "lazyfs": reply}


def run_repeated(nemesis, detail: dict, window_s: float) -> None:
    """The rest of a ``power-cut-repeated`` window (instead of the nemesis's plain wait): restart
    the validator :func:`inject` cut after its ``off_s``, then cut and restart the plan's next
    ones, all within ``window_s`` (or until the nemesis stops). Every cut goes on the timeline
    as its own ``power-cut`` start/end pair."""
    c = nemesis.cluster
    deadline = time.monotonic() + window_s

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    ids = list(c.validator_ids)
    target, cut = detail["cuts"][0]["target"], detail["cuts"][0]
    for i, step in enumerate(detail["plan"]):
        if i > 0:
            target, cut = _cut_one(c, ids, step["u"])
        nemesis._record("start", "power-cut", [target], cut)
        stopped = nemesis._stop.wait(min(step["off_s"], left()))
        c.start_validator(target)
        nemesis._record("end", "power-cut", [target], {"restarted": True})
        if stopped or nemesis._stop.wait(min(step["gap_s"], left())) or left() == 0.0:
            break
    nemesis._stop.wait(left())
