import json

import pytest

from olympus.keys import KeyStore
from olympus.telemetry import redact_log

pytestmark = pytest.mark.unit


def test_keys_map_to_tenants_and_are_stored_hashed(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    assert store.is_empty()
    alpha = store.create("alpha")
    beta = store.create("beta")
    assert store.verify(alpha).tenant == "alpha"
    assert store.verify(beta).tenant == "beta"
    assert store.verify("oly_wrong") is None
    stored = (tmp_path / "keys.json").read_text()
    assert alpha not in stored
    assert beta not in stored
    assert {k["tenant"] for k in json.loads(stored)["keys"]} == {"alpha", "beta"}
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0


def test_a_key_created_elsewhere_is_found_without_restart(tmp_path):
    reader = KeyStore(tmp_path / "keys.json")
    assert reader.verify("oly_x") is None
    key = KeyStore(tmp_path / "keys.json").create("late")
    assert reader.verify(key).tenant == "late"


def test_log_lines_never_carry_secrets():
    event = redact_log(
        None,
        "",
        {
            "api_key": "k",
            "nats_password": "p",
            "Authorization": "b",
            "chunk_tokens": 5,
            "note": "sent Bearer abc.def with oly_0123456789abcdef; password=hunter2",
            "who": "ada@example.com",
        },
    )
    assert event == {
        "api_key": "[redacted]",
        "nats_password": "[redacted]",
        "Authorization": "[redacted]",
        "chunk_tokens": 5,
        "note": "sent [redacted] with [redacted]; [redacted]",
        "who": "ada@example.com",  # logs stay on the machine: only spans mask e-mails
    }
