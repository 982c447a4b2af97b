"""What makes a topic name, a partition count and a topic config valid (Kafka's rules).

Each check returns None or the error to answer with (an exception value), so the
controller can report it per topic without raising.
"""

from __future__ import annotations

import re

from client.errors import (InvalidConfigError, InvalidPartitionsError, InvalidReplicaAssignmentError,
                           InvalidReplicationFactorError, InvalidTopicError, KafkaError)

MAX_TOPIC_NAME_LENGTH = 249
MAX_PARTITIONS_PER_TOPIC = 10000
_LEGAL = re.compile(r"[a-zA-Z0-9._-]+")
_INTEGER = re.compile(r"-?[0-9]+")


def topic_name_error(name: str) -> KafkaError | None:
    if not name:
        return InvalidTopicError("Topic name is illegal, it can't be empty.")
    if name in (".", ".."):
        return InvalidTopicError("Topic name cannot be \".\" or \"..\".")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        return InvalidTopicError(f"Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LENGTH} "
                                 f"characters, topic name: {name[:40]}...")
    if not _LEGAL.fullmatch(name):
        return InvalidTopicError(f"Topic name {name!r} is illegal, it contains a character other than "
                                 "ASCII alphanumerics, '.', '_' and '-'.")
    return None


def partition_count_error(num_partitions: int) -> KafkaError | None:
    if num_partitions < 1:
        return InvalidPartitionsError("Number of partitions must be larger than 0.")
    if num_partitions > MAX_PARTITIONS_PER_TOPIC:
        return InvalidPartitionsError(f"Number of partitions {num_partitions} is larger than the limit "
                                      f"of {MAX_PARTITIONS_PER_TOPIC} per topic.")
    return None


def partition_increase_error(current: int, requested: int) -> KafkaError | None:
    """CreatePartitions only grows a topic (Kafka's ZkAdminManager wording), up to the per-topic limit."""
    if requested < current:
        return InvalidPartitionsError(f"Topic currently has {current} partitions, which is higher than the "
                                      f"requested {requested}.")
    if requested == current:
        return InvalidPartitionsError(f"Topic already has {current} partitions.")
    return partition_count_error(requested)


def replica_assignment_error(assignments: list[list[int]], additional: int, replication_factor: int,
                             registered: set[int]) -> KafkaError | None:
    """A manual assignment of the partitions a CreatePartitions adds (Kafka's
    ReplicationControlManager.validateManualPartitionAssignment): one replica list per new
    partition, each of the topic's replication factor, of distinct registered brokers."""
    if len(assignments) != additional:
        return InvalidReplicaAssignmentError(f"Attempted to add {additional} additional partition(s), but "
                                             f"{len(assignments)} assignment(s) were specified.")
    for replicas in assignments:
        if not replicas:
            return InvalidReplicaAssignmentError("The manual partition assignment includes an empty replica list.")
        unknown = sorted(set(replicas) - registered)
        if unknown:
            return InvalidReplicaAssignmentError(f"The manual partition assignment includes broker {unknown[0]}, "
                                                 "but no such broker is registered.")
        twice = sorted(b for b in set(replicas) if replicas.count(b) > 1)
        if twice:
            return InvalidReplicaAssignmentError(f"The manual partition assignment includes the broker {twice[0]} "
                                                 "more than once.")
        if len(replicas) != replication_factor:
            return InvalidReplicaAssignmentError(
                f"The manual partition assignment includes a partition with {len(replicas)} replica(s), but this "
                f"is not consistent with previous partitions, which have {replication_factor} replica(s).")
    return None


def replication_factor_error(replication_factor: int, live_brokers: int) -> KafkaError | None:
    if replication_factor < 1:
        return InvalidReplicationFactorError("Replication factor must be larger than 0.")
    if replication_factor > live_brokers:
        return InvalidReplicationFactorError(
            f"Unable to replicate the partition {replication_factor} time(s): The target replication "
            f"factor of {replication_factor} cannot be reached because only {live_brokers} broker(s) "
            "are registered.")
    return None


JAVA_INT_MAX = 2**31 - 1
JAVA_LONG_MAX = 2**63 - 1


def _int_at_least(lo: int, hi: int = JAVA_LONG_MAX):
    """Kafka's INT configs stop at 2^31-1, its LONG configs at 2^63-1."""
    def check(value: str) -> bool:
        # ASCII digits only: Python's int() also takes " 5", "1_000" and "٣" (an Arabic-Indic 3).
        return _INTEGER.fullmatch(value) is not None and lo <= int(value) <= hi
    return check


# Topic-level configs raftka understands, with what a valid value is.
TOPIC_CONFIGS = {
    "min.insync.replicas": (_int_at_least(1, JAVA_INT_MAX), "an integer >= 1"),
    "retention.ms": (_int_at_least(-1), "an integer >= -1 (-1: keep forever)"),
    "retention.bytes": (_int_at_least(-1), "an integer >= -1 (-1: no size limit)"),
    "segment.bytes": (_int_at_least(14, JAVA_INT_MAX), "an integer >= 14"),
    "segment.ms": (_int_at_least(1), "an integer >= 1"),
    "index.interval.bytes": (_int_at_least(0, JAVA_INT_MAX), "an integer >= 0"),
    "flush.messages": (lambda v: v == "-1" or _int_at_least(1)(v), "-1 or an integer >= 1"),
    "max.message.bytes": (_int_at_least(0, JAVA_INT_MAX), "an integer >= 0"),
    "unclean.leader.election.enable": (lambda v: v in ("true", "false"), "true or false"),
    "cleanup.policy": (lambda v: v == "delete", "delete (compaction is not supported)"),
}


def topic_config_error(configs: dict[str, str]) -> KafkaError | None:
    for key, value in configs.items():
        rule = TOPIC_CONFIGS.get(key)
        if rule is None:
            known = ", ".join(sorted(TOPIC_CONFIGS))
            return InvalidConfigError(f"Unknown topic config name: {key} (known: {known})")
        valid, expected = rule
        if not valid(value):
            return InvalidConfigError(f"Invalid value {value} for configuration {key}: must be {expected}")
    return None
