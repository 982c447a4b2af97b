"""How long the page takes to show a failover: kill -9 of a partition's leader (its kill button, in headless
Chromium) to the page drawing another leader for it, per run, with min / median / max.

    python -m tests.ui_timing --runs 5 [--screenshot docs/ui.png]

A fresh 3-broker cluster (raftka_testing), a topic of 3 partitions, a real `kclient ui` process. Each run:
the page shows the leader of timed-0; the button is clicked (t0); a thread asks a survivor's Metadata
every 20 ms (the cluster's failover); the browser waits for the partition row's data-leader to change
(the page's). The killed broker is started again and the ISR refilled before the next run.
--screenshot also produces a few hundred records, runs a consumer group and saves the page (1280x900).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from client.admin import Admin
from client.consumer import Consumer
from client.producer import Producer
from raftka_testing.cluster import Cluster, metadata, wait_for, write_cluster
from tests.integration.test_ui_api import start_ui
from tests.integration.test_ui_browser import launch_chromium

TOPIC = "timed"


def leader_of(cluster: Cluster, ask: int, partition: int = 0) -> int | None:
    r = metadata(cluster.brokers[ask], [TOPIC], timeout=0.5)
    if r is None or not r.topics or r.topics[0].error_code:
        return None
    leader = r.topics[0].partitions[partition].leader_id
    return leader if leader >= 0 else None


def fully_replicated(cluster: Cluster) -> bool:
    r = metadata(cluster.brokers[1], [TOPIC])
    return r is not None and sum(b.alive for b in r.brokers) == 3 and all(
        len(p.isr) == 3 for p in r.topics[0].partitions)


def one_run(cluster: Cluster, page) -> tuple[float, float]:
    """(cluster_ms, page_ms) from the click to a new leader in Metadata and on the page."""
    leader = wait_for(lambda: leader_of(cluster, 1 if 1 in cluster.brokers else 2), 10, "a leader")
    row = f'tr[data-partition="{TOPIC}-0"]'
    page.wait_for_selector(f'{row}[data-leader="{leader}"]', timeout=15000)
    page.wait_for_selector(f'#brokers tr[data-broker="{leader}"][data-state="alive"]', timeout=15000)
    survivor = next(i for i in cluster.brokers if i != leader)
    seen: dict[str, float] = {}

    def watch_cluster() -> None:
        while "cluster" not in seen and time.monotonic() - t0 < 30:
            now = leader_of(cluster, survivor)
            if now is not None and now != leader:
                seen["cluster"] = time.monotonic()
            time.sleep(0.02)

    t0 = time.monotonic()
    page.click(f'button[data-action="kill"][data-broker="{leader}"]')
    watcher = threading.Thread(target=watch_cluster, daemon=True)
    watcher.start()
    page.wait_for_function(
        "([sel, old]) => { const r = document.querySelector(sel);"
        " return r && r.dataset.leader !== old && r.dataset.leader !== '-1'; }",
        arg=[row, str(leader)], polling=20, timeout=30000)
    page_ms = (time.monotonic() - t0) * 1000
    watcher.join(30)
    cluster.brokers[leader].proc.wait(10)
    cluster.brokers[leader].start()         # back for the next run: a follower again
    wait_for(lambda: fully_replicated(cluster), 30, "the ISR refilled")
    return (seen.get("cluster", float("nan")) - t0) * 1000, page_ms


def stage_for_screenshot(cluster: Cluster, page, path: Path) -> None:
    """A few hundred records, a consumer group that read most of them, then one more failover left as it is
    (the killed broker fenced, the election on top of the timeline), the lesson's form used; then the page."""
    with Producer(cluster.bootstrap, linger_ms=5) as producer:
        for i in range(300):
            producer.send(TOPIC, f"email {i}".encode(), key=f"user-{i % 17}".encode())
    with Consumer(cluster.bootstrap, group_id="mailer", topics=[TOPIC], auto_offset_reset="earliest",
                  enable_auto_commit=False, session_timeout_ms=60000) as consumer:
        read, deadline = 0, time.monotonic() + 30
        while read < 200 and time.monotonic() < deadline:
            read += len(consumer.poll(0.5))
        consumer.commit()
        with Producer(cluster.bootstrap) as producer:
            for i in range(40):
                producer.send(TOPIC, f"late email {i}".encode(), key=f"user-{i}".encode())
        page.wait_for_selector('tr[data-group-partition][data-lag]:not([data-lag=""]):not([data-lag="0"])',
                               timeout=20000)
        leader = wait_for(lambda: leader_of(cluster, 1), 10, "a leader")
        page.click(f'button[data-action="kill"][data-broker="{leader}"]')
        page.wait_for_selector(f'#brokers tr[data-broker="{leader}"][data-state="fenced"]', timeout=20000)
        follower = next(i for i in cluster.brokers if i != leader and i != leader_of(cluster, next(
            j for j in cluster.brokers if j != leader)))
        page.select_option("#produce-node", str(follower))
        page.fill("#produce-topic", TOPIC)
        page.fill("#produce-partition", "0")
        page.fill("#produce-value", "follower-message-1")
        page.click("#produce-send")
        page.wait_for_selector("svg.sequence", timeout=20000)
        page.wait_for_timeout(1500)
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))
    print(f"screenshot: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--screenshot", type=Path, help="also save the page after the runs (1280x900)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="ui-timing-") as root:
        cluster = write_cluster(Path(root) / "cluster", 3).start_all()
        ui = None
        try:
            with Admin(cluster.bootstrap) as admin:
                admin.create_topic(TOPIC, partitions=3, replication_factor=3)
            ui = start_ui(cluster.bootstrap, "--cluster-config", str(cluster.root / "cluster.toml"))
            with sync_playwright() as p:
                browser = launch_chromium(p, str(Path(root) / "profile"))
                page = browser.new_page()
                page.goto(ui.url)
                results = []
                for run in range(1, args.runs + 1):
                    cluster_ms, page_ms = one_run(cluster, page)
                    results.append(page_ms)
                    print(f"run {run}: cluster elected in {cluster_ms:.0f} ms, "
                          f"the page showed it after {page_ms:.0f} ms", flush=True)
                if results:
                    print(f"kill -9 (page button) -> page shows the new leader, {len(results)} runs: "
                          f"min {min(results):.0f} ms, median {statistics.median(results):.0f} ms, "
                          f"max {max(results):.0f} ms")
                if args.screenshot:
                    stage_for_screenshot(cluster, page, args.screenshot)
                browser.close()
        finally:
            if ui is not None:
                ui.stop()
            cluster.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
