"""The pysyncobj 0.3.17 adapter: what the library does not give, one room per job.

==============  ================================================================
module          job
==============  ================================================================
wire.py         LedgerConnection, LedgerServer: frame caps before buffering, accept errors
tls.py          TlsConnection: mutual TLS 1.3 on every Raft link, peers pinned to genesis
journal.py      DurableFileJournal, DurableMetaStorer: fsync before any ack (§5.1)
transport.py    LedgerTransport: flush before reply, §5.3 truncation fix, nextIndex
                never lowered on success, peer dial addresses
durable.py      DurableReplica: the journal/transport wiring and typed ``status()``;
                shared by the validator and the bare-pysyncobj benchmark
replica.py      LedgerReplica: ``apply_entry(bytes)`` over the state machine
                (node/state_machine.py), propose, read barrier, fail-stop
snapshot.py     the snapshot file: magic + header + tar of a RocksDB checkpoint
conf.py         make_conf: every pysyncobj setting the adapter relies on
==============  ================================================================

See ../shared/design.md and ../shared/pysyncobj-seams.md for the library's facts.
"""
