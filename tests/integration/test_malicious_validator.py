"""A malicious validator: a real gRPC server on 127.0.0.1 that serves an honest chain and,
one scenario at a time, tampers with it. The SDK (verified reads of ``LedgerClient``) must
raise VerificationError for every tampering and accept the honest answers.

The chain is built in-process with the node's pure modules (``MerkleLog`` over a
``MemoryNodeStore``, ``AccountTree``, ``codec.encode_account``) and certified with the
SDK's ``certify`` by generated validator keys; at ``HANDOFF_HEIGHT`` the validator set
changes (v1, v2, v3 -> v2, v3, v4), a CometBFT-style handoff certified by the old set.

Sources: RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency); C2SP signed-note and
tlog-checkpoint; immudb GHSA-672p-m5jq-mrh8 (every step of an advance is proven) and
CVE-2022-39199 (trust keyed on the pinned genesis, never on what the server says).
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
from concurrent import futures

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings, strategies as st

from raft_ledger_client import LedgerClient, RetryPolicy, VerificationError
from raft_ledger_client.checkpoint import Checkpoint, certify, origin_for, validator_set_hash
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
from raft_ledger_client.receipt import verify_receipt
from raft_ledger_client.wire import account_to_pb, u128
from raft_ledger_node.ledger import codec
from raft_ledger_node.ledger.account_tree import AccountTree, leaf_hash as account_leaf
from raft_ledger_node.ledger.merkle_log import MemoryNodeStore, MerkleLog
from raft_ledger_node.ledger.types import Account

CHAIN = "evil-test"
GENESIS = hashlib.sha256(b"the genesis file of the malicious-validator test").digest()
HEIGHTS = 8
HANDOFF_HEIGHT = 4
MEMBER = "bank-a"

pytestmark = pytest.mark.timeout(300)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


_rng = random.Random(12)
KEYS = {f"v{i}": Ed25519PrivateKey.from_private_bytes(_rng.randbytes(32)) for i in range(1, 6)}
OUTSIDERS = [("v1", Ed25519PrivateKey.from_private_bytes(_rng.randbytes(32))),
             ("mallory", Ed25519PrivateKey.from_private_bytes(_rng.randbytes(32)))]
MEMBER_KEY = Ed25519PrivateKey.from_private_bytes(_rng.randbytes(32))
SET1 = [(v, _raw(KEYS[v])) for v in ("v1", "v2", "v3")]
SET2 = [(v, _raw(KEYS[v])) for v in ("v2", "v3", "v4")]


def _signers(vset):
    return [(v, KEYS[v]) for v, _ in vset]


def _envelope(body: pb.Transaction) -> bytes:
    body.chain_id = CHAIN
    body.valid_until = 1 << 62
    raw = body.SerializeToString(deterministic=True)
    return pb.SignedTransaction(body=raw, member_id=MEMBER, key_id="k1",
                                signature=MEMBER_KEY.sign(raw)).SerializeToString(deterministic=True)


@dataclasses.dataclass
class Block:
    checkpoint: Checkpoint
    note: str
    accounts: list  # Account records in position order, after this block
    tree: AccountTree
    vset: list


class Chain:
    """An honest chain of HEIGHTS blocks; blocks 1..HANDOFF_HEIGHT are certified by SET1
    (block HANDOFF_HEIGHT hands over to SET2), the rest by SET2."""

    def __init__(self, genesis: bytes = GENESIS, seed: int = 1, heights: int = HEIGHTS) -> None:
        rng = random.Random(seed)
        self.origin = origin_for(CHAIN, genesis)
        self.log = MerkleLog(MemoryNodeStore())
        self.txs: list[bytes] = []
        self.tx_height: dict[bytes, int] = {}
        self.blocks: dict[int, Block] = {}
        accounts: list[Account] = []
        prev = bytes(32)
        for h in range(1, heights + 1):
            for _ in range(rng.randint(1, 4)):
                if not accounts or rng.random() < 0.5:
                    a = Account(id=len(accounts) + 1, ledger=840, code=1, owner=MEMBER, timestamp=h * 1000 + len(accounts))
                    accounts.append(a)
                    body = pb.Transaction(create_accounts=pb.CreateAccounts(accounts=[pb.Account(id=u128(a.id), ledger=840, code=1)]))
                else:
                    i = rng.randrange(len(accounts))
                    amount = rng.randint(1, 1000)
                    accounts[i] = dataclasses.replace(accounts[i], credits_posted=accounts[i].credits_posted + amount)
                    body = pb.Transaction(create_transfers=pb.CreateTransfers(transfers=[pb.Transfer(
                        id=u128(rng.getrandbits(64) + 1), debit_account_id=u128(999), credit_account_id=u128(i + 1),
                        amount=u128(amount), ledger=840, code=1)]))
                env = _envelope(body)
                self.log.append(hashlib.sha256(b"\x00" + env).digest())
                self.txs.append(env)
                self.tx_height[hashlib.sha256(env).digest()] = h
            tree = AccountTree.from_leaf_hashes(account_leaf(codec.encode_account(a)) for a in accounts)
            vset = SET1 if h <= HANDOFF_HEIGHT else SET2
            nxt = SET2 if h >= HANDOFF_HEIGHT else SET1
            block_hash = hashlib.sha256(prev + h.to_bytes(8, "big")).digest()
            prev = block_hash
            cp = Checkpoint(self.origin, self.log.size, self.log.root(self.log.size), h, block_hash, tree.root(),
                            validator_set_hash(vset), validator_set_hash(nxt))
            self.blocks[h] = Block(cp, certify(cp, _signers(vset)), list(accounts), tree, vset)

    def height_of_size(self, size: int) -> int | None:
        return next((h for h, b in self.blocks.items() if b.checkpoint.tree_size == size), None)


def _cp_pb(block: Block, note: str | None = None) -> pb.Checkpoint:
    return pb.Checkpoint(height=block.checkpoint.height, note=note or block.note, signatures=2, quorum=2)


class EvilLedger(pb_grpc.LedgerServiceServicer):
    """The honest answers over ``chain`` up to ``head``; ``tamper(method, request, response)``
    rewrites a response (returns it), set per scenario."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.head = HEIGHTS
        self.tamper = None
        self.calls: list[str] = []

    def _out(self, method, request, response):
        self.calls.append(method)
        return self.tamper(method, request, response) if self.tamper else response

    def GetCheckpoint(self, request, context):
        h = request.height or self.head
        if h > self.head:
            context.abort(grpc.StatusCode.NOT_FOUND, f"height {h} not certified")
        return self._out("GetCheckpoint", request, pb.GetCheckpointResponse(checkpoint=_cp_pb(self.chain.blocks[h])))

    def GetInclusionProof(self, request, context):
        chain = self.chain
        head = chain.blocks[self.head]
        index = next((i for i, t in enumerate(chain.txs) if hashlib.sha256(t).digest() == request.tx_hash), None)
        size = request.tree_size or head.checkpoint.tree_size
        h = chain.height_of_size(size)
        if index is None or h is None or h > self.head or index >= size:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such transaction")
        resp = pb.GetInclusionProofResponse(
            transaction=chain.txs[index], leaf_index=index, tree_size=size, proof=chain.log.inclusion_proof(index, size),
            height=chain.tx_height[request.tx_hash], checkpoint=_cp_pb(chain.blocks[h]),
            result=pb.TransactionResult(tx_hash=request.tx_hash, height=chain.tx_height[request.tx_hash]))
        return self._out("GetInclusionProof", request, resp)

    def GetConsistencyProof(self, request, context):
        if not 0 < request.first <= request.second <= self.chain.log.size:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad sizes")
        resp = pb.GetConsistencyProofResponse(proof=self.chain.log.consistency_proof(request.first, request.second))
        return self._out("GetConsistencyProof", request, resp)

    def GetAccountProofs(self, request, context):
        block = self.chain.blocks[self.head]
        resp = pb.GetAccountProofsResponse(account_count=block.tree.size, checkpoint=_cp_pb(block))
        for i in request.ids:
            position = ((i.hi << 64) | i.lo) - 1
            if 0 <= position < len(block.accounts):
                a = block.accounts[position]
                resp.accounts.append(account_to_pb(a))
                resp.proofs.append(pb.AccountProof(record=codec.encode_account(a), position=position,
                                                   siblings=block.tree.proof(position)))
        return self._out("GetAccountProofs", request, resp)

    def GetHandoffs(self, request, context):
        resp = pb.GetHandoffsResponse()
        for h in range(request.after_height + 1, min(request.up_to_height, self.head) + 1):
            b = self.chain.blocks[h]
            if b.checkpoint.next_validators_hash != b.checkpoint.validators_hash:
                resp.handoffs.append(pb.Handoff(checkpoint=_cp_pb(b), next=[
                    pb.ValidatorEntry(id=v, public_key=k) for v, k in SET2]))
        return self._out("GetHandoffs", request, resp)


@pytest.fixture(scope="module")
def evil():
    chain = Chain()
    servicer = EvilLedger(chain)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_LedgerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.address = f"127.0.0.1:{port}"
    yield servicer
    server.stop(grace=None)


@pytest.fixture
def server(evil):
    evil.head, evil.tamper, evil.calls = HEIGHTS, None, []
    yield evil
    evil.head, evil.tamper = HEIGHTS, None


def client(server, **kw) -> LedgerClient:
    return LedgerClient([server.address], member_id=MEMBER, key_id="k1", private_key=MEMBER_KEY, chain_id=CHAIN,
                        insecure=True, genesis_hash=GENESIS, genesis_validators=SET1,
                        retry=RetryPolicy(deadline_s=3.0, attempt_timeout_s=2.0), **kw)


def _tx_hash(server, i: int) -> bytes:
    return hashlib.sha256(server.chain.txs[i]).digest()


def _flip(data: bytes, position: int) -> bytes:
    b = bytearray(data)
    b[position % len(b)] ^= 0x01
    return bytes(b)


def _resign(note_cp: Checkpoint, signers, **changes) -> str:
    return certify(dataclasses.replace(note_cp, **changes), signers)


# -- the honest chain is accepted ------------------------------------------------------

def test_honest_server_is_accepted_across_a_handoff(server, tmp_path):
    """Fresh client pinned to genesis (SET1) follows the handoff at HANDOFF_HEIGHT to SET2."""
    path = str(tmp_path / "trusted.json")
    server.head = 2
    with client(server, trusted_state_path=path) as c:
        assert c.checkpoint().height == 2
        for h in range(3, HEIGHTS + 1):  # every step: consistency proof each time
            server.head = h
            cp = c.checkpoint()
            assert (cp.height, cp.tree_size) == (h, server.chain.blocks[h].checkpoint.tree_size)
        assert c.trusted.validators == tuple(sorted(SET2))
        accounts = server.chain.blocks[HEIGHTS].accounts
        got = c.lookup_accounts([a.id for a in accounts] + [10_000])
        assert [(a.id, a.credits_posted) for a in got] == [(a.id, a.credits_posted) for a in accounts]
        assert c.get_account(10_000) is None
        for i in range(len(server.chain.txs)):
            proof = c.get_transaction_proof(_tx_hash(server, i))
            assert proof.leaf_index == i and proof.checkpoint.height == HEIGHTS
        receipt = c.receipt(_tx_hash(server, 0))
        assert verify_receipt(receipt.encode(), SET2, server.chain.origin).height == HEIGHTS
    # Persisted: a new client resumes at the trusted checkpoint and refuses a rollback.
    server.head = 3
    with client(server, trusted_state_path=path) as c:
        assert c.trusted.height == HEIGHTS
        with pytest.raises(VerificationError, match="rollback"):
            c.checkpoint()


def test_a_lagging_validator_read_is_accepted_as_an_older_state(server):
    with client(server) as c:
        c.checkpoint()
        server.head = HEIGHTS - 1  # same validator set, older: proven a prefix of the trusted tree
        [a] = c.lookup_accounts([1])
        assert a.id == 1 and c.trusted.height == HEIGHTS


# -- tampering, one scenario at a time ---------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tx=st.integers(0, 1_000), position=st.integers(0, 10_000))
def test_a_flipped_byte_in_a_transaction_is_caught(server, tx, position):
    server.tamper, server.head = None, HEIGHTS
    i = tx % len(server.chain.txs)

    def tamper(method, request, resp):
        if method == "GetInclusionProof":
            resp.transaction = _flip(resp.transaction, position)
        return resp

    server.tamper = tamper
    with client(server) as c, pytest.raises(VerificationError, match="do not hash"):
        c.get_transaction_proof(_tx_hash(server, i))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tx=st.integers(0, 1_000), element=st.integers(0, 100), position=st.integers(0, 31))
def test_a_flipped_byte_in_an_inclusion_proof_is_caught(server, tx, element, position):
    i = tx % len(server.chain.txs)

    def tamper(method, request, resp):
        if method == "GetInclusionProof" and resp.proof:
            k = element % len(resp.proof)
            resp.proof[k] = _flip(resp.proof[k], position)
        return resp

    server.tamper = tamper
    with client(server) as c, pytest.raises(VerificationError, match="inclusion proof"):
        c.get_transaction_proof(_tx_hash(server, i))


@pytest.mark.parametrize("where", ["record", "fields", "both", "position", "siblings", "count", "other-id"])
def test_a_tampered_account_is_caught(server, where):
    def tamper(method, request, resp):
        if method != "GetAccountProofs":
            return resp
        a, p = resp.accounts[0], resp.proofs[0]
        if where == "record":
            p.record = _flip(p.record, 40)
        elif where in ("fields", "both"):
            a.credits_posted.lo += 1_000_000
            if where == "both":  # a consistent lie: the record re-encoded from the lying fields
                fields = dict(dataclasses.asdict(server.chain.blocks[HEIGHTS].accounts[0]))
                fields["credits_posted"] += 1_000_000
                p.record = codec.encode_account(Account(**fields))
        elif where == "position":
            p.position += 1
        elif where == "siblings":
            p.siblings[0] = _flip(p.siblings[0], 3)
        elif where == "count":
            resp.account_count += 1
        elif where == "other-id":  # account 2 served for account 1
            other = server.chain.blocks[HEIGHTS].accounts[1]
            resp.accounts[0].CopyFrom(account_to_pb(other))
            p.record = codec.encode_account(other)
        return resp

    server.tamper = tamper
    with client(server) as c, pytest.raises(VerificationError):
        c.lookup_accounts([1])


@pytest.mark.parametrize("field", ["tree_size", "root_hash", "height", "block_hash", "state_root", "next_validators_hash"])
def test_a_changed_checkpoint_field_breaks_the_signatures(server, field):
    """The header fields the checkpoint carries, changed after the validators signed it."""
    block = server.chain.blocks[HEIGHTS]
    cp = block.checkpoint
    value = getattr(cp, field)
    changed = dataclasses.replace(cp, **{field: value + 1 if isinstance(value, int) else _flip(value, 7)})
    forged = changed.body().decode() + block.note[len(cp.body()):]  # the old signature lines

    def tamper(method, request, resp):
        if method == "GetCheckpoint":
            resp.checkpoint.note = forged
        return resp

    server.tamper = tamper
    with client(server) as c, pytest.raises(VerificationError, match="invalid signature"):
        c.checkpoint()


def test_a_flipped_byte_in_the_note_is_caught(server):
    """A quorum note (2 of 3 lines): a changed bit anywhere breaks it. (With three lines a
    line made unrecognisable is ignored, as signed-note requires, and two still certify.)"""
    block = server.chain.blocks[HEIGHTS]
    note = certify(block.checkpoint, _signers(block.vset)[:2]).encode()
    for position in range(len(note)):
        for bit in (0x01, 0x20):
            b = bytearray(note)
            b[position] ^= bit

            def tamper(method, request, resp, text=bytes(b).decode("utf-8", "replace")):
                if method == "GetCheckpoint":
                    resp.checkpoint.note = text
                return resp

            server.tamper = tamper
            with client(server) as c, pytest.raises(VerificationError):
                c.checkpoint()


def test_a_proof_for_a_different_tree_size_is_caught(server):
    chain = server.chain

    def tamper(method, request, resp):
        if method == "GetInclusionProof":
            smaller = chain.blocks[HEIGHTS - 1].checkpoint.tree_size
            resp.proof[:] = chain.log.inclusion_proof(resp.leaf_index, smaller)
        return resp

    server.tamper = tamper
    with client(server) as c, pytest.raises(VerificationError, match="inclusion proof"):
        c.get_transaction_proof(_tx_hash(server, 0))

    def claim(method, request, resp):  # the right proof, but said to be for another size
        if method == "GetInclusionProof":
            resp.tree_size -= 1
        return resp

    server.tamper = claim
    with client(server) as c, pytest.raises(VerificationError, match="tree size"):
        c.get_transaction_proof(_tx_hash(server, 0))


def _forked_chain() -> Chain:
    """Another history of this chain (other transactions), certified by every key: what a
    colluding majority could sign. The SDK still refuses it once it trusts the honest log."""
    return Chain(seed=99)


@pytest.mark.parametrize("how", ["fork", "truncated", "empty", "extended"])
def test_a_forked_or_truncated_history_is_caught(server, how):
    fork = _forked_chain()
    with client(server) as c:
        server.head = 3
        c.checkpoint()
        server.head = HEIGHTS

        def tamper(method, request, resp):
            if how == "fork" and method == "GetCheckpoint":
                resp.checkpoint.note = fork.blocks[HEIGHTS].note
            if how == "fork" and method == "GetConsistencyProof" and request.second <= fork.log.size:
                resp.proof[:] = fork.log.consistency_proof(request.first, request.second)
            if how == "fork" and method == "GetHandoffs":
                resp.handoffs[0].checkpoint.note = fork.blocks[HANDOFF_HEIGHT].note
            if method == "GetConsistencyProof" and how == "truncated":
                del resp.proof[-1]
            if method == "GetConsistencyProof" and how == "empty":
                del resp.proof[:]
            if method == "GetConsistencyProof" and how == "extended":
                resp.proof.append(bytes(32))
            return resp

        server.tamper = tamper
        with pytest.raises(VerificationError):
            c.checkpoint()
        assert c.trusted.height == 3  # nothing changed


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trusted=st.integers(HANDOFF_HEIGHT, HEIGHTS - 2), data=st.data())
def test_a_consistency_proof_that_skips_a_step_is_caught(server, trusted, data):
    """GHSA-672p-m5jq-mrh8: advancing a -> c with a proof from b (a < b < c) must fail."""
    server.tamper, server.head = None, HEIGHTS
    later = data.draw(st.integers(trusted + 2, HEIGHTS))
    first = server.chain.blocks[trusted].checkpoint.tree_size
    second = server.chain.blocks[later].checkpoint.tree_size
    middle = data.draw(st.integers(first + 1, second - 1))
    with client(server) as c:
        server.head = trusted
        c.checkpoint()
        server.head = later

        def tamper(method, request, resp):
            if method == "GetConsistencyProof":
                assert (request.first, request.second) == (first, second)
                resp.proof[:] = server.chain.log.consistency_proof(middle, second)
            return resp

        server.tamper = tamper
        with pytest.raises(VerificationError, match="consistency proof"):
            c.checkpoint()
        assert c.trusted.height == trusted


@pytest.mark.parametrize("case", ["too-few", "duplicated", "non-validators", "replayed", "unsigned-outsider-only"])
def test_a_bad_certificate_is_caught(server, case):
    block = server.chain.blocks[HEIGHTS]
    cp, vset = block.checkpoint, block.vset
    signers = _signers(vset)
    body = cp.body().decode()
    if case == "too-few":
        note = certify(cp, signers[:1])
        reason = "too few"
    elif case == "duplicated":
        one = certify(cp, signers[:1])
        note = one + one[len(body) + 1:]  # the same line twice
        reason = "signed twice"
    elif case == "non-validators":  # one validator, plus keys that are not of the set (one named 'v1')
        note = certify(cp, signers[:1] + OUTSIDERS)
        reason = "too few"
    elif case == "replayed":  # valid signature lines of another height's checkpoint
        other = server.chain.blocks[HEIGHTS - 1].note
        note = body + "\n" + other[len(server.chain.blocks[HEIGHTS - 1].checkpoint.body()) + 1:]
        reason = "invalid signature"
    else:
        note = certify(cp, OUTSIDERS)
        reason = "too few"

    def tamper(method, request, resp):
        if method == "GetCheckpoint":
            resp.checkpoint.note = note
        return resp

    server.tamper = tamper
    with client(server) as c, pytest.raises(VerificationError, match=reason):
        c.checkpoint()


def test_an_old_checkpoint_presented_as_new_is_caught(server):
    with client(server) as c:
        c.checkpoint()
        for h in range(1, HEIGHTS):
            server.head = h
            with pytest.raises(VerificationError, match="rollback"):
                c.checkpoint()
        assert c.trusted.height == HEIGHTS


def test_another_body_at_the_trusted_height_is_a_fork(server):
    block = server.chain.blocks[HEIGHTS]
    forged = _resign(block.checkpoint, _signers(block.vset), block_hash=bytes(32))
    with client(server) as c:
        c.checkpoint()

        def tamper(method, request, resp):
            if method == "GetCheckpoint":
                resp.checkpoint.note = forged
            return resp

        server.tamper = tamper
        with pytest.raises(VerificationError, match="fork"):
            c.checkpoint()


def test_a_checkpoint_of_another_genesis_is_caught(server):
    other = Chain(genesis=hashlib.sha256(b"another genesis").digest())

    def tamper(method, request, resp):
        if method == "GetCheckpoint":
            resp.checkpoint.note = other.blocks[2].note
        return resp

    server.tamper = tamper
    with client(server) as c, pytest.raises(VerificationError, match="wrong origin"):
        c.checkpoint()


def test_a_state_file_of_another_genesis_is_refused(server, tmp_path):
    path = str(tmp_path / "trusted.json")
    with client(server, trusted_state_path=path) as c:
        c.checkpoint()
    with pytest.raises(VerificationError, match="another chain"):
        LedgerClient([server.address], member_id=MEMBER, key_id="k1", private_key=MEMBER_KEY, chain_id=CHAIN,
                     insecure=True, genesis_hash=hashlib.sha256(b"x").digest(), genesis_validators=SET1,
                     trusted_state_path=path)


@pytest.mark.parametrize("case", ["wrong-next-set", "signed-by-newcomer", "missing", "past-target"])
def test_a_bad_handoff_is_caught(server, case):
    block = server.chain.blocks[HANDOFF_HEIGHT]

    def tamper(method, request, resp):
        if method != "GetHandoffs":
            return resp
        if case == "missing":
            del resp.handoffs[:]
        elif case == "wrong-next-set":  # the server claims the new set is v1, v2, v5
            del resp.handoffs[0].next[:]
            resp.handoffs[0].next.extend(pb.ValidatorEntry(id=v, public_key=_raw(KEYS[v])) for v in ("v1", "v2", "v5"))
        elif case == "signed-by-newcomer":
            # v4 (the newcomer) and an outsider: not a majority of the set before the change
            resp.handoffs[0].checkpoint.note = certify(block.checkpoint, [("v4", KEYS["v4"]), OUTSIDERS[1]])
        elif case == "past-target":
            resp.handoffs[0].checkpoint.note = server.chain.blocks[HEIGHTS].note
        return resp

    server.tamper = tamper
    with client(server) as c:
        with pytest.raises(VerificationError):
            c.checkpoint()
        assert c.trusted.checkpoint is None
