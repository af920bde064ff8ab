"""Athena in a real Chromium, against the stack `olympus up` starts: upload a file, wait for
indexed, ask about it, see the streamed answer cite it, open the citation. Screenshots of every
page go to test-output/screenshots (OLYMPUS_UPDATE_SCREENSHOTS=1 also copies them to docs/)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.samples import ZEPHYR as DOC
from tests.support.stack import OUTPUT, ROOT, RunningStack, start_stack

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium: apt-get install chromium"
    ),
]
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = OUTPUT / "screenshots"


@pytest.fixture(scope="module")
def olympus(tmp_path_factory) -> RunningStack:
    running = start_stack(
        "browser",
        tmp_path_factory.mktemp("browser"),
        # Long enough that the Stop test's click lands mid-answer on a busy CI machine: with
        # 32 tokens the answer once ended before the click reached the generator.
        env={"OLYMPUS_GENERATOR_MAX_NEW_TOKENS": "192"},
        athena=True,
    )
    yield running
    running.stack.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(800)  # let the last rerun paint
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    if os.environ.get("OLYMPUS_UPDATE_SCREENSHOTS") == "1":
        (ROOT / "docs" / "screenshots").mkdir(parents=True, exist_ok=True)
        shutil.copy(SHOTS / f"{name}.png", ROOT / "docs" / "screenshots" / f"{name}.png")


def test_upload_ask_and_open_the_citation(olympus, browser, tmp_path):
    athena = olympus.stack.config.athena_url
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(120_000)

    # Upload: drop the file, press Upload, watch it reach indexed.
    page.goto(f"{athena}/upload")
    source = tmp_path / "zephyr.md"
    source.write_text(DOC)
    page.locator("input[type=file]").set_input_files(str(source))
    page.get_by_role("button", name="Upload", exact=True).click()
    page.get_by_text("Done: 1 of 1 indexed.").wait_for()
    assert page.get_by_text("zephyr.md — indexed").count() >= 1
    shot(page, "upload")

    # Chat: ask about it; the answer streams in with the document as its source.
    page.goto(f"{athena}/")
    page.get_by_test_id("stChatInputTextArea").fill("Who invented the Zephyr valve?")
    page.keyboard.press("Enter")
    citation = page.get_by_text("zephyr.md · score", exact=False).first
    citation.wait_for()
    assert page.get_by_test_id("stChatMessage").count() >= 2
    assert page.get_by_role("button", name="Stop").count() == 0  # only while it streams
    citation.click()  # opens the passage
    page.get_by_text("invented by Marta Okonkwo", exact=False).last.wait_for()
    shot(page, "chat")

    page.goto(f"{athena}/documents")
    page.get_by_text("Chunk 1").first.wait_for()
    shot(page, "documents")

    page.goto(f"{athena}/context")
    page.get_by_label("Search the documents").fill("Zephyr valve")
    page.keyboard.press("Enter")
    page.get_by_text("1. zephyr.md", exact=False).wait_for()
    shot(page, "context")

    page.goto(f"{athena}/settings")
    page.get_by_role("button", name="Save and check").click()
    page.get_by_text("Connected").wait_for()
    shot(page, "settings")
    page.close()


def test_the_stop_button_cancels_the_answer(olympus, browser):
    """A stopped answer is cancelled in the generator: it never completes, so the session
    remembers no turn (a finished one would be in its history within seconds)."""
    athena = olympus.stack.config.athena_url
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(120_000)
    page.goto(f"{athena}/")
    page.get_by_label("New session").fill("stopper")
    page.get_by_role("button", name="Start session").click()
    page.get_by_test_id("stChatInputTextArea").fill("Write a very long story about valves.")
    bus = olympus.bus()
    # (Playwright's sync API holds this thread's event loop: ask NATS from another thread.)
    with ThreadPoolExecutor(1) as other:
        before = other.submit(asyncio.run, _reply_seq(bus)).result()
    page.keyboard.press("Enter")
    stop = page.locator(".st-key-stop").get_by_role("button", name="Stop")
    stop.wait_for()
    # Stop while tokens flow, as a person reading the answer would, however slow the machine.
    with ThreadPoolExecutor(1) as other:
        assert other.submit(asyncio.run, _tokens_flow(bus, before, 120)).result()
    # While the answer streams the script runs, when Streamlit shows a "Stop" of its own: the
    # user must see one Stop button, Athena's, which also cancels the answer in the generator.
    assert page.get_by_role("button", name="Stop").count() == 1
    # Cancelled by the button: the gateway tells the generator "cancel", where a client that
    # only went away gets "detach" and the answer ends after a grace period. Which one was said
    # is the proof, not how soon (a busy CI machine is slow at anything).
    with ThreadPoolExecutor(1) as other:
        listening = threading.Event()
        heard = other.submit(asyncio.run, _control_actions(bus, listening, 120))
        assert listening.wait(30)
        stop.click()
        assert "cancel" in heard.result()
    with ThreadPoolExecutor(1) as other:
        assert other.submit(asyncio.run, _cancelled_answers(bus, 120)).result() == 1
    with olympus.client() as http:
        assert http.get("/mcp/stopper/history").json()["turns"] == []
        # ...and the stack still answers in that session.
        r = http.post("/mcp/stopper/chat", json={"input": "Zephyr?", "stream": False})
        assert r.json()["finish_reason"] in ("stop", "length")
    page.close()


async def _reply_seq(bus: dict) -> int:
    """The last sequence of OLYMPUS_REPLY now: what came before belongs to earlier answers."""
    import nats

    from schemas import subjects

    nc = await nats.connect(**bus)
    try:
        return (await nc.jetstream().stream_info(subjects.REPLY_STREAM.name)).state.last_seq
    finally:
        await nc.close()


async def _tokens_flow(bus: dict, after_seq: int, within_s: float) -> bool:
    """Whether a token of a new answer reaches OLYMPUS_REPLY within ``within_s``."""
    import nats
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from schemas import subjects

    nc = await nats.connect(**bus)
    try:
        sub = await nc.jetstream().subscribe(
            subjects.REPLY_ALL,
            stream=subjects.REPLY_STREAM.name,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1
            ),
        )
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=1)
            except nats.errors.TimeoutError:
                continue
            if json.loads(msg.data)["event"] == "token":
                return True
        return False
    finally:
        await nc.close()


async def _control_actions(bus: dict, listening: threading.Event, within_s: float) -> list[str]:
    """The actions the gateway sends generators, until a "cancel" or ``within_s``."""
    import nats

    from schemas import subjects

    nc = await nats.connect(**bus)
    try:
        sub = await nc.subscribe(subjects.QUERY_CONTROL)
        await nc.flush()
        listening.set()
        actions: list[str] = []
        deadline = time.monotonic() + within_s
        while "cancel" not in actions and time.monotonic() < deadline:
            try:
                actions.append(json.loads((await sub.next_msg(timeout=1)).data)["action"])
            except nats.errors.TimeoutError:
                continue
        return actions
    finally:
        await nc.close()


async def _cancelled_answers(bus: dict, within_s: float) -> int:
    """How many answers in OLYMPUS_REPLY ended cancelled, waiting up to ``within_s`` for one."""
    import nats

    from schemas import subjects

    nc = await nats.connect(**bus)
    try:
        deadline = time.monotonic() + within_s
        while True:
            sub = await nc.jetstream().subscribe(
                subjects.REPLY_ALL, stream=subjects.REPLY_STREAM.name, ordered_consumer=True
            )
            cancelled = 0
            try:
                while True:
                    msg = await sub.next_msg(timeout=0.5)
                    event = json.loads(msg.data)
                    cancelled += event["event"] == "done" and event["finish_reason"] == "cancelled"
            except nats.errors.TimeoutError:
                pass
            await sub.unsubscribe()
            if cancelled or time.monotonic() > deadline:
                return cancelled
            await asyncio.sleep(0.5)
    finally:
        await nc.close()
