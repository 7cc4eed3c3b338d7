"""The chaos suite's fault injection on a real cluster: real Toxiproxy, three real validators.

Checks that the faults of :class:`chaos.cluster.ChaosCluster` act on the wire
the way the drills assume, and that the cluster recovers when they are healed:

* a silent partition of the leader makes the two others elect a new leader
  (Raft §5.2: followers that hear no heartbeat start an election; §5.4: only a
  majority commits), and after heal all three converge on one chain head;
* a one-way cut and a latency fault appear in Toxiproxy's API on the right
  proxies and streams (Toxiproxy: ``upstream`` = bytes from the connecting
  client to the upstream server), and heal removes every toxic;
* SIGSTOP/SIGCONT pauses and resumes a validator;
* ``stop()`` leaves no process behind.

Skipped only when the toxiproxy-server binary is missing (``bash
deploy/local/setup.sh`` installs it; CI runs that).
"""
from __future__ import annotations

import os
import socket
import time

import grpc
import pytest

from raft_ledger_chaos.toxi import find_binary

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        find_binary() is None,
        reason="toxiproxy-server binary not found (.venv/bin or PATH): install it with `bash deploy/local/setup.sh` (needs Go)",
    ),
]

#: A new leader after a fault on the old one: election timeouts are 0.4–1.4 s, a
#: cut-off leader steps down after 2 s; generous for a loaded CI machine.
ELECTION_TIMEOUT_S = 15.0
#: All three validators on one chain head after heal (includes a reconnect and catch-up).
CONVERGE_TIMEOUT_S = 20.0
#: Time for a paused validator to answer again after SIGCONT.
RESUME_TIMEOUT_S = 10.0
ACCOUNTS_PER_WRITE = 3
LEDGER = 840


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    from raft_ledger_chaos.cluster import ChaosCluster

    # Spread concurrent sessions over different ranges; the port locks keep them apart anyway.
    base = 17_100 + (os.getpid() % 20) * 200
    c = ChaosCluster(str(tmp_path_factory.mktemp("chaos") / "cluster"), base_port=base)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def wait_until(predicate, timeout_s: float, what: str, describe=None):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} within {timeout_s}s; " + (str(describe()) if describe else ""))
        time.sleep(0.1)


def status_summary(chaos) -> list:
    out = []
    for v, st in chaos.status(timeout_s=0.5):
        if isinstance(st, grpc.RpcError):
            out.append((v.id, st.code().name))
        else:
            out.append((v.id, st.role, st.term, st.commit_index, st.head.height, st.head.hash.hex()[:12]))
    return out


def converged_head(chaos, min_height: int = 0):
    """(height, hash) if every validator answers with the same head at ``min_height`` or above."""
    rows = chaos.status(timeout_s=0.5)
    if any(isinstance(st, grpc.RpcError) for _, st in rows):
        return None
    heads = {(st.head.height, st.head.hash) for _, st in rows}
    if len(heads) == 1:
        (height, hash_), = heads
        if height >= min_height:
            return height, hash_
    return None


def write_accounts(chaos, vids: list[str], first_id: int) -> int:
    """Create accounts through ``vids`` only (the SDK follows their leader); returns the head height after."""
    from raft_ledger_client import Account, LedgerClient, RetryPolicy, load_private_key, read_genesis
    from raft_ledger_node.localcluster import client_tls

    key = load_private_key(os.path.join(chaos.directory, "members", "bank-a.pem"))
    addresses = [chaos.addresses[v] for v in vids]
    retry = RetryPolicy(deadline_s=ELECTION_TIMEOUT_S, attempt_timeout_s=2.0)
    with LedgerClient(addresses, member_id="bank-a", key_id="k1", private_key=key, retry=retry,
                      chain_id=read_genesis(os.path.join(chaos.directory, "genesis.json"))[1],
                      tls=client_tls(chaos.directory, "bank-a"), validators=list(chaos.addresses.values())) as client:
        results = client.create_accounts([Account(id=first_id + k, ledger=LEDGER, code=1) for k in range(ACCOUNTS_PER_WRITE)])
    assert [r.name for r in results] == ["ok"] * ACCOUNTS_PER_WRITE
    return max(st.head.height for v, st in chaos.status() if v.id in vids and not isinstance(st, grpc.RpcError))


def new_leader(chaos, old: str) -> str:
    return wait_until(lambda: (lambda L: L if L not in (None, old) else None)(chaos.leader(timeout_s=0)),
                      ELECTION_TIMEOUT_S, f"no leader other than {old}", lambda: status_summary(chaos))


def test_partition_of_the_leader_elects_a_new_leader_and_heal_converges(chaos):
    old = chaos.leader(timeout_s=ELECTION_TIMEOUT_S)
    assert old is not None, status_summary(chaos)
    write_accounts(chaos, list(chaos.addresses), first_id=1_000)
    others = sorted(set(chaos.addresses) - {old})

    chaos.partition([{old}])
    # Both directions of the old leader's two links are blackholed; the followers' link is untouched.
    toxics = chaos.toxics()
    for name, links in toxics.items():
        expected = [{"name": f"timeout-{s}", "type": "timeout", "stream": s, "attributes": {"timeout": 0}}
                    for s in ("downstream", "upstream")] if old in name.split("-") else []
        assert links == expected, (name, toxics)

    leader = new_leader(chaos, old)
    assert leader in others
    # The majority side commits on its own (Raft §5.4: a majority is enough).
    majority_height = write_accounts(chaos, others, first_id=2_000)
    old_status = dict((v.id, st) for v, st in chaos.status())[old]
    if not isinstance(old_status, grpc.RpcError):
        assert old_status.head.height < majority_height, "the cut-off leader applied a block without a majority"

    healed = chaos.heal()
    assert sorted(healed["bounced"]) == sorted(n for n in toxics if old in n.split("-"))
    assert all(links == [] for links in chaos.toxics().values())
    assert all(chaos.proxy_enabled().values())
    wait_until(lambda: converged_head(chaos, majority_height), CONVERGE_TIMEOUT_S,
               "validators did not converge on one head after heal", lambda: status_summary(chaos))


def test_kill_and_heal_restarts_the_validator(chaos):
    leader = chaos.leader(timeout_s=ELECTION_TIMEOUT_S)
    follower = sorted(set(chaos.addresses) - {leader})[0]
    pid = chaos.pids[follower]
    chaos.kill(follower)
    assert follower not in chaos.pids
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    height = write_accounts(chaos, [leader], first_id=3_000)  # two of three still commit
    assert chaos.heal()["started"] == [follower]
    assert chaos.unexpected_exits() == {}
    wait_until(lambda: converged_head(chaos, height), CONVERGE_TIMEOUT_S,
               "restarted validator did not catch up", lambda: status_summary(chaos))


def test_one_way_cut_and_latency_show_in_toxiproxy(chaos):
    links = chaos.links  # "i-j": i dials j, so upstream carries i -> j
    (name, link), = [(n, l) for n, l in links.items() if {l["dialer"], l["listener"]} == {"v1", "v3"}]
    dialer, listener = link["dialer"], link["listener"]

    chaos.cut_one_way(dialer, listener)
    assert chaos.toxics()[name] == [{"name": "timeout-upstream", "type": "timeout", "stream": "upstream", "attributes": {"timeout": 0}}]
    chaos.heal()
    chaos.cut_one_way(listener, dialer)
    toxics = chaos.toxics()
    assert toxics[name] == [{"name": "timeout-downstream", "type": "timeout", "stream": "downstream", "attributes": {"timeout": 0}}]
    assert all(t == [] for n, t in toxics.items() if n != name)
    chaos.heal()

    # The leader cannot send to either follower (but still receives): they elect another leader.
    old = chaos.leader(timeout_s=ELECTION_TIMEOUT_S)
    for f in sorted(set(chaos.addresses) - {old}):
        chaos.cut_one_way(old, f)
    assert sum(len(t) for t in chaos.toxics().values()) == 2
    new_leader(chaos, old)
    chaos.heal()

    chaos.latency(100, 20)
    toxics = chaos.toxics()
    assert set(toxics) == set(links)
    for name_, t in toxics.items():
        assert t == [
            {"name": f"latency-{s}", "type": "latency", "stream": s, "attributes": {"latency": 100, "jitter": 20}}
            for s in ("downstream", "upstream")
        ], (name_, t)
    # Still a working cluster, just slower.
    leader = chaos.leader(timeout_s=ELECTION_TIMEOUT_S)
    assert leader is not None, status_summary(chaos)
    height = write_accounts(chaos, list(chaos.addresses), first_id=4_000)
    chaos.heal()
    assert all(t == [] for t in chaos.toxics().values())
    wait_until(lambda: converged_head(chaos, height), CONVERGE_TIMEOUT_S,
               "validators did not converge after the latency fault", lambda: status_summary(chaos))


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_pause_and_resume(chaos):
    old = chaos.leader(timeout_s=ELECTION_TIMEOUT_S)
    pid = chaos.pids[old]
    chaos.pause(old)
    try:
        # SIGSTOP is delivered asynchronously.
        wait_until(lambda: _proc_state(pid) == "T", RESUME_TIMEOUT_S, f"{old} (PID {pid}) not stopped")
        row = dict((v.id, st) for v, st in chaos.status(timeout_s=0.5))[old]
        assert isinstance(row, grpc.RpcError) and row.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        new_leader(chaos, old)
    finally:
        chaos.resume(old)
    wait_until(lambda: _proc_state(pid) != "T", RESUME_TIMEOUT_S, f"{old} (PID {pid}) still stopped")
    wait_until(lambda: not isinstance(dict((v.id, st) for v, st in chaos.status(timeout_s=0.5))[old], grpc.RpcError),
               RESUME_TIMEOUT_S, f"{old} did not answer after SIGCONT")
    wait_until(lambda: converged_head(chaos), CONVERGE_TIMEOUT_S,
               "validators did not converge after resume", lambda: status_summary(chaos))


def test_stop_leaves_no_process(chaos):
    pids = list(chaos.pids.values()) + [chaos.toxiproxy.pid]
    assert len(pids) == 4
    listens = [link["listen"] for link in chaos.links.values()]
    chaos.stop()
    assert chaos.unexpected_exits() == {}  # stop's own SIGTERMs do not count
    assert chaos.pids == {}
    assert not chaos.toxiproxy.running()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for addr in listens:
        host, port = addr.rsplit(":", 1)
        with socket.socket() as s:
            assert s.connect_ex((host, int(port))) != 0, f"proxy {addr} still listening"
