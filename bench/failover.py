"""Metadata-quorum figures: time to a ready cluster, and kill -9 of a partition leader to its successor.

    .venv/bin/python -m bench.failover [--rounds 5]        (from the repo root; `make bench-failover`)

Each round starts three brokers of its own (free ports, temp dirs) and measures:

- ready: from spawning the three processes to every broker registered and
  unfenced with a controller known (seen in Metadata from broker 1);
- failover, leader not controller: kill -9 a broker that leads a partition but
  is not the controller; time until a survivor's Metadata shows another leader
  with a higher leader epoch (that is: committed in the metadata log and applied);
- failover, leader is controller: the same for a broker that is both (Raft
  election first, then the new controller fences it).

Prints min / median / max over the rounds. Metadata is polled every 5 ms, so
figures are rounded up by at most that much.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from raftka_testing.cluster import BrokerProcess, metadata, wait_for, write_cluster

POLL_S = 0.005


def wait(condition, timeout: float, what: str):
    return wait_for(condition, timeout, what, interval=POLL_S)


def cluster_ready(broker: BrokerProcess, n: int) -> bool:
    r = metadata(broker)
    return r is not None and r.controller_id >= 0 and sum(b.alive for b in r.brokers) == n


def one_round(root: Path) -> dict[str, float]:
    cluster = write_cluster(root, 3)
    brokers = cluster.brokers
    try:
        started = time.monotonic()
        for b in brokers.values():
            b.start(wait=False)
        wait(lambda: cluster_ready(brokers[1], 3), 30, "a ready cluster")
        figures = {"ready": time.monotonic() - started}
        subprocess.run([".venv/bin/kclient", "topics", "--create", "--topic", "f", "--partitions", "3",
                        "--replication-factor", "3", "--bootstrap", brokers[1].bootstrap], check=True,
                       capture_output=True)
        for kind in ("not_controller", "controller"):
            figures[kind] = kill_a_leader(cluster, want_controller=(kind == "controller"))
        return figures
    finally:
        cluster.stop_all()


def kill_a_leader(cluster, want_controller: bool) -> float:
    brokers = cluster.brokers
    alive = [b for b in brokers.values() if b.alive()]
    wait(lambda: cluster_ready(alive[0], 3), 30, "all three alive before the kill")
    r = metadata(alive[0], ["f"])
    leaders = {p.leader_id: (p.partition, p.leader_epoch) for p in r.topics[0].partitions}
    victim_id = next(b for b in leaders if (b == r.controller_id) == want_controller)
    partition, epoch = leaders[victim_id]
    survivor = next(b for b in alive if b.broker_id != victim_id)
    killed = time.monotonic()
    brokers[victim_id].kill()

    def moved():
        m = metadata(survivor, ["f"])
        if m is None or not m.topics or not m.topics[0].partitions:
            return False
        p = m.topics[0].partitions[partition]
        return p.leader_id not in (victim_id, -1) and p.leader_epoch > epoch

    wait(moved, 30, f"a new leader for f-{partition}")
    elapsed = time.monotonic() - killed
    brokers[victim_id].start(wait=False)  # back for the next measurement
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    results: dict[str, list[float]] = {}
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            figures = one_round(Path(tmp))
        print(f"round {i + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in figures.items()), flush=True)
        for k, v in figures.items():
            results.setdefault(k, []).append(v)
    labels = {"ready": "start to ready cluster", "not_controller": "kill -9 leader (not controller) -> new leader",
              "controller": "kill -9 leader (also controller) -> new leader"}
    print(f"\n{'figure':48} {'min':>7} {'median':>7} {'max':>7}   ({args.rounds} rounds)")
    for k, values in results.items():
        print(f"{labels[k]:48} {min(values):6.2f}s {statistics.median(values):6.2f}s {max(values):6.2f}s")


if __name__ == "__main__":
    main()
