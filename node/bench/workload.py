"""The one workload every part runs: signed batches of transfers between N accounts.

Accounts are ids 1..N on ledger 840, no balance-limit flags; member ``m`` of
``M`` owns the accounts with ``(id - 1) % M == m``. A batch is signed by one
member (round robin) and every transfer in it debits one of that member's
accounts (the node rejects debits of accounts the signer does not own) and
credits any other account. ``uniform`` draws accounts uniformly; ``zipf`` with
P(rank k) ∝ 1/(k+1)^s, rank 0 being the lowest id (hot accounts, the case
where row locks serialize a SQL database). Amounts 1..10,000 minor units.
Generation is deterministic given the seed, so every part sees the same
transfers in the same batches.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from raft_ledger_node.stats import Zipf

LEDGER = 840
ACCOUNT_CODE = 1
TRANSFER_CODE = 7
AMOUNT_MAX = 10_000

#: (transfer id, debit account id, credit account id, amount)
TransferRow = tuple[int, int, int, int]


@dataclass(frozen=True)
class Batch:
    """One signed transaction's worth of transfers, signed by ``member`` (an index)."""

    member: int
    transfers: list[TransferRow]


def member_names(n: int) -> list[str]:
    return [f"bank-{i + 1}" for i in range(n)]


def owner_index(account_id: int, members: int) -> int:
    return (account_id - 1) % members


class _Sampler:
    """Draws from ``population`` uniformly or Zipf-skewed by position."""

    def __init__(self, population: list[int], skew: str, exponent: float, rng: random.Random) -> None:
        self._pop = population
        self._rng = rng
        self._zipf = Zipf(len(population), exponent, rng) if skew == "zipf" else None

    def draw(self, k: int) -> list[int]:
        pop = self._pop
        if self._zipf is None:
            rnd = self._rng.randrange
            n = len(pop)
            return [pop[rnd(n)] for _ in range(k)]
        return [pop[r] for r in self._zipf.samples(k)]


class Workload:
    """Deterministic batches of transfers; ``batches(first, count)`` with transfer ids from 1."""

    def __init__(self, *, accounts: int, members: int, skew: str, zipf_exponent: float, batch: int, seed: int) -> None:
        self.accounts = accounts
        self.members = members
        self.skew = skew
        self.zipf_exponent = zipf_exponent
        self.batch = batch
        self.seed = seed
        rng = random.Random(seed)
        self._rng = rng
        everyone = list(range(1, accounts + 1))
        self._credit = _Sampler(everyone, skew, zipf_exponent, rng)
        self._debit = [
            _Sampler([a for a in everyone if owner_index(a, members) == m], skew, zipf_exponent, rng)
            for m in range(members)
        ]
        self._made = 0  # batches generated so far
        self._cache: list[Batch] = []

    @classmethod
    def from_config(cls, cfg) -> "Workload":
        return cls(
            accounts=cfg.accounts, members=cfg.members, skew=cfg.skew,
            zipf_exponent=cfg.zipf_exponent, batch=cfg.batch, seed=cfg.seed,
        )

    def spec(self) -> dict:
        return dict(accounts=self.accounts, members=self.members, skew=self.skew,
                    zipf_exponent=self.zipf_exponent, batch=self.batch, seed=self.seed)

    def account_ids(self, member: int) -> list[int]:
        return [a for a in range(1, self.accounts + 1) if owner_index(a, self.members) == member]

    def _make(self) -> Batch:
        b = self._made
        self._made += 1
        m = b % self.members
        first_id = b * self.batch + 1
        dr = self._debit[m].draw(self.batch)
        cr = self._credit.draw(self.batch)
        rows = []
        for i in range(self.batch):
            d, c = dr[i], cr[i]
            while c == d:
                c = self._credit.draw(1)[0]
            rows.append((first_id + i, d, c, self._rng.randint(1, AMOUNT_MAX)))
        return Batch(m, rows)

    def batches(self, first: int, count: int) -> list[Batch]:
        """Batches ``first .. first+count-1`` (cached: the same call gives the same transfers)."""
        while len(self._cache) < first + count:
            self._cache.append(self._make())
        return self._cache[first : first + count]

    def member_rows(self, member: int, first: int, count: int) -> list[TransferRow]:
        """``count`` transfers debiting only ``member``'s accounts: those of the batches
        ``first, first+1, ...`` that ``member`` signs (every ``members``-th), in order.

        What one member's shared client submits one transfer per request; the ids are
        the workload's own, so they never collide with batches before ``first``.
        Raises ValueError for a member outside ``0..members-1``.
        """
        if not 0 <= member < self.members:
            raise ValueError(f"member must be 0..{self.members - 1}")
        rows: list[TransferRow] = []
        b = first + (member - first) % self.members  # the first batch >= first that member signs
        while len(rows) < count:
            rows.extend(self.batches(b, 1)[0].transfers)
            b += self.members
        return rows[:count]

    def stream(self, first: int, count: int):
        """Like :meth:`batches` but generated on the fly without caching (history preload)."""
        if first != self._made or self._cache:
            raise ValueError("stream() continues a fresh generator only")
        for _ in range(count):
            yield self._make()


def signed_batch_bytes(batch: int) -> tuple[int, int]:
    """(body, envelope) bytes of a real signed transaction of ``batch`` transfers of this workload."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from raft_ledger_client import LedgerClient, Transfer

    c = LedgerClient(["127.0.0.1:1"], member_id="bank-1", key_id="k1", private_key=Ed25519PrivateKey.generate(), chain_id="bench",
                     insecure=True)  # signing only: never connects
    stx = c.sign_transfers(Transfer(id=50_000 + i, debit_account_id=9_999, credit_account_id=1_234, amount=5_000,
                                    ledger=LEDGER, code=TRANSFER_CODE) for i in range(batch))
    c.close()
    return len(stx.body), len(stx.SerializeToString(deterministic=True))
