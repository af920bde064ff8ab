"""Where the command line finds its gateway and key."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

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


def test_a_command_other_than_mcp_does_not_load_the_mcp_sdk():
    """Every ``olympus`` command paid ~0.5 s to import the MCP SDK, which only ``olympus mcp``
    uses: the command line parses without it, and ``olympus mcp`` still has its command."""
    script = (
        "import sys\n"
        "from olympus import cli\n"
        "try:\n"
        "    cli.main(['mcp', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert "olympus mcp" in done.stdout  # its help: the command is there
    assert done.stdout.strip().splitlines()[-1] == "[]"
