import json

import pytest

from olympus import cli
from olympus.keys import KeyStore, parse_duration
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


def test_a_key_has_a_scope_and_each_scope_allows_the_ones_below(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    reader = store.verify(store.create("acme", "read", "reader"))
    admin = store.verify(store.create("acme", "admin", "boss"))
    assert reader.name == "reader"
    assert reader.allows("read")
    assert not reader.allows("write")
    assert all(admin.allows(s) for s in ("read", "write", "admin"))
    assert store.verify(store.create("acme")).scope == "write"


def test_a_revoked_key_is_refused_at_once_by_every_store_sharing_the_file(tmp_path):
    gateway_a, gateway_b = KeyStore(tmp_path / "keys.json"), KeyStore(tmp_path / "keys.json")
    key = gateway_a.create("acme", name="ci")
    assert gateway_a.verify(key) is not None
    assert gateway_b.verify(key) is not None
    assert KeyStore(tmp_path / "keys.json").revoke("ci")
    assert gateway_a.verify(key) is None
    assert gateway_b.verify(key) is None
    assert not gateway_a.revoke("ci")


def test_a_tenant_may_revoke_only_its_own_keys(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    key = store.create("acme", name="theirs")
    assert not store.revoke("theirs", tenant="globex")
    assert store.verify(key) is not None


def test_a_key_expires(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    key = store.create("acme", expires_in_s=parse_duration("30d"))
    found = store.verify(key)
    assert found.expires_at == pytest.approx(found.created_at + 30 * 86400)
    assert store.verify(key, now=found.expires_at - 1) is not None
    assert store.verify(key, now=found.expires_at) is None


@pytest.mark.parametrize(
    ("tenant", "scope", "name", "error"),
    [
        ("acme.corp/eu", "read", None, "invalid tenant"),
        ("", "read", None, "invalid tenant"),
        ("acme", "root", None, "invalid scope"),
        ("acme", "read", "a b", "invalid key name"),
    ],
)
def test_bad_key_requests_say_what_is_wrong(tmp_path, tenant, scope, name, error):
    with pytest.raises(ValueError, match=error):
        KeyStore(tmp_path / "keys.json").create(tenant, scope, name)


def test_names_are_unique_and_listing_shows_no_secret(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    key = store.create("acme", "read", "one")
    with pytest.raises(ValueError, match="exists already"):
        store.create("globex", "read", "one")
    store.verify(key)
    store.flush_last_used()
    (info,) = KeyStore(tmp_path / "keys.json").describe()
    assert (info.name, info.tenant, info.scope) == ("one", "acme", "read")
    assert info.last_used_at is not None
    assert key not in repr(info)
    assert KeyStore(tmp_path / "keys.json").describe(tenant="globex") == []


def test_keys_made_before_scopes_keep_what_they_could_do(tmp_path):
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    key = store.create("acme")
    entries = json.loads(path.read_text())
    for entry in entries["keys"]:
        del entry["scope"], entry["name"], entry["expires_at"]
    path.write_text(json.dumps(entries))
    assert store.verify(key).scope == "admin"


@pytest.mark.parametrize("text", ["0d", "30", "d", "-1h", "1w"])
def test_a_bad_lifetime_is_refused(text):
    with pytest.raises(ValueError, match=r"invalid duration|longer than zero"):
        parse_duration(text)


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


def _keys_create(tmp_path, monkeypatch, capsys, *args: str, key: str) -> tuple[int, str, str]:
    monkeypatch.setenv("FIRST_KEY", key)
    monkeypatch.delenv("OLYMPUS_GATEWAY_API_KEYS_FILE", raising=False)
    status = cli.main(["keys", "create", "--data-dir", str(tmp_path), *args])
    said = capsys.readouterr()
    return status, said.out, said.err


def test_an_installers_key_is_registered_once_and_never_echoed(tmp_path, monkeypatch, capsys):
    given = "oly_" + "ab12" * 16
    args = ("--name", "admin", "--scope", "admin", "--from-env", "FIRST_KEY")
    status, out, err = _keys_create(tmp_path, monkeypatch, capsys, *args, key=given)
    assert status == 0, err
    assert given not in out + err
    found = KeyStore(tmp_path / "api_keys.json").lookup(given)
    assert found is not None
    assert (found.name, found.scope, found.tenant) == ("admin", "admin", "default")
    status, out, _ = _keys_create(tmp_path, monkeypatch, capsys, *args, key=given)
    assert status == 0
    assert "registered already" in out
    assert len(KeyStore(tmp_path / "api_keys.json").describe()) == 1
    # another key under the same name is refused, not swapped in
    other = "oly_" + "cd34" * 16
    status, _, err = _keys_create(tmp_path, monkeypatch, capsys, *args, key=other)
    assert status == 2
    assert "exists already" in err
    assert KeyStore(tmp_path / "api_keys.json").lookup(other) is None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", "$FIRST_KEY is not set"),
        ("short", "a given key must be 'oly_' and 43 to 128"),
        ("oly_" + "x" * 20, "a given key must be 'oly_' and 43 to 128"),
    ],
)
def test_a_weak_or_missing_installer_key_is_refused(tmp_path, monkeypatch, capsys, value, error):
    args = ("--name", "admin", "--from-env", "FIRST_KEY")
    status, _, err = _keys_create(tmp_path, monkeypatch, capsys, *args, key=value)
    assert status == 2
    assert error in err
    assert not (tmp_path / "api_keys.json").exists()
