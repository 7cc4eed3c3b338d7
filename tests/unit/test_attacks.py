"""The hostile-input drill's measure of availability (chaos/attacks.py ``Probe``)."""
from __future__ import annotations

import pytest

from raft_ledger_chaos.attacks import Probe


def test_longest_gap_counts_the_edges_of_the_attack_window():
    p = Probe(client=None, leader_pid=0, commits=[1.0, 1.2, 3.0, 3.1, 9.0])
    assert p.longest_gap_s(0.5, 4.0) == pytest.approx(1.8)          # 1.2 -> 3.0
    assert p.longest_gap_s(3.05, 4.0) == pytest.approx(0.9)         # 3.1 -> the end of the window
    assert p.longest_gap_s(4.0, 8.0) == pytest.approx(4.0)          # no commit at all inside the window
