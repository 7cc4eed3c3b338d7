"""The development switch (issue 11 item 1): plaintext only when asked for, and loudly.

A cluster generated with ``insecure_plaintext`` has no CA; its validators log that gRPC
and Raft are plaintext; the SDK refuses to talk plaintext unless told ``insecure=True``;
a TLS client cannot reach it either (no silent downgrade in either direction)."""
from __future__ import annotations

import os

import pytest

from raft_ledger_client import Account, CreateAccountResult, LedgerClient, LedgerError, RetryPolicy, load_private_key, read_genesis
from raft_ledger_node.localcluster import client_tls, member_client

from conftest import _start_port, running_cluster

pytestmark = pytest.mark.integration


def test_plaintext_cluster_is_explicit_and_loud(tmp_path):
    with running_cluster(str(tmp_path / "dev"), _start_port(), insecure_plaintext=True) as c:
        d = c.directory
        assert not os.path.exists(os.path.join(d, "ca"))
        for vid in ("v1", "v2", "v3"):
            log = open(os.path.join(d, vid, "validator.log")).read()
            assert "serves gRPC IN PLAINTEXT" in log and "Raft links are PLAINTEXT" in log
        # The SDK will not speak plaintext by default...
        with pytest.raises(ValueError, match="insecure"):
            LedgerClient.from_genesis(os.path.join(d, "genesis.json"), member_id="bank-a", key_id="k1",
                                      key_file=os.path.join(d, "members", "bank-a.pem"))
        # ...only when told so; then signatures still decide who moves what.
        with member_client(d, "bank-a", retry=RetryPolicy(deadline_s=20)) as a:
            [r] = a.create_accounts([Account(id=7_000_001, ledger=840, code=1)])
            assert r.result is CreateAccountResult.ok


def test_a_tls_client_cannot_reach_a_plaintext_validator(tmp_path, cluster_module):
    """A TLS client (the files of a TLS cluster) against the plaintext port fails: no downgrade."""
    with running_cluster(str(tmp_path / "dev2"), _start_port(), insecure_plaintext=True) as plain:
        addresses, chain_id = read_genesis(os.path.join(plain.directory, "genesis.json"))
        tls = client_tls(cluster_module.directory, "bank-a")
        key = load_private_key(os.path.join(plain.directory, "members", "bank-a.pem"))
        with LedgerClient(addresses, member_id="bank-a", key_id="k1", private_key=key, chain_id=chain_id, tls=tls,
                          retry=RetryPolicy(deadline_s=3, attempt_timeout_s=1)) as c:
            with pytest.raises(LedgerError):
                c.head()
