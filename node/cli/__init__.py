"""ledger-validator: the node operator's CLI.

Commands: init-cluster, start, status, health, signing-key (operator.py), member (member.py), gov and ca
(gov.py), validator add|remove|replace|format (validator.py), demo
(demo.py), bench (bench.py), audit (with export, verify-export) and verify-receipt (audit.py), cdc-sink (cdc.py). Every command has --help. The commands only
translate: they parse options, call the libraries (raft_ledger_node.localcluster,
raft_ledger_node.main, raft_ledger_node.bench, the SDK) and print; library
exceptions become click errors here (common.py). Nothing outside this package
imports it.
"""
from __future__ import annotations

import click

from raft_ledger_node.cli import audit, bench, cdc, demo, gov, member, operator, validator
from raft_ledger_node.cli.common import EXIT_CODES_HELP


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
def main() -> None:
    """Run and operate validators of the Raft-replicated ledger."""


for _command in (operator.init_cluster_cmd, operator.start, operator.status, operator.health, operator.signing_key,
                 member.member, gov.gov, gov.ca, validator.validator, demo.demo,
                 bench.bench, audit.audit, audit.verify_receipt, cdc.cdc_sink):
    main.add_command(_command)

__all__ = ["main"]
