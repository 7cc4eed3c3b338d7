"""What the commands share: the default cluster directory, the console, tables that keep
every digit (node/tables.py), and the one place library exceptions become click errors."""
from __future__ import annotations

import functools

import click
from rich.console import Console

from raft_ledger_client import LedgerError, TransactionRejected
from raft_ledger_node.config import ConfigError
from raft_ledger_node.localcluster import ClusterExistsError, LocalClusterError, NoClusterError
from raft_ledger_node.reconfigure import ReconfigurationError
from raft_ledger_node.tables import print_table, table

__all__ = ["DEFAULT_CLUSTER_DIR", "console", "print_table", "table", "translate_errors"]

DEFAULT_CLUSTER_DIR = "data/cluster"

#: Progress and notes go to stderr; tables and results to stdout.
console = Console(stderr=True)


def translate_errors(fn):
    """Turn the libraries' exceptions into click errors (exit code 1 with the message)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ClusterExistsError as e:
            raise click.ClickException(f"{e}; use --force to replace it (its data is deleted)") from None
        except NoClusterError as e:
            raise click.ClickException(f"{e}; run `ledger-validator init-cluster --dir {e.directory}` first") from None
        except (LocalClusterError, ConfigError, ReconfigurationError) as e:
            raise click.ClickException(str(e)) from None
        except TransactionRejected as e:
            raise click.ClickException(f"refused by the ledger: {e.rejection.name} ({e})") from None
        except LedgerError as e:  # the SDK's tree: PermissionDenied, NotSubmitted, InvalidRequest, ...
            raise click.ClickException(f"{type(e).__name__}: {e}") from None

    return wrapper
