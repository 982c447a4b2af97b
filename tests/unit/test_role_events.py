"""What a metadata change made of a broker's partitions is an event each, or one per kind past
PARTITION_EVENTS_EACH_UP_TO of a topic, or PARTITION_EVENTS_PER_CHANGE_UP_TO in all (replica_manager._tell_roles)."""

from __future__ import annotations

import structlog

from broker.logging_setup import (PARTITION_EVENTS_EACH_UP_TO, PARTITION_EVENTS_PER_CHANGE_UP_TO, partition_ranges,
                                  parse_partition_ranges)
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
                        "partition_ranges": "0-4999", "first_partition": 0, "first_leader": 1, "first_isr": [1, 2]}


def test_the_limit_is_per_topic_so_a_small_topic_keeps_its_own_lines_beside_a_big_one():
    """A test or a lesson looks for its own topic's events in a cluster where a broker also changes many others."""
    small = [f"small-{n}" for n in range(PARTITION_EVENTS_EACH_UP_TO + 5)]
    big = PARTITION_EVENTS_PER_CHANGE_UP_TO - len(small)
    with structlog.testing.capture_logs() as logs:
        _tell_roles([e for t in small for e in told("became_leader", 1, t)] + told("became_leader", big, "big"))
    assert [(e["event"], e["topic"]) for e in logs] == [("became_leader", t) for t in small] + [
        ("became_leaders", "big")]
    assert logs[-1]["partitions"] == big and logs[-1]["first_partition"] == 0


def test_a_change_of_many_partitions_spread_thin_over_many_topics_is_one_event_per_topic():
    """A restarted broker rejoining 1,000 ISRs of 100 topics in one change: 10 a topic, under the per-topic limit,
    and 1,000 lines on every broker at 10,000 partitions. Past PARTITION_EVENTS_PER_CHANGE_UP_TO in all, each topic
    is one event that names its partitions."""
    topics = [f"t{n}" for n in range(PARTITION_EVENTS_PER_CHANGE_UP_TO // 5 + 1)]
    spread = [e for t in topics for e in told("isr_updated", 5, t)]
    assert len(spread) > PARTITION_EVENTS_PER_CHANGE_UP_TO
    with structlog.testing.capture_logs() as logs:
        _tell_roles(spread)
    assert [(e["event"], e["topic"], e["partitions"]) for e in logs] == [("isrs_updated", t, 5) for t in topics]
    assert all(e["partition_ranges"] == "0-4" for e in logs)
    with structlog.testing.capture_logs() as logs:     # one fewer: each partition its own line again
        _tell_roles(spread[:PARTITION_EVENTS_PER_CHANGE_UP_TO])
    assert [e["event"] for e in logs] == ["isr_updated"] * PARTITION_EVENTS_PER_CHANGE_UP_TO


def test_partition_ranges_name_runs_and_read_back():
    assert partition_ranges([9, 0, 1, 2, 3, 7, 10, 3]) == "0-3,7,9-10"
    assert partition_ranges([5]) == "5" and partition_ranges([]) == ""
    for parts in ([0], [1, 3, 5], list(range(100)), [0, 1, 2, 50, 98, 99]):
        assert parse_partition_ranges(partition_ranges(parts)) == parts
