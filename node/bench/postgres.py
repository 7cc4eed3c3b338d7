"""Part 4: what a user would pick instead — PostgreSQL executing the same transfers.

Debian's PostgreSQL binaries (``/usr/lib/postgresql/<version>/bin``) are run
by the benchmark: ``initdb`` into a temporary data directory, ``pg_ctl start``
listening on 127.0.0.1 and a free port, with ``fsync=on`` and
``synchronous_commit=on`` (a COMMIT returns once its WAL is flushed, as our
Submit returns once its block is committed by a majority with fsynced
journals). As root, the server runs as the ``postgres`` user (initdb refuses
root). It is stopped at the end and its directory deleted.

Schema: ``accounts`` (bigint balances in minor units, a limit flag) and
``transfers`` (primary key on the id, foreign keys to both accounts, an index
per account side for history queries — what the ledger's ``account_transfers``
index gives). Two ways to run the same transfers with ``concurrency``
connections (psycopg 3):

* **batch**: one SQL transaction per signed batch of the workload: lock every
  account row of the batch in id order (``SELECT ... ORDER BY id FOR UPDATE``),
  check each transfer's balance limits in order, update each touched account
  once, insert the transfer rows (``executemany``, pipelined). The same unit of
  commit as ours, so the ratio of the issue is taken against this.
* **single**: one SQL transaction per transfer — lock both rows in id order,
  check, update both, insert — what most applications do; from
  ``single_concurrency`` connections (``max_connections`` is set to fit,
  :func:`connections_max`), on the transfers our one-per-request phase submits.

A count of 0 skips its phase. :func:`measure` is shared with
:mod:`node.bench.pg_sync` (a primary replicating synchronously to two standbys).
"""
from __future__ import annotations

import glob
import math
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time

from rich.markup import escape

from raft_ledger_node.bench import ui
from raft_ledger_node.bench.measure import CpuMeter, children, cpu_seconds, latency_summary
from raft_ledger_node.bench.workload import ACCOUNT_CODE, LEDGER, TRANSFER_CODE, member_names, owner_index
from raft_ledger_node.localcluster import reserve_ports

APT_HINT = "sudo apt-get install -y postgresql   (Debian/Ubuntu; the benchmark runs its own server, no service needed)"
PIP_HINT = "pip install -e '.[bench]'   (or: pip install 'psycopg[binary]')"
PROGRESS_PERIOD_S = 0.5
#: The server listens on base+300 of the first base (--base-port, +1000, ...) found free.
PORT_OFFSET = 300
PORT_BASE_STEP = 1000
PORT_PROBES_MAX = 20
#: Connections beyond the clients' (the admin connection, psql by hand, superuser reserve).
CONNECTIONS_SPARE = 8
FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS = 2
FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS = 4

SCHEMA = """
CREATE TABLE accounts (
    id              bigint PRIMARY KEY,
    ledger          integer NOT NULL,
    code            integer NOT NULL,
    flags           integer NOT NULL DEFAULT 0,
    owner           text    NOT NULL,
    debits_pending  bigint  NOT NULL DEFAULT 0,
    debits_posted   bigint  NOT NULL DEFAULT 0,
    credits_pending bigint  NOT NULL DEFAULT 0,
    credits_posted  bigint  NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE transfers (
    id                bigint PRIMARY KEY,
    debit_account_id  bigint  NOT NULL REFERENCES accounts (id),
    credit_account_id bigint  NOT NULL REFERENCES accounts (id),
    amount            bigint  NOT NULL CHECK (amount > 0),
    ledger            integer NOT NULL,
    code              integer NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transfers_debit ON transfers (debit_account_id, created_at);
CREATE INDEX transfers_credit ON transfers (credit_account_id, created_at);
"""

_LOCK_BATCH = "SELECT id, flags, debits_posted, credits_posted FROM accounts WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
_LOCK_PAIR = "SELECT id, flags, debits_posted, credits_posted FROM accounts WHERE id IN (%s, %s) ORDER BY id FOR UPDATE"
_SET_BALANCES = "UPDATE accounts SET debits_posted = %s, credits_posted = %s WHERE id = %s"
_DEBIT = "UPDATE accounts SET debits_posted = debits_posted + %s WHERE id = %s"
_CREDIT = "UPDATE accounts SET credits_posted = credits_posted + %s WHERE id = %s"
_INSERT = f"INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, ledger, code) VALUES (%s, %s, %s, %s, {LEDGER}, {TRANSFER_CODE})"


def find_binaries() -> str | None:
    """The newest Debian PostgreSQL bin directory, or one on PATH; None if absent."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    pg_ctl = shutil.which("pg_ctl")
    return os.path.dirname(pg_ctl) if pg_ctl else None


def connections_max(cfg) -> int:
    """``max_connections`` for a run: every client connection (the batch phase's
    ``concurrency``, the per-transfer phase's ``single_concurrency``), the admin one, and
    spare (walsenders have their own slots since PostgreSQL 12)."""
    return max(cfg.concurrency, cfg.single_concurrency) + CONNECTIONS_SPARE


class _Server:
    """One PostgreSQL server in a fresh temporary directory (``dir``; data in ``dir/data``).

    ``settings`` are appended to its ``postgresql.conf`` before it starts (values
    quoted as the file wants). Raises subprocess.CalledProcessError when initdb or
    pg_ctl fails, RuntimeError as root without a ``postgres`` user.
    """

    def __init__(self, bindir: str, port: int, *, max_connections: int = 64, settings: dict | None = None,
                 prefix: str = "ledger-bench-pg-") -> None:
        self.bindir = bindir
        self.port = port
        self.max_connections = max_connections
        self.settings = dict(settings or {})
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.run_as = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no `postgres` user to run the server as "
                                   "(initdb refuses root); run the benchmark as a normal user") from None
            self.run_as = "postgres"
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _cmd(self, argv: list[str]) -> list[str]:
        return (["runuser", "-u", self.run_as, "--"] + argv) if self.run_as else argv

    def start(self) -> None:
        self.initdb()
        self.launch()

    def initdb(self) -> None:
        subprocess.run(self._cmd([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "bench", "-A", "trust",
                                  "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)

    def launch(self) -> None:
        """``pg_ctl start`` on the existing data directory (waits until it accepts connections)."""
        if self.settings:
            with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
                f.write("\n# ledger bench\n" + "".join(f"{k} = '{v}'\n" for k, v in self.settings.items()))
            self.settings = {}  # written once: a relaunch reuses the file
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} "
                f"-c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections={self.max_connections}")
        subprocess.run(self._cmd([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "60", "start"]),
                       check=True, capture_output=True)

    def postmaster_pid(self) -> int:
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def pids(self) -> list[int]:
        pm = self.postmaster_pid()
        return [pm] + children(pm)

    def halt(self) -> None:
        """``pg_ctl stop -m fast``, keeping the data directory (``launch`` starts it again)."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run(self._cmd([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop"]),
                           capture_output=True, timeout=90)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)

    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=bench dbname=postgres"


def _txn_batch(conn, rows) -> int:
    """One batch in one SQL transaction; returns transfers accepted."""
    ids = sorted({r[1] for r in rows} | {r[2] for r in rows})
    with conn.transaction():
        cur = conn.cursor()
        acct = {i: [f, d, c] for i, f, d, c in cur.execute(_LOCK_BATCH, (ids,)).fetchall()}
        accepted = []
        for tid, dr, cr, amount in rows:
            a, b = acct.get(dr), acct.get(cr)
            if a is None or b is None:
                continue
            if a[0] & FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS and a[1] + amount > a[2]:
                continue
            if b[0] & FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS and b[2] + amount > b[1]:
                continue
            a[1] += amount
            b[2] += amount
            accepted.append((tid, dr, cr, amount))
        touched = sorted({r[1] for r in accepted} | {r[2] for r in accepted})
        cur.executemany(_SET_BALANCES, [(acct[i][1], acct[i][2], i) for i in touched])
        cur.executemany(_INSERT, accepted)
    return len(accepted)


def _txn_single(conn, row) -> int:
    tid, dr, cr, amount = row
    with conn.transaction():
        cur = conn.cursor()
        acct = {i: (f, d, c) for i, f, d, c in cur.execute(_LOCK_PAIR, (dr, cr)).fetchall()}
        a, b = acct.get(dr), acct.get(cr)
        if a is None or b is None:
            return 0
        if a[0] & FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS and a[1] + amount > a[2]:
            return 0
        if b[0] & FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS and b[2] + amount > b[1]:
            return 0
        cur.execute(_DEBIT, (amount, dr))
        cur.execute(_CREDIT, (amount, cr))
        cur.execute(_INSERT, row)
    return 1


def _drive(conns, units, fn, label: str, transfers_per_unit: int, server: _Server) -> dict:
    latencies = [float("nan")] * len(units)
    lock = threading.Lock()
    nxt = iter(range(len(units)))
    state = {"done": 0, "ok": 0, "errors": []}
    meter = CpuMeter(server.pids)
    me0 = cpu_seconds(os.getpid()) or 0.0

    def worker(conn) -> None:
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            t = time.monotonic()
            try:
                n = fn(conn, units[i])
            except Exception as e:  # deadlock or serialization failure: count it, keep going
                with lock:
                    state["errors"].append(f"{type(e).__name__}: {e}")
                    state["done"] += 1
                    state["last_done"] = max(state["last_done"], time.monotonic())
                continue
            end = time.monotonic()
            latencies[i] = end - t
            with lock:
                state["done"] += 1
                state["ok"] += n
                state["last_done"] = max(state["last_done"], end)

    meter.start()
    t0 = time.monotonic()
    state["last_done"] = t0
    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in conns]
    for th in threads:
        th.start()
    with ui.progress(label, len(units) * transfers_per_unit) as update:
        while any(th.is_alive() for th in threads):
            time.sleep(PROGRESS_PERIOD_S)
            done = state["done"] * transfers_per_unit
            update(done, done / (time.monotonic() - t0))
        for th in threads:
            th.join()
        # The last completion, not now: the loop above wakes every PROGRESS_PERIOD_S.
        elapsed = state["last_done"] - t0
        update(state["done"] * transfers_per_unit, state["done"] * transfers_per_unit / elapsed)
    cpu = meter.stop()
    client_cpu = (cpu_seconds(os.getpid()) or 0.0) - me0
    n = len(units) * transfers_per_unit
    return {
        "transfers": n,
        "transfers_ok": state["ok"],
        "units_failed": len(state["errors"]),
        "errors": state["errors"][:5],
        "elapsed_s": elapsed,
        "transfers_per_s": n / elapsed,
        "latency": latency_summary([x for x in latencies if x == x]),
        "latencies_s": [x for x in latencies if x == x],
        "cpu_s": cpu,
        "cpu_us_per_transfer": cpu / n * 1e6,
        "client_cpu_s": client_cpu,
        "client_cpu_us_per_transfer": client_cpu / n * 1e6,
        "machine_cpu_s": meter.machine_seconds,
        "other_cpu_s": None if meter.machine_seconds is None else max(0.0, meter.machine_seconds - cpu - client_cpu),
    }


def run(cfg, wl, work_dir: str) -> dict:
    bindir = find_binaries()
    if bindir is None:
        ui.warn(f"PostgreSQL binaries not found: skipped. Install them with:\n    {escape(APT_HINT)}")
        return {"skipped": f"PostgreSQL binaries not found; install: {APT_HINT}"}
    try:
        import psycopg
    except ImportError:
        ui.warn(f"psycopg (3) not installed: PostgreSQL skipped. Install it with:\n    {escape(PIP_HINT)}")
        return {"skipped": f"psycopg not installed; {PIP_HINT}"}
    # Held until the server is stopped, so a concurrent run cannot pick the same port.
    reservation = reserve_ports([PORT_OFFSET], start=cfg.base_port, step=PORT_BASE_STEP, probes_max=PORT_PROBES_MAX)
    port = reservation.ports[0]
    server = _Server(bindir, port, max_connections=connections_max(cfg))
    ui.step(f"PostgreSQL ({bindir}) on 127.0.0.1:{port}, data in {server.dir}, fsync=on, synchronous_commit=on")
    out: dict = {"bindir": bindir, "port": port}
    try:
        server.start()
        measure(psycopg, server, cfg, wl, out, "PostgreSQL", cfg.pg_transfers, cfg.pg_single_transfers)
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        ui.warn(escape(f"PostgreSQL failed to start: {' / '.join(detail)} (log: {server.log})"))
        out["skipped"] = f"server did not start: {' / '.join(detail)}"
    finally:
        ui.note("stopping PostgreSQL")
        try:
            server.stop()
        finally:
            reservation.release()
    return out


#: Settings reported with the PostgreSQL rows.
SHOWN_SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes", "shared_buffers", "max_connections",
                  "synchronous_standby_names")


def measure(psycopg, server, cfg, wl, out: dict, label: str, batch_transfers: int, single_transfers: int) -> None:
    """Load the schema and accounts into ``server`` (anything with ``conninfo()`` and
    ``pids()``: one server, or a primary with standbys) and run the transfers into
    ``out``: ``batch`` (one SQL transaction per batch of ``cfg.batch``, ``cfg.concurrency``
    connections) unless ``batch_transfers`` is 0, then ``single`` (one SQL transaction
    per transfer, ``cfg.single_concurrency`` connections, member 0's transfers as our
    one-per-request phase submits) unless ``single_transfers`` is 0; then ``check``.
    Raises psycopg errors when the server refuses the setup."""
    conns = []
    admin = psycopg.connect(server.conninfo(), autocommit=True)
    try:
        out["version"] = admin.execute("SHOW server_version").fetchone()[0]
        out["settings"] = {k: admin.execute(f"SHOW {k}").fetchone()[0] for k in SHOWN_SETTINGS}
        admin.execute(SCHEMA)
        names = member_names(cfg.members)
        with admin.cursor().copy("COPY accounts (id, ledger, code, owner) FROM STDIN") as cp:
            for a in range(1, cfg.accounts + 1):
                cp.write_row((a, LEDGER, ACCOUNT_CODE, names[owner_index(a, cfg.members)]))
        admin.execute("ANALYZE")
        n_conns = max(cfg.concurrency if batch_transfers else 0, cfg.single_concurrency if single_transfers else 0)
        ui.note(f"{label} {out['version']}: {cfg.accounts:,} accounts loaded; {n_conns} connections")
        conns = [psycopg.connect(server.conninfo()) for _ in range(n_conns)]
        n_batches = math.ceil(batch_transfers / cfg.batch)
        if batch_transfers:
            batches = [b.transfers for b in wl.batches(0, n_batches)]
            out["batch"] = _drive(conns[: cfg.concurrency], batches, _txn_batch, f"{label} batch", cfg.batch, server)
            out["batch"]["connections"] = cfg.concurrency
            ui.note(_line(out["batch"], f"per SQL transaction of {cfg.batch}, {cfg.concurrency} connections"))
        if single_transfers:
            # The stream our one-per-request phases submit, unless the batches above reach into it.
            singles = wl.member_rows(0, max(n_batches, cfg.ours_batches()), single_transfers)
            out["single"] = _drive(conns[: cfg.single_concurrency], singles, _txn_single, f"{label} single", 1, server)
            out["single"]["connections"] = cfg.single_concurrency
            ui.note(_line(out["single"], f"per SQL transaction of 1 transfer, {cfg.single_concurrency} connections"))
        total = admin.execute("SELECT sum(debits_posted), sum(credits_posted), (SELECT sum(amount) FROM transfers) FROM accounts").fetchone()
        out["check"] = {"debits": int(total[0]), "credits": int(total[1]), "transferred": int(total[2] or 0),
                        "balanced": total[0] == total[1] == (total[2] or 0)}
    finally:
        for c in conns:
            c.close()
        admin.close()


def _line(r: dict, what: str) -> str:
    lat = r["latency"]
    return (f"{r['transfers_per_s']:,.0f} transfers/s ({what}); latency p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms; "
            f"{r['cpu_us_per_transfer']:.0f} µs server CPU/transfer"
            + (f"; [yellow]{r['units_failed']} transactions failed: {escape(str(r['errors'][:1]))}[/]" if r["units_failed"] else ""))
