"""The README's screenshot: `streamhost up` as `make run` starts it (built-in tiny-chat,
TGI API, chat UI), a suggested prompt clicked in headless Chromium, the answer streamed to
its end, the page saved as a PNG.

    .venv/bin/python scripts/screenshot_chat.py            # writes docs/chat.png

Needs the test extras (Playwright) and Debian's Chromium (`make chromium`). It runs with a
HOME of its own, so it touches neither your credentials nor your state.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from streamhost.ports import free_port
from streamhost.ui.launch import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
METRICS = re.compile(r"TTFT \d+\.\d\d s · \d+ tokens")


def _wait_ready(process: subprocess.Popen) -> None:
    """Until `up` prints its banner's last line: the gateway, `default` and the UI serve."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Ctrl-C stops everything."):
            return
    raise SystemExit(f"streamhost up exited with status {process.wait()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", default="what is life?", help="suggested prompt to click")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "chat.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port, ui_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="streamhost-screenshot-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMHOST_"))}
        env.update(HOME=home)
        env.pop("XDG_STATE_HOME", None)
        command = [sys.executable, "-m", "streamhost.cli", "up", "--port", str(port)]
        up = subprocess.Popen(
            [*command, "--ui-port", str(ui_port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            ui = f"http://127.0.0.1:{ui_port}"
            _wait_ready(up)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                page.goto(ui)
                page.get_by_role("button", name=args.prompt).click()
                metrics = page.locator(".st-key-metrics-live")
                metrics.wait_for(timeout=120_000)
                if not METRICS.search(metrics.inner_text()):
                    raise SystemExit(f"the answer did not finish: {metrics.inner_text()!r}")
                answer = page.locator(".st-key-answer-live").inner_text()
                args.output.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.output))
                browser.close()
        finally:
            os.killpg(up.pid, signal.SIGINT)
            up.wait(90)
    print(f"{args.output}: {answer!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
