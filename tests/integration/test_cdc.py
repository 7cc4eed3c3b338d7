"""Change-data capture against a real cluster: WatchEvents through the SDK's iterator.

Three validators with mutual TLS; member banks write transfers while a consumer iterates
``LedgerClient.watch_events``; the validator it streams from is SIGKILLed (the leader in
one test, a follower in the other) and validators restart. Checked: every committed
transfer is seen exactly once, blocks come in height order with contiguous heights from
1 (no gap, no duplicate across the failures: the SDK resumes at last height + 1 on
another validator), a member sees only events touching its own accounts (and its own
failed events, not another member's attempt against its account), the auditor sees all.
"""
from __future__ import annotations

import logging
import signal
import threading
import time

import pytest

from conftest import running_cluster
from raft_ledger_client import Account, RetryPolicy, Transfer
from raft_ledger_node.localcluster import member_client

pytestmark = pytest.mark.integration

#: Ports of this module's clusters (issue 14's plan: start=44000, step=300).
START_PORT = 44_000
LEDGER = 1
#: Accounts: bank-a owns 101, 102; bank-b owns 201, 202.
A1, A2, B1, B2 = 101, 102, 201, 202
#: Seconds a consumer gets to reach the final head after the writers stop.
CONSUME_TIMEOUT_S = 60.0
#: Rounds of writes before, between and after the failures.
ROUNDS = 6


@pytest.fixture
def cdc_cluster(tmp_path):
    with running_cluster(str(tmp_path / "cluster"), START_PORT) as c:
        yield c


def _client(cluster, identity):
    return member_client(cluster.directory, identity, verify=False,
                         retry=RetryPolicy(deadline_s=30.0, attempt_timeout_s=5.0))


class Consumer(threading.Thread):
    """Iterates watch_events(1) as ``identity`` until a block at or above ``stop_at`` (set
    later) arrived or its deadline passed; keeps every block and prints one line each."""

    def __init__(self, cluster, identity: str, *, address: str | None = None, lines: list[str] | None = None):
        super().__init__(name=f"consumer-{identity}", daemon=True)
        self.client = _client(cluster, identity)
        self.identity, self.address = identity, address
        self.blocks = []
        self.stop_at: int | None = None
        self.deadline = time.monotonic() + 600
        self.error: BaseException | None = None
        self.lines = lines if lines is not None else []

    def run(self) -> None:
        try:
            for b in self.client.watch_events(1, address=self.address):
                self.blocks.append(b)
                if b.transfers or b.accounts:
                    self.lines.append(f"{self.identity}: height {b.height} from {b.source}: "
                                      f"accounts={[e.account.id for e in b.accounts]} "
                                      f"transfers={[e.transfer.id for e in b.transfers]}")
                if (self.stop_at is not None and b.height >= self.stop_at) or time.monotonic() > self.deadline:
                    return
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.client.close()

    def finish(self, head: int) -> None:
        self.stop_at = head
        self.deadline = time.monotonic() + CONSUME_TIMEOUT_S
        self.join(CONSUME_TIMEOUT_S + 10)
        assert not self.is_alive(), f"{self.identity} did not reach height {head}: {len(self.blocks)} blocks"
        assert self.error is None, f"{self.identity}'s iterator failed: {self.error!r}"

    def transfer_ids(self, ok_only: bool = True) -> list[int]:
        return [e.transfer.id for b in self.blocks for e in b.transfers if not ok_only or e.result.name == "ok"]


def _setup_accounts(a, b):
    assert [r.name for r in a.create_accounts([Account(id=i, ledger=LEDGER, code=1) for i in (A1, A2)])] == ["ok"] * 2
    assert [r.name for r in b.create_accounts([Account(id=i, ledger=LEDGER, code=1) for i in (B1, B2)])] == ["ok"] * 2


def _write_round(a, b, n: int) -> dict[str, list[int]]:
    """One round of transfers (ids from ``n``): a->a, a->b, b->b, b->a, and one of bank-b's
    that fails against bank-a's account (ledger mismatch). Returns the ids by kind."""
    base = 1000 + 10 * n
    ra = a.create_transfers([Transfer(id=base, debit_account_id=A1, credit_account_id=A2, amount=5, ledger=LEDGER, code=1),
                             Transfer(id=base + 1, debit_account_id=A1, credit_account_id=B1, amount=3, ledger=LEDGER, code=1)])
    rb = b.create_transfers([Transfer(id=base + 2, debit_account_id=B2, credit_account_id=B1, amount=7, ledger=LEDGER, code=1),
                             Transfer(id=base + 3, debit_account_id=B2, credit_account_id=A2, amount=2, ledger=LEDGER, code=1)])
    rf = b.create_transfers([Transfer(id=base + 4, debit_account_id=B2, credit_account_id=A2, amount=1, ledger=LEDGER + 1, code=1)])
    assert [r.name for r in ra + rb] == ["ok"] * 4, (ra, rb)
    assert rf[0].name != "ok"
    return {"a_only": [base], "a_b": [base + 1, base + 3], "b_only": [base + 2], "b_failed": [base + 4]}


def _wait_ready(cluster, vid: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = dict((v.id, s) for v, s in cluster.status())[vid]
        if getattr(st, "ready", False):
            return
        time.sleep(0.2)
    raise AssertionError(f"{vid} not ready within {timeout_s}s")


def _check_contiguous(consumer: Consumer, head: int) -> None:
    heights = [b.height for b in consumer.blocks]
    assert heights == list(range(1, heights[-1] + 1)), f"{consumer.identity}: heights not contiguous from 1"
    assert heights[-1] >= head


def _run(cluster, kill: str, lines: list[str]) -> tuple[Consumer, Consumer, Consumer, dict[str, list[int]], int]:
    """Writers and three consumers (auditor streaming from ``kill``'s validator, bank-a,
    bank-b); SIGKILL that validator mid-way, restart it, restart another; return when done."""
    leader = cluster.leader()
    victim = leader if kill == "leader" else cluster.followers(leader)[0]
    other = next(v for v in cluster.addresses if v != victim)
    ids: dict[str, list[int]] = {}
    with _client(cluster, "bank-a") as a, _client(cluster, "bank-b") as b:
        _setup_accounts(a, b)
        auditor = Consumer(cluster, "auditor", address=cluster.addresses[victim], lines=lines)
        bank_a = Consumer(cluster, "bank-a", address=cluster.addresses[victim], lines=[])
        bank_b = Consumer(cluster, "bank-b", lines=[])
        for c in (auditor, bank_a, bank_b):
            c.start()

        def write(rounds):
            for n in rounds:
                for k, v in _write_round(a, b, n).items():
                    ids.setdefault(k, []).extend(v)

        write(range(ROUNDS))
        deadline = time.monotonic() + 30
        while not auditor.blocks and time.monotonic() < deadline:
            time.sleep(0.05)
        lines.append(f"-- SIGKILL {victim} ({kill}, which the auditor streams from) after height "
                     f"{auditor.blocks[-1].height if auditor.blocks else 0}")
        cluster.local.stop(victim, signal.SIGKILL)
        write(range(ROUNDS, 2 * ROUNDS))
        lines.append(f"-- restart {victim}")
        cluster.local.start(victim)
        write(range(2 * ROUNDS, 3 * ROUNDS))
        _wait_ready(cluster, victim)
        lines.append(f"-- restart {other} (SIGTERM, start)")
        cluster.local.stop(other)
        cluster.local.start(other)
        write(range(3 * ROUNDS, 4 * ROUNDS))
        head = a.head(linearizable=True).height
        for c in (auditor, bank_a, bank_b):
            c.stop_at = head
        # One more block wakes every consumer (each gets every block, empty or not) so it
        # notices it is done; the checks look at heights up to ``head`` only.
        a.create_accounts([Account(id=999, ledger=LEDGER, code=1)])
    for c in (auditor, bank_a, bank_b):
        c.finish(head)
        c.blocks = [blk for blk in c.blocks if blk.height <= head]
    return auditor, bank_a, bank_b, ids, head


def _assert_views(auditor, bank_a, bank_b, ids, head):
    for c in (auditor, bank_a, bank_b):
        _check_contiguous(c, head)
    ok = sorted(ids["a_only"] + ids["a_b"] + ids["b_only"])
    # The auditor: every committed transfer exactly once (and every failed one, once).
    assert sorted(auditor.transfer_ids()) == ok
    assert sorted(auditor.transfer_ids(ok_only=False)) == sorted(ok + ids["b_failed"])
    # bank-a: the transfers touching its accounts, not bank-b's failed attempt against one.
    assert sorted(bank_a.transfer_ids(ok_only=False)) == sorted(ids["a_only"] + ids["a_b"])
    # bank-b: its own and those touching its accounts, its own failed ones.
    assert sorted(bank_b.transfer_ids(ok_only=False)) == sorted(ids["a_b"] + ids["b_only"] + ids["b_failed"])
    assert sorted(e.account.id for blk in bank_a.blocks for e in blk.accounts) == [A1, A2]
    assert sorted(e.account.id for blk in auditor.blocks for e in blk.accounts) == [A1, A2, B1, B2]
    # Every validator serves the same blocks: hashes agree with a fresh read.
    hashes = {b.height: b.block_hash for b in auditor.blocks}
    assert all(hashes[b.height] == b.block_hash for b in bank_a.blocks + bank_b.blocks)


def test_consumer_resumes_across_a_leader_kill(cdc_cluster, caplog, capsys):
    caplog.set_level(logging.INFO, logger="raft_ledger_client.cdc")
    lines: list[str] = []
    auditor, bank_a, bank_b, ids, head = _run(cdc_cluster, "leader", lines)
    _assert_views(auditor, bank_a, bank_b, ids, head)
    sources = {b.source for b in auditor.blocks}
    assert len(sources) >= 2, "the auditor's stream never moved off the killed leader"
    with capsys.disabled():
        print("\n".join(["", *lines, *(r.getMessage() for r in caplog.records if "(auditor)" in r.getMessage())]))


def test_member_stream_resumes_across_a_follower_kill(cdc_cluster, caplog):
    caplog.set_level(logging.INFO, logger="raft_ledger_client.cdc")
    lines: list[str] = []
    auditor, bank_a, bank_b, ids, head = _run(cdc_cluster, "follower", lines)
    _assert_views(auditor, bank_a, bank_b, ids, head)
    assert any("broke" in r.getMessage() for r in caplog.records)


def test_filters_and_from_the_next_block(cdc_cluster):
    """kinds, ledger and account_ids filter the events, never the blocks; from_height 0
    starts after the head."""
    with _client(cdc_cluster, "bank-a") as a, _client(cdc_cluster, "bank-b") as b, \
            _client(cdc_cluster, "auditor") as au:
        _setup_accounts(a, b)
        ids = _write_round(a, b, 0)
        head = au.head(linearizable=True).height

        def take(it, until):
            out = []
            for blk in it:
                out.append(blk)
                if blk.height >= until:
                    break
            return out

        only_b1 = take(au.watch_events(1, kinds=["transfers"], account_ids=[B1]), head)
        assert [blk.height for blk in only_b1] == list(range(1, head + 1))
        assert not any(blk.accounts for blk in only_b1)
        assert sorted(e.transfer.id for blk in only_b1 for e in blk.transfers) == sorted([ids["a_b"][0], ids["b_only"][0]])
        other_ledger = take(au.watch_events(1, ledger=LEDGER + 7), head)
        assert not any(blk.accounts or blk.transfers for blk in other_ledger)
        accounts_only = take(au.watch_events(1, kinds=["accounts"]), head)
        assert sum(len(blk.accounts) for blk in accounts_only) == 4 and not any(blk.transfers for blk in accounts_only)
        # from_height 0: the next block is the first one sent (heartbeats are not items).
        it = au.watch_events(0)
        got = []
        t = threading.Thread(target=lambda: got.append(next(it)), daemon=True)
        t.start()
        time.sleep(2.5)  # the iterator resolved the head and idles on heartbeats meanwhile
        assert not got
        _write_round(a, b, 1)
        t.join(30)
        it.close()
        assert got and got[0].height == head + 1
