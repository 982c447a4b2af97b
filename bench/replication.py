"""Replication figures: acks=all latency with one request in flight, and a restarted follower's catch-up rate.

    .venv/bin/python -m bench.replication [--sync-records 2000] [--catchup-mb 50] [--fetch-stream 0|1]
    (`make bench-replication`)

Starts its own three brokers (free ports, temp dir; RF 3, min.insync.replicas 2) and:

- sync: sends --sync-records records of 100 B one at a time (acks=all, linger 0,
  each waiting for its answer) through a follower's bootstrap, and reports the
  send-to-acknowledgement latency p50 / p99 / max;
- catch-up: kill -9 one follower, produce --catchup-mb MB (1 KiB records,
  acks=all, the two others in the ISR), restart the follower and time until it
  is back in the ISR; reports MB/s over the time from its restart (process
  start-up, recovery, registration and fetching included).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from client import Admin, Producer
from raftka_testing.cluster import BrokerProcess, metadata, wait_for, write_cluster

TOPIC = "repl"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def isr(broker: BrokerProcess) -> tuple[int, list[int]]:
    r = metadata(broker, [TOPIC])
    p = r.topics[0].partitions[0]
    return p.leader_id, list(p.isr)


def sync_latency(bootstrap: str, records: int) -> list[float]:
    value = b"x" * 100
    latencies = []
    with Producer(bootstrap, acks="all", linger_ms=0) as p:
        p.send(TOPIC, value).result(timeout=30)  # warm up: metadata, channel
        for _ in range(records):
            started = time.perf_counter()
            p.send(TOPIC, value).result(timeout=30)
            latencies.append(time.perf_counter() - started)
    return latencies


def catch_up(cluster, megabytes: int) -> dict[str, float]:
    brokers = cluster.brokers
    leader, _ = isr(brokers[1])
    follower = next(b for b in brokers.values() if b.broker_id != leader)
    other = next(b for b in brokers.values() if b.broker_id not in (leader, follower.broker_id))
    follower.kill()
    wait_for(lambda: follower.broker_id not in isr(other)[1], 30, "the killed follower out of the ISR")
    value = b"y" * 1024
    count = megabytes * 1024
    with Producer(other.bootstrap, acks="all", linger_ms=5, batch_size=256 * 1024) as p:
        futures = [p.send(TOPIC, value) for _ in range(count)]
        p.flush()
    assert all(f.result().offset >= 0 for f in futures)
    started = time.monotonic()
    follower.start(wait=False)
    wait_for(lambda: follower.broker_id in isr(other)[1], 120, "the follower back in the ISR")
    done = time.monotonic()
    size_mb = count * (len(value) + 16) / 1e6
    return {"behind_mb": size_mb, "from_restart_s": done - started}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sync-records", type=int, default=2000)
    ap.add_argument("--catchup-mb", type=int, default=100)
    ap.add_argument("--fetch-stream", type=int, choices=(0, 1), default=1,
                    help="replica.fetch.stream: 1 a long-lived fetch stream per follower-leader pair, 0 unary calls")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = write_cluster(Path(tmp), 3, {"min.insync.replicas": 2, "replica.fetch.stream": args.fetch_stream})
        try:
            cluster.start_all()
            brokers = cluster.brokers
            Admin(brokers[1].bootstrap).create_topic(TOPIC, partitions=1, replication_factor=3)
            leader, _ = isr(brokers[1])
            via = next(b for b in brokers.values() if b.broker_id != leader)
            lat = sync_latency(via.bootstrap, args.sync_records)
            ms = [x * 1000 for x in lat]
            print(f"acks=all, 1 in flight, {len(ms)} records of 100 B, RF 3: p50 {percentile(ms, 0.5):.2f} ms, "
                  f"p99 {percentile(ms, 0.99):.2f} ms, max {max(ms):.2f} ms, mean {statistics.mean(ms):.2f} ms, "
                  f"{len(ms) / sum(lat):,.0f} records/s")
            c = catch_up(cluster, args.catchup_mb)
            print(f"catch-up of a restarted follower, {c['behind_mb']:.1f} MB behind: "
                  f"{c['behind_mb'] / c['from_restart_s']:.1f} MB/s from its restart ({c['from_restart_s']:.2f} s "
                  "to back in the ISR)")
        finally:
            cluster.stop_all()


if __name__ == "__main__":
    main()
