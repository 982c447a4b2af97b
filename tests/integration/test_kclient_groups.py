"""Group administration on the gRPC door, and `kclient groups` (kafka-consumer-groups.sh), against three
real brokers whose groups are formed by real Kafka consumers (confluent-kafka) on the Kafka port.

FindCoordinator names the same coordinator from every broker, with its gRPC address; the group RPCs
answer NOT_COORDINATOR anywhere else, and the Admin client finds the coordinator (again, after a kill -9)
by itself. kclient lists the group, describes each partition's committed offset, log end offset, lag
and owner, plans and executes offset resets only while the group is inactive, and deletes it only once
it is empty; its refusals are one line and a non-zero exit.
"""

from __future__ import annotations

import time

import confluent_kafka
import grpc
import pytest
from confluent_kafka import TopicPartition

from broker.group.offsets_records import partition_for
from broker.group.offsets_topic import OFFSETS_TOPIC
from client.admin import Admin
from client.errors import GroupIdNotFoundError, UnknownTopicOrPartitionError
from client.protocol.v1 import kafka_pb2, kafka_pb2_grpc
from raftka_testing.cluster import create_ready
from tests.integration.cluster import free_ports, kclient, metadata, wait_for
from tests.integration.test_kafka_clients import OFFSETS_PARTITIONS, group_cluster_fixture

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_MS, HEARTBEAT_MS = 6000, 1000
NONE, NOT_COORDINATOR = 0, 16
HEADER = ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
          "CLIENT-ID"]


cluster = group_cluster_fixture("kclient-groups")


# ---- helpers ---------------------------------------------------------------------------------------


def kafka_bootstrap(cluster) -> str:
    return ",".join(b.kafka_bootstrap for b in cluster.running())


def grpc_bootstrap(cluster) -> str:
    return ",".join(b.bootstrap for b in cluster.running())


def ok(result) -> tuple[str, str]:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode(), result.stderr.decode()


def one_line_error(result) -> str:
    assert result.returncode != 0, result.stdout.decode()
    err = result.stderr.decode()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def groups(cluster, *args: str, via: int = 2):
    """`kclient groups` through one broker's gRPC port (any broker: the client finds the coordinator)."""
    return kclient("groups", "--bootstrap", cluster.brokers[via].bootstrap, *args)


def described(stdout: str, group: str) -> dict[tuple[str, int], list[str]]:
    """--describe's table as {(topic, partition): the row's nine columns}; the layout checked on the way."""
    lines = stdout.splitlines()
    assert lines[0] == "" and lines[1].split() == HEADER, stdout
    rows = {}
    for line in lines[2:]:
        cols = line.split()
        assert len(cols) == 9 and cols[0] == group, line
        rows[(cols[1], int(cols[2]))] = cols
    return rows


def produce(cluster, topic: str, partitions: int, per_partition: int) -> None:
    failed: list[str] = []
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap(cluster), "acks": "all"})
    for p in range(partitions):
        for i in range(per_partition):
            producer.produce(topic, value=b"%s/%d/%d" % (topic.encode(), p, i), partition=p,
                             on_delivery=lambda err, msg: failed.append(str(err)) if err is not None else None)
    assert producer.flush(30) == 0 and not failed, failed[:3]


def group_consumer(cluster, group: str, client_id: str) -> confluent_kafka.Consumer:
    return confluent_kafka.Consumer({
        "bootstrap.servers": kafka_bootstrap(cluster), "group.id": group, "client.id": client_id,
        "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_MS, "fetch.wait.max.ms": 100})


def stub(broker) -> tuple[grpc.Channel, kafka_pb2_grpc.KafkaStub]:
    channel = grpc.insecure_channel(broker.bootstrap)
    return channel, kafka_pb2_grpc.KafkaStub(channel)


def offsets_leader(cluster, partition: int) -> int | None:
    for b in cluster.running():
        r = metadata(b, [OFFSETS_TOPIC])
        if r is not None and r.topics and not r.topics[0].error_code and len(r.topics[0].partitions) > partition:
            leader = r.topics[0].partitions[partition].leader_id
            if leader > 0:
                return leader
    return None


def find_coordinator(broker, group: str) -> kafka_pb2.Coordinator | None:
    """The coordinator ``broker`` names for ``group`` over gRPC, or None while it names none yet."""
    channel, kafka = stub(broker)
    with channel:
        answer = kafka.FindCoordinator(kafka_pb2.FindCoordinatorRequest(key_type=kafka_pb2.GROUP, keys=[group]),
                                       timeout=20)
    [c] = answer.coordinators
    assert c.key == group and answer.answered_by == broker.broker_id
    return c if c.error_code == NONE else None


# ---- the gRPC door ---------------------------------------------------------------------------------


def test_group_rpcs_answer_not_coordinator_off_the_coordinator_and_the_admin_finds_it(cluster):
    """Every broker names the same coordinator (the leader of the group's __consumer_offsets partition)
    with its gRPC address. Anywhere else each group RPC answers NOT_COORDINATOR where Kafka puts it; the
    Admin client, started from a broker that is not the coordinator, commits, fetches and deletes."""
    topic, group = "grpc.groups", "g-grpc"
    create_ready(cluster, topic, 2)
    named = {b.broker_id: wait_for(lambda b=b: find_coordinator(b, group), 30, f"broker {b.broker_id} to name "
                                   f"{group}'s coordinator") for b in cluster.brokers.values()}
    node = named[1].node_id
    assert {c.node_id for c in named.values()} == {node}
    assert {(c.host, c.port) for c in named.values()} == {("127.0.0.1", cluster.brokers[node].port)}
    assert node == offsets_leader(cluster, partition_for(group, OFFSETS_PARTITIONS))
    other = cluster.brokers[next(i for i in cluster.brokers if i != node)]

    with Admin(other.bootstrap) as admin:
        admin.commit_offsets(group, {(topic, 0): 3, (topic, 1): 5})
        assert admin.committed_offsets(group) == {(topic, 0): 3, (topic, 1): 5}
        assert admin.committed_offsets(group, [(topic, 1)]) == {(topic, 1): 5}
        assert admin.find_coordinator(group) == (node, ("127.0.0.1", cluster.brokers[node].port))

        channel, kafka = stub(other)
        with channel:
            commit = kafka.OffsetCommit(kafka_pb2.OffsetCommitRequest(
                group_id=group, generation_id=-1, topics=[kafka_pb2.OffsetCommitTopic(name=topic, partitions=[
                    kafka_pb2.OffsetCommitPartition(partition_index=p, committed_offset=9) for p in (0, 1)])]),
                timeout=10)
            assert [(t.name, p.partition_index, p.error_code) for t in commit.topics for p in t.partitions] == [
                (topic, 0, NOT_COORDINATOR), (topic, 1, NOT_COORDINATOR)]
            fetched = kafka.OffsetFetch(kafka_pb2.OffsetFetchRequest(group_id=group), timeout=10)
            assert (fetched.error_code, list(fetched.topics)) == (NOT_COORDINATOR, [])
            [d] = kafka.DescribeGroups(kafka_pb2.DescribeGroupsRequest(groups=[group]), timeout=10).groups
            assert (d.group_id, d.error_code) == (group, NOT_COORDINATOR)
            [deleted] = kafka.DeleteGroups(kafka_pb2.DeleteGroupsRequest(groups_names=[group]), timeout=10).results
            assert (deleted.group_id, deleted.error_code) == (group, NOT_COORDINATOR)
            offset_delete = kafka.OffsetDelete(kafka_pb2.OffsetDeleteRequest(group_id=group, topics=[
                kafka_pb2.OffsetTopicPartitions(name=topic, partition_indexes=[0])]), timeout=10)
            assert offset_delete.error_code == NOT_COORDINATOR
        channel, kafka = stub(cluster.brokers[node])
        with channel:
            fetched = kafka.OffsetFetch(kafka_pb2.OffsetFetchRequest(group_id=group), timeout=10)
            assert fetched.error_code == NONE and fetched.answered_by == node
            assert {(t.name, p.partition_index): p.committed_offset for t in fetched.topics
                    for p in t.partitions} == {(topic, 0): 3, (topic, 1): 5}, "the refused commit changed nothing"

        admin.delete_offsets(group, [(topic, 0)])
        assert admin.committed_offsets(group) == {(topic, 1): 5}
        admin.delete_group(group)
        assert admin.committed_offsets(group) == {}
        with pytest.raises(GroupIdNotFoundError):
            admin.delete_group(group)
        started = time.monotonic()
        with pytest.raises(UnknownTopicOrPartitionError):      # an answer's own error: raised, not retried
            admin.commit_offsets(group, {("no.such.topic", 0): 1})
        assert time.monotonic() - started < 5


def test_kclient_groups_fail_in_one_line_when_no_broker_answers():
    a, b = free_ports(2)
    for args in (["--list"], ["--describe", "--group", "g"], ["--delete", "--group", "g"],
                 ["--reset-offsets", "--group", "g", "--topic", "t", "--to-earliest"]):
        started = time.monotonic()
        line = one_line_error(kclient("groups", "--bootstrap", f":{a},:{b}", *args, timeout=30))
        assert f"127.0.0.1:{a}" in line and f"127.0.0.1:{b}" in line, line
        assert time.monotonic() - started < 15, f"{args} waited for nobody"


# ---- kclient groups, with a group of real consumers --------------------------------------------------


def test_kclient_groups_lists_describes_resets_and_deletes_a_consumer_group(cluster):
    topic, group, partitions = "billing.orders", "billing", 3
    create_ready(cluster, topic, partitions)
    produce(cluster, topic, partitions, 10)
    consumers = [group_consumer(cluster, group, f"billing-{i}") for i in range(2)]
    admin = Admin(grpc_bootstrap(cluster))
    try:
        for c in consumers:
            c.subscribe([topic])

        def settled():
            """Both members own partitions, between them all three, and the coordinator says Stable
            with the same assignments (each consumer is polled meanwhile, so it can rebalance)."""
            for c in consumers:
                c.poll(0.1)
            mine = [{tp.partition for tp in c.assignment()} for c in consumers]
            if not all(mine) or set().union(*mine) != set(range(partitions)) or sum(map(len, mine)) != partitions:
                return None
            d = admin.describe_group(group)
            seen = {m.member_id: {p for _, p in m.assignment.partitions} for m in d.members}
            return d if d.state == "Stable" and seen == {c.memberid(): m for c, m in zip(consumers, mine)} else None

        d = wait_for(settled, 30, f"{group}: two members, a Stable generation", 0)
        assert d.protocol_type == "consumer" and d.protocol in ("range", "roundrobin")
        assert {m.client_id for m in d.members} == {"billing-0", "billing-1"}
        owner = {tp.partition: (c.memberid(), f"billing-{i}") for i, c in enumerate(consumers) for tp in c.assignment()}
        for c in consumers:
            c.commit(offsets=[TopicPartition(topic, tp.partition, 10) for tp in c.assignment()], asynchronous=False)
        produce(cluster, topic, partitions, 4)          # after the commit: the log end is 14, the lag 4

        assert group in ok(groups(cluster, "--list"))[0].splitlines()
        out, err = ok(groups(cluster, "--describe", "--group", group))
        assert "no active members" not in err
        rows = described(out, group)
        assert rows == {(topic, p): [group, topic, str(p), "10", "14", "4", owner[p][0], "/127.0.0.1", owner[p][1]]
                        for p in range(partitions)}

        refused = one_line_error(groups(cluster, "--reset-offsets", "--group", group, "--topic", topic,
                                        "--to-earliest", "--execute"))
        assert refused == (f"Error: Assignments can only be reset if the group '{group}' is inactive, but the "
                           "current state is Stable.")
        assert "NON_EMPTY_GROUP" in one_line_error(groups(cluster, "--delete", "--group", group))
        assert "GROUP_SUBSCRIBED_TO_TOPIC" in one_line_error(groups(cluster, "--delete-offsets", "--group", group,
                                                                   "--topic", topic))
        assert admin.committed_offsets(group) == {(topic, p): 10 for p in range(partitions)}, "nothing changed"
        assert group in ok(groups(cluster, "--list"))[0].splitlines()
    finally:
        for c in consumers:
            c.close()                                   # each leaves the group
    try:
        wait_for(lambda: admin.describe_group(group).state == "Empty", 15, f"{group} to be Empty")
        out, err = ok(groups(cluster, "--describe", "--group", group, via=3))
        assert err.strip() == f"Consumer group '{group}' has no active members."
        assert described(out, group) == {(topic, p): [group, topic, str(p), "10", "14", "4", "-", "-", "-"]
                                         for p in range(partitions)}

        plan = ok(groups(cluster, "--reset-offsets", "--group", group, "--topic", topic, "--to-earliest"))[0]
        assert plan.splitlines() == ["", "GROUP           TOPIC           PARTITION  NEW-OFFSET"] + [
            f"{group:<15} {topic:<15} {p:<10} 0" for p in range(partitions)]
        assert admin.committed_offsets(group) == {(topic, p): 10 for p in range(partitions)}, "a dry run commits"

        done = ok(groups(cluster, "--reset-offsets", "--group", group, "--topic", topic, "--to-earliest",
                         "--execute", via=1))[0]
        assert done == plan
        reader = confluent_kafka.Consumer({"bootstrap.servers": kafka_bootstrap(cluster), "group.id": group})
        try:   # the committed offsets as a Kafka client reads them (OffsetFetch on the Kafka port)
            committed = reader.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
        finally:
            reader.close()
        assert {tp.partition: tp.offset for tp in committed} == {p: 0 for p in range(partitions)}

        shifted = ok(groups(cluster, "--reset-offsets", "--group", group, "--topic", f"{topic}:1",
                            "--shift-by", "6", "--execute"))[0]
        assert shifted.splitlines()[2:] == [f"{group:<15} {topic:<15} {1:<10} 6"]
        capped = groups(cluster, "--reset-offsets", "--group", group, "--topic", f"{topic}:2", "--to-offset", "99")
        assert ok(capped)[0].splitlines()[2:] == [f"{group:<15} {topic:<15} {2:<10} 14"]
        assert "Value will be set to 14." in capped.stderr.decode()
        assert admin.committed_offsets(group) == {(topic, 0): 0, (topic, 1): 6, (topic, 2): 0}
        lags = {tp: int(cols[5]) for tp, cols in described(ok(groups(cluster, "--describe", "--group", group))[0],
                                                           group).items()}
        assert lags == {(topic, 0): 14, (topic, 1): 8, (topic, 2): 14}

        assert ok(groups(cluster, "--delete", "--group", group))[0] == \
            f"Deletion of requested consumer groups ('{group}') was successful.\n"
        assert group not in ok(groups(cluster, "--list"))[0].splitlines()
        assert admin.committed_offsets(group) == {}
        assert one_line_error(groups(cluster, "--describe", "--group", group)) == \
            f"Error: Consumer group '{group}' does not exist."
        assert "GROUP_ID_NOT_FOUND" in one_line_error(groups(cluster, "--delete", "--group", group))
    finally:
        admin.close()


# ---- the coordinator killed -----------------------------------------------------------------------


def test_the_admin_follows_the_coordinator_after_kill_9(cluster):
    """kill -9 of the coordinator: the Admin's next requests find the new one (a retry through
    connection failures, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS) and the committed offsets are there."""
    topic, group = "grpc.failover", "g-failover"
    create_ready(cluster, topic, 1)
    with Admin(grpc_bootstrap(cluster)) as admin:
        admin.commit_offsets(group, {(topic, 0): 7})
        before, _ = admin.find_coordinator(group)
        victim = cluster.brokers[before]
        victim.kill()
        try:
            assert admin.committed_offsets(group) == {(topic, 0): 7}
            after, address = admin.find_coordinator(group)
            assert after != before and address == ("127.0.0.1", cluster.brokers[after].port)
            assert admin.describe_group(group).coordinator == after
        finally:
            victim.start()
        wait_for(lambda: offsets_leader(cluster, partition_for(group, OFFSETS_PARTITIONS)) is not None, 20,
                 "the offsets partition led")
