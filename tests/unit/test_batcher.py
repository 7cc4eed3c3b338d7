"""Group commit (node/batcher.py): entries stay within one block's limits.

The batcher's proposer is its seam to Raft; here it is a function that records the
encoded entry (real ``codec``) and reports success at once, as pysyncobj's callback
does after commit. No threads are left behind: every test stops its batcher.
"""
from __future__ import annotations

import pytest

from helpers import account, accounts_tx, decode_envelope, transfer, transfers_tx
from raft_ledger_node.batcher import Batcher, Submission, SubmissionTooLarge
from raft_ledger_node.ledger import codec, limits
from raft_ledger_node.ledger.types import TxResult

WAIT_S = 10.0


class Recorder:
    def __init__(self) -> None:
        self.entries: list[bytes] = []

    def propose(self, entry: bytes, decoded, callback) -> None:
        assert codec.decode_entry(entry).envelopes == tuple(tx.envelope for tx in decoded.txs)
        self.entries.append(entry)
        callback([TxResult(tx.tx_hash, 1, (0,) * len(tx.events)) for tx in decoded.txs], 0)


@pytest.fixture
def recorder():
    return Recorder()


def _run(recorder: Recorder, subs: list[Submission], **kw) -> Batcher:
    b = Batcher(recorder.propose, **kw)
    for s in subs:  # all queued before the batcher thread starts: the grouping is deterministic
        b.submit(s)
    b.start()
    try:
        for s in subs:
            assert s.done.wait(WAIT_S)
    finally:
        b.stop()
    return b


def test_submissions_queued_together_are_split_at_block_events_max(recorder):
    subs = [Submission(txs=[transfers_tx(*[transfer(i * 1000 + k, 1, 2, 1) for k in range(300)])]) for i in range(20)]
    _run(recorder, subs, block_events_max=1000)
    assert all(s.error is None and len(s.results) == 1 for s in subs)
    decoded = [[decode_envelope(env) for env in codec.decode_entry(e).envelopes] for e in recorder.entries]
    assert [sum(len(t.events) for t in d) for d in decoded] == [900] * 6 + [600]
    assert sum(len(d) for d in decoded) == 20
    assert all(len(e) <= limits.entry_bytes_max for e in recorder.entries)


def test_a_submission_above_one_block_is_refused_not_proposed(recorder):
    small = Submission(txs=[accounts_tx(account(1))])
    big = Submission(txs=[accounts_tx(*[account(10 + k) for k in range(50)]) for _ in range(3)])
    _run(recorder, [small, big], block_events_max=100)
    assert small.error is None
    assert isinstance(big.error, SubmissionTooLarge) and "block_events_max=100" in str(big.error)
    assert all(len(codec.decode_entry(e).envelopes) == 1 for e in recorder.entries)


def test_size_bound_covers_the_encoded_entry():
    """Submission.size() is an upper bound of what its transactions add to an entry."""
    tx = transfers_tx(*[transfer(k + 1, 1, 2, (1 << 128) - 1, user_data_128=(1 << 128) - 1) for k in range(500)])
    sub = Submission(txs=[tx])
    from raft_ledger_node.ledger.types import Entry

    empty = len(codec.encode_entry(Entry(proposed_timestamp=1, txs=())))
    assert len(codec.encode_entry(Entry(proposed_timestamp=1, txs=(tx,)))) - empty <= sub.size()
