"""CreatePartitions on three real brokers: kclient topics --alter grows a topic, every broker hosts and serves the
new partitions (acks=all writes read back), any broker forwards the request to the controller, and a count that
is not an increase is one line of INVALID_PARTITIONS."""

from __future__ import annotations

import grpc

from client.producer import Producer
from client.protocol.v1 import common_pb2, kafka_pb2, kafka_pb2_grpc
from raftka_testing.cluster import create_ready, partitions, read_all, served_everywhere
from tests.integration.cluster import Cluster, kclient, log_events, wait_for
from tests.integration.test_kclient import ok, one_line_error

TOPIC = "grown"
RECORDS = 20


def grown_everywhere(cluster: Cluster, count: int) -> bool:
    return served_everywhere(cluster, TOPIC, count)


def test_kclient_alter_grows_a_topic_that_every_broker_then_serves(running_cluster):
    cluster = running_cluster(3)
    controller = cluster.wait_controller(timeout=15, alive={1, 2, 3})
    create_ready(cluster, TOPIC, 2)
    bootstrap = cluster.bootstrap

    assert ok(kclient("topics", "--bootstrap", bootstrap, "--alter", "--topic", TOPIC, "--partitions", "4")) == ""
    wait_for(lambda: grown_everywhere(cluster, 4), 20, f"{TOPIC}: 4 partitions led, full ISR, on every broker")

    with Producer(bootstrap, acks="all", request_timeout_ms=10000) as producer:
        futures = [(p, i, producer.send(TOPIC, f"p{p}-{i}".encode(), partition=p))
                   for p in (2, 3) for i in range(RECORDS)]
        acked = {(p, i): f.result(timeout=30) for p, i, f in futures}
    assert all(md.partition == p and md.offset == i for (p, i), md in acked.items())
    got = read_all(bootstrap, TOPIC, {0: 0, 1: 0, 2: RECORDS, 3: RECORDS})
    for p in (2, 3):
        assert got[p] == [(i, f"p{p}-{i}".encode()) for i in range(RECORDS)]
    assert got[0] == got[1] == []

    # A broker that is not the controller forwards the request, and answers once its own image shows it.
    other = next(b for broker_id, b in cluster.brokers.items() if broker_id != controller)
    request = kafka_pb2.CreatePartitionsRequest(topics=[kafka_pb2.CreatePartitionsTopic(name=TOPIC, count=5)],
                                                timeout_ms=10000)
    with grpc.insecure_channel(other.bootstrap) as channel:
        [result] = kafka_pb2_grpc.KafkaStub(channel).CreatePartitions(request, timeout=20).topics
    assert (result.name, result.error_code) == (TOPIC, common_pb2.NONE), result.error_message
    assert len(partitions(other, TOPIC)) == 5
    wait_for(lambda: grown_everywhere(cluster, 5), 20, f"{TOPIC}: 5 partitions led, full ISR, on every broker")

    lower = kclient("topics", "--bootstrap", bootstrap, "--alter", "--topic", TOPIC, "--partitions", "2")
    assert one_line_error(lower) == ("Error while executing topic command : INVALID_PARTITIONS: Topic currently has 5 "
                                     "partitions, which is higher than the requested 2.")
    assert "INVALID_PARTITIONS: Topic already has 5 partitions." in one_line_error(
        kclient("topics", "--bootstrap", bootstrap, "--alter", "--topic", TOPIC, "--partitions", "5"))
    assert "UNKNOWN_TOPIC_OR_PARTITION" in one_line_error(
        kclient("topics", "--bootstrap", bootstrap, "--alter", "--topic", "absent", "--partitions", "3"))
    assert ok(kclient("topics", "--bootstrap", bootstrap, "--alter", "--topic", "absent", "--partitions", "3",
                      "--if-exists")) == ""
    assert len(partitions(other, TOPIC)) == 5
    events = log_events(cluster.brokers[controller], "partitions_created")
    assert [(e["topic"], e["previous_count"], e["count"]) for e in events] == [(TOPIC, 2, 4), (TOPIC, 4, 5)]
