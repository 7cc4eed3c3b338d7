"""What the commands share: the default cluster directory, the console, tables that keep
every digit (node/tables.py), the exit codes, and the one place library exceptions
become click errors."""
from __future__ import annotations

import enum
import functools
import json

import click
from rich.console import Console

from raft_ledger_client import LedgerError, TransactionRejected, TransportError
from raft_ledger_node.config import ConfigError
from raft_ledger_node.localcluster import ClusterExistsError, LocalClusterError, NoClusterError
from raft_ledger_node.reconfigure import ReconfigurationError
from raft_ledger_node.tables import print_table, table

__all__ = ["DEFAULT_CLUSTER_DIR", "EXIT_CODES_HELP", "CliError", "ExitCode", "console", "echo_json", "json_option",
           "print_table", "table", "translate_errors"]

DEFAULT_CLUSTER_DIR = "data/cluster"

#: Progress and notes go to stderr; tables and results to stdout.
console = Console(stderr=True)


class ExitCode(enum.IntEnum):
    """Exit codes of every ledger-validator command (the main group's --help and the
    README list them). ``health`` answers 0/1 only (an exec probe: 1 = not SERVING, for
    any reason); ``start`` also exits 74 (EX_IOERR) when its storage fails."""

    OK = 0
    #: The operation failed or a check did not pass: refused by the ledger or its
    #: access rules, an inconsistency found, an export or receipt not verified.
    ERROR = 1
    #: Usage or configuration: bad options, a missing or unreadable cluster directory,
    #: config, genesis or key file (click's own usage errors are 2 as well).
    USAGE = 2
    #: ``start``: this validator is not in the governed validator set.
    NOT_A_VALIDATOR = 3
    #: No validator answered (unreachable, timed out): the outcome of a write is unknown.
    UNAVAILABLE = 4


EXIT_CODES_HELP = (
    "\b\n"
    "Exit codes (every command):\n"
    "  0  ok\n"
    "  1  error: the operation failed or a check did not pass (refused by the\n"
    "     ledger, an inconsistency, an export or receipt not verified)\n"
    "  2  usage or configuration: bad options; a missing or unreadable cluster\n"
    "     directory, config, genesis or key file\n"
    "  3  not a validator: `start` of a validator outside the governed set\n"
    "  4  unavailable: no validator answered in time (a write's outcome unknown)\n"
    "  `health` answers 0 (SERVING) or 1 (anything else); `start` exits 74 when\n"
    "  its storage fails (disk full, I/O error) and 65 when its data directory\n"
    "  fails the start-up integrity check; `status --watch` exits 0 on Ctrl-C."
)


class CliError(click.ClickException):
    """A click error with one of :class:`ExitCode` (ClickException is always 1)."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.exit_code = int(exit_code)


#: ``--json`` for read commands: machine-readable output on stdout, notes on stderr.
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of a table.")


def echo_json(value) -> None:
    """Print ``value`` as indented JSON on stdout (bytes as hex; ints stay exact)."""
    click.echo(json.dumps(value, indent=2, default=lambda o: o.hex() if isinstance(o, (bytes, bytearray)) else str(o)))


def translate_errors(fn):
    """Turn the libraries' exceptions into click errors with the exit codes of
    :class:`ExitCode` (the message is printed on stderr)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ClusterExistsError as e:
            raise click.ClickException(f"{e}; use --force to replace it (its data is deleted)") from None
        except NoClusterError as e:
            raise CliError(f"{e}; run `ledger-validator init-cluster --dir {e.directory}` first", ExitCode.USAGE) from None
        except ConfigError as e:
            raise CliError(str(e), ExitCode.USAGE) from None
        except (LocalClusterError, ReconfigurationError) as e:
            raise click.ClickException(str(e)) from None
        except TransactionRejected as e:
            raise click.ClickException(f"refused by the ledger: {e.rejection.name} ({e})") from None
        except TransportError as e:  # Timeout, Unavailable: nobody answered
            raise CliError(f"{type(e).__name__}: {e}", ExitCode.UNAVAILABLE) from None
        except LedgerError as e:  # the SDK's tree: PermissionDenied, NotSubmitted, InvalidRequest, ...
            raise click.ClickException(f"{type(e).__name__}: {e}") from None

    return wrapper
