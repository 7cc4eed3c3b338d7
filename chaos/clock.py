"""Clock faults: a validator's wall clock steps backwards or forwards (minutes to hours).

How: libfaketime (Debian's ``faketime`` package, ``libfaketime.so.1``) preloaded into
every validator of a clock drill (``LD_PRELOAD``), each with its own control file
``<cluster>/<id>/faketime.rc`` (``FAKETIME_TIMESTAMP_FILE``) that the harness rewrites
to step that validator's clock: ``+0`` (true time), ``-2400`` (40 min behind) …, an
offset in seconds that the clock keeps ticking from. ``FAKETIME_NO_CACHE=1`` makes the
library read the file on every clock read, so a step takes effect at once;
``FAKETIME_DONT_FAKE_MONOTONIC=1`` leaves CLOCK_MONOTONIC alone, as an NTP step does
(the Linux kernel steps CLOCK_REALTIME only).

Why libfaketime rather than an injectable clock in the validator: it steps the clock
of the whole process, not one call site we chose: the leader's block stamp
(node/batcher.py ``time.time_ns()``), but also every other wall-clock read we did not
think of (OpenSSL's certificate validity checks on new mutual-TLS connections,
RocksDB, logging, gRPC), and it needs no knob in the validator. pysyncobj's timers use
``time.monotonic`` and stay untouched, which is what a real clock step does too.

What the ledger does with it (node/ledger/apply.py ``apply_block``): the leader stamps
each entry with its wall clock when it proposes it; a block's timestamp is
``max(stamp, previous block's + events + 1)``, and pending transfers expire when a
block's timestamp reaches ``timestamp + timeout``, decided from the replicated stamp
only, so every validator agrees whatever its own clock says. A backward step freezes
block time (it advances 1 ns per event) until the clock passes the last block again; a
forward step moves block time ahead at once, which expires every pending transfer whose
deadline it passes, and block time then stays ahead until real time catches up.
:func:`raft_ledger_chaos.checkers.check_clock` checks the invariants.

The fault (``clock-jump``): each window steps the leader's clock by ``±(1 min … 4 h)``
(sign and size from the window's draws, log-uniform size), and the heal steps it back
to true time: one backward and one forward step per window.
"""
from __future__ import annotations

import math
import os
import subprocess

from raft_ledger_chaos.cluster import ChaosCluster
from raft_ledger_node.localcluster import LocalCluster, validator_command

#: Where Debian's faketime package puts the library (multi-arch path, then the older one).
LIBFAKETIME_PATHS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)
CONTROL_FILE = "faketime.rc"
#: Size of a clock step, seconds: log-uniform between these (1 minute to 4 hours).
JUMP_S = (60.0, 4 * 3600.0)


def libfaketime_path() -> str | None:
    """The libfaketime shared library (``$LIBFAKETIME`` first), or None if it is not installed."""
    for p in (os.environ.get("LIBFAKETIME"),) + LIBFAKETIME_PATHS:
        if p and os.path.exists(p):
            return p
    return None


def jump_seconds(sign_draw: float, size_draw: float) -> int:
    """The step of a window from two uniform draws in [0, 1): backwards if ``sign_draw < 0.5``,
    size log-uniform in :data:`JUMP_S`. Whole seconds (libfaketime's offset spec)."""
    lo, hi = (math.log(x) for x in JUMP_S)
    size = int(round(math.exp(lo + size_draw * (hi - lo))))
    return -size if sign_draw < 0.5 else size


def write_offset(path: str, offset_s: int) -> None:
    """Write libfaketime's relative spec (``+N``/``-N`` seconds) atomically (rename): a clock
    read never sees a half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{offset_s:+d}\n")
    os.replace(tmp, path)


class FaketimeLocalCluster(LocalCluster):
    """LocalCluster whose validators run with libfaketime preloaded, each reading its own
    control file (``<cluster>/<id>/faketime.rc``, created at ``+0``)."""

    def __init__(self, directory: str, library: str) -> None:
        super().__init__(directory)
        self.library = library

    def control_file(self, validator_id: str) -> str:
        return os.path.join(self.directory, validator_id, CONTROL_FILE)

    def start(self, validator_id: str, args=()) -> None:
        known = [v.id for v in self.validators]
        if validator_id not in known:
            super().start(validator_id, args)  # raises UnknownValidatorError
            return
        vdir = os.path.join(self.directory, validator_id)
        control = self.control_file(validator_id)
        if not os.path.exists(control):
            write_offset(control, 0)
        env = dict(os.environ)
        env.update({
            "LD_PRELOAD": ":".join(p for p in (self.library, env.get("LD_PRELOAD", "")) if p),
            "FAKETIME_TIMESTAMP_FILE": control,
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        })
        env.pop("FAKETIME", None)  # it would override the control file
        with open(self.log_path(validator_id), "ab") as log:
            self.procs[validator_id] = subprocess.Popen(
                validator_command(os.path.join(vdir, "config.json")) + list(args),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=os.getcwd(), env=env,
            )


class ClockChaosCluster(ChaosCluster):
    """A ChaosCluster whose validators' wall clocks the harness steps (:meth:`set_clock`);
    :meth:`heal` puts every clock back to true time. Raises ChaosClusterError at start if
    libfaketime is not installed."""

    def __init__(self, directory: str, **kw) -> None:
        super().__init__(directory, **kw)
        self.library = libfaketime_path()
        #: Validator id -> its clock's current offset, seconds (only those stepped).
        self.offsets: dict[str, int] = {}

    def _local_cluster(self) -> LocalCluster:
        from raft_ledger_chaos.cluster import ChaosClusterError

        if self.library is None:
            raise ChaosClusterError("libfaketime not installed (apt-get install faketime)")
        return FaketimeLocalCluster(self.directory, self.library)

    def set_clock(self, vid: str, offset_s: int) -> None:
        """Step ``vid``'s wall clock to true time + ``offset_s`` seconds (0: true time)."""
        self._check(vid)
        write_offset(os.path.join(self.directory, vid, CONTROL_FILE), int(offset_s))
        if offset_s:
            self.offsets[vid] = int(offset_s)
        else:
            self.offsets.pop(vid, None)

    def heal(self) -> dict:
        done = super().heal()
        done["clocks_reset"] = sorted(self.offsets)
        for vid in list(self.offsets):
            self.set_clock(vid, 0)
        return done


def inject_clock_jump(nemesis, draws: list[float]) -> tuple[list[str], dict]:
    """The ``clock-jump`` fault: step the leader's clock (nemesis ``_inject`` protocol:
    returns (targets, detail)). The cluster must be a :class:`ClockChaosCluster`."""
    leader, known = nemesis._leader_or_pick(draws[0])
    offset = jump_seconds(draws[1], draws[2])
    nemesis.cluster.set_clock(leader, offset)
    return [leader], {"leader": leader if known else None, "offset_s": offset}
