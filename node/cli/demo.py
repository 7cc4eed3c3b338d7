"""The demo command: the README's main job on a fresh local cluster."""
from __future__ import annotations

import subprocess
import sys

import click

from raft_ledger_node.cli.common import console, translate_errors
from raft_ledger_node.cli.operator import print_status
from raft_ledger_node.localcluster import LocalCluster, init_cluster

#: The demo's cluster: three validators on the README's ports, two member banks.
DEMO_VALIDATORS = 3
DEMO_MEMBERS = ("bank-a", "bank-b")
DEMO_HOST = "127.0.0.1"
DEMO_BASE_PORT = 7100


@click.command()
@click.option("--dir", "directory", default="data/demo", show_default=True, help="Cluster and data directory.")
@click.option("--accounts", default=1000, show_default=True, help="Accounts opened (split across members and ledgers).")
@click.option("--transfers", default=100_000, show_default=True, help="Transfers to submit.")
@click.option("--batch", default=100, show_default=True, help="Transfers per signed transaction.")
@click.option("--concurrency", default=8, show_default=True, help="Concurrent submitting clients.")
@click.option("--zipf", default=1.1, show_default=True, help="Zipf exponent of account popularity.")
@click.option("--seed", default=1, show_default=True)
@click.option("--keep-running", is_flag=True, help="Leave the validators running when the workload is done.")
@translate_errors
def demo(directory, accounts, transfers, batch, concurrency, zipf, seed, keep_running):
    """Start a fresh local 3-validator cluster and drive a bank workload through the SDK."""
    init_cluster(directory, DEMO_VALIDATORS, list(DEMO_MEMBERS), DEMO_HOST, DEMO_BASE_PORT, force=True)
    cluster = LocalCluster(directory)
    console.print(f"[bold]starting 3 validators[/] (data and logs under {directory}/)")
    cluster.start_all()
    try:
        cluster.wait_ready()
        print_status(directory, as_json=False)
        rc = subprocess.call(
            [
                sys.executable, "-m", "raft_ledger_node.workload",
                "--cluster", directory,
                "--accounts", str(accounts),
                "--transfers", str(transfers),
                "--batch", str(batch),
                "--concurrency", str(concurrency),
                "--zipf", str(zipf),
                "--seed", str(seed),
            ]
        )
        print_status(directory, as_json=False)
        if rc != 0:
            raise click.ClickException(f"workload failed with exit code {rc}")
    finally:
        if keep_running:
            pids = ", ".join(f"{v}={p.pid}" for v, p in cluster.procs.items())
            console.print(f"validators left running (PIDs {pids}); stop them with `kill <pid>`")
        else:
            console.print("stopping validators")
            cluster.stop_all()
