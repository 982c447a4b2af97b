"""Protobuf <-> the request layer's plain messages (broker/api_messages.py), both ways.

The gRPC servicers read requests and write answers with these; the forwarder (forwarding.py)
writes requests and reads answers with the same functions when it sends an admin request on to
the controller. Translation only: no function here decides anything.
"""

from __future__ import annotations

import json

from broker.api_messages import (CoordinatorResult, CreatePartitionsRequest, CreateTopicsRequest,
                                 DeleteTopicsRequest, ElectLeadersRequest, ElectLeadersResponse, FetchPartition,
                                 FetchRequest, InitProducerIdResponse, ListOffsetsPartition, MetadataResponse,
                                 ProducePartition, ProduceRequest, ProduceResponse, ReplicasDescription,
                                 TopicsResponse)
from broker.controller import ElectionOutcome, PartitionsIncrease, TopicOutcome, TopicRequest
from broker.group.coordinator import CommittedOffset, OffsetCommitPartition
from broker.group.group_metadata import (GroupDescription, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
                                         JoinGroupResponse, LeaveGroupResponse, MemberIdentity, SyncGroupRequest,
                                         SyncGroupResponse)
from broker.metadata.journal import MetadataEntry
from broker.partition import FetchResult, ListOffsetsResult
from client.errors import CoordinatorNotAvailableError, KafkaError, LeaderHintInfo, error_for_code
from client.protocol.v1 import common_pb2, controller_pb2, kafka_pb2


def error_fields(error: KafkaError | None) -> dict:
    if error is None:
        return {"error_code": common_pb2.NONE}
    return {"error_code": error.code if error.code is not None else -1, "error_message": error.message}


def error_from(message) -> KafkaError | None:
    """The error a response (or one of its items) carries: None for NONE."""
    if message.error_code == common_pb2.NONE:
        return None
    return error_for_code(message.error_code, message.error_message)


def leader_hint(hint: LeaderHintInfo | None) -> common_pb2.LeaderHint:
    if hint is None:
        return common_pb2.LeaderHint(leader_id=-1, leader_epoch=-1)
    return common_pb2.LeaderHint(leader_id=hint.leader_id, leader_epoch=hint.leader_epoch,
                                 endpoint=common_pb2.BrokerEndpoint(broker_id=hint.leader_id,
                                                                    host=hint.host, port=hint.port))


def _with_hint(message, error: KafkaError | None):
    """Only errors that say the caller's metadata is stale carry the current leader (KIP-951)."""
    if error is not None and error.invalid_metadata:
        message.leader_hint.CopyFrom(leader_hint(error.leader_hint))
    return message


# ---- produce --------------------------------------------------------------------------------------


def produce_request(pb: kafka_pb2.ProduceRequest) -> ProduceRequest:
    return ProduceRequest(pb.acks, pb.timeout_ms, [ProducePartition(p.topic, p.partition, p.records,
                                                                    p.current_leader_epoch) for p in pb.partitions],
                          pb.correlation_id)


def produce_response(r: ProduceResponse, broker_id: int) -> kafka_pb2.ProduceResponse:
    out = [_with_hint(kafka_pb2.PartitionProduceResponse(
        topic=p.topic, partition=p.partition, base_offset=p.base_offset, log_append_time_ms=-1,
        log_start_offset=p.log_start_offset, **error_fields(p.error)), p.error) for p in r.results]
    return kafka_pb2.ProduceResponse(partitions=out, answered_by=broker_id, correlation_id=r.correlation_id)


# ---- fetch ----------------------------------------------------------------------------------------


def fetch_request(pb) -> FetchRequest:
    """Fetch and ReplicaFetch share the message."""
    return FetchRequest(pb.replica_id, pb.max_wait_ms, pb.min_bytes, pb.max_bytes,
                        [FetchPartition(p.topic, p.partition, p.fetch_offset, p.current_leader_epoch,
                                        p.partition_max_bytes, p.last_fetched_epoch) for p in pb.partitions],
                        pb.read_from_replica, incremental=pb.incremental,
                        forgotten=tuple((f.topic, f.partition) for f in pb.forgotten))


def fetch_response(results: list[FetchResult], broker_id: int) -> kafka_pb2.FetchResponse:
    response = kafka_pb2.FetchResponse(answered_by=broker_id)
    for r in results:
        # Built in place: a partition message made apart and then put in the list would copy its
        # records a second time (about 0.8 ms per MB).
        resp = response.partitions.add()
        resp.topic, resp.partition, resp.records = r.topic, r.partition, r.records
        resp.high_watermark, resp.log_start_offset, resp.log_end_offset = (r.high_watermark, r.log_start_offset,
                                                                          r.log_end_offset)
        if r.error is not None:
            fields = error_fields(r.error)
            resp.error_code, resp.error_message = fields["error_code"], fields["error_message"]
        _with_hint(resp, r.error)
        if r.diverging_epoch is not None:
            resp.diverging_epoch.epoch, resp.diverging_epoch.end_offset = r.diverging_epoch
    return response


# ---- list offsets ---------------------------------------------------------------------------------


def list_offsets_request(pb: kafka_pb2.ListOffsetsRequest) -> list[ListOffsetsPartition]:
    return [ListOffsetsPartition(p.topic, p.partition, p.timestamp, p.current_leader_epoch) for p in pb.partitions]


def list_offsets_response(results: list[ListOffsetsResult], broker_id: int) -> kafka_pb2.ListOffsetsResponse:
    out = [_with_hint(kafka_pb2.ListOffsetsPartitionResponse(
        topic=r.topic, partition=r.partition, offset=r.offset, timestamp=r.timestamp, leader_epoch=r.leader_epoch,
        **error_fields(r.error)), r.error) for r in results]
    return kafka_pb2.ListOffsetsResponse(partitions=out, answered_by=broker_id)


# ---- metadata -------------------------------------------------------------------------------------


def metadata_response(r: MetadataResponse, broker_id: int) -> kafka_pb2.MetadataResponse:
    topics = []
    for t in r.topics:
        parts = [kafka_pb2.PartitionMetadata(
            error_code=p.error.code if p.error is not None else common_pb2.NONE, partition=p.partition,
            leader_id=p.leader_id, leader_epoch=p.leader_epoch, replicas=p.replicas, isr=p.isr,
            offline_replicas=p.offline_replicas, partition_epoch=p.partition_epoch) for p in t.partitions]
        if t.error is not None:
            topics.append(kafka_pb2.TopicMetadata(name=t.name, error_code=t.error.code))
        else:
            topics.append(kafka_pb2.TopicMetadata(name=t.name, partitions=parts, configs=t.configs))
    brokers = [kafka_pb2.BrokerMetadata(broker_id=b.broker_id, host=b.host, port=b.port, alive=b.alive)
               for b in r.brokers]
    return kafka_pb2.MetadataResponse(cluster_id=r.cluster_id, controller_id=r.controller_id, brokers=brokers,
                                      topics=topics, answered_by=broker_id)


# ---- admin: read by the servicer, written by the forwarder, and the answers both ways ------------------


def create_topics_request(pb: kafka_pb2.CreateTopicsRequest) -> CreateTopicsRequest:
    return CreateTopicsRequest([TopicRequest(t.name, t.num_partitions, t.replication_factor, dict(t.configs))
                                for t in pb.topics], pb.validate_only, pb.timeout_ms)


def create_topics_request_pb(r: CreateTopicsRequest) -> kafka_pb2.CreateTopicsRequest:
    return kafka_pb2.CreateTopicsRequest(
        topics=[kafka_pb2.CreatableTopic(name=t.name, num_partitions=t.num_partitions,
                                         replication_factor=t.replication_factor, configs=t.configs)
                for t in r.topics], timeout_ms=r.timeout_ms, validate_only=r.validate_only)


def delete_topics_request(pb: kafka_pb2.DeleteTopicsRequest) -> DeleteTopicsRequest:
    return DeleteTopicsRequest(list(pb.topics), pb.timeout_ms)


def delete_topics_request_pb(r: DeleteTopicsRequest) -> kafka_pb2.DeleteTopicsRequest:
    return kafka_pb2.DeleteTopicsRequest(topics=r.names, timeout_ms=r.timeout_ms)


def create_partitions_request(pb: kafka_pb2.CreatePartitionsRequest) -> CreatePartitionsRequest:
    # proto3 cannot tell an empty list from none: no assignments means the controller places them.
    return CreatePartitionsRequest([PartitionsIncrease(t.name, t.count, [list(a.broker_ids) for a in t.assignments]
                                                       or None) for t in pb.topics], pb.validate_only, pb.timeout_ms)


def create_partitions_request_pb(r: CreatePartitionsRequest) -> kafka_pb2.CreatePartitionsRequest:
    return kafka_pb2.CreatePartitionsRequest(
        topics=[kafka_pb2.CreatePartitionsTopic(
            name=t.name, count=t.count,
            assignments=[kafka_pb2.CreatePartitionsAssignment(broker_ids=a) for a in t.assignments or ()])
            for t in r.topics], timeout_ms=r.timeout_ms, validate_only=r.validate_only)


def topics_response_pb(r: TopicsResponse, response_type):
    """CreateTopicsResponse, DeleteTopicsResponse or CreatePartitionsResponse (the same shape)."""
    return response_type(topics=[kafka_pb2.TopicResult(name=o.name, **error_fields(o.error)) for o in r.outcomes])


def topics_response(pb) -> TopicsResponse:
    return TopicsResponse([TopicOutcome(t.name, error_from(t)) for t in pb.topics])


def elect_leaders_request(pb: kafka_pb2.ElectLeadersRequest) -> ElectLeadersRequest:
    targets = [(tp.topic, list(tp.partitions)) for tp in pb.topic_partitions] or None
    return ElectLeadersRequest(pb.election_type, targets, pb.timeout_ms)


def elect_leaders_request_pb(r: ElectLeadersRequest) -> kafka_pb2.ElectLeadersRequest:
    return kafka_pb2.ElectLeadersRequest(
        election_type=r.election_type, timeout_ms=r.timeout_ms,
        topic_partitions=[kafka_pb2.TopicPartitions(topic=t, partitions=ps) for t, ps in r.topic_partitions or ()])


def elect_leaders_response_pb(r: ElectLeadersResponse) -> kafka_pb2.ElectLeadersResponse:
    return kafka_pb2.ElectLeadersResponse(results=[kafka_pb2.PartitionElectionResult(
        topic=o.topic, partition=o.partition, **error_fields(o.error)) for o in r.outcomes], **error_fields(r.error))


def elect_leaders_response(pb: kafka_pb2.ElectLeadersResponse) -> ElectLeadersResponse:
    return ElectLeadersResponse(error_from(pb), [ElectionOutcome(o.topic, o.partition, error_from(o))
                                                 for o in pb.results])


def init_producer_id_request_pb(timeout_ms: int) -> kafka_pb2.InitProducerIdRequest:
    return kafka_pb2.InitProducerIdRequest(timeout_ms=timeout_ms)


def init_producer_id_response_pb(r: InitProducerIdResponse) -> kafka_pb2.InitProducerIdResponse:
    return kafka_pb2.InitProducerIdResponse(producer_id=r.producer_id, producer_epoch=r.producer_epoch,
                                            **error_fields(r.error))


def init_producer_id_response(pb: kafka_pb2.InitProducerIdResponse) -> InitProducerIdResponse:
    return InitProducerIdResponse(error_from(pb), pb.producer_id, pb.producer_epoch)


# ---- groups: the requests the servicer reads, the coordinator's answers it writes ------------------


def find_coordinator_response(results: list[CoordinatorResult], endpoints: dict[int, tuple[str, int]],
                              broker_id: int) -> kafka_pb2.FindCoordinatorResponse:
    """``endpoints``: each broker's client (gRPC) address; a coordinator without one is not available
    to this door (as the Kafka door answers for a broker without a Kafka listener)."""
    out = []
    for r in results:
        where = endpoints.get(r.node_id) if r.error is None else None
        error = r.error if r.error is not None or where is not None else CoordinatorNotAvailableError(
            f"The coordinator of {r.key!r} (broker {r.node_id}) has no client address.")
        out.append(kafka_pb2.Coordinator(key=r.key, node_id=r.node_id if where else -1,
                                         host=where[0] if where else "", port=where[1] if where else -1,
                                         **error_fields(error)))
    return kafka_pb2.FindCoordinatorResponse(coordinators=out, answered_by=broker_id)


def list_groups_response(error: KafkaError | None, groups: list[tuple[str, str, str]], states_filter,
                         broker_id: int) -> kafka_pb2.ListGroupsResponse:
    states = set(states_filter)
    return kafka_pb2.ListGroupsResponse(
        groups=[kafka_pb2.ListedGroup(group_id=g, protocol_type=ptype, group_state=state)
                for g, ptype, state in groups if not states or state in states],
        answered_by=broker_id, **error_fields(error))


def described_group(group_id: str, error: KafkaError | None, d: GroupDescription | None) -> kafka_pb2.DescribedGroup:
    if error is not None or d is None:
        return kafka_pb2.DescribedGroup(group_id=group_id, **error_fields(error))
    members = [kafka_pb2.DescribedGroupMember(member_id=m.member_id, group_instance_id=m.group_instance_id,
                                              client_id=m.client_id, client_host=m.client_host,
                                              member_metadata=m.metadata, member_assignment=m.assignment)
               for m in d.members]
    return kafka_pb2.DescribedGroup(group_id=group_id, group_state=d.state, protocol_type=d.protocol_type,
                                    protocol_data=d.protocol, members=members, **error_fields(None))


def describe_groups_response(described: list[kafka_pb2.DescribedGroup], broker_id: int
                             ) -> kafka_pb2.DescribeGroupsResponse:
    return kafka_pb2.DescribeGroupsResponse(groups=described, answered_by=broker_id)


def _optional(message, field: str) -> str | None:
    """A proto3 ``optional string``: None when unset (Kafka's null)."""
    return getattr(message, field) if message.HasField(field) else None


def offset_fetch_request(pb: kafka_pb2.OffsetFetchRequest) -> tuple[str, list[tuple[str, int]] | None]:
    """(group id, the partitions asked for; None: every partition the group committed)."""
    wanted = [(t.name, p) for t in pb.topics for p in t.partition_indexes]
    return pb.group_id, (wanted if pb.topics else None)


def offset_fetch_response(error: KafkaError | None, committed: list[CommittedOffset], broker_id: int
                          ) -> kafka_pb2.OffsetFetchResponse:
    topics: dict[str, kafka_pb2.OffsetFetchTopic] = {}
    for c in committed:
        topic = topics.setdefault(c.topic, kafka_pb2.OffsetFetchTopic(name=c.topic))
        topic.partitions.append(kafka_pb2.OffsetFetchPartition(
            partition_index=c.partition, committed_offset=c.offset, committed_leader_epoch=c.leader_epoch,
            metadata=c.metadata, **error_fields(c.error)))
    return kafka_pb2.OffsetFetchResponse(topics=list(topics.values()), answered_by=broker_id, **error_fields(error))


def offset_commit_request(pb: kafka_pb2.OffsetCommitRequest
                          ) -> tuple[str, str, int, str | None, list[OffsetCommitPartition]]:
    """(group id, member id, generation id, group instance id, offsets): KafkaApis.offset_commit's arguments."""
    offsets = [OffsetCommitPartition(t.name, p.partition_index, p.committed_offset, p.committed_leader_epoch,
                                     _optional(p, "committed_metadata"))
               for t in pb.topics for p in t.partitions]
    return pb.group_id, pb.member_id, pb.generation_id, _optional(pb, "group_instance_id"), offsets


def _topic_results(results: list[tuple[str, int, KafkaError | None]]) -> list[kafka_pb2.OffsetTopicResults]:
    """Per-partition outcomes grouped by topic, in the order they came (Kafka's response shape)."""
    topics: dict[str, kafka_pb2.OffsetTopicResults] = {}
    for topic, partition, error in results:
        topics.setdefault(topic, kafka_pb2.OffsetTopicResults(name=topic)).partitions.append(
            kafka_pb2.OffsetPartitionResult(partition_index=partition, **error_fields(error)))
    return list(topics.values())


def offset_commit_response(results: list[tuple[str, int, KafkaError | None]], broker_id: int
                           ) -> kafka_pb2.OffsetCommitResponse:
    return kafka_pb2.OffsetCommitResponse(topics=_topic_results(results), answered_by=broker_id)


def offset_delete_request(pb: kafka_pb2.OffsetDeleteRequest) -> tuple[str, list[tuple[str, int]]]:
    return pb.group_id, [(t.name, p) for t in pb.topics for p in t.partition_indexes]


def offset_delete_response(error: KafkaError | None, results: list[tuple[str, int, KafkaError | None]],
                           broker_id: int) -> kafka_pb2.OffsetDeleteResponse:
    return kafka_pb2.OffsetDeleteResponse(topics=_topic_results(results), answered_by=broker_id,
                                          **error_fields(error))


def delete_groups_response(results: list[tuple[str, KafkaError | None]], broker_id: int
                           ) -> kafka_pb2.DeleteGroupsResponse:
    return kafka_pb2.DeleteGroupsResponse(
        results=[kafka_pb2.DeletableGroupResult(group_id=g, **error_fields(e)) for g, e in results],
        answered_by=broker_id)


# ---- group membership: JoinGroup / SyncGroup / Heartbeat / LeaveGroup ------------------------------


def client_host(peer: str) -> str:
    """gRPC's peer ("ipv4:127.0.0.1:5555", "ipv6:[::1]:5555") as Kafka shows a member's host: "/127.0.0.1"."""
    address = peer.split(":", 1)[1] if ":" in peer else peer
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return "/" + host.strip("[]")


def join_group_request(pb: kafka_pb2.JoinGroupRequest, host: str) -> tuple[str, JoinGroupRequest]:
    # Like Kafka's JoinGroup v4+: a first join ("" member id) is answered MEMBER_ID_REQUIRED.
    return pb.group_id, JoinGroupRequest(pb.member_id, pb.client_id, host, pb.session_timeout_ms,
                                         pb.rebalance_timeout_ms, pb.protocol_type,
                                         tuple((p.name, bytes(p.metadata)) for p in pb.protocols),
                                         _optional(pb, "group_instance_id"), require_known_member_id=True)


def join_group_response(r: JoinGroupResponse, broker_id: int) -> kafka_pb2.JoinGroupResponse:
    return kafka_pb2.JoinGroupResponse(
        generation_id=r.generation_id, protocol_type=r.protocol_type, protocol_name=r.protocol_name,
        leader=r.leader, member_id=r.member_id, answered_by=broker_id, **error_fields(r.error),
        members=[kafka_pb2.JoinGroupMember(member_id=m.member_id, group_instance_id=m.group_instance_id,
                                           metadata=m.metadata) for m in r.members])


def sync_group_request(pb: kafka_pb2.SyncGroupRequest) -> tuple[str, SyncGroupRequest]:
    return pb.group_id, SyncGroupRequest(pb.member_id, pb.generation_id,
                                         tuple((a.member_id, bytes(a.assignment)) for a in pb.assignments),
                                         _optional(pb, "group_instance_id"), _optional(pb, "protocol_type"),
                                         _optional(pb, "protocol_name"))


def sync_group_response(r: SyncGroupResponse, broker_id: int) -> kafka_pb2.SyncGroupResponse:
    return kafka_pb2.SyncGroupResponse(protocol_type=r.protocol_type, protocol_name=r.protocol_name,
                                       assignment=r.assignment, answered_by=broker_id, **error_fields(r.error))


def heartbeat_request(pb: kafka_pb2.HeartbeatRequest) -> tuple[str, HeartbeatRequest]:
    return pb.group_id, HeartbeatRequest(pb.member_id, pb.generation_id, _optional(pb, "group_instance_id"))


def heartbeat_response(r: HeartbeatResponse, broker_id: int) -> kafka_pb2.HeartbeatResponse:
    return kafka_pb2.HeartbeatResponse(answered_by=broker_id, **error_fields(r.error))


def leave_group_request(pb: kafka_pb2.LeaveGroupRequest) -> tuple[str, list[MemberIdentity]]:
    return pb.group_id, [MemberIdentity(m.member_id, _optional(m, "group_instance_id")) for m in pb.members]


def leave_group_response(r: LeaveGroupResponse, broker_id: int) -> kafka_pb2.LeaveGroupResponse:
    return kafka_pb2.LeaveGroupResponse(
        answered_by=broker_id, **error_fields(r.error),
        members=[kafka_pb2.MemberResponse(member_id=m.member_id, group_instance_id=m.group_instance_id,
                                          **error_fields(m.error)) for m in r.members])


# ---- the metadata log --------------------------------------------------------------------------------


def metadata_log_entry(e: MetadataEntry, first_offset: int, broker_id: int) -> kafka_pb2.MetadataLogEntry:
    return kafka_pb2.MetadataLogEntry(offset=e.offset, term=e.term, committed_ms=e.committed_ms,
                                      records=[json.dumps(r, sort_keys=False) for r in e.records],
                                      applied=e.applied, reason=e.reason, answered_by=broker_id,
                                      first_offset=first_offset)


def describe_replicas_response(d: ReplicasDescription) -> kafka_pb2.DescribeReplicasResponse:
    return kafka_pb2.DescribeReplicasResponse(
        broker_id=d.broker_id, raft_term=d.raft_term, controller_id=d.controller_id, metadata_offset=d.metadata_offset,
        replicas=[kafka_pb2.LocalReplicaState(
            topic=r.topic, partition=r.partition, leader_id=r.leader_id, leader_epoch=r.leader_epoch,
            is_leader=r.is_leader, isr=r.isr, log_start_offset=r.log_start_offset, log_end_offset=r.log_end_offset,
            high_watermark=r.high_watermark, size_bytes=r.size_bytes,
            followers=[kafka_pb2.FollowerReplicaState(broker_id=f.broker_id, log_end_offset=f.log_end_offset, lag=f.lag,
                                                      caught_up_ms_ago=f.caught_up_ms_ago, in_isr=f.in_isr)
                       for f in r.followers]) for r in d.replicas])


def alter_partition_response(changes: list, results: list) -> controller_pb2.AlterPartitionResponse:
    """One PartitionIsrResult per change, in order: the registration after it, or its error."""
    def one(c, r) -> controller_pb2.PartitionIsrResult:
        if isinstance(r, KafkaError):
            return controller_pb2.PartitionIsrResult(topic=c.topic, partition=c.partition, **error_fields(r))
        return controller_pb2.PartitionIsrResult(topic=c.topic, partition=c.partition, leader_id=r.leader,
                                                 leader_epoch=r.leader_epoch, partition_epoch=r.partition_epoch,
                                                 isr=r.isr)
    return controller_pb2.AlterPartitionResponse(partitions=[one(c, r) for c, r in zip(changes, results)])
