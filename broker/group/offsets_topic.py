"""The internal topic __consumer_offsets: its name, how it is created, and who coordinates a group.

Kafka creates it on the first FindCoordinator (offsets.topic.num.partitions, offsets.topic.
replication.factor) and a group's coordinator is the leader of partition partition_for(group).
Kafka compacts it; raftka has no compaction, so it keeps every record (retention.ms -1): a delete
policy would drop committed offsets after the retention time.
"""

from __future__ import annotations

from broker.config import BrokerSettings
from broker.controller import TopicRequest

OFFSETS_TOPIC = "__consumer_offsets"
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC})
# Kafka's offsets.topic.segment.bytes; retention.ms -1: never delete (see above).
OFFSETS_TOPIC_CONFIGS = {"retention.ms": "-1", "segment.bytes": str(100 * 1024 * 1024), "cleanup.policy": "delete"}


def is_internal(topic: str) -> bool:
    return topic in INTERNAL_TOPICS


def offsets_topic_request(settings: BrokerSettings) -> TopicRequest:
    return TopicRequest(OFFSETS_TOPIC, settings.offsets_topic_num_partitions,
                        settings.offsets_topic_replication_factor, dict(OFFSETS_TOPIC_CONFIGS))
