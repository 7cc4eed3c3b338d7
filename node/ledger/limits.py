"""Named limits of the ledger, qualifier last (TigerBeetle style): every bound in one place.

Each says what happens past it. Their relationships are asserted once, at import
(with :func:`invariants.verify`, so ``python -O`` keeps them). The rule that ties
them together: **whatever passes the door fits one Raft entry**. A Submit that
passes ``submit_*_max`` always becomes at most one block, whose encoded entry stays
below ``entry_bytes_max``, which stays below pysyncobj's append batch
(``raft_append_entries_bytes_max``), so no entry ever takes the library's chunked
path; and the gRPC message cap is no larger than a Submit can be.
"""
from __future__ import annotations

from raft_ledger_node.ledger.invariants import verify

# -- one signed transaction ---------------------------------------------------------
#: Events (accounts or transfers) in one signed transaction; more: INVALID_ARGUMENT.
tx_events_max = 8_190
#: Bytes of one signed transaction as submitted (envelope); more: INVALID_ARGUMENT.
tx_bytes_max = 1 << 20
#: Bytes of a member id, and of a key id; more: INVALID_ARGUMENT.
member_id_bytes_max = 64
key_id_bytes_max = 64
#: Administrators of the governed configuration; more: a ConfigError / change_invalid.
admins_max = 32
#: Approvals of one governance transaction (each a distinct admin); more: INVALID_ARGUMENT.
gov_approvals_max = admins_max
#: Changes in one governance proposal; more: INVALID_ARGUMENT.
gov_changes_max = 64
#: Bytes of one governance proposal (what the admins sign); more: INVALID_ARGUMENT. Its
#: decoded form rides in the entry beside it (about twice the bytes: keys as hex).
gov_proposal_bytes_max = 64 << 10
#: How far ahead of the leader's clock a transaction's ``valid_until`` may lie (ns);
#: further: INVALID_ARGUMENT. Bounds how long a captured, never-submitted envelope
#: stays usable.
tx_validity_ns_max = 24 * 3600 * 10**9

# -- one Submit call (checked before anything is decoded or proposed) ----------------
#: Signed transactions in one Submit call; more: INVALID_ARGUMENT.
submit_txs_max = 1_024
#: Events across all transactions of one Submit; more: RESOURCE_EXHAUSTED. One full
#: transaction's worth, as TigerBeetle's batch (see block_events_max for why).
submit_events_max = 8_190
#: Bytes of all envelopes of one Submit; more: RESOURCE_EXHAUSTED.
submit_bytes_max = 3 << 20
#: Bytes of one gRPC message, either way: gRPC answers a larger request with
#: RESOURCE_EXHAUSTED before our code runs. A Submit at ``submit_bytes_max`` plus
#: protobuf framing (tag + length, at most 6 bytes per transaction) fits.
grpc_message_bytes_max = submit_bytes_max + 64 * 1024

# -- one block = one Raft entry ------------------------------------------------------
#: Events in one block. The batcher closes a block before this. Every validator
#: applies a block inside pysyncobj's tick thread, which checks its election timer
#: before it reads the heartbeats that queued up meanwhile: a block must apply well
#: within raft_min_timeout_s (0.4 s). Measured on 2 cores: 8,190 transfers 215 ms of
#: CPU, 16,380 transfers 500 ms (an election under load).
block_events_max = 8_190
#: Pending-transfer expiries one block processes, in expiry-key order (expires_at,
#: id); the rest wait for later blocks, so a flood of timeouts cannot stall the
#: apply (tick) thread. Until processed, a timed-out transfer already answers
#: post/void with ``pending_transfer_expired`` but its amount stays in the
#: accounts' ``*_pending`` balances (node/ledger/apply.py ``_expire_pending``).
#: TigerBeetle bounds its expiry pulse the same way (batch_max.create_transfers).
block_expiries_max = 8_190
#: Bytes an event adds to an entry beyond its envelope: the decoded record the
#: leader puts beside it (132 bytes for a transfer, 128 for an account) plus slack.
entry_event_bytes_max = 256
#: Bytes a transaction adds to an entry beyond its events: kind, count, member id,
#: key id, lengths.
entry_tx_bytes_max = 192
#: Bytes of one encoded Raft entry. The batcher closes a block before this. Pickled by
#: pysyncobj it can double (raft_command_bytes_max) and must still stay below
#: raft_append_entries_bytes_max.
entry_bytes_max = 7 << 20
#: pysyncobj's appendEntriesBatchSizeBytes we configure: one AppendEntries carries
#: entries up to this size; an entry above it would be sent in chunks.
raft_append_entries_bytes_max = 16 << 20

#: Bytes of one chunk of a snapshot sent to a lagging follower (pysyncobj's logCompactionBatchSize).
raft_snapshot_chunk_bytes_max = 1 << 20

# -- the Raft port (checked before a frame's body is read or decrypted) ---------------
#: Bytes of pysyncobj's command for one entry of ``entry_bytes_max`` (the pickled
#: ``apply_entry`` call). pysyncobj pickles with protocol 2, which stores ``bytes`` as
#: latin-1 text in UTF-8: up to 2 bytes per byte (1.5 on random bytes).
raft_command_bytes_max = 2 * entry_bytes_max + 1024
#: Bytes of one Raft frame (after its 4-byte length prefix) from a peer that has
#: authenticated; a larger (or negative) prefix closes the connection before its body
#: is read. Sizing, from the largest AppendEntries pysyncobj sends (syncobj.py
#: __getEntries: entries are added until their commands reach
#: ``raft_append_entries_bytes_max``, so one batch plus one command): the message
#: pickles every command again (up to 2 bytes per byte, plus ~40 bytes per entry: at
#: most 3x for commands of 40 bytes or more, as ours are; pysyncobj's 1-byte no-op is
#: one per term), zlib
#: may add 0.03% to incompressible data, Fernet adds 57 bytes plus padding and its
#: base64 4/3. ~128 MiB. Frames seen are far smaller (random content compresses back:
#: a full 32 MiB batch-plus-one of random blocks was a 35 MiB frame here); the bound
#: is deliberately the no-compression one, because a member chooses the bytes of the
#: entries and a frame rejected here would stop replication to that follower.
raft_frame_bytes_max = (
    (3 * (raft_append_entries_bytes_max + raft_command_bytes_max) + (64 << 10)) * 10_004 // 10_000 + 128
) * 4 // 3 + 128
#: Bytes of one frame before the peer has authenticated (its nonce and hello frames,
#: ~204 and ~250–300 bytes measured; under 1 KiB with a 253-byte host name); a larger
#: prefix closes the connection before its body is read.
raft_handshake_frame_bytes_max = 4 << 10
#: Incoming Raft connections that have not authenticated yet; past it a new one is
#: closed as soon as it is accepted (peers connected already are not counted).
raft_unauthenticated_connections_max = 16
#: Seconds an incoming Raft connection may take to authenticate (two frames each way);
#: then it is closed, checked on every tick even when the socket is idle.
raft_handshake_timeout_s = 3.0
#: Bytes of TLS handshake records an incoming or outgoing Raft peer may send before its
#: handshake completes (TLS 1.3 with one ECDSA P-256 certificate: ClientHello ~0.3 KB,
#: Certificate + CertificateVerify + Finished ~1 KB; the server's flight ~1.5 KB
#: measured); past it the connection is closed. The handshake frame cap's counterpart
#: below the frame layer: an unauthenticated peer makes us buffer at most this much.
raft_tls_handshake_bytes_max = 16 << 10
#: Ciphertext read from a TLS Raft socket in one recv, and so the most the TLS layer
#: holds undecrypted (one recv is taken only when no whole record is left): one TLS
#: record is at most 16 KiB of plaintext plus 256 bytes.
raft_tls_recv_bytes_max = 64 << 10
#: Entries the leader keeps decoded between proposing and applying them (it applies
#: those without decoding its own bytes); older ones, never committed, are dropped.
proposed_entries_kept_max = 256

# -- validator membership (node/raft/membership.py, api/servicers.py) ---------------------
#: A learner is promoted only when its read-only link's match index is within this
#: many Raft entries of the leader's commit index ("close to the leader").
learner_promote_lag_max = 200
#: A voter counts as reachable for the majority check of a change if it answered the
#: leader within this many seconds.
membership_reachable_s = 2.0

# -- reads -----------------------------------------------------------------------------
#: Ids fetched in one lookup; more: INVALID_ARGUMENT.
lookup_ids_max = 8_190
#: Ids per GetAccountProofs: each answer carries a record (<= 64 KiB owner aside,
#: ~170 B) and its account-tree proof (15 hashes per level: 2.4 KB at 10^6 accounts,
#: 7.7 KB at the tree's 2^64 bound), so a full answer stays below the gRPC cap.
account_proofs_max = 256
#: WatchCheckpoints streams served at once per validator: each holds a gRPC worker
#: thread for as long as it lasts, so more would starve Submit (RESOURCE_EXHAUSTED past it).
watch_streams_max = 4
#: Results of one query (TigerBeetle's batch limit); ``limit`` 0 means this; more: INVALID_ARGUMENT.
query_limit_max = 8_190
#: Index rows one query reads (get_account_transfers, get_account_balances,
#: query_transfers, query_accounts), matching or not: past it the page ends with a
#: cursor (``next_timestamp``) even if it holds fewer than ``limit`` results, or
#: none, so a filter that matches nothing costs one budget per call, not the
#: whole history (measured here: ~9 µs a row, 70-80 ms of validator CPU a call).
query_scan_rows_max = 8_192

# -- memory the validator keeps ----------------------------------------------------------
#: Decoded accounts kept in the store's write-through cache (about 250 bytes each);
#: past it the least recently used are dropped (and read from RocksDB again).
account_cache_entries_max = 200_000
#: RocksDB block cache shared by every column family (bytes).
block_cache_bytes_max = 256 << 20

#: The leader's stamp (ns since the epoch) is clamped to this before it becomes a block
#: timestamp: from here a head grows only by its blocks' events, and 2^48 more events
#: than any chain will see keep every later block's timestamp within u64.
timestamp_ns_max = (1 << 64) - 1 - (1 << 48)

# -- values ------------------------------------------------------------------------------
#: Ids, amounts and balances are unsigned 128-bit.
u128_max = (1 << 128) - 1
u64_max = (1 << 64) - 1
u32_max = (1 << 32) - 1

verify(tx_events_max <= submit_events_max <= block_events_max, "a Submit fits one block by events")
verify(tx_bytes_max <= submit_bytes_max, "one full transaction is a valid Submit")
verify(
    submit_bytes_max + submit_events_max * entry_event_bytes_max + submit_txs_max * entry_tx_bytes_max + 4096
    <= entry_bytes_max,
    "a Submit that passes the door encodes to at most entry_bytes_max",
)
verify(grpc_message_bytes_max >= submit_bytes_max + 6 * submit_txs_max, "gRPC carries a full Submit")
verify(grpc_message_bytes_max <= entry_bytes_max, "the gRPC cap is no larger than one Raft entry")
verify(raft_command_bytes_max < raft_append_entries_bytes_max,
       "a pickled entry (bytes as latin-1 in UTF-8: up to 2x) never takes pysyncobj's chunked path")
verify(gov_approvals_max <= admins_max, "every approval is a distinct admin's")
verify(3 * gov_proposal_bytes_max + gov_approvals_max * 256 <= tx_bytes_max,
       "a governance transaction's entry payload stays within one transaction's bytes")
verify(lookup_ids_max >= tx_events_max, "a whole transaction's ids can be looked up")
verify(account_proofs_max * (16 * 15 * 32 + 1024) < grpc_message_bytes_max, "a full GetAccountProofs answer fits one message")
verify(query_limit_max >= 1, "a query returns at least one result")
verify(query_scan_rows_max >= query_limit_max, "a query that matches every row it reads can fill a page")
verify(
    block_expiries_max >= block_events_max,
    "expiry keeps up: a block adds at most block_events_max expiry keys and processes block_expiries_max",
)
verify(raft_handshake_frame_bytes_max >= 1024, "a hello with a 253-byte host name fits the handshake cap")
verify(raft_handshake_frame_bytes_max < raft_frame_bytes_max, "the handshake cap is the smaller one")
verify(
    raft_frame_bytes_max >= 3 * (raft_append_entries_bytes_max + raft_command_bytes_max) * 4 // 3,
    "the largest AppendEntries (one batch plus one command, pickled, Fernet) fits one frame",
)
verify(raft_frame_bytes_max >= 3 * raft_snapshot_chunk_bytes_max * 4 // 3, "a snapshot chunk fits one frame")
verify(raft_frame_bytes_max < (1 << 31) - 1, "the frame cap fits pysyncobj's signed 32-bit length prefix")
verify(raft_unauthenticated_connections_max >= 2, "both peers can be mid-handshake at once")
verify(raft_handshake_timeout_s > 0, "the handshake timeout is positive")
verify(raft_tls_handshake_bytes_max >= 4 << 10, "a TLS 1.3 handshake with one P-256 certificate fits")
verify(raft_tls_recv_bytes_max >= (16 << 10) + 256, "one recv can complete a whole TLS record")
verify(learner_promote_lag_max >= 1, "a learner can be promoted")
verify(membership_reachable_s > 0, "reachability is measured over a positive window")
