"""Domain types of the ledger core: dataclasses and result-code enums.

Semantics and numeric flag values follow TigerBeetle (docs/reference/account.md,
docs/reference/transfer.md). Money is in integer minor units (u128). Timestamps
are nanoseconds since the Unix epoch, assigned by the ledger from the block.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .governance import Configuration, GovernanceProposal
# TxRejection lives beside apply_changes, which returns it (types imports governance,
# never the reverse); it belongs to this module's vocabulary.
from .governance import TxRejection  # noqa: F401  (re-exported)


class AccountFlags(enum.IntFlag):
    NONE = 0
    LINKED = 1 << 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1
    CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2
    HISTORY = 1 << 3
    IMPORTED = 1 << 4
    CLOSED = 1 << 5


class TransferFlags(enum.IntFlag):
    NONE = 0
    LINKED = 1 << 0
    PENDING = 1 << 1
    POST_PENDING_TRANSFER = 1 << 2
    VOID_PENDING_TRANSFER = 1 << 3
    BALANCING_DEBIT = 1 << 4
    BALANCING_CREDIT = 1 << 5
    CLOSING_DEBIT = 1 << 6
    CLOSING_CREDIT = 1 << 7
    IMPORTED = 1 << 8


ACCOUNT_FLAGS_KNOWN = (
    AccountFlags.LINKED
    | AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
    | AccountFlags.HISTORY
    | AccountFlags.CLOSED
)
TRANSFER_FLAGS_KNOWN = (
    TransferFlags.LINKED
    | TransferFlags.PENDING
    | TransferFlags.POST_PENDING_TRANSFER
    | TransferFlags.VOID_PENDING_TRANSFER
    | TransferFlags.BALANCING_DEBIT
    | TransferFlags.BALANCING_CREDIT
    | TransferFlags.CLOSING_DEBIT
    | TransferFlags.CLOSING_CREDIT
)


class CreateAccountResult(enum.IntEnum):
    """Result of creating one account, in precedence order (TigerBeetle 0.16).

    Two codes are ours, documented deviations (TigerBeetle has no owners and no issuers):

    - ``exists_with_different_owner``: the id exists and another member owns it. Checked
      right after the id checks and before every other ``exists_with_*`` comparison, so
      it tells the caller only that the id is taken, nothing of the other member's
      account, and never ``exists``, which clients treat as success (squatting an id
      must not let its owner collect the funds another member meant for "its" account).
    - ``credits_must_not_exceed_debits_reserved_for_issuer``: per ledger only an issuer
      (``Configuration.is_issuer(member, ledger)``) may hold an account that can carry
      a debit balance. Every other member's account is stored with
      ``debits_must_not_exceed_credits`` OR-ed in by the ledger (a retry of the same
      request compares with that flag added, so it still answers ``exists``), and a
      non-issuer asking for ``credits_must_not_exceed_debits`` gets this code instead
      of an account that could never move money. No configuration (a store never
      bound to a genesis): no issuance rule.

    Numbers are renumbered when a code is inserted where it is checked, as TigerBeetle
    does between versions; ``proto/ledger/v1/ledger.proto`` carries the same.
    """

    ok = 0
    linked_event_failed = 1
    linked_event_chain_open = 2
    imported_event_expected = 3
    imported_event_not_expected = 4
    timestamp_must_be_zero = 5
    reserved_field = 6
    reserved_flag = 7
    id_must_not_be_zero = 8
    id_must_not_be_int_max = 9
    exists_with_different_owner = 10
    exists_with_different_flags = 11
    exists_with_different_user_data_128 = 12
    exists_with_different_user_data_64 = 13
    exists_with_different_user_data_32 = 14
    exists_with_different_ledger = 15
    exists_with_different_code = 16
    exists = 17
    flags_are_mutually_exclusive = 18
    credits_must_not_exceed_debits_reserved_for_issuer = 19
    debits_pending_must_be_zero = 20
    debits_posted_must_be_zero = 21
    credits_pending_must_be_zero = 22
    credits_posted_must_be_zero = 23
    ledger_must_not_be_zero = 24
    code_must_not_be_zero = 25


class CreateTransferResult(enum.IntEnum):
    """Result of creating one transfer, in precedence order (TigerBeetle 0.16).

    Ours, documented deviations (TigerBeetle has no owners):

    - ``debit_account_not_owned``: a member moves money only out of accounts it owns
      (design invariant 6); for post/void, the pending transfer's debit account.
    - ``credit_account_not_owned``: a transfer may change the flags or status of only
      the signer's own accounts, so ``closing_credit`` needs the signer to own the
      credit account too (``closing_debit`` already needs the debit account). Voiding
      or expiring a closing transfer reopens only accounts its creator owned. So does
      ``balancing_credit``: it clamps the amount to the credit account's balance and
      stores it in a transfer the signer reads, which would reveal another member's
      balance.
    - For post/void, ``debit_account_not_owned`` comes before
      ``pending_transfer_not_pending``: another member's transfer reveals only that its
      id is taken, not whether it is pending.
    - ``exists_with_different_owner``: the id is taken by a transfer another member
      created (the owner of its debit account; for post/void, of the pending
      transfer's debit account). Checked right after the id checks, before the other
      ``exists_with_*`` comparisons: never ``exists``, which clients treat as success.

    Id rule: transfer ids stay global and first-come (use random 128-bit ids, as
    TigerBeetle recommends), but one member's ids can never make another member's
    creates fail silently or falsely succeed: a taken id answers the other member
    ``exists_with_different_owner``, and failed transfer ids are recorded per member
    (the failed-transfer record is keyed by (member, id)), so ``id_already_failed``
    comes only from the member's own earlier failure. Another member may still use an
    id that failed for someone else.
    """

    ok = 0
    linked_event_failed = 1
    linked_event_chain_open = 2
    imported_event_expected = 3
    imported_event_not_expected = 4
    timestamp_must_be_zero = 5
    reserved_flag = 6
    id_must_not_be_zero = 7
    id_must_not_be_int_max = 8
    exists_with_different_owner = 9
    exists_with_different_flags = 10
    exists_with_different_pending_id = 11
    exists_with_different_timeout = 12
    exists_with_different_debit_account_id = 13
    exists_with_different_credit_account_id = 14
    exists_with_different_amount = 15
    exists_with_different_user_data_128 = 16
    exists_with_different_user_data_64 = 17
    exists_with_different_user_data_32 = 18
    exists_with_different_ledger = 19
    exists_with_different_code = 20
    exists = 21
    id_already_failed = 22
    flags_are_mutually_exclusive = 23
    debit_account_id_must_not_be_zero = 24
    debit_account_id_must_not_be_int_max = 25
    credit_account_id_must_not_be_zero = 26
    credit_account_id_must_not_be_int_max = 27
    accounts_must_be_different = 28
    pending_id_must_be_zero = 29
    pending_id_must_not_be_zero = 30
    pending_id_must_not_be_int_max = 31
    pending_id_must_be_different = 32
    timeout_reserved_for_pending_transfer = 33
    closing_transfer_must_be_pending = 34
    ledger_must_not_be_zero = 35
    code_must_not_be_zero = 36
    debit_account_not_found = 37
    credit_account_not_found = 38
    debit_account_not_owned = 39
    credit_account_not_owned = 40
    accounts_must_have_the_same_ledger = 41
    transfer_must_have_the_same_ledger_as_accounts = 42
    pending_transfer_not_found = 43
    pending_transfer_not_pending = 44
    pending_transfer_has_different_debit_account_id = 45
    pending_transfer_has_different_credit_account_id = 46
    pending_transfer_has_different_ledger = 47
    pending_transfer_has_different_code = 48
    exceeds_pending_transfer_amount = 49
    pending_transfer_has_different_amount = 50
    pending_transfer_already_posted = 51
    pending_transfer_already_voided = 52
    pending_transfer_expired = 53
    debit_account_already_closed = 54
    credit_account_already_closed = 55
    overflows_debits_pending = 56
    overflows_credits_pending = 57
    overflows_debits_posted = 58
    overflows_credits_posted = 59
    overflows_debits = 60
    overflows_credits = 61
    overflows_timeout = 62
    exceeds_credits = 63
    exceeds_debits = 64


class PendingStatus(enum.IntEnum):
    """State of a pending transfer (TigerBeetle's TransferPendingStatus)."""

    none = 0
    pending = 1
    posted = 2
    voided = 3
    expired = 4


# Account and Transfer are not frozen, on purpose: a frozen dataclass sets every
# field through object.__setattr__, 1.8 µs per construction against 0.33 µs here,
# and the core builds several per transfer. They are still values: nothing
# mutates a record after construction; a change is a new record (see apply.py).
@dataclass(slots=True)
class Account:
    """An account. Balances are u128 minor units; ``owner`` is the member id.

    Treat as immutable: a balance change builds a new Account.
    """

    id: int
    ledger: int
    code: int
    owner: str = ""
    flags: int = 0
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    timestamp: int = 0


@dataclass(slots=True)
class Transfer:
    """A transfer of ``amount`` minor units from the debit to the credit account.

    ``timeout`` is in seconds (pending transfers only); ``timestamp`` in ns.
    Treat as immutable, like :class:`Account`.
    """

    id: int
    debit_account_id: int
    credit_account_id: int
    amount: int
    ledger: int
    code: int
    flags: int = 0
    pending_id: int = 0
    timeout: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    timestamp: int = 0


class Operation(enum.IntEnum):
    create_accounts = 1
    create_transfers = 2
    #: A governance transaction: no events, a :class:`GovernanceProposal` (``Tx.governance``).
    governance = 3


@dataclass(frozen=True, slots=True)
class Tx:
    """One signed transaction, already verified at ingress.

    ``events`` are Accounts (create_accounts) or Transfers (create_transfers);
    ``envelope`` is the SignedTransaction bytes as submitted; ``tx_hash`` is
    SHA-256 of ``envelope``.
    """

    member_id: str
    operation: Operation
    events: tuple
    envelope: bytes
    tx_hash: bytes
    #: The envelope's key id: its validity is checked again at apply (a key revoked
    #: by an earlier block is refused even if ingress verified the signature).
    key_id: str = ""
    #: The decoded proposal and approvals of a governance transaction (else None).
    governance: GovernanceProposal | None = None
    #: Set by a follower that decoded the committed envelope itself: the signed body
    #: and its signature, verified at apply against the signer's key at that height.
    #: Empty on the leader, whose ingress verified them (and in unit tests).
    signed_body: bytes = b""
    signature: bytes = b""
    #: A TxRejection decided while decoding the committed bytes (envelope_invalid).
    invalid: int = 0


@dataclass(frozen=True, slots=True)
class Entry:
    """What one Raft entry carries: the leader-stamped time (ns) and the txs."""

    proposed_timestamp: int
    txs: tuple[Tx, ...]


@dataclass(frozen=True, slots=True)
class RawEntry:
    """A Raft entry as committed: the leader's time (ns) and the SignedTransaction
    bytes, nothing else. Every validator decodes the events from these bytes itself
    (``StateMachine``'s ``decode_envelope``), so what is applied is what was signed."""

    proposed_timestamp: int
    envelopes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """A block header; ``hash`` is SHA-256 of :func:`codec.encode_header`."""

    height: int
    prev_hash: bytes
    timestamp: int
    tx_merkle_root: bytes
    state_hash: bytes
    raft_term: int
    raft_index: int
    tx_count: int
    #: The chain's Merkle log (RFC 6962) after this block: size and root.
    tree_size: int = 0
    tree_root: bytes = bytes(32)
    #: Root of the account tree (account_tree.py) after this block.
    state_root: bytes = bytes(32)
    #: Validator-set hashes: the set that certifies this block, and the set after it.
    validators_hash: bytes = bytes(32)
    next_validators_hash: bytes = bytes(32)
    hash: bytes = b""


@dataclass(frozen=True, slots=True)
class Head:
    """The chain head: the last block's header plus totals since genesis."""

    header: BlockHeader
    tx_total: int = 0

    @property
    def height(self) -> int:
        return self.header.height


GENESIS_HASH = bytes(32)
GENESIS_HEAD = Head(
    header=BlockHeader(
        height=0,
        prev_hash=bytes(32),
        timestamp=0,
        tx_merkle_root=bytes(32),
        state_hash=bytes(32),
        raft_term=0,
        raft_index=0,
        tx_count=0,
        hash=GENESIS_HASH,
    ),
    tx_total=0,
)


@dataclass(slots=True)
class WriteSet:
    """The effects of one block, to be committed atomically with the applied index.

    Keys of the dicts are ids; values the full new records. Index lists hold
    (account_id, timestamp, transfer_id) and (expires_at_ns, transfer_id).
    ``failed_transfers`` maps (member, transfer id) of the transfers that failed
    transiently to their result code (failed ids are per member);
    ``tx_codes`` runs parallel to ``txs``.
    """

    accounts: dict[int, Account] = field(default_factory=dict)
    transfers: dict[int, Transfer] = field(default_factory=dict)
    pending_status: dict[int, PendingStatus] = field(default_factory=dict)
    account_transfers: list[tuple[int, int, int]] = field(default_factory=list)
    expiry_put: list[tuple[int, int]] = field(default_factory=list)
    expiry_delete: list[tuple[int, int]] = field(default_factory=list)
    history: list[tuple[int, int, Account]] = field(default_factory=list)
    failed_transfers: dict[tuple[str, int], int] = field(default_factory=dict)
    #: codec encodings of ``accounts`` / ``transfers`` by id, filled while hashing.
    encoded_accounts: dict[int, bytes] = field(default_factory=dict)
    encoded_transfers: dict[int, bytes] = field(default_factory=dict)
    #: Ids of the accounts created by this block (the rest of ``accounts`` are updates).
    created_accounts: list[int] = field(default_factory=list)
    txs: list[Tx] = field(default_factory=list)
    tx_codes: list[tuple[int, ...]] = field(default_factory=list)
    #: TxRejection per transaction, parallel to ``txs`` (0: applied).
    tx_rejections: list[int] = field(default_factory=list)
    #: The governed configuration after this block, when a governance transaction of
    #: the block changed it (None: unchanged).
    configuration: Configuration | None = None
    #: Merkle log nodes the block's transactions completed: (level, index) -> hash.
    merkle_nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    #: Account tree: positions of the accounts this block created (id -> position),
    #: and the tree's pending update (account_tree.Pending; None without a tree).
    account_positions: dict[int, int] = field(default_factory=dict)
    account_tree_pending: object = None
    header: BlockHeader | None = None
    head: Head | None = None


@dataclass(frozen=True, slots=True)
class TxResult:
    """Per-event result codes of one transaction, its block height, and its
    :class:`TxRejection` (0: applied; else ``codes`` is empty and nothing applied)."""

    tx_hash: bytes
    height: int
    codes: tuple[int, ...]
    rejection: int = 0
