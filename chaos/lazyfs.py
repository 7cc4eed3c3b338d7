"""A LazyFS-style FUSE file system for power-loss drills (prototype, issue 15 part 1).

SIGKILL keeps the kernel's page cache, so a validator killed by the chaos suite never loses a
write it did not fsync: the drill cannot tell a durable validator from one that forgets to
sync. This module mounts a passthrough file system over a backing directory that keeps every
write not yet made durable in *its own* cache, and on ``power_cut()`` throws that cache away,
the way Jepsen's LazyFS does.

The model (what survives a power cut)
=====================================

File data, per file (keyed by the open inode, so a rename keeps its cache):

* ``write`` and ``truncate`` go to an in-memory page cache (4 KiB pages) and a logical size;
  reads merge the cache over the backing file. Nothing reaches the backing file.
* ``fsync`` and ``fdatasync`` (the same FSYNC request; ``datasync`` is ignored) write the
  file's dirty pages to the backing file, cut it to the logical size and fsync it.
* A shared ``mmap`` write reaches FUSE only when the kernel writes the page back: at
  ``msync(MS_SYNC)`` that is WRITE then FSYNC (durable); a background writeback is a WRITE
  alone (cached, lost at a power cut). Both follow from the two rules above.
* ``power_cut()``: every file reverts to its last synced content and size.

Directory entries (the backing directory's namespace changes at once, with an undo journal):

* ``create``/``mknod``, ``mkdir``, ``unlink``, ``rmdir``, ``rename`` and ``symlink`` are
  applied to the backing directory and recorded in an undo journal; an unlinked, removed or
  replaced entry is moved into a hidden trash folder (``.lazyfs-trash`` in the backing root,
  invisible through the mount) rather than deleted.
* ``fsyncdir`` of a directory makes every journalled change *whose entry lies in that
  directory* durable (for a rename: the destination's directory; see the gaps).
* ``power_cut()`` undoes the journal in reverse: files created since their directory's last
  fsync disappear (even if their data was fsynced), renames go back, unlinked files return
  (with their synced content), and the trash is emptied.

A power cut is triggered in-process by ``LazyFS.power_cut()``, or, when the file system runs
as its own process (``python -m raft_ledger_chaos.lazyfs BACKING MOUNT --control SOCK``), by
``power_cut(SOCK)`` in this module, which sends ``power-cut`` over that Unix socket. The
harness must kill the processes using the mount *before* the cut: a process that keeps an
open file across it gets EIO on that handle (its inode state is gone), like a machine that
lost power would not have kept it either.

Gaps (not yet modelled; a later session should decide which matter for the drill)
===================================================================================

* Strict model: a change is durable only after fsync of *the* file or directory. Real file
  systems are often kinder (ext4 with data=ordered persists a rename replacing a file on
  commit, and a file's fsync also commits its directory entry on ext4): the drill may report
  losses a real ext4 would not have. This is LazyFS's and ALICE's strict choice, on purpose.
* A rename across directories becomes durable by fsync of the destination directory alone;
  a power cut never leaves the entry in both or neither directory.
* Undo is all-or-nothing per journal entry, in reverse order; an older change made durable
  while a newer dependent one is not (e.g. a rename into a directory whose own mkdir is not
  durable) is undone together with its parent.
* No torn writes or reordering of unsynced writes: a cut loses *all* unsynced data of a file,
  never a prefix of it (LazyFS can also tear; a later session may add a "keep a random
  prefix of unsynced pages" mode).
* Metadata (mode, owner, times, xattrs, hard links) passes through and is always durable.
  ``link`` is not supported (EPERM); RocksDB and pysyncobj do not use it.
* The kernel's page cache above FUSE: files are opened without ``keep_cache``, so the kernel
  drops a file's cached pages when it is opened again (a restarted validator reads what
  this file system holds); attribute and entry caching are switched off for the same reason.
* One global lock, single-threaded FUSE loop: correct, not fast. Fine for a validator's data
  directory in a drill, not for a benchmark.
* The cache is unbounded memory: a validator that never syncs a large file grows it.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import socket
import stat
import threading
import uuid
from dataclasses import dataclass, field

page_bytes = 4096
trash_name = ".lazyfs-trash"
control_reply_bytes_max = 4096


def _import_mfusepy():
    # The binding is an optional extra (`lazyfs`): importing this module for its model or its
    # control client must not need libfuse.
    import mfusepy

    return mfusepy


@dataclass(eq=False)
class _Node:
    """The page cache of one open (or dirty) file; the fd is the backing inode, so it follows renames."""

    fd: int
    size: int  # logical size, as the mount shows it
    valid_floor: int  # backing bytes at or past this offset are not the file's (shrunk since the sync)
    pages: dict[int, bytearray] = field(default_factory=dict)
    open_handles: int = 0
    stale: bool = False  # set by a power cut: the handle outlived its machine

    def _durable_block(self, index: int) -> bytearray:
        start = index * page_bytes
        block = bytearray(page_bytes)
        upto = min(self.valid_floor, start + page_bytes)
        if upto > start:
            data = os.pread(self.fd, upto - start, start)
            block[: len(data)] = data
        return block

    def read(self, size: int, offset: int) -> bytes:
        end = min(offset + size, self.size)
        out = bytearray()
        pos = offset
        while pos < end:
            index, within = divmod(pos, page_bytes)
            take = min(page_bytes - within, end - pos)
            block = self.pages.get(index)
            if block is None:
                block = self._durable_block(index)
            out += block[within : within + take]
            pos += take
        return bytes(out)

    def write(self, data: bytes, offset: int) -> int:
        pos, done = offset, 0
        while done < len(data):
            index, within = divmod(pos, page_bytes)
            take = min(page_bytes - within, len(data) - done)
            block = self.pages.get(index)
            if block is None:
                block = self.pages[index] = self._durable_block(index)
            block[within : within + take] = data[done : done + take]
            pos += take
            done += take
        self.size = max(self.size, offset + len(data))
        return len(data)

    def truncate(self, length: int) -> None:
        if length < self.size:
            self.valid_floor = min(self.valid_floor, length)
            first_gone = -(-length // page_bytes)
            for index in [i for i in self.pages if i >= first_gone]:
                del self.pages[index]
            index, within = divmod(length, page_bytes)
            if within and index in self.pages:
                self.pages[index][within:] = bytes(page_bytes - within)
        self.size = length

    def sync(self) -> None:
        for index in sorted(self.pages):
            start = index * page_bytes
            if start >= self.size:
                continue
            os.pwrite(self.fd, bytes(self.pages[index][: self.size - start]), start)
        os.ftruncate(self.fd, self.size)
        os.fsync(self.fd)
        self.pages.clear()
        self.valid_floor = self.size


@dataclass
class _Change:
    """One undoable namespace change. ``directory`` is the one whose fsync makes it durable."""

    kind: str  # "create" | "mkdir" | "remove" | "rename"
    directory: str
    path: str
    old_path: str = ""  # rename: where it came from
    trashed: str = ""  # remove/rename: the trash entry holding what was removed or replaced


class LazyFS:
    """The file system's operations (mfusepy's ``Operations`` shape, paths relative to the mount).

    Thread-safe: every operation and ``power_cut()`` take one lock.
    """

    use_ns = True

    def __init__(self, backing: str) -> None:
        self.backing = os.path.realpath(backing)
        self.trash = os.path.join(self.backing, trash_name)
        os.makedirs(self.trash, exist_ok=True)
        self._lock = threading.RLock()
        self._nodes: dict[str, _Node] = {}  # mount path -> cache, for open or dirty files
        self._handles: dict[int, _Node] = {}
        self._next_handle = 1
        self._journal: list[_Change] = []
        self.power_cuts = 0

    # -- helpers -------------------------------------------------------------------------

    def _real(self, path: str) -> str:
        rel = path.lstrip("/")
        if rel == trash_name or rel.startswith(trash_name + "/"):
            raise _fuse_error(errno.ENOENT)
        return os.path.join(self.backing, rel)

    @staticmethod
    def _parent(path: str) -> str:
        return os.path.dirname(path.rstrip("/")) or "/"

    def _to_trash(self, real: str) -> str:
        name = uuid.uuid4().hex
        os.rename(real, os.path.join(self.trash, name))
        return name

    def _node(self, path: str) -> _Node:
        node = self._nodes.get(path)
        if node is None:
            fd = os.open(self._real(path), os.O_RDWR)
            size = os.fstat(fd).st_size
            node = self._nodes[path] = _Node(fd=fd, size=size, valid_floor=size)
        return node

    def _handle(self, fh: int) -> _Node:
        node = self._handles.get(fh)
        if node is None or node.stale:
            raise _fuse_error(errno.EIO)
        return node

    def _new_handle(self, node: _Node) -> int:
        fh = self._next_handle
        self._next_handle += 1
        node.open_handles += 1
        self._handles[fh] = node
        return fh

    def _move_nodes(self, old: str, new: str) -> None:
        for path in list(self._nodes):
            if path == old or path.startswith(old.rstrip("/") + "/"):
                self._nodes[new + path[len(old) :]] = self._nodes.pop(path)

    def _drop_nodes_under(self, path: str) -> None:
        for p in list(self._nodes):
            if p == path or p.startswith(path.rstrip("/") + "/"):
                node = self._nodes.pop(p)
                node.pages.clear()  # unlinked: its unsynced data is gone with it
                node.size = node.valid_floor = os.fstat(node.fd).st_size
                if node.open_handles == 0:
                    os.close(node.fd)

    # -- the harness's fault -----------------------------------------------------------

    def power_cut(self) -> dict[str, int]:
        """Discard every unsynced write and every namespace change not made durable."""
        with self._lock:
            dropped_files = sum(1 for n in self._nodes.values() if n.pages or n.size != n.valid_floor)
            for node in set(self._nodes.values()) | set(self._handles.values()):
                node.stale = True
                try:
                    os.close(node.fd)
                except OSError:
                    pass
            self._nodes.clear()
            self._handles.clear()
            undone = len(self._journal)
            for change in reversed(self._journal):
                self._undo(change)
            self._journal.clear()
            self._empty_trash()
            self.power_cuts += 1
            return {"files_reverted": dropped_files, "entries_undone": undone}

    def _undo(self, change: _Change) -> None:
        real = os.path.join(self.backing, change.path.lstrip("/"))
        if change.kind == "create":
            if os.path.lexists(real):
                os.unlink(real)
        elif change.kind == "mkdir":
            shutil.rmtree(real, ignore_errors=True)
        elif change.kind == "remove":
            os.rename(os.path.join(self.trash, change.trashed), real)
        elif change.kind == "rename":
            os.rename(real, os.path.join(self.backing, change.old_path.lstrip("/")))
            if change.trashed:
                os.rename(os.path.join(self.trash, change.trashed), real)

    def _empty_trash(self) -> None:
        referenced = {c.trashed for c in self._journal if c.trashed}
        for name in os.listdir(self.trash):
            if name not in referenced:
                victim = os.path.join(self.trash, name)
                if os.path.isdir(victim) and not os.path.islink(victim):
                    shutil.rmtree(victim, ignore_errors=True)
                else:
                    os.unlink(victim)

    # -- attributes and directories --------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict:
        with self._lock:
            st = os.lstat(self._real(path))
            attrs = {
                key: getattr(st, key)
                for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino", "st_blocks")
            }
            for key in ("st_atime", "st_mtime", "st_ctime"):
                attrs[key] = getattr(st, key + "_ns")
            node = self._handles.get(fh) if fh is not None else None
            node = node or self._nodes.get(path)
            if node is not None and not node.stale and stat.S_ISREG(st.st_mode):
                attrs["st_size"] = node.size
                attrs["st_blocks"] = -(-node.size // 512)
            return attrs

    def readdir(self, path: str, fh: int):
        with self._lock:
            names = [n for n in os.listdir(self._real(path)) if not (path == "/" and n == trash_name)]
            return [".", "..", *names]

    def mkdir(self, path: str, mode: int) -> int:
        with self._lock:
            os.mkdir(self._real(path), mode)
            self._journal.append(_Change("mkdir", self._parent(path), path))
            return 0

    def rmdir(self, path: str) -> int:
        with self._lock:
            real = self._real(path)
            if os.listdir(real):
                raise _fuse_error(errno.ENOTEMPTY)
            self._journal.append(_Change("remove", self._parent(path), path, trashed=self._to_trash(real)))
            return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        with self._lock:
            fd = os.open(self._real(path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._journal = [c for c in self._journal if c.directory != path]
            self._empty_trash()
            return 0

    def opendir(self, path: str) -> int:
        self._real(path)
        return 0

    def releasedir(self, path: str, fh: int) -> int:
        return 0

    def statfs(self, path: str) -> dict:
        sv = os.statvfs(self.backing)
        return {key: getattr(sv, key) for key in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag",
            "f_frsize", "f_namemax")}

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._real(path), amode):
            raise _fuse_error(errno.EACCES)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.lchown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times=None) -> int:
        os.utime(self._real(path), ns=times, follow_symlinks=False) if times else os.utime(self._real(path))
        return 0

    def readlink(self, path: str) -> str:
        return os.readlink(self._real(path))

    def symlink(self, target: str, source: str) -> int:
        # mfusepy passes (link path, what it points to).
        with self._lock:
            os.symlink(source, self._real(target))
            self._journal.append(_Change("create", self._parent(target), target))
            return 0

    def link(self, target: str, source: str) -> int:
        raise _fuse_error(errno.EPERM)

    # -- namespace changes of files ----------------------------------------------------

    def create(self, path: str, mode: int, flags: int = 0) -> int:
        with self._lock:
            real = self._real(path)
            existed = os.path.lexists(real)
            os.close(os.open(real, os.O_CREAT | os.O_WRONLY, mode))
            if not existed:
                self._journal.append(_Change("create", self._parent(path), path))
            return self._new_handle(self._node(path))

    def mknod(self, path: str, mode: int, dev: int) -> int:
        with self._lock:
            os.mknod(self._real(path), mode, dev)
            self._journal.append(_Change("create", self._parent(path), path))
            return 0

    def unlink(self, path: str) -> int:
        with self._lock:
            real = self._real(path)
            trashed = self._to_trash(real)
            self._drop_nodes_under(path)
            self._journal.append(_Change("remove", self._parent(path), path, trashed=trashed))
            return 0

    def rename(self, old: str, new: str) -> int:
        with self._lock:
            real_old, real_new = self._real(old), self._real(new)
            trashed = ""
            if os.path.lexists(real_new):
                if os.path.isdir(real_new) and not os.path.islink(real_new) and os.listdir(real_new):
                    raise _fuse_error(errno.ENOTEMPTY)
                trashed = self._to_trash(real_new)
                self._drop_nodes_under(new)
            os.rename(real_old, real_new)
            self._move_nodes(old, new)
            self._journal.append(_Change("rename", self._parent(new), new, old_path=old, trashed=trashed))
            return 0

    # -- file data ---------------------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        with self._lock:
            node = self._node(path)
            if flags & os.O_TRUNC:
                node.truncate(0)
            return self._new_handle(node)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._lock:
            return self._handle(fh).read(size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._lock:
            return self._handle(fh).write(data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self._lock:
            node = self._handle(fh) if fh is not None else self._node(path)
            node.truncate(length)  # kept in the cache until fsync or a cut: not durable yet
            return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._lock:
            self._handle(fh).sync()
            return 0

    def flush(self, path: str, fh: int) -> int:
        return 0  # close(2) is not fsync(2): nothing becomes durable here

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            node = self._handles.pop(fh, None)
            if node is not None and not node.stale:
                node.open_handles -= 1
                if node.open_handles == 0 and not node.pages and node.size == node.valid_floor:
                    # Clean and closed: nothing to lose, so keep no fd for it.
                    for key in [k for k, v in self._nodes.items() if v is node]:
                        del self._nodes[key]
                    os.close(node.fd)
            return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        # Only the plain extend (mode 0) is modelled: it grows the logical size, nothing durable.
        if mode != 0:
            raise _fuse_error(errno.EOPNOTSUPP)
        with self._lock:
            node = self._handle(fh)
            if offset + size > node.size:
                node.write(bytes(offset + size - node.size), node.size)
            return 0


def _fuse_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def mount(backing: str, mountpoint: str, *, control: str | None = None) -> LazyFS:
    """Mount in the foreground (blocks until unmounted); serve ``control`` (a Unix socket path)."""
    mfusepy = _import_mfusepy()
    fs = type("LazyFSOperations", (LazyFS, mfusepy.Operations), {})(backing)
    if control is not None:
        threading.Thread(target=_serve_control, args=(fs, control), daemon=True).start()
    mfusepy.FUSE(
        fs, mountpoint, foreground=True, nothreads=True, fsname="lazyfs",
        attr_timeout=0, entry_timeout=0, negative_timeout=0,
    )
    return fs


def _serve_control(fs: LazyFS, path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn:
            command = conn.recv(control_reply_bytes_max).decode().strip()
            try:
                if command == "power-cut":
                    result = fs.power_cut()
                    reply = f"ok files_reverted={result['files_reverted']} entries_undone={result['entries_undone']}"
                elif command == "ping":
                    reply = "ok"
                else:
                    reply = f"error unknown command {command!r}"
            except Exception as error:  # the harness must hear why, not a closed socket
                reply = f"error {type(error).__name__}: {error}"
            conn.sendall(reply.encode() + b"\n")


def send_control(path: str, command: str, *, timeout_s: float = 10.0) -> str:
    """Send one command (``power-cut`` or ``ping``) to a running mount's control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout_s)
        conn.connect(path)
        conn.sendall(command.encode() + b"\n")
        reply = conn.recv(control_reply_bytes_max).decode().strip()
    if not reply.startswith("ok"):
        raise RuntimeError(f"lazyfs control {command!r}: {reply}")
    return reply


def power_cut(control: str) -> str:
    return send_control(control, "power-cut")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m raft_ledger_chaos.lazyfs", description=__doc__.splitlines()[0])
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("--control", help="Unix socket path for `power-cut` commands")
    args = parser.parse_args(argv)
    mount(args.backing, args.mountpoint, control=args.control)


if __name__ == "__main__":
    main()
