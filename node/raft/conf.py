"""make_conf: the pysyncobj configuration of a validator (and of the bare-pysyncobj baseline)."""
from __future__ import annotations

from pysyncobj import SyncObjConf

from raft_ledger_node.ledger import limits


def make_conf(
    *,
    journal_file: str,
    full_dump_file: str,
    password: str,
    bind_address: str | None = None,
    append_entries_period_s: float = 0.05,
    raft_min_timeout_s: float = 0.4,
    raft_max_timeout_s: float = 1.4,
    leader_fallback_timeout_s: float = 3.0,
    log_compaction_min_entries: int = 10_000,
    log_compaction_min_time_s: float = 3600.0,
    connection_retry_time_s: float = 1.0,
    on_state_changed=None,
) -> SyncObjConf:
    """pysyncobj configuration with every setting the adapter relies on made explicit.

    Log compaction runs when the journal holds more than
    ``log_compaction_min_entries`` entries or ``log_compaction_min_time_s`` passed;
    the snapshot is a RocksDB checkpoint (see raft/snapshot.py). ``appendEntriesUseBatch=False``: our batcher makes few large entries,
    so each is sent at once instead of waiting for the next period.
    """
    return SyncObjConf(
        journalFile=journal_file,
        fullDumpFile=full_dump_file,
        password=password,
        bindAddress=bind_address,
        appendEntriesUseBatch=False,
        appendEntriesPeriod=append_entries_period_s,
        appendEntriesBatchSizeBytes=limits.raft_append_entries_bytes_max,
        raftMinTimeout=raft_min_timeout_s,
        raftMaxTimeout=raft_max_timeout_s,
        leaderFallbackTimeout=leader_fallback_timeout_s,
        logCompactionMinEntries=log_compaction_min_entries,
        logCompactionMinTime=log_compaction_min_time_s,
        logCompactionBatchSize=limits.raft_snapshot_chunk_bytes_max,
        commandsQueueSize=100_000,
        dynamicMembershipChange=False,
        onStateChanged=on_state_changed,
        useFork=False,
        # Peers re-resolve a restarted validator's name quickly (pysyncobj caches 600 s by default).
        connectionRetryTime=connection_retry_time_s,
        dnsCacheTime=5.0,
        dnsFailCacheTime=5.0,
    )
