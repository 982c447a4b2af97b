"""One real broker process: produce, consume, long poll, metadata, and bad input that must not hurt it."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from crc32c import crc32c

from client import Admin, Consumer, Producer
from client import record_batch
from client.errors import (InvalidPartitionsError, InvalidReplicationFactorError, InvalidTopicError,
                           NoBrokersAvailable, RecordTooLargeError, TopicAlreadyExistsError,
                           UnknownTopicOrPartitionError)
from client.partitioner import partition_for_key
from client.protocol.v1 import common_pb2, kafka_pb2, kafka_pb2_grpc, replication_pb2_grpc
from tests.integration.cluster import broker_channel, fetch_raw, free_ports, produce_raw


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 20.0, **kw) -> list:
    """Read from the beginning until ``expected`` records arrived or ``timeout`` passed."""
    out = []
    deadline = time.monotonic() + timeout
    with Consumer(bootstrap, topic, from_beginning=True, **kw) as c:
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(c.poll(timeout=0.5))
    return out


def stub(broker) -> kafka_pb2_grpc.KafkaStub:
    return kafka_pb2_grpc.KafkaStub(grpc.insecure_channel(broker.bootstrap))


def test_keyed_records_round_trip_with_kafka_partitioning(single_broker):
    admin = Admin(single_broker.bootstrap)
    admin.create_topic("roundtrip", partitions=3, replication_factor=1)
    sent = {}
    with Producer(single_broker.bootstrap, acks="all") as p:
        futures = [(i, p.send("roundtrip", f"value-{i}".encode(), key=f"key-{i % 17}".encode())) for i in range(1000)]
        for i, fut in futures:
            md = fut.result(timeout=30)
            assert md.partition == partition_for_key(f"key-{i % 17}".encode(), 3)
            sent[(md.partition, md.offset)] = f"value-{i}".encode()
    got = consume_all(single_broker.bootstrap, "roundtrip", 1000)
    assert len(got) == 1000
    assert {(r.partition, r.offset): r.value for r in got} == sent
    for part in range(3):  # offsets per partition are dense from 0: nothing lost, nothing twice
        offsets = sorted(r.offset for r in got if r.partition == part)
        assert offsets == list(range(len(offsets)))


@pytest.mark.parametrize("acks", ["all", 1, 0])
def test_every_acks_mode_stores_the_records(single_broker, acks):
    topic = f"acks-{acks}"
    Admin(single_broker.bootstrap).create_topic(topic, partitions=1, replication_factor=1)
    with Producer(single_broker.bootstrap, acks=acks) as p:
        results = [p.send(topic, f"m{i}".encode()).result(timeout=30) for i in range(50)]
    if acks == 0:
        assert all(md.offset == -1 for md in results)  # no answer awaited, so no offset
    else:
        assert [md.offset for md in results] == list(range(50))
    got = consume_all(single_broker.bootstrap, topic, 50)
    assert [r.value for r in got] == [f"m{i}".encode() for i in range(50)]


def test_fetch_long_poll_answers_when_data_arrives(single_broker):
    Admin(single_broker.bootstrap).create_topic("longpoll", partitions=1, replication_factor=1)
    future = stub(single_broker).Fetch.future(kafka_pb2.FetchRequest(
        replica_id=-1, max_wait_ms=10000, min_bytes=1,
        partitions=[kafka_pb2.FetchPartition(topic="longpoll", partition=0, fetch_offset=0, current_leader_epoch=-1)]),
        timeout=20)
    time.sleep(0.3)  # let the fetch park on the broker (setup, not an assertion)
    assert not future.done(), "an empty fetch with max_wait_ms=10000 must wait"
    started = time.monotonic()
    produce_raw(single_broker, "longpoll", record_batch.build_batch([(None, b"wake", 1)]))
    response = future.result(timeout=20).partitions[0]
    assert response.error_code == 0
    assert [r.value for r in record_batch.decode_all(response.records)] == [b"wake"]
    assert time.monotonic() - started < 5, "the fetch answered on its max_wait, not on the append"


def test_empty_fetch_waits_max_wait_ms(single_broker):
    Admin(single_broker.bootstrap).create_topic("emptywait", partitions=1, replication_factor=1)
    started = time.monotonic()
    response = fetch_raw(single_broker, "emptywait", 0, max_wait_ms=400)
    assert response.error_code == 0 and response.records == b""
    assert time.monotonic() - started >= 0.35


def test_metadata_describes_topic_and_cluster(single_broker):
    admin = Admin(single_broker.bootstrap)
    admin.create_topic("described", partitions=2, replication_factor=1, config={"retention.ms": "60000"})
    t = admin.describe_topic("described")
    assert t.name == "described" and [p.partition for p in t.partitions] == [0, 1]
    assert all(p.leader == 1 and p.replicas == [1] and p.isr == [1] and p.leader_epoch == 0 for p in t.partitions)
    assert t.configs == {"retention.ms": "60000"}
    assert "described" in admin.list_topics()
    c = admin.describe_cluster()
    assert c.controller_id == 1
    assert [(b.id, b.host, b.port, b.alive) for b in c.brokers] == [(1, "127.0.0.1", single_broker.port, True)]


def test_delete_topic_removes_it_and_its_data(single_broker):
    admin = Admin(single_broker.bootstrap)
    admin.create_topic("doomed", partitions=1, replication_factor=1)
    with Producer(single_broker.bootstrap) as p:
        p.send("doomed", b"x").result(timeout=30)
    assert (single_broker.data_dir / "doomed-0").is_dir()
    admin.delete_topic("doomed")
    assert "doomed" not in admin.list_topics()
    assert not (single_broker.data_dir / "doomed-0").exists()
    with pytest.raises(UnknownTopicOrPartitionError):
        admin.delete_topic("doomed")


# ---- bad input: a clear error, the broker stays up, the log stays intact ------------------


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "has space", "slash/ed", "ünïcode", "star*"])
def test_invalid_topic_names_are_refused(single_broker, name):
    with pytest.raises(InvalidTopicError):
        Admin(single_broker.bootstrap).create_topic(name, partitions=1, replication_factor=1)


def test_longest_legal_topic_name_is_accepted(single_broker):
    Admin(single_broker.bootstrap).create_topic("x" * 249, partitions=1, replication_factor=1)


def test_bad_partition_counts_and_replication_factors(single_broker):
    admin = Admin(single_broker.bootstrap)
    with pytest.raises(InvalidPartitionsError):
        admin.create_topic("zero-partitions", partitions=0, replication_factor=1)
    with pytest.raises(InvalidReplicationFactorError, match="only 1 broker"):
        admin.create_topic("rf-too-big", partitions=1, replication_factor=3)
    admin.create_topic("twice", partitions=1, replication_factor=1)
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topic("twice", partitions=1, replication_factor=1)
    assert "zero-partitions" not in admin.list_topics() and "rf-too-big" not in admin.list_topics()


def test_record_over_max_message_bytes_is_refused(single_broker):
    admin = Admin(single_broker.bootstrap)
    admin.create_topic("big", partitions=1, replication_factor=1)
    admin.create_topic("small-limit", partitions=1, replication_factor=1, config={"max.message.bytes": "1000"})
    with Producer(single_broker.bootstrap, batch_size=4 * 1024 * 1024) as p:
        with pytest.raises(RecordTooLargeError):
            p.send("big", b"x" * (1024 * 1024 + 1)).result(timeout=30)       # broker default 1 MiB
        with pytest.raises(RecordTooLargeError):
            p.send("small-limit", b"x" * 2000).result(timeout=30)           # the topic's own limit
        assert p.send("small-limit", b"fits").result(timeout=30).offset == 0
    assert [r.value for r in consume_all(single_broker.bootstrap, "small-limit", 1)] == [b"fits"]


def test_unknown_topic_is_reported(single_broker):
    with Producer(single_broker.bootstrap, max_block_ms=500) as p:
        with pytest.raises(UnknownTopicOrPartitionError):
            p.send("no-such-topic", b"x").result(timeout=30)
    assert produce_raw(single_broker, "no-such-topic", record_batch.build_batch([(None, b"x", 1)])).error_code \
        == common_pb2.UNKNOWN_TOPIC_OR_PARTITION
    assert fetch_raw(single_broker, "no-such-topic", 0).error_code == common_pb2.UNKNOWN_TOPIC_OR_PARTITION


def test_corrupt_batches_are_refused_and_leave_the_log_intact(single_broker):
    Admin(single_broker.bootstrap).create_topic("corrupt", partitions=1, replication_factor=1)
    good = record_batch.build_batch([(None, b"good-0", 1)])
    assert produce_raw(single_broker, "corrupt", good).error_code == 0
    batch = record_batch.build_batch([(b"k", b"v" * 100, 1), (None, b"w", 2)])
    flipped = bytearray(batch)
    flipped[-5] ^= 0xFF
    wrong_count = bytearray(batch)
    wrong_count[57:61] = (7).to_bytes(4, "big")
    wrong_count[23:27] = (6).to_bytes(4, "big")
    wrong_count[17:21] = crc32c(bytes(wrong_count[21:])).to_bytes(4, "big")  # CRC fine, body isn't 7 records
    for bad in (batch[:-10], batch[:30], bytes(flipped), b"", b"\x00" * 61, batch + b"trailing"):
        r = produce_raw(single_broker, "corrupt", bytes(bad))
        assert r.error_code == common_pb2.CORRUPT_MESSAGE, r
        assert r.error_message
    assert produce_raw(single_broker, "corrupt", record_batch.build_batch([(None, b"good-1", 1)])).error_code == 0
    # Only the two good batches are in the log, at offsets 0 and 1.
    got = consume_all(single_broker.bootstrap, "corrupt", 2)
    assert [(r.offset, r.value) for r in got] == [(0, b"good-0"), (1, b"good-1")]
    assert single_broker.alive()


def test_offset_out_of_range_and_leader_epoch_checks(single_broker):
    Admin(single_broker.bootstrap).create_topic("ranges", partitions=1, replication_factor=1)
    produce_raw(single_broker, "ranges", record_batch.build_batch([(None, b"a", 1)]))
    assert fetch_raw(single_broker, "ranges", 10**12).error_code == common_pb2.OFFSET_OUT_OF_RANGE
    assert fetch_raw(single_broker, "ranges", -1).error_code == common_pb2.OFFSET_OUT_OF_RANGE
    assert produce_raw(single_broker, "ranges", record_batch.build_batch([(None, b"b", 1)]), epoch=7).error_code \
        == common_pb2.UNKNOWN_LEADER_EPOCH
    assert produce_raw(single_broker, "ranges", record_batch.build_batch([(None, b"c", 1)]), epoch=0).error_code == 0
    assert produce_raw(single_broker, "ranges", record_batch.build_batch([(None, b"d", 1)]), acks=5).error_code \
        == common_pb2.INVALID_REQUIRED_ACKS


def test_replica_fetch_is_for_replicas_only(single_broker):
    Admin(single_broker.bootstrap).create_topic("replfetch", partitions=1, replication_factor=1)
    produce_raw(single_broker, "replfetch", record_batch.build_batch([(None, b"r", 1)]))
    repl = replication_pb2_grpc.ReplicationStub(broker_channel(single_broker))

    def replica_fetch(replica_id):
        return repl.ReplicaFetch(kafka_pb2.FetchRequest(replica_id=replica_id, max_wait_ms=0, partitions=[
            kafka_pb2.FetchPartition(topic="replfetch", partition=0, fetch_offset=0, current_leader_epoch=-1)]),
            timeout=10)

    own = replica_fetch(1).partitions[0]
    assert own.error_code == 0 and record_batch.decode_all(own.records)[0].value == b"r"
    assert replica_fetch(2).partitions[0].error_code == common_pb2.NOT_LEADER_OR_FOLLOWER
    with pytest.raises(grpc.RpcError) as e:
        replica_fetch(-1)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_replica_fetch_stream_answers_each_request_in_lock_step(single_broker):
    Admin(single_broker.bootstrap).create_topic("replstream", partitions=1, replication_factor=1)
    values = [b"a", b"b", b"c"]
    for v in values:
        produce_raw(single_broker, "replstream", record_batch.build_batch([(None, v, 1)]))
    repl = replication_pb2_grpc.ReplicationStub(broker_channel(single_broker))
    requests: list = []
    wake = threading.Event()

    def request_iterator():
        # Like the follower: write the next request only once the previous one was answered.
        for offset in range(len(values)):
            wake.wait(10)
            wake.clear()
            yield kafka_pb2.FetchRequest(replica_id=1, max_wait_ms=0, partitions=[
                kafka_pb2.FetchPartition(topic="replstream", partition=0, fetch_offset=offset, current_leader_epoch=-1,
                                         partition_max_bytes=1)])  # 1 byte: one whole batch per answer
            requests.append(offset)

    wake.set()
    got = []
    call = repl.ReplicaFetchStream(request_iterator(), timeout=20)
    for answer in call:
        p = answer.partitions[0]
        assert p.error_code == 0
        got.append(record_batch.decode_all(p.records)[0].value)
        wake.set()
    assert got == values and requests == [0, 1, 2]

    bad = repl.ReplicaFetchStream(iter([kafka_pb2.FetchRequest(replica_id=-1)]), timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        list(bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unreachable_bootstrap_names_the_addresses_tried():
    a, b = free_ports(2)
    with pytest.raises(NoBrokersAvailable, match=f"127.0.0.1:{a}, 127.0.0.1:{b}"):
        Admin(f":{a},:{b}").list_topics()


def test_records_without_a_key_stick_to_a_partition_batch_by_batch(single_broker):
    """Kafka's sticky partitioner: a keyless record joins the open batch of its sticky partition;
    when it would need a new batch, the producer moves to another partition first. Found by the
    bench: a batch that overflowed (instead of filling exactly) never moved it on, and every
    keyless record of a long run went to one partition."""
    topic = "sticky"
    Admin(single_broker.bootstrap).create_topic(topic, partitions=3, replication_factor=1)
    with Producer(single_broker.bootstrap, acks="all", batch_size=4096, linger_ms=50) as p:
        futures = [p.send(topic, b"v" * 100) for _ in range(3000)]
        partitions = [f.result(timeout=30).partition for f in futures]
    per_partition = {n: partitions.count(n) for n in range(3)}
    assert all(per_partition.values()), f"keyless records reached only some partitions: {per_partition}"
    runs = sum(1 for a, b in zip(partitions, partitions[1:]) if a != b) + 1
    # ~35 records fill a 4 KiB batch: records stick in runs of a batch, not one by one.
    assert runs <= 3000 // 20, f"{runs} runs of one partition in 3000 records: not sticky"


def test_seek_after_a_poll_reads_from_the_new_position_despite_the_prefetch(single_broker):
    """poll() sends the next fetch before returning; a seek made meanwhile must win over its answer."""
    Admin(single_broker.bootstrap).create_topic("seekme", partitions=1, replication_factor=1)
    with Producer(single_broker.bootstrap, acks="all") as p:
        for i in range(10):
            p.send("seekme", f"v{i}".encode(), partition=0)
    with Consumer(single_broker.bootstrap, "seekme", from_beginning=True, fetch_max_wait_ms=200) as c:
        first = consume_until(c, 10)
        assert [r.offset for r in first] == list(range(10))
        for target in (0, 7, 3):
            c.seek(0, target)
            again = consume_until(c, 10 - target)
            assert [r.offset for r in again] == list(range(target, 10))
            assert [r.value for r in again] == [f"v{i}".encode() for i in range(target, 10)]


def consume_until(consumer, expected: int, timeout: float = 10.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        got.extend(consumer.poll(0.5))
    return got


@pytest.mark.parametrize("acks", ["all", 1])
def test_a_batch_refused_as_too_large_is_split_and_every_record_lands_once_in_order(single_broker, acks):
    """batch.size 1 MiB against a topic's max.message.bytes of 4,000: the producer halves what the
    broker refuses (RECORD_TOO_LARGE) until it fits, as Kafka's producer does."""
    topic = f"split-{acks}"
    Admin(single_broker.bootstrap).create_topic(topic, partitions=1, replication_factor=1,
                                                config={"max.message.bytes": "4000"})
    values = [f"v{i:04d}".encode() * 10 for i in range(600)]          # 50 B each: ~33 KB in one batch
    hops: list = []
    with Producer(single_broker.bootstrap, acks=acks, batch_size=1024 * 1024, linger_ms=50,
                  tracer=hops.append) as p:
        futures = [p.send(topic, v, partition=0) for v in values]
        offsets = [f.result(timeout=30).offset for f in futures]
    assert offsets == list(range(len(values)))
    splits = [h for h in hops if h.kind == "retry" and "RECORD_TOO_LARGE" in h.detail]
    assert len(splits) >= 7, "33 KB down to under 4,000 bytes takes at least 7 halvings on the way"
    got = consume_all(single_broker.bootstrap, topic, len(values))
    assert [(r.offset, r.value) for r in got] == list(enumerate(values))
