"""The group coordinator: the groups of the __consumer_offsets partitions this broker leads.

Kafka's GroupCoordinator with its GroupMetadataManager. A group lives on partition
partition_for(group) of __consumer_offsets; the broker leading that partition coordinates it. When
this broker becomes a partition's leader, the coordinator loads the partition's log (offsets and
group metadata, last record wins) before serving its groups (COORDINATOR_LOAD_IN_PROGRESS until
then); when it stops leading, the groups are unloaded and waiting requests answered NOT_COORDINATOR.

Every decision about one group is GroupMetadata's (group_metadata.py, pure, `now` passed in); this
class routes, keeps the lock, parks a request that Kafka answers later (a JoinGroup waiting for the
rebalance, a follower's SyncGroup waiting for the leader) on a ticket, and writes commits and group
metadata through the replicated log with acks=all, fenced by the leader epoch it loaded at: a
committed offset survives the coordinator's kill -9 exactly as an acknowledged record does.
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import structlog

from broker.config import BrokerSettings
from broker.group.group_metadata import (ClassicGroupMember, GroupConfig, GroupDescription, GroupMetadata, GroupState,
                                         HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
                                         LeaveGroupResponse, MemberIdentity, SyncGroupRequest, SyncGroupResponse)
from broker.group.offset_expiry import Expiry, expired
from broker.group.offsets_records import (GroupMetadataKey, GroupMetadataValue, MemberMetadata, OffsetCommitKey,
                                          OffsetCommitValue, OffsetsPartitionImage, encode_key, group_metadata_records,
                                          offset_commit_records, offset_delete_records, partition_for)
from broker.group.offsets_topic import OFFSETS_TOPIC
from broker.replica_manager import monotonic_ms
from client.errors import (CoordinatorLoadInProgressError, GroupIdNotFoundError, GroupMaxSizeReachedError,
                           GroupSubscribedToTopicError, IllegalGenerationError, InvalidGroupIdError,
                           InvalidRequestError, KafkaError, NonEmptyGroupError, NotCoordinatorError,
                           OffsetMetadataTooLargeError, RequestTimedOutError, UnknownMemberIdError,
                           UnknownTopicOrPartitionError)
from client.record_batch import build_batch, decode_all

log = structlog.get_logger(__name__)

OFFSETS_COMMIT_TIMEOUT_MS = 5000      # Kafka's offsets.commit.timeout.ms
MAX_GROUP_ID_LENGTH = 255             # raftka's bound (Kafka has none): a group id is a record key
POLL_INTERVAL_S = 0.05
STORE_RETRY_MS = 1000                 # a failed group-metadata write is tried again this much later


def wall_ms() -> int:
    return int(time.time() * 1000)


class Ticket:
    """A request parked until the group answers it (a JoinGroup, a follower's SyncGroup)."""

    def __init__(self) -> None:
        self._answered = threading.Event()
        self.response = None

    def answer(self, response) -> None:
        self.response = response
        self._answered.set()

    def wait(self, timeout_s: float) -> bool:
        return self._answered.wait(timeout_s)


@dataclass
class CoordinatorPartition:
    """One __consumer_offsets partition this broker leads, and the groups that live on it."""
    partition: int
    leader_epoch: int
    image: OffsetsPartitionImage = field(default_factory=OffsetsPartitionImage)
    groups: dict[str, GroupMetadata] = field(default_factory=dict)
    loaded: bool = False
    # group -> (generation, member ids) last written: a static member replaced in a Stable group changes
    # the members without a new generation, and that is written down too.
    stored_generation: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    # group -> the newest metadata decided and not yet written. Writers take the newest under store_lock,
    # so the log's last record of a group is its newest decision even when two threads store at once;
    # a failed write stays here and the coordinator thread tries again after STORE_RETRY_MS.
    unwritten: dict[str, GroupMetadataValue] = field(default_factory=dict)
    store_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    store_retry_at_ms: int = 0


@dataclass(frozen=True)
class OffsetCommitPartition:
    topic: str
    partition: int
    offset: int
    leader_epoch: int = -1
    metadata: str | None = ""


@dataclass(frozen=True)
class CommittedOffset:
    topic: str
    partition: int
    offset: int = -1                 # -1: nothing committed
    leader_epoch: int = -1
    metadata: str | None = ""
    error: KafkaError | None = None


def group_id_error(group_id: str | None, allow_empty: bool = False) -> KafkaError | None:
    """Kafka's isValidGroupId, with raftka's length bound."""
    if group_id is None or (group_id == "" and not allow_empty):
        return InvalidGroupIdError("The group id is empty.")
    if len(group_id) > MAX_GROUP_ID_LENGTH:
        return InvalidGroupIdError(f"The group id is longer than {MAX_GROUP_ID_LENGTH} characters.")
    return None


def instance_id_error(group_instance_id: str | None) -> KafkaError | None:
    """A static member's id is stored with the group: not empty (Kafka's clients refuse that too) and
    bounded like a group id."""
    if group_instance_id is not None and not 0 < len(group_instance_id) <= MAX_GROUP_ID_LENGTH:
        return InvalidRequestError(f"The group instance id must be 1 to {MAX_GROUP_ID_LENGTH} characters, "
                                   f"not {len(group_instance_id)}.")
    return None


class GroupCoordinator:
    def __init__(self, broker_id: int, replica_manager, metadata, settings: BrokerSettings,
                 clock_ms: Callable[[], int] = monotonic_ms, wall_clock_ms: Callable[[], int] = wall_ms):
        self.broker_id = broker_id
        self._replica_manager = replica_manager
        self._metadata = metadata                # anything with .image
        self._settings = settings
        self._config = GroupConfig(settings.group_min_session_timeout_ms, settings.group_max_session_timeout_ms,
                                   settings.group_initial_rebalance_delay_ms, settings.group_max_size)
        self._clock_ms = clock_ms
        self._wall_ms = wall_clock_ms
        self._lock = threading.RLock()
        self._partitions: dict[int, CoordinatorPartition] = {}
        self._next_expiry_check_ms = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="group-coordinator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for p in list(self._partitions):
                self._unload(p)

    def _run(self) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            try:
                self.poll()
            except Exception as e:  # noqa: BLE001 - the coordinator must outlive one bad partition
                log.exception("group_coordinator_poll_failed", error=str(e))

    def poll(self) -> None:
        """Load the partitions this broker now leads, unload those it lost, and run the groups' timers."""
        led = self._replica_manager.led_partitions(OFFSETS_TOPIC)
        with self._lock:
            for p in [p for p, cp in self._partitions.items() if led.get(p) != cp.leader_epoch]:
                self._unload(p)
            new = [(p, epoch) for p, epoch in led.items() if p not in self._partitions]
            for p, epoch in new:
                self._partitions[p] = CoordinatorPartition(p, epoch)
        for p, epoch in new:
            self._load(p, epoch)
        self._tick()

    def _tick(self) -> None:
        now = self._clock_ms()
        if now >= self._next_expiry_check_ms:
            self._next_expiry_check_ms = now + self._settings.offsets_retention_check_interval_ms
            self.expire_offsets()
        stores = []
        with self._lock:
            for cp in self._partitions.values():
                for group in list(cp.groups.values()):
                    deadline = group.next_deadline_ms()
                    if deadline is not None and deadline <= now:
                        _answer(group.tick(now))
                        # e.g. the last member's session expired: written once the lock is released
                        stores.append((cp, group.group_id, self._metadata_to_store(cp, group)))
        for cp, group_id, store in stores:
            self._store_group(cp, group_id, store)
        self._retry_stores(now)

    # ---- loading --------------------------------------------------------------------------------

    def _load(self, partition: int, leader_epoch: int) -> None:
        """Replay the partition's log into offsets and groups; only then serve them."""
        started = time.monotonic()
        image = OffsetsPartitionImage()
        offset, records = 0, 0
        try:
            while True:
                chunk, end = self._replica_manager.read_local_log(OFFSETS_TOPIC, partition, offset)
                batch = decode_all(chunk, offset) if chunk else []
                for r in batch:
                    image.replay(r.key, r.value)
                records += len(batch)
                offset = batch[-1].offset + 1 if batch else end
                if offset >= end:
                    break
        except KafkaError as e:
            log.warning("offsets_partition_load_failed", partition=partition, error=str(e))
            with self._lock:
                self._partitions.pop(partition, None)   # the next poll tries again
            return
        now = self._clock_ms()
        with self._lock:
            cp = self._partitions.get(partition)
            if cp is None or cp.leader_epoch != leader_epoch:
                return   # lost the leadership while loading
            cp.image = image
            # A group with offsets and no metadata (a "simple" group: commits without membership) loads
            # as an Empty group, as in Kafka.
            cp.groups = {g: self._restore(g, image.groups.get(g), now) for g in image.group_ids()}
            cp.stored_generation = {g: (value.generation, tuple(sorted(m.member_id for m in value.members)))
                                    for g, value in image.groups.items()}
            cp.loaded = True
        log.info("offsets_partition_loaded", partition=partition, leader_epoch=leader_epoch, records=records,
                 groups=len(image.group_ids()), elapsed_ms=round((time.monotonic() - started) * 1000, 1))

    def _restore(self, group_id: str, value: GroupMetadataValue | None, now_ms: int) -> GroupMetadata:
        """A group as its last stored metadata left it (None: it has offsets only, Empty): its members must
        heartbeat within their session timeout from now, or they are removed and the group rebalances."""
        if value is None:
            return GroupMetadata(group_id, self._config)
        group = GroupMetadata(group_id, self._config, generation_id=value.generation,
                              protocol_type=value.protocol_type or None, protocol_name=value.protocol,
                              leader_id=value.leader)
        for m in value.members:
            group.members[m.member_id] = ClassicGroupMember(
                m.member_id, m.group_instance_id, m.client_id, m.client_host, m.rebalance_timeout_ms,
                m.session_timeout_ms, value.protocol_type, ((value.protocol or "", m.subscription),),
                assignment=m.assignment, heartbeat_deadline_ms=now_ms + m.session_timeout_ms)
        group.state = GroupState.STABLE if group.members else GroupState.EMPTY
        return group

    def _unload(self, partition: int) -> None:
        cp = self._partitions.pop(partition)
        for group in cp.groups.values():
            _answer(group.mark_dead(NotCoordinatorError(f"Broker {self.broker_id} no longer coordinates this group.")))
        log.info("offsets_partition_unloaded", partition=partition, groups=len(cp.groups))

    # ---- routing --------------------------------------------------------------------------------

    def _route(self, group_id: str) -> CoordinatorPartition | KafkaError:
        topic = self._metadata.image.topics.get(OFFSETS_TOPIC)
        if topic is None:
            return NotCoordinatorError(f"{OFFSETS_TOPIC} does not exist yet.")
        partition = partition_for(group_id, len(topic.partitions))
        cp = self._partitions.get(partition)
        if cp is None:
            if partition in self._replica_manager.led_partitions(OFFSETS_TOPIC):
                # Led here, not picked up by poll() yet: Kafka's loadingPartitions. NOT_COORDINATOR would send
                # the client to FindCoordinator, which names this broker again.
                return CoordinatorLoadInProgressError(f"Broker {self.broker_id} is about to load group {group_id!r}.")
            return NotCoordinatorError(f"Broker {self.broker_id} is not the coordinator of group {group_id!r}.")
        if not cp.loaded:
            return CoordinatorLoadInProgressError(f"Broker {self.broker_id} is loading group {group_id!r}.")
        return cp

    def _group(self, group_id: str, create: bool) -> tuple[CoordinatorPartition | None, GroupMetadata | None,
                                                              KafkaError | None]:
        cp = self._route(group_id)
        if isinstance(cp, KafkaError):
            return None, None, cp
        group = cp.groups.get(group_id)
        if group is None and create:
            error = self._no_room_for(group_id)
            if error is not None:
                return cp, None, error
            group = cp.groups[group_id] = GroupMetadata(group_id, self._config)
        return cp, group, None

    def _no_room_for(self, group_id: str) -> KafkaError | None:
        """group.max.count: a new group is refused once this coordinator holds that many (memory bound)."""
        held = sum(len(p.groups) for p in self._partitions.values())
        if held < self._settings.group_max_count:
            return None
        return GroupMaxSizeReachedError(f"Broker {self.broker_id} already coordinates {held} groups "
                                        f"(group.max.count); group {group_id!r} cannot be created.")

    # ---- the group protocol ---------------------------------------------------------------------

    def join_group(self, group_id: str, request: JoinGroupRequest) -> JoinGroupResponse:
        error = group_id_error(group_id) or instance_id_error(request.group_instance_id)
        if error is not None:
            return JoinGroupResponse(error, request.member_id)
        ticket = Ticket()
        with self._lock:
            cp, group, error = self._group(group_id, create=True)
            if error is not None:
                return JoinGroupResponse(error, request.member_id)
            unborn = group.generation_id == 0 and group.state is GroupState.EMPTY and not group.pending_members
            _answer(group.join_group(ticket, request, self._clock_ms()))
            if unborn and group.state is GroupState.EMPTY and not group.members and not group.pending_members \
                    and group_id not in cp.image.group_ids():
                # Refused outright (e.g. INVALID_SESSION_TIMEOUT): Kafka checks before it creates the group.
                del cp.groups[group_id]
            store = self._metadata_to_store(cp, group)
        self._store_group(cp, group_id, store)
        # A join waits for the rebalance, which ends within the rebalance timeout (or the initial delay).
        wait_s = (max(request.rebalance_timeout_ms, self._config.group_initial_rebalance_delay_ms) + 5000) / 1000
        if not ticket.wait(wait_s):
            return JoinGroupResponse(RequestTimedOutError("The rebalance did not complete in time."), request.member_id)
        return ticket.response

    def sync_group(self, group_id: str, request: SyncGroupRequest, timeout_s: float = 300.0) -> SyncGroupResponse:
        error = group_id_error(group_id)
        if error is not None:
            return SyncGroupResponse(error)
        ticket = Ticket()
        with self._lock:
            cp, group, error = self._group(group_id, create=False)
            if error is not None or group is None:
                return SyncGroupResponse(error or _unknown_member())
            _answer(group.sync_group(ticket, request, self._clock_ms()))
            store = self._metadata_to_store(cp, group)
        self._store_group(cp, group_id, store)
        if not ticket.wait(timeout_s):
            return SyncGroupResponse(RequestTimedOutError("The group's leader did not send its assignment in time."))
        return ticket.response

    def heartbeat(self, group_id: str, request: HeartbeatRequest) -> HeartbeatResponse:
        return self._immediate(group_id, lambda group, ticket: group.heartbeat(ticket, request, self._clock_ms()),
                               HeartbeatResponse)

    def leave_group(self, group_id: str, members: list[MemberIdentity]) -> LeaveGroupResponse:
        return self._immediate(group_id, lambda group, ticket: group.leave_group(ticket, members, self._clock_ms()),
                               LeaveGroupResponse)

    def _immediate(self, group_id: str, call, refused):
        """A request the group answers at once (Heartbeat, LeaveGroup)."""
        error = group_id_error(group_id)
        if error is not None:
            return refused(error)
        ticket = Ticket()
        with self._lock:
            cp, group, error = self._group(group_id, create=False)
            if error is not None or group is None:
                return refused(error or _unknown_member())
            _answer(call(group, ticket))
            store = self._metadata_to_store(cp, group)    # the last member left: the group is Empty
        self._store_group(cp, group_id, store)
        return ticket.response

    # ---- group metadata on the log --------------------------------------------------------------

    def _metadata_to_store(self, cp: CoordinatorPartition, group: GroupMetadata) -> GroupMetadataValue | None:
        """A group that reached a new stable generation is written down, so a new coordinator knows its
        members and generation (Kafka stores it before answering the leader's SyncGroup; raftka writes it
        just after: a coordinator lost in between costs the group one rebalance, never an offset). So is
        a group a rebalance left Empty (its last member left or expired), with no members, as Kafka's
        onCompleteJoin does: else a new coordinator would load the last Stable generation's members."""
        stored = (group.generation_id, tuple(sorted(group.members)))
        if group.generation_id == 0 or group.state not in (GroupState.STABLE, GroupState.EMPTY) \
                or cp.stored_generation.get(group.group_id) == stored:
            return None
        cp.stored_generation[group.group_id] = stored
        members = [MemberMetadata(m.member_id, m.group_instance_id, m.client_id, m.client_host,
                                  m.rebalance_timeout_ms, m.session_timeout_ms,
                                  m.metadata(group.protocol_name) if group.protocol_name in m.protocol_names() else b"",
                                  m.assignment or b"") for m in group.members.values()]
        value = GroupMetadataValue(group.protocol_type or "", group.generation_id, group.protocol_name,
                                   group.leader_id, self._wall_ms(), members)
        cp.unwritten[group.group_id] = value
        return value

    def _store_group(self, cp: CoordinatorPartition, group_id: str, value: GroupMetadataValue | None) -> None:
        """Write the group's newest metadata not yet on the log (``value`` None: nothing new was decided),
        outside the coordinator's lock; one writer per partition at a time, so an older decision never
        lands on the log after a newer one."""
        if value is None:
            return
        with cp.store_lock:
            with self._lock:
                newest = cp.unwritten.pop(group_id, None)
            if newest is None:
                return                       # a newer decision was written already by another thread
            error = self._append(cp, group_metadata_records(group_id, newest))
            with self._lock:
                if error is None:
                    cp.image.groups[group_id] = newest
                else:
                    cp.unwritten.setdefault(group_id, newest)     # unless an even newer one is waiting
                    cp.store_retry_at_ms = self._clock_ms() + STORE_RETRY_MS
        log.info("group_stored", group=group_id, generation=newest.generation, members=len(newest.members),
                 error=None if error is None else str(error))

    def _retry_stores(self, now_ms: int) -> None:
        """Group metadata whose write failed is written again (a new coordinator would otherwise load an
        older generation and the group would rebalance once more)."""
        with self._lock:
            due = [(cp, g) for cp in self._partitions.values() if cp.unwritten and now_ms >= cp.store_retry_at_ms
                   for g in list(cp.unwritten)]
        for cp, group_id in due:
            self._store_group(cp, group_id, cp.unwritten.get(group_id))

    def _append(self, cp: CoordinatorPartition, records: list[tuple[bytes, bytes | None]]) -> KafkaError | None:
        """Write records to the group's partition with acks=all, fenced by the epoch we loaded at."""
        now = self._wall_ms()
        batch = build_batch([(key, value, now) for key, value in records])
        [result] = self._replica_manager.append_records(-1, OFFSETS_COMMIT_TIMEOUT_MS,
                                                        [(OFFSETS_TOPIC, cp.partition, batch, cp.leader_epoch)])
        if result.error is None:
            return None
        # Kafka answers a commit whose write failed so that the client looks for the coordinator again.
        return NotCoordinatorError(f"The offsets write failed: {result.error}")

    # ---- offsets --------------------------------------------------------------------------------

    def offset_commit(self, group_id: str, member_id: str, generation_id: int, group_instance_id: str | None,
                      offsets: list[OffsetCommitPartition]) -> list[tuple[str, int, KafkaError | None]]:
        error = group_id_error(group_id, allow_empty=True)
        with self._lock:
            cp, group, routed = self._group(group_id, create=False) if error is None else (None, None, error)
            error = error or routed
            if error is None and group is not None:
                # An accepted member commit restarts the member's session, as Kafka's doCommitOffsets.
                error = group.validate_offset_commit(member_id, generation_id, group_instance_id,
                                                     now_ms=self._clock_ms())
            elif error is None and generation_id >= 0:
                # Kafka's handleCommitOffsets: a generation for a group the coordinator does not have.
                error = IllegalGenerationError(f"Group {group_id} has no generation {generation_id}.")
            elif error is None and group_id not in cp.image.group_ids():
                error = self._no_room_for(group_id)      # a standalone commit would create the group
        if error is not None:
            return [(o.topic, o.partition, error) for o in offsets]
        per = {(o.topic, o.partition): self._commit_error(o) for o in offsets}
        now = self._wall_ms()
        values = {(o.topic, o.partition): OffsetCommitValue(o.offset, o.leader_epoch, o.metadata or "", now)
                  for o in offsets if per[(o.topic, o.partition)] is None}
        written = self._append(cp, offset_commit_records(group_id, values)) if values else None
        if values and written is None:
            with self._lock:
                for (topic, partition), value in values.items():
                    cp.image.apply(OffsetCommitKey(group_id, topic, partition), value)
                if group_id not in cp.groups and self._partitions.get(cp.partition) is cp:
                    # A commit without membership (generation -1) makes the group known, Empty, with no
                    # protocol type: ListGroups and DescribeGroups show it, as Kafka's handleCommitOffsets.
                    cp.groups[group_id] = GroupMetadata(group_id, self._config)
        return [(o.topic, o.partition, per[(o.topic, o.partition)] or written) for o in offsets]

    def _commit_error(self, o: OffsetCommitPartition) -> KafkaError | None:
        if o.metadata is not None and len(o.metadata.encode()) > self._settings.offset_metadata_max_bytes:
            return OffsetMetadataTooLargeError(f"The metadata is larger than offset.metadata.max.bytes "
                                               f"({self._settings.offset_metadata_max_bytes}).")
        topic = self._metadata.image.topics.get(o.topic)
        if topic is None or not 0 <= o.partition < len(topic.partitions):
            return UnknownTopicOrPartitionError(f"{o.topic}-{o.partition} does not exist.")
        return None

    def offset_fetch(self, group_id: str, partitions: list[tuple[str, int]] | None
                     ) -> tuple[KafkaError | None, list[CommittedOffset]]:
        """What ``group_id`` committed for ``partitions`` (None: every partition it committed)."""
        error = group_id_error(group_id, allow_empty=True)
        with self._lock:
            cp = self._route(group_id) if error is None else error
            if isinstance(cp, KafkaError):
                return cp, []
            committed = cp.image.committed(group_id)
        wanted = sorted(committed) if partitions is None else partitions
        out = []
        for topic, partition in wanted:
            value = committed.get((topic, partition))
            out.append(CommittedOffset(topic, partition) if value is None else CommittedOffset(
                topic, partition, value.offset, value.leader_epoch, value.metadata))
        return None, out

    # ---- deleting -------------------------------------------------------------------------------

    def delete_group(self, group_id: str) -> KafkaError | None:
        """Kafka's DeleteGroups for one group: only an empty one (NON_EMPTY_GROUP), and one that exists
        as members or offsets (GROUP_ID_NOT_FOUND); its metadata and offsets get tombstones."""
        error = group_id_error(group_id)
        if error is not None:
            return error
        with self._lock:
            cp, group, error = self._group(group_id, create=False)
            if error is not None:
                return error
            if group is not None and group.state not in (GroupState.EMPTY, GroupState.DEAD):
                return NonEmptyGroupError(f"The group {group_id!r} has members.")
            if group is None and not cp.image.committed(group_id) and group_id not in cp.image.groups:
                return GroupIdNotFoundError(f"The group {group_id!r} does not exist.")
            records = cp.image.delete_group_records(group_id)
        error = self._append(cp, records)
        if error is None:
            with self._lock:
                for key, value in records:
                    cp.image.replay(key, value)
                dead = cp.groups.pop(group_id, None)
                if dead is not None:
                    _answer(dead.mark_dead())
                cp.stored_generation.pop(group_id, None)
            log.info("group_deleted", group=group_id, records=len(records))
        return error

    def offset_delete(self, group_id: str, partitions: list[tuple[str, int]]
                      ) -> tuple[KafkaError | None, list[tuple[str, int, KafkaError | None]]]:
        """Kafka's OffsetDelete: a group's committed offsets, except of topics its members subscribe to."""
        error = group_id_error(group_id)
        if error is not None:
            return error, []
        with self._lock:
            cp, group, error = self._group(group_id, create=False)
            if error is None and group is None and not cp.image.committed(group_id):
                error = GroupIdNotFoundError(f"The group {group_id!r} does not exist.")
            if error is not None:
                return error, []
            subscribed = _subscribed_topics(group) if group is not None else set()
        per = [(t, p, GroupSubscribedToTopicError(f"The group is subscribed to {t}.") if t in subscribed else None)
               for t, p in partitions]
        records = offset_delete_records(group_id, [(t, p) for t, p, e in per if e is None])
        written = self._append(cp, records) if records else None
        if records and written is None:
            with self._lock:
                for key, value in records:
                    cp.image.replay(key, value)
        return None, [(t, p, e or written) for t, p, e in per]

    # ---- offset expiry (offsets.retention.minutes) ------------------------------------------------

    def expire_offsets(self) -> int:
        """Write tombstones for the offsets (and the emptied groups) offset_expiry.py finds expired, with
        acks=all like any commit; returns how many offsets expired. Kafka's cleanupGroupMetadata."""
        now, retention = self._wall_ms(), self._settings.offsets_retention_minutes * 60_000
        plans = []
        with self._lock:
            for cp in self._partitions.values():
                if not cp.loaded:
                    continue
                for group_id in sorted(cp.image.group_ids() | set(cp.groups)):
                    group = cp.groups.get(group_id)
                    found = expired(cp.image, group_id, group, _subscribed_topics(group) if group else set(),
                                    now, retention)
                    if found is not None:
                        plans.append((cp, found))
        for cp, found in plans:
            self._apply_expiry(cp, found)
        return sum(len(found.offsets) for _, found in plans)

    def _apply_expiry(self, cp: CoordinatorPartition, found: Expiry) -> None:
        records = offset_delete_records(found.group_id, found.offsets)
        if found.delete_group and found.group_id in cp.image.groups:   # an offsets-only group has no metadata
            records += [(encode_key(GroupMetadataKey(found.group_id)), None)]
        error = self._append(cp, records)
        if error is not None:
            log.warning("offsets_expiry_failed", group=found.group_id, error=str(error))
            return
        with self._lock:
            for key, value in records:
                cp.image.replay(key, value)
            cp.stored_generation.pop(found.group_id, None)
            group = cp.groups.get(found.group_id)
            if found.delete_group and group is not None and group.state is GroupState.EMPTY:
                del cp.groups[found.group_id]       # nobody joined meanwhile: the group is gone
                _answer(group.mark_dead())
        log.info("offsets_expired", group=found.group_id, offsets=len(found.offsets),
                 group_deleted=found.delete_group)

    # ---- listing and describing -----------------------------------------------------------------

    def list_groups(self) -> tuple[KafkaError | None, list[tuple[str, str, str]]]:
        """(group id, protocol type, state) of every group this broker coordinates, and Kafka's
        COORDINATOR_LOAD_IN_PROGRESS while a partition it leads is not loaded yet (the list is partial)."""
        with self._lock:
            loading = any(not cp.loaded for cp in self._partitions.values()) or bool(
                set(self._replica_manager.led_partitions(OFFSETS_TOPIC)) - set(self._partitions))
            groups = [(g.group_id, g.protocol_type or "", g.state.value) for cp in self._partitions.values()
                      if cp.loaded for g in cp.groups.values() if g.state is not GroupState.DEAD]
        error = CoordinatorLoadInProgressError(f"Broker {self.broker_id} is loading groups.") if loading else None
        return error, groups

    def describe_group(self, group_id: str) -> tuple[KafkaError | None, GroupDescription | None]:
        with self._lock:
            _, group, error = self._group(group_id, create=False)
            if error is not None:
                return error, None
            if group is None:
                return None, GroupDescription(group_id, GroupState.DEAD.value, "", "", ())
            return None, group.describe()


def _subscribed_topics(group: GroupMetadata) -> set[str]:
    """The topics a consumer group's members subscribe to: Kafka's ConsumerProtocolSubscription
    (int16 version, then an array of topic names) in each member's metadata for the chosen protocol."""
    topics: set[str] = set()
    if group.protocol_type != "consumer" or not group.members:
        return topics
    for m in group.members.values():
        data = m.metadata(group.protocol_name) if group.protocol_name in m.protocol_names() else b""
        try:
            count, = struct.unpack_from(">i", data, 2)
            pos = 6
            for _ in range(max(count, 0)):
                size, = struct.unpack_from(">h", data, pos)
                topics.add(data[pos + 2:pos + 2 + size].decode())
                pos += 2 + size
        except (struct.error, UnicodeDecodeError):
            continue    # metadata a consumer did not write: no subscription to protect
    return topics


def _answer(completions) -> None:
    for ticket, response in completions:
        ticket.answer(response)


def _unknown_member() -> KafkaError:
    return UnknownMemberIdError("The coordinator does not know this member.")
