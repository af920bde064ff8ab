"""Olympus from the clients people use: MCP over streamable HTTP and stdio (the SDK's client,
and the MCP Inspector, which no one here wrote), and the command line (`olympus ingest`, `ask`,
`search`, `documents`, `login`) — each against one real stack."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from olympus.keys import KeyStore
from tests.support import samples
from tests.support.stack import ROOT, RunningStack, start_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_UPLOAD = 64 * 1024
INSPECTOR = ROOT / ".venv" / "npm" / "node_modules" / ".bin" / "mcp-inspector"
TOOLS = {
    "search",
    "ask",
    "list_documents",
    "get_document",
    "add_document",
    "delete_document",
    "add_context",
    "get_context",
    "clear_context",
}


@pytest.fixture(scope="module")
def olympus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(
        "clients",
        tmp_path_factory.mktemp("clients"),
        env={
            "OLYMPUS_GENERATOR_MAX_NEW_TOKENS": "48",
            "OLYMPUS_GATEWAY_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        },
    )
    yield running
    running.stack.stop()


@pytest.fixture(scope="module")
def zephyr(olympus: RunningStack) -> str:
    """A document only the stack knows about, indexed: its id."""
    with olympus.client() as http:
        r = http.post(
            "/rag/add_document", json={"filename": "zephyr.md", "content": samples.ZEPHYR}
        )
        assert r.status_code == 202, r.text
        return str(wait_for(http, r.json()["doc_id"], ("indexed",))["doc_id"])


def _key(olympus: RunningStack, tenant: str, scope: str) -> str:
    return KeyStore(olympus.data_dir / "api_keys.json").create(tenant, scope)  # type: ignore[arg-type]


def _mcp(olympus: RunningStack, key: str | None = None, mode: str = "auto") -> Client:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key or olympus.key}"}, timeout=120
    )
    return Client(streamable_http_client(f"{olympus.url}/mcp", http_client=http), mode=mode)


def _cli_env(olympus: RunningStack, home: Path, key: str | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "OLYMPUS_URL": olympus.url,
        "OLYMPUS_API_KEY": key or olympus.key,
        "XDG_CONFIG_HOME": str(home / "config"),  # never a developer's saved login
        "HOME": str(home),
    }


def _olympus(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "olympus.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- MCP over streamable HTTP ---------------------------------------------------------------
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_mcp_lists_described_tools_resources_and_prompts(olympus, mode):
    async with _mcp(olympus, mode=mode) as client:
        tools = (await client.list_tools()).tools
        templates = (await client.list_resource_templates()).resource_templates
        prompts = (await client.list_prompts()).prompts
    assert {t.name for t in tools} == TOOLS
    for tool in tools:
        assert tool.description, tool.name
        assert "\n    " not in tool.description, tool.name
        for name, schema in tool.input_schema.get("properties", {}).items():
            assert schema.get("description"), f"{tool.name}.{name} is not described"
    assert {t.uri_template for t in templates} == {
        "olympus://documents{?collection}",
        "olympus://documents/{doc_id}",
        "olympus://documents/{doc_id}/chunks",
    }
    assert {p.name for p in prompts} == {"answer_with_citations", "summarize_document"}


async def test_mcp_tools_do_what_the_api_does(olympus, zephyr):
    async with _mcp(olympus) as client:
        found = await client.call_tool("search", {"query": "who invented the Zephyr valve"})
        assert not found.is_error, found.content
        first = found.structured_content["passages"][0]
        assert (first["doc_id"], first["filename"]) == (zephyr, "zephyr.md")
        assert "Okonkwo" in first["text"]
        assert first["chunk_id"]

        progress: list[tuple[float, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, message))

        asked = await client.call_tool(
            "ask",
            {"question": "Who invented the Zephyr valve?", "top_k": 3},
            progress_callback=on_progress,
        )
        assert not asked.is_error, asked.content
        answer = asked.structured_content
        assert answer["answer"].strip()
        assert any(s["doc_id"] == zephyr and s["n"] == 1 for s in answer["sources"])
        assert progress, "no progress notification while the answer was written"
        assert answer["answer"].startswith(progress[-1][1] or "")

        added = await client.call_tool(
            "add_document",
            {
                "filename": "owls.pdf",
                "encoding": "base64",
                "content": base64.b64encode(samples.pdf("Snowy owls hunt lemmings.")).decode(),
                "collection": "birds",
                "metadata": {"source": "mcp"},
            },
        )
        assert not added.is_error, added.content
        doc_id = added.structured_content["doc_id"]
        with olympus.client() as http:
            wait_for(http, doc_id, ("indexed",))
        detail = (await client.call_tool("get_document", {"doc_id": doc_id})).structured_content
        assert detail["document"]["metadata"] == {"source": "mcp"}
        assert "lemmings" in " ".join(c["text"] for c in detail["chunks"])
        listed = await client.call_tool("list_documents", {"collection": "birds"})
        assert [d["doc_id"] for d in listed.structured_content["documents"]] == [doc_id]

        record = await client.read_resource(f"olympus://documents/{doc_id}")
        assert json.loads(record.contents[0].text)["filename"] == "owls.pdf"
        text = await client.read_resource(f"olympus://documents/{doc_id}/chunks")
        assert "lemmings" in text.contents[0].text
        birds = await client.read_resource("olympus://documents?collection=birds")
        assert [d["doc_id"] for d in json.loads(birds.contents[0].text)] == [doc_id]

        summary = await client.get_prompt("summarize_document", {"doc_id": doc_id})
        assert "lemmings" in summary.messages[0].content.text
        cite = await client.get_prompt("answer_with_citations", {"question": "Who hunts?"})
        assert "Who hunts?" in cite.messages[0].content.text

        session = {"session_id": "mcp-test"}
        added_ctx = await client.call_tool("add_context", session | {"content": "I am a birder"})
        assert added_ctx.structured_content["context"] == ["I am a birder"]
        got = await client.call_tool("get_context", session)
        assert got.structured_content["context"] == ["I am a birder"]
        cleared = await client.call_tool("clear_context", session)
        assert cleared.structured_content["context"] == []

        deleted = await client.call_tool("delete_document", {"doc_id": doc_id})
        assert deleted.structured_content["status"] == "deleting"
        with olympus.client() as http:
            deadline = time.monotonic() + 60
            while http.get(f"/rag/documents/{doc_id}").status_code != 404:
                assert time.monotonic() < deadline, "the deleted document is still there"
                await asyncio.sleep(0.2)


async def test_every_line_the_services_log_is_json_bad_mcp_calls_included(olympus):
    """Production reads the logs as JSON lines. The MCP SDK logged with Rich at INFO (a line
    per session, boxed tracebacks of a misnamed tool or prompt), uvicorn its start and
    FastStream its apps' in colour, none of it JSON."""
    async with _mcp(olympus) as client:
        assert (await client.call_tool("no_such_tool", {})).is_error
        with pytest.raises(MCPError):
            await client.get_prompt("no_such_prompt", {})
    wrong = olympus.lines_not_json()
    assert wrong == [], "\n".join(wrong[:20])


async def test_mcp_refuses_bad_calls_with_a_message(olympus, zephyr):
    reader = _key(olympus, "default", "read")
    stranger = _key(olympus, "other-tenant", "write")
    async with _mcp(olympus) as client:
        unknown = await client.call_tool("no_such_tool", {})
        assert unknown.is_error
        assert "no_such_tool" in unknown.content[0].text
        wrong = await client.call_tool("search", {"query": 42})
        assert wrong.is_error
        assert "query" in wrong.content[0].text
        missing = await client.call_tool("get_document", {})
        assert missing.is_error
        assert "doc_id" in missing.content[0].text
        bad_id = await client.call_tool("get_document", {"doc_id": "../../etc/passwd"})
        assert bad_id.is_error
        assert "doc_id" in bad_id.content[0].text
        huge = await client.call_tool(
            "add_document", {"filename": "big.txt", "content": "x" * (MAX_UPLOAD + 1)}
        )
        assert huge.is_error
        assert f"limit of {MAX_UPLOAD} bytes" in huge.content[0].text
        unsupported = await client.call_tool(
            "add_document", {"filename": "tool.exe", "content": "MZ"}
        )
        assert unsupported.is_error
        assert "unsupported" in unsupported.content[0].text
        with pytest.raises(MCPError, match="no document"):
            await client.read_resource("olympus://documents/nope/chunks")
        with pytest.raises(MCPError):
            await client.read_resource("olympus://nothing-here")
        # A prompt asked for wrongly says so, as a tool does (the SDK said "Internal server
        # error" to each of these)
        with pytest.raises(MCPError, match="no prompt 'no_such_prompt'") as told:
            await client.get_prompt("no_such_prompt", {})
        assert told.value.code == INVALID_PARAMS
        with pytest.raises(MCPError, match=r"needs \['doc_id'\]"):
            await client.get_prompt("summarize_document", {})
        with pytest.raises(MCPError, match="no document 'nope'"):
            await client.get_prompt("summarize_document", {"doc_id": "nope"})

    async with _mcp(olympus, key=reader) as client:
        refused = await client.call_tool("delete_document", {"doc_id": zephyr})
        assert refused.is_error
        assert "needs 'write'" in refused.content[0].text
        assert not (await client.call_tool("get_document", {"doc_id": zephyr})).is_error

    async with _mcp(olympus, key=stranger) as client:
        theirs = await client.call_tool("get_document", {"doc_id": zephyr})
        assert theirs.is_error
        assert "no document" in theirs.content[0].text
        hits = await client.call_tool("search", {"query": "Zephyr valve Okonkwo"})
        assert hits.structured_content["passages"] == []
        with pytest.raises(MCPError, match="no document"):
            await client.read_resource(f"olympus://documents/{zephyr}/chunks")


def test_mcp_asks_for_a_key_as_the_authorization_spec_says(olympus):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    with httpx.Client(base_url=olympus.url, timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer oly_wrong"}, {"Authorization": "Basic x"}):
            r = http.post("/mcp", json=body, headers=accept | headers)
            assert r.status_code == 401, r.text
            challenge = r.headers["www-authenticate"]
            assert challenge.startswith("Bearer ")
            metadata_url = challenge.split('resource_metadata="')[1].split('"')[0]
            assert metadata_url == f"{olympus.url}/.well-known/oauth-protected-resource/mcp"
        metadata = http.get(metadata_url).json()
        assert metadata["resource"] == f"{olympus.url}/mcp"
        assert metadata["bearer_methods_supported"] == ["header"]
        assert "authorization_servers" not in metadata  # keys, not OAuth: nothing to send to

        key = {"Authorization": f"Bearer {olympus.key}"}
        for raw in (b"{not json", b"[]", b'{"jsonrpc": "2.0"}', b"\xff" * 100):
            r = http.post("/mcp", content=raw, headers=accept | key | _json)
            assert 400 <= r.status_code < 500, (raw, r.status_code, r.text)
            assert "error" in r.json()  # a JSON-RPC error that says what is wrong
        too_big = http.post(
            "/mcp", content=b" " * (MAX_UPLOAD * 2 + 128 * 1024), headers=accept | key | _json
        )
        assert too_big.status_code == 413
        foreign = http.post(
            "/mcp", json=body, headers=accept | key | {"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403

        for method in ("GET", "DELETE"):  # stateless: no stream of its own, no session
            assert http.request(method, "/mcp", headers=key).status_code == 405


_json = {"Content-Type": "application/json"}


# --- MCP over stdio (olympus mcp, bridged to the gateway) ----------------------------------
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_olympus_mcp_serves_the_same_tools_over_stdio(olympus, zephyr, tmp_path, mode):
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "olympus.cli", "mcp"],
        env=_cli_env(olympus, tmp_path),
    )
    async with Client(params, mode=mode) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        found = await client.call_tool("search", {"query": "Zephyr valve inventor", "top_k": 1})
        assert found.structured_content["passages"][0]["doc_id"] == zephyr
        text = await client.read_resource(f"olympus://documents/{zephyr}/chunks")
        assert "Okonkwo" in text.contents[0].text
        prompt = await client.get_prompt("summarize_document", {"doc_id": zephyr})
        assert "Okonkwo" in prompt.messages[0].content.text
        unknown = await client.call_tool("no_such_tool", {})
        assert unknown.is_error


def test_olympus_mcp_says_when_the_gateway_is_unreachable(tmp_path):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "OLYMPUS_API_KEY": "oly_x"}
    done = _olympus("mcp", "--url", "http://127.0.0.1:9", env=env, timeout=60)
    assert done.returncode == 3
    assert "cannot use the gateway at http://127.0.0.1:9/mcp" in done.stderr
    assert "Traceback" not in done.stderr


# --- a client no one here wrote: the MCP Inspector's CLI -----------------------------------
def _inspector(olympus: RunningStack, home: Path, *args: str) -> Any:
    if not INSPECTOR.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{INSPECTOR} is missing: `make test` installs it with npm")
        pytest.skip("the MCP Inspector is not installed (`make test` installs it with npm)")
    done = subprocess.run(
        [
            str(INSPECTOR),
            "--cli",
            f"{olympus.url}/mcp",
            "--header",
            f"Authorization: Bearer {olympus.key}",
            *args,
        ],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def test_the_mcp_inspector_lists_and_calls_the_tools(olympus, zephyr, tmp_path):
    tools = _inspector(olympus, tmp_path, "--method", "tools/list")["tools"]
    assert {t["name"] for t in tools} == TOOLS
    called = _inspector(
        olympus,
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "search",
        "--tool-arg",
        "query=who invented the Zephyr valve",
    )
    assert not called.get("isError"), called
    assert called["structuredContent"]["passages"][0]["doc_id"] == zephyr
    prompts = _inspector(olympus, tmp_path, "--method", "prompts/list")["prompts"]
    assert {p["name"] for p in prompts} == {"answer_with_citations", "summarize_document"}
    read = _inspector(
        olympus, tmp_path, "--method", "resources/read", "--uri", f"olympus://documents/{zephyr}"
    )
    assert json.loads(read["contents"][0]["text"])["doc_id"] == zephyr


# --- the command line ------------------------------------------------------------------------
def _mixed_folder(root: Path, count: int) -> tuple[set[str], set[str]]:
    """``count`` supported files of every type, in subfolders, and the kinds of file a walk
    must skip or report. The names it must index, and the paths it must skip."""
    kinds = ["txt", "md", "html", "json", "pdf", "docx"]
    names = set()
    for i in range(count):
        kind = kinds[i % len(kinds)]
        folder = root / f"part{i % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"note-{i:03d}.{kind}"
        text = f"Note {i} records that crate {i} holds {i * 7} brass gears for depot {i % 13}."
        (folder / name).write_bytes(samples.render(name, text))
        names.add(name)
    skipped = {
        root / "photo.png": b"\x89PNG\r\n\x1a\n",
        root / "empty.txt": b"",
        root / "huge.txt": b"y" * (MAX_UPLOAD + 1),
        root / "part1" / "note-000.txt": b"the same name as one in part0",
    }
    for path, data in skipped.items():
        path.write_bytes(data)
    (root / ".cache").mkdir()
    (root / ".cache" / "hidden.txt").write_text("never walked")
    (root / "dangling.txt").symlink_to(root / "gone.txt")
    # refused by the gateway (its content is not a PDF): the rest of its upload goes on
    (root / "part2" / "fake.pdf").write_bytes(b"MZ\x90\x00 an executable")
    return names, {str(p) for p in skipped} | {str(root / ".cache")}


def _collection(olympus: RunningStack, collection: str, key: str) -> list[dict[str, Any]]:
    """The collection's documents, read with a key of the test's own (the command's key is
    busy with its own rate limit)."""
    with olympus.client(key) as http:
        page = http.get("/rag/documents", params={"collection": collection, "limit": 1000})
        assert page.status_code == 200, page.text
        return list(page.json()["items"])


def _ctrl_c_heard() -> None:
    """In the child: SIGINT as a terminal's foreground job has it. A test run started in the
    background of a non-interactive shell inherits SIGINT ignored (so does every process it
    starts), and the command would then never hear the Ctrl-C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ingest_is_interrupted_and_resumed_indexing_every_file_once(olympus, tmp_path):
    names, skipped = _mixed_folder(tmp_path / "corpus", 200)
    env = _cli_env(olympus, tmp_path)
    watcher = _key(olympus, "default", "read")
    args = [sys.executable, "-m", "olympus.cli", "ingest", str(tmp_path / "corpus")]
    args += [str(tmp_path / "missing"), "--collection", "crates", "--concurrency", "1"]
    args += ["--ahead", "20"]  # so the interruption comes with most files not sent yet
    first = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_ctrl_c_heard,  # (a shell's background job would ignore Ctrl-C)
    )
    deadline = time.monotonic() + 240
    while len(_collection(olympus, "crates", watcher)) < 40:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run sent too little"
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130, (out, err)
    assert b"interrupted" in out
    sent_before = {d["filename"] for d in _collection(olympus, "crates", watcher)}
    assert 40 <= len(sent_before) < len(names)

    second = subprocess.run([*args, "--json"], env=env, capture_output=True, timeout=600)
    report = json.loads(second.stdout)
    assert second.returncode == 1, "a missing path and a dangling link are failures"
    assert report["indexed"] + report["unchanged"] == len(names) == report["files"] - 1
    assert report["unchanged"] >= 1
    assert report["indexed"] >= len(names) - len(sent_before)
    failures = {f["path"]: f["error"] for f in report["failures"]}
    assert set(failures) == {
        str(tmp_path / "missing"),
        str(tmp_path / "corpus" / "dangling.txt"),
        str(tmp_path / "corpus" / "part2" / "fake.pdf"),
    }
    assert "not a PDF" in failures[str(tmp_path / "corpus" / "part2" / "fake.pdf")]
    assert {s["path"] for s in report["skips"]} == skipped
    held = _collection(olympus, "crates", watcher)
    assert sorted(d["filename"] for d in held) == sorted(names)  # each once
    assert all(d["status"] == "indexed" and d["chunk_count"] >= 1 for d in held)

    third = subprocess.run([*args, "--json"], env=env, capture_output=True, timeout=300)
    again = json.loads(third.stdout)
    assert (again["unchanged"], again["indexed"], again["failed"]) == (len(names), 0, 3)


def test_ask_streams_the_answer_then_its_sources(olympus, zephyr, tmp_path):
    env = _cli_env(olympus, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "olympus.cli", "ask", "Who invented the Zephyr valve?"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = os.read(proc.stdout.fileno(), 1)
    running_after_first_byte = proc.poll() is None
    out, err = proc.communicate(timeout=300)
    text = (first + out).decode()
    assert proc.returncode == 0, err
    assert running_after_first_byte, "the answer came all at once, not streamed"
    answer, _, sources = text.partition("\nSources:\n")
    assert answer.strip()
    assert f"zephyr.md  ({zephyr}" in sources

    as_json = _olympus("ask", "Who invented the Zephyr valve?", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    reply = json.loads(as_json.stdout)
    assert reply["answer"]
    assert reply["sources"][0]["doc_id"] == zephyr


def test_search_and_documents_commands(olympus, zephyr, tmp_path):
    env = _cli_env(olympus, tmp_path)
    found = _olympus("search", "Zephyr valve inventor", "--json", "--top-k", "1", env=env)
    assert json.loads(found.stdout)[0]["doc_id"] == zephyr
    listed = _olympus("documents", "ls", "--json", env=env)
    assert zephyr in {d["doc_id"] for d in json.loads(listed.stdout)}
    shown = _olympus("documents", "show", zephyr, env=env)
    assert shown.returncode == 0
    assert "Okonkwo" in shown.stdout

    with olympus.client() as http:
        r = http.post("/rag/add_document", json={"filename": "gone.md", "content": "to delete"})
        doomed = wait_for(http, r.json()["doc_id"], ("indexed",))["doc_id"]
    removed = _olympus("documents", "rm", doomed, "no-such-doc", env=env)
    assert removed.returncode == 1
    assert f"deleting {doomed}" in removed.stdout
    assert "no-such-doc: no document 'no-such-doc'" in removed.stderr

    # The retry of a failed document itself is tests/chaos/test_retry.py; here, what it says.
    not_failed = _olympus("documents", "retry", zephyr, env=env)
    assert not_failed.returncode == 1
    assert f"{zephyr}: only a failed document can be retried" in not_failed.stderr

    missing = _olympus("documents", "show", "no-such-doc", env=env)
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "olympus: no document 'no-such-doc' (HTTP 404)",
    )
    refused = _olympus("documents", "ls", env=_cli_env(olympus, tmp_path, key="oly_wrong"))
    assert refused.returncode == 3
    assert "API key" in refused.stderr
    down = _olympus("search", "x", "--url", "http://127.0.0.1:9", env=env)
    assert down.returncode == 3
    assert "cannot reach the gateway" in down.stderr
    for done in (missing, refused, down):
        assert "Traceback" not in done.stderr


def test_login_keeps_the_url_and_key_for_the_next_commands(olympus, tmp_path):
    env = {k: v for k, v in _cli_env(olympus, tmp_path).items() if not k.startswith("OLYMPUS_")}
    wrong = _olympus("login", "--url", olympus.url, "--key", "oly_wrong", env=env)
    assert wrong.returncode == 3
    saved = tmp_path / "config" / "olympus" / "config.json"
    assert not saved.exists(), "a refused key was saved"
    done = _olympus("login", "--url", olympus.url, "--key", olympus.key, env=env)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    listed = _olympus("documents", "ls", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)


# --- last in the module: it leaves 127.0.0.1 throttled for the rest of the minute ----------
def test_a_guesser_cannot_dodge_the_login_throttle_with_forwarded_headers(olympus):
    """Nobody is a trusted proxy by default, not even a process on the gateway's own host:
    X-Forwarded-For names no new client, so guesses from here all count against here."""
    with httpx.Client(base_url=olympus.url, timeout=30) as http:
        statuses = []
        for i in range(21):  # one more than OLYMPUS_GATEWAY_AUTH_FAILURE_LIMIT, 20/minute
            spoofed = {"Authorization": "Bearer oly_guess", "X-Forwarded-For": f"10.9.8.{i}"}
            statuses.append(http.get("/rag/documents", headers=spoofed).status_code)
            if statuses[-1] == 429:
                break
        assert set(statuses[:-1]) == {401}
        assert statuses[-1] == 429, statuses
        honest = {"Authorization": f"Bearer {olympus.key}", "X-Forwarded-For": "10.9.9.9"}
        assert http.get("/rag/documents", headers=honest).status_code == 429
