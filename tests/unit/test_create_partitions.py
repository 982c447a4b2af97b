"""CreatePartitions (kafka-topics.sh --alter --partitions): the record, apply, placement, the rules, the controller
on a real one-node metadata quorum, the request layer and the gRPC door, and a broker hosting the new partitions.

Controller tests share one quorum per liveness situation (brokers 1-3 live; broker 2 fenced by a controlled
shutdown); each test grows its own topics. No broker processes: tests/integration/test_create_partitions.py
runs three.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import grpc_translate as wire
from broker.admission import StreamSlots
from broker.api_messages import CreatePartitionsRequest, PartitionsIncrease
from broker.append_notifier import AppendNotifier
from broker.config import BrokerSettings
from broker.controller import TopicOutcome
from broker.forwarding import ControllerForwarder
from broker.kafka_apis import MAX_PARTITIONS_PER_REQUEST, KafkaApis
from broker.log import LogManager
from broker.metadata import topic_rules
from broker.metadata.image import (BatchOutcome, MetadataImage, PartitionRegistration, apply_batch, image_from_dict,
                                   image_to_dict, local_changes)
from broker.metadata.placement import assign_new_partitions, assign_replicas
from broker.metadata.records import (CreatePartitions, CreateTopic, RegisterBroker, UnfenceBroker, record_from_dict,
                                     record_to_dict)
from broker.metadata.topic_rules import MAX_PARTITIONS_PER_TOPIC
from broker.replica_manager import ReplicaManager
from broker.request_errors import MalformedRequestError
from broker.servicer import KafkaServicer
from client.errors import (InvalidPartitionsError, InvalidReplicaAssignmentError, InvalidReplicationFactorError,
                           InvalidRequestError, NotControllerError, UnknownTopicOrPartitionError)
from client.protocol.v1 import common_pb2, kafka_pb2
from client.record_batch import build_batch
from tests.unit.test_controller import Node, running_node

# ---- the record and apply (pure) ------------------------------------------------------------------


def commit(image: MetadataImage, *records) -> MetadataImage:
    new, outcome = apply_batch(image, list(records))
    assert outcome == BatchOutcome(True, image.offset), outcome
    return new


def live_cluster(live=(1, 2, 3), fenced=()) -> MetadataImage:
    image = MetadataImage("c1")
    for b in sorted({*live, *fenced}):
        image = commit(image, RegisterBroker(b, "127.0.0.1", 9000 + b, f"inc-{b}"))
    for b in live:
        image = commit(image, UnfenceBroker(b, image.brokers[b].broker_epoch))
    return image


@pytest.fixture
def two_partitions() -> MetadataImage:
    """Topic t (id t-id), 2 partitions RF 3 on live brokers 1-3, broker 4 registered and fenced."""
    return commit(live_cluster(fenced=(4,)), CreateTopic("t", "t-id", ((1, 2, 3), (2, 3, 1))))


def test_new_partitions_are_appended_led_by_their_first_live_replica(two_partitions):
    before = two_partitions.topics["t"]
    after = commit(two_partitions, CreatePartitions("t", "t-id", 2, ((3, 1, 2), (4, 1, 2)))).topics["t"]
    assert after.partitions[:2] == before.partitions          # the existing partitions are untouched
    assert (after.topic_id, after.configs) == (before.topic_id, before.configs)
    assert after.partitions[2:] == (
        PartitionRegistration((3, 1, 2), (3, 1, 2), 3, leader_epoch=0, partition_epoch=0),
        PartitionRegistration((4, 1, 2), (1, 2), 1, leader_epoch=0, partition_epoch=0))   # 4 is fenced


@pytest.mark.parametrize("record", [
    CreatePartitions("t", "other-id", 2, ((1, 2, 3),)),      # a re-created topic of the same name
    CreatePartitions("nope", "t-id", 2, ((1, 2, 3),)),
    CreatePartitions("t", "t-id", 1, ((1, 2, 3),)),          # decided when the topic had 1 partition
    CreatePartitions("t", "t-id", 3, ((1, 2, 3),)),
    CreatePartitions("t", "t-id", 2, ()),
    CreatePartitions("t", "t-id", 2, ((1, 2, 3), (4,))),     # its only replica was fenced meanwhile
], ids=["topic-id", "unknown-topic", "count-behind", "count-ahead", "nothing-to-add", "no-live-replica"])
def test_a_stale_create_partitions_changes_nothing_but_the_offset(two_partitions, record):
    new, outcome = apply_batch(two_partitions, [record])
    assert not outcome.applied and outcome.reason
    assert new == replace(two_partitions, offset=two_partitions.offset + 1)


def test_the_record_round_trips_through_dicts_and_json_with_tuples():
    record = CreatePartitions("t", "t-id", 2, ((3, 1, 2), (1, 2, 3)))
    d = record_to_dict(record)
    assert d["type"] == "CreatePartitions"
    restored = record_from_dict(json.loads(json.dumps(d)))
    assert restored == record
    assert isinstance(restored.assignments, tuple) and all(isinstance(r, tuple) for r in restored.assignments)


def test_a_grown_topic_survives_a_snapshot(two_partitions):
    grown = commit(two_partitions, CreatePartitions("t", "t-id", 2, ((3, 1, 2), (1, 2, 3))))
    assert image_from_dict(image_to_dict(grown)) == grown
    assert image_from_dict(json.loads(json.dumps(image_to_dict(grown)))) == grown


def test_local_changes_give_each_broker_its_new_partitions_by_role(two_partitions):
    grown = commit(two_partitions, CreatePartitions("t", "t-id", 2, ((3, 1, 2), (1, 3, 4))))
    on_1 = local_changes(two_partitions, grown, 1)
    assert (sorted(on_1.leaders), sorted(on_1.followers), on_1.deleted) == ([("t", 3)], [("t", 2)], [])
    on_2 = local_changes(two_partitions, grown, 2)
    assert (sorted(on_2.leaders), sorted(on_2.followers)) == ([], [("t", 2)])
    on_4 = local_changes(two_partitions, grown, 4)   # fenced, yet a replica: it hosts it as a follower
    assert (sorted(on_4.leaders), sorted(on_4.followers)) == ([], [("t", 3)])
    assert not local_changes(two_partitions, grown, 5)


@dataclass
class Metadata:
    image: MetadataImage


@dataclass
class Followed:
    """The replica manager's fetcher control, recording whom each partition follows."""
    leaders: dict

    def follow(self, tp, leader_id, leader_epoch):
        self.leaders[tp] = leader_id

    def stop_following(self, tp):
        self.leaders.pop(tp, None)


def test_a_broker_hosts_the_new_partitions_after_the_metadata_change(tmp_path, two_partitions):
    settings = BrokerSettings()
    logs = LogManager(tmp_path / "data", settings.log)
    logs.open(0)
    fetchers = Followed({})
    metadata = Metadata(two_partitions)
    manager = ReplicaManager(1, logs, metadata, settings, AppendNotifier(), fetchers=fetchers)
    try:
        assert manager.on_metadata_change(MetadataImage("c1"), two_partitions) == []
        metadata.image = grown = commit(two_partitions, CreatePartitions("t", "t-id", 2, ((1, 2, 3), (2, 3, 1))))
        assert manager.on_metadata_change(two_partitions, grown) == []
        assert set(manager.high_watermarks()) == {("t", p) for p in range(4)}
        assert {tp for tp in logs.all()} == {("t", p) for p in range(4)}
        assert fetchers.leaders == {("t", 1): 2, ("t", 3): 2}       # it follows broker 2 for partition 3
        [result] = manager.append_to_leader(1, [("t", 2, build_batch([(None, b"v", 1)]), 0)])
        assert (result.error, result.base_offset) == (None, 0)     # it leads partition 2: it takes the write
    finally:
        logs.close()


# ---- placement and the rules (pure) ---------------------------------------------------------------


def test_added_partitions_continue_the_topics_round_robin():
    existing = assign_replicas(2, 3, [1, 2, 3], start_index=1, shift=1)
    added = assign_new_partitions(existing, 2, [1, 2, 3])
    assert existing + added == assign_replicas(4, 3, [1, 2, 3], start_index=1, shift=1)
    # Kafka: leaders continue from partition 0's broker, so 3 brokers lead 4 partitions 2-1-1.
    assert sorted(Counter(r[0] for r in existing + added).values()) == [1, 1, 2]


def test_added_partitions_go_to_the_brokers_given_only():
    existing = ((2, 3), (3, 1))
    added = assign_new_partitions(existing, 4, [1, 3])                    # broker 2 is fenced
    assert all(set(r) <= {1, 3} and len(r) == 2 for r in added)
    assert assign_new_partitions(((9, 1),), 1, [1, 3]) == ((3, 1),)      # partition 0's broker gone: index 0


@given(total=st.integers(1, 30), start=st.integers(0, 30), brokers=st.integers(1, 6), data=st.data())
def test_property_assigning_from_a_start_partition_is_the_tail_of_the_whole(total, start, brokers, data):
    start = min(start, total)
    ids = list(range(1, brokers + 1))
    rf = data.draw(st.integers(1, brokers))
    index, shift = data.draw(st.integers(0, brokers - 1)), data.draw(st.integers(0, brokers))
    whole = assign_replicas(total, rf, ids, index, shift)
    assert assign_replicas(total - start, rf, ids, index, shift, start_partition=start) == whole[start:]


@pytest.mark.parametrize("current,requested,message", [
    (3, 2, "Topic currently has 3 partitions, which is higher than the requested 2."),
    (3, 0, "Topic currently has 3 partitions, which is higher than the requested 0."),
    (3, 3, "Topic already has 3 partitions."),
    (3, MAX_PARTITIONS_PER_TOPIC + 1, f"Number of partitions {MAX_PARTITIONS_PER_TOPIC + 1} is larger than the "
                                      f"limit of {MAX_PARTITIONS_PER_TOPIC} per topic."),
])
def test_partition_increase_errors(current, requested, message):
    error = topic_rules.partition_increase_error(current, requested)
    assert isinstance(error, InvalidPartitionsError) and error.message == message and error.code == 37
    assert topic_rules.partition_increase_error(current, current + 1) is None


@pytest.mark.parametrize("assignments,message", [
    ([[1, 2]], "Attempted to add 2 additional partition(s), but 1 assignment(s) were specified."),
    ([[1, 2], [1, 2], [1, 2]], "Attempted to add 2 additional partition(s), but 3 assignment(s) were specified."),
    ([[1, 2], []], "The manual partition assignment includes an empty replica list."),
    ([[1, 2], [1, 7]], "The manual partition assignment includes broker 7, but no such broker is registered."),
    ([[1, 2], [3, 3]], "The manual partition assignment includes the broker 3 more than once."),
    ([[1, 2], [1, 2, 3]], "The manual partition assignment includes a partition with 3 replica(s), but this is not "
                          "consistent with previous partitions, which have 2 replica(s)."),
])
def test_replica_assignment_errors(assignments, message):
    error = topic_rules.replica_assignment_error(assignments, 2, 2, {1, 2, 3})
    assert isinstance(error, InvalidReplicaAssignmentError) and error.message == message and error.code == 39
    assert topic_rules.replica_assignment_error([[1, 2], [3, 1]], 2, 2, {1, 2, 3}) is None


# ---- the controller, on a real one-node quorum -----------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """Brokers 1, 2 and 3 live; each test creates and grows its own topics."""
    with running_node(tmp_path_factory.mktemp("grow")) as n:
        n.unfenced(1, 2, 3)
        yield n


def grow(node: Node, name: str, count: int, assignments=None, validate_only: bool = False):
    """One topic's CreatePartitions: its error, or None once grown (validated, with validate_only)."""
    [outcome] = node.controller.create_partitions([PartitionsIncrease(name, count, assignments)], validate_only)
    assert outcome.name == name
    return outcome.error


def test_a_topic_grows_with_new_partitions_led_with_a_full_isr(node):
    assert node.create("grows", 2, 3) is None
    before = node.image.topics["grows"]
    assert grow(node, "grows", 4) is None
    after = node.image.topics["grows"]
    assert len(after.partitions) == 4 and after.topic_id == before.topic_id
    assert after.partitions[:2] == before.partitions
    for reg in after.partitions[2:]:
        assert len(set(reg.replicas)) == 3 and reg.isr == reg.replicas and reg.leader == reg.replicas[0]
        assert (reg.leader_epoch, reg.partition_epoch) == (0, 0)
    # The round robin went on from the topic's own: every broker leads one of partitions 0-2.
    assert {p.leader for p in after.partitions[:3]} == {1, 2, 3}


def test_a_manual_assignment_is_taken_as_given(node):
    assert node.create("manual", 1, 2) is None
    assert grow(node, "manual", 3, [[3, 1], [2, 3]]) is None
    assert [(p.replicas, p.leader) for p in node.image.topics["manual"].partitions[1:]] == [((3, 1), 3),
                                                                                           ((2, 3), 2)]


def unchanged_error(node: Node, name: str, count: int, assignments=None, validate_only: bool = False):
    before = node.image
    error = grow(node, name, count, assignments, validate_only)
    assert node.image.topics == before.topics
    return error


@pytest.mark.parametrize("count,assignments,error,message", [
    (2, None, InvalidPartitionsError, "Topic currently has 3 partitions, which is higher than the requested 2."),
    (3, None, InvalidPartitionsError, "Topic already has 3 partitions."),
    (MAX_PARTITIONS_PER_TOPIC + 1, None, InvalidPartitionsError, "is larger than the limit"),
    (5, [[1, 2, 3]], InvalidReplicaAssignmentError, "Attempted to add 2 additional partition(s)"),
    (4, [[1, 2]], InvalidReplicaAssignmentError, "which have 3 replica(s)"),
    (4, [[1, 2, 9]], InvalidReplicaAssignmentError, "includes broker 9, but no such broker is registered"),
    (4, [[1, 2, 1]], InvalidReplicaAssignmentError, "includes the broker 1 more than once"),
])
def test_refused_increases_change_nothing(node, count, assignments, error, message):
    if "refused" not in node.image.topics:
        assert node.create("refused", 3, 3) is None
    got = unchanged_error(node, "refused", count, assignments)
    assert isinstance(got, error) and message in got.message, got
    assert unchanged_error(node, "refused", count, assignments, validate_only=True).message == got.message


def test_an_unknown_topic_is_unknown_topic_or_partition(node):
    error = unchanged_error(node, "no-such-topic", 3)
    assert isinstance(error, UnknownTopicOrPartitionError) and error.code == 3


def test_validate_only_changes_nothing(node):
    assert node.create("validated", 1, 3) is None
    assert unchanged_error(node, "validated", 5, validate_only=True) is None
    assert len(node.image.topics["validated"].partitions) == 1


def test_each_topic_is_answered_on_its_own_in_order_and_a_duplicate_is_invalid_request(node):
    assert node.create("each-a", 1, 1) is None and node.create("each-b", 1, 1) is None
    outcomes = node.controller.create_partitions([PartitionsIncrease("each-a", 2), PartitionsIncrease("missing", 2),
                                                  PartitionsIncrease("each-b", 0), PartitionsIncrease("each-a", 3),
                                                  PartitionsIncrease("each-b", 3)])
    assert [o.name for o in outcomes] == ["each-a", "missing", "each-b", "each-a", "each-b"]
    errors = [type(o.error) for o in outcomes]
    assert errors == [InvalidRequestError, UnknownTopicOrPartitionError, InvalidRequestError, InvalidRequestError,
                      InvalidRequestError]
    assert outcomes[0].error.message == "Duplicate topic name."
    [ok] = node.controller.create_partitions([PartitionsIncrease("each-b", 3)])
    assert ok.error is None and len(node.image.topics["each-b"].partitions) == 3
    assert len(node.image.topics["each-a"].partitions) == 1


@pytest.fixture(scope="module")
def broker_2_fenced(tmp_path_factory):
    """Brokers 1-3 registered, topics rf2 (RF 2) and rf3 (RF 3) created, then broker 2 fenced by a controlled
    shutdown."""
    with running_node(tmp_path_factory.mktemp("fenced")) as n:
        epochs = n.unfenced(1, 2, 3)
        assert n.create("rf2", 3, 2) is None and n.create("rf3", 1, 3) is None
        assert n.heartbeat(2, epochs[2], want_shut_down=True).should_shut_down
        assert n.image.live_broker_ids() == [1, 3]
        yield n


def test_automatic_placement_uses_unfenced_brokers_only(broker_2_fenced):
    node = broker_2_fenced
    assert grow(node, "rf2", 9) is None
    for reg in node.image.topics["rf2"].partitions[3:]:
        assert sorted(reg.replicas) == [1, 3] and reg.isr == reg.replicas and reg.leader == reg.replicas[0]


def test_too_few_live_brokers_for_the_topics_replication_factor(broker_2_fenced):
    error = unchanged_error(broker_2_fenced, "rf3", 2)
    assert isinstance(error, InvalidReplicationFactorError) and error.code == 38
    assert "factor of 3 cannot be reached because only 2 broker(s)" in error.message


def test_a_manual_assignment_may_name_a_fenced_broker_but_not_only_fenced_ones(broker_2_fenced):
    node = broker_2_fenced
    error = unchanged_error(node, "rf3", 2, [[2, 2, 2]])
    assert isinstance(error, InvalidReplicaAssignmentError)               # a duplicate, before liveness
    assert grow(node, "rf3", 2, [[2, 3, 1]]) is None
    new = node.image.topics["rf3"].partitions[1]
    assert (new.replicas, new.isr, new.leader) == ((2, 3, 1), (3, 1), 3)
    assert node.create("rf1", 1, 1) is None
    error = unchanged_error(node, "rf1", 2, [[2]])
    assert isinstance(error, InvalidReplicaAssignmentError)
    assert error.message == ("All brokers specified in the manual partition assignment for partition 1 are fenced "
                             "or in controlled shutdown.")


# ---- the request layer and the gRPC door ---------------------------------------------------------------


@pytest.fixture
def apis(node):
    """KafkaApis on the active controller: its requests are answered here, not forwarded."""
    settled = []

    def wait_published(predicate, timeout_s):
        settled.append(predicate(node.quorum.image))
        return settled[-1]

    forwarder = ControllerForwarder(1, node.controller, node.quorum, lambda b: ("127.0.0.1", 1), wait_published)
    apis = KafkaApis(1, controller=node.controller, quorum=node.quorum, replica_manager=None, forwarder=forwarder,
                     client_slots=StreamSlots(1, 1), follower_slots=StreamSlots(1, 1, "inter.broker"),
                     fetch_max_bytes=1 << 20)
    apis.settled = settled
    yield apis
    forwarder.close()


def test_kafka_apis_answers_per_topic_and_waits_for_its_own_image(node, apis):
    assert node.create("apis", 2, 3) is None
    answer = apis.create_partitions(CreatePartitionsRequest([PartitionsIncrease("apis", 4),
                                                             PartitionsIncrease("apis-missing", 2)]))
    assert answer.outcomes[0] == TopicOutcome("apis", None)
    assert isinstance(answer.outcomes[1].error, UnknownTopicOrPartitionError)
    assert len(node.image.topics["apis"].partitions) == 4
    answer = apis.create_partitions(CreatePartitionsRequest([PartitionsIncrease("apis", 5)], timeout_ms=5000))
    assert answer.outcomes == [TopicOutcome("apis", None)] and apis.settled[-1] is True


def test_kafka_apis_refuses_too_many_partitions_in_one_request(apis):
    many = [[1, 2, 3]] * MAX_PARTITIONS_PER_REQUEST
    with pytest.raises(MalformedRequestError):
        apis.create_partitions(CreatePartitionsRequest([PartitionsIncrease("apis", 1 + len(many), many)]))


def test_the_plain_request_survives_the_wire_both_ways():
    request = CreatePartitionsRequest([PartitionsIncrease("a", 4, [[1, 2], [2, 3]]), PartitionsIncrease("b", 7)],
                                      validate_only=True, timeout_ms=1234)
    assert wire.create_partitions_request(wire.create_partitions_request_pb(request)) == request


class Context:
    """The few grpc.ServicerContext calls the servicer makes."""

    def time_remaining(self) -> float:
        return 10.0

    def invocation_metadata(self):
        return []

    def abort(self, code: grpc.StatusCode, details: str):
        raise AssertionError(f"aborted {code}: {details}")


def test_the_grpc_door_translates_both_ways(node, apis):
    assert node.create("door", 1, 3) is None
    request = kafka_pb2.CreatePartitionsRequest(topics=[
        kafka_pb2.CreatePartitionsTopic(name="door", count=3, assignments=[
            kafka_pb2.CreatePartitionsAssignment(broker_ids=[2, 3, 1]),
            kafka_pb2.CreatePartitionsAssignment(broker_ids=[3, 1, 2])]),
        kafka_pb2.CreatePartitionsTopic(name="door", count=1)], timeout_ms=5000)
    answer = KafkaServicer(apis).CreatePartitions(request, Context())
    assert isinstance(answer, kafka_pb2.CreatePartitionsResponse)
    assert [(t.name, t.error_code) for t in answer.topics] == [("door", common_pb2.INVALID_REQUEST)] * 2
    request = kafka_pb2.CreatePartitionsRequest(topics=[request.topics[0]], timeout_ms=5000)
    [ok] = KafkaServicer(apis).CreatePartitions(request, Context()).topics
    assert (ok.name, ok.error_code, ok.error_message) == ("door", common_pb2.NONE, "")
    assert [p.leader for p in node.image.topics["door"].partitions[1:]] == [2, 3]
    [again] = KafkaServicer(apis).CreatePartitions(request, Context()).topics
    assert (again.error_code, again.error_message) == (common_pb2.INVALID_PARTITIONS, "Topic already has 3 partitions.")


def test_a_controller_whose_node_stopped_leading_refuses_with_not_controller(tmp_path):
    with running_node(tmp_path) as n:
        n.unfenced(1)
        assert n.create("t", 1, 1) is None
        n.quorum.stop()
        assert not n.controller.is_active()
        with pytest.raises(NotControllerError):
            n.controller.create_partitions([PartitionsIncrease("t", 2)])
