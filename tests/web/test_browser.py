"""The chat page in headless chromium (Playwright for Python, Debian's /usr/bin/chromium), against
``examples/chat/app.py`` served by uvicorn in a subprocess on a free localhost port.

Skipped, saying what is missing, where chromium or playwright is not installed. A screenshot of
each step is kept under ``test-artifacts/browser/<test>/`` (git-ignored; the path is printed at
the end of the session).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from _web_kit import ROOT, ChatServer, free_port  # isort: skip

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("GRAPHEXEC_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "browser"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TIMEOUT_MS = 20_000

FIRST_REPLY = "Let me look up the weather in Paris."
ANSWER = "The weather in Paris is sunny, 21°C."


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"browser tests need chromium at {CHROMIUM} (Debian: apt-get install chromium; "
            "`make test` installs it when run as root)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need playwright (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Iterator[Shots]:
    folder = ARTIFACTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    yield Shots(folder)


class Shots:
    """Numbered screenshots of one test's steps."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.n = 0

    def take(self, page: Page, step: str) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChatServer]:
    s = ChatServer(tmp_path / "chat.db", free_port(), token_delay=0.15)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def open_page(browser: Browser, url: str) -> Page:
    page = browser.new_page(viewport={"width": 900, "height": 700})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_function("window.gx !== undefined")
    return page


def send(page: Page, text: str) -> str:
    """Type a message and send it; the conversation's trace id (from the page's URL)."""
    page.fill("#input", text)
    page.click("#send")
    page.wait_for_function("new URLSearchParams(location.search).get('trace')")
    trace = page.evaluate("new URLSearchParams(location.search).get('trace')")
    assert isinstance(trace, str)
    return trace


def assistant_texts(page: Page) -> list[str]:
    texts: Any = page.eval_on_selector_all(".msg.assistant", "els => els.map(e => e.textContent)")
    return list(texts)


def wait_card(page: Page, barrier: str = "approve#1") -> None:
    page.wait_for_selector(f"#card[data-barrier='{barrier}']", state="visible")


def wait_status(page: Page, status: str) -> None:
    page.wait_for_selector(f"#status[data-status='{status}']")


def wait_answer(page: Page) -> None:
    page.wait_for_function(
        "([a]) => [...document.querySelectorAll('.msg.assistant')].some(e => e.textContent === a)",
        arg=[ANSWER],
    )


def test_tokens_stream_then_approve(browser: Browser, server: ChatServer, shots: Shots) -> None:
    """Send a message, see the reply arrive token by token, approve the tool call, see the
    answer."""
    page = open_page(browser, server.url + "/")
    shots.take(page, "empty")
    send(page, "What is the weather in Paris?")
    page.wait_for_selector(".msg.assistant[data-tokens]")
    partial = assistant_texts(page)[0]
    status = page.get_attribute("#status", "data-status")
    shots.take(page, "first-tokens")
    # Streaming: the page showed part of the reply while the run was still running.
    assert FIRST_REPLY.startswith(partial)
    assert len(partial) < len(FIRST_REPLY)
    assert "running" == status

    wait_card(page)
    assert [FIRST_REPLY] == assistant_texts(page)
    # Each token was shown on its own, in order: the reply grew one word at a time.
    words = FIRST_REPLY.split(" ")
    prefixes = [" ".join(words[: i + 1]) for i in range(len(words))]
    assert prefixes == page.evaluate("window.gx.seen")
    ids = page.evaluate("window.gx.ids")
    assert sorted(set(ids)) == ids
    assert "Run weather(city='Paris')?" == page.inner_text("#card-text")
    assert ["What is the weather in Paris?"] == page.eval_on_selector_all(
        ".msg.user", "els => els.map(e => e.textContent)"
    )
    shots.take(page, "approval-card")

    page.click("#approve")
    wait_answer(page)
    wait_status(page, "completed")
    assert page.is_hidden("#card")
    assert [FIRST_REPLY, ANSWER] == assistant_texts(page)
    shots.take(page, "answer")

    # The next message is the conversation's next turn; this time the tool call is rejected.
    send(page, "Then what about London?")
    wait_card(page, "approve#2")
    page.click("#reject")
    page.fill("#reject-reason", "not now")
    shots.take(page, "reject-with-reason")
    page.click("#reject-send")
    refusal = "All right, I will not call the tool (not now)."
    page.wait_for_function(
        "([a]) => [...document.querySelectorAll('.msg.assistant')].some(e => e.textContent === a)",
        arg=[refusal],
    )
    wait_status(page, "completed")
    assert [FIRST_REPLY, ANSWER, "Let me look up the weather in London.", refusal] == (
        assistant_texts(page)
    )
    shots.take(page, "second-turn-rejected")


def test_second_tab_approval_updates_the_first(
    browser: Browser, server: ChatServer, shots: Shots
) -> None:
    """Two tabs on one conversation: approving in the second hides the card and shows the answer
    in the first."""
    first = open_page(browser, server.url + "/")
    trace = send(first, "Weather in Paris?")
    wait_card(first)
    second = open_page(browser, f"{server.url}/?trace={trace}")
    wait_card(second)
    assert [FIRST_REPLY] == assistant_texts(second)  # the transcript, replayed once
    shots.take(first, "first-tab-waiting")
    shots.take(second, "second-tab-waiting")

    second.click("#approve")
    wait_answer(first)
    wait_status(first, "completed")
    assert first.is_hidden("#card")
    shots.take(first, "first-tab-after-approval-in-second")


def test_server_killed_while_waiting(browser: Browser, server: ChatServer, shots: Shots) -> None:
    """SIGKILL the server while the card waits: the page says it reconnects, the card comes back
    from the stored state once the server is up again, and Approve completes the run. A reload
    rebuilds the same page, every message once."""
    page = open_page(browser, server.url + "/")
    send(page, "And in Paris?")
    wait_card(page)
    shots.take(page, "card-waiting")

    server.kill()
    page.wait_for_selector("#conn[data-conn='reconnecting']")
    assert page.is_hidden("#card")
    shots.take(page, "server-down")

    refreshes = page.evaluate("window.gx.refreshes")
    server.start()
    wait_card(page)
    page.wait_for_selector("#conn[data-conn='connected']")
    assert page.evaluate("window.gx.refreshes") > refreshes  # rebuilt from GET /runs/{id}
    assert [FIRST_REPLY] == assistant_texts(page)  # nothing shown twice
    shots.take(page, "card-back-after-restart")

    page.reload()
    page.wait_for_function("window.gx !== undefined")
    wait_card(page)
    assert [FIRST_REPLY] == assistant_texts(page)
    shots.take(page, "card-after-reload")

    page.click("#approve")
    wait_answer(page)
    wait_status(page, "completed")
    assert [FIRST_REPLY, ANSWER] == assistant_texts(page)
    shots.take(page, "answer-after-restart")
