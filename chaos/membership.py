"""The ``membership`` scenario's changes: the validator set changes while the bank runs and faults hit.

A thread (:class:`Reconfigurer`) runs a fixed plan against the 3-validator drill
cluster, one change at a time, through ``raft_ledger_node.reconfigure`` (the code
behind ``ledger-validator validator add|remove|replace``)::

    add v4        learner, catch-up, promote_validator      voters v1 v2 v3 v4
    remove v2     remove_validator; v2 stops by itself      voters v1 v3 v4
    replace v3    v3 loses its disk (SIGKILL, data moved aside), then remove v3,
                  add v3 again (same identity, empty directory), promote
                                                            voters v1 v3 v4
    replace v1    v1 loses its disk; remove v1, add v5 (a new identity), promote
                                                            voters v3 v4 v5

Meanwhile the nemesis injects the faults of ``MEMBERSHIP_FAULT_KINDS`` into the
current members. A change may then be refused (``MembershipChangeRefused``: the
reachable voters would not be a majority of the new configuration, or the learner is
not connected or too far behind) or not confirmed in time (``ReconfigurationError``);
that is expected while a fault is active. A step then waits (``RETRY_WAIT_S``) and
resumes from what the governed configuration says (read from the leader): a change
that committed is not proposed again, a learner already added goes straight to its
catch-up and promotion. A step gives up after ``STEP_ATTEMPTS_MAX`` attempts or
``STEP_TIMEOUT_S``; the whole plan has ``PLAN_TIMEOUT_S``.

Process actions (losing a disk, starting a replacement) take the cluster's
``fault_lock``, so they happen between fault windows; a validator leaves the fault
targets before it is removed or lost and joins them once it votes. New validators'
Raft links run through Toxiproxy like the genesis ones (chaos/cluster.py); their gRPC
is dialled directly, as every client's is.

Every step is written to the fault timeline as a ``membership:<step>`` window
(``start`` when it begins, ``end`` with its outcome), so the report shows it next to
the faults, and :func:`check_membership` turns the steps and the final statuses into a
verdict: every step done, the governed voters and every member's Raft configuration
as planned, each removed validator stopped by itself.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from raft_ledger_chaos.checkers import CheckResult

#: Quiet time before the first change, seconds (the bank warms up, a fault window may open).
FIRST_STEP_DELAY_S = 3.0
#: Pause between two steps, seconds.
BETWEEN_STEPS_S = 2.0
#: Wait after a refused or unconfirmed attempt before the next one, seconds.
RETRY_WAIT_S = 2.0
STEP_ATTEMPTS_MAX = 20
STEP_TIMEOUT_S = 120.0
PLAN_TIMEOUT_S = 480.0
#: How long one attempt waits for a learner to catch up, and for every validator to apply.
CATCH_UP_TIMEOUT_S = 20.0
APPLY_TIMEOUT_S = 15.0
#: How long a removed validator gets to stop by itself before the drill stops it (and says so).
REMOVED_STOP_TIMEOUT_S = 15.0
ADMINS = ("admin-1", "admin-2")
#: (step, validator, replacement id or None); replacement None for add/remove.
PLAN: tuple[tuple[str, str, str | None], ...] = (
    ("add", "v4", None),
    ("remove", "v2", None),
    ("replace", "v3", "v3"),
    ("replace", "v1", "v5"),
)
EXPECTED_VOTERS = ("v3", "v4", "v5")


@dataclass
class Step:
    """One change of the plan and what became of it (times in seconds since the run's t0)."""

    kind: str
    target: str
    replacement: str | None
    started_s: float = 0.0
    ended_s: float = 0.0
    done: bool = False
    attempts: int = 0
    refusals: list[str] = field(default_factory=list)
    #: A removed validator that had not stopped by itself (the drill stopped it).
    not_stopped: list[str] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    error: str = ""

    def to_doc(self) -> dict:
        return {"kind": self.kind, "target": self.target, "replacement": self.replacement,
                "started_s": round(self.started_s, 3), "ended_s": round(self.ended_s, 3), "done": self.done,
                "attempts": self.attempts, "refusals": self.refusals, "not_stopped": self.not_stopped,
                "times": {k: round(v, 3) for k, v in self.times.items()}, "error": self.error}


class Reconfigurer:
    """Runs :data:`PLAN` on ``cluster`` (a started ChaosCluster) from a thread; events go to
    ``record(event, kind, targets, detail)`` (the nemesis's timeline)."""

    def __init__(self, cluster, *, t0_ns: int, record, plan=PLAN) -> None:
        self.cluster = cluster
        self.t0_ns = t0_ns
        self.record = record
        self.steps = [Step(k, t, r) for k, t, r in plan]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._client = None
        self._admins = None

    # -- control --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="membership", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float = PLAN_TIMEOUT_S) -> None:
        """Wait for the plan to finish (at most ``timeout_s``), then ask it to stop."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._stop.set()
            self._thread.join(STEP_TIMEOUT_S)

    def stop(self) -> None:
        self._stop.set()

    @property
    def finished(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    # -- the plan -------------------------------------------------------------------

    def _now_s(self) -> float:
        return (time.monotonic_ns() - self.t0_ns) / 1e9

    def _run(self) -> None:
        from raft_ledger_client import RetryPolicy, load_private_key
        from raft_ledger_node.localcluster import member_client

        d = self.cluster.directory
        try:
            self._admins = [(a, "k1", load_private_key(os.path.join(d, "members", f"{a}.pem"))) for a in ADMINS]
            self._client = member_client(d, "operator", retry=RetryPolicy(deadline_s=10.0, attempt_timeout_s=3.0))
            deadline = time.monotonic() + PLAN_TIMEOUT_S
            if self._stop.wait(FIRST_STEP_DELAY_S):
                return
            for step in self.steps:
                if self._stop.is_set() or time.monotonic() >= deadline:
                    step.error = "not started: the plan ran out of time"
                    break
                self._step(step)
                if not step.done:
                    break  # later steps assume this one's set
                if self._stop.wait(BETWEEN_STEPS_S):
                    break
        except BaseException as e:  # reported by the check; the run must still heal and check
            self.error = e
        finally:
            if self._client is not None:
                self._client.close()

    def _step(self, step: Step) -> None:
        from raft_ledger_client import LedgerError, MembershipChangeRefused, TransactionRejected
        from raft_ledger_node.reconfigure import ReconfigurationError

        name = f"membership:{step.kind}"
        targets = [step.target] + ([step.replacement] if step.replacement and step.replacement != step.target else [])
        step.started_s = self._now_s()
        self.record("start", name, targets, {"step": step.kind})
        deadline = time.monotonic() + STEP_TIMEOUT_S
        try:
            self._prepare(step)
            while step.attempts < STEP_ATTEMPTS_MAX and time.monotonic() < deadline and not self._stop.is_set():
                step.attempts += 1
                try:
                    self._attempt(step)
                    step.done = True
                    break
                except (MembershipChangeRefused, TransactionRejected, ReconfigurationError, LedgerError) as e:
                    step.refusals.append(f"{self._now_s():.1f}s {type(e).__name__}: {str(e)[:200]}")
                    self._stop.wait(RETRY_WAIT_S)
            if not step.done and not step.error:
                step.error = f"not done after {step.attempts} attempts"
        finally:
            step.ended_s = self._now_s()
            self.record("end", name, targets, step.to_doc())

    def _prepare(self, step: Step) -> None:
        """Process side, between fault windows: the target stops being a fault target; a
        replaced validator loses its disk; a new one gets its files and proxies."""
        c = self.cluster
        with c.fault_lock:
            if step.kind in ("remove", "replace"):
                c.leave(step.target)
            if step.kind == "replace":
                c.lose_disk(step.target)
            new = step.target if step.kind == "add" else step.replacement
            if new is not None and new not in [v.id for v in _known(c)]:
                c.add_validator(new)

    def _statuses(self):
        return self.cluster.members_statuses(timeout_s=1.0)

    def _governed(self) -> dict:
        """The governed configuration, read from the leader if one is known (a LOCAL read
        elsewhere may lag)."""
        from raft_ledger_node.reconfigure import leader_of

        leader = leader_of(self._statuses())
        addr = leader.leader_address if leader is not None and leader.leader_address else None
        return self._client.get_configuration(address=addr)

    def _start(self, vid: str):
        def start() -> None:
            with self.cluster.fault_lock:
                self.cluster.start_validator(vid)

        return start

    def _attempt(self, step: Step) -> None:
        """Make progress from wherever the governed configuration stands; raise to retry."""
        from raft_ledger_node import reconfigure

        cfg = self._governed()
        by_id = {v["id"]: v for v in cfg["validators"]}
        if step.kind == "remove" or (step.kind == "replace" and step.target != step.replacement
                                     and step.target in by_id):
            if step.target in by_id:
                times = reconfigure.remove(self._client, self._admins, step.target, self._statuses,
                                           say=lambda s: None)
                step.times.update(times.steps)
            else:
                self._wait_out(step.target)
            if step.kind == "remove":
                self._removed_stops(step, step.target)
                return
            cfg = self._governed()
            by_id = {v["id"]: v for v in cfg["validators"]}
        if step.kind == "replace" and step.target == step.replacement:
            rec = by_id.get(step.target)
            # Still the lost record (genesis-bound, or bound to another directory): remove it first.
            if rec is not None and rec.get("voting") and rec.get("data_dir_id") != self._data_dir_id(step.target):
                times = reconfigure.remove(self._client, self._admins, step.target, self._statuses,
                                           say=lambda s: None)
                step.times.update(times.steps)
                by_id.pop(step.target, None)
        new = step.target if step.kind == "add" else step.replacement
        self._add(step, new, by_id.get(new))

    def _data_dir_id(self, vid: str) -> str | None:
        """Hex id of ``vid``'s current data directory (None if it has no identity yet)."""
        from raft_ledger_node.raft import membership

        ident = membership.read_identity(os.path.join(self.cluster.directory, vid, "data"))
        return ident.data_dir_id.hex() if ident is not None else None

    def _add(self, step: Step, vid: str, rec: dict | None) -> None:
        from raft_ledger_client import governance as gov
        from raft_ledger_node import reconfigure
        from raft_ledger_node.localcluster import validator_entry

        info = next(v for v in _known(self.cluster) if v.id == vid)
        entry = validator_entry(info)
        if rec is None:
            times = reconfigure.add(self._client, self._admins, entry, self._statuses, start=self._start(vid),
                                    catch_up_timeout_s=CATCH_UP_TIMEOUT_S, say=lambda s: None)
            step.times.update(times.steps)
        else:
            # Added by an earlier attempt: make sure it runs, then catch-up and promotion.
            self._start(vid)()
            if not rec.get("voting"):
                t = time.monotonic()
                data_dir_id = reconfigure.wait_caught_up(self._statuses, vid, timeout_s=CATCH_UP_TIMEOUT_S)
                step.times["learner caught up (resumed)"] = time.monotonic() - t
                reconfigure.propose(self._client, self._admins, gov.promote_validator(vid, data_dir_id))
            version = self._governed()["version"]
            raft = entry["raft_address"]
            reconfigure.wait_applied(
                self._statuses, version,
                lambda v, st: raft in st.raft_configuration and (v != vid or st.membership == "voter"),
                f"{vid} voting on every validator", timeout_s=APPLY_TIMEOUT_S, expect=[vid])
        self.cluster.join(vid)

    def _wait_out(self, vid: str) -> None:
        """Wait until no answering validator other than ``vid`` has it in its Raft configuration."""
        from raft_ledger_node import reconfigure

        raft = next(v.raft_address for v in _known(self.cluster) if v.id == vid)
        version = self._governed()["version"]
        reconfigure.wait_applied(lambda: {k: s for k, s in self._statuses().items() if k != vid}, version,
                                 lambda v, st: raft not in st.raft_configuration, f"{vid} out of every Raft "
                                 "configuration", timeout_s=APPLY_TIMEOUT_S)

    def _removed_stops(self, step: Step, vid: str) -> None:
        """A removed validator stops by itself; if it has not within REMOVED_STOP_TIMEOUT_S the
        drill stops it and the step says so (check_membership fails on it)."""
        p = self.cluster._procs().get(vid)
        deadline = time.monotonic() + REMOVED_STOP_TIMEOUT_S
        while p is not None and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if p is not None and p.poll() is None:
            step.not_stopped.append(vid)
            with self.cluster.fault_lock:
                self.cluster._local.stop(vid)
        elif p is not None:
            step.times[f"{vid} exit code"] = float(p.returncode)


def _known(cluster):
    from raft_ledger_node.localcluster import cluster_validators

    return cluster_validators(cluster.directory)


def check_membership(steps: list[dict], statuses: dict[str, dict], expected_voters=EXPECTED_VOTERS,
                     error: str = "") -> CheckResult:
    """Every planned step done, each removed validator stopped by itself, and at the end every
    expected voter answers as a voter whose Raft configuration is exactly the expected voters'
    Raft addresses.

    ``steps``: :meth:`Step.to_doc` of each step; ``statuses``: validator id ->
    ``{"membership", "raft_configuration": [...], "raft_address"}`` or ``{"error": ...}``
    for the validators read after the run.
    """
    problems = []
    if error:
        problems.append(f"the plan failed: {error}")
    for s in steps:
        if not s["done"]:
            problems.append(f"{s['kind']} {s['target']} not done ({s['error'] or 'unknown'}; "
                            f"last refusals: {s['refusals'][-2:]})")
        for vid in s.get("not_stopped", []):
            problems.append(f"{vid} was removed but did not stop by itself within {REMOVED_STOP_TIMEOUT_S:.0f}s "
                            "(the drill stopped it)")
    expected_raft = sorted(statuses[v]["raft_address"] for v in expected_voters if "raft_address" in statuses.get(v, {}))
    for vid in expected_voters:
        st = statuses.get(vid, {"error": "not read"})
        if "error" in st:
            problems.append(f"{vid} unreadable: {st['error']}")
            continue
        if st["membership"] != "voter":
            problems.append(f"{vid} is a {st['membership']}, expected a voter")
        if sorted(st["raft_configuration"]) != expected_raft:
            problems.append(f"{vid}'s Raft configuration {sorted(st['raft_configuration'])} != {expected_raft}")
    summary = "; ".join(f"{s['kind']} {s['target']}{'→' + s['replacement'] if s['replacement'] else ''}: "
                        f"{'done' if s['done'] else 'NOT done'} in {s['ended_s'] - s['started_s']:.1f}s, "
                        f"{s['attempts']} attempt(s)" for s in steps)
    details = {"steps": steps, "statuses": statuses}
    if problems:
        return CheckResult("membership", False, "; ".join(problems[:5]), details)
    return CheckResult("membership", True, f"voters {', '.join(expected_voters)} everywhere; {summary}", details)


def final_statuses(cluster) -> dict[str, dict]:
    """What :func:`check_membership` reads: each known validator's membership and Raft configuration."""
    out = {}
    known = {v.id: v for v in _known(cluster)}
    for vid, st in cluster.members_statuses(timeout_s=2.0).items():
        if isinstance(st, Exception):
            out[vid] = {"error": type(st).__name__, "raft_address": known[vid].raft_address}
        else:
            out[vid] = {"membership": st.membership, "raft_configuration": list(st.raft_configuration),
                        "raft_address": known[vid].raft_address}
    return out
