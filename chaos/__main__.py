from raft_ledger_chaos.cli import main

main()
