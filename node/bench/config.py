"""What one benchmark run does: every size, count and port explicit (frozen)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

from raft_ledger_node.ledger import limits

#: Stored-history sizes the history part measures at; 10^7 only up to ``history_max``.
HISTORY_SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
#: Transfers per block when the history part applies blocks directly (10 signed txs of ``batch``).
HISTORY_BLOCK_TXS = 10
#: Transfers timed at each history size (a fixed batch of blocks).
HISTORY_MEASURE_TRANSFERS = 30_000
#: Seconds each Ed25519 rate is measured for.
CRYPTO_SECONDS = 2.0
#: Bytes of the message an Ed25519 rate is measured on (the issue's figure).
CRYPTO_MESSAGE_BYTES = 200
#: Concurrent callers of the one-transfer-per-request phase (issue 16: a payment gateway's threads).
SINGLE_CONCURRENCY = 64
#: Caller counts the one-transfer-per-request sweep also runs at (transfers per Raft entry at each).
SINGLE_SWEEP_CALLERS = (1, 8)


#: The counts (and seconds) of a run; each may be 0, which skips what it counts.
COUNT_FIELDS = ("transfers", "half_load_transfers", "raft_entries", "pg_transfers", "pg_single_transfers", "history_max",
                "history_measure_transfers", "proofs_size", "membership_stored", "crypto_seconds", "single_transfers",
                "single_sweep_transfers", "single_half_load_transfers", "pg_sync_transfers", "pg_sync_single_transfers")


@dataclass(frozen=True)
class BenchConfig:
    """One run of ``ledger-validator bench``. Counts are transfers unless named otherwise."""

    accounts: int = 10_000
    skew: str = "uniform"  # "uniform" | "zipf"
    zipf_exponent: float = 1.1
    batch: int = 100
    concurrency: int = 8
    #: Transfers submitted to our cluster at full load (closed loop, ``concurrency`` clients).
    transfers: int = 100_000
    #: Transfers submitted at half of the measured peak rate (open loop); 0 = skip that phase.
    half_load_transfers: int = 60_000  # 600 batches: p99 is not just the 3rd-worst sample
    #: Entries the bare pysyncobj cluster replicates (each one batch's encoded entry).
    raft_entries: int = 2_000
    #: Transfers PostgreSQL executes one batch per SQL transaction, and one transfer per SQL transaction.
    pg_transfers: int = 100_000
    pg_single_transfers: int = 20_000
    #: Stored history sizes measured: every HISTORY_SIZES value up to this.
    history_max: int = 1_000_000
    history_measure_transfers: int = HISTORY_MEASURE_TRANSFERS
    #: Transactions in the log the proofs part measures proof sizes and costs at.
    proofs_size: int = 1_000_000
    #: Transfers stored before the membership part adds, removes and replaces validators.
    membership_stored: int = 1_000_000
    crypto_seconds: float = CRYPTO_SECONDS
    members: int = 4
    seed: int = 1
    base_port: int = 21100
    out_dir: str = "data/bench"
    work_dir: str = ""  # empty: a fresh temporary directory, deleted at the end
    keep_data: bool = False
    profile: bool = False
    skip: frozenset = field(default_factory=frozenset)  # of "ours", "raft", "crypto", "postgres", "pg_sync", "history", "proofs", "membership"
    #: One transfer per request through one shared SDK client from ``single_concurrency`` threads
    #: (and PostgreSQL's transaction per transfer at the same concurrency); 0 = skip.
    single_transfers: int = 20_000
    single_concurrency: int = SINGLE_CONCURRENCY
    #: Submits the shared client keeps in flight in those phases (``coalesce_in_flight_max``).
    single_in_flight: int = 1
    #: Transfers of the same phase at each of SINGLE_SWEEP_CALLERS callers (1 and 8); 0 = skip.
    single_sweep_transfers: int = 2_000
    #: Transfers one per request at half of that phase's peak rate (open loop); 0 = skip.
    single_half_load_transfers: int = 10_000
    #: PostgreSQL primary + 2 synchronous standbys (ANY 1): transfers one SQL transaction per batch,
    #: and one per transfer at ``single_concurrency``; 0 = skip.
    pg_sync_transfers: int = 50_000
    pg_sync_single_transfers: int = 10_000

    def __post_init__(self) -> None:
        if self.skew not in ("uniform", "zipf"):
            raise ValueError("skew must be 'uniform' or 'zipf'")
        if self.accounts < 2 * self.members:
            raise ValueError("need at least two accounts per member")
        if not 1 <= self.batch <= limits.tx_events_max:
            raise ValueError(f"batch must be 1..{limits.tx_events_max} (tx_events_max)")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.single_concurrency < 1:
            raise ValueError("single_concurrency must be at least 1")
        if self.single_in_flight < 1:
            raise ValueError("single_in_flight must be at least 1")
        counts = {k: getattr(self, k) for k in COUNT_FIELDS}
        if any(v < 0 for v in counts.values()):
            raise ValueError(f"counts must be >= 0 (0 skips): {', '.join(k for k, v in counts.items() if v < 0)}")

    @classmethod
    def quick(cls, **overrides) -> "BenchConfig":
        """About two minutes on a 2-core machine."""
        base = dict(
            transfers=30_000,
            half_load_transfers=15_000,
            raft_entries=1_000,
            pg_transfers=30_000,
            pg_single_transfers=8_000,
            history_max=100_000,
            history_measure_transfers=20_000,
            proofs_size=100_000,
            membership_stored=100_000,
            crypto_seconds=1.5,
            single_transfers=5_000,
            single_sweep_transfers=500,
            single_half_load_transfers=3_000,
            pg_sync_transfers=10_000,
            pg_sync_single_transfers=3_000,
        )
        base.update(overrides)
        return cls(**base)

    def with_(self, **kw) -> "BenchConfig":
        return replace(self, **kw)

    def ours_batches(self) -> int:
        """Signed batches our batch phases submit (peak, then half load, which needs a
        peak); the one-per-request transfers come from the batches after them."""
        peak = math.ceil(self.transfers / self.batch)
        return peak + (math.ceil(self.half_load_transfers / self.batch) if peak else 0)

    def part_counts(self) -> dict[str, int | float]:
        """Part name -> the sum of its counts; a part whose counts are all 0 is skipped."""
        return {
            "ours": self.transfers + self.single_transfers + (self.single_sweep_transfers * len(SINGLE_SWEEP_CALLERS)),
            "raft": self.raft_entries,
            "crypto": self.crypto_seconds,
            "postgres": self.pg_transfers + self.pg_single_transfers,
            "pg_sync": self.pg_sync_transfers + self.pg_sync_single_transfers,
            "history": self.history_measure_transfers if self.history_max >= HISTORY_SIZES[0] else 0,
            "proofs": self.proofs_size,
            "membership": self.membership_stored,
        }

    @property
    def cpus(self) -> int:
        return os.cpu_count() or 1
