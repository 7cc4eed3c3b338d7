"""Part 3: the crypto limit — Ed25519 verifications per second, one thread and all cores.

The node verifies with `cryptography` (``node.crypto.Verifier``), which
releases the GIL inside OpenSSL, so threads scale with cores. PyNaCl
(libsodium) is measured for comparison when it is installed. Each rate is
measured on 200-byte messages (the issue's figure) and on a message the size
of one signed batch body of the workload, since the node verifies one
signature per signed transaction of ``batch`` transfers.
"""
from __future__ import annotations

import os
import threading
import time

from raft_ledger_node.bench import ui
from raft_ledger_node.bench.config import CRYPTO_MESSAGE_BYTES


def _rate(verify, msgs, sig_for, threads: int, seconds: float) -> float:
    counts = [0] * threads
    stop = time.monotonic() + seconds
    start_gate = threading.Barrier(threads + 1)

    def work(k: int) -> None:
        n = 0
        i = k
        start_gate.wait()
        while True:
            for _ in range(64):
                m = msgs[i % len(msgs)]
                verify(sig_for[m], m)
                i += 1
            n += 64
            if time.monotonic() >= stop:
                break
        counts[k] = n

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    t0 = time.monotonic()
    start_gate.wait()
    for t in ts:
        t.join()
    return sum(counts) / (time.monotonic() - t0)


#: Trials per rate; the best is reported (as timeit does), so a burst of other work on the machine
#: lowers one trial, not the figure.
TRIALS = 3


def _best(fn, msgs, threads: int, seconds: float) -> float:
    return max(fn(msgs, threads, seconds / TRIALS) for _ in range(TRIALS))


def _cryptography(msgs, threads, seconds):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    sigs = {m: key.sign(m) for m in msgs}
    return _rate(lambda s, m: pub.verify(s, m), msgs, sigs, threads, seconds)


def _pynacl(msgs, threads, seconds):
    import nacl.signing

    key = nacl.signing.SigningKey.generate()
    vk = key.verify_key
    sigs = {m: key.sign(m).signature for m in msgs}
    return _rate(lambda s, m: vk.verify(m, s), msgs, sigs, threads, seconds)


def run(cfg, body_bytes: int) -> dict:
    cores = cfg.cpus
    sizes = {"200B": CRYPTO_MESSAGE_BYTES, "batch body": body_bytes}
    ui.step(f"Ed25519 verify: 1 thread and {cores} threads, best of {TRIALS} trials in {cfg.crypto_seconds:.0f}s each, "
            f"messages of {CRYPTO_MESSAGE_BYTES} B and {body_bytes:,} B (one signed batch of {cfg.batch})")
    libs = {"cryptography": _cryptography}
    try:
        import nacl.signing  # noqa: F401

        libs["pynacl"] = _pynacl
    except ImportError:
        ui.warn("PyNaCl not installed: measured `cryptography` only (pip install PyNaCl to compare)")
    out: dict = {"cores": cores, "batch": cfg.batch, "rates": {}}
    for lib, fn in libs.items():
        for label, size in sizes.items():
            msgs = [os.urandom(size) for _ in range(64)]
            one = _best(fn, msgs, 1, cfg.crypto_seconds)
            many = _best(fn, msgs, cores, cfg.crypto_seconds)
            out["rates"][f"{lib} {label}"] = {"bytes": size, "verifies_per_s_1_thread": one, "verifies_per_s_all_cores": many}
            ui.note(f"{lib:12s} {size:>6,} B: {one:>9,.0f}/s on 1 thread, {many:>9,.0f}/s on {cores} threads "
                    f"(= {many * cfg.batch:,.0f} transfers/s at {cfg.batch} per signature)")
    return out
