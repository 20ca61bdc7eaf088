"""The dashboard in a real headless Chromium against a real ``tether demo`` process.

Screenshots go to ``$TETHER_ARTIFACTS/dashboard/`` (or the test's tmp dir); the test
prints where. What each shows is listed in :data:`SHOTS`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
#: The screenshots the test takes, and what each shows.
SHOTS = {
    "01-overview": "signed in: pools, sites with tunnel/BGP health, nothing needs attention",
    "02-failing-join": "a host whose join failed (its node IP is not on it), counted and named",
    "03-pool": "pool dc1-pool: conditions, Nodes Ready on 1.34, update 1.1.0 with its diff",
    "04-pending-approval": "the rollout made with the button, waiting for approval; its event live",
    "05-rolling-out": "approved: the rollout moving node by node",
    "06-completed": "the rollout completed: 2/2 nodes on kubelet v1.35.1",
    "07-phone": "the pool on a phone (390 px wide)",
    "08-activations": "an activation created (its code shown once) and one revoked",
    "09-audit": "the audit log, newest first, for admins",
    "10-viewer": "a viewer: no Activations or Audit, rollout buttons disabled",
}


@pytest.fixture
def demo(kube_binaries: None, demo_process: tuple[str, str]) -> tuple[str, str]:
    if not Path(CHROMIUM).exists():
        reason = "Chromium is not installed (make test installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true forbids skipping")
        pytest.skip(reason)
    return demo_process


@pytest.fixture
def shots(tmp_path: Path) -> Callable[[Any, str], None]:
    base = Path(os.environ.get("TETHER_ARTIFACTS") or tmp_path) / "dashboard"
    base.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots: {base}")

    def shot(page: Any, name: str) -> None:
        assert name in SHOTS
        page.screenshot(path=str(base / f"{name}.png"))

    return shot


def wait_for(what: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, message
        time.sleep(1)


def settled(api: httpx.Client) -> bool:
    """Both demo pools Ready with two Ready Nodes, and nothing needing attention."""
    pools = api.get("/api/v1/pools").json()["items"]
    ready = [p for p in pools if p["status"]["state"] == "Ready"]
    return len(ready) == 2 and api.get("/api/v1/attention").json()["count"] == 0


def test_dashboard_a_platform_team_lives_in(
    demo: tuple[str, str], shots: Callable[[Any, str], None], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, token = demo
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    wait_for(lambda: settled(api), 180, "the demo pools did not turn Ready")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(f"{url}/")
        page.fill("#token", "tth_wrong_token")
        page.click("#login button[type=submit]")
        expect(page.locator("#error")).to_contain_text("refused")

        page.fill("#token", token)
        page.click("#login button[type=submit]")
        expect(page.locator("#login")).to_be_hidden()
        expect(page.locator("#who")).to_contain_text("(admin)")
        expect(page.locator("#attention-badge")).to_have_text("0 need attention")
        expect(page.locator("#pools tbody tr")).to_have_count(2)
        expect(page.locator("#pools")).to_contain_text("→ 1.1.0")  # update available
        expect(page.locator("#sites tbody tr")).to_have_count(2)
        expect(page.locator("#sites")).to_contain_text("NoFailuresReported")
        expect(page.locator("#tree")).to_contain_text("site edge1")
        shots(page, "01-overview")

        # A join fails for real: edge1's spare host gets a node IP that is not on it, and
        # the pool grows to take it; node validation on the host refuses the join.
        hosts = api.get("/api/v1/hosts", params={"site": "edge1"}).json()["items"]
        (spare,) = [h for h in hosts if not h["spec"].get("pool")]
        moved = {**spare["spec"], "nodeIP": "10.80.2.250"}
        body = {"resourceVersion": spare["resourceVersion"], "spec": moved}
        assert api.put(f"/api/v1/hosts/{spare['name']}", json=body).is_success
        pool = api.get("/api/v1/pools/edge1-pool").json()
        body = {"resourceVersion": pool["resourceVersion"], "spec": {**pool["spec"], "size": 3}}
        assert api.put("/api/v1/pools/edge1-pool", json=body).is_success
        expect(page.locator("#attention-badge")).to_have_text("1 need attention", timeout=90_000)
        failed = page.locator("#attention tbody tr")
        expect(failed).to_have_count(1)
        expect(failed).to_contain_text(f"Host/{spare['name']}")
        expect(failed).to_contain_text("PlanFailed")
        expect(failed).to_contain_text(
            "join plan failed: validation failed: node IP 10.80.2.250 is not assigned to any "
            "interface of this host"
        )  # the whole message, not cut
        shots(page, "02-failing-join")

        page.click("#pools tr[data-pool=dc1-pool]")
        expect(page.locator("#pool-title")).to_have_text("dc1-pool")
        expect(page.locator("#event-scope")).to_contain_text("pool dc1-pool")
        nodes = page.locator("#hosts tbody tr")
        expect(nodes).to_have_count(2)
        for n in range(2):
            expect(nodes.nth(n)).to_contain_text("Ready")
            expect(nodes.nth(n)).to_contain_text("v1.34.2")
            expect(nodes.nth(n)).to_contain_text("Applied")
        expect(page.locator("#conditions")).to_contain_text("AllNodesReady")
        expect(page.locator("#update-version")).to_have_text("1.1.0")
        expect(page.locator("#diff")).to_contain_text("kubernetes.version")
        expect(page.locator("#rollout-none")).to_be_visible()
        shots(page, "03-pool")

        # A rollout made with the button waits for approval; its event arrives live.
        page.click("#rollout-create")
        expect(page.locator("#rollout-state")).to_have_text("PendingApproval")
        expect(page.locator("#rollout-name")).to_have_text("dc1-pool-1")
        first = page.locator("#events tbody tr").first
        expect(first).to_contain_text("RolloutCreated", timeout=15_000)
        expect(first).to_contain_text("standard 1.0.0 -> 1.1.0: upgrade on 2 node(s)")
        shots(page, "04-pending-approval")

        page.click("#rollout [data-verb=approve]")
        expect(page.locator("#rollout-state")).to_have_text("Progressing")
        expect(page.locator("#rollout [data-verb=pause]")).to_be_visible()
        expect(page.locator("#rollout [data-verb=approve]")).to_be_hidden()
        # Every text the rollout panel shows is recorded in the page as it is painted, so a
        # step shorter than this test's polling is still seen.
        page.evaluate(
            """() => {
              window.seenDoing = [];
              const note = () => window.seenDoing.push(
                `${document.getElementById("rollout-progress").textContent} | `
                + document.getElementById("rollout-doing").textContent);
              const watch = new MutationObserver(note);
              const what = {childList: true, characterData: true, subtree: true};
              for (const id of ["rollout-progress", "rollout-doing"])
                watch.observe(document.getElementById(id), what);
            }"""
        )
        shot = False
        deadline = time.monotonic() + 180
        while page.locator("#rollout-state").inner_text() != "Completed":
            assert time.monotonic() < deadline, "the rollout did not complete"
            if not shot and page.locator("#rollout-doing").inner_text().startswith("now: "):
                shots(page, "05-rolling-out")
                shot = True
            time.sleep(0.3)
        seen = set(page.evaluate("window.seenDoing"))
        # Painted while it moved, without a reload: the count of nodes updated went up.
        # (A node "now: <host>: <step>" shows when a repaint falls inside a step; the
        # simulated hosts' steps can be shorter than a repaint, so it is not required.)
        progress = {s.split(" | ")[0] for s in seen}
        assert {"1/3 nodes updated", "2/3 nodes updated"} <= progress, seen
        expect(page.locator("#rollout-progress")).to_have_text("2/2 nodes updated")
        for n in range(2):
            expect(nodes.nth(n)).to_contain_text("v1.35.1", timeout=30_000)
        expect(page.locator("#events")).to_contain_text("RolloutCompleted")
        shots(page, "06-completed")

        page.set_viewport_size({"width": 390, "height": 844})
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide on a 390px phone"
        shots(page, "07-phone")
        page.set_viewport_size({"width": 1400, "height": 1000})

        page.click("nav a[data-view=activations]")
        page.select_option("#activation-site", "dc1")
        page.fill("#activation-max", "3")
        page.click("#activation-form button[type=submit]")
        expect(page.locator("#activation-issued")).to_contain_text("shown once")
        issued = page.locator("#activation-issued").inner_text().split()[1].rstrip(",")
        made = page.locator("#activations tbody tr", has_text=issued)
        expect(made).to_contain_text("Active")
        expect(made).to_contain_text("0/3")
        made.locator("button[data-activation]").click()
        expect(made).to_contain_text("Revoked")
        shots(page, "08-activations")

        page.click("nav a[data-view=audit]")
        newest = page.locator("#audit tbody tr").first
        expect(newest).to_contain_text(f"/api/v1/activations/{issued}")
        expect(page.locator("#audit")).to_contain_text("/api/v1/rollouts/dc1-pool-1/approve")
        shots(page, "09-audit")

        page.click("#sign-out")
        expect(page.locator("#login")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('tether-token')") is None

        viewer = api.post("/api/v1/tokens", json={"name": "watcher", "role": "viewer"}).json()
        made = api.post("/api/v1/pools/edge1-pool/rollouts", json={"to": "1.1.0"})
        assert made.status_code == 201, made.text
        page.fill("#token", viewer["token"])
        page.click("#login button[type=submit]")
        expect(page.locator("#who")).to_contain_text("(viewer)")
        expect(page.locator("nav a[data-view=activations]")).to_be_hidden()
        expect(page.locator("nav a[data-view=audit]")).to_be_hidden()
        page.goto(f"{url}/#pool/edge1-pool")
        expect(page.locator("#rollout-state")).to_have_text("PendingApproval")
        approve = page.locator("#rollout [data-verb=approve]")
        expect(approve).to_be_disabled()
        expect(approve).to_have_attribute("title", "needs the operator role")
        expect(page.locator("#hosts")).to_contain_text("Failed: validation failed")
        shots(page, "10-viewer")
        browser.close()
    # The demo said it loudly, too.
    printed = (tmp_path / "demo.log").read_text()
    assert f"!!! JOIN FAILED: Host {spare['name']} (pool edge1-pool)" in printed
