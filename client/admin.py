"""Admin: create, grow, delete, list and describe topics; describe the cluster; administer groups.

    admin = Admin(bootstrap=":9092")
    admin.create_topic("t", partitions=3, replication_factor=3, config={"min.insync.replicas": "2"})
    admin.create_partitions("t", 6)
    admin.describe_topic("t").partitions[0].leader
    admin.describe_group("g").members[0].assignment.partitions        # [("t", 0), ("t", 1)]
    admin.committed_offsets("g")                                       # {("t", 0): 42, ...}
    admin.commit_offsets("g", {("t", 0): 0})                           # a standalone commit

Group requests go to the group's coordinator (FindCoordinator first, as Kafka's admin client does);
NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS and COORDINATOR_NOT_AVAILABLE send the request to the
coordinator found again, after a bounded backoff. Other errors raise their client.errors class.
"""

from __future__ import annotations

import itertools
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from client.client import KafkaClient, backoff_s
from client.coordinator_lookup import (RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MS, CoordinatorLookup,
                                       first_partition_error, offset_commit_request, offset_fetch_error,
                                       offset_fetch_request)
from client.connection import Address
from client.errors import InvalidRequestError, KafkaError, UnknownTopicOrPartitionError, error_for_code
from client.protocol.v1 import kafka_pb2
from client.replica_state import BrokerReplicas, describe_replicas
from client.trace import Tracer


@dataclass(frozen=True)
class PartitionDescription:
    partition: int
    leader: int                   # -1: no leader
    leader_epoch: int
    replicas: list[int]
    isr: list[int]


@dataclass(frozen=True)
class TopicDescription:
    name: str
    partitions: list[PartitionDescription]
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BrokerDescription:
    id: int
    host: str
    port: int
    alive: bool


@dataclass(frozen=True)
class ElectionResult:
    topic: str
    partition: int
    error: KafkaError | None     # None: elected; ElectionNotNeededError: the right leader was already there


@dataclass(frozen=True)
class ClusterDescription:
    cluster_id: str
    controller_id: int
    brokers: list[BrokerDescription]


TopicPartition = tuple[str, int]

GROUP_MAX_ATTEMPTS = 30
EARLIEST, LATEST = -2, -1      # ListOffsets' timestamps


@dataclass(frozen=True)
class ConsumerProtocolAssignment:
    """Kafka's ConsumerProtocolAssignment, what a consumer group's leader hands each member."""
    version: int
    partitions: list[TopicPartition]      # in the order they were encoded
    user_data: bytes | None = None


@dataclass(frozen=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    host: str
    assignment: ConsumerProtocolAssignment   # empty unless the group is Stable and a consumer group


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: str                    # Kafka's spelling: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead
    protocol_type: str            # "consumer" for consumer groups
    protocol: str                 # the assignor ("range", "roundrobin", ...) when Stable
    members: list[MemberDescription]
    coordinator: int              # the broker id that answered


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: str


def decode_consumer_assignment(data: bytes) -> ConsumerProtocolAssignment:
    """Kafka's ConsumerProtocolAssignment (versions 0-3 share the layout): int16 version, an int32-counted
    array of (int16-length topic, int32-counted array of int32 partitions), then nullable bytes (int32
    length, -1 null) of user data. Empty bytes (a member with no assignment yet) is version 0, nothing
    assigned. ValueError if the bytes are not such an assignment."""
    if not data:
        return ConsumerProtocolAssignment(0, [])
    try:
        version, topics = struct.unpack_from(">hi", data, 0)
        if version < 0:
            raise ValueError(f"unsupported ConsumerProtocolAssignment version {version}")
        if topics < 0:
            raise ValueError(f"negative topic count {topics}")
        pos, partitions = 6, []
        for _ in range(topics):
            size, = struct.unpack_from(">h", data, pos)
            if size < 0 or pos + 2 + size > len(data):
                raise ValueError(f"bad topic name length {size}")
            topic = data[pos + 2:pos + 2 + size].decode()
            pos += 2 + size
            count, = struct.unpack_from(">i", data, pos)
            if count < 0 or pos + 4 + 4 * count > len(data):
                raise ValueError(f"bad partition count {count} for topic {topic!r}")
            partitions += [(topic, p) for p in struct.unpack_from(f">{count}i", data, pos + 4)]
            pos += 4 + 4 * count
        user_data = None
        if pos < len(data):        # a writer may leave the trailing user data out entirely
            length, = struct.unpack_from(">i", data, pos)
            if length >= 0:
                if pos + 4 + length > len(data):
                    raise ValueError(f"user data of {length} bytes past the end")
                user_data = bytes(data[pos + 4:pos + 4 + length])
        return ConsumerProtocolAssignment(version, partitions, user_data)
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"not a ConsumerProtocolAssignment: {e}") from None


def encode_consumer_assignment(partitions: Iterable[TopicPartition], user_data: bytes | None = None,
                               version: int = 0) -> bytes:
    """The inverse of decode_consumer_assignment (topics in first-seen order)."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    out = [struct.pack(">hi", version, len(by_topic))]
    for topic, ps in by_topic.items():
        name = topic.encode()
        out.append(struct.pack(f">h{len(name)}si{len(ps)}i", len(name), name, len(ps), *ps))
    out.append(struct.pack(">i", -1) if user_data is None else struct.pack(">i", len(user_data)) + user_data)
    return b"".join(out)


def _assignment_of(protocol_type: str, data: bytes) -> ConsumerProtocolAssignment:
    """A member's assignment as Kafka's admin client reads it: only a consumer group's (or an untyped
    one's) bytes are ConsumerProtocol; anything else, or bytes that do not parse, is no assignment."""
    if protocol_type not in ("consumer", ""):
        return ConsumerProtocolAssignment(0, [])
    try:
        return decode_consumer_assignment(data)
    except ValueError:
        return ConsumerProtocolAssignment(0, [])


class Admin:
    def __init__(self, bootstrap: str = ":9092", request_timeout_ms: int = 30000, tracer: Tracer | None = None):
        self._client = KafkaClient(bootstrap, request_timeout_ms, tracer)

    def _controller_address(self) -> Address:
        """Admin requests go to the controller when it is known (any broker would forward)."""
        if not self._client.metadata.brokers:
            self._client.refresh_metadata()
        address = self._client.metadata.broker_address(self._client.metadata.controller_id)
        return address or self._client.candidate_addresses()[0]

    def _call_controller(self, api: str, request, detail: str, timeout_s: float | None = None):
        """Send to the controller; on a retriable failure (it died, it moved) refresh and try again."""
        deadline = time.monotonic() + (timeout_s or self._client.request_timeout_s)
        for attempt in itertools.count(1):
            try:
                return self._client.call(self._controller_address(), api, request, timeout_s, detail)
            except KafkaError as e:
                if not e.retriable or time.monotonic() >= deadline:
                    raise
            time.sleep(backoff_s(attempt, 100, 1000))
            try:
                self._client.refresh_metadata()
            except KafkaError:
                pass  # nobody answered this time; the next attempt tries the bootstrap list again

    def create_topic(self, name: str, partitions: int = -1, replication_factor: int = -1,
                     config: dict[str, str] | None = None, validate_only: bool = False) -> None:
        """Raises TopicAlreadyExistsError, InvalidTopicError, InvalidPartitionsError, ... on refusal.

        partitions / replication_factor -1 take the cluster defaults (num.partitions,
        default.replication.factor), as in Kafka.
        """
        request = kafka_pb2.CreateTopicsRequest(validate_only=validate_only, topics=[kafka_pb2.CreatableTopic(
            name=name, num_partitions=partitions, replication_factor=replication_factor,
            configs={str(k): str(v) for k, v in (config or {}).items()})])
        response = self._call_controller("CreateTopics", request,
                                         f"create {name} ({partitions} partitions, RF {replication_factor})")
        self._raise_for(response.topics)

    def create_partitions(self, topic: str, total_count: int, assignments: list[list[int]] | None = None,
                          validate_only: bool = False) -> None:
        """Grow ``topic`` to ``total_count`` partitions (Kafka's Admin.createPartitions with
        NewPartitions.increaseTo). ``assignments``: the replica list of each new partition, in order;
        None (or []) lets the controller place them. Raises InvalidPartitionsError (not an increase, over the
        limit), InvalidReplicaAssignmentError, UnknownTopicOrPartitionError, ... on refusal."""
        try:
            new_partitions = kafka_pb2.CreatePartitionsTopic(
                name=topic, count=total_count,
                assignments=[kafka_pb2.CreatePartitionsAssignment(broker_ids=a) for a in assignments or ()])
        except (TypeError, ValueError) as e:   # not an int32 where the wire has one
            raise InvalidRequestError(f"Invalid partition count or broker id: {e}") from None
        request = kafka_pb2.CreatePartitionsRequest(validate_only=validate_only, topics=[new_partitions])
        response = self._call_controller("CreatePartitions", request, f"grow {topic} to {total_count} partitions")
        self._raise_for(response.topics)

    def delete_topic(self, name: str) -> None:
        response = self._call_controller("DeleteTopics", kafka_pb2.DeleteTopicsRequest(topics=[name]),
                                         f"delete {name}")
        self._raise_for(response.topics)

    def elect_leaders(self, election_type: str = "preferred", topic: str | None = None,
                      partition: int | None = None, timeout_ms: int = 30000) -> list[ElectionResult]:
        """kafka-leader-election.sh: "preferred" moves leadership back to each partition's first
        replica; "unclean" gives an offline partition to any live replica. No topic: every partition."""
        kind = {"preferred": kafka_pb2.PREFERRED, "unclean": kafka_pb2.UNCLEAN}.get(election_type.lower())
        if kind is None:
            raise InvalidRequestError(f"election type must be preferred or unclean, not {election_type!r}")
        targets = [] if topic is None else [kafka_pb2.TopicPartitions(
            topic=topic, partitions=[] if partition is None else [partition])]
        response = self._call_controller("ElectLeaders", kafka_pb2.ElectLeadersRequest(
            election_type=kind, topic_partitions=targets, timeout_ms=timeout_ms),
            f"elect {election_type} leaders for {topic or 'all topics'}", timeout_ms / 1000 + 5)
        if response.error_code:
            raise error_for_code(response.error_code, response.error_message)
        return [ElectionResult(r.topic, r.partition, error_for_code(r.error_code, r.error_message)
                               if r.error_code else None) for r in response.results]

    @staticmethod
    def _raise_for(results) -> None:
        for r in results:
            if r.error_code:
                raise error_for_code(r.error_code, r.error_message)

    def list_topics(self) -> list[str]:
        return sorted(t.name for t in self._client.refresh_metadata().topics)

    def describe_topic(self, name: str) -> TopicDescription:
        response = self._client.refresh_metadata([name])
        for t in response.topics:
            if t.name == name:
                if t.error_code:
                    raise error_for_code(t.error_code, f"Topic '{name}' does not exist.")
                return _topic_description(t)
        raise UnknownTopicOrPartitionError(f"Topic '{name}' does not exist.")

    def describe_topics(self) -> list[TopicDescription]:
        return [_topic_description(t) for t in self._client.refresh_metadata().topics if not t.error_code]

    def describe_cluster(self) -> ClusterDescription:
        response = self._client.refresh_metadata([])
        return ClusterDescription(response.cluster_id, response.controller_id,
                                  [BrokerDescription(b.broker_id, b.host, b.port, b.alive) for b in response.brokers])

    def describe_replicas(self, topics: Iterable[str] = ()) -> list[BrokerReplicas]:
        """Every broker's own replicas (of ``topics``; none named: all), as that broker sees them: log start,
        HW, log end and size, and on a leader its followers' lag (Kafka's DescribeLogDirs and replica lag).
        A broker that does not answer within a couple of seconds comes back with ``error`` set."""
        return describe_replicas(self._client, list(topics))

    # ---- offsets of partitions (Kafka's Admin.listOffsets) ------------------------------------------

    def list_offsets(self, partitions: Iterable[TopicPartition], spec: str = "latest",
                     missing_ok: bool = False) -> dict[TopicPartition, int]:
        """Each partition's earliest (log start) or latest (high watermark) offset, asked of its leader.
        A moved leader is looked up again, within the request timeout. Other errors raise; with
        ``missing_ok`` a partition that has no offset to give (its topic unknown, no leader now, an error)
        is left out of the answer instead, as kafka-consumer-groups.sh prints "-" for it."""
        when = {"earliest": EARLIEST, "latest": LATEST}.get(spec)
        if when is None:
            raise InvalidRequestError(f"offset spec must be earliest or latest, not {spec!r}")
        wanted = list(dict.fromkeys(partitions))
        out: dict[TopicPartition, int] = {}
        failed: dict[TopicPartition, KafkaError] = {}
        pending = wanted
        deadline = time.monotonic() + self._client.request_timeout_s
        for attempt in itertools.count(1):
            if pending:
                self._client.refresh_metadata(sorted({t for t, _ in pending}))
            retry: dict[TopicPartition, KafkaError] = {}
            by_leader: dict[tuple[str, int], list[TopicPartition]] = {}
            for tp in pending:
                try:
                    by_leader.setdefault(self._client.leader_for(*tp)[1], []).append(tp)
                except KafkaError as e:    # the metadata just fetched has no leader for it
                    (failed if missing_ok or not e.retriable else retry)[tp] = e
            for address, tps in by_leader.items():
                request = kafka_pb2.ListOffsetsRequest(replica_id=-1, partitions=[
                    kafka_pb2.ListOffsetsPartition(topic=t, partition=p, timestamp=when, current_leader_epoch=-1)
                    for t, p in tps])
                try:
                    response = self._client.call(address, "ListOffsets", request,
                                                 detail=f"{spec} offset of " + ", ".join(f"{t}-{p}" for t, p in tps))
                except KafkaError as e:
                    for tp in tps:
                        (retry if e.retriable else failed)[tp] = e
                    continue
                for r in response.partitions:
                    tp = (r.topic, r.partition)
                    if not r.error_code:
                        out[tp] = r.offset
                        continue
                    e = error_for_code(r.error_code, r.error_message)
                    (retry if e.retriable else failed)[tp] = e
            if retry and (attempt >= GROUP_MAX_ATTEMPTS or time.monotonic() >= deadline):
                failed.update(retry)
                retry = {}
            if not retry:
                break
            pending = list(retry)
            time.sleep(backoff_s(attempt, 100, 1000))
        if failed and not missing_ok:
            raise next(iter(failed.values()))
        return {tp: out[tp] for tp in wanted if tp in out}

    # ---- groups (Kafka's Admin: listConsumerGroups, describeConsumerGroups, ...) ---------------------

    def find_coordinator(self, group: str) -> tuple[int, tuple[str, int]]:
        """(broker id, client address) of ``group``'s coordinator, asked of any broker; the offsets topic
        is created by the first FindCoordinator. COORDINATOR_NOT_AVAILABLE (retriable) while there is none."""
        return CoordinatorLookup(self._client, group).find()

    def _group_call(self, group: str, api: str, request, error_of: Callable[[object], KafkaError | None],
                    detail: str):
        """Send ``request`` to ``group``'s coordinator (found anew for each admin request) and return its
        answer; client/coordinator_lookup.py follows the coordinator while it moves or loads."""
        return CoordinatorLookup(self._client, group).call(api, request, error_of, detail)

    def list_groups(self, states: Iterable[str] = ()) -> list[GroupListing]:
        """Every group of the cluster: ListGroups asks each broker for the groups it coordinates (Kafka's
        admin client does the same). A broker that cannot answer yet is asked again (bounded)."""
        deadline = time.monotonic() + self._client.request_timeout_s
        request = kafka_pb2.ListGroupsRequest(states_filter=list(states))
        for attempt in itertools.count(1):
            brokers = [b for b in self._client.refresh_metadata([]).brokers if b.alive]
            found: dict[str, GroupListing] = {}
            failed: KafkaError | None = None
            for b in brokers:
                try:
                    response = self._client.call((b.host, b.port), "ListGroups", request,
                                                 detail=f"groups coordinated by broker {b.broker_id}")
                    if response.error_code:
                        raise error_for_code(response.error_code, response.error_message)
                except KafkaError as e:
                    if not e.retriable:
                        raise
                    failed = e
                    continue
                for g in response.groups:
                    found.setdefault(g.group_id, GroupListing(g.group_id, g.protocol_type, g.group_state))
            if failed is None:
                return sorted(found.values(), key=lambda g: g.group_id)
            if attempt >= GROUP_MAX_ATTEMPTS or time.monotonic() >= deadline:
                raise failed
            time.sleep(backoff_s(attempt, RETRY_BACKOFF_MS, RETRY_BACKOFF_MAX_MS))
        raise AssertionError("unreachable")

    def describe_group(self, group: str) -> GroupDescription:
        """State, protocol and members (client id, host, decoded assignment) of ``group``; a group the
        coordinator does not know is state "Dead" with no members (Kafka's answer)."""
        def error_of(response) -> KafkaError | None:
            g = _only(response.groups, group, lambda g: g.group_id)
            return error_for_code(g.error_code, g.error_message) if g.error_code else None

        response = self._group_call(group, "DescribeGroups", kafka_pb2.DescribeGroupsRequest(groups=[group]),
                                    error_of, f"describe group {group}")
        g = _only(response.groups, group, lambda g: g.group_id)
        members = [MemberDescription(m.member_id, m.group_instance_id if m.HasField("group_instance_id") else None,
                                     m.client_id, m.client_host, _assignment_of(g.protocol_type, m.member_assignment))
                   for m in g.members]
        return GroupDescription(g.group_id, g.group_state, g.protocol_type, g.protocol_data, members,
                                response.answered_by)

    def committed_offsets(self, group: str, partitions: Iterable[TopicPartition] | None = None
                          ) -> dict[TopicPartition, int]:
        """What ``group`` committed: {(topic, partition): offset} for ``partitions`` (None: every partition
        it committed); a partition with nothing committed is left out (Kafka's listConsumerGroupOffsets)."""
        wanted = None if partitions is None else list(partitions)
        if wanted is not None and not wanted:
            return {}
        request = offset_fetch_request(group, wanted)
        error_of = offset_fetch_error

        response = self._group_call(group, "OffsetFetch", request, error_of, f"committed offsets of group {group}")
        return {(t.name, p.partition_index): p.committed_offset for t in response.topics for p in t.partitions
                if p.committed_offset >= 0}

    def commit_offsets(self, group: str, offsets: dict[TopicPartition, int], metadata: str = "") -> None:
        """A standalone commit (generation -1, no member id), as kafka-consumer-groups.sh --reset-offsets
        --execute sends one; the coordinator accepts it only while the group has no members."""
        if not offsets:
            return
        request = offset_commit_request(group, offsets, metadata)
        self._group_call(group, "OffsetCommit", request, first_partition_error,
                         f"commit {len(offsets)} offset(s) for group {group}")

    def delete_group(self, group: str) -> None:
        """Kafka's deleteConsumerGroups for one group: NonEmptyGroupError while it has members,
        GroupIdNotFoundError if the coordinator knows no such group; its offsets go with it."""
        def error_of(response) -> KafkaError | None:
            r = _only(response.results, group, lambda r: r.group_id)
            return error_for_code(r.error_code, r.error_message) if r.error_code else None

        self._group_call(group, "DeleteGroups", kafka_pb2.DeleteGroupsRequest(groups_names=[group]), error_of,
                         f"delete group {group}")

    def delete_offsets(self, group: str, partitions: Iterable[TopicPartition]) -> None:
        """Kafka's deleteConsumerGroupOffsets: GroupSubscribedToTopicError for a topic the group's members
        subscribe to, GroupIdNotFoundError for an unknown group."""
        by_topic: dict[str, list[int]] = {}
        for topic, partition in partitions:
            by_topic.setdefault(topic, []).append(partition)
        request = kafka_pb2.OffsetDeleteRequest(group_id=group, topics=[
            kafka_pb2.OffsetTopicPartitions(name=t, partition_indexes=ps) for t, ps in by_topic.items()])

        def error_of(response) -> KafkaError | None:
            if response.error_code:
                return error_for_code(response.error_code, response.error_message)
            return first_partition_error(response)

        self._group_call(group, "OffsetDelete", request, error_of, f"delete offsets of group {group}")

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _topic_description(t) -> TopicDescription:
    return TopicDescription(t.name, [PartitionDescription(p.partition, p.leader_id, p.leader_epoch,
                                                          list(p.replicas), list(p.isr)) for p in t.partitions],
                            dict(t.configs))


def _only(items, key: str, key_of: Callable[[object], str]):
    """The answer's entry for ``key`` (the request named only it)."""
    for item in items:
        if key_of(item) == key:
            return item
    raise InvalidRequestError(f"the answer has no entry for {key!r}")


__all__ = ["Admin", "TopicDescription", "PartitionDescription", "ClusterDescription", "BrokerDescription",
           "ElectionResult", "KafkaError", "GroupDescription", "GroupListing", "MemberDescription",
           "ConsumerProtocolAssignment", "decode_consumer_assignment", "encode_consumer_assignment"]
