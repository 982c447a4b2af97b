"""Producer throughput through the client library on the replicated path (issue 5's figure).

    .venv/bin/python -m bench.produce_throughput [--records 100000] [--size 100] [--partitions 3]

Starts its own three brokers (RF 3, min.insync.replicas 2), sends --records records of --size
bytes with acks=all (idempotent) as fast as the producer takes them, and prints records/s and
MB/s from the first send to the last acknowledgement.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from client import Admin, Producer
from raftka_testing.cluster import write_cluster


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=262144)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-in-flight", type=int, default=5, help="batches of a partition in flight (1..5)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = write_cluster(Path(tmp), 3, {"min.insync.replicas": 2})
        try:
            cluster.start_all()
            bootstrap = cluster.brokers[2].bootstrap
            value = b"x" * args.size
            for run in range(1, args.runs + 1):
                topic = f"tp{run}"
                Admin(bootstrap).create_topic(topic, partitions=args.partitions, replication_factor=3)
                with Producer(bootstrap, acks="all", linger_ms=5, batch_size=args.batch_size,
                              max_in_flight_requests_per_connection=args.max_in_flight) as p:
                    p.send(topic, value).result(timeout=30)  # warm up: metadata, producer id, channels
                    started = time.perf_counter()
                    futures = [p.send(topic, value) for _ in range(args.records)]
                    p.flush()
                    elapsed = time.perf_counter() - started
                assert all(f.result().offset >= 0 for f in futures)
                print(f"run {run}: {args.records} x {args.size} B, acks=all, RF 3, {args.partitions} partition(s): "
                      f"{args.records / elapsed:,.0f} records/s, {args.records * args.size / elapsed / 1e6:.1f} MB/s "
                      f"({elapsed:.2f} s)", flush=True)
        finally:
            cluster.stop_all()


if __name__ == "__main__":
    main()
