"""Real-browser tests: Playwright for Python driving Debian's chromium (never a downloaded
browser). ``make test`` installs the system package when /usr/bin/chromium is missing."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Flags that work in a container without a GPU, a sandbox or a network beyond loopback;
# another host name (evil.test) resolves to loopback for the cross-site test.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP evil.test 127.0.0.1"]
KIT = Path(__file__).resolve().parents[2] / "kit" / "recs.js"


@pytest.fixture(scope="module")  # one browser per module: closed before the rest of the suite runs
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="rt-chromium-")  # a fresh HOME, removed with the browser
    with sync_playwright() as playwright:
        context_args = {"viewport": {"width": 1280, "height": 720}}
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, env={**os.environ, "HOME": profile})
        try:
            yield browser, context_args
        finally:
            browser.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def context(chromium):
    browser, args = chromium
    context = browser.new_context(**args)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page_errors():
    return []


@pytest.fixture
def page(context, page_errors):
    page = context.new_page()
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    return page


@pytest.fixture(autouse=True)
def _no_real_aws():
    """Overrides the suite's per-test reset of the AWS variables: here one local stack per
    module owns them (its endpoint, its administrator's keys) across that module's tests, and
    the reset would point its clients at real AWS between tests. The kit's tests call no AWS."""
    yield
