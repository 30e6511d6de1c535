"""``shoal demo`` in a real browser: headless Chromium driven by Playwright.

Playwright drives Debian's ``/usr/bin/chromium`` (``.ci/install-servers.sh``
installs it); its own browser download (``playwright install``) is never
used. Without Playwright or Chromium the test is skipped with the reason,
except in CI (``CI=true``), where that is a failure. Every wait has a
Playwright timeout, and the demo subprocess is stopped by ``live_demo``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from shoal.cli._cluster_app import BURST

from ._live_demo import live_demo

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 15_000  # any one step of the page
RACE_MS = 120_000  # 4 x 50 requests on 2 shared cores


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser test (.ci/install-servers.sh)")
    pytest.skip(reason)


def test_the_page_in_a_browser(tmp_path: Path) -> None:
    """Sign in, kill a node, flush the store, race, log out everywhere from two browsers."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install -e '.[test]'")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        _missing(f"no browser at {CHROMIUM}: apt-get install chromium")
    expect.set_options(timeout=WAIT_MS)

    with live_demo(tmp_path, "--nodes", "3") as demo, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, timeout=WAIT_MS,
            args=["--no-sandbox"],  # the test may run as root, where the sandbox cannot
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.set_default_navigation_timeout(WAIT_MS)
            page.goto(demo.url)
            expect(page.locator("#node")).to_have_text(re.compile(r"node-[123]"))

            # sign in (rotates the id) and fill the cart
            page.fill("#login-form input[name=user]", "alice")
            page.click("#login")
            expect(page.locator("#user")).to_have_text(re.compile(r"^alice \u2014 expires in \d+ s$"))
            page.fill("#cart-form input[name=item]", "apple")
            page.click("#add")
            expect(page.locator("#cart")).to_have_text("apple")
            # the events panel: the sign-in's rotation, sent by the node that served it
            events = page.locator("#events")
            expect(events.locator("li.rotated").first).to_contain_text(re.compile(r"from node-[123]"))
            expect(events.locator("li.created").first).to_be_visible()
            ref_box = page.locator("#session-ref")
            expect(ref_box).to_have_text(re.compile(r"^[0-9a-f]{12}$"))
            ref = ref_box.inner_text()

            # a node dies: the front skips it, the others carry the session on
            page.click("#kill-node-2")
            expect(page.locator('tr[data-node="node-2"] .state')).to_have_text("down")
            for node in ("node-1", "node-3"):
                expect(page.locator("#served-by")).to_contain_text(node)
                expect(ref_box).to_have_text(ref)
                expect(page.locator("#cart")).to_have_text("apple")
                expect(page.locator("#user")).to_contain_text("alice")
            page.click("#start-node-2")  # back, same id, a new process
            expect(page.locator('tr[data-node="node-2"] .state')).to_have_text("up")
            expect(page.locator("#served-by")).to_contain_text("node-2")
            expect(ref_box).to_have_text(ref)

            # the store is lost: the replica brings the session back
            with page.expect_response(re.compile(r"/_demo/flush$")) as flushed:
                page.click("#flush")
            answer: Any = flushed.value.json()
            assert answer["deleted"] >= 1
            expect(page.locator("#records")).to_have_text("1")
            expect(ref_box).to_have_text(ref)
            expect(page.locator("#cart")).to_have_text("apple")
            expect(page.locator("#user")).to_contain_text("alice")

            # the concurrency panel: merge and serialized keep all 50
            page.click("#race")
            for policy in ("serialized", "merge", "optimistic"):
                kept = page.locator(f'#race-results tr[data-policy="{policy}"] .kept')
                expect(kept).to_have_text(f"{BURST} / {BURST}", timeout=RACE_MS)
            lossy = page.locator('#race-results tr[data-policy="lossy"] .kept')
            expect(lossy).to_have_text(re.compile(rf"^\d+ / {BURST}$"))
            # optimistic re-runs its conflicts: they are events too, from several nodes
            expect(events.locator("li.conflict").first).to_be_visible()
            expect(page.locator("#error")).to_have_text("")

            # log out everywhere: a second browser (its own cookie jar) signs in
            # as the same user, the page's button adds a third device
            other = browser.new_context().new_page()
            other.set_default_timeout(WAIT_MS)
            other.goto(demo.url)
            other.fill("#login-form input[name=user]", "alice")
            other.click("#login")
            expect(other.locator("#user")).to_contain_text("alice")
            expect(page.locator("#devices-count")).to_have_text("2")
            page.click("#second-device")
            expect(page.locator("#devices-count")).to_have_text("3")
            expect(page.locator("#devices-list li.this")).to_have_count(1)
            page.screenshot(path=str(tmp_path / "demo-devices.png"), full_page=True)
            page.click("#logout-everywhere")
            expect(page.locator("#devices-user")).to_have_text("nobody (sign in first)")
            expect(page.locator("#user")).to_have_text("not signed in")
            other.reload()
            expect(other.locator("#user")).to_have_text("not signed in")
            expect(other.locator("#devices-count")).to_have_text("0")
            expect(page.locator("#error")).to_have_text("")

            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})  # a phone
            page.screenshot(path=str(tmp_path / "demo-phone.png"), full_page=True)
            # readable on a phone: the panels stack, nothing runs off the side
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
        finally:
            browser.close()
