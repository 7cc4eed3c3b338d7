"""Per-member rate limits: one token bucket of events per member (RFC 2697-style
token bucket: ``rate`` tokens a second, at most ``burst`` saved).

Charged after the member is authenticated (its signature verified) and its
transactions decoded, so no one can spend another member's tokens, and before
anything is proposed. Refused submissions cost no tokens. Thread-safe; time comes
from ``clock`` (seconds, monotonic) so tests need not sleep.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Rate:
    """``events_per_s`` sustained, ``burst`` events at once (both > 0)."""

    events_per_s: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.events_per_s > 0 and self.burst > 0):
            raise ValueError("a rate needs events_per_s > 0 and burst > 0")


class MemberRateLimiter:
    """``take(member, events)`` -> None (allowed, tokens taken) or the seconds to wait.

    ``rates`` per member id; members not listed get ``default``. A request larger
    than its member's burst can never pass: it is refused with the wait that would
    fill the bucket, and the caller should say so (split the request).
    """

    def __init__(self, default: Rate, rates: dict[str, Rate] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._default = default
        self._rates = dict(rates or {})
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, list[float]] = {}  # member -> [tokens, last refill time]

    def rate(self, member: str) -> Rate:
        return self._rates.get(member, self._default)

    def take(self, member: str, events: int) -> float | None:
        rate = self.rate(member)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(member)
            if bucket is None:
                bucket = self._buckets[member] = [rate.burst, now]
            tokens = min(rate.burst, bucket[0] + (now - bucket[1]) * rate.events_per_s)
            bucket[1] = now
            if events <= tokens:
                bucket[0] = tokens - events
                return None
            bucket[0] = tokens
            return (min(events, rate.burst) - tokens) / rate.events_per_s
