"""Validator config files: a wrong setting is a clear ConfigError at start-up."""
from __future__ import annotations

import json

import pytest

from raft_ledger_node.config import ConfigError, load_config

BASE = {"validator_id": "v1", "data_dir": "data", "genesis_file": "genesis.json", "raft_password": "pw",
        "tls_cert_file": "tls.crt.pem", "tls_key_file": "tls.key.pem"}


def _write(tmp_path, **extra) -> str:
    p = tmp_path / "config.json"
    p.write_text(json.dumps({**BASE, **extra}))
    return str(p)


def test_a_valid_config_loads_with_its_settings(tmp_path):
    cfg = load_config(_write(tmp_path, gc_gen0_threshold=0, submit_timeout_s=3, durable_journal=True))
    assert cfg.gc_gen0_threshold == 0 and cfg.submit_timeout_s == 3 and cfg.durable_journal is True
    assert cfg.data_dir == str(tmp_path / "data")


@pytest.mark.parametrize(
    "setting, value",
    [
        ("inflight_entries_max", "4"),
        ("gc_gen0_threshold", 1.5),
        ("gc_gen0_threshold", True),
        ("submit_timeout_s", "10"),
        ("durable_journal", 1),
        ("raft_peer_dial", ["127.0.0.1:1"]),
    ],
)
def test_a_setting_of_the_wrong_type_is_a_config_error_naming_it(tmp_path, setting, value):
    with pytest.raises(ConfigError, match=setting):
        load_config(_write(tmp_path, **{setting: value}))


def test_unknown_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown settings"):
        load_config(_write(tmp_path, gc_threshold=5))
