"""Kafka's admin APIs and KIP-392 reads from a follower, with real clients on three real brokers.

DescribeCluster, DescribeConfigs and ElectLeaders through confluent-kafka's and kafka-python's
AdminClient; a librdkafka consumer whose client.rack names each broker's rack in turn reads the
topic from the replica in that rack (librdkafka's own statistics say which broker it fetched from).
"""

from __future__ import annotations

import json
import time

import confluent_kafka
import kafka
import kafka.admin
import kafka.errors
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic

from tests.integration.cluster import wait_for
from tests.integration.test_kafka_clients import kafka_leader, start_kafka_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_kafka_cluster(tmp_path_factory.mktemp("kafka-admin"))
    yield c
    c.stop_all()


def admin(cluster, broker_id: int = 2) -> AdminClient:
    return AdminClient({"bootstrap.servers": cluster.brokers[broker_id].kafka_bootstrap})


def create(cluster, topic: str, configs: dict[str, str] | None = None, partitions: int = 1) -> None:
    client = admin(cluster)   # kept: librdkafka fails the futures of a destroyed handle
    futures = client.create_topics([NewTopic(topic, partitions, 3, config=configs or {})],
                                           operation_timeout=15)
    futures[topic].result(timeout=30)
    wait_for(lambda: kafka_leader(cluster, topic) is not None, 20, f"{topic} to have a leader")


def full_isr(cluster, topic: str) -> bool:
    md = admin(cluster, 1).list_topics(topic, timeout=5).topics[topic]
    return md.error is None and all(len(p.isrs) == 3 and p.leader >= 0 for p in md.partitions.values())


def test_describe_cluster_names_every_broker_with_its_kafka_port_and_rack(cluster):
    client = admin(cluster)
    described = client.describe_cluster(include_authorized_operations=False).result(timeout=15)
    ports = {b.broker_id: b.kafka_port for b in cluster.brokers.values()}
    assert {n.id: (n.port, n.rack) for n in described.nodes} == {i: (p, f"rack-{i}") for i, p in ports.items()}
    assert described.controller.id in ports

    kp = kafka.admin.KafkaAdminClient(bootstrap_servers=cluster.brokers[3].kafka_bootstrap)
    try:
        answer = kp.describe_cluster()
    finally:
        kp.close()
    assert {b["broker_id"]: (b["port"], b["rack"]) for b in answer["brokers"]} == {
        i: (p, f"rack-{i}") for i, p in ports.items()}


def test_describe_configs_gives_each_topic_config_with_its_source(cluster):
    create(cluster, "configured", {"retention.ms": "3600000"})
    resource = ConfigResource(ConfigResource.Type.TOPIC, "configured")
    client = admin(cluster)
    configs = client.describe_configs([resource])[resource].result(timeout=15)
    seen = {name: (e.value, e.source) for name, e in configs.items()}
    assert seen["retention.ms"] == ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)   # the topic's own
    assert seen["min.insync.replicas"] == ("2", ConfigSource.STATIC_BROKER_CONFIG.value)  # cluster.toml's
    assert seen["segment.bytes"] == (str(1 << 30), ConfigSource.DEFAULT_CONFIG.value)     # raftka's default
    assert seen["cleanup.policy"] == ("delete", ConfigSource.DEFAULT_CONFIG.value)

    missing = ConfigResource(ConfigResource.Type.TOPIC, "no-such-topic")
    with pytest.raises(confluent_kafka.KafkaException) as refused:
        client.describe_configs([missing])[missing].result(timeout=15)
    assert refused.value.args[0].code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_configs_of_a_broker_through_kafka_python(cluster):
    """Only what cluster.toml sets is a static broker config; the rest are raftka's defaults."""
    kp = kafka.admin.KafkaAdminClient(bootstrap_servers=cluster.brokers[1].kafka_bootstrap)
    try:
        static = kp.describe_configs([kafka.admin.ConfigResource("BROKER", "2")], config_filter="STATIC")
        every = kp.describe_configs([kafka.admin.ConfigResource("BROKER", "2")], config_filter="ALL")
    finally:
        kp.close()
    assert {k: v["value"] for k, v in static["broker"]["2"].items()} == {
        "default.replication.factor": "3", "min.insync.replicas": "2", "broker.rack": "rack-2"}
    assert every["broker"]["2"]["fetch.max.bytes"]["value"] == "52428800"
    assert len(every["broker"]["2"]) > 30


def test_a_preferred_election_moves_leadership_back(cluster):
    create(cluster, "elect")
    wait_for(lambda: full_isr(cluster, "elect"), 20, "elect's full ISR")
    md = admin(cluster).list_topics("elect", timeout=5).topics["elect"].partitions[0]
    preferred = md.replicas[0]
    assert md.leader == preferred
    cluster.brokers[preferred].kill()
    wait_for(lambda: kafka_leader(cluster, "elect") not in (None, preferred), 20, "a new leader for elect")
    cluster.brokers[preferred].start()
    wait_for(lambda: full_isr(cluster, "elect"), 30, "the old leader back in elect's ISR")
    assert kafka_leader(cluster, "elect") != preferred

    tp = confluent_kafka.TopicPartition("elect", 0)
    client = admin(cluster)
    result = client.elect_leaders(confluent_kafka.ElectionType.PREFERRED, [tp]).result(timeout=30)
    assert result[tp] is None, f"the election failed: {result[tp]}"
    wait_for(lambda: kafka_leader(cluster, "elect") == preferred, 20, "the preferred replica to lead again")

    again = client.elect_leaders(confluent_kafka.ElectionType.PREFERRED, [tp]).result(timeout=30)
    assert again[tp] is not None and again[tp].code() == confluent_kafka.KafkaError.ELECTION_NOT_NEEDED


def fetched_from(stats: dict, topic: str) -> tuple[int, int]:
    """(the broker librdkafka fetches partition 0 from, the leader) as its statistics say."""
    p = stats["topics"][topic]["partitions"]["0"]
    return p["broker"], p["leader"]


def test_a_consumer_reads_from_the_replica_in_its_rack(cluster):
    """KIP-392: with client.rack naming a follower's rack, the leader sends the consumer to that
    follower, which serves it up to its own high watermark. Each rack in turn, all 300 records each."""
    topic = "racks"
    create(cluster, topic)
    wait_for(lambda: full_isr(cluster, topic), 20, f"{topic}'s full ISR")
    producer = confluent_kafka.Producer({"bootstrap.servers": cluster.brokers[2].kafka_bootstrap, "acks": "all"})
    for i in range(300):
        producer.produce(topic, value=b"r%d" % i)
    assert producer.flush(30) == 0
    leader = kafka_leader(cluster, topic)
    for rack_id in (1, 2, 3):
        stats: list[dict] = []
        consumer = confluent_kafka.Consumer({
            "bootstrap.servers": cluster.brokers[1].kafka_bootstrap, "group.id": "unused",
            "enable.auto.commit": False, "client.rack": f"rack-{rack_id}", "statistics.interval.ms": 200,
            "stats_cb": lambda s: stats.append(json.loads(s))})
        try:
            consumer.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while (len(got) < 300 or not stats or fetched_from(stats[-1], topic)[0] != rack_id) \
                    and time.monotonic() < deadline:
                m = consumer.poll(0.2)
                if m is not None and m.error() is None:
                    got.append(m.value())
        finally:
            consumer.close()
        assert got == [b"r%d" % i for i in range(300)], f"rack-{rack_id}: {len(got)} of 300 records"
        assert stats, "librdkafka gave no statistics"
        assert fetched_from(stats[-1], topic) == (rack_id, leader), f"client.rack=rack-{rack_id}"


def test_create_partitions_grows_a_topic_through_each_admin_client(cluster):
    from confluent_kafka.admin import NewPartitions
    create(cluster, "grown", partitions=1)
    client = admin(cluster, 3)
    client.create_partitions([NewPartitions("grown", 3)], operation_timeout=15)["grown"].result(timeout=30)
    kp = kafka.admin.KafkaAdminClient(bootstrap_servers=cluster.brokers[1].kafka_bootstrap)
    try:
        kp.create_partitions({"grown": kafka.admin.NewPartitions(total_count=4)})
        with pytest.raises(kafka.errors.InvalidPartitionsError):   # Kafka's INVALID_PARTITIONS (37)
            kp.create_partitions({"grown": kafka.admin.NewPartitions(total_count=2)})
    finally:
        kp.close()
    wait_for(lambda: full_isr(cluster, "grown") and len(
        admin(cluster, 1).list_topics("grown", timeout=5).topics["grown"].partitions) == 4, 20,
        "grown to have 4 partitions, each with a full ISR")
    producer = confluent_kafka.Producer({"bootstrap.servers": cluster.brokers[2].kafka_bootstrap, "acks": "all"})
    for p in range(4):
        producer.produce("grown", value=b"p%d" % p, partition=p)
    assert producer.flush(30) == 0
    for p in range(4):
        consumer = confluent_kafka.Consumer({"bootstrap.servers": cluster.brokers[1].kafka_bootstrap,
                                             "group.id": "unused", "enable.auto.commit": False})
        try:
            consumer.assign([confluent_kafka.TopicPartition("grown", p, confluent_kafka.OFFSET_BEGINNING)])
            m = wait_for(lambda: (lambda m: m if m is not None and m.error() is None else None)(
                consumer.poll(0.2)), 20, f"grown-{p}'s record")
            assert m.value() == b"p%d" % p
        finally:
            consumer.close()


def test_describe_log_dirs_through_kafka_python_names_every_replica_with_its_size(cluster):
    create(cluster, "logdirs", partitions=2)
    p = confluent_kafka.Producer({"bootstrap.servers": cluster.brokers[1].kafka_bootstrap, "acks": "all"})
    for i in range(40):
        p.produce("logdirs", value=b"v" * 200, partition=i % 2)
    assert p.flush(15) == 0
    wait_for(lambda: full_isr(cluster, "logdirs"), 20, "logdirs with a full ISR")
    kp = kafka.admin.KafkaAdminClient(bootstrap_servers=cluster.brokers[2].kafka_bootstrap)
    try:
        def sizes() -> dict[int, dict[int, int]] | None:
            """broker -> partition -> size, once every replica holds the 20 records of its partition."""
            out: dict[int, dict[int, int]] = {}
            for answer in kp.describe_log_dirs():
                (result,) = answer["log_dirs"]
                assert result["error_code"] == 0 and result["log_dir"] == str(
                    cluster.brokers[answer["broker"]].data_dir.resolve())
                assert result["total_bytes"] >= result["usable_bytes"] > 0
                topic = next((t for t in result["topics"] if t["name"] == "logdirs"), None)
                out[answer["broker"]] = {q["partition_index"]: q["partition_size"] for q in topic["partitions"]}
                assert all(q["offset_lag"] == 0 and not q["is_future_key"] for q in topic["partitions"])
            return out if all(s.get(0, 0) > 20 * 200 and s.get(0) == out[1].get(0) for s in out.values()) else None

        by_broker = wait_for(sizes, 15, "every replica of logdirs at the same size")
        assert sorted(by_broker) == [1, 2, 3] and all(sorted(s) == [0, 1] for s in by_broker.values())
        only = kp.describe_log_dirs(topic_partitions={"logdirs": [1]}, brokers=[3])
        (result,) = only[0]["log_dirs"]
        assert [(t["name"], [q["partition_index"] for q in t["partitions"]]) for t in result["topics"]] == [
            ("logdirs", [1])]
    finally:
        kp.close()
