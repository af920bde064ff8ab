"""`olympus up` as a user runs it: output prefixed by process, signals forwarded, no orphans."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from olympus import natsserver
from tests.support.stack import MODELS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _up(data_dir: Path, session: bool = False) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "olympus.cli",
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(natsserver.free_port()),
            "--nats-port",
            str(natsserver.free_port()),
            "--metrics-port",
            "0",
            "--athena-port",
            str(natsserver.free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=session,  # a group of its own, as a terminal gives a foreground job
        env={
            **os.environ,
            "OLYMPUS_LOG_FORMAT": "json",
            "OLYMPUS_GENERATOR_MODELS_DIR": str(MODELS),
        },
    )
    lines: list[str] = []
    deadline = time.monotonic() + 240
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ctrl-C stops everything"):
            return proc, lines
    proc.kill()
    raise AssertionError("olympus up did not come up:\n" + "".join(lines[-40:]))


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_up_prints_where_to_go_and_stops_without_orphans(tmp_path, stop_with):
    proc, lines = _up(tmp_path)
    text = "".join(lines)
    assert re.search(r"Gateway: http://127\.0\.0\.1:\d+", text)
    assert re.search(r"Athena \(the UI\): http://127\.0\.0\.1:\d+", text)
    assert re.search(r"API key \(shown once, keep it\): oly_\S+", text)
    assert re.search(r"MCP: http://127\.0\.0\.1:\d+/mcp ", text)
    for name in ("nats", "indexer", "embedder", "generator", "gateway", "athena"):
        assert any(line.startswith(f"{name:>9} | ") for line in lines), name
    children = _children(proc.pid)
    assert len(children) == 6
    time.sleep(5)  # idle a while: nothing should look like a crash meanwhile
    proc.send_signal(stop_with)
    assert proc.wait(60) == 0
    assert proc.stdout is not None
    lines += proc.stdout.readlines()
    alarming = [line for line in lines if "Traceback" in line or '"level": "error"' in line]
    assert alarming == [], "".join(alarming)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children):
        assert time.monotonic() < deadline, "orphans left behind"
        time.sleep(0.1)

    # A second start on the same data keeps the key it made and says so.
    proc, lines = _up(tmp_path)
    assert "the one printed on the first run" in "".join(lines)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


def test_ctrl_c_to_the_whole_group_stops_everything_once(tmp_path):
    """A terminal's Ctrl-C (and docker stop, systemd) signal the whole process group: the
    children used to exit with it and be restarted by the supervisor before it noticed it
    was stopping ("nats exited with 0; restarting in 1s"), and stopping took about a minute."""
    proc, lines = _up(tmp_path, session=True)
    children = _children(proc.pid)
    # Each child in a session of its own: a signal to the supervisor's group reaches only it.
    assert all(os.getsid(pid) != os.getsid(proc.pid) for pid in children)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0
    assert proc.stdout is not None
    lines += proc.stdout.readlines()
    alarming = [
        line
        for line in lines
        if "restarting in" in line or "Traceback" in line or '"level": "error"' in line
    ]
    assert alarming == [], "".join(alarming)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children):
        assert time.monotonic() < deadline, "orphans left behind"
        time.sleep(0.1)
