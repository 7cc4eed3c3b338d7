"""Always-on invariant checks: TigerBeetle's assertions, which ``python -O`` cannot remove.

A failed check is a bug in this code or a corrupted store, never an expected
failure (those are result codes, see :mod:`.types`). It raises
:class:`InvariantError`; the Raft adapter then stops the validator (fail-stop)
rather than build on a state it cannot trust. Use :func:`verify` where the
message is a constant; on hot paths write ``if not cond: fatal(f"...")`` so the
message is only formatted when the check fails.

Source: TigerBeetle, docs/TIGER_STYLE.md ("Assertions ... are always on").
"""
from __future__ import annotations

from typing import NoReturn


class InvariantError(Exception):
    """An invariant does not hold: a bug or corrupted storage. Not an expected failure."""


def fatal(message: str) -> NoReturn:
    """Raise :class:`InvariantError` with ``message``."""
    raise InvariantError(message)


def verify(condition: object, message: str) -> None:
    """Raise :class:`InvariantError` with ``message`` unless ``condition`` is true."""
    if not condition:
        raise InvariantError(message)
