"""Where the command line finds its gateway and key."""

from __future__ import annotations

import argparse
import json

import pytest

from olympus import remote

pytestmark = pytest.mark.unit


def test_the_connection_comes_from_flags_then_environment_then_the_saved_login(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("OLYMPUS_URL", raising=False)
    monkeypatch.delenv("OLYMPUS_API_KEY", raising=False)
    flags = argparse.Namespace(url=None, key=None)
    assert remote.connection(flags) == ("http://127.0.0.1:8000", "")

    saved = tmp_path / "olympus" / "config.json"
    saved.parent.mkdir()
    saved.write_text(json.dumps({"url": "https://saved.example/", "key": "oly_saved"}))
    assert remote.connection(flags) == ("https://saved.example", "oly_saved")

    monkeypatch.setenv("OLYMPUS_URL", "https://env.example")
    monkeypatch.setenv("OLYMPUS_API_KEY", "oly_env")
    assert remote.connection(flags) == ("https://env.example", "oly_env")

    given = argparse.Namespace(url="https://flag.example", key="oly_flag")
    assert remote.connection(given) == ("https://flag.example", "oly_flag")
