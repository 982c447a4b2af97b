"""gRPC servicers: translate protobuf to calls on the controller and replica manager, and back.

No decisions here. Per-partition outcomes travel as Kafka error codes in the
response; gRPC status codes are kept for malformed requests (INVALID_ARGUMENT).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from typing import Callable, Iterator

import grpc
import structlog

from broker.controller import Controller, HeartbeatReply, TopicOutcome, TopicRequest
from broker.metadata.image import MetadataImage
from broker.metadata.quorum import MetadataQuorum
from broker.replica_manager import (CONSUMER_REPLICA_ID, FetchRequestPartition, FetchResult, ProduceResult,
                                    ReplicaManager)
from client import record_batch
from client.connection import Connections
from client.errors import CorruptMessageError, KafkaError, LeaderHintInfo, NotControllerError, RequestTimedOutError
from client.protocol.v1 import (common_pb2, controller_pb2, controller_pb2_grpc, kafka_pb2, kafka_pb2_grpc,
                                replication_pb2_grpc)

log = structlog.get_logger(__name__)

DEFAULT_ADMIN_TIMEOUT_MS = 15000
# Set on a request one broker forwards to the controller: the receiver must not forward it again.
FORWARDED_HEADER = "raftka-forwarded-by"
DEFAULT_PARTITION_FETCH_BYTES = 1048576  # max.partition.fetch.bytes
MAX_PARTITIONS_PER_REQUEST = 10000
DEFAULT_PRODUCE_TIMEOUT_MS = 30000
# Produce requests of one stream appended but not yet answered; beyond this the reader waits and
# gRPC's flow control pushes back on the client.
MAX_PENDING_PRODUCES = 64


DROP_PRODUCE_ANSWERS_ENV = "RAFTKA_TEST_DROP_PRODUCE_ANSWERS"


class FaultBudget:
    """A test-only fault injected a fixed number of times (0 unless the environment asks for it)."""

    def __init__(self, count: int):
        self._left = count
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, name: str) -> "FaultBudget":
        try:
            return cls(max(int(os.environ.get(name, "0")), 0))
        except ValueError:
            return cls(0)

    def take(self) -> bool:
        if self._left <= 0:
            return False
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True


class StreamSlots:
    """A per-server cap on the calls that hold a gRPC worker thread for long: produce streams and
    long-polling fetches on the client server, replica fetch streams and long-polling replica fetches
    on the inter-broker server. One more is refused (RESOURCE_EXHAUSTED) at once, so idle streams can
    never take the threads that Metadata, heartbeats and other unary calls need."""

    def __init__(self, limit: int, broker_id: int, setting: str = "grpc.max.concurrent.streams"):
        self.limit = limit
        self._broker_id = broker_id
        self._setting = setting   # named in the refusal, so the operator knows which cap was hit
        self._lock = threading.Lock()
        self._holders: set[int] = set()   # id() of the contexts holding a slot

    @contextlib.contextmanager
    def hold(self, context: grpc.ServicerContext, what: str) -> Iterator[None]:
        """Hold one slot for ``context`` (nothing more if it holds one already: a fetch stream's
        fetches), or abort the call."""
        key = id(context)
        with self._lock:
            if key in self._holders:
                taken = False
            elif len(self._holders) >= self.limit:
                taken = None
            else:
                self._holders.add(key)
                taken = True
        if taken is None:
            log.warning("stream_refused", call=what, limit=self.limit, setting=self._setting)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{what} refused: broker {self._broker_id} already serves {self.limit} streams and "
                          f"long polls ({self._setting}); retry later")
        try:
            yield
        finally:
            if taken:
                with self._lock:
                    self._holders.discard(key)


def _produce_entries(request) -> list[tuple[str, int, bytes, int]]:
    return [(p.topic, p.partition, p.records, p.current_leader_epoch) for p in request.partitions]


def _error_fields(error: KafkaError | None) -> dict:
    if error is None:
        return {"error_code": common_pb2.NONE}
    return {"error_code": error.code if error.code is not None else -1, "error_message": error.message}


def _topic_results(outcomes: list[TopicOutcome]) -> list[kafka_pb2.TopicResult]:
    return [kafka_pb2.TopicResult(name=o.name, **_error_fields(o.error)) for o in outcomes]


def _hint(hint: LeaderHintInfo | None) -> common_pb2.LeaderHint | None:
    if hint is None:
        return common_pb2.LeaderHint(leader_id=-1, leader_epoch=-1)
    return common_pb2.LeaderHint(leader_id=hint.leader_id, leader_epoch=hint.leader_epoch,
                                 endpoint=common_pb2.BrokerEndpoint(broker_id=hint.leader_id,
                                                                    host=hint.host, port=hint.port))


def _wants_hint(error: KafkaError | None) -> bool:
    return error is not None and error.invalid_metadata


class KafkaServicer(kafka_pb2_grpc.KafkaServicer):
    def __init__(self, broker_id: int, controller: Controller, quorum: MetadataQuorum, replicas: ReplicaManager,
                 broker_address: Callable[[int], tuple[str, int]],
                 wait_published: Callable[[Callable[[MetadataImage], bool], float], bool],
                 max_concurrent_streams: int, fetch_max_bytes: int):
        self._broker_id = broker_id
        self.streams = StreamSlots(max_concurrent_streams, broker_id)
        self._fetch_max_bytes = fetch_max_bytes
        self._wait_published = wait_published
        self._controller = controller
        self._quorum = quorum
        self._replicas = replicas
        self._broker_address = broker_address
        self._connections = Connections()
        self._drop_produce_answers = FaultBudget.from_env(DROP_PRODUCE_ANSWERS_ENV)
        self._ending_streams = threading.Event()

    def end_streams(self) -> None:
        """Stopping: each produce stream answers what it appended and ends (its producer reconnects,
        to the new leaders), instead of holding the server's graceful stop for its whole grace."""
        self._ending_streams.set()

    def close(self) -> None:
        self._connections.close()

    def serving(self, context: grpc.ServicerContext) -> bool:
        """A long poll or stream goes on while its caller is there and the broker is not stopping."""
        return context.is_active() and not self._ending_streams.is_set()

    def _check_size(self, n: int, context: grpc.ServicerContext) -> None:
        if n > MAX_PARTITIONS_PER_REQUEST:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{n} partitions in one request; the limit is {MAX_PARTITIONS_PER_REQUEST}")

    # ---- metadata and admin -------------------------------------------------------

    def Metadata(self, request, context):
        image = self._quorum.image
        names = list(request.topics) or sorted(image.topics)
        self._check_size(len(names), context)
        topics = []
        for name in names:
            topic = image.topics.get(name)
            if topic is None:
                topics.append(kafka_pb2.TopicMetadata(name=name, error_code=common_pb2.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            parts = []
            for p, reg in enumerate(topic.partitions):
                offline = [r for r in reg.replicas if not image.is_live(r)]
                parts.append(kafka_pb2.PartitionMetadata(
                    error_code=common_pb2.NONE if reg.leader >= 0 else common_pb2.LEADER_NOT_AVAILABLE,
                    partition=p, leader_id=reg.leader, leader_epoch=reg.leader_epoch,
                    replicas=reg.replicas, isr=reg.isr, offline_replicas=offline,
                    partition_epoch=reg.partition_epoch))
            topics.append(kafka_pb2.TopicMetadata(name=name, partitions=parts, configs=dict(topic.configs)))
        brokers = [kafka_pb2.BrokerMetadata(broker_id=b.broker_id, host=b.host, port=b.port, alive=not b.fenced)
                   for b in sorted(image.brokers.values(), key=lambda b: b.broker_id)]
        return kafka_pb2.MetadataResponse(cluster_id=image.cluster_id, controller_id=self._quorum.controller_id(),
                                          brokers=brokers, topics=topics, answered_by=self._broker_id)

    # ---- admin: answered by the controller, forwarded there by any other broker -----

    def _via_controller(self, request, context, method: str, handle: Callable[[], object],
                        refuse: Callable[[KafkaError], object], settled: Callable[[MetadataImage], bool]):
        """Run ``handle`` on the active controller: here, or forwarded to it (once) until the deadline.

        After success, wait (briefly) until this broker has acted on the change, so
        a Metadata, Produce or Fetch right after, on this broker, sees it.
        """
        forwarded = any(k == FORWARDED_HEADER for k, _ in context.invocation_metadata())
        timeout_s = (request.timeout_ms or DEFAULT_ADMIN_TIMEOUT_MS) / 1000
        remaining = context.time_remaining()
        deadline = time.monotonic() + (min(timeout_s, remaining) if remaining is not None else timeout_s)
        while True:
            if self._controller.is_active():
                response = handle()
                self._wait_published(settled, min(2.0, max(deadline - time.monotonic(), 0.0)))
                return response
            if forwarded:
                return refuse(NotControllerError(f"Broker {self._broker_id} is not the active controller."))
            controller_id = self._quorum.controller_id()
            left = deadline - time.monotonic()
            if controller_id >= 0 and controller_id != self._broker_id and left > 0:
                response = self._forward(controller_id, method, request, left)
                if response is not None and not _refused_as_not_controller(response):
                    self._wait_published(settled, min(2.0, max(deadline - time.monotonic(), 0.0)))
                    return response
            if time.monotonic() >= deadline:
                return refuse(RequestTimedOutError(
                    f"No active controller answered within {timeout_s:.0f} s (is a majority of brokers up?)."))
            time.sleep(0.05)

    def _forward(self, controller_id: int, method: str, request, timeout_s: float):
        stub = self._connections.kafka(self._broker_address(controller_id))
        try:
            return getattr(stub, method)(request, timeout=timeout_s,
                                         metadata=[(FORWARDED_HEADER, str(self._broker_id))])
        except grpc.RpcError as e:
            log.debug("forward_failed", method=method, controller=controller_id, code=str(e.code()))
            return None

    def CreateTopics(self, request, context):
        self._check_size(len(request.topics), context)

        def handle():
            try:
                outcomes = self._controller.create_topics(
                    [TopicRequest(t.name, t.num_partitions, t.replication_factor, dict(t.configs))
                     for t in request.topics], validate_only=request.validate_only)
            except KafkaError as e:
                return refuse(e)
            return kafka_pb2.CreateTopicsResponse(topics=_topic_results(outcomes))

        def refuse(error):
            return kafka_pb2.CreateTopicsResponse(topics=[kafka_pb2.TopicResult(name=t.name, **_error_fields(error))
                                                          for t in request.topics])

        names = [t.name for t in request.topics]
        return self._via_controller(request, context, "CreateTopics", handle, refuse,
                                    lambda image: request.validate_only or all(n in image.topics for n in names))

    def DeleteTopics(self, request, context):
        self._check_size(len(request.topics), context)

        def handle():
            try:
                outcomes = self._controller.delete_topics(list(request.topics))
            except KafkaError as e:
                return refuse(e)
            return kafka_pb2.DeleteTopicsResponse(topics=_topic_results(outcomes))

        def refuse(error):
            return kafka_pb2.DeleteTopicsResponse(topics=[kafka_pb2.TopicResult(name=n, **_error_fields(error))
                                                          for n in request.topics])

        return self._via_controller(request, context, "DeleteTopics", handle, refuse,
                                    lambda image: not any(n in image.topics for n in request.topics))

    def ElectLeaders(self, request, context):
        if request.election_type not in (kafka_pb2.PREFERRED, kafka_pb2.UNCLEAN):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"election_type {request.election_type} is neither 0 (PREFERRED) nor 1 (UNCLEAN)")
        self._check_size(sum(max(len(tp.partitions), 1) for tp in request.topic_partitions), context)

        def handle():
            wanted = self._election_targets(request)
            try:
                outcomes = self._controller.elect_leaders(request.election_type, wanted)
            except KafkaError as e:
                return refuse(e)
            return kafka_pb2.ElectLeadersResponse(results=[kafka_pb2.PartitionElectionResult(
                topic=o.topic, partition=o.partition, **_error_fields(o.error)) for o in outcomes])

        def refuse(error):
            return kafka_pb2.ElectLeadersResponse(**_error_fields(error))

        return self._via_controller(request, context, "ElectLeaders", handle, refuse, lambda image: True)

    def InitProducerId(self, request, context):
        def handle():
            try:
                producer_id = self._controller.allocate_producer_ids(self._broker_id, 1)
            except KafkaError as e:
                return refuse(e)
            log.info("producer_id_allocated", producer_id=producer_id)
            return kafka_pb2.InitProducerIdResponse(producer_id=producer_id, producer_epoch=0)

        def refuse(error):
            return kafka_pb2.InitProducerIdResponse(producer_id=-1, producer_epoch=-1, **_error_fields(error))

        return self._via_controller(request, context, "InitProducerId", handle, refuse, lambda image: True)

    def _election_targets(self, request) -> list[tuple[str, int]] | None:
        if not request.topic_partitions:
            return None
        image = self._quorum.image
        wanted = []
        for tp in request.topic_partitions:
            topic = image.topics.get(tp.topic)
            partitions = list(tp.partitions) or (range(len(topic.partitions)) if topic else [0])
            wanted += [(tp.topic, p) for p in partitions]
        return wanted

    # ---- data path ----------------------------------------------------------------

    def Produce(self, request, context):
        self._check_size(len(request.partitions), context)
        deadline = time.monotonic() + max(request.timeout_ms or DEFAULT_PRODUCE_TIMEOUT_MS, 0) / 1000
        results = self._replicas.await_replication(request.acks, self._append(request), deadline)
        return self._produce_response(request, results, context)

    def _append(self, request) -> list[ProduceResult]:
        """Append each batch whose records frame its body; the others answer CORRUPT_MESSAGE."""
        entries = _produce_entries(request)
        bad = {}
        for i, (topic, partition, records, _) in enumerate(entries):
            problem = record_batch.record_framing_error(records)
            if problem is not None:
                bad[i] = ProduceResult(topic, partition, CorruptMessageError(problem))
        if not bad:
            return self._replicas.append_to_leader(request.acks, entries)
        appended = iter(self._replicas.append_to_leader(request.acks,
                                                        [e for i, e in enumerate(entries) if i not in bad]))
        return [bad[i] if i in bad else next(appended) for i in range(len(entries))]

    def ProduceStream(self, request_iterator, context):
        """Pipelined produce: a reader thread appends each request as it arrives, in stream order;
        this generator answers them in the same order, each once its acks are satisfied."""
        with self.streams.hold(context, "ProduceStream"):
            yield from self._produce_stream(request_iterator, context)

    def _produce_stream(self, request_iterator, context):
        appended: queue.Queue = queue.Queue(maxsize=MAX_PENDING_PRODUCES)

        def put(item) -> bool:
            while context.is_active():
                try:
                    appended.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            try:
                for request in request_iterator:
                    if self._ending_streams.is_set():
                        return   # not appended: the producer retries it elsewhere
                    if len(request.partitions) > MAX_PARTITIONS_PER_REQUEST:
                        put((request, None, 0.0))  # the answering side aborts the stream with the reason
                        return
                    deadline = time.monotonic() + (request.timeout_ms or DEFAULT_PRODUCE_TIMEOUT_MS) / 1000
                    if not put((request, self._append(request), deadline)):
                        return
            except Exception:  # noqa: BLE001 - the client cancelled or the stream broke: nothing more to read
                pass
            finally:
                put(None)

        threading.Thread(target=read, name="produce-stream", daemon=True).start()
        while True:
            try:
                item = appended.get(timeout=0.5)
            except queue.Empty:
                if not context.is_active() or self._ending_streams.is_set():
                    return
                continue
            if item is None:
                return
            request, results, deadline = item
            if results is None:
                self._check_size(len(request.partitions), context)   # aborts: too many partitions
            yield self._produce_response(request, self._replicas.await_replication(request.acks, results, deadline),
                                         context)

    def _produce_response(self, request, results, context) -> kafka_pb2.ProduceResponse:
        out = []
        for r in results:
            resp = kafka_pb2.PartitionProduceResponse(topic=r.topic, partition=r.partition, base_offset=r.base_offset,
                                                      log_append_time_ms=-1, log_start_offset=r.log_start_offset,
                                                      **_error_fields(r.error))
            if _wants_hint(r.error):
                resp.leader_hint.CopyFrom(_hint(self._replicas.leader_hint(r.topic, r.partition)))
            out.append(resp)
        if self._drop_produce_answers.take() and any(r.error is None for r in results):
            # Test-only fault: the batch is stored (and replicated) but the answer is lost on the way
            # (on a stream, the whole stream breaks, like a dropped connection).
            log.warning("produce_answer_dropped_for_test")
            context.abort(grpc.StatusCode.UNAVAILABLE, "test fault: produce answer dropped after the append")
        return kafka_pb2.ProduceResponse(partitions=out, answered_by=self._broker_id,
                                         correlation_id=request.correlation_id)

    def Fetch(self, request, context):
        if request.replica_id != CONSUMER_REPLICA_ID:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "Fetch is for consumers (replica_id -1); followers use Replication.ReplicaFetch")
        return self._fetch(request, context)

    def _fetch(self, request, context, streams: StreamSlots | None = None):
        """``streams``: the slots a long poll holds (the inter-broker server's, for a follower)."""
        self._check_size(len(request.partitions), context)
        if request.max_bytes < 0 or request.min_bytes < 0 or any(p.partition_max_bytes < 0 for p in request.partitions):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_bytes, min_bytes and partition_max_bytes must be >= 0")
        cap = self._fetch_max_bytes   # 0 asks for no limit: the broker's own limit then
        parts = [FetchRequestPartition(p.topic, p.partition, p.fetch_offset, p.current_leader_epoch,
                                       min(p.partition_max_bytes or DEFAULT_PARTITION_FETCH_BYTES, cap),
                                       p.last_fetched_epoch if request.replica_id >= 0 else -1)
                 for p in request.partitions]
        wait_ms = max(request.max_wait_ms, 0)
        remaining = context.time_remaining()
        if remaining is not None:  # answer (empty) before the caller's deadline rather than after it
            wait_ms = min(wait_ms, int(max(0.0, remaining - 0.05) * 1000))
        long_poll = wait_ms > 0 and request.min_bytes > 0   # it may hold its thread for wait_ms
        slots = self.streams if streams is None else streams
        with slots.hold(context, "a long-polling Fetch") if long_poll else contextlib.nullcontext():
            results = self._replicas.fetch(request.replica_id, wait_ms, request.min_bytes,
                                           min(request.max_bytes or cap, cap), parts, request.read_from_replica,
                                           lambda: self.serving(context))
        response = kafka_pb2.FetchResponse(answered_by=self._broker_id)
        for r in results:
            # Built in place: a partition message made apart and then put in the list would copy
            # its records a second time (about 0.8 ms per MB).
            self._fill_fetch_partition(response.partitions.add(), r)
        return response

    def _fill_fetch_partition(self, resp: kafka_pb2.FetchPartitionResponse, r: FetchResult) -> None:
        resp.topic, resp.partition, resp.records = r.topic, r.partition, r.records
        resp.high_watermark, resp.log_start_offset, resp.log_end_offset = (r.high_watermark, r.log_start_offset,
                                                                          r.log_end_offset)
        if r.error is not None:
            fields = _error_fields(r.error)
            resp.error_code, resp.error_message = fields["error_code"], fields["error_message"]
        if _wants_hint(r.error):
            resp.leader_hint.CopyFrom(_hint(self._replicas.leader_hint(r.topic, r.partition)))
        if r.diverging_epoch is not None:
            resp.diverging_epoch.epoch, resp.diverging_epoch.end_offset = r.diverging_epoch

    def ListOffsets(self, request, context):
        self._check_size(len(request.partitions), context)
        out = []
        for p in request.partitions:
            r = self._replicas.list_offset(p.topic, p.partition, p.timestamp, p.current_leader_epoch,
                                           request.read_from_replica)
            resp = kafka_pb2.ListOffsetsPartitionResponse(topic=r.topic, partition=r.partition, offset=r.offset,
                                                          timestamp=r.timestamp, leader_epoch=r.leader_epoch,
                                                          **_error_fields(r.error))
            if _wants_hint(r.error):
                resp.leader_hint.CopyFrom(_hint(self._replicas.leader_hint(r.topic, r.partition)))
            out.append(resp)
        return kafka_pb2.ListOffsetsResponse(partitions=out, answered_by=self._broker_id)


class ReplicationServicer(replication_pb2_grpc.ReplicationServicer):
    """The broker-to-broker API, on the inter-broker server: followers pull the leader's log here.

    Its fetch streams and long polls hold ``streams``, the inter-broker server's own slots, never the
    client API's: producers filling grpc.max.concurrent.streams cannot refuse a follower."""

    def __init__(self, kafka: KafkaServicer, streams: StreamSlots):
        self._kafka = kafka
        self.streams = streams

    def ReplicaFetch(self, request, context):
        _check_replica_id(request, context)
        return self._kafka._fetch(request, context, self.streams)

    def ReplicaFetchStream(self, request_iterator, context):
        """Lock step: each request is answered before the follower writes the next one."""
        with self.streams.hold(context, "ReplicaFetchStream"):
            for request in request_iterator:
                _check_replica_id(request, context)
                yield self._kafka._fetch(request, context, self.streams)
                if not self._kafka.serving(context):
                    return   # stopping: the follower reconnects, to the new leader


def _check_replica_id(request, context) -> None:
    if request.replica_id < 0:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ReplicaFetch needs the follower's broker id as replica_id")


def _refused_as_not_controller(response) -> bool:
    """A forwarded answer that says the target was not (or no longer) the controller: try again."""
    if getattr(response, "error_code", common_pb2.NONE) == common_pb2.NOT_CONTROLLER:
        return True
    results = list(getattr(response, "topics", []))
    return bool(results) and all(r.error_code == common_pb2.NOT_CONTROLLER for r in results)


class ControllerServicer(controller_pb2_grpc.ControllerServicer):
    """Broker registration and heartbeats; only the active controller accepts them."""

    def __init__(self, controller: Controller):
        self._controller = controller

    def BrokerRegistration(self, request, context):
        try:
            epoch = self._controller.register_broker(request.broker_id, request.cluster_id, request.incarnation_id,
                                                     request.host, request.port)
        except KafkaError as e:
            return controller_pb2.BrokerRegistrationResponse(**_error_fields(e))
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
                                                      should_shut_down=r.should_shut_down, **_error_fields(error))

    def AlterPartition(self, request, context):
        if len(set(request.new_isr)) != len(request.new_isr):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"new_isr {list(request.new_isr)} names a broker twice")
        try:
            reg = self._controller.alter_partition(request.broker_id, request.broker_epoch, request.topic,
                                                   request.topic_id, request.partition, request.leader_epoch,
                                                   request.partition_epoch, tuple(request.new_isr))
        except KafkaError as e:
            return controller_pb2.AlterPartitionResponse(**_error_fields(e))
        return controller_pb2.AlterPartitionResponse(leader_id=reg.leader, leader_epoch=reg.leader_epoch,
                                                     partition_epoch=reg.partition_epoch, isr=reg.isr)
