"""What the commands share: the default cluster directory, the consoles, tables that keep
every digit, and the one place library exceptions become click errors."""
from __future__ import annotations

import functools

import click
from rich.console import Console
from rich.table import Table

from raft_ledger_node.config import ConfigError
from raft_ledger_node.localcluster import ClusterExistsError, LocalClusterError, NoClusterError

DEFAULT_CLUSTER_DIR = "data/cluster"

#: Progress and notes go to stderr; tables and results to stdout.
console = Console(stderr=True)


def table(columns, title: str | None = None) -> Table:
    """A rich Table whose cells fold onto more lines rather than lose characters when the
    terminal is narrow (rich's default cuts them with an ellipsis: 12345… for 1234567)."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def print_table(t: Table) -> None:
    Console().print(t)


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
        except (LocalClusterError, ConfigError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper
