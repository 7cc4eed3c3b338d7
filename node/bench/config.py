"""What one benchmark run does: every size, count and port explicit (frozen)."""
from __future__ import annotations

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
    skip: frozenset = field(default_factory=frozenset)  # of "ours", "raft", "crypto", "postgres", "history", "proofs", "membership"

    def __post_init__(self) -> None:
        if self.skew not in ("uniform", "zipf"):
            raise ValueError("skew must be 'uniform' or 'zipf'")
        if self.accounts < 2 * self.members:
            raise ValueError("need at least two accounts per member")
        if not 1 <= self.batch <= limits.tx_events_max:
            raise ValueError(f"batch must be 1..{limits.tx_events_max} (tx_events_max)")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")

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
        )
        base.update(overrides)
        return cls(**base)

    def with_(self, **kw) -> "BenchConfig":
        return replace(self, **kw)

    @property
    def cpus(self) -> int:
        return os.cpu_count() or 1
