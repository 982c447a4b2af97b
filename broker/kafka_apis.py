"""The request layer (Kafka's KafkaApis): every client and follower request, apart from any transport.

Each front door translates its wire format into broker/api_messages.py's plain requests, calls one
method here and translates the answer back; the gRPC servicers (servicer.py) are one such door.
What a request may be, which partitions answer which error, the leader hint a stale client gets,
which admin request goes to the controller: all of it is decided here or below, never in a door.

Below: ReplicaManager routes produce / fetch / list offsets to the hosted partitions
(broker/partition.py), the ControllerForwarder takes admin requests to the active controller
(forwarding.py), StreamSlots admit long-held calls (admission.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import structlog

from broker import metrics
from broker.admission import StreamSlots
from broker.config import BrokerSettings
from broker.describe_configs import broker_configs, topic_configs
from broker.group.coordinator import GroupCoordinator, OffsetCommitPartition
from broker.group.group_metadata import (HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
                                         LeaveGroupResponse, MemberIdentity, SyncGroupRequest, SyncGroupResponse)
from broker.group.offsets_records import partition_for
from broker.group.offsets_topic import OFFSETS_TOPIC, is_internal, offsets_topic_request
from broker.api_messages import (BROKER_RESOURCE, CONSUMER_REPLICA_ID, GROUP_KEY_TYPE, TOPIC_RESOURCE, BrokerMetadata,
                                 ConfigResource, ConfigsResult, CoordinatorResult, CreateTopicsRequest, DeleteTopicsRequest, ElectLeadersRequest,
                                 ElectLeadersResponse, FetchRequest, InitProducerIdResponse, ListOffsetsPartition,
                                 MalformedRequestError, MetadataResponse, OffsetForLeaderEpochPartition, PartitionMetadata, ProduceRequest,
                                 LogDirDescription, ProduceResponse, ReplicasDescription, TopicMetadata,
                                 TopicsResponse)
from broker.controller import Controller, TopicOutcome, TopicRequest
from broker.delayed_fetch import Waker
from broker.fetch_session import FetchSession
from broker.fault_injection import AnswerDroppedForTest, FaultBudget
from broker.forwarding import AdminCall, ControllerForwarder
from broker.api_messages import CreatePartitionsRequest
from broker.metadata.topic_rules import MAX_PARTITIONS_PER_TOPIC, MAX_TOPIC_NAME_LENGTH
from broker.metadata.image import MetadataImage
from broker.metadata.journal import MetadataEntry
from broker.metadata.quorum import MetadataQuorum
from broker.produce_validation import zstd_refused
from broker.partition import EpochEndOffset, FetchRequestPartition, FetchResult, ListOffsetsResult, ProduceResult
from broker.replica_manager import ReplicaManager
from client.errors import (CoordinatorNotAvailableError, ElectionNotNeededError, InvalidRequestError, InvalidTopicError, KafkaError, KafkaStorageError, LeaderNotAvailableError,
                           TopicAlreadyExistsError, UnknownTopicOrPartitionError)

log = structlog.get_logger(__name__)

DEFAULT_ADMIN_TIMEOUT_MS = 15000
DEFAULT_PARTITION_FETCH_BYTES = 1048576  # max.partition.fetch.bytes
DEFAULT_PRODUCE_TIMEOUT_MS = 30000
MAX_PARTITIONS_PER_REQUEST = 10000
METADATA_LOG_CHUNK = 500              # metadata log entries per read of the journal
# A long poll answers (empty) this long before its caller's own deadline rather than after it.
DEADLINE_MARGIN_S = 0.05


@dataclass(frozen=True)
class PendingProduce:
    """A produce appended to the leaders' logs, its acks not yet awaited."""
    request: ProduceRequest
    results: list[ProduceResult]
    deadline: float                 # time.monotonic() by which acks=all gives up (REQUEST_TIMED_OUT)
    started: float = 0.0            # time.monotonic() at its arrival: the request time metric


class KafkaApis:
    def __init__(self, broker_id: int, controller: Controller, quorum: MetadataQuorum, replica_manager: ReplicaManager,
                 forwarder: ControllerForwarder, client_slots: StreamSlots, follower_slots: StreamSlots,
                 fetch_max_bytes: int, drop_produce_answers: FaultBudget | None = None,
                 auto_create_topics: bool = True, settings: BrokerSettings | None = None, rack: str | None = None,
                 group_coordinator: GroupCoordinator | None = None):
        self.broker_id = broker_id
        self._controller = controller
        self._quorum = quorum
        self._replica_manager = replica_manager
        self._forwarder = forwarder
        self.client_slots = client_slots        # produce streams and consumers' long polls
        self.follower_slots = follower_slots    # replica fetch streams and followers' long polls
        self._fetch_max_bytes = fetch_max_bytes
        self._drop_produce_answers = drop_produce_answers or FaultBudget(0)
        self._auto_create_topics = auto_create_topics   # auto.create.topics.enable
        self._settings = settings or BrokerSettings()    # what DescribeConfigs shows of this broker
        self._rack = rack
        self.groups = group_coordinator      # the groups this broker coordinates (classic protocol)
        # Set while stopping: streams answer what they appended and end, long polls answer now.
        self.stopping = threading.Event()

    # ---- produce: append now, answer once acknowledged ------------------------------------------

    def produce(self, request: ProduceRequest) -> ProduceResponse:
        return self.complete_produce(self.append_produce(request))

    def append_produce(self, request: ProduceRequest) -> PendingProduce:
        """The first half: check and append each batch to its leader's log, now. A stream calls this
        for its requests in arrival order, so a producer's pipelined batches land in its order (Kafka:
        one connection's requests are handled one at a time)."""
        _check_count(len(request.partitions))
        started = time.monotonic()
        deadline = started + max(request.timeout_ms or DEFAULT_PRODUCE_TIMEOUT_MS, 0) / 1000
        refused = {i: e for i, p in enumerate(request.partitions) if (e := _produce_refusal(request, p)) is not None}
        entries = [(p.topic, p.partition, p.records, p.current_leader_epoch)
                   for i, p in enumerate(request.partitions) if i not in refused]
        appended = iter(self._replica_manager.append_to_leader(request.acks, entries))
        results = [ProduceResult(p.topic, p.partition, refused[i]) if i in refused else next(appended)
                   for i, p in enumerate(request.partitions)]
        return PendingProduce(request, results, deadline, started)

    def complete_produce(self, pending: PendingProduce) -> ProduceResponse:
        """The second half: with acks=all, wait until every in-sync replica has each batch."""
        results = self._replica_manager.await_replication(pending.request.acks, pending.results, pending.deadline)
        if any(r.error is None for r in results) and self._drop_produce_answers.take():
            log.warning("produce_answer_dropped_for_test")
            raise AnswerDroppedForTest("test fault: produce answer dropped after the append")
        metrics.of(self.broker_id).produce_answered(pending.request.acks, pending.started, results)
        return ProduceResponse([self._hinted(r) for r in results], pending.request.correlation_id)

    # ---- fetch --------------------------------------------------------------------------------

    def fetch(self, request: FetchRequest, call: object, *, follower: bool = False, time_left_s: float | None = None,
              caller_waiting: Callable[[], bool] = lambda: True, slots: StreamSlots | None = None) -> list[FetchResult]:
        """A consumer's fetch (``follower`` False) or a follower's (True: where its position is
        recorded, by the Partition it reads). A long poll holds a slot of its listener for ``call``
        (``slots``, else the client or follower listener's) and ends early when ``caller_waiting``
        turns False or the broker stops."""
        _check_fetch(request, follower)
        started = time.monotonic()
        cap = self._fetch_max_bytes   # 0 asks for no limit: the broker's own limit then
        parts = self._fetch_parts(request, follower)
        wait_ms = _wait_ms(request, time_left_s)
        long_poll = wait_ms > 0 and request.min_bytes > 0   # it may hold its thread for wait_ms
        slots = slots or (self.follower_slots if follower else self.client_slots)
        with slots.hold(call, "a long-polling Fetch") if long_poll else contextlib.nullcontext():
            results = self._replica_manager.fetch(
                request.replica_id, wait_ms, request.min_bytes, min(request.max_bytes or cap, cap), parts,
                request.read_from_replica, self._still_wanted(caller_waiting),
                None if follower else request.client_rack)
        return self._answered(results, follower, started)

    def replica_fetch_stream(self, requests: Iterable[FetchRequest], call: object,
                             caller_waiting: Callable[[], bool],
                             time_left_s: Callable[[], float | None] = lambda: None,
                             respond: Callable[[list[FetchResult]], None] | None = None,
                             waker: Waker | None = None) -> Iterator[list[FetchResult]]:
        """A follower's fetch stream, in lock step: each request is answered before the next is read,
        and before the stream's own deadline (``time_left_s``). Each answer is yielded once complete;
        with ``respond`` it is first handed to ``respond`` by the thread that completed it: for a parked
        fetch, the thread whose append fed it (broker/delayed_fetch.py), so ``respond`` must not block.
        ``waker``: how this thread sleeps while a fetch is parked (by default, woken when it completes)."""
        session: FetchSession | None = None   # the stream's fetch session (KIP-227), from its first request
        with self.follower_slots.hold(call, "ReplicaFetchStream"):
            try:
                for request in requests:
                    if session is None:
                        session = self._replica_manager.open_session(request.replica_id)
                    elif session.replica_id != request.replica_id:
                        raise MalformedRequestError("a fetch stream's requests must all come from one replica_id")
                    answers: list[list[FetchResult]] = []

                    def answered(results: list[FetchResult]) -> None:
                        answers.append(results)
                        if respond is not None:
                            respond(results)
                    if not self._session_fetch(request, session, answered, caller_waiting, time_left_s(), waker):
                        return   # the follower went, or the broker is stopping
                    yield answers[0]
                    if not caller_waiting() or self.stopping.is_set():
                        return   # stopping: the follower reconnects, to the new leader
            finally:
                if session is not None:
                    self._replica_manager.close_session(session)

    def _session_fetch(self, request: FetchRequest, session: FetchSession,
                       respond: Callable[[list[FetchResult]], None], caller_waiting: Callable[[], bool],
                       time_left_s: float | None, waker: Waker | None) -> bool:
        """One fetch of a stream, answered through ``respond`` (maybe on another thread, see
        replica_fetch_stream); False when cancelled (the follower went or the broker is stopping)."""
        _check_fetch(request, True, True)
        started = time.monotonic()
        cap = self._fetch_max_bytes
        fetch = self._replica_manager.park_session_fetch(
            session, _wait_ms(request, time_left_s), min(request.max_bytes or cap, cap),
            self._fetch_parts(request, True), request.forgotten, request.incremental,
            lambda results: respond(self._answered(results, True, started)), waker)
        return self._replica_manager.await_fetch(fetch, self._still_wanted(caller_waiting))

    def _fetch_parts(self, request: FetchRequest, follower: bool) -> list[FetchRequestPartition]:
        cap = self._fetch_max_bytes   # 0 asks for no limit: the broker's own limit then
        return [FetchRequestPartition(p.topic, p.partition, p.fetch_offset, p.current_leader_epoch,
                                      min(p.partition_max_bytes or DEFAULT_PARTITION_FETCH_BYTES, cap),
                                      p.last_fetched_epoch if follower else -1)
                for p in request.partitions]

    def _still_wanted(self, caller_waiting: Callable[[], bool]) -> Callable[[], bool]:
        return lambda: caller_waiting() and not self.stopping.is_set()

    def _answered(self, results: list[FetchResult], follower: bool, started: float) -> list[FetchResult]:
        for r in results:
            r.error = self._hint_for(r.topic, r.partition, r.error)
        metrics.of(self.broker_id).fetch_answered(follower, started, results)
        return results

    def list_offsets(self, partitions: list[ListOffsetsPartition], read_from_replica: bool) -> list[ListOffsetsResult]:
        _check_count(len(partitions))
        return [self._hinted(self._replica_manager.list_offset(p.topic, p.partition, p.timestamp,
                                                               p.current_leader_epoch, read_from_replica))
                for p in partitions]

    def offset_for_leader_epoch(self, partitions: list[OffsetForLeaderEpochPartition]) -> list[EpochEndOffset]:
        _check_count(len(partitions))
        return [self._hinted(self._replica_manager.offset_for_leader_epoch(
            p.topic, p.partition, p.current_leader_epoch, p.leader_epoch)) for p in partitions]

    # ---- metadata -----------------------------------------------------------------------------

    def metadata_log(self, from_offset: int, follow: bool, call: object,
                     caller_waiting: Callable[[], bool]) -> Iterator[tuple[int, list[MetadataEntry]]]:
        """(first offset kept, entries) chunks of the metadata log from ``from_offset``; with ``follow`` the
        stream stays open (a client stream slot held) and new entries come as they commit, until the
        caller goes or the broker stops."""
        journal = self._quorum.state_machine.journal
        next_offset = max(from_offset, 0)
        with self.client_slots.hold(call, "a MetadataLog stream") if follow else contextlib.nullcontext():
            while True:
                entries, next_offset = journal.read(next_offset, METADATA_LOG_CHUNK)
                if entries:
                    yield journal.first_offset, entries
                    continue
                if not follow:
                    return
                while not journal.wait_beyond(next_offset - 1, 0.5):
                    if not caller_waiting() or self.stopping.is_set():
                        return

    def describe_replicas(self, topics: list[str]) -> ReplicasDescription:
        """The replicas this broker holds (of ``topics``; empty: all), each as this broker sees it."""
        _check_count(len(topics))
        for name in topics:
            if len(name) > MAX_TOPIC_NAME_LENGTH:
                raise MalformedRequestError(f"A topic name is at most {MAX_TOPIC_NAME_LENGTH} characters.")
        return ReplicasDescription(self.broker_id, self._quorum.term(), self._quorum.controller_id(),
                                   self._quorum.image.offset,
                                   self._replica_manager.replica_states(set(topics) if topics else None))

    def describe_log_dirs(self, wanted: dict[str, set[int]] | None) -> LogDirDescription:
        """Kafka's DescribeLogDirs: the replicas in this broker's log dir (``wanted``: topic -> partitions;
        None: all), with the dir's disk space; KAFKA_STORAGE_ERROR and no replicas once it is offline."""
        if wanted is not None:
            _check_count(sum(len(ps) for ps in wanted.values()) + len(wanted))
        log_dir, offline = self._replica_manager.log_dir
        if offline:
            return LogDirDescription(log_dir, KafkaStorageError(f"Log dir {log_dir} is offline."), -1, -1, [])
        try:
            usage = shutil.disk_usage(log_dir)
            total, usable = usage.total, usage.free
        except OSError:
            total = usable = -1
        replicas = self._replica_manager.replica_states(None if wanted is None else set(wanted))
        if wanted is not None:
            replicas = [r for r in replicas if r.partition in wanted[r.topic]]
        return LogDirDescription(log_dir, None, total, usable, replicas)

    def metadata(self, topics: list[str] | None, auto_create: bool = False) -> MetadataResponse:
        """``topics`` None: every topic ([]: none, only the brokers). ``auto_create`` (a Kafka client's allow_auto_topic_creation):
        topics the image lacks are created first with the cluster's defaults, when
        auto.create.topics.enable is on, as Kafka does."""
        image = self._quorum.image
        names = sorted(image.topics) if topics is None else list(topics)
        _check_count(len(names))
        refused: dict[str, KafkaError] = {}
        missing = [n for n in names if n not in image.topics]
        if auto_create and self._auto_create_topics and missing and topics:
            refused = self._auto_create(missing)
            image = self._quorum.image
        answer = metadata_response(image, names, self._quorum.controller_id())
        if not refused:
            return answer
        return dataclasses.replace(answer, topics=[dataclasses.replace(t, error=refused[t.name])
                                                   if t.name in refused else t for t in answer.topics])

    def _auto_create(self, names: list[str]) -> dict[str, KafkaError]:
        """Create ``names`` (num.partitions, default.replication.factor); the errors of those that were
        not: LEADER_NOT_AVAILABLE while a creation is still on its way, as Kafka answers."""
        answer = self.create_topics(CreateTopicsRequest([TopicRequest(n, -1, -1, {}) for n in names]))
        image = self._quorum.image
        out: dict[str, KafkaError] = {}
        for o in answer.outcomes:
            if o.name in image.topics:
                continue
            pending = o.error is None or isinstance(o.error, TopicAlreadyExistsError)
            out[o.name] = LeaderNotAvailableError(f"Topic {o.name} is being created.") if pending else o.error
            log.info("topic_auto_create_failed" if not pending else "topic_auto_create_pending", topic=o.name,
                     error=str(o.error))
        return out

    # ---- configs: answered by any broker, from its image and its own settings ------------------------

    def describe_configs(self, resources: list[ConfigResource]) -> list[ConfigsResult]:
        _check_count(len(resources))
        return [self._describe_one(r) for r in resources]

    def _describe_one(self, r: ConfigResource) -> ConfigsResult:
        def refused(error: KafkaError) -> ConfigsResult:
            return ConfigsResult(r.resource_type, r.resource_name, error)

        if r.resource_type == TOPIC_RESOURCE:
            topic = self._quorum.image.topics.get(r.resource_name)
            if topic is None:
                return refused(UnknownTopicOrPartitionError(f"Topic {r.resource_name} does not exist."))
            return ConfigsResult(r.resource_type, r.resource_name, None,
                                 topic_configs(topic.configs, self._settings, r.keys))
        if r.resource_type == BROKER_RESOURCE:
            if r.resource_name == "":
                return ConfigsResult(r.resource_type, r.resource_name)   # cluster-wide dynamic defaults: none
            if r.resource_name != str(self.broker_id):
                return refused(InvalidRequestError(f"Unexpected broker id, expected {self.broker_id} or empty "
                                                   f"string, but received {r.resource_name}"))
            return ConfigsResult(r.resource_type, r.resource_name, None,
                                 broker_configs(self._settings, self._rack, r.keys))
        return refused(InvalidRequestError(f"Unsupported resource type {r.resource_type}: raftka describes "
                                           "topics (2) and brokers (4)"))

    # ---- group coordination: where a group's coordinator is ------------------------------------------

    def find_coordinator(self, key_type: int, keys: list[str]) -> list[CoordinatorResult]:
        """The leader of each group's __consumer_offsets partition. The topic is created on first use
        (and waited for, so the first answer already names a coordinator); COORDINATOR_NOT_AVAILABLE
        while it cannot be, or while that partition has no leader."""
        _check_count(len(keys))
        if key_type != GROUP_KEY_TYPE:
            return [CoordinatorResult(k, InvalidRequestError(
                f"key_type {key_type}: raftka has group coordinators (0) only, no transactions")) for k in keys]
        topic = self._quorum.image.topics.get(OFFSETS_TOPIC)
        if topic is None:
            outcome = self.create_topics(CreateTopicsRequest([offsets_topic_request(self._settings)])).outcomes[0]
            topic = self._quorum.image.topics.get(OFFSETS_TOPIC)
            if topic is None:
                why = f"{OFFSETS_TOPIC} could not be created: {outcome.error}"
                log.warning("offsets_topic_not_created", error=str(outcome.error))
                return [CoordinatorResult(k, CoordinatorNotAvailableError(why)) for k in keys]
        image = self._quorum.image
        out = []
        for key in keys:
            reg = topic.partitions[partition_for(key, len(topic.partitions))]
            if reg.leader < 0 or not image.is_live(reg.leader):
                out.append(CoordinatorResult(key, CoordinatorNotAvailableError(
                    f"The coordinator of group {key!r} is not available.")))
            else:
                out.append(CoordinatorResult(key, None, reg.leader))
        return out

    # The group protocol itself: every decision is the coordinator's (broker/group/), reached from here.

    # JoinGroup and SyncGroup wait for the rest of the group. On gRPC (``call`` given) each holds a slot
    # of the client listener while it waits, as a long-polling Fetch does; on the Kafka port the
    # connection's own thread waits, so its slots are one per connection already.

    def join_group(self, group_id: str, request: JoinGroupRequest, call: object | None = None) -> JoinGroupResponse:
        with self._held(call, "a JoinGroup"):
            return self.groups.join_group(group_id, request)

    def sync_group(self, group_id: str, request: SyncGroupRequest, call: object | None = None) -> SyncGroupResponse:
        with self._held(call, "a SyncGroup"):
            return self.groups.sync_group(group_id, request)

    def _held(self, call: object | None, what: str):
        return contextlib.nullcontext() if call is None else self.client_slots.hold(call, what)

    def heartbeat(self, group_id: str, request: HeartbeatRequest) -> HeartbeatResponse:
        return self.groups.heartbeat(group_id, request)

    def leave_group(self, group_id: str, members: list[MemberIdentity]) -> LeaveGroupResponse:
        return self.groups.leave_group(group_id, members)

    def offset_commit(self, group_id: str, member_id: str, generation_id: int, group_instance_id: str | None,
                      offsets: list[OffsetCommitPartition]) -> list[tuple[str, int, KafkaError | None]]:
        _check_count(len(offsets))
        return self.groups.offset_commit(group_id, member_id, generation_id, group_instance_id, offsets)

    def offset_fetch(self, group_id: str, partitions: list[tuple[str, int]] | None):
        _check_count(len(partitions or ()))
        return self.groups.offset_fetch(group_id, partitions)

    def list_groups(self) -> tuple[KafkaError | None, list[tuple[str, str, str]]]:
        return self.groups.list_groups()

    def describe_groups(self, group_ids: list[str]):
        """[(group id, error, description)] in the order asked."""
        _check_count(len(group_ids))
        return [(g, *self.groups.describe_group(g)) for g in group_ids]

    def delete_groups(self, group_ids: list[str]) -> list[tuple[str, KafkaError | None]]:
        _check_count(len(group_ids))
        return [(g, self.groups.delete_group(g)) for g in group_ids]

    def offset_delete(self, group_id: str, partitions: list[tuple[str, int]]):
        _check_count(len(partitions))
        return self.groups.offset_delete(group_id, partitions)

    # ---- admin: answered by the active controller, forwarded there by any other broker -------------

    def create_topics(self, request: CreateTopicsRequest, time_left_s: float | None = None,
                      forwarded: bool = False) -> TopicsResponse:
        _check_count(len(request.topics))
        names = [t.name for t in request.topics]

        def refuse(error: KafkaError) -> TopicsResponse:
            return TopicsResponse([TopicOutcome(n, error) for n in names])

        def handle() -> TopicsResponse:
            return _or_refused(lambda: TopicsResponse(self._controller.create_topics(
                request.topics, validate_only=request.validate_only)), refuse)

        call = AdminCall("CreateTopics", request, handle, refuse,
                         lambda image: request.validate_only or all(n in image.topics for n in names))
        return self._forwarder.run(call, _admin_timeout_s(request.timeout_ms, time_left_s), forwarded)

    def delete_topics(self, request: DeleteTopicsRequest, time_left_s: float | None = None,
                      forwarded: bool = False) -> TopicsResponse:
        _check_count(len(request.names))

        def refuse(error: KafkaError) -> TopicsResponse:
            return TopicsResponse([TopicOutcome(n, error) for n in request.names])

        def handle() -> TopicsResponse:
            return _or_refused(lambda: TopicsResponse(self._controller.delete_topics(request.names)), refuse)

        call = AdminCall("DeleteTopics", request, handle, refuse,
                         lambda image: not any(n in image.topics for n in request.names))
        return self._forwarder.run(call, _admin_timeout_s(request.timeout_ms, time_left_s), forwarded)

    def create_partitions(self, request: CreatePartitionsRequest, time_left_s: float | None = None,
                          forwarded: bool = False) -> TopicsResponse:
        """Grow topics (Kafka's CreatePartitions); done when this broker's image shows the new counts."""
        _check_count(len(request.topics) + sum(len(t.assignments or ()) for t in request.topics))
        names = [t.name for t in request.topics]

        def refuse(error: KafkaError) -> TopicsResponse:
            return TopicsResponse([TopicOutcome(n, error) for n in names])

        def handle() -> TopicsResponse:
            return _or_refused(lambda: TopicsResponse(self._controller.create_partitions(
                request.topics, validate_only=request.validate_only)), refuse)

        def settled(image: MetadataImage) -> bool:
            # A count over the limit is refused and never shows: waiting for it would only delay the answer.
            return request.validate_only or all(
                t.count > MAX_PARTITIONS_PER_TOPIC
                or (t.name in image.topics and len(image.topics[t.name].partitions) >= t.count)
                for t in request.topics)

        call = AdminCall("CreatePartitions", request, handle, refuse, settled)
        return self._forwarder.run(call, _admin_timeout_s(request.timeout_ms, time_left_s), forwarded)

    def elect_leaders(self, request: ElectLeadersRequest, time_left_s: float | None = None,
                      forwarded: bool = False) -> ElectLeadersResponse:
        if request.election_type not in (0, 1):
            raise MalformedRequestError(f"election_type {request.election_type} is neither 0 (PREFERRED) "
                                        "nor 1 (UNCLEAN)")
        _check_count(sum(max(len(ps), 1) for _, ps in request.topic_partitions or ()))

        def elect() -> ElectLeadersResponse:
            outcomes = self._controller.elect_leaders(request.election_type, self._election_targets(request))
            if request.topic_partitions is None:
                # Kafka: "every partition" answers only for those it elected or failed to.
                outcomes = [o for o in outcomes if not isinstance(o.error, ElectionNotNeededError)]
            return ElectLeadersResponse(None, outcomes)

        def handle() -> ElectLeadersResponse:
            return _or_refused(elect, ElectLeadersResponse)

        call = AdminCall("ElectLeaders", request, handle, ElectLeadersResponse, lambda image: True)
        return self._forwarder.run(call, _admin_timeout_s(request.timeout_ms, time_left_s), forwarded)

    def init_producer_id(self, timeout_ms: int = 0, time_left_s: float | None = None,
                         forwarded: bool = False) -> InitProducerIdResponse:
        def handle() -> InitProducerIdResponse:
            def allocate() -> InitProducerIdResponse:
                producer_id = self._controller.allocate_producer_ids(self.broker_id, 1)
                log.info("producer_id_allocated", producer_id=producer_id)
                return InitProducerIdResponse(None, producer_id, 0)
            return _or_refused(allocate, InitProducerIdResponse)

        call = AdminCall("InitProducerId", timeout_ms, handle, InitProducerIdResponse, lambda image: True)
        return self._forwarder.run(call, _admin_timeout_s(timeout_ms, time_left_s), forwarded)

    def _election_targets(self, request: ElectLeadersRequest) -> list[tuple[str, int]] | None:
        """The partitions named; a topic named with no partitions means all of its partitions."""
        if not request.topic_partitions:
            return None
        image = self._quorum.image
        wanted = []
        for name, partitions in request.topic_partitions:
            topic = image.topics.get(name)
            wanted += [(name, p) for p in (partitions or (range(len(topic.partitions)) if topic else [0]))]
        return wanted

    # ---- the leader hint (KIP-951) ---------------------------------------------------------------

    def _hinted(self, result):
        error = self._hint_for(result.topic, result.partition, result.error)
        return result if error is result.error else dataclasses.replace(result, error=error)

    def _hint_for(self, topic: str, partition: int, error: KafkaError | None) -> KafkaError | None:
        """An error that says the client's metadata is stale names who leads now, so the client goes
        there without a Metadata round trip."""
        if error is None or not error.invalid_metadata or error.leader_hint is not None:
            return error
        return type(error)(error.message, leader_hint=self._replica_manager.leader_hint(topic, partition))


def metadata_response(image: MetadataImage, names: list[str], controller_id: int) -> MetadataResponse:
    """What the image says of ``names`` and of every broker: a topic it lacks is UNKNOWN_TOPIC_OR_PARTITION,
    a partition with no leader LEADER_NOT_AVAILABLE, a replica on a fenced broker offline."""
    topics = []
    for name in names:
        topic = image.topics.get(name)
        if topic is None:
            topics.append(TopicMetadata(name, UnknownTopicOrPartitionError(f"Topic {name} does not exist.")))
            continue
        parts = [PartitionMetadata(p, None if reg.leader >= 0 else LeaderNotAvailableError(), reg.leader,
                                   reg.leader_epoch, reg.partition_epoch, tuple(reg.replicas), tuple(reg.isr),
                                   tuple(r for r in reg.replicas if not image.is_live(r)))
                 for p, reg in enumerate(topic.partitions)]
        topics.append(TopicMetadata(name, None, parts, dict(topic.configs)))
    brokers = [BrokerMetadata(b.broker_id, b.host, b.port, alive=not b.fenced)
               for b in sorted(image.brokers.values(), key=lambda b: b.broker_id)]
    return MetadataResponse(image.cluster_id, controller_id, brokers, topics)


def _or_refused(answer: Callable[[], object], refuse: Callable[[KafkaError], object]):
    """The controller's convention: a KafkaError raised refuses the whole request."""
    try:
        return answer()
    except KafkaError as e:
        return refuse(e)


def _admin_timeout_s(timeout_ms: int, time_left_s: float | None) -> float:
    # <= 0 (a Kafka client's "do not wait") still gives the controller time to answer: the request is
    # forwarded, and refused as timed out only once that time has passed.
    timeout_s = (timeout_ms if timeout_ms > 0 else DEFAULT_ADMIN_TIMEOUT_MS) / 1000
    return min(timeout_s, time_left_s) if time_left_s is not None else timeout_s


def _produce_refusal(request: ProduceRequest, p) -> KafkaError | None:
    """What refuses one partition of a client's produce before any log sees it: the group coordinator
    alone writes __consumer_offsets (Kafka's rule), and zstd needs Produce v7+ (KIP-110)."""
    if is_internal(p.topic):
        return InvalidTopicError(f"Cannot append to internal topic {p.topic}")
    return None if request.zstd_allowed else zstd_refused(p.records)


def _check_count(n: int) -> None:
    if n > MAX_PARTITIONS_PER_REQUEST:
        raise MalformedRequestError(f"{n} partitions in one request; the limit is {MAX_PARTITIONS_PER_REQUEST}")


def _wait_ms(request: FetchRequest, time_left_s: float | None) -> int:
    """How long a fetch may long-poll: its max_wait_ms, within what is left of its caller's deadline."""
    wait_ms = max(request.max_wait_ms, 0)
    if time_left_s is not None:
        wait_ms = min(wait_ms, int(max(0.0, time_left_s - DEADLINE_MARGIN_S) * 1000))
    return wait_ms


def _check_fetch(request: FetchRequest, follower: bool, in_session: bool = False) -> None:
    if follower and request.replica_id < 0:
        raise MalformedRequestError("ReplicaFetch needs the follower's broker id as replica_id")
    if not follower and request.replica_id != CONSUMER_REPLICA_ID:
        raise MalformedRequestError("Fetch is for consumers (replica_id -1); followers use Replication.ReplicaFetch")
    if (request.incremental or request.forgotten) and not in_session:
        raise MalformedRequestError("an incremental fetch (or forgotten partitions) needs a fetch session: "
                                    "the second and later requests of a ReplicaFetchStream")
    _check_count(len(request.partitions) + len(request.forgotten))
    if request.max_bytes < 0 or request.min_bytes < 0 or any(p.partition_max_bytes < 0 for p in request.partitions):
        raise MalformedRequestError("max_bytes, min_bytes and partition_max_bytes must be >= 0")
