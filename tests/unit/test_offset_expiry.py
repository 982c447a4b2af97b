"""offsets.retention.minutes (Kafka's KIP-211 rules), decided by broker/group/offset_expiry.py with the clock
passed in, and carried out by the coordinator as tombstones on the log."""

from __future__ import annotations

import dataclasses

from broker.group.coordinator import GroupCoordinator
from broker.group.group_metadata import GroupMetadata, GroupState
from broker.group.offset_expiry import Expiry, expired
from broker.group.offsets_records import (NO_TIMESTAMP, GroupMetadataKey, GroupMetadataValue, OffsetCommitKey,
                                          OffsetCommitValue, OffsetsPartitionImage, partition_for)
from tests.unit.test_group_coordinator import broker, commit  # noqa: F401 - the fixture

RETENTION = 1000


def image_with(group: str, commits: dict[tuple[str, int], int], state_since: int | None = None,
               expire_at: int = NO_TIMESTAMP) -> OffsetsPartitionImage:
    """``commits``: {(topic, partition): commit time}; ``state_since``: the stored metadata's timestamp."""
    image = OffsetsPartitionImage()
    for (topic, partition), at in commits.items():
        image.apply(OffsetCommitKey(group, topic, partition), OffsetCommitValue(7, -1, "", at, expire_at))
    if state_since is not None:
        image.apply(GroupMetadataKey(group), GroupMetadataValue("consumer", 3, "range", None, state_since, []))
    return image


def consumer_group(state: GroupState) -> GroupMetadata:
    return GroupMetadata("g", state=state, generation_id=3, protocol_type="consumer", protocol_name="range")


def test_an_offsets_only_group_expires_offset_by_offset_then_goes():
    image = image_with("g", {("a", 0): 0, ("a", 1): 500})
    assert expired(image, "g", None, set(), RETENTION - 1, RETENTION) is None
    assert expired(image, "g", None, set(), RETENTION, RETENTION) == Expiry("g", [("a", 0)], False)
    assert expired(image, "g", None, set(), RETENTION + 500, RETENTION) == Expiry("g", [("a", 0), ("a", 1)], True)


def test_an_empty_group_keeps_everything_for_the_retention_after_it_emptied():
    image = image_with("g", {("a", 0): 0, ("b", 0): 0}, state_since=5000)
    group = consumer_group(GroupState.EMPTY)
    assert expired(image, "g", group, set(), 5000 + RETENTION - 1, RETENTION) is None   # old commits, young emptiness
    assert expired(image, "g", group, set(), 5000 + RETENTION, RETENTION) == Expiry("g", [("a", 0), ("b", 0)], True)


def test_an_empty_group_without_offsets_is_deleted():
    image = image_with("g", {}, state_since=5000)
    assert expired(image, "g", consumer_group(GroupState.EMPTY), set(), 5001, RETENTION) == Expiry("g", [], True)


def test_a_stable_group_loses_only_offsets_of_topics_nobody_subscribes_to():
    image = image_with("g", {("a", 0): 0, ("b", 0): 0})
    found = expired(image, "g", consumer_group(GroupState.STABLE), {"a"}, 10 * RETENTION, RETENTION)
    assert found == Expiry("g", [("b", 0)], False)


def test_a_rebalancing_group_keeps_everything_and_an_explicit_expiry_wins():
    image = image_with("g", {("a", 0): 0})
    for state in (GroupState.PREPARING_REBALANCE, GroupState.COMPLETING_REBALANCE):
        assert expired(image, "g", consumer_group(state), set(), 10 * RETENTION, RETENTION) is None
    early = image_with("g", {("a", 0): 0}, expire_at=10)
    assert expired(early, "g", None, set(), 10, RETENTION) == Expiry("g", [("a", 0)], True)


def test_the_coordinator_writes_tombstones_and_a_new_coordinator_finds_nothing(broker):  # noqa: F811
    manager, quorum, settings = broker
    wall = [0]
    settings = dataclasses.replace(settings, offsets_retention_minutes=1)
    c = GroupCoordinator(1, manager, quorum, settings, wall_clock_ms=lambda: wall[0])
    c.poll()
    group = next(g for g in (f"expiring-{i}" for i in range(400)) if partition_for(g, 2) == 0)
    assert commit(c, group, {("orders", 0): 4, ("orders", 1): 5}) == [("orders", 0, None), ("orders", 1, None)]
    assert (group, "", "Empty") in c.list_groups()[1]
    wall[0] = 59_999
    assert c.expire_offsets() == 0
    wall[0] = 60_000
    assert c.expire_offsets() == 2
    assert c.offset_fetch(group, None) == (None, [])
    assert group not in [g for g, _, _ in c.list_groups()[1]]
    again = GroupCoordinator(1, manager, quorum, settings, wall_clock_ms=lambda: wall[0])
    again.poll()                                   # rebuilt from the log alone: the tombstones hold
    assert again.offset_fetch(group, None) == (None, [])
    assert group not in [g for g, _, _ in again.list_groups()[1]]
