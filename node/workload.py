"""The bank workload of the README's main job, driven through the member SDK only.

The member banks (the identities of role ``member`` that issue no ledger) open
accounts on two ledgers (840 = USD, 978 = EUR, minor units). Under issuance a bank's
account can never carry a debit balance (the ledger gives it
``debits_must_not_exceed_credits``), so each ledger's issuer (``central-bank`` in a
generated cluster) first funds every bank account from its own account, in batches
of transfers. Then the banks submit transfers from their own accounts to any bank
account of the same ledger, with Zipf-skewed account popularity, in signed batches
from concurrent clients. Prints throughput, p50/p99 commit latency, per-ledger totals
(debits = credits, the issuer's account included) and each validator's head hash; the
totals are read by the ``auditor`` identity when the cluster has one.

Usage: python -m raft_ledger_node.workload --cluster DIR [--transfers N] ...
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from raft_ledger_client import Account, CreateAccountResult, CreateTransferResult, Transfer
from raft_ledger_node.localcluster import member_client
from raft_ledger_node.stats import Zipf, percentile
from raft_ledger_node.tables import print_table, totals_table

LEDGERS = (840, 978)
ACCOUNT_CODE = 1
TRANSFER_CODE = 7
FUNDING_CODE = 1
#: What the issuer credits to every bank account before the workload: more than all
#: the transfers of a default run move in total (100,000 of at most 10,000 each, 10^9),
#: so no transfer fails for funds.
FUNDING_AMOUNT = 10**10
#: The issuer's account on ledger ``lg`` is MINT_ACCOUNT_BASE + lg (outside the banks' ids).
MINT_ACCOUNT_BASE = 900_000_000
#: Events per signed transaction while opening and funding accounts.
SETUP_BATCH_EVENTS = 500


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--transfers", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    console = Console()

    with open(os.path.join(args.cluster, "genesis.json")) as f:
        genesis = json.load(f)
    addresses = [v["grpc_address"] for v in genesis["validators"]]
    issuers = {int(lg): who for lg, who in genesis.get("issuers", {}).items()}
    issuer_ids = {w for who in issuers.values() for w in who}
    members = [m["id"] for m in genesis["members"] if "member" in m["roles"] and m["id"] not in issuer_ids]
    missing = [lg for lg in LEDGERS if not issuers.get(lg)]
    if not members or missing:
        console.print(f"[red]the cluster needs member banks and an issuer of each of {LEDGERS} (none for {missing})")
        return 1
    mints = {lg: issuers[lg][0] for lg in LEDGERS}
    clients = {m: member_client(args.cluster, m) for m in members + sorted(set(mints.values()))}

    # Accounts: member i owns ids i*10^6 + 1..; each on one of the two ledgers.
    per_member = args.accounts // len(members)
    owned: dict[str, dict[int, list[int]]] = {m: {lg: [] for lg in LEDGERS} for m in members}
    for mi, m in enumerate(members):
        accts = []
        for k in range(per_member):
            aid = (mi + 1) * 1_000_000 + k + 1
            lg = LEDGERS[k % len(LEDGERS)]
            owned[m][lg].append(aid)
            accts.append(Account(id=aid, ledger=lg, code=ACCOUNT_CODE))
        for i in range(0, len(accts), SETUP_BATCH_EVENTS):
            res = clients[m].create_accounts(accts[i : i + SETUP_BATCH_EVENTS])
            bad = [r for r in res if r.result not in (CreateAccountResult.ok, CreateAccountResult.exists)]
            if bad:
                console.print(f"[red]account creation failed: {bad[:3]}")
                return 1
    console.print(f"opened {per_member * len(members)} accounts for {', '.join(members)} on ledgers {LEDGERS}")
    everyone = {lg: sorted(a for m in members for a in owned[m][lg]) for lg in LEDGERS}

    # Funding: the issuer of each ledger credits every bank account from its own
    # account (no balance-limit flag: an issuer's account may go negative). Ids
    # 1..(number of bank accounts), so a rerun on the same cluster answers `exists`.
    next_id = 1
    for lg in LEDGERS:
        issuer = clients[mints[lg]]
        mint = MINT_ACCOUNT_BASE + lg
        res = issuer.create_accounts([Account(id=mint, ledger=lg, code=ACCOUNT_CODE)])
        if any(r.result not in (CreateAccountResult.ok, CreateAccountResult.exists) for r in res):
            console.print(f"[red]{mints[lg]} could not open its account on ledger {lg}: {res}")
            return 1
        funding = []
        for aid in everyone[lg]:
            funding.append(Transfer(id=next_id, debit_account_id=mint, credit_account_id=aid, amount=FUNDING_AMOUNT, ledger=lg, code=FUNDING_CODE))
            next_id += 1
        for i in range(0, len(funding), SETUP_BATCH_EVENTS):
            res = issuer.create_transfers(funding[i : i + SETUP_BATCH_EVENTS])
            bad = [r for r in res if r.result not in (CreateTransferResult.ok, CreateTransferResult.exists)]
            if bad:
                console.print(f"[red]funding on ledger {lg} failed: {bad[:3]}")
                return 1
    console.print(f"{', '.join(sorted(set(mints.values())))} funded every bank account with {FUNDING_AMOUNT:,} per ledger")

    rng = random.Random(args.seed)
    batches = []
    n_batches = (args.transfers + args.batch - 1) // args.batch
    zipfs = {}
    for b in range(n_batches):
        m = members[b % len(members)]
        size = min(args.batch, args.transfers - b * args.batch)
        lg = LEDGERS[b % len(LEDGERS) if len(members) % 2 else (b // len(members)) % len(LEDGERS)]
        src, dst = owned[m][lg], everyone[lg]
        zs = zipfs.setdefault((m, lg), Zipf(len(src), args.zipf, rng))
        zd = zipfs.setdefault(("*", lg), Zipf(len(dst), args.zipf, rng))
        ts = []
        for _ in range(size):
            dr = src[zs.sample()]
            cr = dst[zd.sample()]
            while cr == dr:
                cr = dst[zd.sample()]
            ts.append(Transfer(id=next_id, debit_account_id=dr, credit_account_id=cr, amount=rng.randint(1, 10_000), ledger=lg, code=TRANSFER_CODE))
            next_id += 1
        batches.append((m, ts))

    latencies: list[float] = []
    ok = failed = 0
    errors: list[str] = []
    lock = threading.Lock()
    work = iter(range(len(batches)))
    work_lock = threading.Lock()

    with Progress(
        TextColumn("[bold]transfers"), BarColumn(), TextColumn("{task.completed:>7}/{task.total}"),
        TextColumn("{task.fields[rate]:>8.0f}/s"), TimeRemainingColumn(), console=console,
    ) as progress:
        task = progress.add_task("transfers", total=args.transfers, rate=0.0)
        t0 = time.monotonic()

        def worker() -> None:
            nonlocal ok, failed
            while True:
                with work_lock:
                    b = next(work, None)
                if b is None:
                    return
                m, ts = batches[b]
                c = clients[m]
                signed = c.sign_transfers(ts)
                start = time.monotonic()
                try:
                    res = c.submit([signed])[0]
                except Exception as e:  # the outcome is unknown: count it, keep going
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                lat = time.monotonic() - start
                n_ok = sum(1 for r in res.results if r.result in (CreateTransferResult.ok, CreateTransferResult.exists))
                with lock:
                    latencies.append(lat)
                    ok += n_ok
                    failed += len(res.results) - n_ok
                    done = ok + failed
                progress.update(task, completed=done, rate=done / max(1e-9, time.monotonic() - t0))

        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0

    latencies.sort()
    console.print(
        f"[bold]{ok + failed} transfers committed in {elapsed:.1f}s: {(ok + failed) / elapsed:,.0f} transfers/s[/] "
        f"({ok} ok, {failed} rejected, {len(errors)} batches with unknown outcome); "
        f"commit latency per batch of {args.batch}: p50 {percentile(latencies, 50) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.1f} ms"
    )
    for e in errors[:5]:
        console.print(f"[yellow]  {e}")

    # Wait for every validator to reach the same head, then compare totals and hashes.
    # The auditor reads every account; without one, a bank (reads as allowed to it).
    roles = {m["id"]: m["roles"] for m in genesis["members"]}
    auditor = next((m for m, r in roles.items() if "auditor" in r), None)
    any_client = member_client(args.cluster, auditor) if auditor else clients[members[0]]
    if auditor:
        clients[auditor] = any_client
    leader_head = any_client.head(address=any_client._leader or addresses[0])
    deadline = time.monotonic() + 30
    heads = {}
    while time.monotonic() < deadline:
        heads = {a: any_client.head(address=a) for a in addresses}
        if all(h.height >= leader_head.height for h in heads.values()) and len({h.hash for h in heads.values()}) == 1:
            break
        time.sleep(0.2)

    all_ids = [a for lg in LEDGERS for a in everyone[lg] + [MINT_ACCOUNT_BASE + lg]]
    total_rows = []
    balanced = True
    for addr in addresses:
        accts = []
        for i in range(0, len(all_ids), 1000):
            accts.extend(any_client.lookup_accounts(all_ids[i : i + 1000], address=addr))
        for lg in LEDGERS:
            d = sum(a.debits_posted for a in accts if a.ledger == lg)
            c = sum(a.credits_posted for a in accts if a.ledger == lg)
            balanced &= d == c
            h = heads.get(addr)
            total_rows.append((addr, str(lg), f"{d:,}", f"{c:,}", "yes" if d == c else "[red]NO", str(h.height) if h else "?", h.hash.hex()[:16] if h else "?"))
    print_table(totals_table(total_rows), console)
    same = len({h.hash for h in heads.values()}) == 1 and len(heads) == len(addresses)
    console.print(
        ("[green]all validators agree on head " if same else "[red]validators DISAGREE on head ")
        + ", ".join(f"{a}={h.hash.hex()[:16]}@{h.height}" for a, h in heads.items())
    )
    if any_client.trusted is not None:
        cp = any_client.checkpoint()
        console.print(f"certified checkpoint (a majority of validators signed it; the SDK verified it and the "
                      f"consistency of the log since genesis): height {cp.height}, {cp.tree_size:,} transactions, "
                      f"log root {cp.root_hash.hex()[:16]}…, state root {cp.state_root.hex()[:16]}…")
    for c in clients.values():
        c.close()
    return 0 if (balanced and same and not errors) else 1


if __name__ == "__main__":
    sys.exit(main())
