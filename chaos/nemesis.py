"""The seeded nemesis: scenarios, and a thread that injects their faults on a schedule.

A run alternates quiet periods (``QUIET_S``) and fault windows (``WINDOW_S``)
until ``duration_s`` has passed. Everything random — period lengths, the fault
of each window (scenario ``mixed``), its parameters and which validator it hits —
comes from ``random.Random(seed)``, and every window draws the same number of
values whatever happens, so the same seed gives the same schedule, and the same
targets when the cluster's roles are the same (a target named by role, e.g. "the
leader", is looked up when its window opens). Every fault start and end is
appended to a JSONL timeline::

    {"time_ns": <monotonic_ns - t0_ns>, "event": "start"|"end", "fault": kind,
     "targets": [validator ids], "detail": {...}}

``start`` is stamped once the fault is in place, ``end`` once it is healed. Each
window ends with :meth:`ChaosCluster.heal`, so faults never pile up. A window holds
the cluster's ``fault_lock`` (if it has one) from injection to heal, so the
membership steps of chaos/membership.py never start, stop or wipe a validator
while a fault acts on processes; the governance changes themselves run meanwhile.
"""
from __future__ import annotations

import json
import os
import random
import signal
import contextlib
import threading
import time
from dataclasses import dataclass

#: Quiet period before each fault window, seconds (drawn uniformly).
QUIET_S = (3.0, 6.0)
#: Fault window length, seconds (drawn uniformly).
WINDOW_S = (5.0, 10.0)
#: A window shorter than this (the run is about to end) is not opened.
WINDOW_MIN_S = 1.0
#: How long the nemesis looks for the current leader when a fault needs it.
LEADER_LOOKUP_TIMEOUT_S = 3.0
#: Uniform draws per window: the schedule never depends on what a fault needs.
DRAWS_PER_WINDOW = 4
#: Latency fault: per-direction delay and jitter, milliseconds.
LATENCY_MS = (50, 250)
#: Bandwidth fault: KB/s each way.
BANDWIDTH_KB = (4, 64)
#: Reset-peer fault: RST this long after a connection's first bytes, milliseconds.
RESET_TIMEOUT_MS = (0, 1000)
#: Bound on the time stop() waits for the nemesis thread (a heal can restart validators).
JOIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    #: Fault kind injected in every window, or "mixed" (a random kind per window).
    fault: str
    #: For "mixed": the kinds it chooses from (empty: all of FAULT_KINDS).
    kinds: tuple[str, ...] = ()
    #: Membership changes run alongside (chaos/membership.py): add, remove, replace.
    membership: bool = False
    #: Every validator's data directory on a LazyFS mount (chaos/power.py): the power-cut scenarios.
    lazyfs: bool = False
    #: The cluster needs the Raft-aware proxy on its links (chaos/raftproxy.py RaftLinks).
    raft_proxy: bool = False
    #: What the scenario needs beyond the chaos suite (keys of REQUIREMENTS, e.g. "root");
    #: `run all`, `smoke` and `soak` skip it with a line saying what is missing.
    requires: tuple[str, ...] = ()
    #: The validators run with a wall clock the nemesis can step (chaos/clock.py).
    clock: bool = False


_SCENARIOS = [
    Scenario("partition-leader", "Cut the leader off from both followers (silent blackhole, both ways); the followers elect a new leader.", "partition-leader"),
    Scenario("partition-follower", "Cut one follower off (a minority of one); the majority keeps committing.", "partition-follower"),
    Scenario("partition-majority", "Isolate every validator from the others: no majority anywhere, nothing may commit.", "partition-majority"),
    Scenario("one-way-cut", "The leader's outgoing bytes to both followers are dropped; it still receives theirs.", "one-way-cut"),
    Scenario("latency-jitter", "Every link delays each direction by 50–250 ms with jitter up to half that.", "latency-jitter"),
    Scenario("bandwidth", "Every link is limited to 4–64 KB/s each way.", "bandwidth"),
    Scenario("reset-peer", "The leader's connections are reset (TCP RST) 0–1000 ms after their first bytes, again and again.", "reset-peer"),
    Scenario("kill-leader", "SIGKILL the leader; restart it when the window ends.", "kill-leader"),
    Scenario("kill-follower", "SIGKILL a follower; restart it when the window ends.", "kill-follower"),
    Scenario("pause-leader", "SIGSTOP the leader (hung, sockets open); SIGCONT it when the window ends.", "pause-leader"),
    Scenario("restart-all", "SIGKILL all three validators at once and start them again.", "restart-all"),
]
#: Fault kinds ``mixed`` chooses from, in a fixed order (the seed indexes into it).
FAULT_KINDS: tuple[str, ...] = tuple(s.fault for s in _SCENARIOS)
_SCENARIOS.append(Scenario("mixed", "Each window injects one of the faults above, chosen by the seed.", "mixed"))
#: The faults of the membership scenario: those that leave a majority of the members able to
#: commit once healed (no restart-all, no majority partition: a change waits them out anyway).
MEMBERSHIP_FAULT_KINDS = ("kill-follower", "kill-leader", "pause-leader", "partition-follower", "partition-leader")
_SCENARIOS.append(Scenario(
    "membership",
    "While faults hit (kill, pause, partition), add v4 (learner, then promoted), remove v2, replace v3 after losing "
    "its disk (same identity) and v1 by a new validator v5 (see chaos/membership.py).",
    "mixed", kinds=MEMBERSHIP_FAULT_KINDS, membership=True))
# Power loss (chaos/power.py): only these mount LazyFS; `mixed` never picks them.
_SCENARIOS += [
    Scenario("power-cut-follower", "A follower loses power: SIGKILL and its unsynced writes dropped (LazyFS); restarted on what was durable.", "power-cut-follower", lazyfs=True, requires=("fuse",)),
    Scenario("power-cut-leader", "The leader loses power (SIGKILL + unsynced writes dropped, LazyFS); restarted on what was durable.", "power-cut-leader", lazyfs=True, requires=("fuse",)),
    Scenario("power-cut-all", "All three validators lose power at the same instant (LazyFS); all restart on what was durable.", "power-cut-all", lazyfs=True, requires=("fuse",)),
    Scenario("power-cut-repeated", "2–4 power cuts per window of the leader or a follower, each restarted after 0.5–1.5 s (LazyFS).", "power-cut-repeated", lazyfs=True, requires=("fuse",)),
]
#: Message-level Raft faults (chaos/raftproxy.py): their clusters chain a Raft-aware proxy
#: in front of every Toxiproxy link; ``mixed`` does not choose them.
RAFT_FAULT_KINDS = ("raft-messages", "raft-stale-replay")
_SCENARIOS.append(Scenario(
    "raft-messages",
    "Every link duplicates, delays and reorders AppendEntries and their replies and replays stale AppendEntries "
    "after newer ones (seeded probabilities per window).", "raft-messages", raft_proxy=True))
_SCENARIOS.append(Scenario(
    "raft-stale-replay",
    "Pause one follower, let the leader commit with the other, replay an AppendEntries the leader sent before "
    "to that follower and cut it, kill the leader, resume the paused one (the truncation hazard).",
    "raft-stale-replay", raft_proxy=True))
#: Faults run only by their own scenario, never by ``mixed`` (its seeded schedules stay as they were).
OWN_SCENARIO_FAULT_KINDS: tuple[str, ...] = ("disk-full",)
_SCENARIOS.append(Scenario(
    "disk-full",
    "Put a follower's data directory on a tmpfs a few MB larger than its data; under load it fills and the "
    "validator must stop by itself (exit 74, 'storage write failed'); at heal the disk grows and it restarts "
    "and catches up (chaos/disks.py; needs root).",
    "disk-full", requires=("root",)))
_SCENARIOS.append(Scenario(
    "clock-jump",
    "The leader's wall clock steps back or forward by 1 min–4 h and back to true time at the window's end, "
    "under the bank workload with short-timeout pending transfers (chaos/clock.py).",
    "clock-jump", clock=True))
#: Fault kinds implemented outside this module: kind -> "module:function" of
#: inject(nemesis, draws) -> (targets, detail); the cluster's heal() undoes them.
EXTRA_FAULTS: dict[str, str] = {"clock-jump": "raft_ledger_chaos.clock:inject_clock_jump"}
SCENARIOS: dict[str, Scenario] = {s.name: s for s in _SCENARIOS}


def _have_root() -> str | None:
    return None if os.geteuid() == 0 else "needs root (e.g. to mount)"


def _have_fuse() -> str | None:
    return None if os.path.exists("/dev/fuse") else "no /dev/fuse (FUSE not available)"


#: Requirement -> check() returning None if met, else why not (a line for the operator).
REQUIREMENTS: dict = {"root": _have_root, "fuse": _have_fuse}


def missing_requirements(scenario: Scenario) -> list[str]:
    """Why ``scenario`` cannot run here (empty: it can); unknown requirement names count as missing."""
    out = []
    for req in getattr(scenario, "requires", ()) or ():
        check = REQUIREMENTS.get(req)
        why = check() if check else f"unknown requirement {req!r}"
        if why:
            out.append(why)
    return out


def _pick(items: list[str], u: float) -> str:
    return sorted(items)[min(int(u * len(items)), len(items) - 1)]


class Nemesis:
    """Injects ``scenario``'s faults into ``cluster`` from a thread; :meth:`stop` heals."""

    def __init__(self, cluster, scenario: Scenario, *, seed: int, duration_s: float, t0_ns: int, timeline_path: str) -> None:
        from raft_ledger_chaos.power import POWER_FAULT_KINDS

        known = FAULT_KINDS + POWER_FAULT_KINDS + RAFT_FAULT_KINDS + OWN_SCENARIO_FAULT_KINDS + tuple(EXTRA_FAULTS)
        if scenario.fault != "mixed" and scenario.fault not in known:
            raise ValueError(f"unknown fault {scenario.fault!r}; one of {known + ('mixed',)}")
        self.cluster = cluster
        self.scenario = scenario
        self.seed = seed
        self.duration_s = duration_s
        self.t0_ns = t0_ns
        self.timeline_path = timeline_path
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._timeline = None
        self._lock = threading.Lock()
        #: The exception that ended the thread early, if any (stop() re-raises it).
        self.error: BaseException | None = None

    # -- control --------------------------------------------------------------------

    def start(self) -> None:
        self._timeline = open(self.timeline_path, "a")
        self._thread = threading.Thread(target=self._run, name=f"nemesis-{self.scenario.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the current window (healing it), join the thread, heal everything once more."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                raise RuntimeError(f"nemesis thread did not stop within {JOIN_TIMEOUT_S}s")
        try:
            self.cluster.heal()
        finally:
            if self._timeline is not None:
                self._timeline.close()
                self._timeline = None
        if self.error is not None:
            raise RuntimeError(f"nemesis failed: {self.error!r}") from self.error

    # -- the schedule ---------------------------------------------------------------

    def _run(self) -> None:
        deadline = time.monotonic() + self.duration_s
        try:
            # Bounded: every iteration waits at least QUIET_S[0], so at most duration/QUIET_S[0] windows.
            for _ in range(int(self.duration_s / QUIET_S[0]) + 1):
                quiet_s, window_s, kind, draws = self._draw(self._rng)
                if self._stop.wait(max(0.0, min(quiet_s, deadline - time.monotonic()))):
                    return
                window_s = min(window_s, deadline - time.monotonic())
                if window_s < WINDOW_MIN_S:
                    return
                self._window(kind, draws, window_s)
                if self._stop.is_set():
                    return
        except BaseException as e:  # reported by stop(); the run must still heal
            self.error = e

    def _window(self, kind: str, draws: list[float], window_s: float) -> None:
        with getattr(self.cluster, "fault_lock", None) or contextlib.nullcontext():
            self._window_locked(kind, draws, window_s)

    def _window_locked(self, kind: str, draws: list[float], window_s: float) -> None:
        try:
            targets, detail = self._inject(kind, draws)
        except BaseException:
            self.cluster.heal()  # a half-injected fault must not outlive the error
            raise
        detail["window_s"] = round(window_s, 3)
        self._record("start", kind, targets, detail)
        try:
            if kind == "power-cut-repeated":
                from raft_ledger_chaos import power

                power.run_repeated(self, detail, window_s)  # more cuts within the window
            else:
                self._stop.wait(window_s)
        finally:
            healed = self.cluster.heal()
            self._record("end", kind, targets, {"heal": healed})

    def _leader_or_pick(self, u: float) -> tuple[str, bool]:
        leader = self.cluster.leader(timeout_s=LEADER_LOOKUP_TIMEOUT_S)
        if leader is not None:
            return leader, True
        return _pick(self.cluster.validator_ids, u), False

    def _inject(self, kind: str, d: list[float]) -> tuple[list[str], dict]:
        """Put fault ``kind`` in place; ``d`` are this window's uniform draws. Returns (targets, detail)."""
        c = self.cluster
        ids = list(c.validator_ids)
        if kind.startswith("power-cut-"):
            from raft_ledger_chaos import power

            return power.inject(self, kind, d)
        if kind in RAFT_FAULT_KINDS:
            from raft_ledger_chaos import raftproxy

            inject = raftproxy.inject_raft_messages if kind == "raft-messages" else raftproxy.inject_stale_replay
            return inject(c, d)
        if kind in ("partition-leader", "one-way-cut", "kill-leader", "pause-leader", "reset-peer"):
            leader, known = self._leader_or_pick(d[0])
            detail = {"leader": leader if known else None}
            others = sorted(set(ids) - {leader})
            if kind == "partition-leader":
                c.partition([{leader}, set(others)])
            elif kind == "one-way-cut":
                for f in others:
                    c.cut_one_way(leader, f)
                detail["dropped"] = [f"{leader}->{f}" for f in others]
            elif kind == "kill-leader":
                c.kill(leader, signal.SIGKILL)
            elif kind == "pause-leader":
                c.pause(leader)
            else:
                timeout_ms = int(RESET_TIMEOUT_MS[0] + d[1] * (RESET_TIMEOUT_MS[1] - RESET_TIMEOUT_MS[0]))
                c.reset_peer([leader], timeout_ms=timeout_ms)
                detail["timeout_ms"] = timeout_ms
            return [leader], detail
        if kind in ("partition-follower", "kill-follower"):
            leader, known = self._leader_or_pick(d[0])
            follower = _pick([v for v in ids if v != leader], d[1])
            if kind == "partition-follower":
                c.partition([{follower}, set(ids) - {follower}])
            else:
                c.kill(follower, signal.SIGKILL)
            return [follower], {"leader": leader if known else None}
        if kind == "partition-majority":
            c.partition([{v} for v in ids])
            return sorted(ids), {}
        if kind == "latency-jitter":
            latency_ms = int(LATENCY_MS[0] + d[1] * (LATENCY_MS[1] - LATENCY_MS[0]))
            jitter_ms = int(d[2] * latency_ms / 2)
            c.latency(latency_ms, jitter_ms)
            return sorted(ids), {"latency_ms": latency_ms, "jitter_ms": jitter_ms}
        if kind == "bandwidth":
            rate_kb = int(BANDWIDTH_KB[0] + d[1] * (BANDWIDTH_KB[1] - BANDWIDTH_KB[0]))
            c.bandwidth(rate_kb)
            return sorted(ids), {"rate_kb": rate_kb}
        if kind == "restart-all":
            c.restart_all()
            return sorted(ids), {}
        if kind == "disk-full":
            leader, known = self._leader_or_pick(d[0])
            follower = _pick([v for v in ids if v != leader], d[1])
            return [follower], {"leader": leader if known else None, **(c.fill_disk(follower) or {})}
        if kind in EXTRA_FAULTS:
            import importlib

            module, function = EXTRA_FAULTS[kind].split(":")
            return getattr(importlib.import_module(module), function)(self, d)
        raise ValueError(f"unknown fault {kind!r}")

    def record(self, event: str, kind: str, targets: list[str], detail: dict) -> None:
        """Append an event to the fault timeline (the membership steps use it too, also after
        :meth:`stop` closed it)."""
        with self._lock:
            closed = self._timeline is None
            if closed:
                self._timeline = open(self.timeline_path, "a")
        try:
            self._record(event, kind, targets, detail)
        finally:
            if closed:
                with self._lock:
                    self._timeline.close()
                    self._timeline = None

    def _record(self, event: str, kind: str, targets: list[str], detail: dict) -> None:
        line = {"time_ns": time.monotonic_ns() - self.t0_ns, "event": event, "fault": kind, "targets": list(targets), "detail": detail}
        with self._lock:
            self._timeline.write(json.dumps(line) + "\n")
            self._timeline.flush()

    def _draw(self, rng: random.Random) -> tuple[float, float, str, list[float]]:
        """One window's randomness: (quiet_s, window_s, fault kind, uniform draws for its targets/parameters)."""
        quiet_s = rng.uniform(*QUIET_S)
        window_s = rng.uniform(*WINDOW_S)
        kind = self.scenario.fault if self.scenario.fault != "mixed" else rng.choice(self.scenario.kinds or FAULT_KINDS)
        return quiet_s, window_s, kind, [rng.random() for _ in range(DRAWS_PER_WINDOW)]

    def schedule(self, windows: int) -> list[dict]:
        """The first ``windows`` windows this seed draws, without injecting anything (its own
        generator): for reports, and to show that a seed replays."""
        rng = random.Random(self.seed)
        out = []
        for _ in range(windows):
            quiet_s, window_s, kind, draws = self._draw(rng)
            out.append({"quiet_s": quiet_s, "window_s": window_s, "fault": kind, "draws": draws})
        return out
