"""The benchmark command (issue 5's measuring stick): options in, raft_ledger_node.bench.runner out."""
from __future__ import annotations

import click


@click.command()
@click.option("--accounts", default=10_000, show_default=True, help="Accounts the transfers move between.")
@click.option("--skew", type=click.Choice(["uniform", "zipf"]), default="uniform", show_default=True, help="Account popularity.")
@click.option("--zipf-exponent", default=1.1, show_default=True, help="s of P(rank k) ∝ 1/(k+1)^s with --skew zipf.")
@click.option("--batch", default=100, show_default=True, help="Transfers per signed transaction (and per PostgreSQL transaction).")
@click.option("--concurrency", default=8, show_default=True, help="Concurrent clients (SDK threads, Raft proposers, SQL connections).")
@click.option("--transfers", type=int, default=None, help="Transfers at peak load on our cluster [100,000; --quick 30,000].")
@click.option("--half-load-transfers", type=int, default=None, help="Transfers at half the peak rate, 0 = skip [60,000; --quick 15,000].")
@click.option("--raft-entries", type=int, default=None, help="Entries for bare pysyncobj, one batch each [2,000; --quick 1,000].")
@click.option("--pg-transfers", type=int, default=None, help="PostgreSQL transfers, one SQL transaction per batch [100,000; --quick 30,000].")
@click.option("--pg-single-transfers", type=int, default=None, help="PostgreSQL transfers, one SQL transaction each, at --single-concurrency connections, 0 = skip [20,000; --quick 8,000].")
@click.option("--history-max", type=click.Choice(["10000", "100000", "1000000", "10000000"]), default=None,
              help="Largest stored history measured [1000000; --quick 100000]. 10000000 (an 8 GB RocksDB) takes about 5 minutes more.")
@click.option("--quick", is_flag=True, help="About 2 minutes: smaller counts (explicit options still win).")
@click.option("--skip-ours", is_flag=True, help="Skip our cluster.")
@click.option("--skip-raft", is_flag=True, help="Skip bare pysyncobj.")
@click.option("--skip-crypto", is_flag=True, help="Skip the Ed25519 rates.")
@click.option("--skip-postgres", is_flag=True, help="Skip PostgreSQL.")
@click.option("--skip-history", is_flag=True, help="Skip history growth.")
@click.option("--skip-proofs", is_flag=True, help="Skip proof sizes and verification costs.")
@click.option("--proofs-size", type=int, default=None, help="Transactions in the log the proof costs are measured at [1,000,000; --quick 100,000].")
@click.option("--skip-membership", is_flag=True, help="Skip the validator membership changes.")
@click.option("--membership-stored", type=int, default=None,
              help="Transfers stored before validators are added, removed and replaced [1,000,000; --quick 100,000].")
@click.option("--profile", is_flag=True, help="py-spy the leader during the peak phase; pyinstrument the core apply.")
@click.option("--out", "out_dir", default="data/bench", show_default=True, help="Where the JSON, table and latency plot go.")
@click.option("--base-port", default=21100, show_default=True, help="First port tried (gRPC base+1.., Raft base+101.., bare Raft base+201.., PostgreSQL base+300).")
@click.option("--seed", default=1, show_default=True, help="Workload seed (every part sees the same transfers).")
@click.option("--keep-data", is_flag=True, help="Keep the temporary cluster, journals and logs.")
@click.option("--single-transfers", type=int, default=None,
              help="One transfer per request through one shared SDK client from --single-concurrency threads, and PostgreSQL's "
                   "transaction per transfer at as many connections, 0 = skip [20,000; --quick 5,000].")
@click.option("--single-concurrency", type=int, default=None, help="Callers of the one-transfer-per-request phase [64].")
@click.option("--single-in-flight", type=int, default=None,
              help="Submits the shared client keeps in flight in the one-transfer-per-request phases "
                   "(the SDK's coalesce_in_flight_max) [1].")
@click.option("--single-sweep-transfers", type=int, default=None,
              help="One transfer per request at 1 and at 8 callers (transfers per Raft entry at each), 0 = skip [2,000; --quick 500].")
@click.option("--single-half-load-transfers", type=int, default=None,
              help="One transfer per request at half that phase's peak (open loop), 0 = skip [10,000; --quick 3,000].")
@click.option("--pg-sync-transfers", type=int, default=None,
              help="PostgreSQL primary + 2 synchronous standbys (ANY 1): transfers, one SQL transaction per batch, 0 = skip [50,000; --quick 10,000].")
@click.option("--pg-sync-single-transfers", type=int, default=None,
              help="The same, one SQL transaction per transfer at --single-concurrency connections, 0 = skip [10,000; --quick 3,000].")
@click.option("--skip-pg-sync", is_flag=True, help="Skip PostgreSQL with synchronous replication.")
def bench(accounts, skew, zipf_exponent, batch, concurrency, transfers, half_load_transfers, raft_entries, pg_transfers,
          pg_single_transfers, history_max, quick, skip_ours, skip_raft, skip_crypto, skip_postgres, skip_history, skip_proofs,
          skip_membership, membership_stored, proofs_size, profile, out_dir, base_port, seed, keep_data,
          single_transfers, single_concurrency, single_in_flight, single_sweep_transfers, single_half_load_transfers, pg_sync_transfers,
          pg_sync_single_transfers, skip_pg_sync):
    """Benchmark our cluster against bare pysyncobj, Ed25519 and PostgreSQL on one workload (issue 5).

    Runs one after the other: a fresh 3-validator cluster on 127.0.0.1 driven
    through the SDK; a bare pysyncobj cluster replicating the same bytes with the
    same journal settings; Ed25519 verification rates; PostgreSQL (Debian's
    package, started in a temporary directory) executing the same transfers as
    double-entry SQL transactions; and the CPU cost per transfer as stored
    history grows; then adds, removes and replaces validators of a cluster holding
    --membership-stored transfers, with the write availability during each change.
    Prints one table, writes JSON, text and a latency plot to --out.
    """
    from raft_ledger_node.bench.config import BenchConfig
    from raft_ledger_node.bench.runner import run

    given = {
        "transfers": transfers, "half_load_transfers": half_load_transfers, "raft_entries": raft_entries,
        "pg_transfers": pg_transfers, "pg_single_transfers": pg_single_transfers,
        "history_max": int(history_max) if history_max else None, "proofs_size": proofs_size,
        "membership_stored": membership_stored,
        "single_transfers": single_transfers, "single_concurrency": single_concurrency,
        "single_in_flight": single_in_flight,
        "single_sweep_transfers": single_sweep_transfers, "single_half_load_transfers": single_half_load_transfers,
        "pg_sync_transfers": pg_sync_transfers, "pg_sync_single_transfers": pg_sync_single_transfers,
    }
    kw = dict(
        accounts=accounts, skew=skew, zipf_exponent=zipf_exponent, batch=batch, concurrency=concurrency, profile=profile,
        out_dir=out_dir, base_port=base_port, seed=seed, keep_data=keep_data,
        skip=frozenset(n for n, f in (("ours", skip_ours), ("raft", skip_raft), ("crypto", skip_crypto),
                                      ("postgres", skip_postgres), ("history", skip_history),
                                      ("proofs", skip_proofs), ("membership", skip_membership),
                                      ("pg_sync", skip_pg_sync)) if f),
        **{k: v for k, v in given.items() if v is not None},
    )
    try:
        cfg = BenchConfig.quick(**kw) if quick else BenchConfig(**kw)
    except ValueError as e:
        raise click.UsageError(str(e))
    run(cfg)
