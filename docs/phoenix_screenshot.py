"""Make docs/phoenix-trace.png: one chat answer as a trace in Phoenix, as the README shows it.

    .venv/bin/python docs/phoenix_screenshot.py   (needs Chromium at /usr/bin/chromium)

It starts a throw-away stack with Phoenix, indexes a document, asks a question, and has
Playwright (driving Debian's Chromium, never a downloaded browser) open that trace.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from olympus.stack import temporary_stack

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent / ".olympus" / "models"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]


def main() -> None:
    env = {"OLYMPUS_GENERATOR_MODELS_DIR": str(MODELS)}
    with temporary_stack("olympus-shot-", env=env, phoenix=True) as (stack, config):
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        with httpx.Client(base_url=config.gateway_url, headers=headers, timeout=120) as http:
            doc = http.post(
                "/rag/add_document",
                json={
                    "filename": "olympus.md",
                    "content": "# Olympus\n\nZeus rules from Mount Olympus and wields the "
                    "thunderbolt. Hephaestus forges the gods' weapons.",
                },
            ).json()
            while http.get(f"/rag/documents/{doc['doc_id']}").json()["status"] != "indexed":
                time.sleep(0.2)
            answer = http.post(
                "/mcp/tour/chat",
                json={"input": "Who wields the thunderbolt?", "stream": False, "max_tokens": 32},
            ).json()
        phoenix = config.phoenix_url
        time.sleep(3)  # the batch span processors flush every second
        project = httpx.get(f"{phoenix}/v1/projects").json()["data"]
        project_id = next(p["id"] for p in project if p["name"] == "olympus")
        spans = httpx.get(f"{phoenix}/v1/projects/olympus/spans", params={"limit": 1000}).json()[
            "data"
        ]
        chat = next(
            s
            for s in spans
            if s["name"] == "olympus.chat"
            and s["attributes"].get("olympus.request_id") == answer["request_id"]
        )
        url = f"{phoenix}/projects/{project_id}/traces/{chat['context']['trace_id']}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.goto(url)
            page.wait_for_timeout(6000)
            page.screenshot(path=str(HERE / "phoenix-trace.png"))
            browser.close()
    print(f"written {HERE / 'phoenix-trace.png'} from {url}")


if __name__ == "__main__":
    main()
