"""What a metadata change made of a broker's partitions is an event each, or one per kind past
PARTITION_EVENTS_EACH_UP_TO (replica_manager._tell_roles)."""

from __future__ import annotations

import structlog

from broker.logging_setup import PARTITION_EVENTS_EACH_UP_TO
from broker.replica_manager import _tell_roles


def told(event: str, count: int, topic: str = "t") -> list[tuple[str, dict]]:
    return [(event, dict(topic=topic, partition=p, leader=1, leader_epoch=0, partition_epoch=0, isr=[1, 2],
                         log_end_offset=0, high_watermark=0)) for p in range(count)]


def test_up_to_the_limit_each_partition_is_an_event_and_past_it_one_event_tells_them_all():
    with structlog.testing.capture_logs() as logs:
        _tell_roles(told("became_leader", PARTITION_EVENTS_EACH_UP_TO)
                    + told("became_follower", PARTITION_EVENTS_EACH_UP_TO + 1)
                    + told("isr_updated", 5000, "u"))
    events = [e["event"] for e in logs]
    assert events == ["became_leader"] * PARTITION_EVENTS_EACH_UP_TO + ["became_followers", "isrs_updated"]
    assert [e["partition"] for e in logs[:PARTITION_EVENTS_EACH_UP_TO]] == list(range(PARTITION_EVENTS_EACH_UP_TO))
    assert logs[-1] == {"event": "isrs_updated", "log_level": "info", "partitions": 5000, "topics": 1,
                        "first": "u-0", "first_leader": 1, "first_isr": [1, 2]}
