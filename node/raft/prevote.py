"""ElectionGuard: Pre-Vote and CheckQuorum around pysyncobj's elections (Raft thesis §9.6).

pysyncobj starts an election by raising its term at once (SO:640), and any
``request_vote`` of a higher term deposes a healthy leader before the log check
(SO:920-923). A validator cut off from the others (a partitioned leader after it
stepped down, a partitioned follower) keeps timing out, and as long as its socket
to a proxy stays open (``__connectedToAnyone``) it raises its term every 0.4–1.4 s;
when the link heals its higher term deposes the leader the majority elected, and
the cluster stops committing for a second election: the second dip after each heal
of the partition-leader drill (issue 15, item 5; terms in the README's drill notes).

Four rules, as in the thesis §9.6 and etcd's raft (``PreVote``, ``CheckQuorum``):

* **Pre-Vote.** When the election timer of a follower or candidate fires, it does not
  raise its term: it asks every voter ``PRE_VOTE`` {term: current + 1,
  last_log_index, last_log_term} and pushes its timer out by a new random timeout.
  Only once a majority (counting itself) granted does it let pysyncobj run the real
  election (timer set to 0, one tick later). A voter grants iff the proposed term is
  above its own, the candidate's log is at least as up to date as its own (Raft
  §5.4.1) and it is not *in lease*: it is not the leader and has not heard an
  AppendEntries from a leader within ``raftMinTimeout``. A pre-vote changes no state
  and persists nothing, so it needs no journal flush.
* **Leader stickiness** (etcd: "ignore a vote request within the lease" under
  CheckQuorum). A ``request_vote`` of a higher term that reaches a voter in lease is
  dropped, unless it carries ``transfer`` (set by the sender while pysyncobj's
  TimeoutNow transfer is in progress: the leader asked for that election, and
  pysyncobj's transferee skips the pre-vote as etcd's ``campaignTransfer`` does).
* **CheckQuorum.** A leader that has had no AppendEntries reply from a majority
  (counting itself) within ``check_quorum_timeout_s`` (default ``raftMaxTimeout``, the
  longest election timeout) steps down to follower, as pysyncobj's own
  ``leaderFallbackTimeout`` check does (SO:678-686), only sooner: a cut-off leader
  stops believing it leads once the others may have elected someone else.
* **No stuck node** (etcd's ``TestFreeStuckCandidateWithCheckQuorum``). A voter whose
  term got ahead of the leader's (its election started, then its vote requests were
  lost or refused in lease) ignores the leader's AppendEntries (lower term), and its
  pre-votes are refused: under Pre-Vote alone it would stay out of the cluster for
  good. It answers such an AppendEntries with ``TERM_NOTICE`` {term}; the leader
  adopts the higher term and steps down as pysyncobj does on a higher-term
  ``request_vote`` (SO:920-923), and the next election takes everyone in. Likewise a
  refused pre-vote carries the voter's term (``voter_term``), and a pre-candidate
  behind it adopts it (Raft §5.1: a node that sees a higher term adopts it).

Safety: none of this changes what a vote or a commit needs; it only withholds
elections and votes, so Raft's Election Safety and Leader Completeness stay the
library's (the thesis §9.6: Pre-Vote and CheckQuorum are liveness measures).
Liveness: a majority that has not heard from any leader for ``raftMinTimeout``
grants pre-votes to its most up-to-date member, so an election still happens within
about two election timeouts of losing the leader.

All methods run on pysyncobj's tick thread (message callbacks and ``_onTick``), so no
locks. Every private pysyncobj member used is checked by :func:`check_pysyncobj_members`.
"""
from __future__ import annotations

import logging

from pysyncobj import SyncObj
from pysyncobj.monotonic import monotonic as monotonicTime

log = logging.getLogger("ledger.replication")

#: Message types (pysyncobj ignores types it does not know, SO:909-1084).
PRE_VOTE = "ledger_pre_vote"
PRE_VOTE_RESPONSE = "ledger_pre_vote_response"
#: "My term is higher than yours": the answer to an AppendEntries of a lower term (see module docstring).
TERM_NOTICE = "ledger_term_notice"

#: A tick gap above this fraction of the CheckQuorum timeout postpones the check (see _check_quorum).
STALL_FRACTION = 0.25

#: pysyncobj's ``_RAFT_STATE`` values (SO:40-43).
_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2

#: SyncObj methods (name-mangled) the guard calls (pysyncobj 0.3.17).
_METHODS = ("_SyncObj__connectedToAnyone", "_SyncObj__generateRaftTimeout", "_SyncObj__getCurrentLogIndex",
            "_SyncObj__getCurrentLogTerm", "_SyncObj__setState", "_SyncObj__setCurrentTerm")
#: SyncObj attributes the guard reads or writes, present once ``SyncObj.__init__`` has run.
_ATTRIBUTES = ("_SyncObj__raftState", "_SyncObj__raftElectionDeadline", "_SyncObj__raftCurrentTerm",
               "_SyncObj__selfNode", "_SyncObj__otherNodes", "_SyncObj__transport", "_SyncObj__transferInProgress",
               "_SyncObj__raftLeader", "_SyncObj__lastResponseTime", "_SyncObj__conf")


def check_pysyncobj_members(replica=None) -> None:
    """Raise RuntimeError if pysyncobj lacks a private member the guard uses (the class's
    methods; with ``replica``, also its instance attributes)."""
    for name in _METHODS:
        if not callable(getattr(SyncObj, name, None)):
            raise RuntimeError(f"pysyncobj SyncObj.{name} is missing (pinned at 0.3.17)")
    if replica is not None:
        for name in _ATTRIBUTES:
            if not hasattr(replica, name):
                raise RuntimeError(f"pysyncobj SyncObj has no {name} (pinned at 0.3.17)")


class ElectionGuard:
    """Pre-Vote, leader stickiness and CheckQuorum for one pysyncobj replica (see module docstring).

    ``replica`` is a running SyncObj. ``check_quorum_timeout_s`` None: the replica's
    ``raftMaxTimeout`` (seconds). Pre-votes for terms up to the replica's
    ``_vote_after_term`` are refused, like its real votes (a promoted data directory,
    see transport.py). Hooks:
    :meth:`before_tick` before ``SyncObj._onTick``, :meth:`on_message` for every
    message received (True: consumed, do not hand it to pysyncobj), :meth:`tag_outgoing`
    for every message sent.
    """

    def __init__(self, replica, *, check_quorum_timeout_s: float | None = None) -> None:
        check_pysyncobj_members()
        self._r = replica
        self._check_quorum_timeout_s = check_quorum_timeout_s
        #: The term of the pre-vote round in progress (None: none) and the voters that granted it.
        self._round_term: int | None = None
        self._granted: set = set()
        #: A pre-vote was won: the next tick lets pysyncobj run the real election.
        self._won = False
        #: This tick's election is a TimeoutNow transfer (pysyncobj clears its own flag
        #: before it sends the votes, SO:637): tag the request_votes it sends.
        self._transfer_tick = False
        #: monotonic seconds of the previous before_tick (a long gap: this replica stalled).
        self._last_tick = None
        #: monotonic seconds of the last AppendEntries of a current leader (lease start).
        self._leader_contact = float("-inf")
        #: Counters (diagnostics).
        self.pre_votes_started = 0
        self.pre_votes_won = 0
        self.votes_refused_in_lease = 0
        self.quorum_step_downs = 0
        self.terms_adopted = 0

    # -- helpers -----------------------------------------------------------------------
    def _in_lease(self, now: float) -> bool:
        r = self._r
        if r._SyncObj__raftState == _LEADER:
            return True
        return now - self._leader_contact < r._SyncObj__conf.raftMinTimeout

    def _majority(self, votes: int) -> bool:
        return votes > (len(self._r._SyncObj__otherNodes) + 1) / 2

    def _log_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: the candidate's log is at least as up to date as ours."""
        r = self._r
        my_term = r._SyncObj__getCurrentLogTerm()
        return last_term > my_term or (last_term == my_term and last_index >= r._SyncObj__getCurrentLogIndex())

    # -- hooks -------------------------------------------------------------------------
    def before_tick(self) -> None:
        """CheckQuorum on a leader; on a follower or candidate whose election timer fired, a
        pre-vote round instead of pysyncobj's election (unless one was just won or a
        leadership transfer asked for it)."""
        r = self._r
        self._transfer_tick = bool(r._SyncObj__transferInProgress)
        if r._SyncObj__selfNode is None:
            return  # a read-only node (learner) never campaigns
        now = monotonicTime()
        gap = 0.0 if self._last_tick is None else now - self._last_tick
        self._last_tick = now
        state = r._SyncObj__raftState
        if state == _LEADER:
            self._round_term, self._won = None, False
            if not self._check_quorum(now, gap):
                return
            # Stepped down: the timer is long past, and pysyncobj would elect in this very
            # tick (SO:633) without a pre-vote; fall through to start one instead.
        if self._won:
            self._won = False  # pysyncobj's election runs in this tick (the timer is at 0)
            return
        if self._transfer_tick:
            return  # TimeoutNow from the leader: elect at once (etcd's campaignTransfer)
        if r._SyncObj__raftElectionDeadline >= now or not r._SyncObj__connectedToAnyone():
            return
        r._SyncObj__raftElectionDeadline = now + r._SyncObj__generateRaftTimeout()
        term = r._SyncObj__raftCurrentTerm + 1
        self._round_term, self._granted = term, set()
        self.pre_votes_started += 1
        others = r._SyncObj__otherNodes
        log.debug("raft pre-vote for term %d sent to %d voter(s)", term, len(others), extra={"raft_term": term})
        if self._majority(1):
            self._win(term)
            return
        message = {
            "type": PRE_VOTE,
            "term": term,
            "last_log_index": r._SyncObj__getCurrentLogIndex(),
            "last_log_term": r._SyncObj__getCurrentLogTerm(),
        }
        transport = r._SyncObj__transport
        for node in others:
            transport.send(node, message)

    def _win(self, term: int) -> None:
        self._round_term, self._granted = None, set()
        self._won = True
        self.pre_votes_won += 1
        self._r._SyncObj__raftElectionDeadline = 0
        log.info("raft pre-vote for term %d won: starting the election", term, extra={"raft_term": term})

    def _check_quorum(self, now: float, gap: float) -> bool:
        """Step down if no majority replied within the timeout; True if it stepped down.

        ``gap``: seconds since the previous tick. After a stall of this replica's own tick
        thread longer than ``STALL_FRACTION`` of the timeout (a slow fsync, a long apply),
        the replies that arrived meanwhile are still unread in the sockets: the check
        waits for the next tick, after the poll has read them. A replica that stalls on
        every tick is left to pysyncobj's ``leaderFallbackTimeout`` (SO:678)."""
        r = self._r
        others = r._SyncObj__otherNodes
        if not others:
            return False
        timeout = self._check_quorum_timeout_s
        if timeout is None:
            timeout = r._SyncObj__conf.raftMaxTimeout
        if gap > STALL_FRACTION * timeout:
            return False
        last = r._SyncObj__lastResponseTime
        heard = 1 + sum(1 for n in others if last.get(n, 0.0) > now - timeout)
        if not self._majority(heard):
            self.quorum_step_downs += 1
            silent = ", ".join(f"{n.address} {now - last.get(n, 0.0):.1f} s" for n in sorted(others, key=lambda n: n.address))
            log.warning("raft check-quorum: no reply from a majority for %.1f s in term %d (last replies: %s); "
                        "stepping down", timeout, r._SyncObj__raftCurrentTerm, silent,
                        extra={"raft_term": r._SyncObj__raftCurrentTerm})
            # As pysyncobj's leaderFallbackTimeout step-down (SO:684-686).
            r._SyncObj__setState(_FOLLOWER)
            r._SyncObj__raftLeader = None
            return True
        return False

    def on_message(self, node, message: dict) -> bool:
        """Answer and count pre-votes, note leader contact, drop vote requests within the
        lease. True: the message was consumed (pysyncobj must not see it)."""
        kind = message.get("type")
        r = self._r
        if kind == "append_entries":
            term, current = message.get("term", -1), r._SyncObj__raftCurrentTerm
            if term >= current:
                self._leader_contact = monotonicTime()
                self._round_term, self._won = None, False
            elif r._SyncObj__selfNode is not None and node in r._SyncObj__otherNodes:
                r._SyncObj__transport.send(node, {"type": TERM_NOTICE, "term": current})
            return False
        if kind == TERM_NOTICE:
            if node in r._SyncObj__otherNodes and message.get("term", 0) > r._SyncObj__raftCurrentTerm:
                self._adopt(message["term"], "a voter answered with term %d" % message["term"])
            return True
        if kind == "request_vote":
            if (r._SyncObj__selfNode is not None and message.get("term", 0) > r._SyncObj__raftCurrentTerm
                    and not message.get("transfer") and self._in_lease(monotonicTime())):
                self.votes_refused_in_lease += 1
                return True
            return False
        if kind == PRE_VOTE:
            self._answer_pre_vote(node, message)
            return True
        if kind == PRE_VOTE_RESPONSE:
            term = message.get("term")
            voter_term = message.get("voter_term", 0)
            if (not message.get("granted") and node in r._SyncObj__otherNodes
                    and voter_term > r._SyncObj__raftCurrentTerm and r._SyncObj__raftState != _LEADER):
                self._adopt(voter_term, "a voter refused our pre-vote in term %d" % voter_term)
                return True
            if (message.get("granted") and term is not None and term == self._round_term
                    and term == r._SyncObj__raftCurrentTerm + 1 and node in r._SyncObj__otherNodes
                    and r._SyncObj__raftState != _LEADER):
                self._granted.add(node)
                if self._majority(1 + len(self._granted)):
                    self._win(term)
            return True
        return False

    def _answer_pre_vote(self, node, message: dict) -> None:
        r = self._r
        if r._SyncObj__selfNode is None or node not in r._SyncObj__otherNodes:
            return  # learners do not vote; only voters may ask
        term = message.get("term", 0)
        granted = (
            term > r._SyncObj__raftCurrentTerm
            and term > getattr(r, "_vote_after_term", 0)
            and not self._in_lease(monotonicTime())
            and self._log_up_to_date(message.get("last_log_index", 0), message.get("last_log_term", 0))
        )
        r._SyncObj__transport.send(node, {"type": PRE_VOTE_RESPONSE, "term": term, "granted": granted,
                                          "voter_term": r._SyncObj__raftCurrentTerm})

    def _adopt(self, term: int, why: str) -> None:
        """Take the higher ``term`` as a follower with no vote cast, as pysyncobj does on a
        higher-term ``request_vote`` (SO:920-923); the journal records the term."""
        r = self._r
        self.terms_adopted += 1
        log.info("raft term %d adopted (%s)", term, why, extra={"raft_term": term})
        r._SyncObj__setCurrentTerm(term, None)
        r._SyncObj__setState(_FOLLOWER)
        r._SyncObj__raftLeader = None
        self._round_term, self._won = None, False

    def tag_outgoing(self, message: dict) -> dict:
        """A ``request_vote`` sent by the election of a TimeoutNow transfer carries ``transfer``:
        voters in lease grant it anyway (the leader asked for this election)."""
        if message.get("type") == "request_vote" and self._transfer_tick:
            return dict(message, transfer=True)
        return message
