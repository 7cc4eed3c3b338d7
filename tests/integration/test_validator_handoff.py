"""A governed change of the validator set, certified by the old set (CometBFT-style handoff).

The administrators rotate validator v3's checkpoint key by a ``set_validators``
governance transaction. The block that applies it is certified by the genesis set and
names the new set in its ``next-validators`` line; every later block is certified by the
new set (v3 signing with its new key after a restart). A member whose SDK pinned only
genesis follows the handoff and verifies a checkpoint after it; a checkpoint after the
change does not verify against the genesis set alone.
"""
from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from raft_ledger_client import Account, RetryPolicy, VerificationError
from raft_ledger_client import checkpoint as cp
from raft_ledger_client import governance as gov
from raft_ledger_client.pb.ledger.v1 import ledger_pb2 as pb
from raft_ledger_client.pb.ledger.v1 import ledger_pb2_grpc as pb_grpc
from raft_ledger_node.config import load_genesis
from raft_ledger_node.localcluster import member_client
from raft_ledger_client import load_private_key

pytestmark = pytest.mark.integration

RETRY = RetryPolicy(deadline_s=30.0, attempt_timeout_s=10.0)


def _rotate_v3_key(cluster) -> tuple[bytes, int]:
    """Write a new signing key for v3 and have two admins change it by governance;
    returns (new public key, the governance transaction's block height)."""
    directory = cluster.directory
    with open(cluster.genesis_path) as f:
        validators = json.load(f)["validators"]
    new_key = Ed25519PrivateKey.generate()
    new_pub = new_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    path = os.path.join(directory, "v3", "signing.next.pem")
    with open(path, "wb") as f:
        f.write(new_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    records = [dict(v, public_key=new_pub.hex() if v["id"] == "v3" else v["public_key"]) for v in validators]
    with member_client(directory, "operator", retry=RETRY) as op:
        p = gov.build_proposal(op.chain_id, op.get_configuration(linearizable=True)["version"], [gov.set_validators(records)])
        for admin in ("admin-1", "admin-2"):
            p.approve(admin, "k1", load_private_key(os.path.join(directory, "members", f"{admin}.pem")))
        op.submit_governance(p)
        height = op.head().height
    return new_pub, height


def test_a_client_pinned_to_genesis_follows_a_validator_key_rotation(cluster):
    g = load_genesis(cluster.genesis_path)
    genesis_set, origin = g.validator_keys, g.checkpoint_origin
    with member_client(cluster.directory, "bank-a", retry=RETRY) as bank:
        bank.create_accounts([Account(id=7001, ledger=840, code=1)])
        before = bank.checkpoint()  # trusted: certified by the genesis set
        new_pub, change_height = _rotate_v3_key(cluster)

        # v3 restarts with its new key (its operator swaps the key file), so the new set signs.
        config = os.path.join(cluster.directory, "v3", "config.json")
        with open(config) as f:
            doc = json.load(f)
        cluster.local.stop("v3")
        doc["signing_key_file"] = "signing.next.pem"
        with open(config, "w") as f:
            json.dump(doc, f)
        cluster.local.start("v3")
        cluster.local.wait_ready()
        bank.create_accounts([Account(id=7002, ledger=840, code=1)])

        stub = pb_grpc.LedgerServiceStub(cluster.channel("v1", "bank-a"))
        handoffs = stub.GetHandoffs(pb.GetHandoffsRequest(after_height=0)).handoffs
        assert len(handoffs) == 1
        [h] = handoffs
        assert h.checkpoint.height >= change_height - 1
        handoff_cp = cp.verify_certificate(h.checkpoint.note, genesis_set, origin)  # signed by the OLD set
        new_set = [(v.id, bytes(v.public_key)) for v in h.next]
        assert dict(new_set)["v3"] == new_pub
        assert handoff_cp.next_validators_hash == cp.validator_set_hash(new_set) != handoff_cp.validators_hash

        head = stub.GetHead(pb.GetHeadRequest()).head.height
        later = stub.GetCheckpoint(pb.GetCheckpointRequest(height=head, wait_ms=10_000)).checkpoint
        assert cp.verify_certificate(later.note, new_set, origin).height == head
        with pytest.raises(VerificationError):
            cp.verify_certificate(later.note, genesis_set, origin)  # the checkpoint names the new set

        # The SDK, which pinned only genesis, follows the handoff and trusts the later checkpoint.
        after = bank.checkpoint()
        assert after.height > handoff_cp.height >= before.height
        assert after.validators_hash == cp.validator_set_hash(new_set)
