"""The group coordinator over a real ReplicaManager and log (one broker, no transport).

Broker 1 leads partition 0 of __consumer_offsets and follows partition 1 (led by broker 2, registered
and not running); topic ``orders`` has two partitions. Groups are picked by the partition they hash to.
"""

from __future__ import annotations

import dataclasses

import threading
from dataclasses import dataclass

import pytest

from broker.append_notifier import AppendNotifier
from broker.config import BrokerSettings
from broker.group.coordinator import GroupCoordinator, OffsetCommitPartition
from broker.group.group_metadata import JoinGroupRequest, MemberIdentity, SyncGroupRequest
from broker.group.offsets_records import OffsetCommitKey, decode_key, partition_for
from broker.log import LogManager
from broker.metadata.image import MetadataImage, apply_batch
from broker.metadata.records import CreateTopic, RegisterBroker, UnfenceBroker
from broker.replica_manager import ReplicaManager
from raftka_testing.cluster import wait_for
from client.errors import (CoordinatorLoadInProgressError, GroupIdNotFoundError, GroupMaxSizeReachedError,
                           IllegalGenerationError, InvalidGroupIdError, InvalidRequestError, NonEmptyGroupError,
                           NotCoordinatorError, OffsetMetadataTooLargeError, UnknownMemberIdError,
                           UnknownTopicOrPartitionError)
from client.record_batch import decode_all

LOCAL = next(f"group-{i}" for i in range(100) if partition_for(f"group-{i}", 2) == 0)
REMOTE = next(f"group-{i}" for i in range(100) if partition_for(f"group-{i}", 2) == 1)


@dataclass
class Quorum:
    image: MetadataImage


@pytest.fixture
def broker(tmp_path):
    settings = BrokerSettings(group_initial_rebalance_delay_ms=0, group_min_session_timeout_ms=100,
                              offset_metadata_max_bytes=16)
    logs = LogManager(tmp_path / "data", settings.log)
    logs.open(0)
    old = MetadataImage("unit-cluster")
    image, outcome = apply_batch(old, [
        RegisterBroker(1, "127.0.0.1", 9001, "inc-1"), RegisterBroker(2, "127.0.0.2", 9002, "inc-2"),
        UnfenceBroker(1, 0), UnfenceBroker(2, 0),
        CreateTopic("__consumer_offsets", "id-offsets", ((1,), (2, 1)), {}),
        CreateTopic("orders", "id-orders", ((1,), (1,)), {})])
    assert outcome.applied, outcome.reason
    quorum = Quorum(image)
    manager = ReplicaManager(1, logs, quorum, settings, AppendNotifier())
    assert manager.on_metadata_change(old, image) == []
    yield manager, quorum, settings
    logs.close()


def coordinator(broker) -> GroupCoordinator:
    manager, quorum, settings = broker
    c = GroupCoordinator(1, manager, quorum, settings)
    c.poll()   # loads partition 0, the one broker 1 leads
    return c


def commit(c: GroupCoordinator, group: str, offsets: dict[tuple[str, int], int], generation: int = -1,
           member: str = "", metadata: str = "m") -> list:
    return c.offset_commit(group, member, generation, None,
                           [OffsetCommitPartition(t, p, o, 3, metadata) for (t, p), o in offsets.items()])


def test_a_standalone_commit_is_written_to_the_log_and_survives_a_new_coordinator(broker):
    c = coordinator(broker)
    assert commit(c, LOCAL, {("orders", 0): 7, ("orders", 1): 9}) == [("orders", 0, None), ("orders", 1, None)]
    error, fetched = c.offset_fetch(LOCAL, [("orders", 0), ("orders", 1), ("orders", 5)])
    assert error is None
    assert [(f.partition, f.offset, f.leader_epoch, f.metadata) for f in fetched] == [
        (0, 7, 3, "m"), (1, 9, 3, "m"), (5, -1, -1, "")]
    chunk, end = broker[0].read_local_log("__consumer_offsets", 0, 0)
    keys = [decode_key(r.key) for r in decode_all(chunk)]
    assert keys == [OffsetCommitKey(LOCAL, "orders", 0), OffsetCommitKey(LOCAL, "orders", 1)] and end == 2
    # A coordinator that starts now (a new leader) rebuilds the offsets from the log alone.
    error, again = coordinator(broker).offset_fetch(LOCAL, None)
    assert [(f.topic, f.partition, f.offset) for f in again] == [("orders", 0, 7), ("orders", 1, 9)]


def test_commits_are_checked_per_partition_and_per_group(broker):
    c = coordinator(broker)
    results = c.offset_commit(LOCAL, "", -1, None, [OffsetCommitPartition("orders", 0, 1, -1, "x" * 17),
                                                    OffsetCommitPartition("nope", 0, 1),
                                                    OffsetCommitPartition("orders", 9, 1),
                                                    OffsetCommitPartition("orders", 1, 4)])
    assert [type(e) if e else None for _, _, e in results] == [
        OffsetMetadataTooLargeError, UnknownTopicOrPartitionError, UnknownTopicOrPartitionError, None]
    # A generation for a group that has none: not a member.
    assert isinstance(commit(c, LOCAL, {("orders", 0): 1}, generation=3, member="m-1")[0][2], UnknownMemberIdError)
    # A generation for a group the coordinator does not have: Kafka's handleCommitOffsets says ILLEGAL_GENERATION.
    assert isinstance(commit(c, "", {("orders", 0): 1}, generation=3)[0][2], (IllegalGenerationError,
                                                                              NotCoordinatorError))
    assert isinstance(commit(c, REMOTE, {("orders", 0): 1})[0][2], NotCoordinatorError)
    assert isinstance(c.offset_fetch(REMOTE, None)[0], NotCoordinatorError)


def join(c: GroupCoordinator, group: str, member_id: str, out: dict, key: str) -> threading.Thread:
    request = JoinGroupRequest(member_id, "client", "/127.0.0.1", 10000, 2000, "consumer",
                               (("range", b"meta-" + key.encode()),), require_known_member_id=False)
    t = threading.Thread(target=lambda: out.__setitem__(key, c.join_group(group, request)), daemon=True)
    t.start()
    return t


def test_a_group_forms_stores_its_generation_and_fences_old_commits(broker):
    c = coordinator(broker)
    c.start()
    try:
        out: dict = {}
        for t in [join(c, LOCAL, "", out, "a")]:
            t.join(10)
        first = out["a"]
        assert first.error is None and first.generation_id == 1 and first.leader == first.member_id
        synced = c.sync_group(LOCAL, SyncGroupRequest(first.member_id, 1, ((first.member_id, b"all"),)), 5)
        assert (synced.error, synced.assignment) == (None, b"all")
        assert commit(c, LOCAL, {("orders", 0): 5}, generation=1, member=first.member_id)[0][2] is None
        assert isinstance(commit(c, LOCAL, {("orders", 0): 6}, generation=0, member=first.member_id)[0][2],
                          IllegalGenerationError)
        assert isinstance(c.delete_group(LOCAL), NonEmptyGroupError)
        error, described = c.describe_group(LOCAL)
        assert error is None and described.state == "Stable" and len(described.members) == 1
        assert c.list_groups()[0] is None and (LOCAL, "consumer", "Stable") in c.list_groups()[1]
        # The stored group brings its member and generation to a new coordinator.
        error, restored = coordinator(broker).describe_group(LOCAL)
        assert restored.state == "Stable" and [m.member_id for m in restored.members] == [first.member_id]
        left = c.leave_group(LOCAL, [MemberIdentity(first.member_id)])
        assert left.error is None and left.members[0].error is None
        assert c.delete_group(LOCAL) is None
        assert isinstance(c.delete_group(LOCAL), GroupIdNotFoundError)
        assert c.offset_fetch(LOCAL, None) == (None, [])
    finally:
        c.stop()


def test_group_ids_are_bounded(broker):
    c = coordinator(broker)
    request = JoinGroupRequest("", "client", "/127.0.0.1", 10000, 2000, "consumer", (("range", b""),))
    assert isinstance(c.join_group("", request).error, InvalidGroupIdError)
    assert isinstance(c.join_group("g" * 256, request).error, InvalidGroupIdError)


def test_losing_the_leadership_unloads_and_answers_waiting_joins(broker):
    manager, quorum, settings = broker
    c = coordinator(broker)
    assert commit(c, LOCAL, {("orders", 0): 1})[0][2] is None
    old = quorum.image
    quorum.image, outcome = apply_batch(old, [CreateTopic("other", "id-other", ((1,),), {})])
    # Broker 1 stops leading partition 0: simulate by stopping the hosted partition's leadership.
    manager.on_metadata_change(old, quorum.image)
    c._partitions[0].leader_epoch = 99   # the epoch it loaded at no longer matches: unload on the next poll
    c.poll()
    assert 0 in c._partitions and c._partitions[0].leader_epoch != 99   # reloaded at the real epoch
    error, fetched = c.offset_fetch(LOCAL, None)
    assert [(f.partition, f.offset) for f in fetched] == [(0, 1)]


def test_group_max_count_refuses_a_new_group_but_serves_the_ones_it_has(broker):
    manager, quorum, settings = broker
    c = GroupCoordinator(1, manager, quorum, dataclasses.replace(settings, group_max_count=2))
    c.poll()
    local = [g for g in (f"bounded-{i}" for i in range(400)) if partition_for(g, 2) == 0][:3]
    assert commit(c, local[0], {("orders", 0): 1})[0][2] is None
    assert commit(c, local[1], {("orders", 0): 1})[0][2] is None
    refused = commit(c, local[2], {("orders", 0): 1})[0][2]
    assert isinstance(refused, GroupMaxSizeReachedError) and "group.max.count" in str(refused)
    out: dict = {}
    join(c, local[2], "", out, "late").join(10)
    assert isinstance(out["late"].error, GroupMaxSizeReachedError)
    assert commit(c, local[0], {("orders", 0): 2})[0][2] is None        # an existing group goes on
    assert c.offset_fetch(local[2], None) == (None, [])                  # nothing was written for it


def test_list_groups_says_load_in_progress_until_every_led_partition_is_loaded(broker):
    manager, quorum, settings = broker
    c = GroupCoordinator(1, manager, quorum, settings)      # leads partition 0, has not loaded it yet
    error, groups = c.list_groups()
    assert isinstance(error, CoordinatorLoadInProgressError) and groups == []
    c.poll()
    assert c.list_groups() == (None, [])


def test_a_group_instance_id_is_bounded_like_a_group_id(broker):
    c = coordinator(broker)
    for bad in ("", "i" * 256):
        request = JoinGroupRequest("", "client", "/127.0.0.1", 10000, 2000, "consumer", (("range", b"m"),), bad)
        refused = c.join_group(LOCAL, request)
        assert isinstance(refused.error, InvalidRequestError) and "instance id" in str(refused.error)
    assert LOCAL not in [g for g, _, _ in c.list_groups()[1]]       # nothing was created


def test_a_failed_group_metadata_write_is_retried_and_an_older_decision_never_lands_last(broker):
    c = coordinator(broker)
    c.start()
    try:
        out: dict = {}
        join(c, LOCAL, "", out, "a").join(10)
        first = out["a"]
        real_append, failures = c._append, []

        def failing_once(cp, records):
            if not failures:
                failures.append(records)
                return NotCoordinatorError("the offsets write failed: NOT_ENOUGH_REPLICAS")
            return real_append(cp, records)
        c._append = failing_once
        synced = c.sync_group(LOCAL, SyncGroupRequest(first.member_id, 1, ((first.member_id, b"all"),)), 5)
        assert synced.error is None and failures, "the generation's write was attempted and failed"
        # The coordinator thread writes it again (STORE_RETRY_MS later): a new coordinator then loads it.
        wait_for(lambda: coordinator(broker).describe_group(LOCAL)[1].state == "Stable", 10,
                 "generation 1 written after the retry")
        # An older decision handed to _store_group after a newer one was written is not written again.
        cp = next(iter(c._partitions.values()))
        stale = dataclasses.replace(cp.image.groups[LOCAL], generation=0)
        c._store_group(cp, LOCAL, stale)
        assert coordinator(broker).describe_group(LOCAL)[1].state == "Stable"
        assert cp.image.groups[LOCAL].generation == 1
    finally:
        c.stop()
