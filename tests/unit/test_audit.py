"""The offline audit (node/audit.py) finds tampering with any stored byte of history.

A chain is built in a real RocksStore through the StateMachine from entry *bytes* (real
signed envelopes decoded by every validator's ``tx_from_committed``), with cosignatures
of three validators (C2SP signed-note Ed25519 signatures of each block's checkpoint).
Then, one at a time, a byte of a stored envelope, header, account, transfer, Merkle log
node (RFC 6962 complete subtree), tx-index entry or cosignature is flipped in the closed
RocksDB, and the audit must name the height and kind. Hypothesis picks which record,
which byte and the XOR mask.
"""
from __future__ import annotations

import base64
import functools
import io
import json
import os
import shutil
import tempfile

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rocksdict import Options, Rdict

from raft_ledger_client import checkpoint as cp
from raft_ledger_node.audit import audit, checkpoint_of, export, resolve_db_path, verify_export
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.governance import Configuration, Member, MemberKey, ValidatorRecord
from raft_ledger_node.ledger.types import RawEntry, TransferFlags
from raft_ledger_node.state_machine import StateMachine
from raft_ledger_node.store import COLUMN_FAMILIES, RocksStore
from tests.unit.helpers import (
    CHAIN,
    MEMBER,
    OTHER,
    PUBLIC_KEY,
    T0,
    account,
    accounts_tx,
    decode_envelope,
    make_tx,
    transfer,
    transfers_tx,
)
from raft_ledger_node.ledger.types import Operation

GENESIS_HASH = bytes(range(100, 132))
ORIGIN = cp.origin_for(CHAIN, GENESIS_HASH)
VALIDATOR_KEYS = {f"v{i}": Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in (1, 2, 3)}


def _raw(key) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


CONFIG = Configuration(
    version=1,
    members=tuple(Member(m, ("member",), (MemberKey("k1", PUBLIC_KEY),)) for m in sorted((MEMBER, OTHER))),
    issuers=((1, (MEMBER,)),),
    admins=(),
    threshold=0,
    validators=tuple(ValidatorRecord(v, f"127.0.0.1:{7000 + i}", f"127.0.0.1:{7100 + i}", b"", _raw(k))
                     for i, (v, k) in enumerate(sorted(VALIDATOR_KEYS.items()))),
)
AUDIT = dict(chain_id=CHAIN, genesis_hash=GENESIS_HASH, configuration=CONFIG)


def _blocks():
    """The chain's blocks: lists of transactions (one per block, some with several)."""
    yield [accounts_tx(account(1), account(2), account(3))]
    yield [accounts_tx(account(4), member=OTHER)]
    yield [transfers_tx(transfer(10, 1, 2, 5)), transfers_tx(transfer(11, 2, 1, 3))]
    yield [transfers_tx(transfer(12, 1, 4, 7, flags=TransferFlags.PENDING, timeout=3600))]
    # A signer genesis does not know: recorded as rejected (signer_not_found).
    yield [make_tx("mallory", Operation.create_transfers, [transfer(13, 1, 2, 1)])]
    yield [transfers_tx(transfer(14, 3, 1, 2)), accounts_tx(account(5), member=OTHER)]
    yield [transfers_tx(transfer(15, 2, 3, 1))]


def build_chain(path: str) -> dict:
    """Build the chain at ``path``; returns what each height wrote (for expected heights)."""
    store = RocksStore(path)
    store.bind_genesis(GENESIS_HASH, CONFIG)
    machine = StateMachine(store, decode_envelope=decode_envelope, chain_id=CHAIN)
    wrote = {"account": {}, "transfer": {}, "merkle": {}, "txs": {}, "heights": 0}
    clock = T0
    for raft_index, txs in enumerate(_blocks(), start=1):
        clock += 1_000_000
        raw = codec.encode_entry(RawEntry(clock, tuple(tx.envelope for tx in txs)))
        done = machine.apply(raw, 1, raft_index)
        ws = done.writeset
        h = ws.header.height
        for a in ws.accounts:
            wrote["account"][a] = h
        for t in ws.transfers:
            wrote["transfer"][t] = h
        for node in ws.merkle_nodes:
            wrote["merkle"][node] = h
        wrote["txs"][h] = [tx.tx_hash for tx in ws.txs]
        wrote["heights"] = h
        body = checkpoint_of(ws.header, ORIGIN).body()
        # Two of three validators cosign every block; the third only the even ones.
        signers = ["v1", "v2"] + (["v3"] if h % 2 == 0 else [])
        store.put_cosignatures([(h, v, cp.key_hash(v, _raw(VALIDATOR_KEYS[v])) + VALIDATOR_KEYS[v].sign(body))
                                for v in signers])
    assert any(r.rejection for r in done.results) is False
    store.flush()
    store.close()
    return wrote


@functools.cache
def _pristine() -> tuple[str, dict]:
    d = tempfile.mkdtemp(prefix="audit-chain-")
    wrote = build_chain(os.path.join(d, "db"))
    return d, wrote


@pytest.fixture
def chain(tmp_path):
    src, wrote = _pristine()
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return str(dst), wrote


def _copy() -> tuple[str, dict]:
    src, wrote = _pristine()
    dst = tempfile.mkdtemp(prefix="audit-tamper-")
    shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst, wrote


def _items(path: str, cf: str) -> list[tuple[bytes, bytes]]:
    db = Rdict(path, Options(raw_mode=True), column_families={c: Options(raw_mode=True) for c in COLUMN_FAMILIES})
    try:
        it = db.get_column_family(cf).iter()
        it.seek_to_first()
        out = []
        while it.valid():
            out.append((it.key(), it.value()))
            it.next()
        return out
    finally:
        db.close()


def _flip(path: str, cf: str, key: bytes, position: int, mask: int) -> None:
    db = Rdict(path, Options(raw_mode=True), column_families={c: Options(raw_mode=True) for c in COLUMN_FAMILIES})
    try:
        family = db.get_column_family(cf)
        value = bytearray(family[key])
        value[position % len(value)] ^= mask
        family[key] = bytes(value)
        del family
    finally:
        db.close()


def test_clean_chain_passes_with_every_cosignature_verified(chain):
    data, wrote = chain
    progress = []
    report = audit(resolve_db_path(data), **AUDIT, progress=lambda done, total: progress.append((done, total)))
    assert report.inconsistency is None, str(report.inconsistency)
    assert report.blocks == wrote["heights"] == 7
    assert report.transactions == sum(len(v) for v in wrote["txs"].values())
    assert report.cosignatures == 7 * 2 + 3  # v1, v2 every block; v3 at heights 2, 4, 6
    assert progress[-1] == (7, 7)


def test_audit_refuses_another_chains_genesis(chain):
    from raft_ledger_node.audit import AuditError

    with pytest.raises(AuditError, match="another chain"):
        audit(resolve_db_path(chain[0]), chain_id=CHAIN, genesis_hash=bytes(32), configuration=CONFIG)


# -- one flipped byte per kind of record: (column family, expected kind, expected height) --

def _height_of_tx(wrote, tx_hash):
    return next(h for h, hashes in wrote["txs"].items() if tx_hash in hashes)


def _expect(cf: str, key: bytes, wrote: dict) -> tuple[str, int]:
    if cf == "transactions":
        return "envelope-hash", _height_of_tx(wrote, key)
    if cf == "blocks":
        return "header-hash", int.from_bytes(key, "big")
    if cf == "accounts":
        return "account", wrote["account"][int.from_bytes(key, "big")]
    if cf == "transfers":
        return "transfer", wrote["transfer"][int.from_bytes(key, "big")]
    if cf == "merkle":
        return "merkle-node", wrote["merkle"][(key[0], int.from_bytes(key[1:], "big"))]
    if cf == "tx_index":
        return "tx-index", _height_of_tx(wrote, key)
    if cf == "cosignatures":
        return "cosignature", int.from_bytes(key[:8], "big")
    raise AssertionError(cf)


TAMPERED = ["transactions", "blocks", "accounts", "transfers", "merkle", "tx_index", "cosignatures"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cf=st.sampled_from(TAMPERED), pick=st.integers(0, 10_000), position=st.integers(0, 10_000), mask=st.integers(1, 255))
def test_a_flipped_byte_is_found_at_its_height(cf, pick, position, mask):
    data, wrote = _copy()
    try:
        db = resolve_db_path(data)
        items = _items(db, cf)
        key, _ = items[pick % len(items)]
        _flip(db, cf, key, position, mask)
        report = audit(db, **AUDIT)
        kind, height = _expect(cf, key, wrote)
        assert report.inconsistency is not None, f"{cf} {key.hex()} tampered, audit passed"
        assert (report.inconsistency.kind, report.inconsistency.height) == (kind, height), str(report.inconsistency)
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.parametrize("cf", TAMPERED)
def test_each_kind_of_record_first_and_last(chain, cf):
    """Deterministic companion of the property test: the first and the last record of
    each column family, first and last byte."""
    data, wrote = chain
    db = resolve_db_path(data)
    items = _items(db, cf)
    for key, value, position in ((items[0][0], items[0][1], 0), (items[-1][0], items[-1][1], -1)):
        _flip(db, cf, key, position % len(value), 0x01)
        report = audit(db, **AUDIT)
        assert (report.inconsistency.kind, report.inconsistency.height) == _expect(cf, key, wrote), str(report.inconsistency)
        _flip(db, cf, key, position % len(value), 0x01)  # restore
    assert audit(db, **AUDIT).clean


def test_a_stray_envelope_and_a_dropped_block_are_found(chain):
    data, wrote = chain
    db = resolve_db_path(data)
    raw = Rdict(db, Options(raw_mode=True), column_families={c: Options(raw_mode=True) for c in COLUMN_FAMILIES})
    raw.get_column_family("transactions")[b"\x07" * 32] = b"not in any block"
    raw.close()
    report = audit(db, **AUDIT)
    assert (report.inconsistency.kind, report.inconsistency.height) == ("extra-record", 7)
    raw = Rdict(db, Options(raw_mode=True), column_families={c: Options(raw_mode=True) for c in COLUMN_FAMILIES})
    del raw.get_column_family("transactions")[b"\x07" * 32]
    del raw.get_column_family("blocks")[(4).to_bytes(8, "big")]
    raw.close()
    report = audit(db, **AUDIT)
    assert (report.inconsistency.kind, report.inconsistency.height) == ("block-missing", 4)


# -- export and verify-export --------------------------------------------------------

def _export(data) -> list[str]:
    out = io.StringIO()
    rep = export(resolve_db_path(data), out, chain_id=CHAIN, genesis_hash=GENESIS_HASH)
    assert rep.certified_height == 7 and rep.unproven == 0
    return out.getvalue().splitlines()


VALIDATORS = [(v.id, v.public_key) for v in CONFIG.validators]
MEMBER_KEYS = {(m.id, k.key_id): k.public_key for m in CONFIG.members for k in m.keys}


def test_export_verifies_with_the_sdk_alone(chain):
    lines = _export(chain[0])
    assert json.loads(lines[-1])["checkpoint"].startswith(ORIGIN + "\n")
    rep = verify_export(lines, validators=VALIDATORS, origin=ORIGIN, member_keys=MEMBER_KEYS)
    assert rep.failure is None, rep.failures
    assert rep.proven == rep.transactions == len(lines) - 1 == rep.checkpoint.tree_size
    # mallory's key is in no genesis: reported, not failed.
    assert rep.unverifiable_by_key == 1 and rep.signatures_verified == rep.transactions - 1


def test_export_tampering_is_rejected(chain):
    lines = _export(chain[0])
    rec = json.loads(lines[2])
    envelope = bytearray(base64.b64decode(rec["envelope"]))
    envelope[-1] ^= 1
    forged = dict(rec, envelope=base64.b64encode(bytes(envelope)).decode())
    rep = verify_export(lines[:2] + [json.dumps(forged)] + lines[3:], validators=VALIDATORS, origin=ORIGIN,
                        member_keys=MEMBER_KEYS)
    assert rep.failure.startswith("line 3: tx_hash")
    rep = verify_export(lines[:2] + lines[3:], validators=VALIDATORS, origin=ORIGIN, member_keys=MEMBER_KEYS)
    assert "leaf index" in rep.failure
    others = [(v, _raw(Ed25519PrivateKey.generate())) for v, _ in VALIDATORS]
    rep = verify_export(lines, validators=others, origin=ORIGIN, member_keys=MEMBER_KEYS)
    assert rep.failure.startswith("certificate: validator-set hash")
