"""Statistics the demo, the benchmark and the chaos report share, so their numbers compare.

``percentile`` is the **nearest-rank** percentile (the textbook definition; numpy's
``method="inverted_cdf"``): the smallest observed value such that at least ``p`` %
of the values are at or below it, i.e. ``sorted_values[ceil(p/100 * n) - 1]``. It
always returns a value that was measured (a p99 latency is one some request really
had), never an interpolation between two.

``Zipf`` draws ranks with P(rank k) ∝ 1/(k+1)^s by inverting the cumulative weights
with one ``rng.random()`` per draw, as ``random.choices(cum_weights=...)`` does: for
a given seed it draws what the demo's and the benchmark's samplers drew before they
were merged into this one.
"""
from __future__ import annotations

import bisect
import itertools
import math
import random
from fractions import Fraction
from typing import Sequence


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank ``p``-th percentile (0 <= p <= 100) of an ascending sequence.

    Returns ``sorted_values[ceil(p/100 * n) - 1]`` (the minimum for p = 0), NaN when
    the sequence is empty. The input must already be sorted (callers sort once and
    ask for several percentiles). ``p`` is taken as the decimal it prints as, so
    ``p=99.9`` of 1000 values is the 999th, not the 1000th. Raises ValueError for
    ``p`` outside [0, 100].
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile p must be within [0, 100], got {p}")
    n = len(sorted_values)
    if n == 0:
        return float("nan")
    # Exact arithmetic: 0.07 * 100 is 7.000000000000001 in floats, whose ceiling is 8.
    rank = max(1, math.ceil(Fraction(str(p)) * n / 100))
    return sorted_values[rank - 1]


class Zipf:
    """Ranks 0..n-1 drawn with P(rank k) ∝ 1/(k+1)^s (rank 0 the most popular).

    ``n`` >= 1 ranks, exponent ``s`` >= 0 (0 is uniform); ``rng`` supplies the
    randomness (one ``random()`` call per draw, so a seeded ``random.Random`` gives
    a reproducible sequence). Raises ValueError for n < 1 or s < 0.
    """

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        if n < 1:
            raise ValueError(f"Zipf needs at least one rank, got n={n}")
        if s < 0:
            raise ValueError(f"Zipf exponent must be >= 0, got s={s}")
        self.n = n
        self.s = s
        self._cum = list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(n)))
        self._total = self._cum[-1]
        self._rng = rng

    def sample(self) -> int:
        """One rank in 0..n-1."""
        return bisect.bisect(self._cum, self._rng.random() * self._total, 0, self.n - 1)

    def samples(self, k: int) -> list[int]:
        """``k`` ranks, the same as ``k`` calls of :meth:`sample`."""
        cum, total, rnd, hi = self._cum, self._total, self._rng.random, self.n - 1
        return [bisect.bisect(cum, rnd() * total, 0, hi) for _ in range(k)]
