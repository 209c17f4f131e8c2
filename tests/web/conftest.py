"""Fixtures of the web tests: one headless Debian Chromium per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browsertools import launch_chromium
from playwright.sync_api import Browser, expect

# A loaded CI machine can take seconds per page; an assertion that holds returns at once.
expect.set_options(timeout=60_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as chromium:
        yield chromium
