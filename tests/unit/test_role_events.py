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
    assert logs[-1] == {"event": "isrs_updated", "log_level": "info", "topic": "u", "partitions": 5000,
                        "first_partition": 0, "first_leader": 1, "first_isr": [1, 2]}


def test_the_limit_is_per_topic_so_a_small_topic_keeps_its_own_lines_beside_a_big_one():
    """A test or a lesson looks for its own topic's events in a cluster where a broker also rejoins many others."""
    small = [f"small-{n}" for n in range(PARTITION_EVENTS_EACH_UP_TO + 5)]
    with structlog.testing.capture_logs() as logs:
        _tell_roles([e for t in small for e in told("became_leader", 1, t)] + told("became_leader", 300, "big"))
    assert [(e["event"], e["topic"]) for e in logs] == [("became_leader", t) for t in small] + [
        ("became_leaders", "big")]
    assert logs[-1]["partitions"] == 300 and logs[-1]["first_partition"] == 0
