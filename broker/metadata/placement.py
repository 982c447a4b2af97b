"""Replica placement: Kafka's rack-unaware round robin (AdminUtils.assignReplicasToBrokers).

Partition p's first replica (its preferred leader) walks the broker list from a
start index, so leaders spread evenly; the followers are shifted by an amount
that grows every len(brokers) partitions, so follower sets differ too. The
controller draws start_index and shift at random (outside apply) and puts the
resulting assignment in the CreateTopic record.
"""

from __future__ import annotations


def assign_replicas(num_partitions: int, replication_factor: int, broker_ids: list[int],
                    start_index: int = 0, shift: int = 0) -> tuple[tuple[int, ...], ...]:
    brokers = sorted(broker_ids)
    n = len(brokers)
    if not 1 <= replication_factor <= n:
        raise ValueError(f"replication factor {replication_factor} with {n} broker(s)")
    out = []
    for p in range(num_partitions):
        if p > 0 and p % n == 0:
            shift += 1
        first = (p + start_index) % n
        replicas = [brokers[first]]
        for j in range(replication_factor - 1):
            replicas.append(brokers[(first + 1 + (shift + j) % (n - 1)) % n])
        out.append(tuple(replicas))
    return tuple(out)
