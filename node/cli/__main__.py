"""``python -m raft_ledger_node.cli start --config ...``: how LocalCluster runs a validator."""
from raft_ledger_node.cli import main

main()
