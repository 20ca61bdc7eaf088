"""The dashboard in a real headless Chromium against a real `tether demo` process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def demo(demo_process: tuple[str, str]) -> tuple[str, str]:
    if not Path(CHROMIUM).exists():
        reason = "Chromium is not installed (make test installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true forbids skipping")
        pytest.skip(reason)
    return demo_process


def test_dashboard_shows_pools_hosts_and_live_pool_events(
    demo: tuple[str, str], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, token = demo
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/")
        page.fill("#token", "tth_wrong_token")
        page.click("button[type=submit]")
        expect(page.locator("#error")).to_contain_text("refused")

        page.fill("#token", token)
        page.click("button[type=submit]")
        expect(page.locator("#login")).to_be_hidden()
        expect(page.locator("#who")).to_contain_text("(admin)")
        pools = page.locator("#pools tbody tr")
        expect(pools).to_have_count(2)
        expect(page.locator("#pools")).to_contain_text("dc1-pool")
        expect(page.locator("#pools")).to_contain_text("→ 1.1.0")  # update available
        # The demo's six hosts are real agents: they enrol, turn Ready and join pools.
        expect(page.locator("#hosts tbody tr")).to_have_count(6, timeout=60_000)

        page.click("tr[data-pool=dc1-pool]")
        expect(page.locator("#event-filter")).to_have_text("pool dc1-pool")
        expect(page.locator("#hosts tbody tr")).to_have_count(2, timeout=30_000)

        # A change to the pool arrives over the live stream without a reload. The pool's
        # status still changes while its hosts join: read, change and write again on 409.
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(5):
            pool = httpx.get(f"{url}/api/v1/pools/dc1-pool", headers=headers).json()
            spec = {**pool["spec"], "routing": "static"}
            body = {"resourceVersion": pool["resourceVersion"], "spec": spec}
            put = httpx.put(f"{url}/api/v1/pools/dc1-pool", json=body, headers=headers)
            if put.status_code != 409:
                break
        assert put.is_success, put.text
        expect(page.locator("#events")).to_contain_text("pool spec updated", timeout=10_000)
        page.screenshot(path=str(tmp_path / "dashboard.png"))
        browser.close()
