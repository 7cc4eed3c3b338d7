"""Governance through the real gRPC API of a running cluster (issue 11 items 5 and 7):
M-of-N admin approvals verified by every validator at apply, stale proposals refused
(Hyperledger Fabric's read set), key rotation and revocation by height, suspension.

Clients come from ``localcluster.member_client`` (the transport it configures, TLS
once the cluster has it); new identities get their signing key and TLS certificate
files where ``member_client`` looks for them.
"""
from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from raft_ledger_client import (
    Account,
    CreateAccountResult,
    PermissionDenied,
    InvalidRequest,
    RetryPolicy,
    TransactionRejected,
    TxRejection,
)
from raft_ledger_client import governance as gov
from raft_ledger_node import pki
from raft_ledger_node.localcluster import member_client

pytestmark = pytest.mark.integration

RETRY = RetryPolicy(deadline_s=20.0, attempt_timeout_s=10.0)
#: A ledger no issuer rule touches in these tests' transfers (account creation only).
LEDGER = 840


def _new_identity(directory: str, identity: str, key_id: str = "k1") -> tuple[str, bytes]:
    """A fresh Ed25519 key (written 0600 where member_client finds it) and a TLS
    client certificate from the cluster CA; returns (key file, public key)."""
    k = Ed25519PrivateKey.generate()
    path = os.path.join(directory, "members", f"{identity}.pem" if key_id == "k1" else f"{identity}.{key_id}.pem")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    tls_key = os.path.join(directory, "members", f"{identity}.tls.key.pem")
    if not os.path.exists(tls_key) and os.path.exists(os.path.join(directory, "ca", "ca.key.pem")):
        with open(os.path.join(directory, "ca", "ca.key.pem"), "rb") as f:
            ca_key = f.read()
        with open(os.path.join(directory, "ca", "ca.crt.pem"), "rb") as f:
            ca_crt = f.read()
        key_pem, crt = pki.issue_certificate(ca_key, ca_crt, kind="member", identity=identity)
        fd = os.open(tls_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        with open(os.path.join(directory, "members", f"{identity}.tls.crt.pem"), "wb") as f:
            f.write(crt)
    return path, gov.public_key_bytes(k)


def _admin_key(directory: str, admin: str):
    from raft_ledger_client import load_private_key

    return load_private_key(os.path.join(directory, "members", f"{admin}.pem"))


def _propose(c, directory: str, changes, approvers=("admin-1", "admin-2"), base=None) -> gov.ProposalFile:
    with member_client(directory, "operator", retry=RETRY) as op:
        version = op.get_configuration(linearizable=True)["version"] if base is None else base
        p = gov.build_proposal(op.chain_id, version, changes)
    for a in approvers:
        p.approve(a, "k1", _admin_key(directory, a))
    return p


def _submit(directory: str, p: gov.ProposalFile, as_identity: str = "operator") -> int:
    with member_client(directory, as_identity, retry=RETRY) as c:
        return c.submit_governance(p)


def _version(directory: str) -> int:
    with member_client(directory, "auditor", retry=RETRY) as c:
        return c.get_configuration(linearizable=True)["version"]


def test_add_member_with_two_of_three_then_it_transacts(cluster_module):
    d = cluster_module.directory
    v0 = _version(d)
    _, pub = _new_identity(d, "bank-d")
    p = _propose(cluster_module, d, [gov.add_member("bank-d", roles=["member"], keys={"k1": pub})])
    assert _submit(d, p) == v0 + 1
    with member_client(d, "auditor", retry=RETRY) as c:
        cfg = c.get_configuration()
    assert cfg["version"] == v0 + 1
    [m] = [m for m in cfg["members"] if m["id"] == "bank-d"]
    assert m["keys"][0]["public_key"] == pub.hex() and m["status"] == "active"
    with member_client(d, "bank-d", retry=RETRY) as c:
        [r] = c.create_accounts([Account(id=4_000_001, ledger=LEDGER, code=1)])
        assert r.result is CreateAccountResult.ok
        [a] = c.lookup_accounts([4_000_001], linearizable=True)
        assert a.owner == "bank-d"


@pytest.mark.parametrize("approvers,code", [
    (("admin-1",), TxRejection.approvals_below_threshold),          # M-1 approvals
    (("admin-1", "admin-1"), TxRejection.approval_duplicate),      # one admin twice
    (("admin-1", "bank-a"), TxRejection.approval_not_admin),       # a member is no admin
])
def test_forged_quorum_is_refused_and_nothing_changes(cluster_module, approvers, code):
    d = cluster_module.directory
    v0 = _version(d)
    with member_client(d, "operator", retry=RETRY) as op:
        p = gov.build_proposal(op.chain_id, v0, [gov.suspend_member("bank-b")])
    for a in approvers:
        # approve() refuses a second approval by one member: append it by hand, as a forger would.
        key = _admin_key(d, a)
        p.approvals.append(gov.pb.Approval(member_id=a, key_id="k1", signature=key.sign(p.proposal)))
    with pytest.raises(TransactionRejected) as e:
        _submit(d, p)
    assert e.value.rejection == code
    assert _version(d) == v0
    with member_client(d, "bank-b", retry=RETRY) as c:  # bank-b is still active
        [r] = c.create_accounts([Account(id=4_100_000 + int(code), ledger=LEDGER, code=1)])
        assert r.result is CreateAccountResult.ok


def test_stale_proposal_is_refused(cluster_module):
    d = cluster_module.directory
    v0 = _version(d)
    stale = _propose(cluster_module, d, [gov.set_roles("auditor", ["auditor"])], base=v0)
    fresh = _propose(cluster_module, d, [gov.set_roles("operator", ["operator"])], base=v0)
    assert _submit(d, fresh) == v0 + 1
    with pytest.raises(InvalidRequest, match="config_version_stale"):
        _submit(d, stale)
    assert _version(d) == v0 + 1


def test_member_may_not_submit_governance(cluster_module):
    d = cluster_module.directory
    p = _propose(cluster_module, d, [gov.suspend_member("bank-b")])
    with pytest.raises(PermissionDenied, match="governance"):
        _submit(d, p, as_identity="bank-a")


def test_rotate_key_revoked_refused_next_block_and_history_verifiable(cluster_module):
    d = cluster_module.directory
    k2_file, k2_pub = _new_identity(d, "bank-a", key_id="k2")
    with member_client(d, "bank-a", retry=RETRY) as a1:
        a1.create_accounts([Account(id=4_200_001, ledger=LEDGER, code=1), Account(id=4_200_002, ledger=LEDGER, code=1)])
        # Signed with k1 before the revocation: stays in history.
        before = a1.submit([a1.sign_accounts([Account(id=4_200_003, ledger=LEDGER, code=1)])])[0]
        assert before.ok
    p = _propose(cluster_module, d, [gov.add_key("bank-a", "k2", k2_pub), gov.revoke_key("bank-a", "k1")])
    _submit(d, p)
    with member_client(d, "auditor", retry=RETRY) as c:
        cfg = c.get_configuration()
    [m] = [m for m in cfg["members"] if m["id"] == "bank-a"]
    keys = {k["key_id"]: k for k in m["keys"]}
    # Validity by height: k1 signed block `before.height`, which is below its revocation.
    assert keys["k1"]["valid_from"] <= before.height < keys["k1"]["revoked_at"]
    assert keys["k2"]["valid_from"] == keys["k1"]["revoked_at"]
    with member_client(d, "bank-a", retry=RETRY) as a1:
        with pytest.raises(PermissionDenied, match="revoked"):
            a1.create_accounts([Account(id=4_200_004, ledger=LEDGER, code=1)])
    with member_client(d, "bank-a", key_id="k2", key_file=k2_file, retry=RETRY) as a2:
        [r] = a2.create_accounts([Account(id=4_200_006, ledger=LEDGER, code=1)])
        assert r.result is CreateAccountResult.ok
        [acct] = a2.lookup_accounts([4_200_003], linearizable=True)
        assert acct.owner == "bank-a"


def test_suspend_refused_then_reinstate_works_then_remove(cluster_module):
    d = cluster_module.directory
    _, pub = _new_identity(d, "bank-e")
    _submit(d, _propose(cluster_module, d, [gov.add_member("bank-e", keys={"k1": pub})]))
    with member_client(d, "bank-e", retry=RETRY) as e:
        e.create_accounts([Account(id=4_300_001, ledger=LEDGER, code=1), Account(id=4_300_002, ledger=LEDGER, code=1)])
    _submit(d, _propose(cluster_module, d, [gov.suspend_member("bank-e")]))
    with member_client(d, "bank-e", retry=RETRY) as e:
        with pytest.raises(PermissionDenied, match="suspended"):
            e.create_accounts([Account(id=4_300_003, ledger=LEDGER, code=1)])
    _submit(d, _propose(cluster_module, d, [gov.reinstate_member("bank-e")]))
    with member_client(d, "bank-e", retry=RETRY) as e:
        [r] = e.create_accounts([Account(id=4_300_004, ledger=LEDGER, code=1)])
        assert r.result is CreateAccountResult.ok
    _submit(d, _propose(cluster_module, d, [gov.remove_member("bank-e")]))
    with member_client(d, "bank-e", retry=RETRY) as e:
        with pytest.raises(PermissionDenied, match="removed"):
            e.create_accounts([Account(id=4_300_005, ledger=LEDGER, code=1)])
    # Removed ids are never reused.
    with pytest.raises(TransactionRejected) as err:
        _submit(d, _propose(cluster_module, d, [gov.add_member("bank-e", keys={"k1": pub})]))
    assert err.value.rejection == TxRejection.member_exists
