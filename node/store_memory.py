"""Dict-backed store for unit tests and simulation: same contract as node.store.RocksStore."""
from __future__ import annotations

import bisect

from raft_ledger_node.ledger import limits
from raft_ledger_node.ledger.account_tree import AccountTree
from raft_ledger_node.ledger.governance import Configuration
from raft_ledger_node.ledger.invariants import verify
from raft_ledger_node.ledger.types import GENESIS_HEAD, Account, BlockHeader, Head, PendingStatus, Transfer, WriteSet


class MemoryStore:
    """Implements :class:`node.ledger.ports.StateReader` plus ``commit``."""

    def __init__(self, configuration: Configuration | None = None) -> None:
        self._configuration = configuration
        self._versions = {} if configuration is None else {configuration.version: configuration}
        self.accounts: dict[int, Account] = {}
        self.transfers: dict[int, Transfer] = {}
        self.status: dict[int, PendingStatus] = {}
        #: (member, transfer id) -> result code of a transient failure.
        self.failed: dict[tuple[str, int], int] = {}
        self.tx_results: dict[bytes, tuple[int, tuple[int, ...], int]] = {}
        self.blocks: dict[int, tuple[BlockHeader, list[bytes]]] = {}
        self.expiry: list[tuple[int, int]] = []
        self.account_transfers: dict[int, list[tuple[int, int]]] = {}
        self._head = GENESIS_HEAD
        self._applied_index = 0
        #: The transaction log's nodes, (level, index) -> hash; and the account tree.
        self.merkle: dict[tuple[int, int], bytes] = {}
        self.tree = AccountTree()
        self.positions: dict[int, int] = {}
        self.envelopes: dict[bytes, bytes] = {}

    # StateReader
    def head(self) -> Head:
        return self._head

    def configuration(self) -> Configuration | None:
        return self._configuration

    def configuration_at(self, version: int) -> Configuration | None:
        return self._versions.get(version)

    def get_account(self, account_id: int) -> Account | None:
        return self.accounts.get(account_id)

    def get_accounts(self, ids) -> tuple[int, list[Account | None]]:
        """As :meth:`raft_ledger_node.store.Store.get_accounts` (single-threaded here)."""
        return self._head.height, [self.accounts.get(i) for i in ids]

    def get_transfer(self, transfer_id: int) -> Transfer | None:
        return self.transfers.get(transfer_id)

    def get_pending_status(self, transfer_id: int) -> PendingStatus:
        return self.status.get(transfer_id, PendingStatus.none)

    def get_failed_transfer(self, member: str, transfer_id: int) -> int | None:
        return self.failed.get((member, transfer_id))

    def get_tx_result(self, tx_hash: bytes) -> tuple[int, tuple[int, ...], int] | None:
        return self.tx_results.get(tx_hash)

    def expiring(self, until_timestamp: int, limit: int = limits.block_expiries_max) -> list[tuple[int, int]]:
        i = bisect.bisect_right(self.expiry, (until_timestamp, 1 << 129))
        return list(self.expiry[: min(i, max(limit, 0))])

    def merkle_node(self, level: int, index: int) -> bytes | None:
        return self.merkle.get((level, index))

    def account_tree(self) -> AccountTree:
        return self.tree

    def account_positions(self, account_ids) -> dict[int, int]:
        pos = self.positions
        return {i: pos[i] for i in account_ids if i in pos}

    def get_block(self, height: int) -> tuple[BlockHeader, list[bytes]] | None:
        return self.blocks.get(height)

    def get_transaction(self, tx_hash: bytes) -> bytes | None:
        return self.envelopes.get(tx_hash)

    def applied_index(self) -> int:
        return self._applied_index

    def commit(self, ws: WriteSet, applied_index: int) -> None:
        verify(ws.head is not None and ws.header is not None, "a committed WriteSet carries its head and header")
        self.accounts.update(ws.accounts)
        self.transfers.update(ws.transfers)
        self.status.update(ws.pending_status)
        self.failed.update(ws.failed_transfers)
        # Puts before deletes: a pending transfer created and resolved in the same
        # block has its expiry key in both lists, and must not stay indexed.
        for item in ws.expiry_put:
            bisect.insort(self.expiry, item)
        for item in ws.expiry_delete:
            i = bisect.bisect_left(self.expiry, item)
            if i < len(self.expiry) and self.expiry[i] == item:
                del self.expiry[i]
        for account_id, ts, transfer_id in ws.account_transfers:
            self.account_transfers.setdefault(account_id, []).append((ts, transfer_id))
        h = ws.header.height
        rejections = ws.tx_rejections or [0] * len(ws.txs)
        for tx, codes, rejection in zip(ws.txs, ws.tx_codes, rejections):
            self.tx_results[tx.tx_hash] = (h, codes, rejection)
        self.blocks[h] = (ws.header, [tx.tx_hash for tx in ws.txs])
        for tx in ws.txs:
            self.envelopes[tx.tx_hash] = tx.envelope
        self.merkle.update(ws.merkle_nodes)
        self.positions.update(ws.account_positions)
        if ws.account_tree_pending is not None:
            self.tree.commit(ws.account_tree_pending)
        if ws.configuration is not None:
            self._configuration = ws.configuration
            self._versions[ws.configuration.version] = ws.configuration
        self._head = ws.head
        self._applied_index = applied_index

    def mark_applied(self, applied_index: int) -> None:
        self._applied_index = applied_index
