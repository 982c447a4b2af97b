"""Hypothesis against one real broker: every RPC with random and extreme fields.

Each request gets a clear answer: a Kafka error code per partition (with a message), or
INVALID_ARGUMENT with a one-line message for a malformed request. After each RPC's
fuzzing the broker is the same process, its log holds no traceback, and a read from
the beginning returns exactly what was acknowledged: the records produced before the
fuzzing plus those the fuzzer itself got acknowledged, nothing else.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from client import Admin, Producer, record_batch
from client.protocol.v1 import (common_pb2, controller_pb2, controller_pb2_grpc, kafka_pb2, kafka_pb2_grpc,
                                replication_pb2_grpc)
from tests.integration.cluster import BrokerProcess, broker_channel, metadata

ACKED_TOPIC = "fuzz-acked"
ACKED_PARTITIONS = 2
ACKED_BEFORE = 40
KNOWN_CODES = set(common_pb2.ErrorCode.values())
FUZZ = settings(max_examples=40, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
INT32 = st.one_of(st.sampled_from([0, 1, -1, 2, 2**31 - 1, -2**31]), st.integers(-2**31, 2**31 - 1))
INT64 = st.one_of(st.sampled_from([0, 1, -1, -2, 10**12, 2**63 - 1, -2**63]), st.integers(-2**63, 2**63 - 1))
TOPICS = st.one_of(st.sampled_from([ACKED_TOPIC, "", "no-such-topic", "ünïcödé-☃", "x" * 250, ".", "..",
                                    "a/b", "\x00"]), st.text(max_size=40))


@dataclass
class Target:
    """The broker under fuzz and what it acknowledged: (partition, offset) -> value."""

    broker: BrokerProcess
    pid: int
    acked: dict[tuple[int, int], bytes] = field(default_factory=dict)
    log_size_at_start: int = 0

    def stub(self) -> kafka_pb2_grpc.KafkaStub:
        return kafka_pb2_grpc.KafkaStub(self.channel)

    def check_intact(self, what: str, checked: int) -> str:
        """Same PID, no traceback logged, and the acknowledged records read back exactly."""
        assert self.broker.alive() and self.broker.pid == self.pid, f"the broker died during the {what} fuzzing"
        logged = self.broker.log()[self.log_size_at_start:]
        assert "Traceback" not in logged and "Exception calling application" not in logged, logged[-3000:]
        got = read_everything(self.broker)
        extra = {k: v for k, v in got.items() if self.acked.get(k) != v}
        missing = {k: v for k, v in self.acked.items() if got.get(k) != v}
        assert got == self.acked, (f"after the {what} fuzzing: {len(got)} records read back, "
                                   f"{len(self.acked)} acknowledged; read but not acknowledged: {extra}; "
                                   f"acknowledged but not read: {missing}")
        line = (f"[fuzz {what}] {checked} requests answered clearly; {len(self.acked)} acknowledged "
                f"({ACKED_BEFORE} before the fuzzing), the same {len(got)} read back; broker PID {self.pid} unchanged")
        print(line)
        return line


def read_everything(broker: BrokerProcess) -> dict[tuple[int, int], bytes]:
    """Every record of the acked topic below the HW, partition by partition, with raw Fetches."""
    out: dict[tuple[int, int], bytes] = {}
    with grpc.insecure_channel(broker.bootstrap) as ch:
        stub = kafka_pb2_grpc.KafkaStub(ch)
        for p in range(ACKED_PARTITIONS):
            offset = 0
            for _ in range(10_000):   # bounded: each round moves the offset on or ends
                r = stub.Fetch(kafka_pb2.FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=0, partitions=[
                    kafka_pb2.FetchPartition(topic=ACKED_TOPIC, partition=p, fetch_offset=offset,
                                             current_leader_epoch=-1)]), timeout=10).partitions[0]
                assert r.error_code == 0, r
                records = record_batch.decode_all(r.records, min_offset=offset)
                for rec in records:
                    out[(p, rec.offset)] = rec.value
                if not records or records[-1].offset + 1 >= r.high_watermark:
                    break
                offset = records[-1].offset + 1
    return out


@pytest.fixture(scope="module")
def target(single_broker):
    Admin(single_broker.bootstrap).create_topic(ACKED_TOPIC, partitions=ACKED_PARTITIONS, replication_factor=1)
    t = Target(single_broker, single_broker.pid)
    with Producer(single_broker.bootstrap, acks="all") as p:
        futures = [(i, p.send(ACKED_TOPIC, f"before-{i}".encode(), partition=i % ACKED_PARTITIONS))
                   for i in range(ACKED_BEFORE)]
        for i, fut in futures:
            md = fut.result(timeout=30)
            t.acked[(md.partition, md.offset)] = f"before-{i}".encode()
    t.log_size_at_start = len(single_broker.log())
    t.channel = grpc.insecure_channel(single_broker.bootstrap, options=[
        ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    # The broker-only services answer only calls with the cluster's token (inter_broker_auth): the
    # fuzzing of their handlers goes through a broker's channel; a stranger's call is refused first.
    t.broker_channel = broker_channel(single_broker)
    assert read_everything(single_broker) == t.acked
    yield t
    t.channel.close()
    t.broker_channel.close()


# ---- what a clear answer is ------------------------------------------------------------------


def assert_clear_status(e: grpc.RpcError, allowed=(grpc.StatusCode.INVALID_ARGUMENT,)) -> None:
    assert e.code() in allowed, f"{e.code()}: {e.details()}"
    details = e.details() or ""
    assert details and "\n" not in details and "Traceback" not in details and len(details) < 400, details


def assert_clear_code(result, counts: Counter) -> None:
    """A per-partition (or per-topic) error code Kafka knows, with a message when it is an error."""
    assert result.error_code in KNOWN_CODES, result
    if result.error_code != 0 and hasattr(result, "error_message"):
        assert result.error_message and "Traceback" not in result.error_message, result
    counts[common_pb2.ErrorCode.Name(result.error_code)] += 1


def call(counts: Counter, fn, *args, **kwargs):
    """The answer, or None when the broker refused the request as malformed (counted)."""
    try:
        return fn(*args, **kwargs)
    except grpc.RpcError as e:
        assert_clear_status(e)
        counts["INVALID_ARGUMENT"] += 1
        return None


# ---- record batches: good, truncated, wrong CRC, wrong count, from the future ------------------


@st.composite
def batches(draw) -> tuple[bytes, bool]:
    """(bytes, whether they are a well-formed batch the broker should store)."""
    values = draw(st.lists(st.binary(max_size=64), min_size=1, max_size=5))
    good = record_batch.build_batch(
        [(draw(st.one_of(st.none(), st.binary(max_size=8))), v, draw(st.integers(0, 2**40))) for v in values],
        base_offset=draw(st.sampled_from([0, 7, 10**15, 2**63 - 1, -1])),        # a base offset from the future
        partition_leader_epoch=draw(st.sampled_from([-1, 0, 99, 2**31 - 1])))
    kind = draw(st.sampled_from(["good", "truncated", "crc", "count", "count-crc-fixed", "random", "empty",
                                 "two", "length", "magic"]))
    if kind == "good":
        return good, True
    if kind == "truncated":
        return good[:draw(st.integers(0, len(good) - 1))], False
    if kind == "crc":
        b = bytearray(good)
        b[draw(st.integers(record_batch.CRC_START, len(good) - 1))] ^= draw(st.integers(1, 255))
        return bytes(b), False
    if kind in ("count", "count-crc-fixed"):
        b = bytearray(good)
        count = draw(st.sampled_from([0, len(values) + 1, len(values) + 1000, 2**31 - 1, -1]))
        b[57:61] = count.to_bytes(4, "big", signed=True)
        b[23:27] = (count - 1 if count > -2**31 else count).to_bytes(4, "big", signed=True)
        if kind == "count-crc-fixed":   # the CRC is right, the records are not what it says
            b[17:21] = crc32c(bytes(b[21:])).to_bytes(4, "big")
        return bytes(b), False
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=200)), False
    if kind == "empty":
        return b"", False
    if kind == "two":
        return good + good, False
    if kind == "length":
        b = bytearray(good)
        b[8:12] = draw(st.sampled_from([0, 1, 2**31 - 1, -1])).to_bytes(4, "big", signed=True)
        return bytes(b), False
    b = bytearray(good)
    b[16] = draw(st.sampled_from([0, 1, 3, 255]))
    return bytes(b), False


@st.composite
def produce_requests(draw):
    parts = []
    expectations = []
    # Mostly aimed (the acked topic, a real partition, a valid epoch and acks) so that the batch is
    # what decides the answer; sometimes wild everywhere.
    aimed = draw(st.integers(0, 3)) > 0
    for _ in range(draw(st.integers(0, 3))):
        records, well_formed = draw(batches())
        if aimed:
            topic, partition = ACKED_TOPIC, draw(st.integers(0, ACKED_PARTITIONS - 1))
            epoch = draw(st.sampled_from([-1, 0]))
        else:
            topic = draw(st.one_of(st.just(ACKED_TOPIC), TOPICS))
            partition = draw(st.one_of(st.integers(0, ACKED_PARTITIONS - 1), INT32))
            epoch = draw(st.sampled_from([-1, 0, 1, -2, 2**31 - 1, -2**31]))
        parts.append(kafka_pb2.PartitionProduceData(topic=topic, partition=partition, records=records,
                                                    current_leader_epoch=epoch))
        expectations.append((records, well_formed))
    request = kafka_pb2.ProduceRequest(
        acks=draw(st.sampled_from([-1, 0, 1] if aimed else [-1, 0, 1, 2, -2, 2**31 - 1])),
        timeout_ms=draw(st.sampled_from([0, 1000] if aimed else [0, 1, 1000, -1, 2**31 - 1, -2**31])),
        partitions=parts, client_id=draw(st.text(max_size=20)), correlation_id=draw(INT32))
    return request, expectations


def record_produce_answer(t: Target, request, expectations, response, counts: Counter) -> None:
    assert len(response.partitions) == len(request.partitions)
    for sent, (records, well_formed), r in zip(request.partitions, expectations, response.partitions):
        assert (r.topic, r.partition) == (sent.topic, sent.partition)
        assert_clear_code(r, counts)
        if r.error_code != 0:
            continue
        assert well_formed, f"the broker stored a malformed batch: {records[:80]!r}"
        assert sent.topic == ACKED_TOPIC and 0 <= sent.partition < ACKED_PARTITIONS
        stored = record_batch.decode_all(records, min_offset=-2**63)   # whatever base offset it claimed
        for i, rec in enumerate(stored):
            t.acked.setdefault((sent.partition, r.base_offset + i), rec.value)


def test_fuzz_produce(target):
    counts: Counter = Counter()

    @FUZZ
    @given(produce_requests())
    def run(drawn):
        request, expectations = drawn
        response = call(counts, target.stub().Produce, request, timeout=10)
        if response is not None:
            record_produce_answer(target, request, expectations, response, counts)

    run()
    total = sum(counts.values())
    target.check_intact("Produce", total)
    assert counts["CORRUPT_MESSAGE"] > 0 and counts["NONE"] > 0, counts


def test_fuzz_produce_stream(target):
    counts: Counter = Counter()

    @settings(FUZZ, max_examples=20)
    @given(st.lists(produce_requests(), min_size=1, max_size=4))
    def run(drawn):
        requests = [r for r, _ in drawn]
        try:
            answers = list(target.stub().ProduceStream(iter(requests), timeout=15))
        except grpc.RpcError as e:
            assert_clear_status(e)
            counts["INVALID_ARGUMENT"] += 1
            return
        assert len(answers) == len(requests)
        for (request, expectations), answer in zip(drawn, answers):
            record_produce_answer(target, request, expectations, answer, counts)

    run()
    target.check_intact("ProduceStream", sum(counts.values()))


@st.composite
def fetch_requests(draw, replica_ids=st.just(-1)):
    parts = [kafka_pb2.FetchPartition(
        topic=draw(TOPICS), partition=draw(st.one_of(st.integers(0, ACKED_PARTITIONS - 1), INT32)),
        fetch_offset=draw(st.one_of(st.integers(0, ACKED_BEFORE + 5), INT64)),
        current_leader_epoch=draw(st.sampled_from([-1, 0, 1, -2, 2**31 - 1])),
        last_fetched_epoch=draw(st.sampled_from([-1, 0, 1, 7, -2**31, 2**31 - 1])),
        partition_max_bytes=draw(st.sampled_from([0, 1, 100, 2**31 - 1, -1])))
        for _ in range(draw(st.integers(0, 3)))]
    return kafka_pb2.FetchRequest(
        replica_id=draw(replica_ids), max_wait_ms=draw(st.sampled_from([0, -1, 20, 2**31 - 1, -2**31])),
        min_bytes=draw(st.sampled_from([0, 1, -1, 2**31 - 1])), max_bytes=draw(st.sampled_from(
            [0, 1, 61, -1, 2**31 - 1, -2**31])), partitions=parts, read_from_replica=draw(st.booleans()))


def check_fetch_answer(t: Target, request, response, counts: Counter, session: bool = False) -> None:
    """``session``: a fetch stream's answer. Its session holds each partition once (the last one named
    wins, as in Kafka's fetch session map), and its full fetch answers each of them once."""
    if session:
        sent_by_tp = {(p.topic, p.partition): p for p in request.partitions}
        assert sorted((r.topic, r.partition) for r in response.partitions) == sorted(sent_by_tp)
        pairs = [(sent_by_tp[(r.topic, r.partition)], r) for r in response.partitions]
    else:
        assert len(response.partitions) == len(request.partitions)
        pairs = list(zip(request.partitions, response.partitions))
    for sent, r in pairs:
        assert_clear_code(r, counts)
        if r.error_code != 0 or not r.records:
            continue
        # Whatever it served is whole batches of acknowledged records (a follower fetch may also
        # see the log end, which on one broker is the HW).
        for rec in record_batch.decode_all(r.records):
            assert t.acked.get((sent.partition, rec.offset)) == rec.value, (sent, rec)


def test_fuzz_fetch(target):
    counts: Counter = Counter()

    @FUZZ
    @given(fetch_requests(st.one_of(st.just(-1), INT32)))
    def run(request):
        response = call(counts, target.stub().Fetch, request, timeout=1.5)
        if response is not None:
            check_fetch_answer(target, request, response, counts)

    run()
    target.check_intact("Fetch", sum(counts.values()))
    assert counts["INVALID_ARGUMENT"] > 0 and counts["NONE"] > 0, counts


def test_fuzz_replica_fetch_and_stream(target):
    counts: Counter = Counter()
    repl = replication_pb2_grpc.ReplicationStub(target.broker_channel)

    twice = kafka_pb2.FetchPartition(topic=ACKED_TOPIC, current_leader_epoch=-1, last_fetched_epoch=-1)

    @FUZZ
    @given(fetch_requests(INT32), st.lists(fetch_requests(INT32), min_size=1, max_size=3))
    @example(kafka_pb2.FetchRequest(), [kafka_pb2.FetchRequest(partitions=[twice, twice])])   # found by CI
    def run(request, stream):
        response = call(counts, repl.ReplicaFetch, request, timeout=1.5)
        if response is not None:
            check_fetch_answer(target, request, response, counts)
        try:
            answers = list(repl.ReplicaFetchStream(iter(stream), timeout=5))
        except grpc.RpcError as e:
            assert_clear_status(e)
            counts["INVALID_ARGUMENT"] += 1
            return
        for sent, answer in zip(stream, answers):
            check_fetch_answer(target, sent, answer, counts, session=True)

    run()
    target.check_intact("ReplicaFetch", sum(counts.values()))


def test_fuzz_list_offsets(target):
    counts: Counter = Counter()

    @FUZZ
    @given(st.lists(st.tuples(TOPICS, INT32, st.one_of(st.sampled_from([-3, -2, -1, 0, int(time.time() * 1000)]),
                                                         INT64), INT32), max_size=4),
           INT32, st.booleans())
    def run(parts, replica_id, from_replica):
        request = kafka_pb2.ListOffsetsRequest(replica_id=replica_id, read_from_replica=from_replica, partitions=[
            kafka_pb2.ListOffsetsPartition(topic=t, partition=p, timestamp=ts, current_leader_epoch=e)
            for t, p, ts, e in parts])
        response = call(counts, target.stub().ListOffsets, request, timeout=5)
        if response is None:
            return
        assert len(response.partitions) == len(parts)
        for r in response.partitions:
            assert_clear_code(r, counts)

    run()
    target.check_intact("ListOffsets", sum(counts.values()))


def test_fuzz_metadata(target):
    counts: Counter = Counter()

    @FUZZ
    @given(st.lists(TOPICS, max_size=5))
    def run(topics):
        response = call(counts, target.stub().Metadata, kafka_pb2.MetadataRequest(topics=topics), timeout=5)
        if response is None:
            return
        assert [t.name for t in response.topics] == (topics or sorted(t.name for t in response.topics))
        for t in response.topics:
            assert_clear_code(t, counts)
            assert (t.error_code == 0) == (t.name in (ACKED_TOPIC,) or bool(t.partitions))

    run()
    target.check_intact("Metadata", sum(counts.values()))


CONFIG_KEYS = st.sampled_from(["min.insync.replicas", "retention.ms", "retention.bytes", "segment.bytes", "segment.ms",
                               "index.interval.bytes", "flush.messages", "max.message.bytes",
                               "unclean.leader.election.enable", "cleanup.policy", "no.such.config", ""])
CONFIG_VALUES = st.one_of(st.sampled_from(["1", "0", "-1", "-2", "14", "true", "false", "delete", "compact", "",
                                           "99999999999999999999999", "1_000", " 5", "٣", "1e3", "0x10"]),
                          st.text(max_size=10))


def test_fuzz_create_and_delete_topics(target):
    counts: Counter = Counter()
    created: set[str] = set()

    @settings(FUZZ, max_examples=30)
    @given(st.lists(st.tuples(TOPICS, st.sampled_from([-1, 0, 1, 2, 10_000, 10_001, 2**31 - 1, -2**31]),
                              st.sampled_from([-1, 0, 1, 2, 3, 2**31 - 1, -2**31]),
                              st.dictionaries(CONFIG_KEYS, CONFIG_VALUES, max_size=2)), max_size=3),
           st.booleans(), st.lists(TOPICS, max_size=3))
    def run(topics, validate_only, to_delete):
        # Real creations only for small topics: validate_only for the thousands of partitions.
        validate_only = validate_only or any(n > 4 for _, n, _, _ in topics)
        request = kafka_pb2.CreateTopicsRequest(validate_only=validate_only, timeout_ms=5000, topics=[
            kafka_pb2.CreatableTopic(name=name, num_partitions=n, replication_factor=rf, configs=configs)
            for name, n, rf, configs in topics])
        response = call(counts, target.stub().CreateTopics, request, timeout=20)
        if response is not None:
            assert [r.name for r in response.topics] == [t[0] for t in topics]
            for r in response.topics:
                assert_clear_code(r, counts)
                if r.error_code == 0 and not validate_only:
                    created.add(r.name)
        deletable = [n for n in to_delete if n != ACKED_TOPIC]
        response = call(counts, target.stub().DeleteTopics, kafka_pb2.DeleteTopicsRequest(
            topics=deletable, timeout_ms=5000), timeout=20)
        if response is not None:
            for r in response.topics:
                assert_clear_code(r, counts)

    run()
    # A topic the fuzzer created is usable: it answers Metadata with all its partitions led.
    listed = {t.name: t for t in metadata(target.broker, sorted(created)).topics} if created else {}
    for name in created:
        assert listed[name].error_code in (0, common_pb2.UNKNOWN_TOPIC_OR_PARTITION)  # maybe deleted since
    target.check_intact("CreateTopics/DeleteTopics", sum(counts.values()))
    assert counts["INVALID_TOPIC_EXCEPTION"] + counts["INVALID_PARTITIONS"] + counts["INVALID_CONFIG"] > 0, counts


def test_fuzz_elect_leaders_and_init_producer_id(target):
    counts: Counter = Counter()

    @settings(FUZZ, max_examples=25)
    @given(st.sampled_from([0, 1, 2, -1, 99]),
           st.lists(st.tuples(TOPICS, st.lists(INT32, max_size=3)), max_size=3),
           st.sampled_from([0, 1, -1, 2**31 - 1]), st.text(max_size=10))
    def run(election_type, topic_partitions, timeout_ms, transactional_id):
        response = call(counts, target.stub().ElectLeaders, kafka_pb2.ElectLeadersRequest(
            election_type=election_type, timeout_ms=timeout_ms, topic_partitions=[
                kafka_pb2.TopicPartitions(topic=t, partitions=ps) for t, ps in topic_partitions]), timeout=20)
        if response is not None:
            assert_clear_code(response, counts)
            for r in response.results:
                assert_clear_code(r, counts)
        response = call(counts, target.stub().InitProducerId, kafka_pb2.InitProducerIdRequest(
            transactional_id=transactional_id, timeout_ms=timeout_ms), timeout=20)
        if response is not None:
            assert_clear_code(response, counts)
            assert (response.producer_id >= 0) == (response.error_code == 0)

    run()
    target.check_intact("ElectLeaders/InitProducerId", sum(counts.values()))
    assert counts["INVALID_ARGUMENT"] > 0, counts   # an election type that is neither PREFERRED nor UNCLEAN


def test_fuzz_controller_service(target):
    """Registration, heartbeats and ISR changes from a stranger: refused with a code, nothing fenced.

    Broker 1's own registration (the right cluster id and id 1) and a heartbeat with its real epoch are
    left out: the client port does not authenticate brokers (see the report of issue 8)."""
    counts: Counter = Counter()
    ctl = controller_pb2_grpc.ControllerStub(target.broker_channel)
    wild_epochs = st.sampled_from([-1, -2**63, 2**63 - 1, 10**12])

    @FUZZ
    @given(st.one_of(st.text(max_size=12), st.just("raftka-test")), INT32, st.text(max_size=12),
           st.one_of(st.integers(2, 2**31 - 1), st.integers(-2**31, 0)), wild_epochs,
           INT64, st.booleans(), TOPICS, st.text(max_size=8), INT32, st.lists(INT32, max_size=4))
    def run(cluster_id, broker_id, incarnation, other_id, epoch, offset, shut_down, topic, topic_id, number,
            isr):
        if cluster_id == "raftka-test" and broker_id == 1:
            broker_id = other_id
        r = call(counts, ctl.BrokerRegistration, controller_pb2.BrokerRegistrationRequest(
            broker_id=broker_id, cluster_id=cluster_id, incarnation_id=incarnation, host="127.0.0.1", port=1),
            timeout=10)
        if r is not None:
            assert_clear_code(r, counts)
            assert r.error_code != 0, "a stranger registered a broker"
        for bid in (1, other_id):
            r = call(counts, ctl.BrokerHeartbeat, controller_pb2.BrokerHeartbeatRequest(
                broker_id=bid, broker_epoch=epoch, metadata_offset=offset, want_shut_down=shut_down), timeout=10)
            if r is not None:
                assert_clear_code(r, counts)
                assert r.error_code != 0
            r = call(counts, ctl.AlterPartition, controller_pb2.AlterPartitionRequest(
                broker_id=bid, broker_epoch=epoch, partitions=[controller_pb2.PartitionIsrChange(
                    topic=topic, topic_id=topic_id, partition=number, leader_epoch=number, partition_epoch=number,
                    new_isr=isr)]), timeout=10)
            if r is not None:   # refused whole, or the one change refused
                assert_clear_code(r, counts)
                for p in r.partitions:
                    assert_clear_code(p, counts)
                assert r.error_code != 0 or [p.error_code != 0 for p in r.partitions] == [True], r

    run()
    md = metadata(target.broker)
    assert [(b.broker_id, b.alive) for b in md.brokers] == [(1, True)], md
    target.check_intact("Controller", sum(counts.values()))


def malformed_batches() -> dict[str, bytes]:
    good = record_batch.build_batch([(b"k", b"v" * 20, 1), (None, b"w", 2)], base_offset=10**15)
    out = {"truncated header": good[:30], "truncated body": good[:-5], "empty": b"", "zeros": b"\x00" * 61,
           "two batches": good + good, "trailing bytes": good + b"x"}
    for name, count, fix_crc in (("count +1", 3, False), ("count +1, CRC fixed", 3, True),
                                 ("count -1, CRC fixed", 1, True), ("count 2^31-1, CRC fixed", 2**31 - 1, True),
                                 ("count 0, CRC fixed", 0, True)):
        b = bytearray(good)
        b[57:61] = count.to_bytes(4, "big")
        b[23:27] = (count - 1).to_bytes(4, "big", signed=True)
        if fix_crc:
            b[17:21] = crc32c(bytes(b[21:])).to_bytes(4, "big")
        out[name] = bytes(b)
    b = bytearray(good)
    b[-3] ^= 0x01
    out["a flipped body byte"] = bytes(b)
    # The first record (Kafka's v2): length, attributes, timestamp delta, offset delta, then its key
    # length at byte 61 + 4, a zigzag varint (1 -> 0x02).
    assert good[65] == 0x02, good[61:70].hex()
    b = bytearray(good)
    b[65] = 0x7E     # a key length of 63: past the record's end, CRC fixed
    b[17:21] = crc32c(bytes(b[21:])).to_bytes(4, "big")
    out["a key length past the body, CRC fixed"] = bytes(b)
    b = bytearray(good)
    b[65] = 0x09     # a key length of -5, CRC fixed: the rest of the record no longer adds up
    b[17:21] = crc32c(bytes(b[21:])).to_bytes(4, "big")
    out["a negative key length, CRC fixed"] = bytes(b)
    b = bytearray(good)
    b[64] = 0x04     # the first record's offset delta 2 (they must count from 0), CRC fixed
    b[17:21] = crc32c(bytes(b[21:])).to_bytes(4, "big")
    out["an offset delta out of order, CRC fixed"] = bytes(b)
    b = bytearray(good)
    b[16] = 1
    out["magic 1"] = bytes(b)
    b = bytearray(good)
    b[8:12] = (2**31 - 1).to_bytes(4, "big")
    out["batch length 2^31-1"] = bytes(b)
    return out


def test_every_kind_of_malformed_batch_is_refused_with_corrupt_message(target):
    """Each malformed batch, on Produce and on a ProduceStream: CORRUPT_MESSAGE and a message naming why."""
    bad = malformed_batches()
    stub = target.stub()
    answers = []
    for name, records in bad.items():
        request = kafka_pb2.ProduceRequest(acks=1, partitions=[kafka_pb2.PartitionProduceData(
            topic=ACKED_TOPIC, partition=0, records=records, current_leader_epoch=-1)])
        answers.append((name, stub.Produce(request, timeout=10).partitions[0]))
        answers.append((name + " (stream)", next(stub.ProduceStream(iter([request]), timeout=10)).partitions[0]))
    wrong = [(name, r.error_code) for name, r in answers if r.error_code != common_pb2.CORRUPT_MESSAGE]
    assert not wrong, wrong
    assert all(r.error_message for _, r in answers)
    target.check_intact("malformed-batch", len(answers))
    assert len(answers) == 2 * len(bad) == 34


# ---- thousands of partitions in one request ----------------------------------------------------


def test_thousands_of_partitions_get_one_answer_each_or_a_clear_refusal(target):
    stub = target.stub()
    batch = record_batch.build_batch([(None, b"x", 1)])
    n = 5000
    r = stub.Produce(kafka_pb2.ProduceRequest(acks=1, partitions=[kafka_pb2.PartitionProduceData(
        topic="never-created-by-any-fuzz", partition=i, records=batch) for i in range(n)]), timeout=30)
    assert [p.error_code for p in r.partitions] == [common_pb2.UNKNOWN_TOPIC_OR_PARTITION] * n
    r = stub.Fetch(kafka_pb2.FetchRequest(replica_id=-1, max_bytes=2**31 - 1, partitions=[kafka_pb2.FetchPartition(
        topic=ACKED_TOPIC, partition=i, fetch_offset=0, current_leader_epoch=-1) for i in range(n)]), timeout=30)
    codes = Counter(p.error_code for p in r.partitions)
    assert codes == {0: ACKED_PARTITIONS, common_pb2.UNKNOWN_TOPIC_OR_PARTITION: n - ACKED_PARTITIONS}, codes
    r = stub.ListOffsets(kafka_pb2.ListOffsetsRequest(partitions=[kafka_pb2.ListOffsetsPartition(
        topic=ACKED_TOPIC, partition=i, timestamp=-1, current_leader_epoch=-1) for i in range(n)]), timeout=30)
    assert sum(p.error_code == 0 for p in r.partitions) == ACKED_PARTITIONS
    refused = 0
    too_many = 10_001
    for method, request in (
            (stub.Produce, kafka_pb2.ProduceRequest(acks=1, partitions=[kafka_pb2.PartitionProduceData(
                topic=ACKED_TOPIC, partition=0, records=batch)] * too_many)),
            (stub.Fetch, kafka_pb2.FetchRequest(replica_id=-1, partitions=[kafka_pb2.FetchPartition(
                topic=ACKED_TOPIC)] * too_many)),
            (stub.ListOffsets, kafka_pb2.ListOffsetsRequest(partitions=[kafka_pb2.ListOffsetsPartition(
                topic=ACKED_TOPIC)] * too_many)),
            (stub.Metadata, kafka_pb2.MetadataRequest(topics=[ACKED_TOPIC] * too_many)),
            (stub.CreateTopics, kafka_pb2.CreateTopicsRequest(validate_only=True, topics=[
                kafka_pb2.CreatableTopic(name="t")] * too_many)),
            (stub.DeleteTopics, kafka_pb2.DeleteTopicsRequest(topics=["t"] * too_many)),
            (stub.ElectLeaders, kafka_pb2.ElectLeadersRequest(topic_partitions=[
                kafka_pb2.TopicPartitions(topic=ACKED_TOPIC, partitions=list(range(too_many)))]))):
        with pytest.raises(grpc.RpcError) as e:
            method(request, timeout=30)
        assert_clear_status(e.value)
        assert "10000" in e.value.details(), e.value.details()
        refused += 1
    r = stub.CreateTopics(kafka_pb2.CreateTopicsRequest(validate_only=True, topics=[kafka_pb2.CreatableTopic(
        name="many", num_partitions=10_000, replication_factor=1)]), timeout=30)
    assert r.topics[0].error_code == 0, r
    target.check_intact("thousands-of-partitions", 3 * n + refused + 1)
    assert refused == 7


def test_a_consumer_reads_exactly_what_was_acknowledged(target):
    """After all the fuzzing above: the client library's Consumer, from the beginning, reads exactly the
    acknowledged records, each once, at its offset."""
    from client import Consumer

    got: dict[tuple[int, int], bytes] = {}
    deadline = time.monotonic() + 20
    with Consumer(target.broker.bootstrap, ACKED_TOPIC, from_beginning=True) as c:
        while len(got) < len(target.acked) and time.monotonic() < deadline:
            for r in c.poll(timeout=0.5):
                assert (r.partition, r.offset) not in got, f"read twice: {r}"
                got[(r.partition, r.offset)] = r.value
    assert got == target.acked
    print(f"[fuzz consumer] {len(got)} records consumed = the {len(target.acked)} acknowledged")
