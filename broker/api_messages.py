"""The request layer's messages: the requests KafkaApis serves and its answers, as plain values.

Every front door (the gRPC servicers today, a Kafka-protocol listener next) translates its wire
format to these and back; none of them decides anything. Per-partition and per-topic outcomes are
values (an ``error`` that is a client.errors.KafkaError or None; a NOT_LEADER_OR_FOLLOWER error
carries its leader hint). A request that is malformed as a whole raises MalformedRequestError,
which each door expresses its way (gRPC: INVALID_ARGUMENT).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.controller import ElectionOutcome, PartitionsIncrease, TopicOutcome, TopicRequest
from broker.partition import FetchResult, ListOffsetsResult, LocalReplicaState, ProduceResult
from broker.request_errors import MalformedRequestError
from client.errors import KafkaError

__all__ = ["BrokerMetadata", "CreatePartitionsRequest", "CreateTopicsRequest", "DeleteTopicsRequest",
           "ElectLeadersRequest", "ElectLeadersResponse", "FetchPartition", "FetchRequest", "FetchResult",
           "InitProducerIdResponse", "ListOffsetsPartition", "ListOffsetsResult", "MalformedRequestError",
           "MetadataResponse", "PartitionMetadata", "PartitionsIncrease", "ProducePartition", "ProduceRequest",
           "LogDirDescription", "ProduceResponse", "ProduceResult", "ReplicasDescription", "TopicMetadata", "TopicOutcome", "TopicRequest", "TopicsResponse"]

CONSUMER_REPLICA_ID = -1


# ---- produce --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProducePartition:
    topic: str
    partition: int
    records: bytes                  # one record batch (v2)
    current_leader_epoch: int = -1  # -1: the producer does not know it


@dataclass(frozen=True)
class ProduceRequest:
    acks: int
    timeout_ms: int                 # 0: the broker's default
    partitions: list[ProducePartition]
    correlation_id: int = 0         # echoed: a stream's answers are matched to its requests by it
    zstd_allowed: bool = True       # False for Kafka's Produce v3-6 (KIP-110)


@dataclass(frozen=True)
class ProduceResponse:
    results: list[ProduceResult]
    correlation_id: int = 0


# ---- fetch ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchPartition:
    topic: str
    partition: int
    fetch_offset: int
    current_leader_epoch: int = -1
    partition_max_bytes: int = 0    # 0: max.partition.fetch.bytes' default
    last_fetched_epoch: int = -1    # followers: the epoch of the last batch they hold


@dataclass(frozen=True)
class FetchRequest:
    replica_id: int                 # -1 for a consumer, the follower's broker id for a follower
    max_wait_ms: int
    min_bytes: int
    max_bytes: int                  # 0: the broker's fetch.max.bytes
    partitions: list[FetchPartition]
    read_from_replica: bool = False  # KIP-392: a consumer may read a follower, up to its HW
    client_rack: str | None = None   # KIP-392: the consumer's client.rack; the leader may send it elsewhere
    # A follower's fetch stream is a fetch session (KIP-227, broker/fetch_session.py): after its first
    # request, ``incremental`` ones name only the partitions whose position changed, and the dropped ones.
    incremental: bool = False
    forgotten: tuple[tuple[str, int], ...] = ()


# ---- list offsets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListOffsetsPartition:
    topic: str
    partition: int
    timestamp: int                  # -2 earliest, -1 latest, else the first offset at or after it
    current_leader_epoch: int = -1


# ---- offsets for leader epochs (KIP-320: a client checks for truncation after a leader change) ----


@dataclass(frozen=True)
class OffsetForLeaderEpochPartition:
    topic: str
    partition: int
    leader_epoch: int               # the epoch of the last record the client has
    current_leader_epoch: int = -1  # the epoch the client believes current (fencing)


# ---- metadata -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerMetadata:
    broker_id: int
    host: str
    port: int
    alive: bool


@dataclass(frozen=True)
class PartitionMetadata:
    partition: int
    error: KafkaError | None
    leader_id: int
    leader_epoch: int
    partition_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...]


@dataclass(frozen=True)
class TopicMetadata:
    name: str
    error: KafkaError | None = None
    partitions: list[PartitionMetadata] = field(default_factory=list)
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetadataResponse:
    cluster_id: str
    controller_id: int
    brokers: list[BrokerMetadata]
    topics: list[TopicMetadata]


# ---- admin (answered by the controller) ------------------------------------------------------------


@dataclass(frozen=True)
class CreateTopicsRequest:
    topics: list[TopicRequest]
    validate_only: bool = False
    timeout_ms: int = 0


@dataclass(frozen=True)
class DeleteTopicsRequest:
    names: list[str]
    timeout_ms: int = 0


@dataclass(frozen=True)
class CreatePartitionsRequest:
    topics: list[PartitionsIncrease]
    validate_only: bool = False
    timeout_ms: int = 0


@dataclass(frozen=True)
class TopicsResponse:
    """CreateTopics', DeleteTopics' and CreatePartitions' answer: one outcome per topic asked about, in order."""
    outcomes: list[TopicOutcome]


@dataclass(frozen=True)
class ElectLeadersRequest:
    election_type: int                                 # 0 PREFERRED, 1 UNCLEAN
    topic_partitions: list[tuple[str, list[int]]] | None  # None: every partition; [] partitions: all of the topic
    timeout_ms: int = 0


@dataclass(frozen=True)
class ElectLeadersResponse:
    error: KafkaError | None = None                    # the whole request's (not the controller...)
    outcomes: list[ElectionOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class InitProducerIdResponse:
    error: KafkaError | None = None
    producer_id: int = -1
    producer_epoch: int = -1


# ---- describe configs ------------------------------------------------------------------------------

TOPIC_RESOURCE, BROKER_RESOURCE = 2, 4     # Kafka's ConfigResource.Type ids


@dataclass(frozen=True)
class ConfigResource:
    resource_type: int
    resource_name: str
    keys: list[str] | None = None              # None: every config


@dataclass(frozen=True)
class ConfigsResult:
    resource_type: int
    resource_name: str
    error: KafkaError | None = None
    entries: list = field(default_factory=list)   # describe_configs.ConfigEntry


# ---- group coordination ----------------------------------------------------------------------------

GROUP_KEY_TYPE = 0        # FindCoordinator key_type: 0 a group, 1 a transactional id


@dataclass(frozen=True)
class CoordinatorResult:
    key: str
    error: KafkaError | None = None
    node_id: int = -1          # the coordinator's broker id; each door adds its own address for it


@dataclass(frozen=True)
class ReplicasDescription:
    """DescribeReplicas: the replicas one broker holds, as it sees them, with its view of the quorum."""
    broker_id: int
    raft_term: int
    controller_id: int
    metadata_offset: int
    replicas: list[LocalReplicaState]     # in topic-partition order


@dataclass(frozen=True)
class LogDirDescription:
    """DescribeLogDirs (Kafka's): this broker's one log dir and the replicas in it."""
    log_dir: str
    error: KafkaError | None          # KAFKA_STORAGE_ERROR once the dir went offline
    total_bytes: int                  # of the file system holding it (-1: unknown)
    usable_bytes: int
    replicas: list[LocalReplicaState]
