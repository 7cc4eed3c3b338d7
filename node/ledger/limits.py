"""Named limits of the ledger, qualifier last (TigerBeetle style).

Their relationships are asserted once, at import.
"""
from __future__ import annotations

#: Events (accounts or transfers) in one signed transaction.
tx_events_max = 8_190
#: Bytes of one signed transaction as submitted (envelope).
tx_bytes_max = 1 << 20
#: Signed transactions in one Submit call.
submit_txs_max = 1_024
#: Events in one block (one Raft entry). The batcher closes a block before this.
block_events_max = 16_384
#: Bytes of one encoded Raft entry. Must stay below pysyncobj's
#: appendEntriesBatchSizeBytes so entries never take its chunked path.
entry_bytes_max = 8 << 20
#: pysyncobj appendEntriesBatchSizeBytes we configure.
raft_append_entries_bytes_max = 16 << 20
#: Bytes of a member id.
member_id_bytes_max = 64
#: Ids, amounts and balances are unsigned 128-bit.
u128_max = (1 << 128) - 1
u64_max = (1 << 64) - 1
u32_max = (1 << 32) - 1
#: Ids fetched in one lookup.
lookup_ids_max = 8_190

assert tx_events_max <= block_events_max
assert tx_bytes_max * 4 <= entry_bytes_max
assert entry_bytes_max < raft_append_entries_bytes_max
assert lookup_ids_max >= tx_events_max
