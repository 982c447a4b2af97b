"""Single-broker figure for the walking skeleton: produce N records of S bytes (acks=all), read them back.

    .venv/bin/python -m bench.skeleton_single_broker [--records 100000] [--size 100]   (from the repo root)

Starts its own broker on free ports in a temp dir and stops it by PID at the end.
`make bench` (issue 7) supersedes this with the replicated workloads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from client import Admin, Consumer, Producer
from raftka_testing.cluster import write_cluster


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=262144)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = write_cluster(Path(tmp), 1)
        broker = cluster.brokers[1].start()
        try:
            Admin(broker.bootstrap).create_topic("bench", partitions=1, replication_factor=1)
            value = b"x" * args.size
            with Producer(broker.bootstrap, acks="all", linger_ms=5, batch_size=args.batch_size) as p:
                started = time.perf_counter()
                futures = [p.send("bench", value) for _ in range(args.records)]
                p.flush()
                elapsed = time.perf_counter() - started
            assert all(f.result().offset >= 0 for f in futures)
            print(f"produce: {args.records} records x {args.size} B, acks=all: {args.records / elapsed:,.0f} msg/s, "
                  f"{args.records * args.size / elapsed / 1e6:.1f} MB/s ({elapsed:.2f} s)")
            got = 0
            with Consumer(broker.bootstrap, "bench", from_beginning=True) as c:
                started = time.perf_counter()
                while got < args.records:
                    got += len(c.poll(timeout=1.0))
                elapsed = time.perf_counter() - started
            print(f"consume: {got} records: {got / elapsed:,.0f} msg/s, "
                  f"{got * args.size / elapsed / 1e6:.1f} MB/s ({elapsed:.2f} s)")
        finally:
            cluster.stop_all()


if __name__ == "__main__":
    main()
