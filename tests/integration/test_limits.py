"""Limits with names and units, enforced by a real broker started with small values.

grpc.max.concurrent.streams (streams and long polls), grpc.max.message.bytes (request size),
message.max.bytes / max.message.bytes (batch size), fetch.max.bytes (answer size), partitions
per topic; and the config check that keeps them nested.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from broker.config import ConfigError, parse_cluster_config
from client import Admin, Producer, record_batch
from client.client import KafkaClient
from client.errors import BrokerBusyError, RecordTooLargeError
from client.protocol.v1 import common_pb2, kafka_pb2, kafka_pb2_grpc, replication_pb2_grpc
from tests.integration.cluster import BrokerProcess, broker_channel, wait_for, write_cluster

STREAMS = 4
WORKERS = 8
MESSAGE_BYTES = 2 * 1024 * 1024        # grpc.max.message.bytes
BATCH_BYTES = 64 * 1024                # message.max.bytes
FETCH_BYTES = 256 * 1024               # fetch.max.bytes
LIMITS = {"grpc.max.workers": WORKERS, "grpc.max.concurrent.streams": STREAMS, "grpc.max.concurrent.rpcs": 32,
          "grpc.max.message.bytes": MESSAGE_BYTES, "message.max.bytes": BATCH_BYTES, "fetch.max.bytes": FETCH_BYTES,
          "replica.fetch.response.max.bytes": 1024 * 1024, "replica.fetch.max.bytes": 512 * 1024}


@contextlib.contextmanager
def one_broker(root: Path, config: dict[str, int], topic: str) -> Iterator[BrokerProcess]:
    """One broker started with ``config`` and a 1-partition ``topic``; killed (by PID) at the end."""
    cluster = write_cluster(root, 1, config)
    try:
        broker = cluster.brokers[1].start()
        Admin(broker.bootstrap).create_topic(topic, partitions=1, replication_factor=1)
        yield broker
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    with one_broker(tmp_path_factory.mktemp("limits"), LIMITS, "limits") as broker:
        yield broker


def channel(broker) -> grpc.Channel:
    return grpc.insecure_channel(broker.bootstrap, options=[("grpc.max_receive_message_length", 64 << 20),
                                                            ("grpc.max_send_message_length", 64 << 20)])


def produce_request(records: bytes, topic: str = "limits", acks: int = 1) -> kafka_pb2.ProduceRequest:
    return kafka_pb2.ProduceRequest(acks=acks, timeout_ms=5000, partitions=[kafka_pb2.PartitionProduceData(
        topic=topic, partition=0, records=records, current_leader_epoch=-1)])


def test_streams_past_the_cap_are_refused_and_unary_calls_keep_their_threads(small):
    """grpc.max.concurrent.streams=4 with grpc.max.workers=8: 4 idle ProduceStreams hold 4 threads; the
    5th stream and a long-polling Fetch get RESOURCE_EXHAUSTED naming the setting; Metadata, Produce and
    a non-waiting Fetch still answer at once, and a follower's ReplicaFetchStream is served (it has the
    inter-broker server's slots); closing the streams frees the slots."""
    release = threading.Event()
    channels = [channel(small) for _ in range(STREAMS + 1)]

    def idle_requests():
        # One batch (answered: the stream is open on the broker), then silence until released. A
        # stream that never sends may not reach the broker at all: gRPC can hold back its headers.
        yield produce_request(record_batch.build_batch([(None, b"opening", 1)]))
        release.wait(60)

    idle = [kafka_pb2_grpc.KafkaStub(ch).ProduceStream(idle_requests(), timeout=60) for ch in channels[:STREAMS]]
    stub = kafka_pb2_grpc.KafkaStub(channels[STREAMS])
    try:
        assert [next(call).partitions[0].error_code for call in idle] == [0] * STREAMS
        def refused():
            call = stub.ProduceStream(iter([produce_request(record_batch.build_batch([(None, b"x", 1)]))]),
                                      timeout=5)
            try:
                list(call)
            except grpc.RpcError as e:
                return e if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else None
            return None
        error = refused()
        assert error is not None, "a 5th ProduceStream was accepted"
        assert "grpc.max.concurrent.streams" in error.details() and "ProduceStream" in error.details()
        as_raised = KafkaClient.map_rpc_error(error, ("127.0.0.1", small.port))   # what the library raises
        assert isinstance(as_raised, BrokerBusyError) and as_raised.retriable and "refused" in str(as_raised)
        refusals = 1
        with pytest.raises(grpc.RpcError) as e:
            stub.Fetch(kafka_pb2.FetchRequest(replica_id=-1, max_wait_ms=5000, min_bytes=10**6, partitions=[
                kafka_pb2.FetchPartition(topic="limits", partition=0, fetch_offset=0, current_leader_epoch=-1)]),
                timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "long-polling Fetch" in e.value.details()
        refusals += 1
        with broker_channel(small) as follower:   # as a follower calls: the inter-broker port, with the token
            answers = list(replication_pb2_grpc.ReplicationStub(follower).ReplicaFetchStream(
                iter([kafka_pb2.FetchRequest(replica_id=2)]), timeout=10))
        assert len(answers) == 1, "a full client port refused a follower's fetch stream"

        # Unary calls still have threads: 20 Metadata calls, each answered within a second.
        slowest = 0.0
        for _ in range(20):
            started = time.monotonic()
            assert stub.Metadata(kafka_pb2.MetadataRequest(topics=["limits"]), timeout=5).topics[0].error_code == 0
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 1.0, slowest
        stored = stub.Produce(produce_request(record_batch.build_batch([(None, b"during", 1)])), timeout=5)
        assert stored.partitions[0].error_code == 0
        fetched = stub.Fetch(kafka_pb2.FetchRequest(replica_id=-1, max_wait_ms=0, partitions=[
            kafka_pb2.FetchPartition(topic="limits", partition=0, fetch_offset=stored.partitions[0].base_offset,
                                     current_leader_epoch=-1)]), timeout=5).partitions[0]
        assert [r.value for r in record_batch.decode_all(fetched.records)] == [b"during"]
    finally:
        release.set()
    for call in idle:   # each idle stream ends cleanly once its requests end
        assert list(call) == []

    def accepted():
        answers = list(stub.ProduceStream(iter([produce_request(record_batch.build_batch([(None, b"after", 1)]))]),
                                          timeout=5))
        return answers and answers[0].partitions[0].error_code == 0
    wait_for(accepted, 10, "a ProduceStream to be accepted once the idle streams closed")
    for ch in channels:
        ch.close()
    print(f"\n[limits] {STREAMS} idle streams held; {refusals} calls refused with RESOURCE_EXHAUSTED; "
          f"20 Metadata calls answered, slowest {slowest * 1000:.0f} ms; a stream accepted after the release")


def test_request_and_batch_size_limits(small):
    """grpc.max.message.bytes (2 MiB): a 3 MiB request gets RESOURCE_EXHAUSTED; message.max.bytes (64 KiB):
    a bigger batch gets RECORD_TOO_LARGE; a topic's max.message.bytes (1000) overrides it."""
    Admin(small.bootstrap).create_topic("limits-small", partitions=1, replication_factor=1,
                                        config={"max.message.bytes": "1000"})
    with channel(small) as ch:
        stub = kafka_pb2_grpc.KafkaStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.Produce(produce_request(b"\x00" * (3 * 1024 * 1024)), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        too_big = record_batch.build_batch([(None, b"x" * BATCH_BYTES, 1)])
        r = stub.Produce(produce_request(too_big), timeout=10).partitions[0]
        assert r.error_code == common_pb2.RECORD_TOO_LARGE and "max.message.bytes" in r.error_message
        r = stub.Produce(produce_request(record_batch.build_batch([(None, b"x" * 1000, 1)]), "limits-small"),
                         timeout=10).partitions[0]
        assert r.error_code == common_pb2.RECORD_TOO_LARGE and "(1000)" in r.error_message
        fits = record_batch.build_batch([(None, b"x" * (BATCH_BYTES - 200), 1)])
        assert stub.Produce(produce_request(fits), timeout=10).partitions[0].error_code == 0
    with Producer(small.bootstrap, batch_size=4 * BATCH_BYTES) as p:
        with pytest.raises(RecordTooLargeError):
            p.send("limits", b"y" * (BATCH_BYTES + 1)).result(timeout=30)
    assert small.alive()


def test_fetch_answers_stop_at_fetch_max_bytes(small):
    """fetch.max.bytes (256 KiB) caps an answer whatever the request asks (2^31-1, or 0 = no limit)."""
    Admin(small.bootstrap).create_topic("limits-fetch", partitions=1, replication_factor=1)
    batch = record_batch.build_batch([(None, b"z" * 60_000, 1)])
    with channel(small) as ch:
        stub = kafka_pb2_grpc.KafkaStub(ch)
        for _ in range(8):
            assert stub.Produce(produce_request(batch, "limits-fetch"), timeout=10).partitions[0].error_code == 0
        sizes = []
        for max_bytes, partition_max_bytes in ((2**31 - 1, 2**31 - 1), (0, 0), (2**31 - 1, 0)):
            r = stub.Fetch(kafka_pb2.FetchRequest(replica_id=-1, max_bytes=max_bytes, partitions=[
                kafka_pb2.FetchPartition(topic="limits-fetch", partition=0, fetch_offset=0, current_leader_epoch=-1,
                                         partition_max_bytes=partition_max_bytes)]), timeout=10).partitions[0]
            assert r.error_code == 0 and r.high_watermark == 8
            sizes.append(len(r.records))
        assert sizes == [4 * len(batch)] * 3, sizes     # 4 whole batches fit in 256 KiB, 5 do not
        assert len(record_batch.decode_all(stub.Fetch(kafka_pb2.FetchRequest(replica_id=-1, max_bytes=1, partitions=[
            kafka_pb2.FetchPartition(topic="limits-fetch", partition=0, fetch_offset=0, current_leader_epoch=-1)]),
            timeout=10).partitions[0].records)) == 1   # KIP-74: the first batch comes whole
    print(f"\n[limits] 8 batches of {len(batch)} B stored; answers of {sizes} B for max_bytes 2^31-1, 0 and "
          f"partition_max_bytes 0 (fetch.max.bytes {FETCH_BYTES})")


def test_partitions_per_topic(small):
    """10000 partitions per topic (validate_only): 10000 is accepted, 10001 and 2^31-1 are INVALID_PARTITIONS."""
    with channel(small) as ch:
        stub = kafka_pb2_grpc.KafkaStub(ch)
        codes = [stub.CreateTopics(kafka_pb2.CreateTopicsRequest(validate_only=True, topics=[
            kafka_pb2.CreatableTopic(name="many", num_partitions=n, replication_factor=1)]), timeout=10).topics[0]
            for n in (10_000, 10_001, 2**31 - 1)]
        assert [c.error_code for c in codes] == [0, common_pb2.INVALID_PARTITIONS, common_pb2.INVALID_PARTITIONS]
        assert "10000" in codes[1].error_message


def _parse(tmp_path: Path, config: dict[str, int]):
    raw = {"cluster_id": "c", "cluster_secret": "12345678", "config": config,
           "broker": [{"id": 1, "port": 1, "raft_port": 2, "inter_broker_port": 3}]}
    return parse_cluster_config(raw, tmp_path / "cluster.toml")


@pytest.mark.parametrize("config,message", [
    ({"grpc.max.concurrent.streams": 64}, "grpc.max.concurrent.streams (64) must be less than grpc.max.workers"),
    ({"grpc.max.workers": 8, "grpc.max.concurrent.streams": 8}, "must be less than grpc.max.workers (8)"),
    ({"grpc.max.concurrent.rpcs": 10}, "grpc.max.concurrent.rpcs must be at least grpc.max.workers"),
    ({"grpc.max.message.bytes": 1048576}, "message.max.bytes (1048576) plus"),
    ({"fetch.max.bytes": 64 * 1024 * 1024}, "fetch.max.bytes (67108864) plus"),
    ({"grpc.max.concurrent.streams": 0}, "grpc.max.concurrent.streams must be at least 1"),
    ({"grpc.handshake.timeout.ms": 0}, "grpc.handshake.timeout.ms must be at least 1"),
])
def test_limits_that_do_not_nest_are_config_errors(tmp_path, config, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _parse(tmp_path, config)


def test_default_limits_nest(tmp_path):
    s = _parse(tmp_path, {}).settings
    assert (s.grpc_max_concurrent_streams, s.grpc_max_workers, s.grpc_max_concurrent_rpcs) == (32, 64, 256)
    assert s.message_max_bytes < s.fetch_max_bytes < s.grpc_max_message_bytes


@pytest.mark.parametrize("value", [" 5", "5 ", "1_000", "\u0663", "+5", "0x10", "1e3", ""])
def test_integer_topic_configs_take_ascii_digits_only(value):
    """Python's int() takes " 5", "1_000" and an Arabic-Indic digit; Kafka's config parser does not."""
    from broker.metadata.topic_rules import topic_config_error
    from client.errors import InvalidConfigError

    assert isinstance(topic_config_error({"retention.ms": value}), InvalidConfigError)
    assert topic_config_error({"retention.ms": "5"}) is None and topic_config_error({"retention.ms": "-1"}) is None
