"""Hostile input at the door: the fuzzing harness (fuzz_ingress.py) against a real validator.

One in-process validator (node/main.py ``Validator``: real RocksDB, real pysyncobj
replica) per module, reached through real gRPC on 127.0.0.1 with raw bytes. Every
input must get a proper status within a bound, leave no error in the validator's
log, and change no state unless it is a valid Submit (see fuzz_ingress.check).

``LEDGER_FUZZ_EXAMPLES`` is the number of inputs (default 2000: about 10 s here),
three quarters to Submit, one quarter to the reads. ``LEDGER_FUZZ_SEED`` picks
another random sequence (default: derandomized, the same inputs every run);
``LEDGER_FUZZ_STRICT=1`` also fails on the known finding; ``LEDGER_FUZZ_REPORT``
names a file for the summary (counts by method and status, throughput). Full run:
``LEDGER_FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest -p no:cacheprovider tests/fuzz -q -s``.
"""
from __future__ import annotations

import os
import random
import sys

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_node.ledger import limits

import fuzz_ingress as fz

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "2000"))
SEED = os.environ.get("LEDGER_FUZZ_SEED")


def fuzz_settings(n: int):
    s = settings(
        max_examples=max(1, n),
        deadline=None,
        database=None,
        derandomize=SEED is None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    return (lambda f: seed(int(SEED))(s(f))) if SEED is not None else s


@pytest.fixture(scope="module")
def node():
    with fz.Node() as n:
        n.corpus = fz.open_corpus(n)
        yield n
        summary = n.stats.summary()
        print("\n" + summary, file=sys.stderr)
        if os.environ.get("LEDGER_FUZZ_REPORT"):
            with open(os.environ["LEDGER_FUZZ_REPORT"], "w") as f:
                f.write(summary + "\n")


#: Hypothesis picks the seed of each input; the generator does the rest (see fuzz_ingress).
SEEDS = st.integers(0, (1 << 64) - 1)


def run_one(node, inp) -> None:
    problems = fz.check(node, inp.method, inp.raw, inp.expect, inp.label)
    assert not problems, "\n".join(problems) + f"\ninput: {inp!r}"


def test_hostile_submits(node):
    @fuzz_settings(EXAMPLES * 3 // 4)
    @given(SEEDS)
    def run(s):
        run_one(node, fz.gen_submit(random.Random(s), node.corpus))

    run()


def test_hostile_reads(node):
    @fuzz_settings(EXAMPLES - EXAMPLES * 3 // 4)
    @given(SEEDS)
    def run(s):
        run_one(node, fz.gen_read(random.Random(s)))

    run()


@pytest.mark.parametrize("kind", range(fz.BULK_KINDS))
def test_every_limit_once(node, kind):
    """The count and size limits (tests/fuzz draws them rarely), each once:
    at tx_events_max, past it, past submit_txs_max, submit_txs_max duplicates, past
    submit_events_max, past tx_bytes_max, past submit_bytes_max, past the gRPC cap."""
    inp = fz.bulk(node.corpus, kind)
    assert not fz.check(node, inp.method, inp.raw, inp.expect, inp.label)


@pytest.mark.parametrize("defect", fz.DEFECTS)
def test_every_defect_once(node, defect):
    """Each defect of an otherwise valid signed transaction is refused with INVALID_ARGUMENT, state unchanged."""
    body = pb.Transaction(create_accounts=pb.CreateAccounts(accounts=[pb.Account(id=pb.UInt128(lo=77), ledger=840, code=1)]))
    inp = fz.defect(node.corpus, body, defect)
    assert not fz.check(node, inp.method, inp.raw, inp.expect, inp.label)


def test_unknown_key_id_of_100_kb_is_answered_invalid_argument(node):
    body = pb.Transaction(create_accounts=pb.CreateAccounts(accounts=[pb.Account(id=pb.UInt128(lo=77), ledger=840, code=1)]))
    inp = fz.defect(node.corpus, body, "huge_key_id")
    assert not fz.check(node, inp.method, inp.raw, inp.expect, inp.label)


@pytest.mark.parametrize("method", ["/ledger.v1.LedgerService/Submit", "/ledger.v1.LedgerService/GetBlock"])
def test_undecodable_bytes_are_invalid_argument(node, method):
    raw = b"\x0a\x05abc"  # field 1, length 5, only 3 bytes follow: truncated
    assert fz.try_parse(fz.METHODS[method][0], raw) is None
    before = node.state()
    r = node.call(method, raw)
    assert node.state() == before
    assert not r.logs, [x.getMessage() for x in r.logs]
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT


def test_an_unknown_field_beside_the_signed_body_is_refused(node):
    body = pb.Transaction(create_accounts=pb.CreateAccounts(accounts=[pb.Account(id=pb.UInt128(lo=1), ledger=840, code=1)]))
    signed = node.corpus.stx(body).SerializeToString()
    replay = fz.pb_field(1, signed + fz.pb_field(15, b"replay"))  # SubmitRequest{transactions: [stx + unknown field 15]}
    before = node.state()
    assert not fz.check(node, fz.SUBMIT, fz.pb_field(1, signed), label="original")  # valid: accepted (or a retry)
    mid = node.state()
    assert not fz.check(node, fz.SUBMIT, replay, grpc.StatusCode.INVALID_ARGUMENT, "unknown field beside the body")
    assert node.state()[:2] == mid[:2], f"the replay moved the head from {before[:2]}"
