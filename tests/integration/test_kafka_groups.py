"""Consumer groups (Kafka's classic protocol) with real clients against three real brokers.

librdkafka (confluent-kafka), kafka-python and kcat -G run groups on the brokers' Kafka ports: the
partitions of a topic are split between the members of one generation (each owned by exactly one),
every record is read once, committed offsets are where a new member resumes, a member that leaves
or is killed with -9 has its partitions handed to the survivors (within the session timeout), a
coordinator killed with -9 moves with its __consumer_offsets partition and keeps every committed
offset, the admin APIs list, describe and delete groups, and bad requests are refused with
Kafka's error codes while the broker lives on.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter

import confluent_kafka
import kafka
import kafka.admin
import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from broker.group.offsets_records import partition_for
from broker.group.offsets_topic import OFFSETS_TOPIC
from raftka_testing.cluster import create_ready
from tests.integration.cluster import metadata, wait_for
from tests.integration.test_kafka_clients import OFFSETS_PARTITIONS, group_cluster_fixture, recv_exactly

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_MS, HEARTBEAT_MS = 6000, 1000
# Kafka's error codes, as the wire carries them.
UNKNOWN_TOPIC_OR_PARTITION, OFFSET_METADATA_TOO_LARGE, INVALID_GROUP_ID, INVALID_SESSION_TIMEOUT = 3, 12, 24, 26
NOT_COORDINATOR, NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND = 16, 68, 69


cluster = group_cluster_fixture("kafka-groups")


# ---- helpers ---------------------------------------------------------------------------------------


def bootstrap(cluster) -> str:
    return ",".join(b.kafka_bootstrap for b in cluster.running())


def produce(cluster, topic: str, partitions: int, per_partition: int, first: int = 0) -> dict[int, list[bytes]]:
    """``per_partition`` known values into each partition (acks=all); {partition: values}, in order."""
    values = {p: [f"{topic}/{p}/{i}".encode() for i in range(first, first + per_partition)]
              for p in range(partitions)}
    failed: list[str] = []
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap(cluster), "acks": "all", "linger.ms": 5})
    for p, vs in values.items():
        for v in vs:
            producer.produce(topic, value=v, partition=p,
                             on_delivery=lambda err, msg: failed.append(str(err)) if err is not None else None)
    assert producer.flush(30) == 0 and not failed, failed[:3]
    return values


def group_consumer(cluster, group: str, **extra) -> confluent_kafka.Consumer:
    return confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap(cluster), "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": HEARTBEAT_MS,
        "fetch.wait.max.ms": 100, **extra})


def admin(cluster) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap(cluster)})


def owned(consumer: confluent_kafka.Consumer) -> set[int]:
    return {tp.partition for tp in consumer.assignment()}


def split_between(assignments: list[set[int]], partitions: int) -> bool:
    """Every partition owned by exactly one member, and every member owns one or more."""
    return (all(assignments) and sum(map(len, assignments)) == partitions
            and set().union(*assignments) == set(range(partitions)))


def describe(client: AdminClient, group: str):
    return client.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)


def committed_offsets(client: AdminClient, group: str, topic: str, partitions: int) -> dict[int, int]:
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    answer = client.list_consumer_group_offsets([request], request_timeout=10)[group].result(timeout=15)
    return {tp.partition: tp.offset for tp in answer.topic_partitions if tp.error is None}


def offsets_leader(cluster, partition: int) -> int | None:
    for b in cluster.running():
        r = metadata(b, [OFFSETS_TOPIC])
        if r is not None and r.topics and len(r.topics[0].partitions) > partition:
            leader = {p.partition: p.leader_id for p in r.topics[0].partitions}[partition]
            if leader > 0:
                return leader
    return None


def poll_all(consumers, got: dict[int, list], seconds: float = 0.1) -> None:
    """One poll of each consumer; records go to got[index] as (partition, offset, value)."""
    for i, c in enumerate(consumers):
        m = c.poll(seconds)
        if m is None:
            continue
        if m.error() is not None:
            assert m.error().code() == KafkaError._PARTITION_EOF or not m.error().fatal(), m.error()
            continue
        got[i].append((m.partition(), m.offset(), m.value()))


# Raw requests (header v1; the versions used are not flexible), for what a client does not send.


def _str(s: str | None) -> bytes:
    return struct.pack(">h", -1) if s is None else struct.pack(">h", len(s.encode())) + s.encode()


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values if len(values) > 1 else values[0]

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        self.pos += n
        return self.data[self.pos - n:self.pos].decode()


def call(port: int, api_key: int, version: int, body: bytes, correlation_id: int = 7) -> Reader:
    """One request (header v1: no tagged fields, the versions used here are not flexible) and its answer."""
    request = struct.pack(">hhi", api_key, version, correlation_id) + _str("groups-test") + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", recv_exactly(s, 4))[0]
        answer = Reader(recv_exactly(s, size))
    assert answer.take(">i") == correlation_id
    return answer




def find_coordinator_v0(port: int, group: str) -> tuple[int, int, int]:
    """(error code, node id, port) of FindCoordinator v0."""
    r = call(port, 10, 0, _str(group))
    error, node = r.take(">hi")
    r.string()
    return error, node, r.take(">i")


def join_group_v1(port: int, group: str, session_timeout_ms: int) -> tuple[int, str]:
    """(error code, member id) of a first JoinGroup v1 (protocol "range", an empty subscription)."""
    body = (_str(group) + struct.pack(">ii", session_timeout_ms, 10000) + _str("") + _str("consumer")
            + struct.pack(">i", 1) + _str("range") + struct.pack(">i", 0))
    r = call(port, 11, 1, body)
    error, _generation = r.take(">hi")
    _protocol, _leader, member_id = r.string(), r.string(), r.string()
    return error, member_id


def offset_commit_v2(port: int, group: str, commits: list[tuple[str, int, int, str]]) -> dict[tuple[str, int], int]:
    """{(topic, partition): error code} of a standalone OffsetCommit v2 (generation -1, no member) of
    (topic, partition, offset, metadata) each."""
    body = _str(group) + struct.pack(">i", -1) + _str("") + struct.pack(">q", -1) + struct.pack(">i", len(commits))
    for topic, partition, offset, meta in commits:
        body += _str(topic) + struct.pack(">iiq", 1, partition, offset) + _str(meta)
    r = call(port, 8, 2, body)
    out = {}
    for _ in range(r.take(">i")):
        topic = r.string()
        for _ in range(r.take(">i")):
            partition, error = r.take(">ih")
            out[(topic, partition)] = error
    return out


def offset_fetch_v1_v2(port: int, version: int, group: str, topic: str, partition: int
                       ) -> tuple[list[tuple[int, int, int]], int | None]:
    """([(partition, committed offset, error code)], the group's error code: None at v1, which has none)."""
    r = call(port, 9, version, _str(group) + struct.pack(">i", 1) + _str(topic) + struct.pack(">ii", 1, partition))
    out = []
    for _ in range(r.take(">i")):
        r.string()
        for _ in range(r.take(">i")):
            index, offset = r.take(">iq")
            r.string()
            out.append((index, offset, r.take(">h")))
    return out, (r.take(">h") if version >= 2 else None)


class Held:
    """A member whose partitions stay paused while ``hold`` is set: records produced before the group
    settles are not read by a member of an earlier generation (and read again after a rebalance)."""

    def __init__(self, consumer: confluent_kafka.Consumer):
        self.consumer = consumer
        self.hold = True

    def on_assign(self, consumer, partitions) -> None:
        consumer.assign(partitions)
        if self.hold:
            consumer.pause(partitions)

    def release(self) -> None:
        self.hold = False
        self.consumer.resume(self.consumer.assignment())


# ---- 1. librdkafka: three members, six partitions ----------------------------------------------------


def test_three_librdkafka_members_split_a_topic_read_each_record_once_and_a_new_member_resumes(cluster):
    """Six partitions, ten known records each, produced first. Three members of one generation own
    two partitions each (checked on the clients and in DescribeGroups); the 60 records are read once
    in all, each by the owner of its partition; sync commits; after all close, a new member resumes
    from the committed offsets and reads only the 30 records produced since."""
    topic, group, partitions, first, more = "groups.split", "g-split", 6, 10, 5
    create_ready(cluster, topic, partitions)
    values = produce(cluster, topic, partitions, first)
    client = admin(cluster)
    members = [Held(group_consumer(cluster, group, **{"client.id": f"member-{i}"})) for i in range(3)]
    consumers = [m.consumer for m in members]
    try:
        for m in members:
            m.consumer.subscribe([topic], on_assign=m.on_assign)
        got: dict[int, list] = {i: [] for i in range(3)}
        started = time.monotonic()

        def settled():
            poll_all(consumers, got)
            if not split_between([owned(c) for c in consumers], partitions):
                return None
            d = describe(client, group)
            return d if d.state == ConsumerGroupState.STABLE and len(d.members) == 3 else None
        described = wait_for(settled, 30, "three members owning two partitions each, the group Stable", 0)
        settle_s = time.monotonic() - started
        assert not any(got.values()), "a paused member read records"
        assignments = [owned(c) for c in consumers]
        assert sorted(map(len, assignments)) == [2, 2, 2], assignments
        by_member = {m.member_id: {tp.partition for tp in m.assignment.topic_partitions} for m in described.members}
        assert by_member == {c.memberid(): owned(c) for c in consumers}, "DescribeGroups' assignment"
        assert {m.client_id for m in described.members} == {"member-0", "member-1", "member-2"}

        for m in members:
            m.release()
        wait_for(lambda: poll_all(consumers, got) or sum(map(len, got.values())) >= partitions * first, 30,
                 f"{partitions * first} records", 0)
        for _ in range(5):      # a record read twice would show up here
            poll_all(consumers, got)
        records = [r for rs in got.values() for r in rs]
        assert len(records) == partitions * first
        assert Counter((p, o) for p, o, _ in records) == Counter({(p, o): 1 for p in range(partitions)
                                                                 for o in range(first)}), "each record once"
        assert sorted(v for _, _, v in records) == sorted(v for vs in values.values() for v in vs)
        for i, c in enumerate(consumers):
            assert {p for p, _, _ in got[i]} == assignments[i], f"member {i} read only its own partitions"
            for p in assignments[i]:
                assert [v for q, _, v in got[i] if q == p] == values[p], f"partition {p} in order"

        for c in consumers:
            done = c.commit(asynchronous=False)
            assert {tp.partition: (tp.offset, tp.error) for tp in done} == {p: (first, None) for p in owned(c)}
            assert {tp.partition: tp.offset for tp in c.committed(list(c.assignment()), timeout=10)} == {
                p: first for p in owned(c)}
    finally:
        for c in consumers:
            c.close()
    wait_for(lambda: describe(client, group).state == ConsumerGroupState.EMPTY, 15, f"{group} to be Empty")
    assert committed_offsets(client, group, topic, partitions) == {p: first for p in range(partitions)}

    later = produce(cluster, topic, partitions, more, first=first)
    resumed = group_consumer(cluster, group)
    try:
        everything = [TopicPartition(topic, p) for p in range(partitions)]
        assert {tp.partition: tp.offset for tp in resumed.committed(everything, timeout=10)} == {
            p: first for p in range(partitions)}
        resumed.subscribe([topic])
        again: dict[int, list] = {0: []}
        wait_for(lambda: poll_all([resumed], again) or len(again[0]) >= partitions * more, 30,
                 f"the {partitions * more} new records", 0)
        for _ in range(5):
            poll_all([resumed], again)
        assert sorted((p, o) for p, o, _ in again[0]) == [(p, o) for p in range(partitions)
                                                          for o in range(first, first + more)], "only the new ones"
        assert sorted(v for _, _, v in again[0]) == sorted(v for vs in later.values() for v in vs)
        resumed.commit(asynchronous=False)
        assert {tp.partition: tp.offset for tp in resumed.committed(everything, timeout=10)} == {
            p: first + more for p in range(partitions)}
    finally:
        resumed.close()
    assert committed_offsets(client, group, topic, partitions) == {p: first + more for p in range(partitions)}
    print(f"\n[librdkafka group] 3 members settled in {settle_s:.2f} s, 2 partitions each; "
          f"{partitions * first} records read once; resumed at {first}, read {partitions * more} new")


# ---- 2. a member leaves, a member dies ---------------------------------------------------------------

# One member of the group in its own process: it prints each assignment it gets, and ends by
# itself after two minutes should the test that started it not kill it.
MEMBER_SCRIPT = r"""
import sys, time
import confluent_kafka
bootstrap, group, topic, session_ms, heartbeat_ms = sys.argv[1:6]
c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                              "enable.auto.commit": False, "session.timeout.ms": int(session_ms),
                              "heartbeat.interval.ms": int(heartbeat_ms)})
c.subscribe([topic], on_assign=lambda consumer, parts: print(
    "assigned", c.memberid(), *sorted(p.partition for p in parts), flush=True))
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    c.poll(0.2)
c.close()
"""


class MemberProcess:
    """MEMBER_SCRIPT running; its last "assigned" line read by a thread."""

    def __init__(self, cluster, group: str, topic: str):
        self.proc = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, bootstrap(cluster), group, topic,
                                      str(SESSION_TIMEOUT_MS), str(HEARTBEAT_MS)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.member_id: str | None = None
        self.partitions: set[int] = set()
        threading.Thread(target=self._read, daemon=True, name="member-process-stdout").start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            words = line.split()
            if words and words[0] == "assigned":
                self.member_id, self.partitions = words[1], {int(w) for w in words[2:]}

    def kill(self) -> None:
        """kill -9 of this process (its own PID) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def test_partitions_move_to_the_survivors_when_a_member_dies_and_when_one_leaves(cluster):
    """Four partitions, three members: two here, one in its own process. kill -9 of that process: the
    two survivors own all four partitions once its session (6 s) expires, not before. Then one of
    them closes (LeaveGroup): the last member owns all four at once, without waiting for a session."""
    topic, group, partitions = "groups.rebalance", "g-rebalance", 4
    create_ready(cluster, topic, partitions)
    client = admin(cluster)
    survivors = [group_consumer(cluster, group, **{"client.id": f"survivor-{i}"}) for i in range(2)]
    member = None
    closed: set[int] = set()
    try:
        member = MemberProcess(cluster, group, topic)
        for c in survivors:
            c.subscribe([topic])
        sink: dict[int, list] = {0: [], 1: []}

        def three_members():
            poll_all(survivors, sink)
            if not split_between([owned(c) for c in survivors] + [member.partitions], partitions):
                return None
            d = describe(client, group)
            return d if d.state == ConsumerGroupState.STABLE and len(d.members) == 3 else None
        described = wait_for(three_members, 30, "three members (one in its own process) splitting 4 partitions", 0)
        assert member.member_id in {m.member_id for m in described.members}
        dead = set(member.partitions)

        killed_at = time.monotonic()
        member.kill()
        wait_for(lambda: poll_all(survivors, sink) or split_between([owned(c) for c in survivors], partitions),
                 SESSION_TIMEOUT_MS / 1000 + 15, "the two survivors to own all four partitions", 0)
        after_kill_s = time.monotonic() - killed_at
        d = describe(client, group)
        assert d.state == ConsumerGroupState.STABLE
        assert {m.member_id for m in d.members} == {c.memberid() for c in survivors}
        assert dead <= owned(survivors[0]) | owned(survivors[1])
        # Not before the dead member's session could expire (its last heartbeat was at most
        # heartbeat.interval.ms before the kill), and within the session and a few heartbeats.
        assert (SESSION_TIMEOUT_MS - 2 * HEARTBEAT_MS) / 1000 <= after_kill_s <= (SESSION_TIMEOUT_MS + 5000) / 1000

        left_at = time.monotonic()
        survivors[1].close()
        closed.add(1)
        wait_for(lambda: poll_all(survivors[:1], sink) or owned(survivors[0]) == set(range(partitions)),
                 SESSION_TIMEOUT_MS / 1000 + 15, "the last member to own all four partitions", 0)
        after_leave_s = time.monotonic() - left_at
        d = describe(client, group)
        assert (d.state, [m.member_id for m in d.members]) == (ConsumerGroupState.STABLE, [survivors[0].memberid()])
        assert after_leave_s < (SESSION_TIMEOUT_MS - HEARTBEAT_MS) / 1000, "a leave need not wait for a session"
    finally:
        if member is not None:
            member.kill()
        for i, c in enumerate(survivors):
            if i not in closed:
                c.close()
    print(f"\n[rebalance] kill -9 of a member: survivors own everything {after_kill_s:.2f} s later "
          f"(session.timeout.ms {SESSION_TIMEOUT_MS}); a member's close(): {after_leave_s:.2f} s")


# ---- 3. kafka-python ---------------------------------------------------------------------------------


class KafkaPythonMember:
    """A kafka-python KafkaConsumer in the group, polled by a thread of its own as an application
    would (kafka-python 3.0.12 sends its JoinGroup again when the last one completes while no poll()
    awaits it, and a leader's JoinGroup rebalances the group: consumers polled in turn by one thread
    can rebalance for ever). Records, assignment and commits are read here; the thread commits (its
    consumer's own thread) when asked, and closes the consumer when stopped or after a minute."""

    def __init__(self, cluster, group: str, topic: str):
        self._args = (bootstrap(cluster).split(","), group, topic)
        self.records: list[tuple[int, int, bytes]] = []
        self.partitions: set[int] = set()
        self.committed: dict[int, int] | None = None
        self.error: BaseException | None = None
        self._commit = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"kafka-python-{group}")
        self._thread.start()

    def _run(self) -> None:
        servers, group, topic = self._args
        try:
            consumer = kafka.KafkaConsumer(bootstrap_servers=servers, group_id=group, auto_offset_reset="earliest",
                                           enable_auto_commit=False, session_timeout_ms=SESSION_TIMEOUT_MS,
                                           heartbeat_interval_ms=HEARTBEAT_MS, fetch_max_wait_ms=100)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            self.error = e
            return
        try:
            # The topic's metadata first: a member that joins before it has it is assigned nothing
            # and rejoins as soon as it learns the partitions (one more rebalance).
            assert consumer.partitions_for_topic(topic)
            consumer.subscribe([topic])
            deadline = time.monotonic() + 60
            while not self._stop.is_set() and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=1000).values():
                    self.records += [(r.partition, r.offset, r.value) for r in records]
                self.partitions = {tp.partition for tp in consumer.assignment()}
                if self._commit.is_set() and self.committed is None:
                    consumer.commit()
                    self.committed = {tp.partition: consumer.committed(tp) for tp in consumer.assignment()}
        except BaseException as e:  # noqa: BLE001
            self.error = e
        finally:
            consumer.close()

    def commit(self) -> dict[int, int]:
        self._commit.set()
        return wait_for(lambda: self._check() or self.committed, 15, "kafka-python's commit")

    def _check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"kafka-python member failed: {self.error!r}") from self.error

    def close(self) -> None:
        self._stop.set()
        self._thread.join(15)
        assert not self._thread.is_alive(), "kafka-python's thread did not end"
        self._check()


def test_a_librdkafka_static_member_restarts_into_its_place_without_a_rebalance(cluster):
    """KIP-345 with librdkafka: a member with group.instance.id closes without leaving; a new process with
    the same instance id gets the same partitions within the session timeout, and the other member hears
    of no rebalance (no assign or revoke callback) and keeps its partitions."""
    topic, group = "groups.static", "g-static"
    create_ready(cluster, topic, 4)
    client = admin(cluster)
    events: list[str] = []
    a = group_consumer(cluster, group, **{"group.instance.id": "host-a"})
    b = group_consumer(cluster, group)
    a.subscribe([topic])
    b.subscribe([topic], on_assign=lambda c, ps: events.append("assign"),
                on_revoke=lambda c, ps: events.append("revoke"))
    try:
        def split() -> bool:
            poll_all([a, b], {0: [], 1: []})
            return split_between([owned(a), owned(b)], 4) and describe(client, group).state == ConsumerGroupState.STABLE
        wait_for(split, 30, "a static and a dynamic member splitting the topic", 0)
        mine, theirs, seen = owned(a), owned(b), len(events)
        a.close()
        a = group_consumer(cluster, group, **{"group.instance.id": "host-a"})
        a.subscribe([topic])

        def back() -> bool:
            poll_all([a, b], {0: [], 1: []})
            return owned(a) == mine
        wait_for(back, SESSION_TIMEOUT_MS / 1000, "the restarted static member given its old partitions", 0)
        for _ in range(10):                       # a rebalance, if one came, would reach b within these polls
            poll_all([a, b], {0: [], 1: []})
        assert owned(b) == theirs and len(events) == seen, events
        d = describe(client, group)
        assert sorted(m.group_instance_id or "" for m in d.members) == ["", "host-a"], d.members
    finally:
        a.close()
        b.close()


def test_a_kafka_python_group_of_two_splits_commits_and_resumes(cluster):
    """Two KafkaConsumers split four partitions (two each), read the 40 records produced once they
    settled exactly once, each its own partitions', commit; a new member of the group reads only the
    12 produced after."""
    topic, group, partitions, first, more = "groups.kafka-python", "g-kafka-python", 4, 10, 3
    create_ready(cluster, topic, partitions)
    members = [KafkaPythonMember(cluster, group, topic) for _ in range(2)]
    try:
        wait_for(lambda: [m._check() for m in members] and split_between([m.partitions for m in members], partitions),
                 30, "two kafka-python members splitting four partitions")
        assignments = [set(m.partitions) for m in members]
        assert sorted(map(len, assignments)) == [2, 2], assignments
        values = produce(cluster, topic, partitions, first)
        wait_for(lambda: sum(len(m.records) for m in members) >= partitions * first, 30,
                 f"{partitions * first} records")
        assert [m.partitions for m in members] == assignments, "no rebalance meanwhile"
        for m in members:
            assert m.commit() == {p: first for p in m.partitions}
    finally:
        for m in members:
            m.close()
    records = [r for m in members for r in m.records]
    assert Counter((p, o) for p, o, _ in records) == Counter({(p, o): 1 for p in range(partitions)
                                                             for o in range(first)}), "each record once"
    for i, m in enumerate(members):
        assert {p for p, _, _ in m.records} == assignments[i], f"member {i} read only its own partitions"
        for p in assignments[i]:
            assert [v for q, _, v in m.records if q == p] == values[p], f"member {i}, partition {p} in order"

    later = produce(cluster, topic, partitions, more, first=first)
    resumed = KafkaPythonMember(cluster, group, topic)
    try:
        wait_for(lambda: resumed._check() or len(resumed.records) >= partitions * more, 30,
                 f"the {partitions * more} new records")
        assert resumed.commit() == {p: first + more for p in range(partitions)}
    finally:
        resumed.close()
    assert sorted((p, o) for p, o, _ in resumed.records) == [
        (p, o) for p in range(partitions) for o in range(first, first + more)], "only the new ones"
    assert sorted(v for _, _, v in resumed.records) == sorted(v for vs in later.values() for v in vs)
    print(f"\n[kafka-python group] 2 members, 2 partitions each; {partitions * first} records read once; "
          f"resumed at {first}, read {partitions * more} new")


# ---- 4. kcat -G --------------------------------------------------------------------------------------


class Lines:
    """A process's stdout lines, read by a thread."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True, name="kcat-stdout")
        self._thread.start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def kcat_group(cluster, group: str, topic: str, expected: int, offset: str,
               timeout: float = 30.0) -> tuple[list[str], bool]:
    """`kcat -G group topic -e -q -o offset`: (its lines, whether it exited by itself) once it printed
    ``expected`` lines or exited (AssertionError after ``timeout``). With -G, -e exits once every
    assigned partition reached its end; should it not, kcat is ended by its PID with SIGTERM, on which
    it leaves the group and commits as it does on exit."""
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not installed (Debian package kcat)", pytrace=False)
    proc = subprocess.Popen([path, "-b", bootstrap(cluster), "-G", group, topic, "-e", "-q", "-o", offset,
                             "-X", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
                             "-X", f"heartbeat.interval.ms={HEARTBEAT_MS}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = Lines(proc)
    try:
        wait_for(lambda: len(out.lines) >= expected or proc.poll() is not None, timeout,
                 f"kcat -G to print {expected} line(s) or exit")
        try:
            proc.wait(timeout=5)      # -e: it exits by itself once at the end of each partition
            by_itself = True
        except subprocess.TimeoutExpired:
            by_itself = False
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    out.join(5)
    assert proc.returncode == 0, proc.stderr.read()
    return out.lines, by_itself


def test_kcat_balanced_consumer_reads_every_record_once(cluster):
    """kcat -G from the beginning reads the 60 records of three partitions once; its offsets are
    committed, so a second run with -o stored reads nothing, and a third only the 3 produced since."""
    topic, group, partitions, first = "groups.kcat", "g-kcat", 3, 20
    create_ready(cluster, topic, partitions)
    values = produce(cluster, topic, partitions, first)
    lines, exited = kcat_group(cluster, group, topic, partitions * first, "beginning")
    assert sorted(lines) == sorted(v.decode() for vs in values.values() for v in vs), "each record once"
    client = admin(cluster)
    assert committed_offsets(client, group, topic, partitions) == {p: first for p in range(partitions)}

    nothing, exited_empty = kcat_group(cluster, group, topic, 1, "stored", timeout=15)
    assert nothing == [] and exited_empty, "with nothing past the committed offsets kcat -e exits at once"
    later = produce(cluster, topic, partitions, 1, first=first)
    lines, _ = kcat_group(cluster, group, topic, partitions, "stored")
    assert sorted(lines) == sorted(v.decode() for vs in later.values() for v in vs)
    assert committed_offsets(client, group, topic, partitions) == {p: first + 1 for p in range(partitions)}
    print(f"\n[kcat -G] read {partitions * first} records once ({'exited by itself' if exited else 'ended'}),"
          f" then nothing, then the {partitions} new ones")


# ---- 5. the coordinator's kill -9 --------------------------------------------------------------------


def coordinator_of(client: AdminClient, group: str) -> int:
    return describe(client, group).coordinator.id


def test_committed_offsets_survive_the_coordinators_kill(cluster):
    """The coordinator is the leader of the group's __consumer_offsets partition (DescribeGroups says
    so too). A member reads and commits 3 x 15 records; the coordinator is killed with -9 while the
    member stays: once another broker coordinates, the committed offsets read back are the same, the
    member's next commit goes there, and a new member resumes there (no record read twice); the
    offsets are still there once the killed broker is back.
    A second group on the same coordinator, whose only member left before the kill, is Empty on the
    new coordinator too (not Stable with a member that is gone) and can be deleted at once."""
    topic, group, partitions, first, more, last = "groups.coordinator", "g-coordinator", 3, 15, 4, 2
    left = "g-coordinator-left"
    assert partition_for(left, OFFSETS_PARTITIONS) == partition_for(group, OFFSETS_PARTITIONS)
    create_ready(cluster, topic, partitions)
    values = produce(cluster, topic, partitions, first)
    client = admin(cluster)
    # Its session is long, so that a member the new coordinator wrongly kept would still be there.
    gone = group_consumer(cluster, left, **{"session.timeout.ms": 60000})
    try:
        gone.subscribe([topic])
        wait_for(lambda: poll_all([gone], {0: []}) or owned(gone) == set(range(partitions)), 30,
                 f"{left}'s member to own every partition", 0)
    finally:
        gone.close()
    assert describe(client, left).state == ConsumerGroupState.EMPTY
    victim = None
    try:
        member = group_consumer(cluster, group)
        try:
            member.subscribe([topic])
            got: dict[int, list] = {0: []}
            wait_for(lambda: poll_all([member], got) or len(got[0]) >= partitions * first, 30,
                     f"{partitions * first} records", 0)
            assert sorted(v for _, _, v in got[0]) == sorted(v for vs in values.values() for v in vs)
            member.commit(asynchronous=False)
            victim = coordinator_of(client, group)
            assert victim == offsets_leader(cluster, partition_for(group, OFFSETS_PARTITIONS))
            assert committed_offsets(client, group, topic, partitions) == {p: first for p in range(partitions)}

            killed_at = time.monotonic()
            cluster.brokers[victim].kill()
            client = admin(cluster)      # bootstrapped on the survivors
            moved = wait_for(lambda: (lambda c: c if c not in (None, victim) else None)(
                offsets_leader(cluster, partition_for(group, OFFSETS_PARTITIONS))), 30, "a new coordinator")

            def offsets_served() -> dict[int, int] | None:
                try:
                    return committed_offsets(client, group, topic, partitions)
                except confluent_kafka.KafkaException:
                    return None       # e.g. COORDINATOR_LOAD_IN_PROGRESS while it loads
            # Raw first: librdkafka 2.16's AdminClient dereferences its (absent) consumer group when an
            # OffsetFetch is answered NOT_COORDINATOR, and segfaults.
            wait_for(lambda: offset_fetch_v1_v2(cluster.brokers[moved].kafka_port, 2, group, topic, 0)[1] == 0, 30,
                     f"broker {moved} to serve {group}'s offsets")
            assert wait_for(offsets_served, 30, "the new coordinator to serve the offsets") == {
                p: first for p in range(partitions)}, "the same committed offsets"
            served_s = time.monotonic() - killed_at
            assert coordinator_of(client, group) == moved
            d = describe(client, left)
            assert (d.coordinator.id, d.state, d.members) == (moved, ConsumerGroupState.EMPTY, []), \
                "the group whose only member left is Empty on the new coordinator"
            assert delete_error(client, left) is None

            later = produce(cluster, topic, partitions, more, first=first)
            wait_for(lambda: poll_all([member], got) or len(got[0]) >= partitions * (first + more), 30,
                     f"the {partitions * more} records produced after the kill", 0)

            def commit_accepted() -> bool:
                poll_all([member], got)
                try:
                    return all(tp.error is None for tp in member.commit(asynchronous=False))
                except confluent_kafka.KafkaException:
                    return False      # the member is still finding the new coordinator (or rejoining)
            wait_for(commit_accepted, 30, "a commit accepted by the new coordinator", 0)
            committed_s = time.monotonic() - killed_at
            assert committed_offsets(client, group, topic, partitions) == {
                p: first + more for p in range(partitions)}
            assert sorted(v for _, _, v in got[0]) == sorted(v for vs in (values, later) for p in vs for v in vs[p])
        finally:
            member.close()

        final = produce(cluster, topic, partitions, last, first=first + more)
        resumed = group_consumer(cluster, group)
        try:
            everything = [TopicPartition(topic, p) for p in range(partitions)]
            assert {tp.partition: tp.offset for tp in resumed.committed(everything, timeout=10)} == {
                p: first + more for p in range(partitions)}
            resumed.subscribe([topic])
            again: dict[int, list] = {0: []}
            wait_for(lambda: poll_all([resumed], again) or len(again[0]) >= partitions * last, 30,
                     "the records produced last", 0)
            for _ in range(5):
                poll_all([resumed], again)
            assert sorted((p, o) for p, o, _ in again[0]) == [
                (p, o) for p in range(partitions) for o in range(first + more, first + more + last)], "none twice"
            assert sorted(v for _, _, v in again[0]) == sorted(v for vs in final.values() for v in vs)
            resumed.commit(asynchronous=False)
        finally:
            resumed.close()
    finally:
        if victim is not None and not cluster.brokers[victim].alive():
            cluster.brokers[victim].start()
    assert committed_offsets(client, group, topic, partitions) == {p: first + more + last for p in range(partitions)}
    print(f"\n[coordinator kill -9] broker {victim} -> {moved}: committed offsets served again "
          f"{served_s:.2f} s after the kill, the member's commit accepted after {committed_s:.2f} s")


# ---- 6. the admin APIs -------------------------------------------------------------------------------


def listed(client: AdminClient) -> dict[str, tuple[ConsumerGroupState, bool]]:
    """{group: (state, is simple)} of confluent's ListGroups over every broker."""
    answer = client.list_consumer_groups(request_timeout=10).result(timeout=15)
    assert not answer.errors, answer.errors
    return {g.group_id: (g.state, g.is_simple_consumer_group) for g in answer.valid}


def delete_error(client: AdminClient, group: str) -> int | None:
    """The error code of confluent's DeleteGroups for ``group`` (None: deleted)."""
    try:
        client.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        return None
    except confluent_kafka.KafkaException as e:
        return e.args[0].code()


def test_the_admin_apis_list_describe_and_delete_groups(cluster):
    """confluent's and kafka-python's admin clients list and describe a Stable group of two (state,
    members, assignment, coordinator); DeleteGroups refuses it while it has members (NON_EMPTY_GROUP),
    deletes it once Empty (with its offsets), then knows it no more (GROUP_ID_NOT_FOUND, not listed).
    A group that only committed offsets (assign(), no membership) is listed as an Empty simple group."""
    topic, group, simple, partitions = "groups.admin", "g-admin", "g-admin-simple", 2
    create_ready(cluster, topic, partitions)
    client = admin(cluster)
    consumers = [group_consumer(cluster, group, **{"client.id": f"admin-{i}"}) for i in range(2)]
    kp = kafka.admin.KafkaAdminClient(bootstrap_servers=bootstrap(cluster).split(","))
    try:
        for c in consumers:
            c.subscribe([topic])
        sink: dict[int, list] = {0: [], 1: []}
        wait_for(lambda: poll_all(consumers, sink) or (split_between([owned(c) for c in consumers], partitions)
                 and describe(client, group).state == ConsumerGroupState.STABLE), 30, "a Stable group of two", 0)
        assert listed(client)[group] == (ConsumerGroupState.STABLE, False)
        d = describe(client, group)
        assert (d.group_id, d.state, d.is_simple_consumer_group) == (group, ConsumerGroupState.STABLE, False)
        assert d.partition_assignor in ("range", "roundrobin"), d.partition_assignor
        assert d.coordinator.id == offsets_leader(cluster, partition_for(group, OFFSETS_PARTITIONS))
        assert {m.member_id: (m.client_id, m.host, {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions})
                for m in d.members} == {c.memberid(): (f"admin-{i}", "/127.0.0.1", {(topic, p) for p in owned(c)})
                                        for i, c in enumerate(consumers)}

        kp_listed = {g["group_id"]: g for g in kp.list_groups()}
        assert (kp_listed[group]["protocol_type"], kp_listed[group]["group_state"]) == ("consumer", "Stable")
        kp_described = kp.describe_groups([group])[group]
        assert (kp_described["error"], kp_described["group_state"], kp_described["protocol_type"]) == (
            None, "Stable", "consumer")
        assert kp_described["protocol_data"] == d.partition_assignor
        assert {m["member_id"]: ([t["topic"] for t in m["member_assignment"]["assigned_partitions"]],
                                 {p for t in m["member_assignment"]["assigned_partitions"] for p in t["partitions"]},
                                 m["member_metadata"]["topics"]) for m in kp_described["members"]} == {
            c.memberid(): ([topic], owned(c), [topic]) for c in consumers}

        assert delete_error(client, group) == NON_EMPTY_GROUP
        for c in consumers:
            c.commit(offsets=[TopicPartition(topic, p, 1) for p in owned(c)], asynchronous=False)
    finally:
        for c in consumers:
            c.close()
    try:
        wait_for(lambda: describe(client, group).state == ConsumerGroupState.EMPTY, 15, f"{group} to be Empty")
        assert listed(client)[group] == (ConsumerGroupState.EMPTY, False)
        assert committed_offsets(client, group, topic, partitions) == {0: 1, 1: 1}
        assert delete_error(client, group) is None
        assert committed_offsets(client, group, topic, partitions) == {0: -1001, 1: -1001}, "offsets deleted"
        assert group not in listed(client) and group not in {g["group_id"] for g in kp.list_groups()}
        assert describe(client, group).state == ConsumerGroupState.DEAD
        assert delete_error(client, group) == GROUP_ID_NOT_FOUND
        assert kp.delete_groups([group]) == {group: "GroupIdNotFoundError"}

        # A consumer that assign()s and commits is no member, yet its group is known (Kafka's "simple" group).
        standalone = group_consumer(cluster, simple)
        try:
            standalone.assign([TopicPartition(topic, 0, 0)])
            done = standalone.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
            assert [(tp.partition, tp.offset, tp.error) for tp in done] == [(0, 1, None)]
        finally:
            standalone.close()
        assert committed_offsets(client, simple, topic, 1) == {0: 1}
        assert listed(client)[simple] == (ConsumerGroupState.EMPTY, True)
        assert describe(client, simple).state == ConsumerGroupState.EMPTY
        assert kp.delete_groups([simple]) == {simple: "OK"}
        assert simple not in listed(client)
    finally:
        kp.close()
    print("\n[admin] Stable group of 2 listed and described by both clients; NON_EMPTY_GROUP, deleted, "
          "GROUP_ID_NOT_FOUND; a simple group listed and deleted")


# ---- 7. bad input ------------------------------------------------------------------------------------


def test_bad_group_requests_are_refused_and_the_broker_lives(cluster):
    """An empty group id (INVALID_GROUP_ID), a session timeout under group.min.session.timeout.ms
    (INVALID_SESSION_TIMEOUT, raw and from librdkafka; no group is left behind), a commit for a topic
    that does not exist (UNKNOWN_TOPIC_OR_PARTITION) and commit metadata over offset.metadata.max.bytes
    (4096: OFFSET_METADATA_TOO_LARGE) are refused one by one; the good commits of the same request are
    kept. An OffsetFetch sent to a broker that is not the coordinator is answered NOT_COORDINATOR: on
    each partition at v1 (which has no group error code), for the group at v2. Every broker goes on
    serving groups."""
    topic, group = "groups.bad", "g-bad"
    create_ready(cluster, topic, 1)
    ports = {b.broker_id: b.kafka_port for b in cluster.brokers.values()}
    for port in ports.values():
        assert join_group_v1(port, "", SESSION_TIMEOUT_MS) == (INVALID_GROUP_ID, "")
    error, coordinator, coordinator_port = wait_for(
        lambda: (lambda r: r if r[0] == 0 else None)(find_coordinator_v0(ports[1], group)), 15, "g-bad's coordinator")
    assert coordinator_port == ports[coordinator]
    # Until the coordinator has loaded the partition it has just been made leader of, it answers
    # NOT_COORDINATOR (16) or COORDINATOR_LOAD_IN_PROGRESS (14), which a client retries.
    assert wait_for(lambda: (lambda e: e if e not in (14, 16) else None)(
        join_group_v1(coordinator_port, group, 999)[0]), 15, "the coordinator's answer") == INVALID_SESSION_TIMEOUT
    assert join_group_v1(coordinator_port, group, 1800001)[0] == INVALID_SESSION_TIMEOUT   # over the max

    short = group_consumer(cluster, group, **{"session.timeout.ms": 999})
    try:
        short.subscribe([topic])

        def refused() -> bool:      # librdkafka hands a JoinGroup error to poll() as an error event
            m = short.poll(0.1)
            return m is not None and m.error() is not None and m.error().code() == KafkaError.INVALID_SESSION_TIMEOUT
        wait_for(refused, 15, "librdkafka's poll() to report INVALID_SESSION_TIMEOUT", 0)
        assert not short.assignment()
    finally:
        short.close()
    client = admin(cluster)     # kept: librdkafka fails the futures of a destroyed handle
    assert group not in listed(client), "a refused JoinGroup leaves no group behind"
    assert describe(client, group).state == ConsumerGroupState.DEAD

    kept = offset_commit_v2(coordinator_port, group, [
        (topic, 0, 5, "m" * 4096),              # at offset.metadata.max.bytes: kept
        (topic, 1, 5, ""),                      # a partition the topic does not have
        ("groups.no-such-topic", 0, 5, "")])
    assert kept == {(topic, 0): 0, (topic, 1): UNKNOWN_TOPIC_OR_PARTITION,
                    ("groups.no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION}, kept
    assert offset_commit_v2(coordinator_port, group, [(topic, 0, 6, "m" * 4097)]) == {
        (topic, 0): OFFSET_METADATA_TOO_LARGE}
    assert listed(client)[group] == (ConsumerGroupState.EMPTY, True), "its commits made it a simple group"
    assert offset_fetch_v1_v2(coordinator_port, 1, group, topic, 0) == ([(0, 5, 0)], None)
    for b in cluster.brokers.values():
        if b.broker_id != coordinator:
            assert offset_fetch_v1_v2(b.kafka_port, 1, group, topic, 0) == ([(0, -1, NOT_COORDINATOR)], None)
            assert offset_fetch_v1_v2(b.kafka_port, 2, group, topic, 0) == ([], NOT_COORDINATOR)
    # (kafka-python: confluent-kafka 2.16's binding reads a 4096-byte metadata past its end)
    kp = kafka.admin.KafkaAdminClient(bootstrap_servers=bootstrap(cluster).split(","))
    try:
        fetched = kp.list_group_offsets({group: [kafka.TopicPartition(topic, 0),
                                                 kafka.TopicPartition("groups.no-such-topic", 0)]})[group]
    finally:
        kp.close()
    assert {tp: (o.offset, o.metadata) for tp, o in fetched.items()} == {
        kafka.TopicPartition(topic, 0): (5, "m" * 4096),
        kafka.TopicPartition("groups.no-such-topic", 0): (-1, "")}, "only the good commit is kept"

    for b in cluster.brokers.values():
        assert b.alive(), f"broker {b.broker_id} died"
        assert "Traceback" not in b.log() and "kafka_request_failed" not in b.log(), b.broker_id
        assert find_coordinator_v0(b.kafka_port, group)[:2] == (0, coordinator)
    print(f"\n[bad input] refused: INVALID_GROUP_ID (3 brokers), INVALID_SESSION_TIMEOUT (x3), "
          f"UNKNOWN_TOPIC_OR_PARTITION (x2), OFFSET_METADATA_TOO_LARGE; OffsetFetch v1/v2 NOT_COORDINATOR; "
          f"coordinator {coordinator}, all brokers alive")
