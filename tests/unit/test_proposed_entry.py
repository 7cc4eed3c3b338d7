"""The leader applies the Entry it proposed without decoding its own bytes
(LedgerReplica.propose); followers decode the bytes. That is only safe if what
the gRPC service builds from signed protobuf is exactly what the followers decode
from the committed envelopes themselves (``tx_from_committed``).
"""
from __future__ import annotations

from raft_ledger_client import Account, AccountFlags, Transfer, TransferFlags
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.types import Entry
from raft_ledger_client.wire import account_to_pb, transfer_fields, transfer_to_pb
from raft_ledger_node.ledger.types import Transfer as CoreTransfer
from raft_ledger_node.api.mapping import transfer_from_pb
from dataclasses import replace

from raft_ledger_node.api.validation import decode_signed, tx_from_committed

U128_MAX = (1 << 128) - 1


CHAIN = "local-test"
NOW_NS = 1_700_000_000_000_000_000


def _signed(body: pb.Transaction, member: str) -> pb.SignedTransaction:
    # decode_signed checks shape only; the signature is verified elsewhere.
    body.chain_id, body.valid_until = CHAIN, NOW_NS + 10**9
    return pb.SignedTransaction(body=body.SerializeToString(deterministic=True), member_id=member, key_id="k1",
                                signature=bytes(64))


def test_service_built_entry_survives_the_raft_log_unchanged():
    transfers = [
        Transfer(id=U128_MAX - 1, debit_account_id=U128_MAX - 2, credit_account_id=3, amount=U128_MAX - 3,
                 ledger=(1 << 32) - 1, code=(1 << 16) - 1, flags=TransferFlags.PENDING | TransferFlags.LINKED,
                 timeout=(1 << 32) - 1, user_data_128=U128_MAX - 4, user_data_64=(1 << 64) - 1,
                 user_data_32=(1 << 32) - 1),
        Transfer(id=7, debit_account_id=1, credit_account_id=2, amount=0, ledger=1, code=1,
                 flags=TransferFlags.POST_PENDING_TRANSFER, pending_id=U128_MAX - 1),
    ]
    accounts = [Account(id=U128_MAX - 9, ledger=840, code=10,
                        flags=AccountFlags.HISTORY | AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
                        user_data_128=5, user_data_64=6, user_data_32=7)]
    txs = (
        decode_signed(_signed(pb.Transaction(create_transfers=pb.CreateTransfers(
            transfers=[transfer_to_pb(t) for t in transfers])), "bänk-a"), 0, chain_id=CHAIN, now_ns=NOW_NS),
        decode_signed(_signed(pb.Transaction(create_accounts=pb.CreateAccounts(
            accounts=[account_to_pb(a) for a in accounts])), "bank-b"), 1, chain_id=CHAIN, now_ns=NOW_NS),
    )
    proposed = Entry(proposed_timestamp=1_700_000_000_000_000_001, txs=txs)
    raw = codec.decode_entry(codec.encode_entry(proposed))
    replicated = Entry(raw.proposed_timestamp, tuple(
        replace(tx_from_committed(env, chain_id=CHAIN), signed_body=b"", signature=b"") for env in raw.envelopes))
    assert replicated == proposed
    # Same types too: the core compares flags and amounts as ints.
    for tx_p, tx_r in zip(proposed.txs, replicated.txs):
        for ev_p, ev_r in zip(tx_p.events, tx_r.events):
            assert type(ev_p) is type(ev_r)
            assert all(type(getattr(ev_p, f)) is type(getattr(ev_r, f)) for f in ev_p.__slots__)


def test_positional_transfer_mapping_agrees_with_the_shared_field_mapping():
    full = Transfer(id=U128_MAX - 1, debit_account_id=(1 << 127) + 5, credit_account_id=(1 << 64) + 3,
                    amount=(1 << 64) - 1, ledger=7, code=9, flags=TransferFlags.BALANCING_CREDIT,
                    pending_id=1 << 100, timeout=11, user_data_128=(1 << 65) + 1, user_data_64=12,
                    user_data_32=13)
    m = transfer_to_pb(full)
    m.timestamp = 123456789
    assert transfer_from_pb(m) == CoreTransfer(**transfer_fields(m))
