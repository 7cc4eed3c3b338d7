"""Validator membership changes as an operator runs them: add, remove, replace.

Each step is one governance transaction (node/ledger/governance.py) that every
validator applies at the same block, and pysyncobj's configuration follows it there
(node/raft/replica.py). The steps, one server at a time:

* **add**: ``add_validator`` (the new validator becomes a *learner*), the operator
  starts it, it receives the snapshot and the log as a read-only Raft node and counts
  toward no majority; when the leader's match index for it is within
  ``limits.learner_promote_lag_max`` entries of the commit index, ``promote_validator``
  (bound to the learner's data directory id) makes it a voter; it restarts itself as
  one.
* **remove**: ``remove_validator``; the removed validator stops (a removed leader hands
  over first).
* **replace** a lost validator: remove it (it no longer counts: the others stay a
  majority of the smaller configuration), then add the replacement, with the same
  identity or a new one. The replacement's empty data directory has a new id, so it
  can vote only after its own promotion (node/raft/membership.py has the argument).

The leader refuses a second change while one is in flight and any change that would
leave the reachable voters without a majority (``MembershipChangeRefused``).

``statuses()`` returns validator id -> ``GetStatusResponse`` or the exception of a
validator that did not answer (``localcluster.status_rows`` for a local cluster).
Raises :class:`ReconfigurationError` with the reason in words.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from raft_ledger_node.ledger import limits

#: Time ``add`` waits for a learner to connect and catch up, by default.
CATCH_UP_TIMEOUT_S = 600.0
#: Time a step waits for every validator to apply a change, by default.
APPLY_TIMEOUT_S = 60.0
POLL_S = 0.25


class ReconfigurationError(RuntimeError):
    """A membership change could not be made or confirmed; the message says why."""


Statuses = Callable[[], Mapping[str, object]]


@dataclass
class StepTimes:
    """What a change took, in seconds (for the operator and the closing note)."""

    steps: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, started: float) -> None:
        self.steps[name] = time.monotonic() - started


def propose(client, admins: Sequence[tuple[str, str, object]], change) -> int:
    """Build a proposal of ``change`` on the current configuration version, approve it with
    each ``(member id, key id, Ed25519 private key)`` of ``admins`` and submit it through
    ``client`` (an operator's LedgerClient). Returns the new configuration version.
    Raises the SDK's errors (TransactionRejected with the rejection, MembershipChangeRefused)."""
    from raft_ledger_client import governance as gov

    p = gov.build_proposal(client.chain_id, client.get_configuration(linearizable=True)["version"], [change])
    for member_id, key_id, key in admins:
        p.approve(member_id, key_id, key)
    return client.submit_governance(p)


def _ok(st) -> bool:
    return not isinstance(st, Exception) and st is not None


def leader_of(rows: Mapping[str, object]):
    """The status of the validator that reports itself leader (None if none does)."""
    return next((st for st in rows.values() if _ok(st) and st.role == "leader"), None)


def learner_progress(rows: Mapping[str, object], validator_id: str) -> tuple[int, int, bool]:
    """(leader's match index for the learner, leader's commit index, the learner's link is up)."""
    leader = leader_of(rows)
    if leader is None:
        return 0, 0, False
    entry = next((e for e in leader.validators if e.id == validator_id), None)
    if entry is None:
        return 0, leader.commit_index, False
    return entry.match_index, leader.commit_index, entry.connected


def wait_caught_up(statuses: Statuses, validator_id: str, *, timeout_s: float = CATCH_UP_TIMEOUT_S,
                   progress: Callable[[int, int], None] | None = None) -> bytes:
    """Wait until learner ``validator_id`` is connected to the leader and within
    ``learner_promote_lag_max // 2`` Raft entries of its commit index; return its data
    directory id. ``progress(match_index, commit_index)`` after every poll."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = statuses()
        match, commit, connected = learner_progress(rows, validator_id)
        if progress is not None:
            progress(match, commit)
        own = rows.get(validator_id)
        if (connected and commit and commit - match <= limits.learner_promote_lag_max // 2 and _ok(own)
                and own.membership == "learner" and len(own.data_dir_id) == 16):
            return bytes(own.data_dir_id)
        time.sleep(POLL_S)
    raise ReconfigurationError(
        f"learner {validator_id} did not catch up within {timeout_s:.0f}s: is it running (ledger-validator start "
        f"--config …/{validator_id}/config.json), and can it reach the validators' Raft ports?")


def wait_applied(statuses: Statuses, version: int, check: Callable[[str, object], bool], what: str, *,
                 timeout_s: float = APPLY_TIMEOUT_S, expect: Sequence[str] = ()) -> None:
    """Wait until every validator that answers is at configuration ``version`` or later and
    ``check(validator id, status)`` holds for it, and every id in ``expect`` answers."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        rows = statuses()
        answering = {vid: st for vid, st in rows.items() if _ok(st)}
        missing = [vid for vid in expect if vid not in answering]
        behind = [vid for vid, st in answering.items() if st.configuration_version < version or not check(vid, st)]
        if not missing and not behind and answering:
            return
        last = f"waiting for {', '.join(missing + behind)}"
        time.sleep(POLL_S)
    raise ReconfigurationError(f"{what}: not confirmed within {timeout_s:.0f}s ({last})")


def add(client, admins, entry: Mapping, statuses: Statuses, *, start: Callable[[], None] | None = None,
        catch_up_timeout_s: float = CATCH_UP_TIMEOUT_S, progress: Callable[[int, int], None] | None = None,
        say: Callable[[str], None] = lambda s: None) -> StepTimes:
    """Add validator ``entry`` (the dict of ``governance.add_validator``): learner, catch-up,
    promotion, confirmed on every validator. ``start()`` starts its process once it is
    added (None: the operator starts it)."""
    from raft_ledger_client import governance as gov

    times = StepTimes()
    vid = entry["id"]
    t = time.monotonic()
    version = propose(client, admins, gov.add_validator(entry))
    times.add("add_validator committed", t)
    say(f"{vid} added as a learner (configuration version {version})")
    if start is not None:
        start()
        say(f"{vid} started")
    else:
        say(f"start {vid} now: ledger-validator start --config <its config.json>")
    t = time.monotonic()
    data_dir_id = wait_caught_up(statuses, vid, timeout_s=catch_up_timeout_s, progress=progress)
    times.add("learner caught up", t)
    say(f"{vid} caught up (data directory {data_dir_id.hex()}); promoting")
    t = time.monotonic()
    version = propose(client, admins, gov.promote_validator(vid, data_dir_id))
    times.add("promote_validator committed", t)
    t = time.monotonic()
    raft = entry["raft_address"]
    wait_applied(statuses, version, lambda v, st: raft in st.raft_configuration and (v != vid or st.membership == "voter"),
                 f"{vid} voting on every validator", expect=[vid])
    times.add(f"{vid} voting everywhere", t)
    say(f"{vid} is a voter")
    return times


def remove(client, admins, validator_id: str, statuses: Statuses, *, say: Callable[[str], None] = lambda s: None
           ) -> StepTimes:
    """Remove ``validator_id`` (a voter, or the pending learner) and wait until no
    validator that answers has it in its Raft configuration."""
    from raft_ledger_client import governance as gov

    times = StepTimes()
    cfg = client.get_configuration()
    rec = next((v for v in cfg["validators"] if v["id"] == validator_id), None)
    if rec is None:
        raise ReconfigurationError(f"{validator_id} is not in the validator set "
                                   f"({', '.join(v['id'] for v in cfg['validators'])})")
    t = time.monotonic()
    version = propose(client, admins, gov.remove_validator(validator_id))
    times.add("remove_validator committed", t)
    raft = rec["raft_address"]
    t = time.monotonic()
    wait_applied(statuses, version, lambda v, st: v != validator_id and raft not in st.raft_configuration,
                 f"{validator_id} out of every Raft configuration")
    times.add(f"{validator_id} removed everywhere", t)
    say(f"{validator_id} removed")
    return times


def replace(client, admins, old_id: str, entry: Mapping, statuses: Statuses, *, start: Callable[[], None] | None = None,
            catch_up_timeout_s: float = CATCH_UP_TIMEOUT_S, progress: Callable[[int, int], None] | None = None,
            say: Callable[[str], None] = lambda s: None) -> StepTimes:
    """Replace a lost validator ``old_id`` by ``entry`` (the same id and addresses, or a new
    one): remove it if it is still in the set, then :func:`add`."""
    times = StepTimes()
    cfg = client.get_configuration()
    if any(v["id"] == old_id for v in cfg["validators"]):
        times.steps.update(remove(client, admins, old_id, statuses, say=say).steps)
    times.steps.update(add(client, admins, entry, statuses, start=start, catch_up_timeout_s=catch_up_timeout_s,
                           progress=progress, say=say).steps)
    return times
