"""raftka's own group consumer (client/consumer.py with group_id) and `kclient consume --group`, on gRPC,
against three real brokers.

Two members split a topic and read each record once, then a new member resumes from their commits;
a librdkafka member on the Kafka port and a raftka member on gRPC share one group; cooperative-sticky
moves only what it must and never lets two members own a partition at once; auto commit commits what
poll returned; a member that stopped polling cannot commit (CommitFailedError) and rejoins; `kclient
consume --group` processes split a topic, and a SIGTERM'd one leaves at once while a kill -9'd one is
replaced after the session timeout (both measured); bad settings get one Kafka error.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import confluent_kafka
import pytest

from client.admin import Admin
from client.consumer import Consumer
from client.errors import CommitFailedError, InconsistentGroupProtocolError, InvalidGroupIdError
from client.producer import Producer
from raftka_testing.cluster import create_ready
from tests.integration.cluster import REPO, kclient, wait_for
from tests.integration.test_kafka_clients import group_cluster_fixture

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_MS, HEARTBEAT_MS = 6000, 500

cluster = group_cluster_fixture("group-consumer")


def grpc_bootstrap(cluster) -> str:
    return ",".join(b.bootstrap for b in cluster.running())


def new_topic(cluster, name: str, partitions: int, per_partition: int) -> dict[int, list[bytes]]:
    create_ready(cluster, name, partitions)
    return produce(cluster, name, partitions, per_partition)


def produce(cluster, topic: str, partitions: int, per_partition: int, first: int = 0) -> dict[int, list[bytes]]:
    values = {p: [f"{topic}/{p}/{i}".encode() for i in range(first, first + per_partition)] for p in range(partitions)}
    with Producer(grpc_bootstrap(cluster), acks="all") as producer:
        for p, vs in values.items():
            for v in vs:
                producer.send(topic, v, partition=p)
        producer.flush(30)
    return values


class Member:
    """A raftka group consumer polling on its own thread (a poll takes part in rebalances, so each
    member needs one), keeping what it read and every assignment change its callbacks heard."""

    def __init__(self, cluster, group: str, topic: str, ledger: "Ledger | None" = None, **settings):
        self.name = settings.pop("name", "member")
        self.records: list = []
        self.ledger = ledger
        self.error: BaseException | None = None
        self._stop = threading.Event()
        kw = dict(auto_offset_reset="earliest", session_timeout_ms=SESSION_TIMEOUT_MS,
                  heartbeat_interval_ms=HEARTBEAT_MS, fetch_max_wait_ms=100, on_assign=self._assigned,
                  on_revoke=self._revoked)
        kw.update(settings)
        self.consumer = Consumer(grpc_bootstrap(cluster), group_id=group, topics=[topic], **kw)
        self.thread = threading.Thread(target=self._run, daemon=True, name=self.name)
        self.thread.start()

    def _assigned(self, partitions) -> None:
        if self.ledger is not None:
            self.ledger.assign(self.name, partitions)

    def _revoked(self, partitions) -> None:
        if self.ledger is not None:
            self.ledger.revoke(self.name, partitions)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.records += self.consumer.poll(0.2)
        except BaseException as e:   # noqa: BLE001 - the test reads it
            self.error = e

    def owned(self) -> set[int]:
        return {p for _, p in self.consumer.assignment()}

    def values(self) -> list[bytes]:
        return [r.value for r in self.records]

    def stop(self, close: bool = True) -> None:
        self._stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), f"{self.name} did not stop polling"
        if close:
            self.consumer.close()


class Ledger:
    """Who owns each partition, from the members' own callbacks: an assignment of a partition another
    member still owns is a double owner (what cooperative rebalancing must never produce)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.owner: dict[int, str] = {}
        self.double: list[str] = []
        self.events: list[tuple[str, str, list[int]]] = []

    def assign(self, member: str, partitions) -> None:
        with self._lock:
            self.events.append((member, "assign", sorted(p for _, p in partitions)))
            for _, p in partitions:
                if self.owner.get(p, member) != member:
                    self.double.append(f"p{p} given to {member} while {self.owner[p]} owns it")
                self.owner[p] = member

    def revoke(self, member: str, partitions) -> None:
        with self._lock:
            self.events.append((member, "revoke", sorted(p for _, p in partitions)))
            for _, p in partitions:
                if self.owner.get(p) == member:
                    del self.owner[p]


def split(sets: list[set[int]], partitions: int) -> bool:
    return all(sets) and sum(map(len, sets)) == partitions and set().union(*sets) == set(range(partitions))


def no_errors(*members: Member) -> None:
    for m in members:
        assert m.error is None, f"{m.name}: {m.error!r}"


# ---- the group splits, reads once, resumes from commits --------------------------------------------


def test_two_members_split_the_topic_read_each_record_once_and_a_new_member_resumes(cluster):
    topic, group = "split", "split-group"
    values = new_topic(cluster, topic, 4, 25)
    a = Member(cluster, group, topic, name="a")
    b = Member(cluster, group, topic, name="b")
    try:
        wait_for(lambda: split([a.owned(), b.owned()], 4) and len(a.records) + len(b.records) >= 100, 60,
                 "two members owning two partitions each and the 100 records read")
        no_errors(a, b)
        read = Counter(a.values() + b.values())
        expected = [v for vs in values.values() for v in vs]
        assert sorted(read) == sorted(expected), "a record was lost"
        assert max(read.values()) == 1, [v for v, n in read.items() if n > 1][:5]
        assert a.consumer.generation()[0] == b.consumer.generation()[0] >= 1
    finally:
        a.stop()
        b.stop()                       # each closes: commits its positions and leaves
    more = produce(cluster, topic, 4, 10, first=25)
    c = Member(cluster, group, topic, name="c")
    try:
        wait_for(lambda: len(c.records) >= 40, 60, "the new member reading the 40 new records")
        no_errors(c)
        assert sorted(c.values()) == sorted(v for vs in more.values() for v in vs), "not resumed from the commits"
        assert {(r.partition, r.offset) for r in c.records if r.offset == 25} == {(p, 25) for p in range(4)}
    finally:
        c.stop()


def test_a_raftka_member_and_a_librdkafka_member_share_one_group(cluster):
    topic, group = "mixed", "mixed-group"
    values = new_topic(cluster, topic, 4, 20)
    ours = Member(cluster, group, topic, name="raftka", partition_assignment_strategy="range")
    theirs = confluent_kafka.Consumer({
        "bootstrap.servers": ",".join(b.kafka_bootstrap for b in cluster.running()), "group.id": group,
        "auto.offset.reset": "earliest", "enable.auto.commit": True, "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_MS, "partition.assignment.strategy": "range", "fetch.wait.max.ms": 100})
    theirs.subscribe([topic])
    got: list[bytes] = []
    try:
        def settled() -> bool:
            msg = theirs.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
            return split([ours.owned(), {tp.partition for tp in theirs.assignment()}], 4) \
                and len(got) + len(ours.records) >= 80
        wait_for(settled, 60, "a raftka member and a librdkafka member splitting the topic, every record read")
        no_errors(ours)
        read = Counter(got + ours.values())
        assert sorted(read) == sorted(v for vs in values.values() for v in vs)
        assert max(read.values()) == 1
    finally:
        ours.stop()
        theirs.close()


@pytest.mark.parametrize("leader", ["raftka", "librdkafka"])
def test_a_raftka_and_a_librdkafka_member_rebalance_cooperatively_together(cluster, leader):
    """cooperative-sticky across both doors, with either member first (the group's leader, whose assignor
    runs: raftka's Python port or librdkafka's C one): the first gives up exactly what the second ends up
    with and keeps the rest, nobody is given a partition another still owns, every record is read."""
    topic, group = f"coop-{leader}", f"coop-{leader}-group"
    values = new_topic(cluster, topic, 6, 10)
    ledger = Ledger()
    theirs = confluent_kafka.Consumer({
        "bootstrap.servers": ",".join(b.kafka_bootstrap for b in cluster.running()), "group.id": group,
        "auto.offset.reset": "earliest", "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_MS, "partition.assignment.strategy": "cooperative-sticky",
        "fetch.wait.max.ms": 100})
    got: list[bytes] = []

    def poll_theirs() -> set[int]:
        msg = theirs.poll(0.2)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
        return {tp.partition for tp in theirs.assignment()}

    def start_theirs() -> None:
        theirs.subscribe([topic],
                         on_assign=lambda c, ps: ledger.assign("librdkafka", [(t.topic, t.partition) for t in ps]),
                         on_revoke=lambda c, ps: ledger.revoke("librdkafka", [(t.topic, t.partition) for t in ps]))

    ours = None
    try:
        if leader == "librdkafka":
            start_theirs()
            wait_for(lambda: poll_theirs() == set(range(6)), 30, "librdkafka owning all six partitions")
        ours = Member(cluster, group, topic, ledger, name="raftka", partition_assignment_strategy="cooperative-sticky")
        if leader == "raftka":
            wait_for(lambda: ours.owned() == set(range(6)), 30, "raftka owning all six partitions")
            start_theirs()
        wait_for(lambda: split([ours.owned(), poll_theirs()], 6) and len(ours.owned()) == 3, 60, "a 3/3 split")
        wait_for(lambda: poll_theirs() is not None and len(set(got + ours.values())) >= 60, 30, "every record read")
        no_errors(ours)
        assert not ledger.double, ledger.double
        first, second = ("raftka", poll_theirs()) if leader == "raftka" else ("librdkafka", ours.owned())
        revoked = [p for m, kind, ps in ledger.events if m == first and kind == "revoke" for p in ps]
        assert sorted(revoked) == sorted(second), ledger.events
        assert set(got + ours.values()) == {v for vs in values.values() for v in vs}
    finally:
        if ours is not None:
            ours.stop()
        theirs.close()


def test_cooperative_sticky_moves_only_what_it_must(cluster):
    topic, group = "sticky", "sticky-group"
    new_topic(cluster, topic, 6, 5)
    ledger = Ledger()
    a = Member(cluster, group, topic, ledger, name="a", partition_assignment_strategy="cooperative-sticky")
    try:
        wait_for(lambda: a.owned() == set(range(6)), 30, "the first member owning all six partitions")
        b = Member(cluster, group, topic, ledger, name="b", partition_assignment_strategy="cooperative-sticky")
        try:
            wait_for(lambda: split([a.owned(), b.owned()], 6) and len(a.owned()) == 3, 60, "a 3/3 split")
            no_errors(a, b)
            assert not ledger.double, ledger.double
            revoked_by_a = [p for m, kind, ps in ledger.events if m == "a" and kind == "revoke" for p in ps]
            # Incremental: a gave up exactly the three partitions b took, and kept its other three.
            assert sorted(revoked_by_a) == sorted(b.owned()), ledger.events
        finally:
            b.stop()
        wait_for(lambda: a.owned() == set(range(6)), 30, "a owning all six again after b left")
        assert not ledger.double, ledger.double
    finally:
        a.stop()


def test_a_static_member_restarts_into_its_place_without_a_rebalance(cluster):
    topic, group = "static", "static-group"
    new_topic(cluster, topic, 4, 5)
    ledger = Ledger()
    a = Member(cluster, group, topic, ledger, name="a", group_instance_id="host-a")
    b = Member(cluster, group, topic, ledger, name="b")
    try:
        wait_for(lambda: split([a.owned(), b.owned()], 4), 60, "a static and a dynamic member splitting the topic")
        generation, mine = a.consumer.generation()[0], a.owned()
        b_events = len([e for e in ledger.events if e[0] == "b"])
        a.stop()           # a static member's close commits but does not leave: its place is kept
        with Admin(grpc_bootstrap(cluster)) as admin:
            kept = admin.describe_group(group)
        assert kept.state == "Stable" and sorted(m.group_instance_id or "" for m in kept.members) == ["", "host-a"]
        a = Member(cluster, group, topic, ledger, name="a", group_instance_id="host-a")
        wait_for(lambda: a.owned() == mine, 30, "the restarted static member given its old partitions")
        no_errors(a, b)
        assert a.consumer.generation()[0] == b.consumer.generation()[0] == generation, "the group rebalanced"
        assert len([e for e in ledger.events if e[0] == "b"]) == b_events, ledger.events   # b saw nothing
    finally:
        a.stop()
        b.stop()


def test_auto_commit_commits_what_poll_returned(cluster):
    topic, group = "autocommit", "autocommit-group"
    new_topic(cluster, topic, 2, 30)
    a = Member(cluster, group, topic, name="a", enable_auto_commit=True, auto_commit_interval_ms=200)
    try:
        wait_for(lambda: len(a.records) >= 60, 30, "the 60 records read")
        wait_for(lambda: a.consumer.committed() == {(topic, 0): 30, (topic, 1): 30}, 15,
                 "auto commit committing both positions without commit() or close()")
        no_errors(a)
    finally:
        a.stop()


def test_a_member_that_stopped_polling_cannot_commit_and_rejoins(cluster):
    topic, group = "stalled", "stalled-group"
    new_topic(cluster, topic, 2, 3)
    lost: list[list] = []
    c = Consumer(grpc_bootstrap(cluster), group_id=group, topics=[topic], auto_offset_reset="earliest",
                 session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=HEARTBEAT_MS, max_poll_interval_ms=1500,
                 enable_auto_commit=False, on_lost=lost.append)
    try:
        wait_for(lambda: c.poll(0.2) or c.assignment(), 30, "the member joining")
        generation = c.generation()[0]
        # No poll for longer than max.poll.interval.ms: the heartbeat thread leaves the group.
        wait_for(lambda: c.generation()[0] == -1, 15, "the member leaving the group by itself")
        with pytest.raises(CommitFailedError, match="not a member"):
            c.commit({(topic, 0): 1})
        wait_for(lambda: c.poll(0.2) is not None and c.generation()[0] > generation, 30, "the member rejoining")
        assert lost and sorted(p for _, p in lost[0]) == [0, 1], lost
        c.commit({(topic, 0): 2})
        assert c.committed([(topic, 0)]) == {(topic, 0): 2}
    finally:
        c.close()


def test_bad_group_settings_get_kafka_errors(cluster):
    topic = "badgroup"
    create_ready(cluster, topic, 1)
    with Consumer(grpc_bootstrap(cluster), group_id="", topics=[topic], session_timeout_ms=SESSION_TIMEOUT_MS) as c:
        with pytest.raises(InvalidGroupIdError):
            c.poll(5)
    with pytest.raises(ValueError, match="partition.assignment.strategy"):
        Consumer(grpc_bootstrap(cluster), group_id="g", topics=[topic], partition_assignment_strategy="nope")
    first = Member(cluster, "protocols", topic, name="first", partition_assignment_strategy="range")
    try:
        wait_for(lambda: first.owned() == {0}, 30, "the first member joining with range")
        with Consumer(grpc_bootstrap(cluster), group_id="protocols", topics=[topic],
                      partition_assignment_strategy="roundrobin", session_timeout_ms=SESSION_TIMEOUT_MS) as other:
            with pytest.raises(InconsistentGroupProtocolError):
                other.poll(10)
        no_errors(first)
    finally:
        first.stop()


# ---- kclient consume --group: processes, SIGTERM and kill -9 ---------------------------------------


class KclientMember:
    """`kclient consume --group` as its own process; its records (stdout) and group events (stderr)."""

    def __init__(self, cluster, group: str, topic: str):
        args = [sys.executable, "-m", "client.cli", "consume", "--bootstrap", grpc_bootstrap(cluster), "--topic",
                topic, "--group", group, "--from-beginning", "--print-partition",
                "--consumer-property", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
                "--consumer-property", f"heartbeat.interval.ms={HEARTBEAT_MS}",
                "--consumer-property", "auto.commit.interval.ms=500"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.owned: set[int] = set()
        self.changed_at = time.monotonic()
        for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    def _read(self, stream, lines: list[str]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            for kind in ("assigned", "revoked"):
                prefix = f"[group] {kind}: "
                if line.startswith(prefix) and line != prefix + "nothing":
                    parts = {int(tp.rsplit("-", 1)[1]) for tp in line[len(prefix):].split(", ")}
                    self.owned = self.owned | parts if kind == "assigned" else self.owned - parts
                    self.changed_at = time.monotonic()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def test_kclient_members_split_a_topic_and_a_leaving_or_killed_one_is_replaced(cluster):
    topic, group = "kclient-split", "kclient-group"
    new_topic(cluster, topic, 4, 10)
    a, b = KclientMember(cluster, group, topic), KclientMember(cluster, group, topic)
    c = None
    try:
        wait_for(lambda: split([a.owned, b.owned], 4), 60, f"two kclient members splitting the topic: {a.stderr} "
                                                           f"{b.stderr}")
        wait_for(lambda: len(a.stdout) + len(b.stdout) >= 40, 30, "the 40 records printed")
        state = kclient("groups", "--bootstrap", grpc_bootstrap(cluster), "--describe", "--group", group, "--state")
        lines = state.stdout.decode().splitlines()
        assert state.returncode == 0 and lines[0] == "" and lines[1].split() == [
            "GROUP", "COORDINATOR", "(ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"], state
        with Admin(grpc_bootstrap(cluster)) as admin:
            coordinator_id, (host, port) = admin.find_coordinator(group)
        assert lines[2].split() == [group, f"{host}:{port}", f"({coordinator_id})", "range", "Stable", "2"], lines
        # SIGTERM: the member commits and leaves, so the survivor takes over well before the session timeout.
        b.proc.send_signal(signal.SIGTERM)
        assert b.proc.wait(timeout=15) == 143, b.stderr     # 128 + SIGTERM, as a JVM exits
        left = time.monotonic()
        wait_for(lambda: a.owned == set(range(4)), 15, "the survivor owning all four after a SIGTERM")
        took = a.changed_at - left
        print(f"\nSIGTERM'd member replaced in {took:.2f} s")
        assert took < SESSION_TIMEOUT_MS / 1000, f"{took:.2f} s: the member did not leave, it timed out"
        c = KclientMember(cluster, group, topic)
        wait_for(lambda: split([a.owned, c.owned], 4), 60, "a and c splitting the topic")
        # kill -9: nobody says goodbye; the coordinator evicts the member when its session times out.
        c.proc.kill()
        killed = time.monotonic()
        wait_for(lambda: a.owned == set(range(4)), 30, "the survivor owning all four after a kill -9")
        took = a.changed_at - killed
        print(f"kill -9'd member replaced in {took:.2f} s (session.timeout.ms {SESSION_TIMEOUT_MS})")
        assert SESSION_TIMEOUT_MS / 1000 - 1 <= took <= SESSION_TIMEOUT_MS / 1000 + 10, took
        more = produce(cluster, topic, 4, 5, first=10)
        wanted = {f"Partition:{p}\t{v.decode()}" for p, vs in more.items() for v in vs}
        wait_for(lambda: wanted <= set(a.stdout), 30, "the survivor printing the records produced after the kill")
    finally:
        for m in (a, b, c):
            if m is not None:
                m.stop()


def test_kclient_consume_refuses_group_with_partition(cluster):
    result = kclient("consume", "--bootstrap", grpc_bootstrap(cluster), "--topic", "split", "--group", "g",
                     "--partition", "0")
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "Traceback" not in err and "cannot be specified together" in err, err
