"""The Jepsen bank workload on the ledger, driven through the member SDK.

N accounts of the member banks (``debits_must_not_exceed_credits``, which the
ledger enforces on every non-issuer's account anyway) are funded from a mint
account of the ledger's issuer (``central-bank``: only an issuer's account may carry
a debit balance) so that the sum of their net balances (credits_posted -
debits_posted) is a fixed TOTAL. The mint is not one of the N: the checkers see only
the banks' accounts. Concurrent client processes then either transfer a random
amount between two of them or read all balances with a linearizable read; every
operation is recorded in the history (chaos/history.py) with its invoke and
completion time and outcome. Afterwards :func:`collect_final_state` reads every
validator's chain and balances for the checkers.

Beside them, one more thread of the issuer creates a pending transfer mint -> escrow
every ``pending_interval_s`` with a 1–3 s timeout and never posts it: each is voided by
its timeout, which the clock checker (chaos/checkers.py ``check_clock``) compares across
validators. They touch neither the N accounts nor the history, so the other checkers
and Porcupine's model are as before.
"""
from __future__ import annotations

import itertools
import random
import threading
import time
from dataclasses import dataclass, field

from raft_ledger_client import (
    Account,
    AccountFlags,
    CreateAccountResult,
    CreateTransferResult,
    InvalidRequest,
    LedgerClient,
    LedgerError,
    NotFound,
    NotSubmitted,
    RetryPolicy,
    Transfer,
    TransferFlags,
    TransportError,
    load_private_key,
    read_genesis,
)
from raft_ledger_chaos.history import History
from raft_ledger_node.localcluster import AUDITOR_ID, client_tls, cluster_is_tls

LEDGER = 840
CODE = 1
MINT_ACCOUNT = 1_000_000
MEMBERS = ("bank-a", "bank-b")
#: Issuer of LEDGER: owns the mint account that funds the banks' accounts.
ISSUER = "central-bank"
#: Reads every account for the read operations and the final state (role auditor).
READER = "auditor"
TRANSFER_ID_BASE = 10_000_000
#: The issuer's escrow account: every pending transfer of the workload goes mint -> escrow and
#: is left to expire, so its credits_pending is the sum of those not expired yet.
ESCROW_ACCOUNT = MINT_ACCOUNT + 1
#: First id of the pending transfers (far above the bank's transfer ids).
PENDING_ID_BASE = 500_000_000


@dataclass
class BankConfig:
    """Shape of the workload. Amounts in minor units; times in seconds."""

    accounts: int = 5
    initial_balance: int = 100
    amount_max: int = 20
    concurrency: int = 4
    read_fraction: float = 0.25
    #: Pause between a process's operations (keeps histories checkable by Porcupine).
    think_time_s: float = 0.02
    #: Deadline of one operation, retries included; past it the outcome is unknown.
    op_deadline_s: float = 2.0
    #: Seconds between the issuer's pending transfers mint -> escrow (0: none). They never
    #: touch the N accounts (the checkers' balances and Porcupine's model ignore them) and are
    #: never posted or voided: each is voided by its timeout (chaos/checkers.check_clock).
    pending_interval_s: float = 0.5
    #: Their timeouts, whole seconds (TigerBeetle's unit), drawn uniformly.
    pending_timeout_s: tuple[int, int] = (1, 3)


@dataclass
class Bank:
    addresses: list[str]
    cluster_dir: str
    cfg: BankConfig
    seed: int
    clients: dict[str, LedgerClient] = field(default_factory=dict)
    owner: dict[int, str] = field(default_factory=dict)
    #: Ids of the pending transfers submitted (whatever their outcome).
    pending_ids: list[int] = field(default_factory=list)

    @property
    def account_ids(self) -> list[int]:
        return list(range(1, self.cfg.accounts + 1))

    @property
    def total(self) -> int:
        return self.cfg.accounts * self.cfg.initial_balance

    def initial_balances(self) -> dict[int, int]:
        return {a: self.cfg.initial_balance for a in self.account_ids}

    def _client(self, member: str, deadline_s: float) -> LedgerClient:
        import os

        key = load_private_key(os.path.join(self.cluster_dir, "members", f"{member}.pem"))
        retry = RetryPolicy(deadline_s=deadline_s, attempt_timeout_s=min(1.0, deadline_s), backoff_initial_s=0.02, backoff_max_s=0.2)
        genesis = os.path.join(self.cluster_dir, "genesis.json")
        validators, chain_id = read_genesis(genesis)
        # Mutual TLS with the member's client certificate (plaintext only for a plaintext cluster).
        tls = {"insecure": True}
        if cluster_is_tls(self.cluster_dir):
            tls = {"tls": client_tls(self.cluster_dir, member)}
        return LedgerClient(self.addresses, member_id=member, key_id="k1", private_key=key, chain_id=chain_id,
                            retry=retry, validators=validators, **tls)

    def setup(self, timeout_s: float = 60.0) -> None:
        """Open and fund the accounts (before any fault). Raises LedgerError if that fails."""
        setup_clients = {m: self._client(m, timeout_s) for m in MEMBERS + (ISSUER,)}
        for i, a in enumerate(self.account_ids):
            self.owner[a] = MEMBERS[i % len(MEMBERS)]
        for m in MEMBERS:
            mine = [Account(id=a, ledger=LEDGER, code=CODE, flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS) for a in self.account_ids if self.owner[a] == m]
            res = setup_clients[m].create_accounts(mine)
            if any(r.result not in (CreateAccountResult.ok, CreateAccountResult.exists) for r in res):
                raise LedgerError(f"bank setup: account creation failed: {res}")
        res = setup_clients[ISSUER].create_accounts([Account(id=MINT_ACCOUNT, ledger=LEDGER, code=CODE)])
        if any(r.result not in (CreateAccountResult.ok, CreateAccountResult.exists) for r in res):
            raise LedgerError(f"bank setup: mint account creation failed: {res}")
        if self.cfg.pending_interval_s > 0:
            res = setup_clients[ISSUER].create_accounts(
                [Account(id=ESCROW_ACCOUNT, ledger=LEDGER, code=CODE)])
            if any(r.result not in (CreateAccountResult.ok, CreateAccountResult.exists) for r in res):
                raise LedgerError(f"bank setup: escrow account creation failed: {res}")
        funding = [
            Transfer(id=TRANSFER_ID_BASE - a, debit_account_id=MINT_ACCOUNT, credit_account_id=a,
                     amount=self.cfg.initial_balance, ledger=LEDGER, code=CODE)
            for a in self.account_ids
        ]
        res = setup_clients[ISSUER].create_transfers(funding)
        if any(r.result not in (CreateTransferResult.ok, CreateTransferResult.exists) for r in res):
            raise LedgerError(f"bank setup: funding failed: {res}")
        for c in setup_clients.values():
            c.close()
        self.clients = {m: self._client(m, self.cfg.op_deadline_s) for m in MEMBERS + (READER,)}
        if self.cfg.pending_interval_s > 0:
            self.clients[ISSUER] = self._client(ISSUER, self.cfg.op_deadline_s)

    def run(self, history: History, duration_s: float, stop: threading.Event | None = None) -> dict[str, int]:
        """Run the concurrent clients for ``duration_s``; return counts of outcomes."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + duration_s
        process_ids = itertools.count()
        transfer_ids = itertools.count(TRANSFER_ID_BASE + 1)
        lock = threading.Lock()
        counts: dict[str, int] = {}

        def count(key: str) -> None:
            with lock:
                counts[key] = counts.get(key, 0) + 1

        def worker(worker_no: int) -> None:
            rng = random.Random(self.seed * 1000 + worker_no)
            with lock:
                process = next(process_ids)
            while time.monotonic() < deadline and not stop.is_set():
                if rng.random() < self.cfg.read_fraction:
                    unknown = self._read(history, process, count)
                else:
                    with lock:
                        tid = next(transfer_ids)
                    unknown = self._transfer(history, process, tid, rng, count)
                if unknown:  # Jepsen: a process with an unknown outcome is retired
                    with lock:
                        process = next(process_ids)
                time.sleep(self.cfg.think_time_s)

        threads = [threading.Thread(target=worker, args=(i,), name=f"bank-{i}") for i in range(self.cfg.concurrency)]
        if self.cfg.pending_interval_s > 0 and ISSUER in self.clients:
            threads.append(threading.Thread(target=self._pending_worker, args=(deadline, stop, count), name="bank-pending"))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return counts

    def _transfer(self, history: History, process: int, tid: int, rng: random.Random, count) -> bool:
        src, dst = rng.sample(self.account_ids, 2)
        amount = rng.randint(1, self.cfg.amount_max)
        value = {"id": tid, "from": src, "to": dst, "amount": amount}
        client = self.clients[self.owner[src]]
        history.record(process, "invoke", "transfer", value)
        try:
            [r] = client.create_transfers(
                [Transfer(id=tid, debit_account_id=src, credit_account_id=dst, amount=amount, ledger=LEDGER, code=CODE)]
            )
        except TransportError as e:
            history.record(process, "info", "transfer", {**value, "result": f"unknown: {type(e).__name__}"})
            count("transfer:info")
            return True
        except (InvalidRequest, NotFound, NotSubmitted) as e:  # definitely not applied by this call
            history.record(process, "fail", "transfer", {**value, "result": f"refused: {e}"})
            count("transfer:fail")
            return False
        except LedgerError as e:  # an unexpected status (e.g. INTERNAL after proposing): outcome unknown
            history.record(process, "info", "transfer", {**value, "result": f"unknown: {type(e).__name__}: {e}"})
            count("transfer:info")
            return True
        if r.result in (CreateTransferResult.ok, CreateTransferResult.exists):
            history.record(process, "ok", "transfer", {**value, "result": "ok"})
            count("transfer:ok")
        else:
            history.record(process, "fail", "transfer", {**value, "result": r.name})
            count("transfer:fail")
        return False

    def _pending_worker(self, deadline: float, stop: threading.Event, count) -> None:
        """Every ``pending_interval_s``: one pending transfer mint -> escrow with a short timeout,
        amount = its sequence number (so a block's released amount names the set expired in it).
        Not in the history; its id goes to ``pending_ids`` before it is submitted."""
        rng = random.Random(self.seed * 1000 + 999)
        client = self.clients[ISSUER]
        lo, hi = self.cfg.pending_timeout_s
        for n in itertools.count(1):
            if time.monotonic() >= deadline or stop.wait(self.cfg.pending_interval_s):
                return
            tid = PENDING_ID_BASE + n
            self.pending_ids.append(tid)
            t = Transfer(id=tid, debit_account_id=MINT_ACCOUNT, credit_account_id=ESCROW_ACCOUNT, amount=n,
                         ledger=LEDGER, code=CODE, flags=TransferFlags.PENDING, timeout=rng.randint(lo, hi))
            try:
                [r] = client.create_transfers([t])
            except LedgerError:
                count("pending:info")
                continue
            count("pending:ok" if r.result in (CreateTransferResult.ok, CreateTransferResult.exists) else "pending:fail")

    def _read(self, history: History, process: int, count) -> bool:
        history.record(process, "invoke", "read", None)
        client = self.clients[READER]
        try:
            accounts = client.lookup_accounts(self.account_ids, linearizable=True)
        except LedgerError as e:
            # A read has no effect: whatever went wrong, it observed nothing.
            history.record(process, "fail", "read", {"error": f"{type(e).__name__}"})
            count("read:fail")
            return False
        balances = {str(a.id): a.credits_posted - a.debits_posted for a in accounts}
        history.record(process, "ok", "read", {"balances": balances})
        count("read:ok")
        return False

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


def collect_final_state(bank: Bank, addresses: dict[str, str], transfer_ids: list[int], timeout_s: float = 60.0) -> dict:
    """Wait until every validator has the same head, then read each one's chain, balances and transfers.

    Returns the final_state document of chaos/checkers.py. Validators that do
    not answer are reported with an ``error``.
    """
    reader = bank._client(READER, 5.0)
    deadline = time.monotonic() + timeout_s
    heads: dict[str, object] = {}
    while time.monotonic() < deadline:
        heads = {}
        for vid, addr in addresses.items():
            try:
                heads[vid] = reader.head(address=addr)
            except LedgerError:
                pass
        if len(heads) == len(addresses) and len({(h.height, h.hash) for h in heads.values()}) == 1:
            break
        time.sleep(0.3)
    state: dict = {
        "validators": {},
        "accounts": bank.account_ids,
        "total": bank.total,
        "initial_balances": {str(a): b for a, b in bank.initial_balances().items()},
    }
    for vid, addr in addresses.items():
        try:
            head = reader.head(address=addr)
            headers = [reader.block(h, address=addr)[0] for h in range(1, head.height + 1)]
            chain = [h.hash.hex() for h in headers]
            accounts = reader.lookup_accounts(bank.account_ids, address=addr)
            present: list[int] = []
            for i in range(0, len(transfer_ids), 1000):
                present.extend(t.id for t in reader.lookup_transfers(transfer_ids[i : i + 1000], address=addr))
            state["validators"][vid] = {
                "head": {"height": head.height, "hash": head.hash.hex()},
                "chain": chain,
                "balances": {str(a.id): a.credits_posted - a.debits_posted for a in accounts},
                "transfers_present": sorted(present),
                "timestamps": [h.timestamp for h in headers],
                "pending": _pending_state(reader, bank, addr),
            }
        except LedgerError as e:
            state["validators"][vid] = {"error": f"{type(e).__name__}: {e}"}
    reader.close()
    state["read_at_ns"] = time.time_ns()
    return state


def _pending_state(reader: LedgerClient, bank: Bank, address: str) -> dict:
    """The workload's pending transfers on one validator and the escrow account's pending and
    posted credits: ``{"transfers": [{"id", "timestamp" (ns), "timeout" (s), "amount"}],
    "escrow": {"credits_pending", "credits_posted"} | None}``. (An expiry writes no balance
    history record, node/ledger/apply.py ``_expire_pending``: the balances now are what shows it.)"""
    transfers = []
    ids = list(bank.pending_ids)
    for i in range(0, len(ids), 1000):
        transfers.extend({"id": t.id, "timestamp": t.timestamp, "timeout": t.timeout, "amount": t.amount}
                         for t in reader.lookup_transfers(ids[i : i + 1000], address=address))
    escrow = None
    if bank.cfg.pending_interval_s > 0:
        found = reader.lookup_accounts([ESCROW_ACCOUNT], address=address)
        if found:
            escrow = {"credits_pending": found[0].credits_pending, "credits_posted": found[0].credits_posted}
    return {"transfers": sorted(transfers, key=lambda t: t["id"]), "escrow": escrow}
