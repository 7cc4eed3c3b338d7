"""Protocols the core needs from the outside world. Storage is passed in."""
from __future__ import annotations

from typing import Iterable, Protocol

from .governance import Configuration
from .types import Account, Head, PendingStatus, Transfer


class StateReader(Protocol):
    """Read-only view of committed state, as of the previous block.

    Every method returns None (or empty) for what is absent and raises only if
    the storage itself is broken.
    """

    def head(self) -> Head: ...

    def configuration(self) -> Configuration | None:
        """The governed configuration as of the previous block. None only for a store
        never bound to a genesis (unit tests of the TigerBeetle semantics alone); a
        validator always binds one (``RocksStore.bind_genesis``), and the core then
        enforces ownership, issuance and signer authorisation against it."""
        ...

    def get_account(self, account_id: int) -> Account | None: ...

    def get_transfer(self, transfer_id: int) -> Transfer | None: ...

    def get_pending_status(self, transfer_id: int) -> PendingStatus: ...

    def get_failed_transfer(self, member: str, transfer_id: int) -> int | None:
        """Result code with which ``member``'s transfer ``transfer_id`` failed with a
        transient error, or None. Failed ids are recorded per member: another member's
        failure of the same id is not seen here (CreateTransferResult states the rule)."""
        ...

    def get_tx_result(self, tx_hash: bytes) -> tuple[int, tuple[int, ...], int] | None:
        """(height, result codes, TxRejection) of an already applied transaction
        (a rejected one has no codes)."""
        ...

    def merkle_node(self, level: int, index: int) -> bytes | None:
        """A committed node of the transaction log (merkle_log.NodeStore's ``get``)."""
        ...

    def account_tree(self):
        """The committed account tree (account_tree.AccountTree), or None when the
        store keeps none (then the header's state root is zeros)."""
        ...

    def account_positions(self, account_ids) -> dict[int, int]:
        """Positions in the account tree of those of ``account_ids`` that exist."""
        ...

    def expiring(self, until_timestamp: int, limit: int) -> Iterable[tuple[int, int]]:
        """The first ``limit`` (expires_at_ns, transfer_id) of pending transfers with
        expires_at <= until, ascending by (expires_at, id); reads no more than ``limit``."""
        ...
