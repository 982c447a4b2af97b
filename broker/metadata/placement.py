"""Replica placement: Kafka's rack-unaware round robin (AdminUtils.assignReplicasToBrokers).

Partition p's first replica (its preferred leader) walks the broker list from a
start index, so leaders spread evenly; the followers are shifted by an amount
that grows every len(brokers) partitions, so follower sets differ too. The
controller draws start_index and shift at random (outside apply) and puts the
resulting assignment in the CreateTopic record. Partitions added later
(CreatePartitions) continue the topic's round robin (assign_new_partitions).
"""

from __future__ import annotations


def assign_replicas(num_partitions: int, replication_factor: int, broker_ids: list[int],
                    start_index: int = 0, shift: int = 0, start_partition: int = 0) -> tuple[tuple[int, ...], ...]:
    """Replicas of partitions start_partition .. start_partition + num_partitions - 1: the tail of what
    a topic of start_partition + num_partitions partitions would get."""
    brokers = sorted(broker_ids)
    n = len(brokers)
    if not 1 <= replication_factor <= n:
        raise ValueError(f"replication factor {replication_factor} with {n} broker(s)")
    # The shifts the partitions before start_partition would have made (Kafka forgets them, so its
    # added partitions' followers do not line up with the topic's own; here they do).
    shift += max(start_partition - 1, 0) // n
    out = []
    for p in range(start_partition, start_partition + num_partitions):
        if p > 0 and p % n == 0:
            shift += 1
        first = (p + start_index) % n
        replicas = [brokers[first]]
        for j in range(replication_factor - 1):
            replicas.append(brokers[(first + 1 + (shift + j) % (n - 1)) % n])
        out.append(tuple(replicas))
    return tuple(out)


def assign_new_partitions(existing: tuple[tuple[int, ...], ...], additional: int,
                          broker_ids: list[int]) -> tuple[tuple[int, ...], ...]:
    """Replicas for partitions added to a topic (Kafka's AdminZkClient.createPartitions).

    The round robin continues where the topic's own left off: it restarts from the broker of
    partition 0's preferred leader (the random start index the topic was created with) at
    partition number len(existing), so the new leaders take the next brokers in line and
    leaders stay spread. The replication factor is partition 0's.
    """
    brokers = sorted(broker_ids)
    first = existing[0][0]
    start_index = next((i for i, b in enumerate(brokers) if b >= first), 0)
    return assign_replicas(additional, len(existing[0]), brokers, start_index, start_index,
                           start_partition=len(existing))
