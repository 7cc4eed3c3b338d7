"""The SDK's exceptions.

::

    LedgerError
    ├── TransportError          the call may not have reached a validator, or its answer was lost
    │   ├── Timeout             no answer in time: outcome unknown, retry the same transactions
    │   └── Unavailable         no leader / no validator reachable: outcome unknown
    ├── InvalidRequest          the validator refused the request as a whole (malformed,
    │                           bad signature, unknown member, limit): nothing was applied
    └── NotFound                no such block

Per-event rejections (``exceeds_credits``, ``exists`` ...) are not exceptions but
values: :class:`client.EventResult` with a code and a TigerBeetle name.
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


class InvalidRequest(LedgerError):
    pass


class NotFound(LedgerError):
    pass
