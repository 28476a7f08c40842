"""The chat UI in headless Chromium, against the tiny model behind a real gateway."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from streamhost.ui.launch import CHROMIUM, CHROMIUM_ARGS, streamlit_command
from tests.harness import GatewayProcess, free_port, stop_popen, wait_until_serving

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)",
    ),
]

CURSOR = "▌"  # what the UI appends while an answer streams
METRICS = re.compile(r"TTFT \d+\.\d\d s · \d+ tokens · \d+\.\d tokens/s")


def start_ui(
    gateway: GatewayProcess, gateway_url: str, endpoint: str, log: Path
) -> tuple[str, object]:
    port = free_port()
    env = {
        **gateway.env,
        "STREAMHOST_GATEWAY_URL": gateway_url,
        "STREAMHOST_ENDPOINT": endpoint,
    }
    handle = log.open("wb")
    process = subprocess.Popen(
        streamlit_command(port), env=env, stdout=handle, stderr=subprocess.STDOUT
    )
    handle.close()
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/_stcore/health", process)
    return url, process


@pytest.fixture
def page(tmp_path: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


@pytest.fixture
def chat_ui(ui_gateway: GatewayProcess, chat_endpoint: str, tmp_path: Path) -> Iterator[str]:
    url, process = start_ui(ui_gateway, ui_gateway.url, chat_endpoint, tmp_path / "ui.log")
    try:
        yield url
    finally:
        assert not stop_popen(process, timeout=15)


def watch_answer(page, timeout: float = 120.0) -> list[int]:
    """Lengths the live answer goes through before it is complete (its metrics line shows
    when it is)."""
    live = page.locator(".st-key-answer-live")
    done = page.locator(".st-key-metrics-live")
    lengths: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done.count():
            return lengths
        if live.count():
            with contextlib.suppress(PlaywrightError):  # replaced between count and read
                length = len(live.inner_text(timeout=1000).replace(CURSOR, "").strip())
                if not lengths or lengths[-1] != length:
                    lengths.append(length)
        time.sleep(0.03)
    raise AssertionError(f"the answer did not finish in {timeout} s; lengths {lengths}")


def wait_for_text(live, characters: int = 20, timeout: float = 60.0) -> None:
    """Until the live answer holds some text."""
    deadline = time.monotonic() + timeout
    while len(live.inner_text()) < characters:
        assert time.monotonic() < deadline, "no text streamed"
        time.sleep(0.02)


def test_a_suggested_prompt_streams_and_a_second_turn_follows(
    page, chat_ui: str, output_dir: Path
) -> None:
    page.goto(chat_ui)
    page.get_by_role("button", name="what is life?").click()
    lengths = watch_answer(page)
    assert len({n for n in lengths if n > 0}) >= 3, f"the answer did not grow in steps: {lengths}"
    assert METRICS.search(page.locator(".st-key-metrics-live").inner_text())
    first_answer = page.locator(".st-key-answer-live").inner_text()
    page.screenshot(path=str(output_dir / "first-turn.png"), full_page=True)

    page.get_by_test_id("stChatInputTextArea").fill("and what is a pizza?")
    page.keyboard.press("Enter")
    page.locator(".st-key-answer-0").wait_for(timeout=30_000)
    watch_answer(page)
    assert page.locator(".st-key-answer-0").inner_text() == first_answer
    assert METRICS.search(page.locator(".st-key-metrics-0").inner_text())
    assert page.get_by_text("and what is a pizza?").count() == 1
    assert page.get_by_test_id("stException").count() == 0
    page.screenshot(path=str(output_dir / "second-turn.png"), full_page=True)


def test_stop_ends_the_answer_and_keeps_the_text(page, chat_ui: str, output_dir: Path) -> None:
    page.goto(chat_ui)
    page.get_by_role("button", name="provide the steps to make a pizza").click()
    live = page.locator(".st-key-answer-live")
    live.wait_for(timeout=30_000)
    wait_for_text(live)
    page.locator(".st-key-stop button").click()
    metrics = page.locator(".st-key-metrics-0")
    metrics.wait_for(timeout=30_000)
    assert "stopped" in metrics.inner_text()
    tokens = int(re.search(r"(\d+) tokens ·", metrics.inner_text()).group(1))
    assert 0 < tokens < 400
    kept = page.locator(".st-key-answer-0").inner_text()
    time.sleep(1)
    assert page.locator(".st-key-answer-0").inner_text() == kept
    assert page.locator(".st-key-answer-live").count() == 0
    page.screenshot(path=str(output_dir / "stopped.png"), full_page=True)


def test_an_unreachable_gateway_is_a_readable_error(
    page, ui_gateway: GatewayProcess, tmp_path: Path, output_dir: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    url, process = start_ui(ui_gateway, nowhere, "default", tmp_path / "ui.log")
    try:
        page.goto(url)
        cannot_reach = f"Cannot reach the streamhost gateway at {nowhere}"
        expect(page.get_by_test_id("stSidebar")).to_contain_text(cannot_reach, timeout=30_000)
        page.get_by_role("button", name="what is life?").click()
        expect(page.locator(".st-key-error-live")).to_contain_text(cannot_reach, timeout=30_000)
        assert page.get_by_test_id("stException").count() == 0
        page.screenshot(path=str(output_dir / "unreachable.png"), full_page=True)
    finally:
        assert not stop_popen(process, timeout=15)


def test_the_token_slider_reaches_the_request(page, chat_ui: str) -> None:
    page.goto(chat_ui)
    slider = page.get_by_role("slider", name="Number of tokens to generate")
    slider.focus()
    slider.press("Home")  # the smallest answer: 10 tokens
    expect(slider).to_have_value("10")
    page.get_by_role("button", name="what is SageMaker inference?").click()
    metrics = page.locator(".st-key-metrics-live")
    expect(metrics).to_contain_text("tokens/s", timeout=60_000)
    tokens = int(re.search(r"(\d+) tokens ·", metrics.inner_text()).group(1))
    assert 1 <= tokens <= 10


def test_one_bidirectional_stream_holds_the_conversation_and_stop_interrupts_it(
    page, chat_ui: str, output_dir: Path
) -> None:
    page.goto(chat_ui)
    page.locator(".st-key-bidi label").click()
    expect(page.get_by_text("through one InvokeEndpointWithBidirectionalStream")).to_be_visible()
    page.get_by_role("button", name="what is life?").click()
    lengths = watch_answer(page)
    assert len({n for n in lengths if n > 0}) >= 3, f"the answer did not grow in steps: {lengths}"
    assert METRICS.search(page.locator(".st-key-metrics-live").inner_text())

    page.get_by_role("button", name="provide the steps to make a pizza").click()
    live = page.locator(".st-key-answer-live")
    page.locator(".st-key-answer-0").wait_for(timeout=30_000)
    wait_for_text(live)
    page.locator(".st-key-stop button").click()
    metrics = page.locator(".st-key-metrics-1")
    metrics.wait_for(timeout=30_000)
    assert "stopped" in metrics.inner_text()

    # The stream goes on after the interrupt: a third turn is answered on it.
    page.get_by_test_id("stChatInputTextArea").fill("and what is SageMaker?")
    page.keyboard.press("Enter")
    page.locator(".st-key-metrics-1").wait_for(timeout=30_000)
    watch_answer(page)
    assert METRICS.search(page.locator(".st-key-metrics-live").inner_text())
    assert page.get_by_test_id("stException").count() == 0
    page.screenshot(path=str(output_dir / "bidirectional.png"), full_page=True)
