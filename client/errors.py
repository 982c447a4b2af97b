"""Kafka's errors as exception classes, one per Kafka error name.

Every class carries the two flags a retry loop needs, and nothing else is read
when deciding what to do with a failure:

- ``retriable``: the same request may succeed later (after a backoff);
- ``invalid_metadata``: the client's idea of who leads what is stale, so it
  should refresh metadata (or follow the leader hint) before retrying.

The codes and flags follow Kafka's ``org.apache.kafka.common.protocol.Errors``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LeaderHintInfo:
    """The KIP-951 hint that comes with NOT_LEADER_OR_FOLLOWER: who leads now."""

    leader_id: int
    leader_epoch: int
    host: str
    port: int


class KafkaError(Exception):
    """Base of every raftka client error."""

    code: int | None = None
    name = "UNKNOWN_ERROR"
    retriable = False
    invalid_metadata = False
    description = "An unexpected error."

    def __init__(self, message: str | None = None, *, leader_hint: LeaderHintInfo | None = None):
        super().__init__(message or self.description)
        self.message = message or self.description
        self.leader_hint = leader_hint

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


# ---- errors with a Kafka error code (sent by brokers) ----------------------------


class UnknownServerError(KafkaError):
    code, name = -1, "UNKNOWN_SERVER_ERROR"
    description = "The server experienced an unexpected error when processing the request."


class OffsetOutOfRangeError(KafkaError):
    code, name = 1, "OFFSET_OUT_OF_RANGE"
    description = "The requested offset is not within the range of offsets maintained by the server."


class CorruptMessageError(KafkaError):
    code, name, retriable = 2, "CORRUPT_MESSAGE", True
    description = "This message has failed its CRC checksum, exceeds the valid size, or is otherwise corrupt."


class UnknownTopicOrPartitionError(KafkaError):
    code, name, retriable, invalid_metadata = 3, "UNKNOWN_TOPIC_OR_PARTITION", True, True
    description = "This server does not host this topic-partition."


class InvalidFetchSizeError(KafkaError):
    code, name = 4, "INVALID_FETCH_SIZE"
    description = "The requested fetch size is invalid."


class LeaderNotAvailableError(KafkaError):
    code, name, retriable, invalid_metadata = 5, "LEADER_NOT_AVAILABLE", True, True
    description = "There is no leader for this topic-partition as we are in the middle of a leadership election."


class NotLeaderOrFollowerError(KafkaError):
    code, name, retriable, invalid_metadata = 6, "NOT_LEADER_OR_FOLLOWER", True, True
    description = "For requests intended only for the leader, this error indicates that the broker is not the current leader."


class RequestTimedOutError(KafkaError):
    code, name, retriable = 7, "REQUEST_TIMED_OUT", True
    description = "The request timed out."


class BrokerNotAvailableError(KafkaError):
    code, name = 8, "BROKER_NOT_AVAILABLE"
    description = "The broker is not available."


class ReplicaNotAvailableError(KafkaError):
    code, name, retriable, invalid_metadata = 9, "REPLICA_NOT_AVAILABLE", True, True
    description = "The replica is not available for the requested topic-partition."


class RecordTooLargeError(KafkaError):
    code, name = 10, "RECORD_TOO_LARGE"
    description = "The request included a message larger than the max message size the server will accept."


class NetworkError(KafkaError):
    code, name, retriable, invalid_metadata = 13, "NETWORK_EXCEPTION", True, True
    description = "The server disconnected before a response was received."


class OffsetMetadataTooLargeError(KafkaError):
    code, name = 12, "OFFSET_METADATA_TOO_LARGE"
    description = "The metadata field of the offset request was too large."


class CoordinatorLoadInProgressError(KafkaError):
    code, name, retriable = 14, "COORDINATOR_LOAD_IN_PROGRESS", True
    description = "The coordinator is loading and hence can't process requests."


class NonEmptyGroupError(KafkaError):
    code, name = 68, "NON_EMPTY_GROUP"
    description = "The group is not empty."


class GroupIdNotFoundError(KafkaError):
    code, name = 69, "GROUP_ID_NOT_FOUND"
    description = "The group id does not exist."


class GroupSubscribedToTopicError(KafkaError):
    code, name = 86, "GROUP_SUBSCRIBED_TO_TOPIC"
    description = "The consumer group is actively subscribed to the topic."


class InvalidGroupIdError(KafkaError):
    code, name = 24, "INVALID_GROUP_ID"
    description = "The configured groupId is invalid."


class CoordinatorNotAvailableError(KafkaError):
    code, name, retriable = 15, "COORDINATOR_NOT_AVAILABLE", True
    description = "The coordinator is not available."


class NotCoordinatorError(KafkaError):
    code, name, retriable = 16, "NOT_COORDINATOR", True
    description = "This is not the correct coordinator."


class InvalidTopicError(KafkaError):
    code, name = 17, "INVALID_TOPIC_EXCEPTION"
    description = "The request attempted to perform an operation on an invalid topic."


class RecordListTooLargeError(KafkaError):
    code, name = 18, "RECORD_LIST_TOO_LARGE"
    description = "The request included message batch larger than the configured segment size on the server."


class NotEnoughReplicasError(KafkaError):
    code, name, retriable = 19, "NOT_ENOUGH_REPLICAS", True
    description = "Messages are rejected since there are fewer in-sync replicas than required."


class NotEnoughReplicasAfterAppendError(KafkaError):
    code, name, retriable = 20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", True
    description = "Messages are written to the log, but to fewer in-sync replicas than required."


class InvalidRequiredAcksError(KafkaError):
    code, name = 21, "INVALID_REQUIRED_ACKS"
    description = "Produce request specified an invalid value for required acks."


class IllegalGenerationError(KafkaError):
    code, name = 22, "ILLEGAL_GENERATION"
    description = "Specified group generation id is not valid."


class InconsistentGroupProtocolError(KafkaError):
    code, name = 23, "INCONSISTENT_GROUP_PROTOCOL"
    description = "The group member's supported protocols are incompatible with those of existing members."


class UnknownMemberIdError(KafkaError):
    code, name = 25, "UNKNOWN_MEMBER_ID"
    description = "The coordinator is not aware of this member."


class InvalidSessionTimeoutError(KafkaError):
    code, name = 26, "INVALID_SESSION_TIMEOUT"
    description = ("The session timeout is not within the range allowed by the broker "
                   "(as configured by group.min.session.timeout.ms and group.max.session.timeout.ms).")


class RebalanceInProgressError(KafkaError):
    code, name = 27, "REBALANCE_IN_PROGRESS"
    description = "The group is rebalancing, so a rejoin is needed."


class InvalidTimestampError(KafkaError):
    code, name = 32, "INVALID_TIMESTAMP"
    description = "The timestamp of the message is out of acceptable range."


class TopicAlreadyExistsError(KafkaError):
    code, name = 36, "TOPIC_ALREADY_EXISTS"
    description = "Topic with this name already exists."


class InvalidPartitionsError(KafkaError):
    code, name = 37, "INVALID_PARTITIONS"
    description = "Number of partitions is below 1."


class InvalidReplicationFactorError(KafkaError):
    code, name = 38, "INVALID_REPLICATION_FACTOR"
    description = "Replication factor is below 1 or larger than the number of available brokers."


class InvalidReplicaAssignmentError(KafkaError):
    code, name = 39, "INVALID_REPLICA_ASSIGNMENT"
    description = "Replica assignment is invalid."


class InvalidConfigError(KafkaError):
    code, name = 40, "INVALID_CONFIG"
    description = "Configuration is invalid."


class NotControllerError(KafkaError):
    code, name, retriable = 41, "NOT_CONTROLLER", True
    description = "This is not the correct controller for this cluster."


class InvalidRequestError(KafkaError):
    code, name = 42, "INVALID_REQUEST"
    description = "This most likely occurs because of a request being malformed by the client library."


class PolicyViolationError(KafkaError):
    code, name = 44, "POLICY_VIOLATION"
    description = "Request parameters do not satisfy the configured policy."


class OutOfOrderSequenceNumberError(KafkaError):
    code, name = 45, "OUT_OF_ORDER_SEQUENCE_NUMBER"
    description = "The broker received an out of order sequence number."


class DuplicateSequenceNumberError(KafkaError):
    code, name = 46, "DUPLICATE_SEQUENCE_NUMBER"
    description = "The broker received a duplicate sequence number."


class InvalidProducerEpochError(KafkaError):
    code, name = 47, "INVALID_PRODUCER_EPOCH"
    description = "Producer attempted to produce with an old epoch."


class KafkaStorageError(KafkaError):
    code, name, retriable, invalid_metadata = 56, "KAFKA_STORAGE_ERROR", True, True
    description = "Disk error when trying to access log file on the disk."


class UnknownProducerIdError(KafkaError):
    code, name = 59, "UNKNOWN_PRODUCER_ID"
    description = "This exception is raised by the broker if it could not locate the producer metadata."


class FencedLeaderEpochError(KafkaError):
    code, name, retriable, invalid_metadata = 74, "FENCED_LEADER_EPOCH", True, True
    description = "The leader epoch in the request is older than the epoch on the broker."


class UnknownLeaderEpochError(KafkaError):
    code, name, retriable = 75, "UNKNOWN_LEADER_EPOCH", True
    description = "The leader epoch in the request is newer than the epoch on the broker."


class StaleBrokerEpochError(KafkaError):
    code, name = 77, "STALE_BROKER_EPOCH"
    description = "Broker epoch has changed."


class OffsetNotAvailableError(KafkaError):
    code, name, retriable = 78, "OFFSET_NOT_AVAILABLE", True
    description = "The leader high watermark has not caught up from a recent leader election."


class MemberIdRequiredError(KafkaError):
    code, name = 79, "MEMBER_ID_REQUIRED"
    description = "The group member needs to have a valid member id before actually entering a consumer group."


class PreferredLeaderNotAvailableError(KafkaError):
    code, name, retriable = 80, "PREFERRED_LEADER_NOT_AVAILABLE", True
    description = "The preferred leader was not available."


class GroupMaxSizeReachedError(KafkaError):
    code, name = 81, "GROUP_MAX_SIZE_REACHED"
    description = "The consumer group has reached its max size."


class FencedInstanceIdError(KafkaError):
    code, name = 82, "FENCED_INSTANCE_ID"
    description = ("The broker rejected this static consumer since another consumer with the same "
                   "group.instance.id has registered with a different member.id.")


class EligibleLeadersNotAvailableError(KafkaError):
    code, name, retriable = 83, "ELIGIBLE_LEADERS_NOT_AVAILABLE", True
    description = "Eligible topic partition leaders are not available."


class ElectionNotNeededError(KafkaError):
    code, name = 84, "ELECTION_NOT_NEEDED"
    description = "Leader election not needed for topic partition."


class InvalidRecordError(KafkaError):
    code, name = 87, "INVALID_RECORD"
    description = "This record has failed the validation on broker and hence will be rejected."


class InvalidUpdateVersionError(KafkaError):
    code, name = 95, "INVALID_UPDATE_VERSION"
    description = "The given update version was invalid."


class InconsistentClusterIdError(KafkaError):
    code, name = 104, "INCONSISTENT_CLUSTER_ID"
    description = "The clusterId in the request does not match that found on the server."


class UnsupportedCompressionTypeError(KafkaError):
    code, name = 76, "UNSUPPORTED_COMPRESSION_TYPE"
    description = "The requesting client does not support the compression type of given partition."


class IneligibleReplicaError(KafkaError):
    code, name = 107, "INELIGIBLE_REPLICA"
    description = "The new ISR contains at least one ineligible replica."


# ---- client-side errors (no Kafka code) ------------------------------------------


class KafkaTimeoutError(KafkaError):
    name, retriable = "KafkaTimeoutError", True
    description = "The operation did not complete in time."


class KafkaConnectionError(KafkaError):
    name, retriable, invalid_metadata = "KafkaConnectionError", True, True
    description = "The connection to the broker failed."


class BrokerNotReadyError(KafkaConnectionError):
    """gRPC UNAVAILABLE from a broker that is up but has not caught up with the metadata log since it
    started (broker/readiness.py): its answers would be stale, so it gives none. Ask another broker."""

    name = "BrokerNotReadyError"
    description = "The broker is starting and has not caught up with the cluster metadata yet."


# The first words of the gRPC details a not-yet-caught-up broker sends with UNAVAILABLE.
NOT_SERVING_PREFIX = "not serving yet"


class BrokerBusyError(KafkaError):
    """gRPC RESOURCE_EXHAUSTED: a broker limit (grpc.max.concurrent.streams, grpc.max.concurrent.rpcs)
    refused the call; the same call may go through once others end."""

    name, retriable = "BrokerBusyError", True
    description = "The broker refused the call: too many calls in progress."


class NoBrokersAvailable(KafkaError):
    name, retriable, invalid_metadata = "NoBrokersAvailable", True, True
    description = "No bootstrap broker could be reached."


class CommitFailedError(KafkaError):
    # Kafka's CommitFailedException: a client-side verdict, not an error code on the wire.
    name = "CommitFailedError"
    description = ("The commit cannot be completed: the group rebalanced and the partitions may now belong to "
                   "another member (its generation or member id is no longer the group's).")


class ProducerClosedError(KafkaError):
    name = "ProducerClosedError"
    description = "The producer is closed."


def _by_code() -> dict[int, type[KafkaError]]:
    table: dict[int, type[KafkaError]] = {}
    pending = list(KafkaError.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.code is not None:
            assert cls.code not in table, f"two classes for code {cls.code}"
            table[cls.code] = cls
    return table


ERRORS_BY_CODE: dict[int, type[KafkaError]] = _by_code()


def error_for_code(code: int, message: str = "", leader_hint: LeaderHintInfo | None = None) -> KafkaError:
    """The exception for a Kafka error code (UnknownServerError for codes we do not know)."""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        return UnknownServerError(f"unknown error code {code}: {message}".rstrip(": "))
    return cls(message or None, leader_hint=leader_hint)
