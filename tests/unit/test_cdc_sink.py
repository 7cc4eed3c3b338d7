"""node/cdc_sink.py without a broker: the state file (atomic, durable, strict) and the
JSON of a block (128-bit values as strings, deterministic)."""
from __future__ import annotations

import json
import os

import pytest

from raft_ledger_client import Account, CreateAccountResult, CreateTransferResult, Transfer
from raft_ledger_client.cdc import AccountEvent, BlockEvents, TransferEvent
from raft_ledger_node.cdc_sink import SinkError, SinkState, block_json, msg_id


def test_state_file_round_trip_and_atomic_replace(tmp_path):
    st = SinkState(str(tmp_path / "sink.state"))
    assert st.load() == 0
    st.save(41)
    st.save(42)
    assert st.load() == 42
    assert sorted(os.listdir(tmp_path)) == ["sink.state"]  # no temporary file left behind
    (tmp_path / "sink.state").write_text("4x\n")
    with pytest.raises(SinkError, match="does not hold a height"):
        st.load()


def test_block_json_keeps_every_digit_and_is_deterministic():
    big = (1 << 127) + 5
    b = BlockEvents(height=7, block_hash=bytes(range(32)), timestamp=1_700_000_000_000_000_000,
                    accounts=(AccountEvent(Account(id=big, ledger=840, code=1, owner="bank-a"),
                                           CreateAccountResult(0), b"\x01" * 32, 0),),
                    transfers=(TransferEvent(Transfer(id=3, debit_account_id=big, credit_account_id=2, amount=big,
                                                      ledger=840, code=1), CreateTransferResult(0), b"\x02" * 32, 1,
                                             "pending"),))
    raw = block_json("chain-x", b)
    assert raw == block_json("chain-x", b)
    doc = json.loads(raw)
    assert doc["height"] == 7 and doc["chain_id"] == "chain-x" and doc["block_hash"] == bytes(range(32)).hex()
    assert doc["accounts"][0]["id"] == str(big) and doc["accounts"][0]["result"] == "ok"
    t = doc["transfers"][0]
    assert t["amount"] == str(big) and t["debit_account_id"] == str(big) and t["pending_status"] == "pending"
    assert t["index"] == 1 and t["tx_hash"] == "02" * 32
    assert msg_id("chain-x", 7) == "chain-x/7"
