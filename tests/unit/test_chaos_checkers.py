"""The chaos suite's checkers (chaos/checkers.py) on small hand-made histories.

Each checker gets a history it must accept and the anomaly it exists to catch:
a lost acknowledged transfer, a transfer applied twice, a failed transfer that
took effect, divergent chains, an overdraft, a stale read and reads seen in an
impossible order. The anomalies are the ones Jepsen's bank workload looks for
(jepsen.tests.bank: wrong totals, negative balances) plus linearizability in the
sense of Herlihy & Wing 1990 (every operation takes effect at one instant between
its invocation and its response), decided by Porcupine.

The Porcupine tests run the real ``ledger-porcupine`` binary, built once per
session from chaos/porcupine with ``go build`` (skipped only if Go is absent).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from raft_ledger_chaos import checkers
from raft_ledger_chaos.checkers import CheckResult

ACCOUNTS = [1, 2, 3]
INITIAL = {"1": 100, "2": 100, "3": 100}
TOTAL = 300
MS = 1_000_000  # time_ns per millisecond


class History:
    """Builds chaos/history.py records; times in milliseconds since t0."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.next_id = 10_000_001

    def _add(self, process: int, type_: str, f: str, t_ms: float, value) -> None:
        self.records.append({"process": process, "type": type_, "f": f, "time_ns": int(t_ms * MS), "value": value})

    def transfer(self, process: int, frm: int, to: int, amount: int, start: float, end: float | None,
                 outcome: str = "ok", tid: int | None = None) -> int:
        """outcome: ok | exceeds_credits | refused | info | None (never completed)."""
        tid = tid if tid is not None else self.next_id
        self.next_id = max(self.next_id, tid) + 1
        value = {"id": tid, "from": frm, "to": to, "amount": amount}
        self._add(process, "invoke", "transfer", start, value)
        if outcome == "ok":
            self._add(process, "ok", "transfer", end, {**value, "result": "ok"})
        elif outcome == "exceeds_credits":
            self._add(process, "fail", "transfer", end, {**value, "result": "exceeds_credits"})
        elif outcome == "refused":
            self._add(process, "fail", "transfer", end, {**value, "result": "refused: InvalidRequest"})
        elif outcome == "info":
            self._add(process, "info", "transfer", end, {**value, "result": "unknown: Timeout"})
        return tid

    def read(self, process: int, balances: dict[int, int], start: float, end: float) -> None:
        self._add(process, "invoke", "read", start, None)
        self._add(process, "ok", "read", end, {"balances": {str(a): n for a, n in balances.items()}})

    def failed_read(self, process: int, start: float, end: float) -> None:
        self._add(process, "invoke", "read", start, None)
        self._add(process, "fail", "read", end, {"error": "Unavailable"})

    def finish(self) -> list[dict]:
        ordered = sorted(self.records, key=lambda r: r["time_ns"])  # stable: invoke before its completion
        return [{"index": i, **r} for i, r in enumerate(ordered)]

    def write(self, path) -> str:
        with open(path, "w") as f:
            for r in self.finish():
                f.write(json.dumps(r) + "\n")
        return str(path)


def validator(chain: list[str], balances: dict[int, int], present: list[int]) -> dict:
    return {"head": {"height": len(chain), "hash": chain[-1] if chain else ""}, "chain": list(chain),
            "balances": {str(a): n for a, n in balances.items()}, "transfers_present": sorted(present)}


def final_state(**validators: dict) -> dict:
    return {"validators": validators, "accounts": ACCOUNTS, "total": TOTAL, "initial_balances": dict(INITIAL)}


CHAIN = ["aa" * 32, "bb" * 32, "cc" * 32]


def healthy():
    """Two acknowledged transfers, one rejection, one refused request, one unknown that happened."""
    h = History()
    t1 = h.transfer(0, 1, 2, 30, 0, 10)                        # 1:70 2:130
    h.read(1, {1: 70, 2: 130, 3: 100}, 12, 14)
    t2 = h.transfer(0, 2, 3, 50, 20, 30)                       # 2:80 3:150
    rej = h.transfer(1, 1, 3, 90, 31, 33, "exceeds_credits")   # 1 has 70 < 90
    ref = h.transfer(2, 1, 3, 5, 31, 33, "refused")
    unk = h.transfer(3, 3, 1, 10, 34, 2034, "info")            # happened: 1:80 3:140
    h.read(1, {1: 80, 2: 80, 3: 140}, 2100, 2110)
    balances = {1: 80, 2: 80, 3: 140}
    present = [t1, t2, unk]
    state = final_state(v1=validator(CHAIN, balances, present), v2=validator(CHAIN, balances, present),
                        v3=validator(CHAIN, balances, present))
    return h, state, {"acked": [t1, t2], "rejected": rej, "refused": ref, "unknown": unk}


# (a) read totals ------------------------------------------------------------------------


def test_read_totals_pass_when_every_ok_read_sums_to_total():
    h, _, _ = healthy()
    r = checkers.check_read_totals(h.finish(), TOTAL)
    assert r.passed is True and "all 2 ok reads" in r.evidence


def test_read_totals_fail_names_the_read_that_saw_money_in_flight():
    h, _, _ = healthy()
    h.read(2, {1: 70, 2: 100, 3: 100}, 40, 41)  # the debit without the credit
    r = checkers.check_read_totals(h.finish(), TOTAL)
    assert r.passed is False
    assert "summed to 270" in r.evidence and r.details["violations"] == 1


def test_read_totals_undecided_without_reads():
    h = History()
    h.transfer(0, 1, 2, 1, 0, 1)
    h.failed_read(1, 2, 3)
    assert checkers.check_read_totals(h.finish(), TOTAL).passed is None


# (b) acknowledged present ---------------------------------------------------------------


def test_acknowledged_present_pass():
    h, state, _ = healthy()
    r = checkers.check_acknowledged_present(h.finish(), state)
    assert r.passed is True and "all 2 acknowledged transfers present once on all 3 validators" in r.evidence


def test_lost_acknowledged_transfer_fails_with_its_id_and_validator():
    h, state, ids = healthy()
    lost = ids["acked"][1]
    state["validators"]["v3"]["transfers_present"].remove(lost)
    r = checkers.check_acknowledged_present(h.finish(), state)
    assert r.passed is False
    assert f"transfer {lost}" in r.evidence and "missing on v3" in r.evidence
    assert r.details["missing"] == {"v3": [lost]}


def test_acknowledged_transfer_listed_twice_fails():
    h, state, ids = healthy()
    state["validators"]["v1"]["transfers_present"].append(ids["acked"][0])
    r = checkers.check_acknowledged_present(h.finish(), state)
    assert r.passed is False and "listed 2 times on v1" in r.evidence


def test_acknowledged_present_undecided_when_a_validator_cannot_be_read():
    h, state, _ = healthy()
    state["validators"]["v2"] = {"error": "Unavailable: connection refused"}
    r = checkers.check_acknowledged_present(h.finish(), state)
    assert r.passed is None and "v2 (Unavailable" in r.evidence


# (c) failed absent ----------------------------------------------------------------------


def test_failed_absent_pass():
    h, state, _ = healthy()
    r = checkers.check_failed_absent(h.finish(), state)
    assert r.passed is True and r.details["by_result"] == {"exceeds_credits": 1, "refused": 1}


@pytest.mark.parametrize("which", ["rejected", "refused"])
def test_failed_transfer_present_fails(which):
    h, state, ids = healthy()
    state["validators"]["v2"]["transfers_present"].append(ids[which])
    r = checkers.check_failed_absent(h.finish(), state)
    assert r.passed is False and f"transfer {ids[which]} failed" in r.evidence and "present on v2" in r.evidence


def test_unknown_outcome_may_be_present_or_absent():
    h, state, ids = healthy()
    for v in state["validators"].values():
        v["transfers_present"].remove(ids["unknown"])
    assert checkers.check_failed_absent(h.finish(), state).passed is True
    assert checkers.check_acknowledged_present(h.finish(), state).passed is True


# (d) agreement --------------------------------------------------------------------------


def test_agreement_pass():
    _, state, _ = healthy()
    r = checkers.check_agreement(state)
    assert r.passed is True and "3 validators agree: 3 blocks" in r.evidence


def test_divergent_chains_fail_at_the_first_different_height():
    _, state, _ = healthy()
    state["validators"]["v2"] = validator(["aa" * 32, "dd" * 32, "cc" * 32], {1: 80, 2: 80, 3: 140}, [])
    r = checkers.check_agreement(state)
    assert r.passed is False
    assert "diverge at height 2" in r.evidence and r.details["first_difference"] == {"v2": 2}


def test_lagging_chain_fails():
    _, state, _ = healthy()
    state["validators"]["v3"] = validator(CHAIN[:2], {1: 80, 2: 80, 3: 140}, [])
    r = checkers.check_agreement(state)
    assert r.passed is False and "differ in length at height 3" in r.evidence


def test_divergent_balances_fail():
    _, state, _ = healthy()
    state["validators"]["v1"]["balances"]["1"] = 81
    r = checkers.check_agreement(state)
    assert r.passed is False and "differ on account(s) 1 (81 vs 80)" in r.evidence


def test_head_that_does_not_match_the_chain_fails():
    _, state, _ = healthy()
    state["validators"]["v1"]["head"]["hash"] = "ee" * 32
    assert checkers.check_agreement(state).passed is False


def test_validator_that_cannot_be_read_fails_agreement():
    _, state, _ = healthy()
    state["validators"]["v3"] = {"error": "Timeout"}
    r = checkers.check_agreement(state)
    assert r.passed is False and "v3 did not report its state" in r.evidence


# (e) limits -----------------------------------------------------------------------------


def test_limits_pass():
    h, state, _ = healthy()
    assert checkers.check_limits(h.finish(), state).passed is True


def test_overdraft_in_a_read_fails():
    h, state, _ = healthy()
    h.read(2, {1: -5, 2: 205, 3: 100}, 40, 41)
    r = checkers.check_limits(h.finish(), state)
    assert r.passed is False and "account 1 at -5" in r.evidence


def test_overdraft_in_the_final_state_fails():
    h, state, _ = healthy()
    state["validators"]["v2"]["balances"] = {"1": -1, "2": 161, "3": 140}
    r = checkers.check_limits(h.finish(), state)
    assert r.passed is False and "final state of v2" in r.evidence


# conservation ---------------------------------------------------------------------------


def test_conservation_pass_with_replay():
    h, state, _ = healthy()
    r = checkers.check_conservation(state, TOTAL, h.finish())
    assert r.passed is True and "equal initial + each present transfer once" in r.evidence


def test_duplicate_apply_keeps_the_sum_but_fails_the_replay():
    # Transfer t1 (1 -> 2, 30) applied twice on v1: the total is intact, the accounts are not.
    h, state, ids = healthy()
    state["validators"]["v1"]["balances"] = {"1": 50, "2": 110, "3": 140}
    without_history = checkers.check_conservation(state, TOTAL)
    assert without_history.passed is True and "replay skipped" in without_history.evidence
    r = checkers.check_conservation(state, TOTAL, h.finish())
    assert r.passed is False
    assert r.details["replay_mismatch"] == {"v1": {"1": -30, "2": 30}}
    assert "applied twice" in r.evidence


def test_money_created_fails_the_sum():
    h, state, _ = healthy()
    state["validators"]["v2"]["balances"]["3"] = 141
    r = checkers.check_conservation(state, TOTAL, h.finish())
    assert r.passed is False and "v2: balances sum to 301, not 300" in r.evidence


# (f) linearizability, with the real Porcupine ------------------------------------------


@pytest.fixture(scope="session")
def porcupine(tmp_path_factory) -> str:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed: cannot build ledger-porcupine")
    out = tmp_path_factory.mktemp("porcupine") / "ledger-porcupine"
    module = os.path.join(os.path.dirname(__file__), "..", "..", "chaos", "porcupine")
    subprocess.run([go, "build", "-o", str(out), "."], cwd=module, check=True, timeout=300)
    return str(out)


MODELS = ["nondeterministic", "deterministic"]


def linearizable(h: History, tmp_path, porcupine: str, model: str, **kw) -> CheckResult:
    path = h.write(tmp_path / "history.jsonl")
    return checkers.check_linearizable(path, INITIAL, porcupine, 10.0, model=model, **kw)


@pytest.mark.parametrize("model", MODELS)
def test_healthy_history_is_linearizable(tmp_path, porcupine, model):
    h, _, _ = healthy()
    r = linearizable(h, tmp_path, porcupine, model)
    assert r.passed is True, r.evidence
    s = r.details["summary"]
    # the refused transfer observed nothing and is left out; the rejection is kept as an observation
    assert (s["operations"], s["transfers_exceeds_credits"], s["transfers_unknown"], s["dropped"]) == (6, 1, 1, 1)
    assert os.path.exists(tmp_path / checkers.VISUALIZATION_NAME)


@pytest.mark.parametrize("model", MODELS)
def test_concurrent_reads_may_see_a_concurrent_transfer_either_way(tmp_path, porcupine, model):
    # Both reads overlap the transfer: one before, one after its linearization point.
    h = History()
    h.transfer(0, 1, 2, 10, 0, 100)
    h.read(1, {1: 100, 2: 100, 3: 100}, 10, 20)
    h.read(2, {1: 90, 2: 110, 3: 100}, 30, 40)
    assert linearizable(h, tmp_path, porcupine, model).passed is True


@pytest.mark.parametrize("model", MODELS)
def test_stale_read_is_not_linearizable(tmp_path, porcupine, model):
    # The read starts after the transfer was acknowledged but does not see it.
    h = History()
    h.transfer(0, 1, 2, 10, 0, 10)
    h.read(1, {1: 100, 2: 100, 3: 100}, 20, 30)
    r = linearizable(h, tmp_path, porcupine, model)
    assert r.passed is False
    assert "NOT linearizable" in r.evidence and "read() -> {1:100 2:100 3:100}" in r.evidence
    assert r.details["summary"]["stuck"]["history_index"] == 2


@pytest.mark.parametrize("model", MODELS)
def test_reads_in_an_impossible_order_are_not_linearizable(tmp_path, porcupine, model):
    # The transfer overlaps both reads, but the second read starts after the first one
    # returned: once a read saw the transfer, a later read cannot un-see it.
    h = History()
    h.transfer(0, 1, 2, 10, 0, 100)
    h.read(1, {1: 90, 2: 110, 3: 100}, 10, 20)
    h.read(2, {1: 100, 2: 100, 3: 100}, 30, 40)
    assert linearizable(h, tmp_path, porcupine, model).passed is False


@pytest.mark.parametrize("model", MODELS)
def test_a_rejection_is_an_observation_of_the_balance(tmp_path, porcupine, model):
    # exceeds_credits while account 1 held 100 >= 60 and nothing else ran: impossible.
    h = History()
    h.transfer(0, 1, 2, 60, 0, 10, "exceeds_credits")
    assert linearizable(h, tmp_path, porcupine, model).passed is False
    # ... but possible when a concurrent transfer may have drained it first.
    h = History()
    h.transfer(1, 1, 3, 50, 0, 20)
    h.transfer(0, 1, 2, 60, 5, 15, "exceeds_credits")
    (tmp_path / "drained").mkdir()
    assert linearizable(h, tmp_path / "drained", porcupine, model).passed is True


@pytest.mark.parametrize("model", MODELS)
def test_unknown_transfer_may_take_effect_late_or_never(tmp_path, porcupine, model):
    h = History()
    h.transfer(0, 1, 2, 10, 0, 50, "info")     # timed out
    h.transfer(1, 3, 2, 20, 60, 70, "info")    # timed out, never happened
    h.read(2, {1: 100, 2: 100, 3: 100}, 100, 110)
    h.read(2, {1: 90, 2: 110, 3: 100}, 5000, 5010)  # the first one landed long after its timeout
    h.transfer(3, 2, 3, 5, 6000, None, None)    # never completed
    assert linearizable(h, tmp_path, porcupine, model).passed is True


@pytest.mark.parametrize("model", MODELS)
def test_unknown_transfer_applies_at_most_once(tmp_path, porcupine, model):
    h = History()
    h.transfer(0, 1, 2, 10, 0, 50, "info")
    h.read(2, {1: 90, 2: 110, 3: 100}, 100, 110)
    h.read(2, {1: 80, 2: 120, 3: 100}, 200, 210)  # its effect twice
    assert linearizable(h, tmp_path, porcupine, model).passed is False


def test_unknown_transfer_absent_from_the_final_state_is_left_out(tmp_path, porcupine):
    # A read saw the unknown transfer, yet no validator has it: observed, then lost.
    h = History()
    tid = h.transfer(0, 1, 2, 10, 0, 50, "info")
    other = h.transfer(1, 3, 1, 1, 0, 50, "info")
    h.read(2, {1: 90, 2: 110, 3: 100}, 100, 110)
    assert linearizable(h, tmp_path, porcupine, "nondeterministic").passed is True
    lost = linearizable(h, tmp_path, porcupine, "nondeterministic", present_transfer_ids=[])
    assert lost.passed is False
    assert lost.details["summary"]["unknown_absent_dropped"] == 2
    kept = linearizable(h, tmp_path, porcupine, "nondeterministic", present_transfer_ids=[tid])
    assert kept.passed is True and kept.details["summary"]["unknown_present"] == 1
    # Without the argument the ids come from final_state.json next to the history.
    with open(tmp_path / checkers.FINAL_STATE_NAME, "w") as f:
        json.dump(final_state(v1=validator(CHAIN, {}, [other]), v2={"error": "Timeout"}), f)
    auto = linearizable(h, tmp_path, porcupine, "nondeterministic")
    assert auto.passed is False and auto.details["unknown_resolved_from"] == checkers.FINAL_STATE_NAME


def test_search_that_runs_out_of_time_is_undecided(tmp_path, porcupine):
    # 24 unknown transfers between accounts 2 and 3 that never happened, then a read
    # that missed an acknowledged transfer from account 1: no subset of the unknowns
    # explains it, and Porcupine must try every one (2^24) before it can say so.
    h = History()
    for i in range(24):
        h.transfer(100 + i, 2 + i % 2, 3 - i % 2, 1 + i % 7, i, i + 5, "info")
    h.transfer(0, 1, 2, 10, 100, 110)
    h.read(1, {1: 100, 2: 100, 3: 100}, 200, 210)
    path = h.write(tmp_path / "history.jsonl")
    r = checkers.check_linearizable(path, INITIAL, porcupine, 0.3, visualize=False)
    assert r.passed is None and "timed out" in r.evidence, r.evidence


def test_bad_input_is_undecided_with_the_reason(tmp_path, porcupine):
    h = History()
    h.read(1, {1: 100, 2: 100, 9: 100}, 0, 1)
    r = linearizable(h, tmp_path, porcupine, "nondeterministic")
    assert r.passed is None and 'unknown account "9"' in r.evidence


def test_missing_binary_is_undecided(tmp_path):
    h, _, _ = healthy()
    r = checkers.check_linearizable(h.write(tmp_path / "h.jsonl"), INITIAL, None, 10.0)
    assert r.passed is None and "deploy/local/setup.sh" in r.evidence
