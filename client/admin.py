"""Admin: create, grow, delete, list and describe topics; describe the cluster.

    admin = Admin(bootstrap=":9092")
    admin.create_topic("t", partitions=3, replication_factor=3, config={"min.insync.replicas": "2"})
    admin.create_partitions("t", 6)
    admin.describe_topic("t").partitions[0].leader
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from client.client import KafkaClient, backoff_s
from client.connection import Address
from client.errors import InvalidRequestError, KafkaError, UnknownTopicOrPartitionError, error_for_code
from client.protocol.v1 import kafka_pb2
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


__all__ = ["Admin", "TopicDescription", "PartitionDescription", "ClusterDescription", "BrokerDescription",
           "ElectionResult", "KafkaError"]
