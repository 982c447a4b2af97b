"""Admin: create, delete, list and describe topics; describe the cluster.

    admin = Admin(bootstrap=":9092")
    admin.create_topic("t", partitions=3, replication_factor=3, config={"min.insync.replicas": "2"})
    admin.describe_topic("t").partitions[0].leader
"""

from __future__ import annotations

from dataclasses import dataclass, field

from client.client import KafkaClient
from client.connection import Address
from client.errors import KafkaError, UnknownTopicOrPartitionError, error_for_code
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

    def create_topic(self, name: str, partitions: int = -1, replication_factor: int = -1,
                     config: dict[str, str] | None = None, validate_only: bool = False) -> None:
        """Raises TopicAlreadyExistsError, InvalidTopicError, InvalidPartitionsError, ... on refusal.

        partitions / replication_factor -1 take the cluster defaults (num.partitions,
        default.replication.factor), as in Kafka.
        """
        request = kafka_pb2.CreateTopicsRequest(validate_only=validate_only, topics=[kafka_pb2.CreatableTopic(
            name=name, num_partitions=partitions, replication_factor=replication_factor,
            configs={str(k): str(v) for k, v in (config or {}).items()})])
        response = self._client.call(self._controller_address(), "CreateTopics", request,
                                     detail=f"create {name} ({partitions} partitions, RF {replication_factor})")
        self._raise_for(response.topics)

    def delete_topic(self, name: str) -> None:
        response = self._client.call(self._controller_address(), "DeleteTopics",
                                     kafka_pb2.DeleteTopicsRequest(topics=[name]), detail=f"delete {name}")
        self._raise_for(response.topics)

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
           "KafkaError"]
