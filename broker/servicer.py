"""The gRPC front door: protobuf in, one call on the request layer, protobuf out.

No decisions here. KafkaServicer and ReplicationServicer call KafkaApis (kafka_apis.py), which
answers every client and follower request; ControllerServicer calls the Controller. Translation
lives in grpc_translate.py. The only thing this module adds is how gRPC says a request was refused
as a whole: a malformed request is INVALID_ARGUMENT, a call over a listener's stream cap is
RESOURCE_EXHAUSTED, a produce answer a test asked to lose is UNAVAILABLE.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import grpc

from broker import grpc_translate as wire
from broker.admission import SlotsExhaustedError
from broker.controller import Controller, HeartbeatReply, IsrChange
from broker.fault_injection import AnswerDroppedForTest
from broker.forwarding import FORWARDED_HEADER
from broker.kafka_apis import KafkaApis
from broker.produce_pipeline import ProducePipeline
from broker.request_errors import MalformedRequestError
from client.errors import KafkaError
from client.protocol.v1 import controller_pb2, controller_pb2_grpc, kafka_pb2, kafka_pb2_grpc, replication_pb2_grpc

_STATUS = {MalformedRequestError: grpc.StatusCode.INVALID_ARGUMENT,
           SlotsExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
           AnswerDroppedForTest: grpc.StatusCode.UNAVAILABLE}


@contextlib.contextmanager
def _refusals_as_status(context: grpc.ServicerContext) -> Iterator[None]:
    try:
        yield
    except (MalformedRequestError, SlotsExhaustedError, AnswerDroppedForTest) as e:
        context.abort(_STATUS[type(e)], str(e))


def _forwarded(context: grpc.ServicerContext) -> bool:
    return any(k == FORWARDED_HEADER for k, _ in context.invocation_metadata())


class KafkaServicer(kafka_pb2_grpc.KafkaServicer):
    def __init__(self, apis: KafkaApis):
        self._apis = apis

    def Metadata(self, request, context):
        with _refusals_as_status(context):
            return wire.metadata_response(self._apis.metadata(list(request.topics) or None), self._apis.broker_id)

    def CreateTopics(self, request, context):
        with _refusals_as_status(context):
            answer = self._apis.create_topics(wire.create_topics_request(request), context.time_remaining(),
                                              _forwarded(context))
            return wire.topics_response_pb(answer, kafka_pb2.CreateTopicsResponse)

    def CreatePartitions(self, request, context):
        with _refusals_as_status(context):
            answer = self._apis.create_partitions(wire.create_partitions_request(request), context.time_remaining(),
                                                  _forwarded(context))
            return wire.topics_response_pb(answer, kafka_pb2.CreatePartitionsResponse)

    def DeleteTopics(self, request, context):
        with _refusals_as_status(context):
            answer = self._apis.delete_topics(wire.delete_topics_request(request), context.time_remaining(),
                                              _forwarded(context))
            return wire.topics_response_pb(answer, kafka_pb2.DeleteTopicsResponse)

    def ElectLeaders(self, request, context):
        with _refusals_as_status(context):
            answer = self._apis.elect_leaders(wire.elect_leaders_request(request), context.time_remaining(),
                                              _forwarded(context))
            return wire.elect_leaders_response_pb(answer)

    def InitProducerId(self, request, context):
        with _refusals_as_status(context):
            answer = self._apis.init_producer_id(request.timeout_ms, context.time_remaining(), _forwarded(context))
            return wire.init_producer_id_response_pb(answer)

    def Produce(self, request, context):
        with _refusals_as_status(context):
            return wire.produce_response(self._apis.produce(wire.produce_request(request)), self._apis.broker_id)

    def ProduceStream(self, request_iterator, context):
        pipeline = ProducePipeline(self._apis, context, context.is_active)
        with _refusals_as_status(context):
            for answer in pipeline.run(wire.produce_request(r) for r in request_iterator):
                yield wire.produce_response(answer, self._apis.broker_id)

    def Fetch(self, request, context):
        with _refusals_as_status(context):
            results = self._apis.fetch(wire.fetch_request(request), context, time_left_s=context.time_remaining(),
                                       caller_waiting=context.is_active)
            return wire.fetch_response(results, self._apis.broker_id)

    def ListOffsets(self, request, context):
        with _refusals_as_status(context):
            results = self._apis.list_offsets(wire.list_offsets_request(request), request.read_from_replica)
            return wire.list_offsets_response(results, self._apis.broker_id)

    # ---- groups: every answer is the coordinator's (KafkaApis -> broker/group/) ------------------

    def FindCoordinator(self, request, context):
        with _refusals_as_status(context):
            results = self._apis.find_coordinator(request.key_type, list(request.keys))
            # This door's address for a broker is the one its Metadata answers give (the client port).
            endpoints = {b.broker_id: (b.host, b.port) for b in self._apis.metadata([]).brokers}
            return wire.find_coordinator_response(results, endpoints, self._apis.broker_id)

    def ListGroups(self, request, context):
        with _refusals_as_status(context):
            return wire.list_groups_response(*self._apis.list_groups(), request.states_filter, self._apis.broker_id)

    def DescribeGroups(self, request, context):
        with _refusals_as_status(context):
            described = [wire.described_group(*d) for d in self._apis.describe_groups(list(request.groups))]
            return wire.describe_groups_response(described, self._apis.broker_id)

    def OffsetFetch(self, request, context):
        with _refusals_as_status(context):
            error, committed = self._apis.offset_fetch(*wire.offset_fetch_request(request))
            return wire.offset_fetch_response(error, committed, self._apis.broker_id)

    def OffsetCommit(self, request, context):
        with _refusals_as_status(context):
            results = self._apis.offset_commit(*wire.offset_commit_request(request))
            return wire.offset_commit_response(results, self._apis.broker_id)

    def DeleteGroups(self, request, context):
        with _refusals_as_status(context):
            results = self._apis.delete_groups(list(request.groups_names))
            return wire.delete_groups_response(results, self._apis.broker_id)

    def OffsetDelete(self, request, context):
        with _refusals_as_status(context):
            error, results = self._apis.offset_delete(*wire.offset_delete_request(request))
            return wire.offset_delete_response(error, results, self._apis.broker_id)

    def JoinGroup(self, request, context):
        with _refusals_as_status(context):
            group_id, join = wire.join_group_request(request, wire.client_host(context.peer()))
            return wire.join_group_response(self._apis.join_group(group_id, join, call=context), self._apis.broker_id)

    def SyncGroup(self, request, context):
        with _refusals_as_status(context):
            return wire.sync_group_response(self._apis.sync_group(*wire.sync_group_request(request), call=context),
                                            self._apis.broker_id)

    def Heartbeat(self, request, context):
        with _refusals_as_status(context):
            return wire.heartbeat_response(self._apis.heartbeat(*wire.heartbeat_request(request)), self._apis.broker_id)

    def MetadataLog(self, request, context):
        with _refusals_as_status(context):
            for first, entries in self._apis.metadata_log(request.from_offset, request.follow, context,
                                                          context.is_active):
                for e in entries:
                    yield wire.metadata_log_entry(e, first, self._apis.broker_id)

    def DescribeReplicas(self, request, context):
        with _refusals_as_status(context):
            return wire.describe_replicas_response(self._apis.describe_replicas(list(request.topics)))

    def LeaveGroup(self, request, context):
        with _refusals_as_status(context):
            return wire.leave_group_response(self._apis.leave_group(*wire.leave_group_request(request)),
                                             self._apis.broker_id)


class ReplicationServicer(replication_pb2_grpc.ReplicationServicer):
    """The broker-to-broker API, on the inter-broker server: followers pull the leader's log here.
    Their streams and long polls hold the inter-broker listener's own slots (KafkaApis.follower_slots)."""

    def __init__(self, apis: KafkaApis):
        self._apis = apis

    def ReplicaFetch(self, request, context):
        with _refusals_as_status(context):
            results = self._apis.fetch(wire.fetch_request(request), context, follower=True,
                                       time_left_s=context.time_remaining(), caller_waiting=context.is_active)
            return wire.fetch_response(results, self._apis.broker_id)

    def ReplicaFetchStream(self, request_iterator, context):
        with _refusals_as_status(context):
            for results in self._apis.replica_fetch_stream((wire.fetch_request(r) for r in request_iterator),
                                                           context, context.is_active, context.time_remaining):
                yield wire.fetch_response(results, self._apis.broker_id)


class ControllerServicer(controller_pb2_grpc.ControllerServicer):
    """Broker registration, heartbeats and AlterPartition; only the active controller accepts them."""

    def __init__(self, controller: Controller):
        self._controller = controller

    def BrokerRegistration(self, request, context):
        try:
            epoch = self._controller.register_broker(request.broker_id, request.cluster_id, request.incarnation_id,
                                                     request.host, request.port)
        except KafkaError as e:
            return controller_pb2.BrokerRegistrationResponse(**wire.error_fields(e))
        return controller_pb2.BrokerRegistrationResponse(broker_epoch=epoch)

    def BrokerHeartbeat(self, request, context):
        error: KafkaError | None = None
        try:
            r = self._controller.heartbeat(request.broker_id, request.broker_epoch, request.metadata_offset,
                                           request.want_shut_down)
        except KafkaError as e:
            # A refused heartbeat still answers HeartbeatReply's defaults (fenced, not caught up), as it
            # always has on the wire.
            r, error = HeartbeatReply(), e
        return controller_pb2.BrokerHeartbeatResponse(is_caught_up=r.is_caught_up, is_fenced=r.is_fenced,
                                                      should_shut_down=r.should_shut_down, **wire.error_fields(error))

    def AlterPartition(self, request, context):
        with _refusals_as_status(context):
            changes = [IsrChange(p.topic, p.topic_id, p.partition, p.leader_epoch, p.partition_epoch, tuple(p.new_isr))
                       for p in request.partitions]
            try:
                results = self._controller.alter_partition(request.broker_id, request.broker_epoch, changes)
            except KafkaError as e:
                return controller_pb2.AlterPartitionResponse(**wire.error_fields(e))
            return wire.alter_partition_response(changes, results)
