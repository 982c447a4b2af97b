"""The page in a real browser: headless Chromium (Debian's, driven by Playwright) against a real 3-broker
cluster. It shows the real leaders; its kill button kills the leader; within seconds it shows another
leader, the killed broker fenced and the election in the metadata log."""

from __future__ import annotations

import os
import tempfile

import pytest

from client.admin import Admin
from tests.integration.cluster import metadata, wait_for
from tests.integration.test_ui_api import start_ui

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PAGE_DEADLINE_MS = 15000


def launch_chromium(playwright, user_data_dir: str, viewport=(1280, 900)):
    """Debian's chromium, headless, in a fresh profile (Playwright's own browser download is never used)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does) to run the browser test")
    return playwright.chromium.launch_persistent_context(
        user_data_dir, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": viewport[0], "height": viewport[1]})


def test_the_page_shows_a_failover_caused_by_its_kill_button(running_cluster, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    cluster = running_cluster(3)
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("watched", partitions=3, replication_factor=3)
    leader = wait_for(lambda: _leader(cluster, "watched", 0), 10, "a leader for watched-0")
    ui = start_ui(cluster.bootstrap, "--cluster-config", str(cluster.root / "cluster.toml"))
    errors: list[str] = []
    try:
        with sync_playwright() as p, tempfile.TemporaryDirectory(dir=tmp_path) as profile:
            browser = launch_chromium(p, profile)
            try:
                page = browser.new_page()
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(ui.url)
                row = page.locator('tr[data-partition="watched-0"]')
                expect(row).to_have_attribute("data-leader", str(leader), timeout=PAGE_DEADLINE_MS)
                expect(page.locator("#status")).to_have_attribute("data-status", "ok")

                page.locator(f'button[data-action="kill"][data-broker="{leader}"]').click()
                expect(page.locator("#control-result")).to_contain_text(f"SIGKILL sent to broker {leader}")
                assert cluster.brokers[leader].proc.wait(timeout=10) == -9   # the page really killed it

                expect(row).not_to_have_attribute("data-leader", str(leader), timeout=PAGE_DEADLINE_MS)
                expect(row).not_to_have_attribute("data-leader", "-1", timeout=PAGE_DEADLINE_MS)
                expect(page.locator(f'#brokers tr[data-broker="{leader}"]')).to_have_attribute(
                    "data-state", "fenced", timeout=PAGE_DEADLINE_MS)
                expect(page.locator('#timeline li[data-kind="election"]').filter(
                    has_text=f"watched-0: leader {leader} → ")).to_have_count(1, timeout=PAGE_DEADLINE_MS)
                expect(page.locator('#timeline li[data-kind="fence"]').filter(
                    has_text=f"broker {leader} fenced").first).to_be_visible()
                shown = int(row.get_attribute("data-leader"))
                truth = _leader(cluster, "watched", 0, ask=next(i for i in (1, 2, 3) if i != leader))
                assert shown == truth and shown != leader, (shown, truth)
            finally:
                browser.close()
    finally:
        ui.stop()
    assert not errors, errors


def _leader(cluster, topic: str, partition: int, ask: int = 1) -> int | None:
    r = metadata(cluster.brokers[ask], [topic])
    if r is None or not r.topics or r.topics[0].error_code:
        return None
    leader = r.topics[0].partitions[partition].leader_id
    return leader if leader >= 0 else None

