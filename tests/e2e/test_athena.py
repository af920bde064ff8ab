"""Athena's pages, driven by Streamlit's AppTest against a real running gateway: what the user
sees — the streamed answer, real sources, an upload reaching indexed, a delete, readable errors."""

from __future__ import annotations

import sys
import time

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.samples import ZEPHYR as DOC
from tests.support.stack import ROOT, RunningStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PAGES = ROOT / "athena" / "views"


@pytest.fixture(scope="module")
def olympus(tmp_path_factory) -> RunningStack:
    running = start_stack(
        "athena", tmp_path_factory.mktemp("athena"), env={"OLYMPUS_GENERATOR_MAX_NEW_TOKENS": "24"}
    )
    yield running
    running.stack.stop()


@pytest.fixture
def page(olympus, monkeypatch):
    # AppTest runs each page as ``__main__`` and leaves it there: a process that a later test
    # spawned (the embedder's PDF reader) ran the last page again as its own main module.
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    monkeypatch.setenv("OLYMPUS_ATHENA_GATEWAY_URL", olympus.url)
    monkeypatch.setenv("OLYMPUS_ATHENA_API_KEY", olympus.key)

    def open_page(name: str) -> AppTest:
        app = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=180)
        return app.run()

    return open_page


def texts(app: AppTest) -> str:
    """Everything written on the page, as one string."""
    parts = [m.value for m in app.markdown] + [str(c.value) for c in app.caption]
    parts += [t.value for t in app.text]
    parts += [e.value for e in app.error] + [s.value for s in app.success]
    parts += [w.value for w in app.warning] + [i.value for i in app.info]
    return "\n".join(str(p) for p in parts)


def upload(page, name: str, content: str) -> AppTest:
    app = page("upload")
    app.file_uploader[0].set_value([(name, content.encode(), "text/markdown")]).run()
    app.button[0].click().run()
    return app


def test_upload_reaches_indexed_and_says_so(page):
    app = upload(page, "zephyr.md", DOC)
    assert not app.exception, app.exception
    assert "**zephyr.md** — indexed" in texts(app)
    assert app.success[0].value == "Done: 1 of 1 indexed."


def test_an_unreadable_file_fails_with_its_reason(page):
    app = page("upload")
    app.file_uploader[0].set_value([("broken.pdf", b"%PDF-1.4 not really", "application/pdf")])
    app.run()
    app.button[0].click().run()
    assert "**broken.pdf** — failed" in texts(app)
    assert "1 failed" in app.warning[0].value


def test_a_failed_document_says_why_and_a_retry_says_what_it_can_do(page):
    """A file that failed on its content has nothing to be retried from: the page says so.
    (A retry that indexes is tests/chaos/test_retry.py: it takes killing a worker twice.)"""
    upload(page, "cracked.pdf", "%PDF-1.4 not really")
    app = page("documents")
    app.text_input[0].set_value("cracked").run()
    assert "cracked.pdf failed:" in app.error[0].value
    next(b for b in app.button if b.label == "Retry").click().run()
    assert not app.exception, app.exception
    assert "Could not retry it" in app.error[1].value
    assert "upload the file again" in app.error[1].value


def test_chat_streams_an_answer_citing_the_document(page):
    upload(page, "zephyr.md", DOC)
    app = page("chat")
    app.chat_input[0].set_value("Who invented the Zephyr valve?").run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    answer = app.chat_message[1]  # [0] is the question
    assert answer.markdown, "no answer was written"
    labels = [e.label for e in app.expander]
    assert any("zephyr.md" in label for label in labels), labels
    # Reopened, the session shows the conversation from the gateway's history.
    deadline = time.monotonic() + 30
    while True:
        again = page("chat")
        if any(m.markdown and "Zephyr" in m.markdown[0].value for m in again.chat_message):
            break
        assert time.monotonic() < deadline, "the history never showed the question"
        time.sleep(0.5)


def test_documents_lists_opens_and_deletes(page, olympus):
    upload(page, "deleteme.md", "# Delete me\n\nThis document exists to be deleted.")
    app = page("documents")
    app.text_input[0].set_value("deleteme").run()
    assert "1 documents" in texts(app)
    assert app.dataframe[0].value["name"].tolist() == ["deleteme.md"]
    assert "deleteme.md: 1 chunks" in [h.value for h in app.subheader]
    assert "This document exists to be deleted." in texts(app)
    app.checkbox[0].check().run()
    app.button[0].click().run()
    assert "deleteme.md is being deleted." in app.success[0].value
    deadline = time.monotonic() + 30
    while True:
        listing = page("documents")
        listing.text_input[0].set_value("deleteme").run()
        if "0 documents" in texts(listing):
            break
        assert time.monotonic() < deadline, "the document was never deleted"
        time.sleep(0.5)


def test_documents_shows_a_documents_neighbourhood(page):
    upload(page, "target-doc.md", "# Target\n\nThe document the other one links to.")
    upload(page, "linker.md", "# Linker\n\nRead [the target](target-doc.md) first.")
    deadline = time.monotonic() + 60
    while True:
        app = page("documents")
        app.text_input[0].set_value("linker").run()
        charts = app.get("graphviz_chart")
        if charts:
            break
        assert time.monotonic() < deadline, f"no graph of linker.md: {texts(app)}"
        time.sleep(0.5)
    dot = charts[0].proto.spec
    assert '"linker.md"' in dot
    assert '"target-doc.md"' in dot
    assert "links_to" in dot
    related = app.dataframe[1].value
    assert "target-doc.md" in related["document"].tolist()


def test_context_adds_clears_and_searches_with_scores(page):
    upload(page, "zephyr.md", DOC)
    app = page("context")
    app.text_area[0].set_value("I am a hydrologist").run()
    app.button[0].click().run()
    assert "I am a hydrologist" in texts(page("context"))
    app = page("context")
    app.text_input[0].set_value("Zephyr valve inventor").run()
    assert "zephyr.md" in texts(app)
    assert app.get("progress"), "no score bars"
    app.radio[0].set_value("bm25").run()
    assert "zephyr.md" in texts(app)
    app.radio[1].set_value("neighbours").run()
    assert "zephyr.md" in texts(app)
    assert app.session_state["expand"] == "neighbours"  # what the Chat page sends
    app.checkbox[0].check().run()
    app.button[1].click().run()
    assert "I am a hydrologist" not in texts(page("context"))


def test_settings_checks_the_gateway_and_hides_the_key(page, olympus):
    app = page("settings")
    assert app.text_input[1].value == ""  # the key is never shown
    app.button[0].click().run()
    assert "Connected" in app.success[0].value
    app.text_input[1].input("oly_wrong").run()
    app.button[0].click().run()
    assert "the API key was refused" in app.error[0].value


def test_a_gateway_that_is_down_is_a_readable_message(page, monkeypatch):
    monkeypatch.setenv("OLYMPUS_ATHENA_GATEWAY_URL", "http://127.0.0.1:9")
    app = page("documents")
    assert not app.exception
    assert app.error[0].value.startswith("Could not list the documents: cannot reach the gateway")


def test_athena_never_sends_its_own_key_to_a_url_a_visitor_types(page, olympus):
    """A visitor who types their server's address on the Settings page gets nothing of Athena's
    key: the server sees no Authorization at all, and the page asks for a key of their own."""
    import http.server
    import threading

    heard: list[str | None] = []

    class Listener(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            heard.append(self.headers.get("Authorization"))
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = page("settings")
        app.text_input[0].input(f"http://127.0.0.1:{server.server_port}").run()
        app.button[0].click().run()
        assert "only sent to its own gateway" in app.error[0].value
        # Every other page, in a session whose URL was changed, sends no key there either.
        docs = AppTest.from_file(str(PAGES / "documents.py"), default_timeout=60)
        docs.session_state["gateway_url"] = f"http://127.0.0.1:{server.server_port}"
        docs.session_state["api_key"] = olympus.key
        docs.session_state["own_gateway"] = olympus.url
        docs.session_state["collection"] = "default"
        docs.session_state["sessions"] = ["default"]
        docs.session_state["session_id"] = "default"
        docs.run()
        assert not docs.exception
        assert "HTTP 401" in docs.error[0].value  # the listener refused: no key came
    finally:
        server.shutdown()
    assert heard  # the documents page asked that server...
    assert heard == [None] * len(heard)  # ...and never with a key
