"""Replacing a validator whose disk is gone, under load, and why a wiped voter never counts.

Issue 13's acceptance test. A validator that comes back empty under its old identity
must never vote or acknowledge before it holds everything the lost one may have
acknowledged: an empty voter's vote can elect a leader that lacks an acknowledged
entry, and its acknowledgements can make a minority look like a majority (Raft
§5.2/§5.4; the Raft thesis §4 and §11.7 on servers that lose their storage; Jepsen's
TigerBeetle analysis, which found a reformatted replica un-committing acknowledged
entries, hence ``tigerbeetle recover``). Here an empty data directory runs as a
learner (node/raft/membership.py), and the operator replaces the lost validator with
``ledger-validator validator replace``: remove it, add the replacement as a learner,
let it catch up, promote it bound to its new data directory.

* :func:`test_replace_after_disk_loss_under_load`: three validators; bank-a's
  writers keep creating transfers; v3 is SIGKILLed and its data directory deleted;
  ``validator replace v3 --start`` (same identity, or ``--new-id v4``) runs while the
  writes continue, and the leader is SIGKILLed while the replacement is a learner
  catching up, then restarted. Afterwards every acknowledged transfer is on every
  validator exactly once, balances agree, and every validator's Raft configuration is
  the governed voters.
* :func:`test_a_wiped_voter_comes_back_as_a_learner_and_counts_toward_no_majority`:
  v3 wiped and restarted with its old config is a learner (and says why in its log);
  with the other follower down, the leader and the wiped v3 commit nothing; with it
  back, writes commit and nothing acknowledged was lost.

Ports: the cluster's block is probed from 48000 (clear of the other helpers' ranges);
a validator added here uses the block's next slot (``add_validator_files``).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import pytest

from conftest import running_cluster
from raft_ledger_client import Account, NotSubmitted, RetryPolicy, Timeout, Transfer, Unavailable
from raft_ledger_node.ledger import limits
from raft_ledger_node.localcluster import cluster_validators

pytestmark = pytest.mark.integration

START_PORT = 48_000
MEMBER = "bank-a"
LEDGER = 840  # bank-a issues it (conftest.TEST_ISSUERS): its accounts may carry a debit balance
ACCOUNTS = list(range(1, 9))
WRITER_THREADS = 3
TRANSFERS_PER_TX = 10
#: Acknowledged transfers before the disk is "lost".
WARMUP_ACKS_MIN = 100
#: And after the replacement, with the new voter in the configuration.
AFTER_ACKS_MIN = 60
#: A writer retries the same signed bytes for this long, then records an unknown outcome.
WRITER_RETRY = RetryPolicy(deadline_s=8.0, attempt_timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.5)
WRITER_JOIN_TIMEOUT_S = WRITER_RETRY.deadline_s + 5.0
#: How long the validator killed mid-replacement stays down.
MID_KILL_DOWN_S = 3.0
PHASE_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 240.0
CATCH_UP_TIMEOUT_S = 120.0
CONVERGE_TIMEOUT_S = 60.0
PROCESS_EXIT_TIMEOUT_S = 15.0
#: A write with only one voter of three up must end (not commit) within this.
NO_MAJORITY_RETRY = RetryPolicy(deadline_s=5.0, attempt_timeout_s=1.5, backoff_initial_s=0.05, backoff_max_s=0.5)
NO_MAJORITY_BOUND_S = NO_MAJORITY_RETRY.deadline_s + 5.0


def amount_of(transfer_id: int) -> int:
    return transfer_id % 997 + 1


def chunks(xs, n: int = limits.lookup_ids_max):
    xs = list(xs)
    for i in range(0, len(xs), n):
        yield xs[i: i + n]


@dataclass
class Load:
    """What bank-a's writers learnt. Guarded by ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: transfer id -> monotonic time its acknowledgement arrived (result ok or exists)
    acked: dict[int, float] = field(default_factory=dict)
    #: ids of batches that ended Timeout/Unavailable (unknown outcome) or NotSubmitted (refused)
    unknown: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)
    names: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def acked_after(self, t: float) -> int:
        with self.lock:
            return sum(1 for at in self.acked.values() if at > t)

    def check(self) -> None:
        with self.lock:
            assert not self.failures, self.failures[:10]

    def longest_gap(self, start: float, end: float) -> float:
        """Longest time within [start, end] in which no transfer was acknowledged (seconds)."""
        with self.lock:
            times = sorted(t for t in self.acked.values() if start <= t <= end)
        edges = [start, *times, end]
        return max(b - a for a, b in zip(edges, edges[1:]))


def writer(client, first_id: int, stop: threading.Event, load: Load) -> None:
    """Create transfers between bank-a's accounts, fresh ids per batch, until ``stop``."""
    next_id, n = first_id, 0
    while not stop.is_set():
        batch = []
        for k in range(TRANSFERS_PER_TX):
            dr = ACCOUNTS[(n + k) % len(ACCOUNTS)]
            cr = ACCOUNTS[(n * 3 + k + 1) % len(ACCOUNTS)]
            if cr == dr:
                cr = ACCOUNTS[(ACCOUNTS.index(dr) + 1) % len(ACCOUNTS)]
            batch.append(Transfer(id=next_id, debit_account_id=dr, credit_account_id=cr, amount=amount_of(next_id),
                                  ledger=LEDGER, code=7))
            next_id += 1
        n += 1
        try:
            results = client.create_transfers(batch)
        except (Timeout, Unavailable):
            with load.lock:
                load.unknown.update(t.id for t in batch)
            continue
        except NotSubmitted:
            with load.lock:
                load.refused.update(t.id for t in batch)
            continue
        except Exception as e:  # noqa: BLE001 - recorded; the test fails on it
            with load.lock:
                load.failures.append(f"{type(e).__name__}: {e}")
            return
        at = time.monotonic()
        with load.lock:
            for t, r in zip(batch, results, strict=True):
                if r.name in ("ok", "exists"):
                    load.acked[t.id] = at
                    load.names[r.name] += 1
                else:
                    load.failures.append(f"transfer {t.id}: {r.name}")


class Writers:
    """``WRITER_THREADS`` SDK clients of bank-a writing in the background."""

    def __init__(self, cluster) -> None:
        self.load = Load()
        self.stop_event = threading.Event()
        self.clients = [cluster.client(MEMBER, retry=WRITER_RETRY) for _ in range(WRITER_THREADS)]
        self.threads = [threading.Thread(target=writer, args=(c, (i + 1) * 10_000_000, self.stop_event, self.load),
                                         name=f"writer-{i}", daemon=True) for i, c in enumerate(self.clients)]

    def __enter__(self) -> "Writers":
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(WRITER_JOIN_TIMEOUT_S)
        for c in self.clients:
            c.close()
        assert not any(t.is_alive() for t in self.threads), "a writer did not stop"

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until(predicate, timeout_s: float, what: str, *, load: Load | None = None, describe=None, interval_s=0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if load is not None:
            load.check()
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not within {timeout_s}s" + (f"; last seen: {describe()}" if describe else ""))


def statuses(cluster) -> dict:
    """Validator id -> GetStatusResponse of every validator of the directory that answers."""
    return {v.id: st for v, st in cluster.status() if not isinstance(st, grpc.RpcError)}


def create_accounts(cluster) -> None:
    with cluster.client(MEMBER) as c:
        results = c.create_accounts([Account(id=a, ledger=LEDGER, code=1) for a in ACCOUNTS])
        assert [r.name for r in results] == ["ok"] * len(ACCOUNTS)


def wipe(cluster, vid: str) -> None:
    """SIGKILL ``vid`` and delete its data directory: the disk is lost."""
    proc = cluster.local.procs[vid]
    cluster.local.stop(vid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    data = os.path.join(cluster.directory, vid, "data")
    assert os.path.isdir(data)
    shutil.rmtree(data)


def check_everywhere(cluster, addresses: dict[str, str], load: Load) -> int:
    """Every acknowledged transfer exactly once on every validator (LOCAL reads of its own
    store), unknown outcomes at most once, refused ones never, balances moved by exactly
    the transfers present and equal everywhere. Returns the head height they agree on."""
    acked, unknown, refused = sorted(load.acked), sorted(load.unknown), sorted(load.refused)
    assert not set(acked) & set(unknown)
    with cluster.client(MEMBER) as reader:
        def agreed():
            heads = {vid: reader.head(address=a) for vid, a in addresses.items()}
            return next(iter(heads.values())) if len({(h.height, h.hash) for h in heads.values()}) == 1 else None

        head = wait_until(agreed, CONVERGE_TIMEOUT_S, f"{sorted(addresses)} on the same head",
                          describe=lambda: statuses(cluster))
        balances, present_by = {}, {}
        for vid, address in addresses.items():
            found = [t for ids in chunks(acked) for t in reader.lookup_transfers(ids, address=address)]
            ids_found = [t.id for t in found]
            assert len(ids_found) == len(set(ids_found)), f"{vid}: an acknowledged transfer appears twice"
            missing = sorted(set(acked) - set(ids_found))
            assert not missing, f"{vid}: {len(missing)} acknowledged transfers lost, e.g. {missing[:5]}"
            maybe = [t for ids in chunks(unknown) for t in reader.lookup_transfers(ids, address=address)]
            assert len({t.id for t in maybe}) == len(maybe), f"{vid}: a transfer of unknown outcome appears twice"
            never = [t.id for ids in chunks(refused) for t in reader.lookup_transfers(ids, address=address)]
            assert not never, f"{vid}: transfers refused before proposal were applied: {never[:5]}"
            present = sorted(found + maybe, key=lambda t: t.id)
            assert all(t.amount == amount_of(t.id) for t in present), vid
            accounts = {a.id: a for a in reader.lookup_accounts(ACCOUNTS, address=address)}
            assert sorted(accounts) == ACCOUNTS, f"{vid}: accounts missing"
            debits, credits = Counter(), Counter()
            for t in present:
                debits[t.debit_account_id] += t.amount
                credits[t.credit_account_id] += t.amount
            for a in accounts.values():
                assert (a.debits_posted, a.credits_posted) == (debits[a.id], credits[a.id]), (vid, a.id)
            balances[vid], present_by[vid] = accounts, present
        first = next(iter(addresses))
        for vid in addresses:
            assert balances[vid] == balances[first], f"balances of {vid} differ from {first}"
            assert present_by[vid] == present_by[first], f"transfers of {vid} differ from {first}"
    return head.height


def check_raft_configuration(cluster, ids: list[str]) -> None:
    """Every validator in ``ids`` answers as a voter, at the same configuration version,
    with pysyncobj's voters equal to the governed voters (sorted Raft addresses)."""
    with cluster.client(MEMBER) as reader:
        cfg = reader.get_configuration()
    voters = sorted(v["raft_address"] for v in cfg["validators"] if v["voting"])
    assert sorted(v["id"] for v in cfg["validators"] if v["voting"]) == sorted(ids)
    assert not [v for v in cfg["validators"] if not v["voting"]], "a learner is still pending"

    def agreed():
        rows = statuses(cluster)
        return all(vid in rows and rows[vid].membership == "voter" and rows[vid].configuration_version == cfg["version"]
                   and sorted(rows[vid].raft_configuration) == voters for vid in ids)

    wait_until(agreed, CONVERGE_TIMEOUT_S, f"raft configuration {voters} on {ids}",
               describe=lambda: {vid: (st.membership, st.configuration_version, list(st.raft_configuration))
                                 for vid, st in statuses(cluster).items()})


def stop_pid(pid: int) -> None:
    """SIGTERM a validator this test had the CLI start (not our child: poll it), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + PROCESS_EXIT_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    raise AssertionError(f"validator pid {pid} did not exit")


@pytest.mark.parametrize("new_id", [None, "v4"], ids=["same-identity", "new-identity"])
def test_replace_after_disk_loss_under_load(tmp_path, new_id):
    t_begin = time.monotonic()
    with running_cluster(str(tmp_path / "cluster"), START_PORT) as cluster:
        create_accounts(cluster)
        replacement = new_id or "v3"
        cli_log = os.path.join(cluster.directory, "replace-cli.log")
        cli = None
        started_pid = None
        try:
            with Writers(cluster) as writers:
                load = writers.load
                wait_until(lambda: load.count() >= WARMUP_ACKS_MIN, PHASE_TIMEOUT_S, "load warm-up", load=load)

                wipe(cluster, "v3")
                t_lost = time.monotonic()
                acked_at_loss = load.count()
                argv = [sys.executable, "-m", "raft_ledger_node.cli", "validator", "replace", "v3", "--start",
                        "--cluster", cluster.directory, "--timeout", str(CATCH_UP_TIMEOUT_S),
                        "--admin", "admin-1", "--admin", "admin-2"]
                if new_id:
                    argv += ["--new-id", new_id]
                with open(cli_log, "wb") as out:
                    cli = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

                # Mid-way: once the replacement is a learner (added, not promoted), SIGKILL the
                # leader. With v3 removed, v1 and v2 are the voters: neither the survivor alone
                # nor with the learner is a majority, so nothing commits until it is back.
                def learner_added():
                    for vid, st in statuses(cluster).items():
                        if vid in ("v1", "v2") and st.role == "leader" and any(
                                e.id == replacement and not e.voting for e in st.validators):
                            return vid, st
                    assert cli.poll() is None, f"replace ended before the kill: {open(cli_log).read()[-2000:]}"
                    return None

                victim, leader_st = wait_until(learner_added, CLI_TIMEOUT_S, f"{replacement} added as a learner",
                                               load=load)
                learner_entry = next(e for e in leader_st.validators if e.id == replacement)
                proc = cluster.local.procs[victim]
                cluster.local.stop(victim, signal.SIGKILL)
                assert proc.returncode == -signal.SIGKILL
                t_mid_kill = time.monotonic()
                time.sleep(MID_KILL_DOWN_S)
                cluster.local.start(victim)

                rc = cli.wait(CLI_TIMEOUT_S)
                t_done = time.monotonic()
                output = open(cli_log, errors="replace").read()
                assert rc == 0, f"validator replace exited {rc}:\n{output[-4000:]}"
                assert f"v3 replaced by {replacement}" in output, output[-4000:]
                m = re.search(rf"started {re.escape(replacement)} \(pid (\d+)", output)
                assert m, output[-4000:]
                started_pid = int(m.group(1))
                # Promoted after the kill (it was a learner when the leader died), voting now.
                assert statuses(cluster)[replacement].membership == "voter"

                # Writes go on with the replacement voting.
                wait_until(lambda: load.acked_after(t_done) >= AFTER_ACKS_MIN, PHASE_TIMEOUT_S,
                           "writes acknowledged after the replacement", load=load)
            load.check()
            assert load.acked_after(t_lost) > 0

            voters = ["v1", "v2", replacement]
            known = {v.id: v for v in cluster_validators(cluster.directory)}
            addresses = {vid: known[vid].grpc_address for vid in voters}
            check_raft_configuration(cluster, voters)
            with cluster.client(MEMBER) as reader:
                cfg = reader.get_configuration()
            bound = next(v for v in cfg["validators"] if v["id"] == replacement)["data_dir_id"]
            assert bound == statuses(cluster)[replacement].data_dir_id.hex() and len(bound) == 32
            if new_id:
                assert "v3" not in {v["id"] for v in cfg["validators"]}
            height = check_everywhere(cluster, addresses, load)

            gap = load.longest_gap(t_lost, t_done)
            gap_before_kill = load.longest_gap(t_lost, t_mid_kill)
            gap_kill = load.longest_gap(t_mid_kill, t_done)
            steps = re.findall(r"^\s+(.+): ([\d.]+) s$", output, re.M)
            print(f"\nreplace v3 -> {replacement}: {len(load.acked)} acknowledged {dict(load.names)} "
                  f"({acked_at_loss} before the disk loss), {len(load.unknown)} unknown outcome, "
                  f"{len(load.refused)} refused; change took {t_done - t_lost:.1f}s; longest write gap during it "
                  f"{gap:.1f}s ({gap_before_kill:.1f}s from the disk loss to the SIGKILL of leader {victim} "
                  f"mid-catch-up, {gap_kill:.1f}s after it; the learner's match index was "
                  f"{learner_entry.match_index}); head {height}; steps {dict(steps)}; "
                  f"{time.monotonic() - t_begin:.1f}s in all")
        finally:
            if cli is not None and cli.poll() is None:
                cli.terminate()
                cli.wait(PROCESS_EXIT_TIMEOUT_S)
            if started_pid is None and os.path.exists(cli_log):
                m = re.search(r"started \S+ \(pid (\d+)", open(cli_log, errors="replace").read())
                started_pid = int(m.group(1)) if m else None
            if started_pid is not None:
                stop_pid(started_pid)


def test_a_wiped_voter_comes_back_as_a_learner_and_counts_toward_no_majority(tmp_path):
    with running_cluster(str(tmp_path / "cluster"), START_PORT) as cluster:
        create_accounts(cluster)
        load = Load()
        with cluster.client(MEMBER, retry=WRITER_RETRY) as c:
            def batch(first_id: int) -> list[Transfer]:
                return [Transfer(id=first_id + k, debit_account_id=ACCOUNTS[k % 8], credit_account_id=ACCOUNTS[(k + 1) % 8],
                                 amount=amount_of(first_id + k), ledger=LEDGER, code=7) for k in range(TRANSFERS_PER_TX)]

            def acknowledge(first_id: int) -> None:
                transfers = batch(first_id)
                results = c.create_transfers(transfers)
                assert [r.name for r in results] == ["ok"] * len(transfers)
                at = time.monotonic()
                with load.lock:
                    load.acked.update((t.id, at) for t in transfers)

            for i in range(5):
                acknowledge(1_000 + i * 100)
            genesis_addresses = dict(cluster.addresses)
            check_everywhere(cluster, genesis_addresses, load)  # v3 holds all of it before its disk goes

            wipe(cluster, "v3")
            cluster.local.start("v3")
            v3 = wait_until(lambda: statuses(cluster).get("v3"), PHASE_TIMEOUT_S, "wiped v3 answering")
            assert v3.membership == "learner" and len(v3.data_dir_id) == 16
            log = open(cluster.local.log_path("v3"), errors="replace").read()
            assert "starts as a learner" in log and "not formatted for genesis" in log, log[-3000:]
            # Governance still names v3 a voter (nobody replaced it) and the others still have
            # it in their Raft configuration: only its own directory's identity keeps it out.
            raft_v3 = next(v.raft_address for v in cluster.local.genesis.validators if v.id == "v3")
            rows = statuses(cluster)
            assert all(raft_v3 in rows[vid].raft_configuration for vid in ("v1", "v2"))
            # A learner still receives the log (pysyncobj read-only node) and serves LOCAL reads.
            check_everywhere(cluster, genesis_addresses, load)

            # The other voter down (the follower, so that the survivor leads and proposes the
            # write): the leader and v3 (a learner) are two processes at three voters'
            # addresses, but one vote. The write must not commit.
            leader = cluster.leader(exclude=("v3",))
            down = next(vid for vid in ("v1", "v2") if vid != leader)
            proc = cluster.local.procs[down]
            cluster.local.stop(down, signal.SIGKILL)
            assert proc.returncode == -signal.SIGKILL
            before = {vid: (st.commit_index, st.head.height) for vid, st in statuses(cluster).items()}
            assert set(before) == {leader, "v3"}
            doomed = batch(9_000)
            t0 = time.monotonic()
            with cluster.client(MEMBER, retry=NO_MAJORITY_RETRY) as impatient:
                with pytest.raises((Timeout, Unavailable, NotSubmitted)) as err:
                    impatient.create_transfers(doomed)
            took = time.monotonic() - t0
            assert took < NO_MAJORITY_BOUND_S, f"the refused write took {took:.1f}s"
            after = {vid: (st.commit_index, st.head.height) for vid, st in statuses(cluster).items()}
            assert after == before, f"something committed without a majority: {before} -> {after}"
            if isinstance(err.value, NotSubmitted):
                load.refused.update(t.id for t in doomed)
            else:
                load.unknown.update(t.id for t in doomed)

            cluster.local.start(down)
            wait_until(lambda: getattr(statuses(cluster).get(down), "ready", False), PHASE_TIMEOUT_S, f"{down} back")
            for i in range(3):  # the patient client waits out the election
                acknowledge(20_000 + i * 100)
        check_everywhere(cluster, genesis_addresses, load)
        assert statuses(cluster)["v3"].membership == "learner"
        print(f"\nwiped v3: learner; with {down} down and {leader} leading the write ended {type(err.value).__name__} "
              f"after {took:.1f}s, commit index stayed {before[leader][0]}; {len(load.acked)} acknowledged transfers "
              "on every validator")
