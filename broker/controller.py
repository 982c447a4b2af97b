"""The controller: the broker whose metadata-quorum node is the Raft leader decides for the cluster.

It registers brokers, tracks their heartbeats and connections, fences the dead
and unfences the returned, elects partition leaders, creates and deletes
topics and adds partitions to them. Every decision is made here, outside apply,
from the committed image, and written as one all-or-nothing batch of
epoch-fenced records; a batch decided from a stale image (a deposed controller,
a lost race) changes nothing.

Every broker runs a Controller object; only the one on the Raft leader is
active. Its thread ticks every 50 ms and holds no locks while waiting.

Errors follow Kafka's QuorumController: a public method raises the client.errors
class when the whole request fails (not the active controller, a stale broker
epoch, a refused AlterPartition, a commit that was not confirmed), and a request
about several items (topics to create or delete, partitions to elect) returns one
outcome per item whose ``error`` is the item's error instance or None, as
Kafka's per-item ApiError. Nothing returns an error for the whole request and
nothing compares error names.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import structlog

from broker import metrics
from broker.config import BrokerSettings, ClusterConfig
from broker.liveness import BrokerLiveness
from broker.logging_setup import log_partitions
from broker.metadata import topic_rules
from broker.metadata.image import BatchOutcome, MetadataImage, PartitionRegistration, TopicImage
from broker.metadata.partition_change import (fence_batch, preferred_election, reconcile_partitions, register_batch,
                                              unclean_election, unfence_batch, validate_alter_partition)
from broker.metadata.placement import assign_new_partitions, assign_replicas
from broker.metadata.quorum import CommitError, MetadataQuorum
from broker.metadata.records import (AllocateProducerIds, ChangePartition, CreatePartitions, CreateTopic, DeleteTopic,
                                     RegisterBroker)
from broker.request_errors import MalformedRequestError
from client.errors import (InconsistentClusterIdError, InvalidReplicaAssignmentError, InvalidRequestError,
                           InvalidUpdateVersionError, KafkaError, NotControllerError, RequestTimedOutError,
                           StaleBrokerEpochError, TopicAlreadyExistsError, UnknownTopicOrPartitionError)

log = structlog.get_logger(__name__)

TICK_S = 0.05
RECONCILE_RETRY_S = 1.0   # a reconciliation whose fix could not be committed is tried again after this
# A batch's new leaders, one event each, or one per topic when many (logging_setup.log_partitions): a failover
# at 10,000 partitions wrote 3,338 leader_elected lines, 1.7 s of the controller's CPU, while every broker
# was applying that batch.
_ELECTION_EVENT_BULK = {"leader_elected": "leaders_elected", "partition_offline": "partitions_offline"}
PREFERRED, UNCLEAN = 0, 1


@dataclass(frozen=True)
class TopicRequest:
    name: str
    num_partitions: int        # -1: the cluster default (num.partitions)
    replication_factor: int    # -1: the cluster default (default.replication.factor)
    configs: dict[str, str]


@dataclass(frozen=True)
class PartitionsIncrease:
    """One topic of a CreatePartitions request (Kafka's CreatePartitionsTopic)."""
    name: str
    count: int                                    # the new total number of partitions
    # The replica lists of the new partitions, in order; None: the controller places them.
    assignments: list[list[int]] | None = None


@dataclass(frozen=True)
class HeartbeatReply:
    is_caught_up: bool = False
    is_fenced: bool = True
    should_shut_down: bool = False


@dataclass(frozen=True)
class TopicOutcome:
    """One topic of a create or delete request: error None when it was done."""
    name: str
    error: KafkaError | None = None


@dataclass(frozen=True)
class IsrChange:
    """One partition of an AlterPartition request: its leader's new ISR, decided from ``partition_epoch``."""
    topic: str
    topic_id: str
    partition: int
    leader_epoch: int
    partition_epoch: int
    new_isr: tuple[int, ...]


# One AlterPartition carries at most this many changes (a leader has one pending change per partition).
MAX_ISR_CHANGES_PER_REQUEST = 10000


@dataclass(frozen=True)
class ElectionOutcome:
    """One partition of an election request: error None when its leader moved."""
    topic: str
    partition: int
    error: KafkaError | None = None


def _item_error(action: Callable[[], None]) -> KafkaError | None:
    """Kafka's ApiError.fromThrowable: one item's failure becomes that item's outcome, not the request's."""
    try:
        action()
    except KafkaError as e:
        return e
    return None


class Controller:
    def __init__(self, quorum: MetadataQuorum, cluster: ClusterConfig, broker_id: int,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        self._quorum = quorum
        self._cluster = cluster
        self._settings: BrokerSettings = cluster.settings
        self.broker_id = broker_id
        self._clock = clock
        self._rng = rng or random.Random()
        s = self._settings
        self._liveness = BrokerLiveness(s.broker_heartbeat_interval_ms / 1000, s.broker_session_timeout_ms / 1000)
        self._liveness_lock = threading.Lock()   # heartbeats arrive on gRPC threads, the tick reads
        self._write_lock = threading.Lock()      # one decide-and-commit at a time
        self._active_term: int | None = None
        self._reconciled_offset = -1
        self._next_reconcile = 0.0
        self._reconcile_failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def image(self) -> MetadataImage:
        return self._quorum.image

    def is_active(self) -> bool:
        return self._quorum.is_leader() and self._active_term == self._quorum.term()

    def _require_active(self) -> None:
        if not self.is_active():
            raise NotControllerError(f"Broker {self.broker_id} is not the active controller.")

    # ---- the controller thread ----------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self._tick(self._clock())
            except Exception:  # the controller must keep ticking whatever one decision did
                log.exception("controller_tick_failed")

    def _tick(self, now: float) -> None:
        self._watch_links(now)
        # The term first: read after the leadership check, it could already be a newer term that this
        # node lost the lead in (pysyncobj's tick thread moves both), and "activated" would name it.
        term = self._quorum.term()
        if not self._quorum.leader_caught_up():
            if self._active_term is not None:
                log.info("controller_resigned", term=self._active_term)
                self._active_term = None
            return
        if term != self._active_term:
            with self._liveness_lock:
                self._liveness.activate(now)  # grace: heartbeat times were the old controller's
            self._active_term = term
            log.info("controller_activated", controller=self.broker_id, term=term,
                     metadata_offset=self.image.offset)
        self._fence_dead_brokers(now)
        # The scan is O(partitions) and a pure function of the image: it runs when the image changed, and
        # again (after RECONCILE_RETRY_S) only while the fix it found could not be committed.
        if self.image.offset != self._reconciled_offset or (self._reconcile_failed and now >= self._next_reconcile):
            self._next_reconcile = now + RECONCILE_RETRY_S
            self._reconcile()

    def _watch_links(self, now: float) -> None:
        """Every broker, controller or not, notes when its Raft link to each other broker dropped."""
        for broker_id in list(self.image.brokers):
            if broker_id != self.broker_id:
                up = self._quorum.peer_connected(broker_id)
                with self._liveness_lock:
                    self._liveness.set_link(broker_id, up, now)

    def _fence_dead_brokers(self, now: float) -> None:
        for b in list(self.image.brokers.values()):
            if b.fenced or b.broker_id == self.broker_id:
                continue
            with self._liveness_lock:
                reason = self._liveness.fence_reason(b.broker_id, now)
            if reason is not None:
                self._fence(b.broker_id, reason)

    def _fence(self, broker_id: int, reason: str) -> bool:
        with self._write_lock:
            image = self.image
            reg = image.brokers.get(broker_id)
            if reg is None or reg.fenced:
                return True
            batch = fence_batch(image, broker_id, reason)
            outcome = self._try_commit(batch)
        if outcome is not None and outcome.applied:
            log.info("broker_fenced", broker=broker_id, reason=reason, broker_epoch=reg.broker_epoch)
            self._log_changes(image, batch)
            return True
        return False

    def _reconcile(self) -> None:
        """Level-triggered safety net: offline partitions that can now get a leader (unclean topics too)."""
        with self._write_lock:
            before = self.image
            self._reconciled_offset = before.offset
            changes = reconcile_partitions(before)
            committed = not changes or self._try_commit(changes) is not None
            self._reconcile_failed = not committed
            if changes and committed:
                self._log_changes(before, changes)

    def _log_changes(self, before: MetadataImage, batch, after: MetadataImage | None = None) -> None:
        """One event per partition the batch gave a new leader (or none); its ISR-only changes one each too,
        or one ``isrs_changed`` for them all when many (logging_setup.log_partitions)."""
        after = self.image if after is None else after
        # Called right after the commit: every event of the batch names that moment (thousands of events
        # take a few hundred ms to write, and the last one's own timestamp would say the batch came later).
        committed_at_ms = int(time.time() * 1000)
        isr_only: list[dict] = []
        elected: dict[str, list[dict]] = {event: [] for event in _ELECTION_EVENT_BULK}
        for c in batch:
            if not isinstance(c, ChangePartition):
                continue
            old, new = before.partition(c.topic, c.partition), after.partition(c.topic, c.partition)
            if old is None or new is None or new.partition_epoch != c.partition_epoch + 1:
                continue
            if new.leader == old.leader:
                isr_only.append(dict(topic=c.topic, partition=c.partition, leader=new.leader,
                                     leader_epoch=new.leader_epoch, isr=list(new.isr), previous_leader=old.leader))
                continue
            elected["leader_elected" if new.leader >= 0 else "partition_offline"].append(dict(
                topic=c.topic, partition=c.partition, leader=new.leader, leader_epoch=new.leader_epoch,
                isr=list(new.isr), previous_leader=old.leader))
        for event, each in elected.items():
            log_partitions(log, event, _ELECTION_EVENT_BULK[event], each, ("leader", "leader_epoch", "previous_leader"),
                           committed_at_ms=committed_at_ms)
        log_partitions(log, "isr_changed", "isrs_changed", isr_only)

    # ---- commits ------------------------------------------------------------------

    def _commit(self, records) -> BatchOutcome:
        """Commit while active; NotControllerError / RequestTimedOutError when that cannot be confirmed."""
        self._require_active()
        # Every commit holds _write_lock: between these two images only this batch applies.
        before, started = self.image, time.monotonic()
        try:
            outcome = self._quorum.submit(records, self._settings.metadata_commit_timeout_ms / 1000)
        except CommitError as e:
            raise RequestTimedOutError(f"The metadata change was not confirmed ({e}); it may still apply.") from None
        metrics.of(self.broker_id).controller_committed(before, self.image, records, started)
        return outcome

    def _try_commit(self, records) -> BatchOutcome | None:
        try:
            return self._commit(records)
        except (NotControllerError, RequestTimedOutError) as e:
            log.warning("metadata_commit_failed", error=str(e), records=len(records))
            return None

    # ---- broker lifecycle (Kafka's BrokerRegistration / BrokerHeartbeat) ---------------

    def register_broker(self, broker_id: int, cluster_id: str, incarnation_id: str, host: str,
                        port: int) -> int:
        """The new incarnation's broker epoch; it starts fenced."""
        if cluster_id != self.image.cluster_id:
            raise InconsistentClusterIdError(f"Broker {broker_id} is in cluster {cluster_id!r}, "
                                             f"this is {self.image.cluster_id!r}.")
        if broker_id not in {b.broker_id for b in self._cluster.brokers}:
            raise InvalidRequestError(f"Broker id {broker_id} is not in the cluster file.")
        with self._write_lock:
            before = self.image
            current = before.brokers.get(broker_id)
            if current is None or current.incarnation_id != incarnation_id:
                batch = register_batch(before, RegisterBroker(broker_id, host, port, incarnation_id))
                outcome = self._commit(batch)
                if outcome.applied:
                    log.info("broker_registered", broker=broker_id, broker_epoch=outcome.offset,
                             incarnation_id=incarnation_id)
                    self._log_changes(before, batch)
            current = self.image.brokers.get(broker_id)
        with self._liveness_lock:
            self._liveness.heartbeat(broker_id, self._clock())
        if current is None or current.incarnation_id != incarnation_id:
            raise RequestTimedOutError(f"Broker {broker_id}'s registration did not apply; retry.")
        return current.broker_epoch

    def heartbeat(self, broker_id: int, broker_epoch: int, metadata_offset: int,
                  want_shut_down: bool) -> HeartbeatReply:
        """Raises NotControllerError, or StaleBrokerEpochError for an incarnation that must register again."""
        self._require_active()
        reg = self.image.brokers.get(broker_id)
        if reg is None or reg.broker_epoch != broker_epoch:
            raise StaleBrokerEpochError(f"Broker {broker_id} epoch {broker_epoch} is not registered; register again.")
        with self._liveness_lock:
            self._liveness.heartbeat(broker_id, self._clock())
        # Caught up once it has applied its own registration (the batch at broker_epoch).
        caught_up = metadata_offset > reg.broker_epoch
        if want_shut_down:
            # Controlled shutdown: fencing moves its leaderships away before it stops.
            done = self._fence(broker_id, "controlled_shutdown")
            return HeartbeatReply(caught_up, self.image.brokers[broker_id].fenced, should_shut_down=done)
        if reg.fenced and caught_up:
            self._unfence(broker_id)
        return HeartbeatReply(caught_up, self.image.brokers[broker_id].fenced)

    def _unfence(self, broker_id: int) -> None:
        with self._write_lock:
            reg = self.image.brokers.get(broker_id)
            if reg is None or not reg.fenced:
                return
            before = self.image
            batch = unfence_batch(before, broker_id)
            outcome = self._try_commit(batch)
        if outcome is not None and outcome.applied:
            log.info("broker_unfenced", broker=broker_id, broker_epoch=reg.broker_epoch)
            self._log_changes(before, batch)

    # ---- topics -------------------------------------------------------------------

    def create_topics(self, requests: Sequence[TopicRequest], validate_only: bool = False) -> list[TopicOutcome]:
        """One outcome per topic, in order; raises NotControllerError when this controller is not active.

        Each topic commits on its own, as before: one that is invalid or whose commit is not confirmed
        fails alone, and leadership lost midway shows as NOT_CONTROLLER on the topics after it only.
        """
        self._require_active()
        return [TopicOutcome(req.name, _item_error(partial(self._create_one, req, validate_only))) for req in requests]

    def _create_one(self, req: TopicRequest, validate_only: bool) -> None:
        with self._write_lock:
            record = self._plan_create(req)
            if validate_only:
                return
            outcome = self._commit([record])
        if not outcome.applied:
            raise TopicAlreadyExistsError(f"Topic '{req.name}' already exists.")
        topic = self.image.topics[req.name]
        log.info("topic_created", topic=req.name, topic_id=topic.topic_id, partitions=len(topic.partitions),
                 assignments=[list(p.replicas) for p in topic.partitions],
                 leaders=[p.leader for p in topic.partitions])

    def _plan_create(self, req: TopicRequest) -> CreateTopic:
        # Checked per topic too: a later topic of the request must not be decided by a deposed controller.
        self._require_active()
        image = self.image
        partitions = self._settings.num_partitions if req.num_partitions == -1 else req.num_partitions
        rf = self._settings.default_replication_factor if req.replication_factor == -1 else req.replication_factor
        live = image.live_broker_ids()
        error = (topic_rules.topic_name_error(req.name)
                 or (TopicAlreadyExistsError(f"Topic '{req.name}' already exists.")
                     if req.name in image.topics else None)
                 or topic_rules.partition_count_error(partitions)
                 or topic_rules.replication_factor_error(rf, len(live))
                 or topic_rules.topic_config_error(req.configs))
        if error is not None:
            raise error
        n = len(live)
        assignments = assign_replicas(partitions, rf, live, self._rng.randrange(n),
                                      self._rng.randrange(max(n - 1, 1)))
        return CreateTopic(req.name, uuid.uuid4().hex, assignments, dict(req.configs))

    def delete_topics(self, names: Sequence[str]) -> list[TopicOutcome]:
        """One outcome per topic, in order; raises NotControllerError when this controller is not active."""
        self._require_active()
        return [TopicOutcome(name, _item_error(partial(self._delete_one, name))) for name in names]

    def _delete_one(self, name: str) -> None:
        with self._write_lock:
            topic = self.image.topics.get(name)
            if topic is None:
                raise UnknownTopicOrPartitionError(f"Topic '{name}' does not exist.")
            outcome = self._commit([DeleteTopic(name, topic.topic_id)])
        if not outcome.applied:
            raise UnknownTopicOrPartitionError(f"Topic '{name}' does not exist.")
        log.info("topic_deleted", topic=name, topic_id=topic.topic_id)

    # ---- partitions added to a topic (kafka-topics.sh --alter --partitions) ------------

    def create_partitions(self, requests: Sequence[PartitionsIncrease],
                          validate_only: bool = False) -> list[TopicOutcome]:
        """One outcome per topic, in order (Kafka's ReplicationControlManager.createPartitions); raises
        NotControllerError when this controller is not active. Each topic commits on its own."""
        self._require_active()
        names = [req.name for req in requests]
        duplicate = InvalidRequestError("Duplicate topic name.")   # Kafka answers each copy with it
        return [TopicOutcome(req.name, duplicate if names.count(req.name) > 1 else
                             _item_error(partial(self._create_partitions_one, req, validate_only)))
                for req in requests]

    def _create_partitions_one(self, req: PartitionsIncrease, validate_only: bool) -> None:
        with self._write_lock:
            record = self._plan_create_partitions(req)
            if validate_only:
                return
            outcome = self._commit([record])
        if not outcome.applied:
            topic = self.image.topics.get(req.name)
            if topic is None or topic.topic_id != record.topic_id:
                raise UnknownTopicOrPartitionError(f"Topic '{req.name}' does not exist.")
            raise RequestTimedOutError(f"The partitions were not created: the topic changed meanwhile "
                                       f"({outcome.reason}); retry.")
        partitions = self.image.topics[req.name].partitions
        log.info("partitions_created", topic=req.name, topic_id=record.topic_id, count=len(partitions),
                 previous_count=record.start_partition, assignments=[list(a) for a in record.assignments],
                 leaders=[p.leader for p in partitions[record.start_partition:]])

    def _plan_create_partitions(self, req: PartitionsIncrease) -> CreatePartitions:
        # Checked per topic too: a later topic of the request must not be decided by a deposed controller.
        self._require_active()
        image = self.image
        topic = image.topics.get(req.name)
        if topic is None:
            raise UnknownTopicOrPartitionError(f"Topic '{req.name}' does not exist.")
        current = len(topic.partitions)
        error = topic_rules.partition_increase_error(current, req.count)
        if error is not None:
            raise error
        if req.assignments is None:
            assignments = self._place_new_partitions(image, topic, req.count - current)
        else:
            assignments = self._check_manual_assignments(image, topic, req)
        return CreatePartitions(req.name, topic.topic_id, current, assignments)

    @staticmethod
    def _place_new_partitions(image: MetadataImage, topic: TopicImage, additional: int) -> tuple[tuple[int, ...], ...]:
        """Kafka's automatic placement for added partitions, on unfenced brokers only."""
        existing = tuple(p.replicas for p in topic.partitions)
        live = image.live_broker_ids()
        error = topic_rules.replication_factor_error(len(existing[0]), len(live))
        if error is not None:
            raise error
        return assign_new_partitions(existing, additional, live)

    @staticmethod
    def _check_manual_assignments(image: MetadataImage, topic: TopicImage,
                                  req: PartitionsIncrease) -> tuple[tuple[int, ...], ...]:
        current = len(topic.partitions)
        error = topic_rules.replica_assignment_error(req.assignments, req.count - current,
                                                     len(topic.partitions[0].replicas), set(image.brokers))
        if error is not None:
            raise error
        for p, replicas in enumerate(req.assignments, start=current):
            # Fenced brokers may hold replicas, but someone must lead: the ISR starts as the live ones.
            if not any(image.is_live(r) for r in replicas):
                raise InvalidReplicaAssignmentError(f"All brokers specified in the manual partition assignment for "
                                                    f"partition {p} are fenced or in controlled shutdown.")
        return tuple(tuple(replicas) for replicas in req.assignments)

    # ---- elections (kafka-leader-election.sh) -------------------------------------

    def elect_leaders(self, election_type: int,
                      partitions: list[tuple[str, int]] | None) -> list[ElectionOutcome]:
        """Preferred: back to the first replica. Unclean: an offline partition takes any live replica.

        One outcome per partition; the changes commit as one batch, so a commit that fails fails the
        whole request (NotControllerError, RequestTimedOutError).
        """
        decide = preferred_election if election_type == PREFERRED else unclean_election
        with self._write_lock:
            self._require_active()
            image = self.image
            wanted = partitions if partitions is not None else [
                (t.name, p) for t in image.topics.values() for p in range(len(t.partitions))]
            outcomes: list[ElectionOutcome] = []
            changes: list[ChangePartition] = []
            for topic_name, p in wanted:
                topic = image.topics.get(topic_name)
                if topic is None or not 0 <= p < len(topic.partitions):
                    outcomes.append(ElectionOutcome(topic_name, p, UnknownTopicOrPartitionError(
                        f"Topic-partition {topic_name}-{p} does not exist.")))
                    continue
                result = decide(image, topic, p)
                if result.change is not None:
                    changes.append(result.change)
                outcomes.append(ElectionOutcome(topic_name, p, result.error))
            if changes:
                outcome = self._commit(changes)
                if not outcome.applied:
                    raise RequestTimedOutError(f"The election lost a race with another change ({outcome.reason}); "
                                               "retry.")
                self._log_changes(image, changes)
        return outcomes

    # ---- ISR changes from partition leaders (Kafka's AlterPartition) --------------------

    def alter_partition(self, broker_id: int, broker_epoch: int,
                        changes: Sequence[IsrChange]) -> list[PartitionRegistration | KafkaError]:
        """Commit a leader's new ISRs: the valid ones in one metadata batch. Per change, the registration
        after it or the Kafka error that refused it; NotControllerError / RequestTimedOutError (raised) for
        the whole request when the commit cannot be confirmed (each change may still apply)."""
        _check_isr_changes(changes)
        results: list[PartitionRegistration | KafkaError | None] = [None] * len(changes)
        committed: list[tuple[MetadataImage, list[ChangePartition], MetadataImage]] = []
        with self._write_lock:
            self._require_active()
            image = self.image
            valid: list[tuple[int, ChangePartition]] = []
            for i, c in enumerate(changes):
                try:
                    valid.append((i, validate_alter_partition(image, broker_id, broker_epoch, c.topic, c.topic_id,
                                                              c.partition, c.leader_epoch, c.partition_epoch,
                                                              c.new_isr)))
                except KafkaError as e:
                    results[i] = e
            if len(valid) > 1 and not self._commit_isr_changes([r for _, r in valid], committed):
                # Refused whole (a record's check failed at apply): commit each on its own, so that one stale
                # change costs only its own (as a single change always did).
                for i, record in valid:
                    if not self._commit_isr_changes([record], committed):
                        results[i] = InvalidUpdateVersionError("The partition changed meanwhile.")
            elif len(valid) == 1 and not self._commit_isr_changes([valid[0][1]], committed):
                results[valid[0][0]] = InvalidUpdateVersionError("The partition changed meanwhile.")
            after = self.image   # under the lock: exactly what these commits made
        # Told after the lock: the next leader's request need not wait for these events.
        for before, records, applied in committed:
            self._log_changes(before, records, applied)
        return [r if r is not None else after.partition(c.topic, c.partition) for r, c in zip(results, changes)]

    def _commit_isr_changes(self, records: list[ChangePartition],
                            committed: list[tuple[MetadataImage, list[ChangePartition], MetadataImage]]) -> bool:
        """Commit ``records`` in one batch (under _write_lock); False if it was refused whole. Appends (image
        before, records, image after) to ``committed`` for the events."""
        before = self.image
        outcome = self._commit(records)
        if outcome.applied:
            committed.append((before, records, self.image))
        return outcome.applied

    # ---- producer ids (the idempotent producer's InitProducerId) ----------------------

    def allocate_producer_ids(self, broker_id: int, count: int) -> int:
        with self._write_lock:
            outcome = self._commit([AllocateProducerIds(broker_id, count)])
        if not outcome.applied:
            raise RequestTimedOutError(f"The producer id block was not allocated ({outcome.reason}).")
        return outcome.producer_id_start


__all__ = ["Controller", "TopicRequest", "TopicOutcome", "HeartbeatReply", "ElectionOutcome", "PartitionsIncrease",
           "IsrChange", "MAX_ISR_CHANGES_PER_REQUEST",
           "PREFERRED", "UNCLEAN"]


def _check_isr_changes(changes: Sequence[IsrChange]) -> None:
    """A request the controller refuses whole (INVALID_REQUEST): too many changes, or one that is ill-formed."""
    if len(changes) > MAX_ISR_CHANGES_PER_REQUEST:
        raise MalformedRequestError(f"{len(changes)} ISR changes in one request; at most {MAX_ISR_CHANGES_PER_REQUEST}")
    seen: set[tuple[str, int]] = set()
    for c in changes:
        if len(set(c.new_isr)) != len(c.new_isr):
            # The topic as repr: a name from the wire may hold anything, and the answer stays one line.
            raise MalformedRequestError(f"new_isr {list(c.new_isr)} of {c.topic!r} partition {c.partition} "
                                        "names a broker twice")
        if (c.topic, c.partition) in seen:
            raise MalformedRequestError(f"{c.topic!r} partition {c.partition} appears twice in one request")
        seen.add((c.topic, c.partition))
