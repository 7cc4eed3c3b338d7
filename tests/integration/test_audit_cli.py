"""The offline audit commands, run as an operator would, on a real validator's RocksDB.

A 3-validator cluster takes some transfers; one follower is stopped; then
``ledger-validator audit``, ``audit export``, ``audit verify-export`` and
``verify-receipt`` run as subprocesses against its data directory. A byte flipped in
its RocksDB (rocksdict, the validator stopped) makes ``audit`` exit 1 naming the height.

Certificates: if the validators have not stored a majority of cosignatures for the
head (the cosigner may not be wired yet), the test cosigns the stopped validator's
stored headers itself with the validators' own signing keys (v<i>/signing.key.pem),
the C2SP signed-note signature a validator would store.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest
from rocksdict import Options, Rdict

from raft_ledger_client import Account, CreateAccountResult as AR, CreateTransferResult as TR, Transfer, load_private_key
from raft_ledger_client import checkpoint as cp
from raft_ledger_client.receipt import Receipt
from raft_ledger_node.audit import checkpoint_of, resolve_db_path
from raft_ledger_node.config import load_config, load_genesis
from raft_ledger_node.store import COLUMN_FAMILIES, RocksStore

pytestmark = pytest.mark.integration

CLI = os.path.join(os.path.dirname(sys.executable), "ledger-validator")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300)


def _cosign_if_needed(directory: str, db_path: str, genesis) -> None:
    store = RocksStore(db_path)
    try:
        head = store.head().header
        if len(store.cosignatures(head.height)) * 2 > len(genesis.validators):
            return
        origin = cp.origin_for(genesis.chain_id, genesis.hash)
        keys = {v.id: load_private_key(os.path.join(directory, v.id, "signing.key.pem")) for v in genesis.validators}
        items = []
        for height in range(1, head.height + 1):
            header, _ = store.get_block(height)
            body = checkpoint_of(header, origin).body()
            for vid, key in keys.items():
                line = cp.sign_note(body, vid, key)  # "— vid base64(key hash || signature)\n"
                items.append((height, vid, base64.b64decode(line.rsplit(" ", 1)[1])))
        store.put_cosignatures(items)
        store.flush()
    finally:
        store.close()


def test_audit_export_and_receipt_on_a_stopped_validator(cluster, tmp_path):
    bank = cluster.client("bank-a")
    base = 7_000_000
    assert {r.result for r in bank.create_accounts([Account(id=base + i, ledger=840, code=1) for i in (1, 2, 3)])} == {AR.ok}
    for n in range(1, 9):
        [r] = bank.create_transfers([Transfer(id=base + 100 + n, debit_account_id=base + 1 + n % 2,
                                              credit_account_id=base + 3, amount=n, ledger=840, code=1)])
        assert r.result == TR.ok
    bank.close()
    leader = cluster.leader()
    victim = cluster.followers(leader)[0]
    # Let the follower apply everything, then stop it: its DB is the evidence.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        heights = {v.id: (None if isinstance(st, Exception) else st.head.height) for v, st in cluster.status()}
        if heights[victim] is not None and heights[victim] == heights[leader]:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"follower {victim} did not catch up: {heights}")
    cluster.local.stop(victim)
    config_path = os.path.join(cluster.directory, victim, "config.json")
    cfg = load_config(config_path)
    genesis = load_genesis(cluster.genesis_path)
    db_path = resolve_db_path(cfg.data_dir)
    _cosign_if_needed(cluster.directory, db_path, genesis)

    clean = _run("audit", "--config", config_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.startswith("clean: ") and " transactions" in clean.stdout

    out = tmp_path / "export.jsonl"
    exported = _run("audit", "export", "--data-dir", cfg.data_dir, "--genesis", cluster.genesis_path, "--out", str(out))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    lines = out.read_text().splitlines()
    assert len(lines) >= 10 and json.loads(lines[-1])["checkpoint"]
    verified = _run("audit", "verify-export", str(out), "--genesis", cluster.genesis_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("verified: ")

    # A receipt for the last transfer, from the export's proof material.
    rec = json.loads(lines[-2])
    receipt = Receipt(base64.b64decode(rec["envelope"]), rec["leaf_index"],
                      tuple(base64.b64decode(h) for h in rec["proof"]), json.loads(lines[-1])["checkpoint"])
    receipt_path = tmp_path / "tx.tlog-proof"
    receipt_path.write_text(receipt.encode())
    ok = _run("verify-receipt", str(receipt_path), "--genesis", cluster.genesis_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    proved = json.loads(ok.stdout)
    assert proved["tx_hash"] == rec["tx_hash"] and proved["signer"].startswith("bank-a")
    forged = Receipt(receipt.transaction[:-1] + bytes([receipt.transaction[-1] ^ 1]), receipt.leaf_index,
                     receipt.proof, receipt.note)
    receipt_path.write_text(forged.encode())
    bad = _run("verify-receipt", str(receipt_path), "--genesis", cluster.genesis_path)
    assert bad.returncode == 1 and bad.stdout.startswith("NOT VERIFIED: inclusion proof"), bad.stdout

    # Flip one byte of a stored header in the middle of the chain.
    height = json.loads(lines[len(lines) // 2])["height"]
    db = Rdict(db_path, Options(raw_mode=True), column_families={c: Options(raw_mode=True) for c in COLUMN_FAMILIES})
    blocks = db.get_column_family("blocks")
    key = height.to_bytes(8, "big")
    raw = bytearray(blocks[key])
    raw[10] ^= 0x40
    blocks[key] = bytes(raw)
    del blocks
    db.close()
    tampered = _run("audit", "--data-dir", cfg.data_dir, "--genesis", cluster.genesis_path)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert tampered.stdout.startswith(f"INCONSISTENT at height {height}: header-hash"), tampered.stdout

    usage = _run("audit", "--data-dir", str(tmp_path / "nothing"), "--genesis", cluster.genesis_path)
    assert usage.returncode == 2
