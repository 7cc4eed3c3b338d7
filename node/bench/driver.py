"""The client side of the ``ours`` part: a separate process that drives the cluster through the SDK.

Talks to :mod:`node.bench.ours` with JSON lines: it reads one spec line on
stdin, opens the accounts, signs every batch in advance (so the timed window
measures the cluster, not the workload generator), prints ``ready``, then runs
each phase it is told to (``{"cmd": "run", ...}``: presigned batches, one per
Submit; ``{"cmd": "run_single", ...}``: one transfer per ``create_transfers`` call,
every thread sharing member 0's one ``LedgerClient``, as a payment gateway's
callers do) and prints ``progress`` lines and one ``done`` line with the
latencies. Only the member SDK (``client``) is used to talk to the validators.

Usage: python -m raft_ledger_node.bench.driver   (spec and commands on stdin)
"""
from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time

from raft_ledger_client import Account, CreateAccountResult, CreateTransferResult, LedgerClient, Transfer, read_genesis
from raft_ledger_node.localcluster import AUDITOR_ID, member_client
from raft_ledger_node.bench.workload import ACCOUNT_CODE, LEDGER, TRANSFER_CODE, Workload, member_names

#: Seconds between progress lines.
PROGRESS_PERIOD_S = 0.5
#: Accounts per create_accounts transaction while opening them.
OPEN_ACCOUNTS_CHUNK = 1_000


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _clients(cluster: str, members: list[str], in_flight: int = 1) -> dict[str, LedgerClient]:
    # Over mutual TLS with each member's client certificate, as a member bank connects.
    # ``in_flight``: the shared client's coalesced Submits in flight (the 1/request phases).
    return {m: member_client(cluster, m, coalesce_in_flight_max=in_flight) for m in members}


def _open_accounts(wl: Workload, clients: dict[str, LedgerClient], names: list[str]) -> None:
    for mi, m in enumerate(names):
        ids = wl.account_ids(mi)
        for i in range(0, len(ids), OPEN_ACCOUNTS_CHUNK):
            res = clients[m].create_accounts([Account(id=a, ledger=LEDGER, code=ACCOUNT_CODE) for a in ids[i : i + OPEN_ACCOUNTS_CHUNK]])
            bad = [r for r in res if r.result not in (CreateAccountResult.ok, CreateAccountResult.exists)]
            if bad:
                raise RuntimeError(f"opening accounts failed: {bad[:3]}")


def _run_phase(signed: list, first: int, count: int, concurrency: int, rate_tps: float | None, batch: int) -> dict:
    """Submit signed batches ``first..first+count-1``; closed loop, or open loop at ``rate_tps`` transfers/s."""
    latencies: list[float] = [0.0] * count
    send_lags: list[float] = []  # open loop: how late the driver sent each batch (its own stalls)
    ok = rejected = 0
    errors: list[str] = []
    lock = threading.Lock()
    nxt = iter(range(count))
    done = 0
    period = None if not rate_tps else batch / rate_tps
    t0 = time.monotonic()
    last_done = t0  # when the last response arrived: the phase's end, not the next progress tick

    def worker() -> None:
        nonlocal ok, rejected, done, last_done
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            client, stx = signed[first + i]
            start = time.monotonic()
            if period is not None:
                scheduled = t0 + i * period
                if scheduled > start:
                    time.sleep(scheduled - start)
                lag = time.monotonic() - scheduled
                with lock:
                    send_lags.append(lag)
                # Latency from the scheduled send time: a late start counts (no coordinated omission).
                start = scheduled
            try:
                res = client.submit([stx])[0]
            except Exception as e:  # outcome unknown: count it, keep going
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                    done += 1
                    last_done = max(last_done, time.monotonic())
                latencies[i] = float("nan")
                continue
            lat = time.monotonic() - start
            n_ok = sum(1 for r in res.results if r.code == 0)
            latencies[i] = lat
            with lock:
                ok += n_ok
                rejected += len(res.results) - n_ok
                done += 1
                last_done = max(last_done, time.monotonic())

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency if period is None else 4 * concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(PROGRESS_PERIOD_S)
        with lock:
            emit(event="progress", batches=done, transfers=ok + rejected, elapsed_s=time.monotonic() - t0)
    for t in threads:
        t.join()
    # Not time.monotonic() here: the loop above polls every PROGRESS_PERIOD_S, which
    # would round every phase up to a multiple of it (up to 7% on a 7 s phase).
    elapsed = last_done - t0
    return dict(
        elapsed_s=elapsed,
        send_lag_p99_ms=(sorted(send_lags)[int(0.99 * (len(send_lags) - 1))] * 1000) if send_lags else None,
        transfers_ok=ok,
        transfers_rejected=rejected,
        batches=count,
        batches_failed=len(errors),
        errors=errors[:5],
        latencies_s=[x for x in latencies if x == x],
    )


def _run_single_phase(client: LedgerClient, transfers: list, first: int, count: int, concurrency: int,
                      rate_tps: float | None) -> dict:
    """One transfer per ``client.create_transfers`` call, ``transfers[first:first+count]``,
    from ``concurrency`` threads sharing the one ``client`` (closed loop), or open loop at
    ``rate_tps`` requests/s from 2 × ``concurrency`` threads. Latency is per request,
    from the scheduled send time in open loop. Same result shape as :func:`_run_phase`
    (``batches`` = requests)."""
    latencies: list[float] = [float("nan")] * count
    send_lags: list[float] = []
    ok = rejected = 0
    errors: list[str] = []
    lock = threading.Lock()
    nxt = iter(range(count))
    done = 0
    period = None if not rate_tps else 1.0 / rate_tps
    t0 = time.monotonic()
    last_done = t0

    def worker() -> None:
        nonlocal ok, rejected, done, last_done
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            t = transfers[first + i]
            start = time.monotonic()
            if period is not None:
                scheduled = t0 + i * period
                if scheduled > start:
                    time.sleep(scheduled - start)
                lag = time.monotonic() - scheduled
                with lock:
                    send_lags.append(lag)
                start = scheduled  # no coordinated omission: a late send counts
            try:
                [r] = client.create_transfers([t])
            except Exception as e:  # outcome unknown or refused: count it, keep going
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                    done += 1
                    last_done = max(last_done, time.monotonic())
                continue
            end = time.monotonic()
            latencies[i] = end - start
            with lock:
                if r.result is CreateTransferResult.ok:
                    ok += 1
                else:
                    rejected += 1
                done += 1
                last_done = max(last_done, end)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency if period is None else 2 * concurrency)]
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        time.sleep(PROGRESS_PERIOD_S)
        with lock:
            emit(event="progress", batches=done, transfers=ok + rejected, elapsed_s=time.monotonic() - t0)
    for th in threads:
        th.join()
    return dict(
        elapsed_s=last_done - t0,
        send_lag_p99_ms=(sorted(send_lags)[int(0.99 * (len(send_lags) - 1))] * 1000) if send_lags else None,
        transfers_ok=ok,
        transfers_rejected=rejected,
        batches=count,
        batches_failed=len(errors),
        errors=errors[:5],
        latencies_s=[x for x in latencies if x == x],
    )


def _addresses(cluster: str) -> list[str]:
    with open(os.path.join(cluster, "genesis.json")) as f:
        return [v["grpc_address"] for v in json.load(f)["validators"]]


def _check(wl: Workload, clients: dict[str, LedgerClient], addresses: list[str], applied_amount: int, timeout_s: float = 60.0) -> dict:
    """Every validator: same head, and debits = credits = the sum of the accepted amounts."""
    any_client = next(iter(clients.values()))
    target = any_client.head(linearizable=True).height
    deadline = time.monotonic() + timeout_s
    heads = {}
    while time.monotonic() < deadline:
        heads = {a: any_client.head(address=a) for a in addresses}
        if all(h.height >= target for h in heads.values()):
            break
        time.sleep(0.2)
    ids = list(range(1, wl.accounts + 1))
    per_validator = {}
    for a in addresses:
        debits = credits = 0
        for i in range(0, len(ids), 5_000):
            for acct in any_client.lookup_accounts(ids[i : i + 5_000], address=a):
                debits += acct.debits_posted
                credits += acct.credits_posted
        per_validator[a] = dict(debits=debits, credits=credits, height=heads[a].height, head=heads[a].hash.hex()[:16])
    same_head = len({(v["height"], v["head"]) for v in per_validator.values()}) == 1
    balanced = all(v["debits"] == v["credits"] == applied_amount for v in per_validator.values())
    return dict(same_head=same_head, balanced=balanced, expected_amount=applied_amount, validators=per_validator)


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    wl = Workload(**spec["workload"])
    names = member_names(wl.members)
    clients = _clients(spec["cluster"], names, spec.get("single_in_flight", 1))
    t = time.monotonic()
    _open_accounts(wl, clients, names)
    accounts_s = time.monotonic() - t
    t = time.monotonic()
    total = spec["batches_total"]
    batches = wl.batches(0, total)
    amounts = [sum(r[3] for r in b.transfers) for b in batches]
    signed = []
    for b in batches:
        c = clients[names[b.member]]
        stx = c.sign_transfers(
            Transfer(id=i, debit_account_id=d, credit_account_id=cr, amount=amt, ledger=LEDGER, code=TRANSFER_CODE)
            for i, d, cr, amt in b.transfers
        )
        signed.append((c, stx))
    # One transfer per request: member 0's shared client, transfers of the batches after
    # the signed ones (ids never collide); built here, signed by the SDK per call.
    single_rows = wl.member_rows(0, total, spec.get("single_rows_total", 0)) if spec.get("single_rows_total") else []
    singles = [Transfer(id=i, debit_account_id=d, credit_account_id=cr, amount=amt, ledger=LEDGER, code=TRANSFER_CODE)
               for i, d, cr, amt in single_rows]
    # The presigned batches and the workload's tuples (~150,000 objects) stay for the
    # whole run: out of the cycle collector's way, or a full collection (tens of ms,
    # GIL held) delays every sender and shows up as ledger latency.
    gc.collect()
    gc.freeze()
    emit(event="ready", accounts_s=accounts_s, presign_s=time.monotonic() - t,
         envelope_bytes=sum(len(s.SerializeToString()) for _, s in signed[:50]) / max(1, min(50, len(signed))))
    applied_amount = 0
    comparable = True  # every batch so far committed with every transfer accepted
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "run":
            res = _run_phase(signed, cmd["first"], cmd["count"], cmd["concurrency"], cmd.get("rate_tps"), wl.batch)
            comparable &= not res["batches_failed"] and not res["transfers_rejected"]
            applied_amount += sum(amounts[cmd["first"] : cmd["first"] + cmd["count"]])
            emit(event="done", **res)
        elif cmd["cmd"] == "run_single":
            res = _run_single_phase(clients[names[0]], singles, cmd["first"], cmd["count"], cmd["concurrency"], cmd.get("rate_tps"))
            comparable &= not res["batches_failed"] and not res["transfers_rejected"]
            applied_amount += sum(r[3] for r in single_rows[cmd["first"] : cmd["first"] + cmd["count"]])
            emit(event="done", **res)
        elif cmd["cmd"] == "check":
            if not comparable:
                emit(event="checked", skipped="some batches failed or were rejected; totals not comparable")
            else:
                # The auditor reads every member's accounts (a member sees only its own).
                with member_client(spec["cluster"], AUDITOR_ID) as auditor:
                    emit(event="checked", **_check(wl, {AUDITOR_ID: auditor}, _addresses(spec["cluster"]), applied_amount))
        elif cmd["cmd"] == "quit":
            break
    for c in clients.values():
        c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
