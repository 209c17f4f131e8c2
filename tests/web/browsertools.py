"""What the browser tests share: Debian's Chromium, screenshots, signing in, node pages.

``launch_chromium`` starts ``/usr/bin/chromium`` headless through Playwright (never a
downloaded browser); the ``browser`` fixture in ``conftest.py`` holds one per test module.
``node_web`` runs ``medfed node web`` for a node folder as its steward would and yields
its URL once ``/login`` answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, expect, sync_playwright

from medfed.testing.processes import free_port

SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def shot(page: Page, name: str) -> None:
    """Save a full-page screenshot as ``build/screenshots/NAME.png``."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(browser: Browser, url: str, username: str, password: str) -> Page:
    """A new page signed in to the hub at ``url`` through its login form."""
    page = browser.new_context(base_url=url).new_page()
    page.set_default_timeout(90_000)
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator("header .who")).to_contain_text(username)
    return page


@contextmanager
def node_web(folder: Path) -> Iterator[str]:
    """``medfed node web -c FOLDER/node.toml`` on a free port; yields its URL."""
    port = free_port()
    argv = [sys.executable, "-m", "medfed.cli.main", "node", "web"]
    argv += ["-c", str(folder / "node.toml"), "--port", str(port)]
    with open(folder / "web.log", "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(f"{url}/login", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"medfed node web did not start; see {folder / 'web.log'}")
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=20)
