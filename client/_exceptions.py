"""The SDK's exceptions: the only ones that cross the :class:`Transport` seam.

::

    LedgerError                     base; raised as such for an unexpected status (a
    │                               validator bug): treat a write's outcome as unknown
    ├── TransportError              the outcome is unknown: an attempt may have been proposed
    │   ├── Timeout                 no answer in time
    │   └── Unavailable             no validator reachable, or the proposal was dropped
    ├── NotSubmitted                every attempt was refused before anything was proposed
    │   │                           (no leader elected): this call applied nothing
    │   ├── RateLimited             over the member's rate limit: ``retry_after_s``; the
    │   │                           client waits and retries within its deadline
    │   └── NotLeader               one validator's refusal: it does not lead; carries
    │                               ``leader_address`` (None when no leader is known).
    │                               A transport signal: LedgerClient follows it and
    │                               raises NotSubmitted itself when no attempt got further
    ├── InvalidRequest              the validator refused the request as a whole (malformed,
    │                               bad signature, over a limit, a stale governance proposal —
    │                               INVALID_ARGUMENT or RESOURCE_EXHAUSTED): nothing was applied
    ├── PermissionDenied            the caller or signer may not do this (PERMISSION_DENIED or
    │                               UNAUTHENTICATED): its TLS identity or signing key is unknown,
    │                               suspended, removed or revoked, it lacks the role, or it
    │                               submitted a transaction signed by another member. Nothing was
    │                               applied; retrying will not help
    ├── MembershipChangeRefused     the leader will not propose this validator membership
    │                               change now (another in flight, learner behind, no majority
    │                               after it): nothing was proposed; not retried
    ├── TransactionRejected         committed, but refused as a whole at apply time:
    │                               ``rejection`` (a TxRejection); nothing of it applied
    ├── NotFound                    no such block
    └── VerificationError           what a validator served (or a receipt holds) does not
                                    prove what it claims: a malformed checkpoint, note or
                                    receipt, a wrong origin, a bad or repeated validator
                                    signature, too few signers, a failed Merkle proof.
                                    Fail closed: never use the data it came with

Unknown vs. not submitted: after :class:`TransportError` resubmit the very same
signed transactions to learn the outcome (the ledger deduplicates them); after
:class:`NotSubmitted` this call had no effect (an earlier call with the same
transactions still may have had one).

Per-event rejections (``exceeds_credits``, ``exists`` ...) are not exceptions but
values: :class:`EventResult` carrying a :class:`CreateAccountResult` or
:class:`CreateTransferResult`.
"""
from __future__ import annotations


class LedgerError(Exception):
    """Base of every SDK error."""


class TransportError(LedgerError):
    """The outcome of the call is unknown."""


class Timeout(TransportError):
    pass


class Unavailable(TransportError):
    pass


class NotSubmitted(LedgerError):
    """Refused before anything was proposed: the call had no effect."""


class NotLeader(NotSubmitted):
    """This validator does not lead; ``leader_address`` is the leader's (host:port) or None."""

    def __init__(self, message: str, leader_address: str | None = None) -> None:
        super().__init__(message)
        self.leader_address = leader_address

    def __reduce__(self):
        return type(self), (str(self), self.leader_address)


class MembershipChangeRefused(LedgerError):
    """The leader refused to propose a validator membership change now (another one is
    being committed, the learner has not caught up, or the change would leave the
    validators without a majority); nothing was proposed. Not retried: the message says
    what to do first."""


class RateLimited(NotSubmitted):
    """The member is over its rate limit on this validator; ``retry_after_s`` is the
    validator's hint. LedgerClient waits that long and retries within its deadline."""

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self):
        return type(self), (str(self), self.retry_after_s)


class InvalidRequest(LedgerError):
    pass


class PermissionDenied(LedgerError):
    """The validator refused the caller (PERMISSION_DENIED, UNAUTHENTICATED): nothing
    was applied, and the same call with the same identity will be refused again."""


class NotFound(LedgerError):
    pass


class TransactionRejected(LedgerError):
    """The transaction is in the chain but was refused as a whole at apply time:
    ``rejection`` is its :class:`~raft_ledger_client.TxRejection` (e.g.
    ``approvals_below_threshold``, ``signer_key_not_active``); ``height`` its block."""

    def __init__(self, message: str, rejection: int = 0, height: int = 0) -> None:
        super().__init__(message)
        self.rejection = rejection
        self.height = height

    def __reduce__(self):
        return type(self), (str(self), self.rejection, self.height)


class VerificationError(LedgerError):
    """Data that should prove itself did not: the message names the failed check (bad
    format, wrong origin, a validator's signature that does not verify, one validator
    signing twice, fewer than a majority of the validator set, a Merkle proof that does
    not reach the certified root). Raised by :mod:`raft_ledger_client.checkpoint` and
    :mod:`raft_ledger_client.receipt`; never retried, since the same bytes fail again."""
