"""Part "pg_sync": what a team would deploy instead of us — PostgreSQL replicating synchronously.

A primary and two hot standbys on 127.0.0.1, each in its own temporary
directory, all with ``fsync=on``: the primary from ``initdb``, each standby from
``pg_basebackup`` of it (``standby.signal``; ``primary_conninfo`` names it
``s1`` or ``s2`` as its ``application_name``) streaming the WAL. Once both stream,
the primary switches to quorum commit, ``synchronous_standby_names = 'ANY 1 (s1, s2)'``
with ``synchronous_commit = on``: a COMMIT returns once its WAL is flushed on the
primary and on at least one standby (PostgreSQL 15 docs, §27.2.8 "Synchronous
Replication") — the durability class of our Raft majority of 3 (a commit survives
the loss of any one of the three machines). Then the same schema, accounts and
transfers as :mod:`node.bench.postgres` (:func:`node.bench.postgres.measure`):
one SQL transaction per batch, and one per transfer. Everything is stopped and
deleted at the end.

Ports: ``base + 311`` (primary), ``+312``, ``+313`` (standbys) of the first free
base from ``--base-port`` in steps of 1000.
"""
from __future__ import annotations

import os
import subprocess
import time

from rich.markup import escape

from raft_ledger_node.bench import ui
from raft_ledger_node.bench.postgres import APT_HINT, PIP_HINT, PORT_BASE_STEP, PORT_PROBES_MAX, _Server, connections_max, \
    find_binaries, measure
from raft_ledger_node.localcluster import reserve_ports

#: Offsets from the port base: primary, standby s1, standby s2.
PORT_OFFSETS = (311, 312, 313)
#: The standbys' application names, and the primary's quorum over them.
STANDBY_NAMES = ("s1", "s2")
SYNCHRONOUS_STANDBY_NAMES = "ANY 1 (s1, s2)"
#: Seconds for both standbys to stream, and then to count as quorum standbys.
STREAMING_S_MAX = 60.0
#: Seconds one pg_basebackup may take (the accounts are loaded after it: the copy is small).
BASEBACKUP_S_MAX = 120.0
POLL_S = 0.1


class ReplicatedServer:
    """A primary and two synchronous standbys (quorum ANY 1), started by :meth:`start`.

    ``ports`` = (primary, s1, s2); ``max_connections`` on all three (a hot standby
    needs at least the primary's). ``conninfo()`` is the primary's; ``pids()`` every
    server process of all three (the CPU the bench counts). :meth:`stop` stops all and
    deletes their directories. Raises subprocess.CalledProcessError when a PostgreSQL
    tool fails, TimeoutError when the standbys do not stream within STREAMING_S_MAX.
    """

    def __init__(self, bindir: str, ports: tuple[int, int, int], *, max_connections: int = 64) -> None:
        self.bindir = bindir
        self.primary = _Server(bindir, ports[0], max_connections=max_connections, prefix="ledger-bench-pgsync-primary-")
        self.standbys = {name: _Server(bindir, port, max_connections=max_connections, prefix=f"ledger-bench-pgsync-{name}-")
                         for name, port in zip(STANDBY_NAMES, ports[1:])}

    def conninfo(self) -> str:
        return self.primary.conninfo()

    def standby_conninfo(self, name: str) -> str:
        return self.standbys[name].conninfo()

    def pids(self) -> list[int]:
        out = []
        for s in (self.primary, *self.standbys.values()):
            try:
                out += s.pids()
            except (OSError, ValueError):  # not running (a test stopped it)
                pass
        return out

    def start(self) -> None:
        import psycopg

        self.primary.start()
        for name, sb in self.standbys.items():
            self._clone(name, sb)
            sb.launch()
        with psycopg.connect(self.conninfo(), autocommit=True) as admin:
            self._wait(admin, lambda rows: all(rows.get(n, ("",))[0] == "streaming" for n in STANDBY_NAMES), "stream")
            admin.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{SYNCHRONOUS_STANDBY_NAMES}'")
            admin.execute("SELECT pg_reload_conf()")
            self._wait(admin, lambda rows: all(rows.get(n, ("", ""))[1] == "quorum" for n in STANDBY_NAMES), "count as quorum standbys")

    def _clone(self, name: str, sb: _Server) -> None:
        p = self.primary
        subprocess.run(sb._cmd([os.path.join(self.bindir, "pg_basebackup"), "-D", sb.data, "-h", "127.0.0.1", "-p", str(p.port),
                                "-U", "bench", "-X", "stream", "-c", "fast", "--no-sync"]),
                       check=True, capture_output=True, timeout=BASEBACKUP_S_MAX)
        signal = os.path.join(sb.data, "standby.signal")
        open(signal, "w").close()
        if p.run_as:
            import pwd

            pw = pwd.getpwnam(p.run_as)
            os.chown(signal, pw.pw_uid, pw.pw_gid)
        sb.settings = {"primary_conninfo": f"host=127.0.0.1 port={p.port} user=bench application_name={name}",
                       "hot_standby": "on"}

    @staticmethod
    def replication(admin) -> dict[str, tuple[str, str]]:
        """application_name -> (state, sync_state) from the primary's pg_stat_replication."""
        return {n: (st, sync) for n, st, sync in
                admin.execute("SELECT application_name, state, sync_state FROM pg_stat_replication").fetchall()}

    def _wait(self, admin, ok, what: str) -> None:
        deadline = time.monotonic() + STREAMING_S_MAX
        rows: dict = {}
        while time.monotonic() < deadline:
            rows = self.replication(admin)
            if ok(rows):
                return
            time.sleep(POLL_S)
        raise TimeoutError(f"standbys {', '.join(STANDBY_NAMES)} did not {what} within {STREAMING_S_MAX:.0f}s: {rows}")

    def stop(self) -> None:
        for s in (*self.standbys.values(), self.primary):
            try:
                s.stop()
            except Exception as e:  # stop the others anyway
                ui.warn(escape(f"stopping PostgreSQL in {s.dir}: {type(e).__name__}: {e}"))


def run(cfg, wl, work_dir: str) -> dict:
    bindir = find_binaries()
    if bindir is None:
        ui.warn(f"PostgreSQL binaries not found: synchronous replication skipped. Install them with:\n    {escape(APT_HINT)}")
        return {"skipped": f"PostgreSQL binaries not found; install: {APT_HINT}"}
    try:
        import psycopg
    except ImportError:
        ui.warn(f"psycopg (3) not installed: PostgreSQL skipped. Install it with:\n    {escape(PIP_HINT)}")
        return {"skipped": f"psycopg not installed; {PIP_HINT}"}
    with reserve_ports(PORT_OFFSETS, start=cfg.base_port, step=PORT_BASE_STEP, probes_max=PORT_PROBES_MAX) as res:
        ports = tuple(res.ports)
        server = ReplicatedServer(bindir, ports, max_connections=connections_max(cfg))
        ui.step(f"PostgreSQL primary on 127.0.0.1:{ports[0]} + standbys s1 :{ports[1]}, s2 :{ports[2]} (pg_basebackup, streaming), "
                f"synchronous_standby_names = '{SYNCHRONOUS_STANDBY_NAMES}', synchronous_commit=on, fsync=on")
        out: dict = {"bindir": bindir, "ports": list(ports), "synchronous_standby_names": SYNCHRONOUS_STANDBY_NAMES}
        try:
            server.start()
            with psycopg.connect(server.conninfo(), autocommit=True) as admin:
                out["replication_at_start"] = server.replication(admin)
            measure(psycopg, server, cfg, wl, out, "PostgreSQL sync-rep", cfg.pg_sync_transfers, cfg.pg_sync_single_transfers)
            with psycopg.connect(server.conninfo(), autocommit=True) as admin:
                out["replication_at_end"] = server.replication(admin)
        except subprocess.CalledProcessError as e:
            detail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
            ui.warn(escape(f"PostgreSQL replication failed to start: {' / '.join(detail)}"))
            out["skipped"] = f"servers did not start: {' / '.join(detail)}"
        finally:
            ui.note("stopping PostgreSQL primary and standbys")
            server.stop()
    return out
