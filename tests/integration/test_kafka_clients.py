"""Real Kafka clients against three real brokers' Kafka-protocol listeners (kafka_port).

confluent-kafka (librdkafka), kafka-python and aiokafka, unchanged, run the seed lesson: create a
topic through broker 2, describe it, produce through broker 2 only, read it back through every
broker. Batches cross doors: written over gRPC by raftka's producer and read by a Kafka consumer
(which checks their CRC-32C), and the reverse. Garbage on the Kafka port closes that connection
with one warning; the broker lives on.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import aiokafka          # the three real Kafka clients: test dependencies in pyproject.toml
import aiokafka.admin
import confluent_kafka
import kafka
import kafka.admin
import pytest

from broker.kafka_protocol.versions import SUPPORTED
from client import Admin, Consumer, Producer
from tests.integration.cluster import wait_for, wait_log_events, write_cluster

pytestmark = pytest.mark.integration


TOPIC = "email.send"
# librdkafka turns its group consumer on only when all seven of OffsetCommit .. SyncGroup are listed.
GROUP_APIS = {8, 9, 10, 11, 12, 13, 14, 15, 16, 42, 47}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_kafka_cluster(tmp_path_factory.mktemp("kafka-clients"))
    yield c
    c.stop_all()


# A cluster for group tests: a small __consumer_offsets, no initial rebalance delay, short sessions allowed.
OFFSETS_PARTITIONS = 3
GROUP_CONFIG = {"default.replication.factor": 3, "min.insync.replicas": 2,
                "offsets.topic.num.partitions": OFFSETS_PARTITIONS, "group.initial.rebalance.delay.ms": 0,
                "group.min.session.timeout.ms": 1000}


def group_cluster_fixture(name: str):
    """A module-scoped pytest fixture: three brokers with GROUP_CONFIG, stopped after the module."""
    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory):
        c = start_kafka_cluster(tmp_path_factory.mktemp(name), GROUP_CONFIG)
        yield c
        c.stop_all()
    return cluster


def start_kafka_cluster(root, config: dict | None = None):
    """Three brokers (RF 3, min ISR 2 unless ``config`` says otherwise), each Kafka listener accepting."""
    c = write_cluster(root, 3, config or {"default.replication.factor": 3, "min.insync.replicas": 2})
    c.start_all()
    try:
        for b in c.brokers.values():
            wait_for(lambda b=b: accepts(b.kafka_port), 20, f"broker {b.broker_id}'s Kafka listener")
    except BaseException:
        c.stop_all()
        raise
    return c


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def kafka_python_read(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[bytes]:
    tp = kafka.TopicPartition(topic, 0)
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                   check_crcs=True)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got += [r.value for r in records]
        return got
    finally:
        consumer.close()


def confluent_read(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[bytes]:
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                                         "enable.auto.commit": False, "check.crcs": True})
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m.value())
        return got
    finally:
        consumer.close()


def aiokafka_read(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[bytes]:
    async def read() -> list[bytes]:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                             auto_offset_reset="earliest")
        await consumer.start()
        try:
            tp = aiokafka.TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got: list[bytes] = []
            deadline = time.monotonic() + timeout
            while len(got) < expected and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += [r.value for r in records]
            return got
        finally:
            await consumer.stop()
    return asyncio.run(read())


def api_versions_v0(port: int, version: int) -> tuple[int, int, set[tuple[int, int, int]]]:
    """(correlation id, error code, {(api_key, min, max)}) of an ApiVersions request at ``version``
    (written by hand: header v1, empty body; the broker answers at v0 whatever it cannot serve)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        body = struct.pack(">hhih", 18, version, 42, 1) + b"t" + (b"\x00" * 3 if version >= 3 else b"")
        s.sendall(struct.pack(">i", len(body)) + body)
        size, = struct.unpack(">i", recv_exactly(s, 4))
        answer = recv_exactly(s, size)
    correlation_id, error_code, count = struct.unpack_from(">ihi", answer)
    return correlation_id, error_code, {struct.unpack_from(">hhh", answer, 10 + 6 * i) for i in range(count)}


def test_api_versions_lists_what_is_served_with_every_group_api(cluster):
    correlation_id, error_code, keys = api_versions_v0(cluster.brokers[1].kafka_port, 0)
    assert (correlation_id, error_code) == (42, 0)
    assert {k: (lo, hi) for k, lo, hi in keys} == SUPPORTED
    assert GROUP_APIS <= {k for k, _, _ in keys}


def test_an_api_versions_version_it_does_not_know_is_answered_at_v0(cluster):
    """KIP-511: UNSUPPORTED_VERSION (35) and the list, so the client can pick a version it shares."""
    correlation_id, error_code, keys = api_versions_v0(cluster.brokers[1].kafka_port, 99)
    assert (correlation_id, error_code) == (42, 35)
    assert {k: (lo, hi) for k, lo, hi in keys} == SUPPORTED


def recv_exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, f"connection closed after {len(out)} of {n} bytes"
        out += chunk
    return out


def test_the_seed_lesson_with_kafka_clients(cluster):
    """Create and describe through broker 2, produce through broker 2's Kafka port only, read it
    through every broker's Kafka port with each client."""
    b2 = cluster.brokers[2].kafka_bootstrap
    admin = kafka.KafkaAdminClient(bootstrap_servers=b2)
    try:
        admin.create_topics([kafka.admin.NewTopic(TOPIC, num_partitions=1, replication_factor=3)])
        wait_for(lambda: len(described(admin)["isr_nodes"]) == 3, 20, "the ISR to fill")
        described_partition = described(admin)
    finally:
        admin.close()
    assert sorted(described_partition["replica_nodes"]) == [1, 2, 3]

    values = [f"mail-{i}".encode() for i in range(50)]
    acked: list[int] = []
    producer = confluent_kafka.Producer({"bootstrap.servers": b2, "acks": "all", "linger.ms": 5})
    for v in values:
        producer.produce(TOPIC, value=v, partition=0,
                         on_delivery=lambda err, msg: acked.append(msg.offset() if err is None else -1))
    assert producer.flush(30) == 0
    assert sorted(acked) == list(range(50)), acked

    for b in cluster.brokers.values():
        assert kafka_python_read(b.kafka_bootstrap, TOPIC, 50) == values, f"kafka-python via broker {b.broker_id}"
        assert confluent_read(b.kafka_bootstrap, TOPIC, 50) == values, f"confluent-kafka via broker {b.broker_id}"
    assert aiokafka_read(cluster.brokers[3].kafka_bootstrap, TOPIC, 50) == values
    print(f"\n[seed lesson] 50 acked through broker 2; read back whole through brokers 1, 2, 3 "
          f"(kafka-python, confluent-kafka) and 3 (aiokafka); leader {described_partition['leader_id']}")


def test_the_seed_lesson_with_aiokafka_alone(cluster):
    """aiokafka end to end: create and describe through broker 2's Kafka port, an idempotent acks=all
    producer bootstrapped on broker 2 only, read back through every broker."""
    topic, b2 = "email.aio", cluster.brokers[2].kafka_bootstrap
    values = [f"aio-{i}".encode() for i in range(40)]

    async def lesson() -> tuple[list[int], dict]:
        admin = aiokafka.admin.AIOKafkaAdminClient(bootstrap_servers=b2)
        await admin.start()
        try:
            await admin.create_topics([aiokafka.admin.NewTopic(topic, num_partitions=1, replication_factor=3)])
            [described_topic] = await admin.describe_topics([topic])
        finally:
            await admin.close()
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=b2, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            sent = [await producer.send_and_wait(topic, v, partition=0) for v in values]
        finally:
            await producer.stop()
        return [m.offset for m in sent], described_topic

    offsets, described_topic = asyncio.run(lesson())
    assert offsets == list(range(40))
    [p] = described_topic["partitions"]
    assert sorted(p["replicas"]) == [1, 2, 3], described_topic
    for b in cluster.brokers.values():
        assert aiokafka_read(b.kafka_bootstrap, topic, 40) == values, f"aiokafka via broker {b.broker_id}"


def described(admin) -> dict:
    [topic] = admin.describe_topics([TOPIC])
    [p] = topic["partitions"]
    return p


def test_metadata_advertises_kafka_ports_only(cluster):
    client = kafka.KafkaAdminClient(bootstrap_servers=cluster.brokers[1].kafka_bootstrap)
    try:
        brokers = {b["broker_id"]: (b["host"], b["port"]) for b in client.describe_cluster()["brokers"]}
    finally:
        client.close()
    assert brokers == {b.broker_id: ("127.0.0.1", b.kafka_port) for b in cluster.brokers.values()}


def test_batches_cross_doors(cluster):
    """raftka's producer writes over gRPC, kafka-python reads (checking CRC-32C); librdkafka writes
    over the Kafka port, raftka's consumer reads over gRPC."""
    b1 = cluster.brokers[1]
    Admin(b1.bootstrap).create_topic("from-grpc", partitions=1, replication_factor=3)
    Admin(b1.bootstrap).create_topic("from-kafka", partitions=1, replication_factor=3)
    values = [b"v%d" % i for i in range(30)]
    with Producer(b1.bootstrap, acks="all") as p:
        for v in values:
            p.send("from-grpc", v, partition=0).result(timeout=20)
    assert kafka_python_read(b1.kafka_bootstrap, "from-grpc", 30) == values

    producer = confluent_kafka.Producer({"bootstrap.servers": b1.kafka_bootstrap, "acks": "all"})
    for v in values:
        producer.produce("from-kafka", value=v, key=b"k", partition=0)
    assert producer.flush(30) == 0
    got = []
    deadline = time.monotonic() + 20
    with Consumer(b1.bootstrap, "from-kafka", auto_offset_reset="earliest", partition=0) as c:
        while len(got) < 30 and time.monotonic() < deadline:
            got += c.poll(timeout=0.5)
    assert [(r.key, r.value) for r in got] == [(b"k", v) for v in values]


@pytest.mark.parametrize("frame", [
    struct.pack(">i", -1),                                        # a negative size
    struct.pack(">i", 200 * 1024 * 1024),                         # over socket.request.max.bytes
    struct.pack(">i", 10) + struct.pack(">hhi", 999, 0, 1) + b"\x00\x00",   # an unknown API
    struct.pack(">i", 10) + struct.pack(">hhi", 3, 77, 1) + b"\x00\x00",    # Metadata v77
    struct.pack(">i", 10) + struct.pack(">hhi", 3, 12, 1) + b"\xff\xff",    # a body that does not parse
], ids=["negative-size", "too-large", "unknown-api", "unsupported-version", "garbage-body"])
def test_a_bad_frame_closes_its_connection_and_the_broker_lives(cluster, frame):
    b = cluster.brokers[1]
    with socket.create_connection(("127.0.0.1", b.kafka_port), timeout=5) as s:
        s.sendall(frame)
        s.settimeout(5)
        assert s.recv(1024) == b"", "the broker answered a frame it must refuse"
    assert b.alive()
    wait_log_events(b, "kafka_connection_closed")   # the line comes from the broker's log writer thread
    assert "kafka_answer_failed" not in b.log() and "kafka_request_failed" not in b.log()
    client = kafka.KafkaAdminClient(bootstrap_servers=b.kafka_bootstrap)
    try:
        assert client.describe_cluster()["controller_id"] in cluster.brokers
    finally:
        client.close()


def test_librdkafkas_idempotent_producer_across_a_leader_kill(tmp_path):
    """enable.idempotence, acks=all, 5 in flight, while the partition's leader is killed with -9:
    every acknowledged record is read back once, in the order it was sent."""
    c = write_cluster(tmp_path / "idempotent", 3, {"default.replication.factor": 3, "min.insync.replicas": 2,
                                                   "broker.session.timeout.ms": 2000})
    c.start_all()
    try:
        for b in c.brokers.values():
            wait_for(lambda b=b: accepts(b.kafka_port), 20, f"broker {b.broker_id}'s Kafka listener")
        Admin(c.brokers[1].bootstrap).create_topic("orders", partitions=1, replication_factor=3)
        bootstrap = ",".join(b.kafka_bootstrap for b in c.brokers.values())
        producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                            "acks": "all", "max.in.flight.requests.per.connection": 5,
                                            "linger.ms": 2, "message.timeout.ms": 60000})
        acked: list[int] = []
        failed: list[str] = []

        def on_delivery(err, msg):
            if err is None:
                acked.append(int(msg.value()))
            else:
                failed.append(str(err))

        leader = wait_for(lambda: kafka_leader(c, "orders"), 10, "a leader for orders-0")
        for i in range(3000):
            producer.produce("orders", value=str(i).encode(), partition=0, on_delivery=on_delivery)
            producer.poll(0)
            if i == 1000:
                # poll() runs the delivery callbacks
                wait_for(lambda: producer.poll(0.05) is not None and len(acked) >= 500, 30, "500 acks before the kill")
                c.brokers[leader].kill()
        assert producer.flush(60) == 0
        c.brokers[leader].start()
        values = [int(v) for v in kafka_python_read(c.brokers[1].kafka_bootstrap if leader != 1
                                                    else c.brokers[2].kafka_bootstrap, "orders", len(acked))]
        lost = sorted(set(acked) - set(values))
        duplicates = len(values) - len(set(values))
        print(f"\n[librdkafka idempotent] killed leader {leader}: acked {len(acked)}, failed {len(failed)}, "
              f"read {len(values)}, lost {len(lost)}, duplicates {duplicates}")
        assert not lost and duplicates == 0
        assert values == sorted(values), "order kept"
        assert not failed, failed[:3]
    finally:
        c.stop_all()


def kafka_leader(c, topic: str) -> int | None:
    from tests.integration.cluster import metadata
    for b in c.running():
        r = metadata(b, [topic])
        if r is not None and r.topics and r.topics[0].partitions and r.topics[0].partitions[0].leader_id > 0:
            return r.topics[0].partitions[0].leader_id
    return None


def kcat(*args: str, stdin: bytes | None = None) -> str:
    import shutil
    import subprocess
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not installed (Debian package kcat; .ci/run installs it)", pytrace=False)
    done = subprocess.run([path, *args], input=stdin, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode()


def test_the_readmes_kcat_lesson(cluster):
    """The README's kcat steps: metadata from broker 2 lists the Kafka ports, produce through broker 2,
    read back through every broker's Kafka port."""
    Admin(cluster.brokers[1].bootstrap).create_topic("kcat.lesson", partitions=3, replication_factor=3)
    b2 = cluster.brokers[2].kafka_bootstrap
    listing = wait_for(lambda: (lambda out: out if "isrs: " in out and "leader -1" not in out else None)(
        kcat("-b", b2, "-L", "-t", "kcat.lesson")), 20, "kcat -L to show three led partitions")
    for b in cluster.brokers.values():
        assert f"broker {b.broker_id} at 127.0.0.1:{b.kafka_port}" in listing, listing
    assert listing.count("partition ") == 3
    for i in (1, 2):
        kcat("-b", b2, "-P", "-t", "kcat.lesson", "-p", "0", stdin=f"follower-message-{i}\n".encode())
    for b in cluster.brokers.values():
        out = kcat("-b", b.kafka_bootstrap, "-C", "-t", "kcat.lesson", "-p", "0", "-o", "beginning", "-e", "-q")
        assert out.split() == ["follower-message-1", "follower-message-2"], (b.broker_id, out)
    for rack in ("rack-1", "rack-2", "rack-3"):   # the follower in the consumer's rack serves it (KIP-392)
        out = kcat("-b", cluster.brokers[1].kafka_bootstrap, "-C", "-t", "kcat.lesson", "-p", "0", "-o", "beginning",
                   "-e", "-q", "-X", f"client.rack={rack}")
        assert out.split() == ["follower-message-1", "follower-message-2"], (rack, out)


CODECS = ["gzip", "snappy", "lz4", "zstd"]


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_batches_from_each_client_round_trip(cluster, codec):
    """Each producer compresses with ``codec``; the broker checks the records inside and stores the
    batch as it came; librdkafka and raftka's own consumer read every record back."""
    b1 = cluster.brokers[1]
    values = {name: [f"{name}-{codec}-{i}".encode() * 5 for i in range(40)]
              for name in ("librdkafka", "aiokafka", "raftka")}
    topic = f"compressed.{codec}"
    Admin(b1.bootstrap).create_topic(topic, partitions=1, replication_factor=3)

    producer = confluent_kafka.Producer({"bootstrap.servers": b1.kafka_bootstrap, "compression.type": codec,
                                        "linger.ms": 20})
    for v in values["librdkafka"]:
        producer.produce(topic, value=v, partition=0)
    assert producer.flush(30) == 0

    async def aio_produce():
        p = aiokafka.AIOKafkaProducer(bootstrap_servers=b1.kafka_bootstrap, compression_type=codec,
                                      enable_idempotence=False, acks="all")
        await p.start()
        try:
            batch = [await p.send(topic, v, partition=0) for v in values["aiokafka"]]
            await asyncio.gather(*batch)
        finally:
            await p.stop()
    asyncio.run(aio_produce())

    with Producer(b1.bootstrap, compression_type=codec, linger_ms=20) as p:
        for f in [p.send(topic, v, partition=0) for v in values["raftka"]]:
            f.result(timeout=20)

    expected = values["librdkafka"] + values["aiokafka"] + values["raftka"]
    assert confluent_read(b1.kafka_bootstrap, topic, len(expected)) == expected
    got = []
    deadline = time.monotonic() + 20
    with Consumer(b1.bootstrap, topic, auto_offset_reset="earliest", partition=0) as c:
        while len(got) < len(expected) and time.monotonic() < deadline:
            got += [r.value for r in c.poll(timeout=0.5)]
    assert got == expected
    # Stored as they came: compressed (a client may send a batch that would not shrink uncompressed).
    codecs_stored = stored_codecs(b1, topic)
    assert CODECS.index(codec) + 1 in codecs_stored and codecs_stored <= {0, CODECS.index(codec) + 1}, codecs_stored


def stored_codecs(broker, topic: str) -> set[int]:
    """The codec id of every batch in the broker's own log of topic-0: stored as it came."""
    from client import record_batch
    from tests.integration.cluster import log_bytes
    return {h.attributes & record_batch.COMPRESSION_MASK for _, h in record_batch.iter_batches(log_bytes(broker, topic))}


def offset_for_leader_epoch_v2(port: int, topic: str, leader_epoch: int) -> tuple[int, int, int]:
    """(error code, leader epoch, end offset) for partition 0, from a request written by hand (v2)."""
    name = topic.encode()
    body = (struct.pack(">hhih", 23, 2, 7, 1) + b"t" + struct.pack(">ih", 1, len(name)) + name
            + struct.pack(">iiii", 1, 0, -1, leader_epoch))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size, = struct.unpack(">i", recv_exactly(s, 4))
        answer = recv_exactly(s, size)
    correlation_id, _throttle, _topics, name_length = struct.unpack_from(">iiih", answer)
    assert correlation_id == 7
    _partitions, error_code, _partition, epoch, end_offset = struct.unpack_from(">ihiiq", answer, 14 + name_length)
    return error_code, epoch, end_offset


def test_offset_for_leader_epoch_tells_a_client_where_an_epoch_ends(cluster):
    """KIP-320: after a leader change a client asks where its last epoch ends to detect truncation."""
    b1 = cluster.brokers[1]
    Admin(b1.bootstrap).create_topic("epochs", partitions=1, replication_factor=3)
    producer = confluent_kafka.Producer({"bootstrap.servers": b1.kafka_bootstrap, "acks": "all"})
    for i in range(5):
        producer.produce("epochs", value=b"%d" % i, partition=0)
    assert producer.flush(30) == 0
    leader = kafka_leader(cluster, "epochs")
    ports = {b.broker_id: b.kafka_port for b in cluster.brokers.values()}
    assert offset_for_leader_epoch_v2(ports[leader], "epochs", 0) == (0, 0, 5)
    assert offset_for_leader_epoch_v2(ports[leader], "epochs", 3) == (0, -1, -1)     # an epoch it never had
    follower = next(b for b in ports if b != leader)
    assert offset_for_leader_epoch_v2(ports[follower], "epochs", 0)[0] == 6         # NOT_LEADER_OR_FOLLOWER
