"""schemathesis, a fuzzer no one here wrote, against the whole stack from its OpenAPI document:
every operation, valid and invalid data, every check (no server error, only documented
statuses, responses that match their schemas, valid data accepted, invalid data refused,
authentication not ignored). Refusals no schema can express are listed in schemathesis.toml.

The stack runs with rate limits far out of reach: the fuzzer sends wrong keys on purpose, and
the per-address throttle would otherwise answer everything after that with 429 (that throttle
has tests of its own).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from olympus.keys import KeyStore
from tests.support.stack import OUTPUT, ROOT, RunningStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLES = int(os.environ.get("OLYMPUS_FUZZ_EXAMPLES", "20"))
SEED = os.environ.get("OLYMPUS_FUZZ_SEED", "20261202")  # fixed in CI: a failure replays


@pytest.fixture(scope="module")
def olympus(tmp_path_factory) -> RunningStack:
    running = start_stack(
        "fuzz",
        tmp_path_factory.mktemp("fuzz"),
        env={
            "OLYMPUS_GATEWAY_RATE_LIMIT": "100000/second",
            "OLYMPUS_GATEWAY_AUTH_FAILURE_LIMIT": "100000/minute",
            "OLYMPUS_GATEWAY_MAX_STREAMS_PER_KEY": "64",
        },
    )
    yield running
    running.stack.stop()


def test_schemathesis_finds_nothing(olympus):
    # A key of its own with a name it cannot guess: the fuzzer calls DELETE /admin/keys/{name}
    # with names it makes up (it revoked "owner" once, and tested nothing after that).
    key = KeyStore(olympus.data_dir / "api_keys.json").create(
        "default", "admin", f"fuzz-{secrets.token_hex(8)}"
    )
    report = OUTPUT / "schemathesis"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{olympus.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        SEED,
        "--workers",
        "1",
        "--request-timeout",
        "120",
        # An answer of up to 1,024 tokens on two CPU cores takes a while; slow is not wrong.
        "--max-response-time",
        "120",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(report),
    ]
    run = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False
    )
    (OUTPUT / "schemathesis.txt").write_text(run.stdout + run.stderr)
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    assert run.returncode == 0, summary or run.stderr[-3000:]
    tested = re.search(r"Tested: (\d+)", summary)
    assert tested is not None
    assert int(tested.group(1)) >= 25, summary  # every operation, the admin routes included
    generated = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert generated is not None, summary
    assert generated.group(1) == generated.group(2), summary
