"""``python -m olympus.alive``: the containers' healthcheck reads a worker's heartbeat file or
asks a server's health URL (the container tier runs it in every container)."""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time

import pytest

from olympus import alive
from olympus.natsserver import free_port

pytestmark = pytest.mark.unit


def test_a_fresh_heartbeat_is_healthy_and_a_stale_or_missing_one_is_not(tmp_path, monkeypatch):
    beat = tmp_path / "olympus.alive"
    monkeypatch.setenv("OLYMPUS_HEARTBEAT_FILE", str(beat))
    assert alive.main([]) == 1  # never beaten: not started yet
    beat.touch()
    assert alive.main([]) == 0
    stale = time.time() - alive.STALE_AFTER_S - 1
    os.utime(beat, (stale, stale))
    assert alive.main([]) == 1


def test_without_a_heartbeat_file_it_says_what_to_set(monkeypatch, capsys):
    monkeypatch.delenv("OLYMPUS_HEARTBEAT_FILE", raising=False)
    assert alive.main([]) == 2
    assert "OLYMPUS_HEARTBEAT_FILE" in capsys.readouterr().err


def test_a_url_that_does_not_answer_is_unhealthy():
    assert alive.main([f"http://127.0.0.1:{free_port()}/healthz"]) == 1


def test_a_url_that_answers_ok_is_healthy(tmp_path):
    (tmp_path / "healthz").write_text("ok")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            port = server.server_address[1]
            assert alive.main([f"http://127.0.0.1:{port}/healthz"]) == 0
            assert alive.main([f"http://127.0.0.1:{port}/missing"]) == 1  # a 404 is not alive
        finally:
            server.shutdown()
