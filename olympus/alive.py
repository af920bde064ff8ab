"""A container's healthcheck, without credentials: is this process alive and doing its job?

    python -m olympus.alive          a worker: its heartbeat file (OLYMPUS_HEARTBEAT_FILE) is
                                     fresh, so it has started and is connected to the bus
    python -m olympus.alive URL      a server (the gateway, Athena): URL answers 2xx

A worker cannot ask its own health subject (its NATS user may not publish there), and the
healthcheck must not hold a credential of its own: so the worker says it is alive by touching a
file (``olympus.worker``) and this reads how long ago it did. Exit status 0 is healthy.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from pathlib import Path

HEARTBEAT_EVERY_S = 5.0
STALE_AFTER_S = 30.0  # six beats missed: stopped, stuck or cut off from the bus


def heartbeat_fresh(path: Path, now: float | None = None) -> bool:
    try:
        touched = path.stat().st_mtime
    except OSError:
        return False
    return (now if now is not None else time.time()) - touched < STALE_AFTER_S


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 (a fixed local URL)
            return 200 <= response.status < 300
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if argv:
        return 0 if answers(argv[0]) else 1
    path = os.environ.get("OLYMPUS_HEARTBEAT_FILE")
    if not path:
        print("olympus.alive: set OLYMPUS_HEARTBEAT_FILE (or give a URL)", file=sys.stderr)
        return 2
    return 0 if heartbeat_fresh(Path(path)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
