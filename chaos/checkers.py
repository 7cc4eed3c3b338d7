"""Checkers of a chaos run: each looks at the history and/or the final state and
returns a :class:`CheckResult` with its verdict and the evidence for it.

``passed`` is True (held), False (violated: ``evidence`` names the operations,
validators or heights that show it) or None (could not decide: nothing to check,
a validator that could not be read, the linearizability checker timed out or is
missing; ``evidence`` says which).

``history`` is the list of records of chaos/history.py (``read_history(path)``);
a path to the JSONL file is accepted too. Outcomes:

  * ``ok`` transfer: acknowledged, so it must be on every validator, once;
  * ``fail`` transfer: it definitely did not happen (``exceeds_credits`` and the
    other ledger rejections, or a request refused as a whole), so it must be on
    no validator; only ``exceeds_credits`` also observed the state (Porcupine
    linearizes it like a read);
  * ``info`` transfer: unknown; may or may not be present, at most once.

The final state, read from every validator after the faults healed
(``chaos.bank.collect_final_state``, saved as ``final_state.json``)::

    {
      "validators": {
        "<validator id>": {
          "head": {"height": H, "hash": "<hex of block H's hash>"},
          "chain": ["<hex hash of block 1>", ..., "<hex hash of block H>"],
          "balances": {"<account id>": net},        # credits_posted - debits_posted
          "transfers_present": [<id>, ...]          # the history's transfer ids found there
        },
        "<validator id>": {"error": "<why it could not be read>"},
        ...
      },
      "accounts": [<account id>, ...],
      "total": TOTAL,                               # sum of the accounts' net balances
      "initial_balances": {"<account id>": net}     # at the history's t0, after funding
    }

Account ids are decimal strings as JSON object keys and integers elsewhere;
the checkers compare them as strings.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from raft_ledger_chaos.history import pair_operations, read_history

#: Offending items quoted in ``evidence`` (all of them go into ``details``, up to ``details_items_max``).
evidence_items_max = 5
details_items_max = 100
#: Extra time the Porcupine process gets past its own search timeout (parsing, visualization).
porcupine_slack_s = 60.0
#: Written next to the history by :func:`check_linearizable`.
VISUALIZATION_NAME = "linearizability.html"
FINAL_STATE_NAME = "final_state.json"


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool | None
    evidence: str
    details: dict = field(default_factory=dict)


def _records(history: Iterable[dict] | str) -> list[dict]:
    if isinstance(history, (str, os.PathLike)):
        return list(read_history(os.fspath(history)))
    return list(history)


def _ops(history: Iterable[dict] | str, f: str) -> list[dict]:
    return [op for op in pair_operations(_records(history)) if op["f"] == f]


def _t(rec: dict) -> str:
    return f"{rec['time_ns'] / 1e9:.3f}s"


def _readable(final_state: Mapping) -> tuple[dict, dict]:
    """(validators that answered, {validator: error} for those that did not)."""
    ok, broken = {}, {}
    for vid, v in sorted(final_state.get("validators", {}).items()):
        if "error" in v:
            broken[vid] = v["error"]
        else:
            ok[vid] = v
    return ok, broken


def _quote(items: list[str]) -> str:
    more = len(items) - evidence_items_max
    return "; ".join(items[:evidence_items_max]) + (f"; and {more} more" if more > 0 else "")


def _unreadable_note(broken: dict) -> str:
    return "; not readable: " + ", ".join(f"{v} ({e})" for v, e in broken.items()) if broken else ""


# (a) ---------------------------------------------------------------------------------------


def check_read_totals(history: Iterable[dict] | str, total: int) -> CheckResult:
    """Every ok read of all balances sums to TOTAL (money is neither made nor lost in flight)."""
    name = "read-totals"
    reads = [op for op in _ops(history, "read") if op["complete"] and op["complete"]["type"] == "ok"]
    if not reads:
        return CheckResult(name, None, "no ok read in the history: nothing to check", {"reads": 0})
    bad = []
    for op in reads:
        balances = op["complete"]["value"]["balances"]
        s = sum(balances.values())
        if s != total:
            bad.append({"index": op["complete"]["index"], "process": op["process"], "time_s": op["complete"]["time_ns"] / 1e9,
                        "sum": s, "balances": balances})
    details = {"reads": len(reads), "total": total, "violations": len(bad), "examples": bad[:details_items_max]}
    if not bad:
        return CheckResult(name, True, f"all {len(reads)} ok reads sum to {total}", details)
    quoted = [f"read at history index {b['index']} ({b['time_s']:.3f}s) summed to {b['sum']}" for b in bad]
    return CheckResult(name, False, f"{len(bad)} of {len(reads)} ok reads do not sum to {total}: {_quote(quoted)}", details)


# (b) ---------------------------------------------------------------------------------------


def check_acknowledged_present(history: Iterable[dict] | str, final_state: Mapping) -> CheckResult:
    """Every acknowledged (ok) transfer is present exactly once on every validator.

    "Once" here means the id is listed once; a second application under the
    same id could only show in the balances, which :func:`check_conservation`
    replays.
    """
    name = "acknowledged-present"
    acked = {op["invoke"]["value"]["id"]: op for op in _ops(history, "transfer")
             if op["complete"] and op["complete"]["type"] == "ok"}
    validators, broken = _readable(final_state)
    if not acked:
        return CheckResult(name, None, "no acknowledged transfer in the history: nothing to check", {"acknowledged": 0})
    if not validators:
        return CheckResult(name, None, "no validator could be read" + _unreadable_note(broken), {"unreadable": broken})
    missing: dict[str, list[int]] = {}
    duplicated: dict[str, list[int]] = {}
    for vid, v in validators.items():
        counts = Counter(v["transfers_present"])
        missing[vid] = sorted(i for i in acked if counts[i] == 0)
        duplicated[vid] = sorted(i for i in acked if counts[i] > 1)
    details = {
        "acknowledged": len(acked),
        "missing": {v: ids[:details_items_max] for v, ids in missing.items() if ids},
        "duplicated": {v: ids[:details_items_max] for v, ids in duplicated.items() if ids},
        "unreadable": broken,
    }
    problems = []
    for vid in validators:
        for i in missing[vid]:
            c = acked[i]["complete"]
            problems.append(f"transfer {i} (acknowledged at {_t(c)}, history index {c['index']}) missing on {vid}")
        for i in duplicated[vid]:
            problems.append(f"transfer {i} listed {Counter(validators[vid]['transfers_present'])[i]} times on {vid}")
    if problems:
        return CheckResult(name, False, f"{len(problems)} violation(s) of {len(acked)} acknowledged transfers: {_quote(problems)}"
                           + _unreadable_note(broken), details)
    where = f"all {len(validators)} validators" if not broken else f"the {len(validators)} readable validators ({', '.join(validators)})"
    verdict = None if broken else True
    return CheckResult(name, verdict, f"all {len(acked)} acknowledged transfers present once on {where}" + _unreadable_note(broken), details)


# (c) ---------------------------------------------------------------------------------------


def check_failed_absent(history: Iterable[dict] | str, final_state: Mapping) -> CheckResult:
    """No transfer whose outcome was a definite fail is present on any validator."""
    name = "failed-absent"
    failed = {op["invoke"]["value"]["id"]: op for op in _ops(history, "transfer")
              if op["complete"] and op["complete"]["type"] == "fail"}
    validators, broken = _readable(final_state)
    results = Counter(str(op["complete"]["value"].get("result", "?")).split(":")[0] for op in failed.values())
    if not failed:
        return CheckResult(name, None, "no failed transfer in the history: nothing to check", {"failed": 0})
    if not validators:
        return CheckResult(name, None, "no validator could be read" + _unreadable_note(broken), {"unreadable": broken})
    found = {vid: sorted(set(v["transfers_present"]) & failed.keys()) for vid, v in validators.items()}
    details = {"failed": len(failed), "by_result": dict(results),
               "present": {v: ids[:details_items_max] for v, ids in found.items() if ids}, "unreadable": broken}
    problems = []
    for vid, ids in found.items():
        for i in ids:
            c = failed[i]["complete"]
            problems.append(f"transfer {i} failed with {c['value'].get('result')!r} at {_t(c)} (history index {c['index']}) but is present on {vid}")
    if problems:
        return CheckResult(name, False, f"{len(problems)} failed transfer(s) present: {_quote(problems)}" + _unreadable_note(broken), details)
    by = ", ".join(f"{n} {r}" for r, n in results.most_common())
    return CheckResult(name, None if broken else True,
                       f"none of the {len(failed)} failed transfers ({by}) is present on any of {len(validators)} validators"
                       + _unreadable_note(broken), details)


# (d) ---------------------------------------------------------------------------------------


def _first_difference(a: list[str], b: list[str]) -> int | None:
    """Height (1-based) of the first block where two chains differ, None if identical."""
    for h, (x, y) in enumerate(zip(a, b), start=1):
        if x != y:
            return h
    return None if len(a) == len(b) else min(len(a), len(b)) + 1


def check_agreement(final_state: Mapping) -> CheckResult:
    """All validators have identical block-hash chains (head included) and balances."""
    name = "agreement"
    validators, broken = _readable(final_state)
    if not validators:
        return CheckResult(name, None, "no validator could be read" + _unreadable_note(broken), {"unreadable": broken})
    problems = []
    details: dict = {"validators": list(validators), "unreadable": broken,
                     "heads": {v: s["head"] for v, s in validators.items()}}
    for vid, err in broken.items():
        problems.append(f"{vid} did not report its state after the faults healed: {err}")
    for vid, v in validators.items():
        head, chain = v["head"], v["chain"]
        if head["height"] != len(chain) or (chain and head["hash"] != chain[-1]):
            problems.append(f"{vid}: head {head['height']}/{head['hash'][:12]} does not match its chain of {len(chain)} blocks")
    ref_id, ref = next(iter(validators.items()))
    for vid, v in validators.items():
        if vid == ref_id:
            continue
        h = _first_difference(ref["chain"], v["chain"])
        if h is not None:
            a = ref["chain"][h - 1][:12] if h <= len(ref["chain"]) else "(none)"
            b = v["chain"][h - 1][:12] if h <= len(v["chain"]) else "(none)"
            kind = "diverge" if h <= min(len(ref["chain"]), len(v["chain"])) else "differ in length"
            problems.append(f"chains of {ref_id} ({len(ref['chain'])} blocks) and {vid} ({len(v['chain'])} blocks) {kind} "
                            f"at height {h}: {a} vs {b}")
            details.setdefault("first_difference", {})[vid] = h
        accounts = sorted(set(ref["balances"]) | set(v["balances"]), key=str)
        differing = [a for a in accounts if ref["balances"].get(a) != v["balances"].get(a)]
        if differing:
            problems.append(f"balances of {ref_id} and {vid} differ on account(s) "
                            + ", ".join(f"{a} ({ref['balances'].get(a)} vs {v['balances'].get(a)})" for a in differing[:evidence_items_max]))
            details.setdefault("differing_accounts", {})[vid] = differing
    if problems:
        return CheckResult(name, False, _quote(problems), details)
    height = len(ref["chain"])
    head = ref["chain"][-1][:16] if height else "(empty)"
    return CheckResult(name, True, f"{len(validators)} validators agree: {height} blocks, head {head}…, identical balances", details)


# (e) ---------------------------------------------------------------------------------------


def check_limits(history: Iterable[dict] | str, final_state: Mapping) -> CheckResult:
    """No account (all have debits_must_not_exceed_credits) is ever seen below zero."""
    name = "limits"
    reads = [op["complete"] for op in _ops(history, "read") if op["complete"] and op["complete"]["type"] == "ok"]
    validators, broken = _readable(final_state)
    problems = []
    examples = []
    for c in reads:
        neg = {a: n for a, n in c["value"]["balances"].items() if n < 0}
        if neg:
            problems.append(f"read at history index {c['index']} ({_t(c)}) saw " + ", ".join(f"account {a} at {n}" for a, n in neg.items()))
            examples.append({"index": c["index"], "time_s": c["time_ns"] / 1e9, "negative": neg})
    for vid, v in validators.items():
        neg = {a: n for a, n in v["balances"].items() if n < 0}
        if neg:
            problems.append(f"final state of {vid}: " + ", ".join(f"account {a} at {n}" for a, n in neg.items()))
            examples.append({"validator": vid, "negative": neg})
    details = {"reads": len(reads), "validators": list(validators), "violations": len(problems),
               "examples": examples[:details_items_max], "unreadable": broken}
    if problems:
        return CheckResult(name, False, f"{len(problems)} balance(s) below zero: {_quote(problems)}", details)
    if not reads and not validators:
        return CheckResult(name, None, "no ok read and no readable validator: nothing to check" + _unreadable_note(broken), details)
    return CheckResult(name, True, f"no net balance below zero in {len(reads)} ok reads and the final state of "
                       f"{len(validators)} validators" + _unreadable_note(broken), details)


# conservation -------------------------------------------------------------------------------


def check_conservation(final_state: Mapping, total: int, history: Iterable[dict] | str | None = None) -> CheckResult:
    """Final balances sum to TOTAL on every validator and, given the history, equal
    the initial balances plus the transfers present there, each applied once.

    Without ``history`` only the sum is checked: a transfer applied twice moves
    money between two accounts and keeps the sum, so pass the history.
    """
    name = "conservation"
    validators, broken = _readable(final_state)
    if not validators:
        return CheckResult(name, None, "no validator could be read" + _unreadable_note(broken), {"unreadable": broken})
    transfers = None
    if history is not None:
        transfers = {r["value"]["id"]: r["value"] for r in _records(history) if r["f"] == "transfer" and r["type"] == "invoke"}
    initial = {str(a): n for a, n in final_state["initial_balances"].items()}
    accounts = {str(a) for a in final_state.get("accounts", initial)}
    problems = []
    details: dict = {"total": total, "sums": {}, "replayed": transfers is not None, "unreadable": broken}
    for vid, v in validators.items():
        balances = {str(a): n for a, n in v["balances"].items()}
        s = sum(balances.values())
        details["sums"][vid] = s
        if s != total:
            problems.append(f"{vid}: balances sum to {s}, not {total}")
        if set(balances) != accounts:
            problems.append(f"{vid}: balances of accounts {sorted(balances)} but the bank has {sorted(accounts)}")
        if transfers is None:
            continue
        expected = dict(initial)
        for i in v["transfers_present"]:
            t = transfers.get(i)
            if t is None:
                problems.append(f"{vid}: transfer {i} is present but not in the history")
                continue
            expected[str(t["from"])] = expected.get(str(t["from"]), 0) - t["amount"]
            expected[str(t["to"])] = expected.get(str(t["to"]), 0) + t["amount"]
        off = {a: balances.get(a, 0) - expected.get(a, 0) for a in sorted(accounts | set(balances)) if balances.get(a, 0) != expected.get(a, 0)}
        if off:
            details.setdefault("replay_mismatch", {})[vid] = off
            problems.append(f"{vid}: balances differ from initial + its {len(v['transfers_present'])} present transfers by "
                            + ", ".join(f"account {a}: {d:+d}" for a, d in off.items())
                            + " (a transfer applied twice, or an effect without a transfer record)")
    if problems:
        return CheckResult(name, False, _quote(problems) + _unreadable_note(broken), details)
    how = (" and equal initial + each present transfer once" if transfers is not None
           else " (per-account replay skipped: no history given, so a transfer applied twice would pass)")
    return CheckResult(name, None if broken else True,
                       f"on {len(validators)} validators the balances sum to {total}{how}" + _unreadable_note(broken), details)


# (f) ---------------------------------------------------------------------------------------


def _present_from_final_state(path: str) -> list[int] | None:
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    validators, _ = _readable(state)
    if not validators:
        return None
    return sorted({i for v in validators.values() for i in v["transfers_present"]})


def check_linearizable(
    history_path: str,
    initial_balances: Mapping,
    porcupine_binary: str | None,
    timeout_s: float,
    *,
    present_transfer_ids: Iterable[int] | None = None,
    visualize: bool = True,
    model: str = "nondeterministic",
) -> CheckResult:
    """Reads and transfers are linearizable, decided by Porcupine (``ledger-porcupine``).

    ``present_transfer_ids`` (transfer ids found on any validator) lets the
    checker leave out the unknown-outcome transfers that never happened, which
    otherwise can make a failing check time out instead (see
    chaos/porcupine/main.go, resolveUnknown). If not given, they are taken from
    ``final_state.json`` next to the history when it exists. With ``visualize``,
    Porcupine's HTML view of the check goes to ``linearizability.html`` there too.
    None = could not decide (binary missing, timed out, bad input), with the reason.
    """
    name = "linearizable"
    if not porcupine_binary or not os.access(porcupine_binary, os.X_OK):
        return CheckResult(name, None, f"ledger-porcupine not found ({porcupine_binary or 'not built'}): "
                           "run deploy/local/setup.sh (needs Go) to build it", {"binary": porcupine_binary})
    run_dir = os.path.dirname(os.path.abspath(history_path))
    resolved_from = "argument"
    if present_transfer_ids is None:
        present_transfer_ids = _present_from_final_state(os.path.join(run_dir, FINAL_STATE_NAME))
        resolved_from = FINAL_STATE_NAME if present_transfer_ids is not None else None
    with tempfile.TemporaryDirectory(prefix="ledger-porcupine-") as tmp:
        initial_path = os.path.join(tmp, "initial.json")
        with open(initial_path, "w") as f:
            json.dump({str(a): n for a, n in initial_balances.items()}, f)
        cmd = [porcupine_binary, "-history", history_path, "-initial", initial_path,
               "-timeout", f"{max(1, round(timeout_s * 1000))}ms", "-model", model]
        if present_transfer_ids is not None:
            present_path = os.path.join(tmp, "present.json")
            with open(present_path, "w") as f:
                json.dump(sorted(present_transfer_ids), f)
            cmd += ["-present", present_path]
        if visualize:
            cmd += ["-visualize", os.path.join(run_dir, VISUALIZATION_NAME)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + porcupine_slack_s)
        except subprocess.TimeoutExpired:
            return CheckResult(name, None, f"ledger-porcupine did not finish within {timeout_s + porcupine_slack_s:g}s",
                               {"command": cmd})
    lines = proc.stdout.strip().splitlines()
    try:
        summary = json.loads(lines[-1]) if lines else {}
    except ValueError:
        summary = {}
    details = {"command": cmd, "exit": proc.returncode, "summary": summary, "unknown_resolved_from": resolved_from,
               "stderr": proc.stderr[-2000:]}
    counted = (f"{summary.get('operations', '?')} operations ({summary.get('reads', '?')} reads, "
               f"{summary.get('transfers_ok', '?')} ok / {summary.get('transfers_exceeds_credits', '?')} exceeds_credits / "
               f"{summary.get('transfers_unknown', '?')} unknown transfers"
               + (f", {summary.get('unknown_absent_dropped')} unknown left out as absent from the final state" if resolved_from else "")
               + ")")
    viz = f"; visualization: {summary['visualization']}" if summary.get("visualization") else ""
    elapsed = f"{summary.get('elapsed_s', 0):.1f}s"
    if proc.returncode == 0:
        return CheckResult(name, True, f"Porcupine found a linearization of {counted} in {elapsed}{viz}", details)
    if proc.returncode == 1:
        stuck = summary.get("stuck") or {}
        where = (f"; the longest linearizable prefix has {stuck.get('linearized')} operations, then no order makes "
                 f"{stuck.get('operation')} ({stuck.get('where')}) legal; model state there: {stuck.get('model_state')}") if stuck else ""
        return CheckResult(name, False, f"NOT linearizable: {counted}{where}{viz}", details)
    if proc.returncode == 2:
        return CheckResult(name, None, f"undecided: Porcupine timed out after {timeout_s:g}s on {counted}{viz}", details)
    reason = summary.get("error") or proc.stderr.strip()[-500:] or f"exit status {proc.returncode}"
    return CheckResult(name, None, f"ledger-porcupine could not check the history: {reason}", details)


# (clock) -----------------------------------------------------------------------------------

NS_PER_S = 1_000_000_000


def _expiry_blocks_expected(timestamps: list[int], transfers: list[dict]) -> tuple[dict[int, list[int]], list[int]]:
    """({height: [pending transfer ids whose timeout has passed by that block's time and not by
    the previous one's]}, [ids still pending after the last block]): the rule every validator
    must apply (expires_at = timestamp + timeout s <= block timestamp; the per-block bound
    ``limits.block_expiries_max`` is far above what a drill creates)."""
    import bisect

    out: dict[int, list[int]] = {}
    pending = []
    for t in transfers:
        if not t.get("timeout"):
            continue
        expires_at = int(t["timestamp"]) + int(t["timeout"]) * NS_PER_S
        i = bisect.bisect_left(timestamps, expires_at)
        if i >= len(timestamps):
            pending.append(t["id"])
        else:
            out.setdefault(i + 1, []).append(t["id"])
    return {h: sorted(ids) for h, ids in sorted(out.items())}, sorted(pending)


def check_clock(final_state: Mapping) -> CheckResult:
    """Block timestamps strictly increase along the whole chain of every validator, and the
    workload's pending transfers are voided by timeout identically everywhere: by the rule
    (a transfer expires in the first block whose timestamp reaches ``timestamp + timeout``)
    every validator's own blocks and transfers give the same transfers in the same blocks,
    and each validator's escrow account still holds, as ``credits_pending``, exactly the sum
    of the amounts that have not expired by its last block (and nothing posted). That a
    validator applied those expiries in those blocks, not only by the end, the agreement
    checker covers: every block's hash commits to its state hash, which covers the block's
    writes, the expiries' included. Undecided if the final state has no timestamps (an
    older run). ``details["validators"]`` is the per-validator table: blocks, minimum and
    maximum step between blocks, pending transfers created, expired, blocks with expiries,
    still pending, and how far the last block's time is ahead of the harness's clock when
    the state was read (s; negative: behind)."""
    name = "clock"
    validators, broken = _readable(final_state)
    validators = {v: s for v, s in validators.items() if "timestamps" in s}
    if not validators:
        return CheckResult(name, None, "no validator reported block timestamps" + _unreadable_note(broken), {"unreadable": broken})
    problems = [f"{vid} did not report its state: {err}" for vid, err in broken.items()]
    table: dict[str, dict] = {}
    expected_by: dict[str, dict] = {}
    read_at = final_state.get("read_at_ns")
    for vid, v in validators.items():
        ts = [int(t) for t in v["timestamps"]]
        back = [h for h in range(2, len(ts) + 1) if ts[h - 1] <= ts[h - 2]]
        if back:
            problems.append(f"{vid}: block timestamps do not strictly increase at height(s) "
                            + ", ".join(f"{h} ({ts[h - 2]} -> {ts[h - 1]})" for h in back[:evidence_items_max]))
        pend = v.get("pending") or {"transfers": [], "escrow": None}
        expected, still = _expiry_blocks_expected(ts, pend["transfers"])
        escrow = pend.get("escrow")
        if pend["transfers"] and escrow is None:
            problems.append(f"{vid}: has pending transfers but no escrow account")
        elif escrow is not None:
            amounts = {t["id"]: int(t["amount"]) for t in pend["transfers"]}
            want = sum(amounts[i] for i in still)
            if int(escrow["credits_pending"]) != want or int(escrow["credits_posted"]) != 0:
                problems.append(f"{vid}: escrow holds credits_pending {escrow['credits_pending']} / posted "
                                f"{escrow['credits_posted']}, but the {len(still)} transfers not expired by its last block "
                                f"sum to {want} (and none is posted): expiries not as the rule says")
        expected_by[vid] = expected
        steps = [b - a for a, b in zip(ts, ts[1:])]
        table[vid] = {
            "blocks": len(ts),
            "min_step_ns": min(steps) if steps else None,
            "max_step_s": round(max(steps) / NS_PER_S, 3) if steps else None,
            "pending_created": len(pend["transfers"]),
            "expired": sum(len(ids) for ids in expected.values()),
            "expiry_blocks": len(expected),
            "still_pending": len(still),
            "chain_ahead_s": round((ts[-1] - int(read_at)) / NS_PER_S, 1) if ts and read_at else None,
        }
    ref_id = next(iter(validators))
    for vid in validators:
        if vid == ref_id:
            continue
        a, b = expected_by[ref_id], expected_by[vid]
        n = min(table[ref_id]["blocks"], table[vid]["blocks"])
        diff = sorted(h for h in set(a) | set(b) if h <= n and a.get(h) != b.get(h))
        if diff:
            problems.append(f"{ref_id} and {vid} expire different pending transfers in block(s) {diff[:evidence_items_max]}")
    details = {"validators": table, "unreadable": broken,
               "expiries": {vid: {str(h): ids for h, ids in e.items()} for vid, e in expected_by.items()}}
    if problems:
        return CheckResult(name, False, _quote(problems), details)
    r = table[ref_id]
    ahead = f"; last block {r['chain_ahead_s']} s ahead of real time" if r["chain_ahead_s"] is not None else ""
    return CheckResult(name, True,
                       f"{len(validators)} validators: {r['blocks']} blocks, timestamps strictly increasing (min step "
                       f"{r['min_step_ns']} ns, max {r['max_step_s']} s); {r['expired']} of {r['pending_created']} pending "
                       f"transfers expired in {r['expiry_blocks']} blocks, the same on every validator, escrow balances "
                       f"as the rule says, {r['still_pending']} still pending{ahead}", details)
