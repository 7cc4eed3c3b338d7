"""The bench's PostgreSQL baseline with synchronous replication (node/bench/pg_sync.py,
issue 16): a real primary and two real standbys on 127.0.0.1 come up streaming as
quorum standbys of ``ANY 1 (s1, s2)``, and a COMMIT waits until a standby has the WAL
(PostgreSQL 15 docs §27.2.8: with no synchronous standby connected, a commit waits).

Needs Debian's PostgreSQL binaries and psycopg (``bash deploy/local/bench.sh`` installs
both); skipped with the install command otherwise."""
from __future__ import annotations

import threading
import time

import pytest

from raft_ledger_node.bench import pg_sync, postgres
from raft_ledger_node.localcluster import reserve_ports

pytestmark = pytest.mark.integration

psycopg = pytest.importorskip("psycopg", reason=postgres.PIP_HINT)
BINDIR = postgres.find_binaries()
COMMIT_BLOCKED_S = 2.0
COMMIT_RESUMED_S_MAX = 30.0


@pytest.fixture
def replicated():
    if BINDIR is None:
        pytest.skip(f"PostgreSQL binaries not found: {postgres.APT_HINT}")
    with reserve_ports(pg_sync.PORT_OFFSETS, start=51000, step=1000, probes_max=2) as ports:
        server = pg_sync.ReplicatedServer(BINDIR, tuple(ports.ports), max_connections=16)
        try:
            server.start()
            yield server
        finally:
            server.stop()


def test_primary_and_two_standbys_stream_and_a_commit_waits_for_a_standby(replicated):
    server = replicated
    with psycopg.connect(server.conninfo(), autocommit=True) as admin:
        assert server.replication(admin) == {"s1": ("streaming", "quorum"), "s2": ("streaming", "quorum")}
        settings = {k: admin.execute(f"SHOW {k}").fetchone()[0] for k in ("synchronous_standby_names", "synchronous_commit", "fsync")}
        assert settings == {"synchronous_standby_names": "ANY 1 (s1, s2)", "synchronous_commit": "on", "fsync": "on"}
        admin.execute("CREATE TABLE t (id int PRIMARY KEY)")
        admin.execute("INSERT INTO t VALUES (1)")  # both standbys up: returns

        # One standby down: ANY 1 still has the other, commits go on.
        server.standbys["s2"].halt()
        admin.execute("INSERT INTO t VALUES (2)")

        # Both down: the commit is written on the primary but does not return.
        server.standbys["s1"].halt()
        done = threading.Event()
        errors: list[BaseException] = []

        def commit() -> None:
            try:
                with psycopg.connect(server.conninfo(), autocommit=True) as c:
                    c.execute("INSERT INTO t VALUES (3)")
            except BaseException as e:  # reported below
                errors.append(e)
            finally:
                done.set()

        th = threading.Thread(target=commit, daemon=True)
        th.start()
        assert not done.wait(COMMIT_BLOCKED_S), "a commit returned with no standby connected"
        waiting = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").fetchone()[0]
        assert waiting == 1

        # s1 back: it streams the WAL, flushes it, and the waiting commit returns.
        server.standbys["s1"].launch()
        assert done.wait(COMMIT_RESUMED_S_MAX), "the commit did not return after a standby came back"
        th.join(COMMIT_RESUMED_S_MAX)
        assert errors == []

    # The standby has the row (hot standby reads; replay may trail the flush a moment).
    deadline = time.monotonic() + COMMIT_RESUMED_S_MAX
    with psycopg.connect(server.standby_conninfo("s1"), autocommit=True) as s1:
        while time.monotonic() < deadline:
            if s1.execute("SELECT count(*) FROM t WHERE id = 3").fetchone()[0] == 1:
                break
            time.sleep(0.1)
        else:
            pytest.fail("standby s1 never showed the committed row")
        assert s1.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
