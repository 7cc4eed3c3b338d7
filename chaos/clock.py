"""Clock faults: a validator's wall clock steps backwards or forwards (minutes to hours).

How: an injectable wall clock in the validator *process*, driven by the harness, with no
knob in the validator's code. Every validator of a clock drill starts with
``PYTHONPATH=<cluster>/clockshim`` and ``LEDGER_CHAOS_CLOCK_FILE=<cluster>/<id>/clock.offset``;
the ``sitecustomize.py`` there (:data:`SHIM`, written by :class:`ClockLocalCluster`) runs
at interpreter start-up, before any module of the validator is imported, and replaces
``time.time`` and ``time.time_ns`` with true time + the offset in that file (re-read at most
every ``SHIM_REREAD_S``). The harness rewrites the file (atomically) to step that
validator's clock: ``+0`` true time, ``-2400`` 40 min behind, ``+7200`` 2 h ahead.
``time.monotonic`` (pysyncobj's timers, the batcher's deadlines) is left alone, as a
real NTP step leaves CLOCK_MONOTONIC alone. Off by default: a validator started any
other way has no shim.

Why not libfaketime (``apt-get install faketime``, LD_PRELOAD, which would also step
C-level clocks: OpenSSL's certificate checks, gRPC, RocksDB): Debian bookworm's 0.9.10
breaks Python 3.11's ``time.sleep`` when the monotonic clock is left alone
(``FAKETIME_DONT_FAKE_MONOTONIC=1``): Python 3.11 sleeps with
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` and libfaketime hands the kernel a
negative time, so every ``time.sleep`` raises ``OSError: [Errno 22]`` (libfaketime issue
#426; seen here: pysyncobj's tick thread died at once and the cluster never became
ready). Faking the monotonic clock too would step pysyncobj's timers, which no real
clock step does. So the shim covers every *Python* wall-clock read of the validator
(the leader's block stamp in node/batcher.py, the ingress validity-window check in
node/api/validation.py, the metrics, logging) and not the C libraries'.

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

CONTROL_FILE = "clock.offset"
SHIM_DIR = "clockshim"
#: Seconds between two reads of the offset file by the shim (a step takes effect within this).
SHIM_REREAD_S = 0.02
#: The validator's sitecustomize.py: true time + the offset file's seconds for time.time/time_ns.
SHIM = f'''"""Chaos clock shim (raft_ledger_chaos/clock.py): time.time and time.time_ns are true
time + the seconds in $LEDGER_CHAOS_CLOCK_FILE, re-read at most every {SHIM_REREAD_S} s."""
import os as _os
import time as _time

_path = _os.environ.get("LEDGER_CHAOS_CLOCK_FILE")
if _path:
    _real_ns = _time.time_ns
    _monotonic = _time.monotonic
    _state = [0, -1.0]  # offset ns, monotonic time of the last read

    def _offset_ns():
        now = _monotonic()
        if now - _state[1] >= {SHIM_REREAD_S}:
            _state[1] = now
            try:
                with open(_path) as f:
                    _state[0] = int(float(f.read().strip() or 0) * 1e9)
            except (OSError, ValueError):
                pass
        return _state[0]

    def time_ns():
        return _real_ns() + _offset_ns()

    def time():
        return time_ns() / 1e9

    _time.time_ns = time_ns
    _time.time = time
'''
#: Size of a clock step, seconds: log-uniform between these (1 minute to 4 hours).
JUMP_S = (60.0, 4 * 3600.0)


def jump_seconds(sign_draw: float, size_draw: float) -> int:
    """The step of a window from two uniform draws in [0, 1): backwards if ``sign_draw < 0.5``,
    size log-uniform in :data:`JUMP_S`. Whole seconds."""
    lo, hi = (math.log(x) for x in JUMP_S)
    size = int(round(math.exp(lo + size_draw * (hi - lo))))
    return -size if sign_draw < 0.5 else size


def write_offset(path: str, offset_s: int) -> None:
    """Write the offset (``+N``/``-N`` seconds) atomically (rename): the shim never reads a
    half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{offset_s:+d}\n")
    os.replace(tmp, path)


class ClockLocalCluster(LocalCluster):
    """LocalCluster whose validators run with the clock shim, each reading its own offset file
    (``<cluster>/<id>/clock.offset``, created at ``+0``)."""

    def control_file(self, validator_id: str) -> str:
        return os.path.join(self.directory, validator_id, CONTROL_FILE)

    def start(self, validator_id: str, args=()) -> None:
        known = [v.id for v in self.validators]
        if validator_id not in known:
            super().start(validator_id, args)  # raises UnknownValidatorError
            return
        shim_dir = os.path.join(self.directory, SHIM_DIR)
        os.makedirs(shim_dir, exist_ok=True)
        with open(os.path.join(shim_dir, "sitecustomize.py"), "w") as f:
            f.write(SHIM)
        vdir = os.path.join(self.directory, validator_id)
        control = self.control_file(validator_id)
        if not os.path.exists(control):
            write_offset(control, 0)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (shim_dir, env.get("PYTHONPATH", "")) if p)
        env["LEDGER_CHAOS_CLOCK_FILE"] = control
        with open(self.log_path(validator_id), "ab") as log:
            self.procs[validator_id] = subprocess.Popen(
                validator_command(os.path.join(vdir, "config.json")) + list(args),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=os.getcwd(), env=env,
            )


class ClockChaosCluster(ChaosCluster):
    """A ChaosCluster whose validators' wall clocks the harness steps (:meth:`set_clock`);
    :meth:`heal` puts every clock back to true time."""

    def __init__(self, directory: str, **kw) -> None:
        super().__init__(directory, **kw)
        #: Validator id -> its clock's current offset, seconds (only those stepped).
        self.offsets: dict[str, int] = {}

    def _local_cluster(self) -> LocalCluster:
        return ClockLocalCluster(self.directory)

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
