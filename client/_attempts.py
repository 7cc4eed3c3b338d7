"""The retry rules of the SDK's calls, without I/O: one copy for the thread and asyncio clients.

Each rule is a generator (sans-IO) that yields what to do next and is sent back what
happened; a driver performs the step with its own I/O (``LedgerClient`` blocking,
``AsyncLedgerClient`` awaiting) and sends back the result:

* :class:`Call` ``(addr, timeout_s)``: send the request to ``addr`` with that timeout;
  send back the response, or the exception if it is one of :data:`RETRIED` (any other
  exception propagates from the driver: ``InvalidRequest``, ``NotFound`` are the same
  on every validator);
* :class:`Learn` ``(addr)``: read the governed validator set from ``addr`` (best effort);
  send back None;
* :class:`Sleep` ``(seconds)``: back off; send back None.

The generator's return value is the call's response; it raises the call's final
exception (``NotSubmitted``, ``Timeout``, ``Unavailable``) itself. ``core`` is the
thread client (``LedgerClient``): its retry policy, clock, candidates, leader hint,
configured validators and retry counter.
"""
from __future__ import annotations

from typing import Generator, NamedTuple, Union

from raft_ledger_client._exceptions import (
    LedgerError, NotLeader, NotSubmitted, RateLimited, Timeout, TransportError, Unavailable,
)

#: The outcomes a rule retries; a driver sends them back instead of raising them.
RETRIED = (TransportError, NotSubmitted)


class Call(NamedTuple):
    addr: str
    timeout_s: float


class Learn(NamedTuple):
    addr: str


class Sleep(NamedTuple):
    seconds: float


Step = Union[Call, Learn, Sleep]
Attempts = Generator[Step, object, object]


def detail(e: BaseException | None) -> str:
    """The last error of a failed call, for the final exception's message."""
    return f"{type(e).__name__}: {e}" if e is not None else "no attempt"


def backoff(core, current: float, deadline: float) -> Generator[Step, object, float | None]:
    """Sleep ``current`` seconds (at most until ``deadline``, monotonic s); return the next
    backoff (doubled, capped at ``retry.backoff_max_s``), or None once past the deadline."""
    remaining = deadline - core._clock()
    if remaining <= 0:
        return None
    yield Sleep(min(current, remaining))
    return min(current * 2, core.retry.backoff_max_s)


def leader_call(core, method: str, deadline: float) -> Attempts:
    """A call to the leader: follow redirects (to configured validators only), retry
    unknown outcomes with the same request, until ``deadline`` (monotonic s).

    Ends in ``NotSubmitted`` if every attempt was refused before proposal, else (some
    attempt may have been proposed) ``Timeout`` if one timed out, ``Unavailable``
    otherwise. A redirect is followed at once, but a leader that redirects too (an
    election) is backed off from; a rate-limit refusal backs off at least its
    ``retry-after``.
    """
    wait: float | None = core.retry.backoff_initial_s
    last: LedgerError | None = None
    unknown = timed_out = redirected = False
    candidates = core._candidates()
    i = 0
    while wait is not None:
        addr = candidates[i % len(candidates)]
        outcome = yield Call(addr, core._attempt_timeout(deadline))
        if not isinstance(outcome, RETRIED):
            core._leader = addr
            return outcome
        last = outcome
        if isinstance(outcome, NotLeader):
            leader = outcome.leader_address
            if leader and leader != addr and leader not in core._allowed:
                yield Learn(addr)
            # Only to a configured validator (genesis, or added since by governance): any
            # other hint is ignored, as if no leader were known (tests/unit/test_sdk_client.py).
            if leader and leader != addr and leader in core._allowed:
                core._leader = leader
                candidates = core._candidates()
                i = 0
                if not redirected and core._clock() < deadline:
                    redirected = True
                    continue
                core.retries += 1
                wait = yield from backoff(core, wait, deadline)
                continue
        elif isinstance(outcome, RateLimited):
            core.retries += 1
            wait = yield from backoff(core, max(wait, outcome.retry_after_s), deadline)
            continue
        elif isinstance(outcome, TransportError):
            unknown = True
            timed_out = timed_out or isinstance(outcome, Timeout)
        redirected = False
        core.retries += 1
        if addr == core._leader:
            core._leader = None
        i += 1
        wait = yield from backoff(core, wait, deadline)
    if not unknown:
        raise NotSubmitted(f"{method}: every attempt within {core.retry.deadline_s}s was refused before "
                           f"anything was proposed ({detail(last)}); nothing was applied by this call")
    err = Timeout if timed_out else Unavailable
    raise err(f"{method}: not committed within {core.retry.deadline_s}s, outcome unknown ({detail(last)}); "
              "resubmit the same signed transactions to learn it")


def local_read(core, method: str, deadline: float, address: str | None = None) -> Attempts:
    """A LOCAL read: ``address``, or any validator (the next on failure, then back off),
    until ``deadline``; ends in ``Unavailable``."""
    wait: float | None = core.retry.backoff_initial_s
    last: LedgerError | None = None
    while wait is not None:
        for addr in [address] if address else core._candidates():
            outcome = yield Call(addr, core._attempt_timeout(deadline))
            if not isinstance(outcome, RETRIED):
                return outcome
            last = outcome
            if core._clock() >= deadline:
                break
        wait = yield from backoff(core, wait, deadline)
    raise Unavailable(f"{method}: no validator answered within {core.retry.deadline_s}s ({detail(last)})")
