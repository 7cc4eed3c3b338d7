"""Proof sizes and verification costs at a given history size (``ledger-validator bench``, part "proofs").

Builds, in a RocksDB of its own, the transaction log (``merkle_log.MerkleLog`` over the
``merkle`` column family, exactly as a validator stores it) with ``proofs_size`` leaves,
and an account tree (``account_tree.AccountTree``) of ``min(proofs_size, 10^6)``
accounts; signs a checkpoint with three validator keys. Then measures, median over
``PROOF_SAMPLES`` random positions:

* inclusion proof: hashes and bytes, server time to build it (RocksDB reads), SDK time
  to verify it (``raft_ledger_client.merkle.verify_inclusion``);
* consistency proof between a random earlier size and the full size: the same;
* account proof: bytes, build, verify (``raft_ledger_client.state_proof``);
* certificate (3 validators, majority 2): note bytes, verify (``verify_certificate``);
* receipt (tlog-proof text of a one-transfer transaction): bytes, verify (``verify_receipt``).

No network; one thread. Times are wall-clock µs on an otherwise idle machine.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import statistics
import time

from raft_ledger_node.bench import ui

PROOF_SAMPLES = 200
ACCOUNT_TREE_MAX = 1_000_000
_FLUSH_NODES = 200_000


def _median_us(fn, args_list) -> float:
    times = []
    for args in args_list:
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def run(cfg, work_dir: str) -> dict:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from rocksdict import Options, Rdict, WriteBatch

    from raft_ledger_client import checkpoint as cp
    from raft_ledger_client import merkle as sdk_merkle
    from raft_ledger_client.receipt import Receipt, verify_receipt
    from raft_ledger_client.state_proof import verify_account_proof
    from raft_ledger_node.ledger import merkle
    from raft_ledger_node.ledger.account_tree import AccountTree
    from raft_ledger_node.ledger.merkle_log import MerkleLog

    n = cfg.proofs_size
    rng = random.Random(cfg.seed)
    d = os.path.join(work_dir, "proofs")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    db = Rdict(os.path.join(d, "merkle"), opts)

    class Nodes:
        """merkle_log.NodeStore over RocksDB, buffered into WriteBatches while building."""

        def __init__(self) -> None:
            self.pending: dict[bytes, bytes] = {}

        def get(self, level: int, index: int) -> bytes | None:
            k = bytes([level]) + index.to_bytes(8, "big")
            v = self.pending.get(k)
            return v if v is not None else db.get(k)

        def put(self, level: int, index: int, value: bytes) -> None:
            self.pending[bytes([level]) + index.to_bytes(8, "big")] = value
            if len(self.pending) >= _FLUSH_NODES:
                self.flush()

        def flush(self) -> None:
            wb = WriteBatch(raw_mode=True)
            for k, v in self.pending.items():
                wb.put(k, v)
            db.write(wb)
            self.pending.clear()

    try:
        nodes = Nodes()
        log = MerkleLog(nodes, 0)
        leaf0 = b"\x00" * 8
        t0 = time.monotonic()
        with ui.progress(f"proofs: transaction log of {n:,} leaves in RocksDB", n, unit="leaves") as update:
            for i in range(n):
                log.append(merkle.leaf_hash(leaf0 + i.to_bytes(8, "big")))
                if i % 50_000 == 0:
                    update(i, i / max(1e-9, time.monotonic() - t0))
            update(n, n / max(1e-9, time.monotonic() - t0))
        nodes.flush()
        build_s = time.monotonic() - t0
        root = log.root()
        idx = [rng.randrange(n) for _ in range(PROOF_SAMPLES)]
        proofs = [log.inclusion_proof(i, n) for i in idx]
        gen_incl = _median_us(lambda i: log.inclusion_proof(i, n), [(i,) for i in idx])
        ver_incl = _median_us(
            lambda i, p: sdk_merkle.verify_inclusion(merkle.leaf_hash(leaf0 + i.to_bytes(8, "big")), i, n, p, root),
            list(zip(idx, proofs)))
        firsts = [rng.randrange(1, n) for _ in range(PROOF_SAMPLES)]
        roots1 = {m: log.root(m) for m in firsts}
        cons = [log.consistency_proof(m, n) for m in firsts]
        gen_cons = _median_us(lambda m: log.consistency_proof(m, n), [(m,) for m in firsts])
        ver_cons = _median_us(lambda m, p: sdk_merkle.verify_consistency(m, n, p, roots1[m], root), list(zip(firsts, cons)))

        accounts = min(n, ACCOUNT_TREE_MAX)
        t = time.monotonic()
        records = [hashlib.sha256(i.to_bytes(8, "big")).digest() * 4 for i in range(accounts)]  # 128-byte stand-ins
        tree = AccountTree.from_leaf_hashes(merkle.leaf_hash(r) for r in records)
        tree_build_s = time.monotonic() - t
        pos = [rng.randrange(accounts) for _ in range(PROOF_SAMPLES)]
        state_root = tree.root()
        aproofs = [tree.proof(p) for p in pos]
        gen_acct = _median_us(lambda p: tree.proof(p), [(p,) for p in pos])
        ver_acct = _median_us(lambda p, pr: verify_account_proof(records[p], p, accounts, pr, state_root),
                              list(zip(pos, aproofs)))

        keys = [(f"v{i}", Ed25519PrivateKey.generate()) for i in (1, 2, 3)]
        validators = [(vid, k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)) for vid, k in keys]
        origin = cp.origin_for("bench", hashlib.sha256(b"bench-genesis").digest())
        checkpoint = cp.Checkpoint(origin=origin, tree_size=n, root_hash=root, height=n // 100, block_hash=bytes(32),
                                   state_root=state_root, validators_hash=cp.validator_set_hash(validators),
                                   next_validators_hash=cp.validator_set_hash(validators))
        note = cp.certify(checkpoint, keys)
        ver_cert = _median_us(lambda: cp.verify_certificate(note, validators, origin), [()] * 50)
        tx = b"\x0a" * 260  # about one signed transaction of one transfer
        log_tx = MerkleLog(_log_ending_with(tx, n), n)
        rp = log_tx.inclusion_proof(n - 1, n)
        r_root = log_tx.root(n)
        r_cp = cp.Checkpoint(origin=origin, tree_size=n, root_hash=r_root, height=n // 100, block_hash=bytes(32),
                             state_root=state_root, validators_hash=checkpoint.validators_hash,
                             next_validators_hash=checkpoint.validators_hash)
        receipt = Receipt(tx, n - 1, tuple(rp), cp.certify(r_cp, keys)).encode()
        ver_receipt = _median_us(lambda: verify_receipt(receipt, validators, origin), [()] * 50)
    finally:
        db.close()
        shutil.rmtree(d, ignore_errors=True)
    incl_hashes = statistics.median(len(p) for p in proofs)
    cons_hashes = statistics.median(len(p) for p in cons)
    acct_hashes = statistics.median(len(p) for p in aproofs)
    return {
        "size": n,
        "log_build_s": build_s,
        "account_tree_size": accounts,
        "account_tree_build_s": tree_build_s,
        "rows": [
            {"proof": f"inclusion of a transaction (tree of {n:,})", "hashes": incl_hashes, "bytes": incl_hashes * 32,
             "build_us": gen_incl, "verify_us": ver_incl},
            {"proof": f"consistency, random size → {n:,}", "hashes": cons_hashes, "bytes": cons_hashes * 32,
             "build_us": gen_cons, "verify_us": ver_cons},
            {"proof": f"account (tree of {accounts:,})", "hashes": acct_hashes, "bytes": acct_hashes * 32,
             "build_us": gen_acct, "verify_us": ver_acct},
            {"proof": "certificate (3 validators, 2 needed)", "hashes": None, "bytes": len(note.encode()),
             "build_us": None, "verify_us": ver_cert},
            {"proof": "receipt (tlog-proof, 1 transaction)", "hashes": len(rp), "bytes": len(receipt.encode()),
             "build_us": None, "verify_us": ver_receipt},
        ],
    }


def _log_ending_with(leaf: bytes, n: int):
    """A MemoryNodeStore holding a log of ``n`` leaves whose last one is ``leaf`` (the
    others are filler): for a realistic receipt at size ``n`` without a second big build."""
    from raft_ledger_node.ledger import merkle
    from raft_ledger_node.ledger.merkle_log import MemoryNodeStore, MerkleLog

    # Complete subtrees of filler: one hash per level is enough, every filler leaf equal.
    filler = merkle.leaf_hash(b"filler")
    level_hash = [filler]
    while (1 << len(level_hash)) <= n:
        level_hash.append(merkle.node_hash(level_hash[-1], level_hash[-1]))

    class Filled(MemoryNodeStore):
        def get(self, level, index):
            hit = self.nodes.get((level, index))
            if hit is not None:
                return hit
            if ((index + 1) << level) <= n - 1:  # wholly before the last leaf
                return level_hash[level]
            return None

    store = Filled()
    log = MerkleLog(store, n - 1)
    log.append(merkle.leaf_hash(leaf))
    return store
