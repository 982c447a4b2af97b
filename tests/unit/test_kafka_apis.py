"""The request layer with no transport: KafkaApis called with plain requests, as any front door calls it.

One broker (id 1) with a real LogManager and ReplicaManager in tmp_path, reading a metadata image the
test builds from records. Topic ``orders`` has one replica on broker 1; topic ``elsewhere`` is led by
broker 2 (registered, not running), so this broker answers NOT_LEADER_OR_FOLLOWER with the hint.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from broker.admission import SlotsExhaustedError, StreamSlots
from broker.api_messages import FetchPartition, FetchRequest, ListOffsetsPartition, ProducePartition, ProduceRequest
from broker.append_notifier import AppendNotifier
from broker.config import BrokerSettings
from broker.fault_injection import AnswerDroppedForTest, FaultBudget
from broker.kafka_apis import MAX_PARTITIONS_PER_REQUEST, KafkaApis
from broker.log import LogManager
from broker.metadata.image import MetadataImage, apply_batch
from broker.metadata.records import CreateTopic, RegisterBroker, UnfenceBroker
from broker.produce_pipeline import ProducePipeline
from broker.replica_manager import ReplicaManager
from broker.request_errors import MalformedRequestError
from client.errors import (CorruptMessageError, InvalidRequiredAcksError, NotLeaderOrFollowerError, RecordTooLargeError,
                           InvalidTopicError, UnknownTopicOrPartitionError, UnsupportedCompressionTypeError)
from client.record_batch import build_batch, decode_all

MAX_MESSAGE_BYTES = 4096


@dataclass
class Quorum:
    """What KafkaApis reads of the metadata quorum: the committed image and who controls."""
    image: MetadataImage

    def controller_id(self) -> int:
        return 1


@pytest.fixture
def apis(tmp_path):
    settings = BrokerSettings(message_max_bytes=MAX_MESSAGE_BYTES)
    logs = LogManager(tmp_path / "data", settings.log)
    logs.open(0)
    old = MetadataImage("unit-cluster")
    image, outcome = apply_batch(old, [
        RegisterBroker(1, "127.0.0.1", 9001, "inc-1"), RegisterBroker(2, "127.0.0.2", 9002, "inc-2"),
        UnfenceBroker(1, 0), UnfenceBroker(2, 0),
        CreateTopic("orders", "id-orders", ((1,),), {}), CreateTopic("elsewhere", "id-else", ((2, 1),), {})])
    assert outcome.applied, outcome.reason
    quorum = Quorum(image)
    manager = ReplicaManager(1, logs, quorum, settings, AppendNotifier())
    assert manager.on_metadata_change(old, image) == []
    yield KafkaApis(1, controller=None, quorum=quorum, replica_manager=manager, forwarder=None,
                    client_slots=StreamSlots(1, 1), follower_slots=StreamSlots(1, 1, "inter.broker"),
                    fetch_max_bytes=1 << 20, drop_produce_answers=FaultBudget(0))
    logs.close()


def batch(*values: bytes) -> bytes:
    return build_batch([(None, v, 1000 + i) for i, v in enumerate(values)])


def produce(topic: str, records: bytes, acks: int = 1, correlation_id: int = 0) -> ProduceRequest:
    return ProduceRequest(acks, 1000, [ProducePartition(topic, 0, records)], correlation_id)


def consumer_fetch(topic: str = "orders", offset: int = 0, **kw) -> FetchRequest:
    return FetchRequest(-1, kw.pop("max_wait_ms", 0), kw.pop("min_bytes", 0), kw.pop("max_bytes", 0),
                        [FetchPartition(topic, 0, offset, partition_max_bytes=kw.pop("partition_max_bytes", 0))])


def values(apis: KafkaApis, offset: int = 0) -> list[bytes]:
    [r] = apis.fetch(consumer_fetch(offset=offset), call=object())
    assert r.error is None, r.error
    return [rec.value for rec in decode_all(r.records)]


def test_a_produce_is_appended_and_a_consumer_fetch_reads_it(apis):
    first = apis.produce(produce("orders", batch(b"a", b"b"), correlation_id=7))
    second = apis.produce(produce("orders", batch(b"c"), acks=-1))
    assert first.correlation_id == 7
    assert [(r.error, r.base_offset) for r in first.results + second.results] == [(None, 0), (None, 2)]
    assert values(apis) == [b"a", b"b", b"c"]
    [latest] = apis.list_offsets([ListOffsetsPartition("orders", 0, -1)], read_from_replica=False)
    assert (latest.error, latest.offset) == (None, 3)


def test_a_partition_led_elsewhere_answers_not_leader_with_the_leaders_address(apis):
    [r] = apis.produce(produce("elsewhere", batch(b"x"))).results
    assert isinstance(r.error, NotLeaderOrFollowerError)
    hint = r.error.leader_hint
    assert (hint.leader_id, hint.leader_epoch, hint.host, hint.port) == (2, 0, "127.0.0.2", 9002)
    [f] = apis.fetch(consumer_fetch("elsewhere"), call=object())
    assert isinstance(f.error, NotLeaderOrFollowerError) and f.error.leader_hint.leader_id == 2


@pytest.mark.parametrize("records, acks, error", [
    (batch(b"x"), 2, InvalidRequiredAcksError),
    (batch(b"x" * MAX_MESSAGE_BYTES), 1, RecordTooLargeError),
    (batch(b"x")[:-1], 1, CorruptMessageError),                                      # cut short
    (batch(b"x")[:-5] + b"\xff" + batch(b"x")[-4:], 1, CorruptMessageError),           # a flipped byte
])
def test_a_bad_batch_is_refused_with_its_kafka_error_and_nothing_is_stored(apis, records, acks, error):
    [r] = apis.produce(produce("orders", records, acks=acks)).results
    assert isinstance(r.error, error), r.error
    assert values(apis) == []


def test_metadata_answers_unknown_topics_per_topic(apis):
    answer = apis.metadata(["orders", "nope"])
    orders, nope = answer.topics
    assert isinstance(nope.error, UnknownTopicOrPartitionError) and nope.partitions == []
    assert orders.error is None and [(p.leader_id, p.isr) for p in orders.partitions] == [(1, (1,))]
    assert [b.broker_id for b in answer.brokers] == [1, 2] and answer.controller_id == 1


@pytest.mark.parametrize("call", [
    lambda a: a.fetch(FetchRequest(2, 0, 0, 0, []), call=object()),                 # a follower on Fetch
    lambda a: a.fetch(FetchRequest(-1, 0, 0, 0, []), call=object(), follower=True),   # a consumer on ReplicaFetch
    lambda a: a.fetch(consumer_fetch(max_bytes=-1), call=object()),
    lambda a: a.produce(ProduceRequest(1, 1000, [ProducePartition("orders", 0, b"")] * (MAX_PARTITIONS_PER_REQUEST + 1))),
    lambda a: a.list_offsets([ListOffsetsPartition("orders", 0, -1)] * (MAX_PARTITIONS_PER_REQUEST + 1), False),
])
def test_a_malformed_request_is_refused_as_a_whole(apis, call):
    with pytest.raises(MalformedRequestError):
        call(apis)
    assert values(apis) == []


def test_a_long_poll_needs_a_slot_and_a_short_fetch_does_not(apis):
    with apis.client_slots.hold(object(), "a stream"):    # the listener's only slot
        with pytest.raises(SlotsExhaustedError, match="grpc.max.concurrent.streams"):
            apis.fetch(consumer_fetch(max_wait_ms=50, min_bytes=1), call=object())
        [r] = apis.fetch(consumer_fetch(), call=object())
        assert r.error is None
    [r] = apis.fetch(consumer_fetch(max_wait_ms=50, min_bytes=1), call=object())
    assert r.error is None and r.records == b""      # waited the 50 ms for nothing, then answered


def test_a_dropped_answer_still_stored_the_batch(apis):
    apis._drop_produce_answers = FaultBudget(1)
    with pytest.raises(AnswerDroppedForTest):
        apis.produce(produce("orders", batch(b"kept")))
    assert apis.produce(produce("orders", batch(b"next"))).results[0].base_offset == 1
    assert values(apis) == [b"kept", b"next"]


def test_a_produce_stream_answers_in_order_and_ends_at_a_malformed_request(apis):
    requests = [produce("orders", batch(b"%d" % i), correlation_id=i) for i in range(3)]
    requests.append(ProduceRequest(1, 1000, [ProducePartition("orders", 0, b"")] * (MAX_PARTITIONS_PER_REQUEST + 1)))
    requests.append(produce("orders", batch(b"never"), correlation_id=9))
    answers = []
    with pytest.raises(MalformedRequestError):
        for answer in ProducePipeline(apis, object(), lambda: True).run(iter(requests)):
            answers.append(answer)
    assert [(a.correlation_id, a.results[0].base_offset) for a in answers] == [(0, 0), (1, 1), (2, 2)]
    assert values(apis) == [b"0", b"1", b"2"]


def test_offset_for_leader_epoch_answers_where_an_epoch_ends(apis):
    from broker.api_messages import OffsetForLeaderEpochPartition
    apis.produce(produce("orders", batch(b"a", b"b", b"c")))
    [latest, unknown, elsewhere] = apis.offset_for_leader_epoch([
        OffsetForLeaderEpochPartition("orders", 0, 0), OffsetForLeaderEpochPartition("orders", 0, 9),
        OffsetForLeaderEpochPartition("elsewhere", 0, 0)])
    assert (latest.error, latest.leader_epoch, latest.end_offset) == (None, 0, 3)   # the latest epoch: the log end
    assert (unknown.leader_epoch, unknown.end_offset) == (-1, -1)
    assert isinstance(elsewhere.error, NotLeaderOrFollowerError) and elsewhere.error.leader_hint.leader_id == 2


def test_zstd_below_produce_v7_is_refused_and_the_others_in_the_request_appended(apis):
    """KIP-110: Kafka's Produce v3-6 may not carry zstd (UNSUPPORTED_COMPRESSION_TYPE); v7+ may."""
    zstd, plain = batch_with(b"z", compression_type=4), batch(b"p")
    old = ProduceRequest(1, 1000, [ProducePartition("orders", 0, zstd), ProducePartition("orders", 0, plain)],
                         zstd_allowed=False)
    refused, appended = apis.produce(old).results
    assert isinstance(refused.error, UnsupportedCompressionTypeError), refused.error
    assert (appended.error, appended.base_offset) == (None, 0)
    [new] = apis.produce(ProduceRequest(1, 1000, [ProducePartition("orders", 0, zstd)])).results
    assert (new.error, new.base_offset) == (None, 1)
    assert values(apis) == [b"p", b"z"]


def batch_with(*values: bytes, compression_type: int) -> bytes:
    return build_batch([(None, v, 1000 + i) for i, v in enumerate(values)], compression_type=compression_type)


def test_a_decompression_bomb_is_refused_as_too_large(apis):
    """65 MiB of zeros in a few KiB of zstd: RECORD_TOO_LARGE, found without decompressing it whole."""
    from client.record_batch import DECOMPRESSED_BATCH_MAX_BYTES
    bomb = batch_with(b"\0" * (DECOMPRESSED_BATCH_MAX_BYTES + (1 << 20)), compression_type=4)
    assert len(bomb) < MAX_MESSAGE_BYTES
    [r] = apis.produce(produce("orders", bomb)).results
    assert isinstance(r.error, RecordTooLargeError), r.error
    assert values(apis) == []


def test_clients_cannot_append_to_an_internal_topic(apis):
    [r] = apis.produce(produce("__consumer_offsets", batch(b"x"))).results
    assert isinstance(r.error, InvalidTopicError) and "internal topic" in str(r.error)


def test_find_coordinator_names_the_leader_of_the_groups_offsets_partition(tmp_path):
    """Kafka's placement: partition abs(hash(group)) % partitions of __consumer_offsets, its leader."""
    from broker.api_messages import GROUP_KEY_TYPE
    from broker.group.offsets_records import partition_for
    from client.errors import CoordinatorNotAvailableError, InvalidRequestError
    image, outcome = apply_batch(MetadataImage("unit-cluster"), [
        RegisterBroker(1, "127.0.0.1", 9001, "inc-1"), RegisterBroker(2, "127.0.0.2", 9002, "inc-2"),
        UnfenceBroker(1, 0), UnfenceBroker(2, 0),
        CreateTopic("__consumer_offsets", "id-offsets", ((1, 2), (2, 1), (3,)), {})])
    assert outcome.applied, outcome.reason
    apis = KafkaApis(1, controller=None, quorum=Quorum(image), replica_manager=None, forwarder=None,
                     client_slots=StreamSlots(1, 1), follower_slots=StreamSlots(1, 1), fetch_max_bytes=1 << 20)
    groups = [g for g in (f"group-{i}" for i in range(40))]
    by_partition = {p: [g for g in groups if partition_for(g, 3) == p] for p in range(3)}
    assert all(by_partition.values()), "40 names cover the 3 partitions"
    answers = {r.key: r for r in apis.find_coordinator(GROUP_KEY_TYPE, groups)}
    for p, leader in ((0, 1), (1, 2)):
        assert {(answers[g].error, answers[g].node_id) for g in by_partition[p]} == {(None, leader)}
    # partition 2 lives on broker 3 alone, never registered: no leader, no coordinator
    assert all(isinstance(answers[g].error, CoordinatorNotAvailableError) for g in by_partition[2])
    [txn] = apis.find_coordinator(1, ["a-transactional-id"])
    assert isinstance(txn.error, InvalidRequestError)
