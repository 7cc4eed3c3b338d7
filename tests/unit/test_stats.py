"""The one percentile and Zipf sampler of the demo, the benchmark and the chaos report
(node/stats.py). Nearest rank as defined by NIST's Engineering Statistics Handbook
§7.2.6.2 and Wikipedia's "Percentile" (nearest-rank method): the smallest value with
at least p % of the values at or below it."""
from __future__ import annotations

import collections
import math
import random

import pytest

from raft_ledger_node.stats import Zipf, percentile


def test_nearest_rank_on_known_values():
    # The worked example of the nearest-rank method: 15, 20, 35, 40, 50.
    xs = [15, 20, 35, 40, 50]
    assert [percentile(xs, p) for p in (0, 5, 30, 40, 50, 100)] == [15, 15, 20, 20, 35, 50]
    ys = list(range(1, 101))
    assert percentile(ys, 99) == 99 and percentile(ys, 99.9) == 100 and percentile(ys, 1) == 1


def test_float_rounding_does_not_move_the_rank():
    # 0.07 * 100 == 7.000000000000001 in floats; its ceiling would be the 8th value.
    assert percentile(list(range(1, 101)), 7) == 7
    assert percentile(list(range(1, 1001)), 99.9) == 999


def test_empty_is_nan_and_p_outside_0_100_is_an_error():
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], -1)


def test_zipf_frequencies_follow_the_power_law():
    z = Zipf(10, 1.0, random.Random(5))
    counts = collections.Counter(z.samples(100_000))
    assert set(counts) <= set(range(10))
    # P(0) / P(1) = 2 and P(0) / P(9) = 10 for s = 1.
    assert counts[0] / counts[1] == pytest.approx(2.0, rel=0.05)
    assert counts[0] / counts[9] == pytest.approx(10.0, rel=0.1)


def test_zipf_is_reproducible_and_samples_equals_repeated_sample():
    a = Zipf(1000, 1.1, random.Random(1))
    b = Zipf(1000, 1.1, random.Random(1))
    assert a.samples(500) == [b.sample() for _ in range(500)]
    # The first draws for seed 1, as node/workload.py's own sampler drew them before the merge.
    assert Zipf(1000, 1.1, random.Random(1)).samples(8) == [0, 208, 96, 1, 11, 7, 37, 120]


def test_zipf_rejects_empty_ranges_and_negative_exponents():
    with pytest.raises(ValueError):
        Zipf(0, 1.0, random.Random(1))
    with pytest.raises(ValueError):
        Zipf(3, -0.5, random.Random(1))
