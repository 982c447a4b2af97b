"""What makes a topic name, a partition count and a topic config valid (Kafka's rules).

Each check returns None or the error to answer with (an exception value), so the
controller can report it per topic without raising.
"""

from __future__ import annotations

import re

from client.errors import (InvalidConfigError, InvalidPartitionsError, InvalidReplicationFactorError,
                           InvalidTopicError, KafkaError)

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
