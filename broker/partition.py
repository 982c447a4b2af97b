"""One hosted replica of a partition (Kafka's Partition.scala): its log, state, producers and lock.

Every operation on one replica lives here: append as leader (where a produce is
validated), read for a consumer or a follower (where a follower's fetch is
answered and its position recorded, which may advance the HW), append as follower,
truncate (a diverged tail, an out-of-range fetch), propose an ISR change, make
leader / make follower, list offsets, retention. The decisions about LEO, HW and
ISR are PartitionState's (broker/partition_state.py, pure); this class performs
them on the log under the partition's lock. ReplicaManager only routes to it,
waits for acks and turns metadata changes into make-leader / make-follower.

Results are values with a Kafka error (or None) per partition, never exceptions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import structlog

from broker import metrics
from broker.log import PartitionLog
from broker.metadata.image import PartitionRegistration
from broker.partition_state import PartitionState, truncation_offset
from broker.replica_selector import ReplicaView, read_candidates, select_read_replica
from broker.producer_state import (Duplicate, ProducerStateManager, encode_snapshot, observe_batches,
                                   truncate_producer_state)
from client.errors import (InvalidRequestError, KafkaError, KafkaStorageError, NotEnoughReplicasError,
                           NotLeaderOrFollowerError, OffsetOutOfRangeError)
from client.record_batch import BatchHeader

log = structlog.get_logger(__name__)

EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1


@dataclass(frozen=True)
class ProduceResult:
    topic: str
    partition: int
    error: KafkaError | None = None
    base_offset: int = -1
    log_start_offset: int = -1
    last_offset: int = -1   # acks=all waits until the HW passes this
    # The leader epoch the batch was appended (or found, for a duplicate) at: acks=all succeeds only
    # while the partition is still led at this epoch, whenever its wait starts (a stream's waits are
    # serialized, so it may start after the leadership was lost and regained).
    leader_epoch: int = -1
    topic_id: str = ""      # ... of this incarnation of the topic (a re-created one starts at epoch 0 again)


@dataclass(frozen=True)
class FetchRequestPartition:
    topic: str
    partition: int
    fetch_offset: int
    current_leader_epoch: int
    max_bytes: int
    last_fetched_epoch: int = -1   # followers: the epoch of the last batch they hold


@dataclass
class FetchResult:
    topic: str
    partition: int
    error: KafkaError | None = None
    high_watermark: int = -1
    log_start_offset: int = -1
    log_end_offset: int = -1
    records: bytes = b""
    diverging_epoch: tuple[int, int] | None = None   # (epoch, end offset): the follower must truncate
    preferred_read_replica: int = -1   # KIP-392: no records; the consumer should fetch from this broker


@dataclass(frozen=True)
class ListOffsetsResult:
    topic: str
    partition: int
    error: KafkaError | None = None
    offset: int = -1
    timestamp: int = -1
    leader_epoch: int = -1


@dataclass(frozen=True)
class EpochEndOffset:
    """OffsetForLeaderEpoch: where ``leader_epoch`` ends in this replica's log (-1, -1 when unknown)."""
    topic: str
    partition: int
    error: KafkaError | None = None
    leader_epoch: int = -1
    end_offset: int = -1


@dataclass(frozen=True)
class FollowerRead:
    """What a follower's fetch did besides the read: the HW moved; an ISR expansion to send."""
    result: FetchResult
    high_watermark_moved: bool = False
    alter_request: dict | None = None


@dataclass(frozen=True)
class FollowerReplicaState:
    """A follower as its leader sees it (Kafka's Replica state and replica lag)."""
    broker_id: int
    log_end_offset: int      # from its last fetch offset; -1 until it fetched
    lag: int                 # the leader's log end minus the follower's; -1 while its log end is unknown
    caught_up_ms_ago: int    # since it last reached the leader's log end (replica.lag.time.max.ms)
    in_isr: bool


@dataclass(frozen=True)
class LocalReplicaState:
    """This broker's replica of a partition, as it sees it (DescribeReplicas; Kafka's DescribeLogDirs)."""
    topic: str
    partition: int
    leader_id: int
    leader_epoch: int
    is_leader: bool
    isr: tuple[int, ...]
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int
    followers: tuple[FollowerReplicaState, ...]


class Partition:
    def __init__(self, state: PartitionState, plog: PartitionLog, max_message_bytes: int, topic_id: str,
                 producers: ProducerStateManager):
        self.state = state
        self.log = plog
        self.max_message_bytes = max_message_bytes
        self.topic_id = topic_id
        # Idempotent producers' last batches, rebuilt from the log on load and after truncation.
        self.producers = producers
        # Serialises appends and state changes; reads of the log need no lock.
        self.lock = threading.Lock()

    @property
    def topic(self) -> str:
        return self.state.topic

    @property
    def partition(self) -> int:
        return self.state.partition

    def replica_state(self, lag_now_ms: int, fetched_at: dict[int, int] | None = None) -> LocalReplicaState:
        """A consistent snapshot of this replica (under the lock: an append moves LEO and HW together).
        ``fetched_at``: when each follower's fetch session last fetched it (a follower at our log end was
        caught up then, though the session did not re-read it: fetch_session.py)."""
        fetched_at = fetched_at or {}
        with self.lock:
            state = self.state
            leader_end = state.log_end_offset

            def caught_up_ms(f) -> int:
                at = fetched_at.get(f.broker_id, -1) if f.log_end_offset == leader_end else -1
                return max(f.last_caught_up_ms, at)

            followers = tuple(
                FollowerReplicaState(f.broker_id, f.log_end_offset,
                                     leader_end - f.log_end_offset if f.log_end_offset >= 0 else -1,
                                     max(0, lag_now_ms - caught_up_ms(f)), f.broker_id in state.isr)
                for f in sorted(state.followers.values(), key=lambda f: f.broker_id)) if state.is_leader else ()
            return LocalReplicaState(self.topic, self.partition, state.leader_id, state.leader_epoch,
                                     state.is_leader, tuple(state.isr), self.log.log_start_offset,
                                     self.log.log_end_offset, state.high_watermark, self.log.size_bytes, followers)

    # ---- roles (from committed metadata) ------------------------------------------------

    def make_leader(self, reg: PartitionRegistration, now_ms: int) -> bool:
        """True if this starts a new leadership (False: same epoch, only the ISR moved)."""
        with self.lock:
            new_term = self.state.become_leader(reg, now_ms)
            if new_term:
                # KIP-279: the new epoch starts at our log end, so followers can find where the old one ended.
                self.log.assign_leader_epoch(reg.leader_epoch)
        # No HW checkpoint here (Kafka's makeLeader writes none either): the periodic one (housekeeping) has it
        # within replica.high.watermark.checkpoint.interval.ms, and a checkpoint is only a floor, clamped when
        # read. A failover at 10,000 partitions wrote thousands of files on the publisher's thread, each a few
        # GIL hand-offs, and held every leadership change of the broker back by seconds.
        return new_term

    def assign_leader_epoch_ahead(self, reg: PartitionRegistration) -> None:
        """Before make_leader, on a replica that does not lead yet: write the new epoch's start (KIP-279)
        without an fsync, for the caller to make durable with others at once; make_leader then finds it
        written. A replica leading now is left to make_leader: it may still append at its own epoch."""
        with self.lock:
            if not self.state.is_leader:
                self.log.assign_leader_epoch(reg.leader_epoch, durable=False)

    def make_follower(self, reg: PartitionRegistration) -> bool:
        """True if the leader or its epoch changed (the fetcher must move)."""
        with self.lock:
            new_term = self.state.become_follower(reg)
        return new_term   # no HW checkpoint here either (make_leader)

    def follows(self, leader_id: int, leader_epoch: int) -> bool:
        s = self.state
        return not s.is_leader and s.leader_id == leader_id and s.leader_epoch == leader_epoch

    # ---- produce (the leader) -----------------------------------------------------------

    def append_as_leader(self, acks: int, batch: bytes, header: BatchHeader, leader_epoch: int,
                         now_ms: int, fetched_at: dict[int, int] | None = None) -> tuple[ProduceResult, bool]:
        """Validate and append one checked batch; (result, whether the HW moved). ``fetched_at``: when each
        follower's fetch session last fetched this partition (PartitionState.on_leader_append)."""
        last_seq = header.base_sequence + header.last_offset_delta
        with self.lock:
            state = self.state
            error = state.check_leader_epoch(leader_epoch)
            if error is not None:
                return self._produce_error(error), False
            if acks == -1 and len(state.isr) < state.effective_min_isr:
                # Refused before writing: nothing of this batch is stored (Kafka's NotEnoughReplicas).
                return self._produce_error(NotEnoughReplicasError(
                    f"The size of the current ISR {list(state.isr)} is insufficient to satisfy the min.isr "
                    f"requirement of {state.effective_min_isr} for partition {self.topic}-{self.partition}.")), False
            verdict = self.producers.check(header.producer_id, header.producer_epoch, header.base_sequence,
                                           last_seq)
            if isinstance(verdict, Duplicate):
                # A retry of a batch we hold: its original offset, nothing appended (KIP-98).
                return self._produced(verdict.first_offset, verdict.last_offset), False
            if verdict is not None:
                return self._produce_error(verdict), False
            try:
                info = self.log.append_as_leader(batch, state.leader_epoch, now_ms)
            except KafkaStorageError as e:
                log.error("append_failed", topic=self.topic, partition=self.partition, error=str(e))
                return self._produce_error(e), False
            self.producers.observe(header.producer_id, header.producer_epoch, header.base_sequence, last_seq,
                                   info.base_offset, info.last_offset, max_timestamp=header.max_timestamp,
                                   batch_bytes=info.size)
            hw_moved = state.on_leader_append(info.last_offset + 1, fetched_at)
            metrics.of(state.local_broker_id).appended_as_leader(self.topic, header.record_count, info.size)
            return self._produced(info.base_offset, info.last_offset), hw_moved

    def _produced(self, base_offset: int, last_offset: int) -> ProduceResult:
        return ProduceResult(self.topic, self.partition, None, base_offset, self.log.log_start_offset, last_offset,
                             self.state.leader_epoch, self.topic_id)

    def _produce_error(self, error: KafkaError) -> ProduceResult:
        return ProduceResult(self.topic, self.partition, error)

    def acknowledged(self, result: ProduceResult) -> bool | None:
        """acks=all: True once the HW passed the batch at its epoch; False if that leadership ended
        (the batch may be truncated away: never acknowledge it); None while waiting."""
        state = self.state
        if not state.is_leader or state.leader_epoch != result.leader_epoch:
            return False
        if state.high_watermark >= max(result.base_offset, result.last_offset) + 1:
            return True
        return None

    # ---- fetch (the leader answers consumers and followers) -------------------------------

    def read(self, replica_id: int, p: FetchRequestPartition, max_bytes: int, read_from_replica: bool,
             lag_now_ms: int, is_live: Callable[[int], bool], client_rack: str | None = None,
             rack_of: Callable[[int], str | None] = lambda broker_id: None) -> FollowerRead:
        """Read for a consumer (below the HW) or a follower (to the log end; its fetch offset records
        what it holds, which may move the HW or bring it back into the ISR). A consumer in another rack
        than this leader's may be sent to a follower in its own (``client_rack``, KIP-392)."""
        state = self.state
        is_follower_fetch = replica_id >= 0
        error = (state.check_epoch(p.current_leader_epoch) if read_from_replica and not is_follower_fetch
                 else state.check_leader_epoch(p.current_leader_epoch))
        if error is None and is_follower_fetch and replica_id not in state.replicas:
            error = NotLeaderOrFollowerError(f"Broker {replica_id} is not a replica of {p.topic}-{p.partition}.")
        if error is not None:
            return FollowerRead(FetchResult(p.topic, p.partition, error))
        plog = self.log
        if client_rack and not is_follower_fetch and state.is_leader:
            preferred = self._preferred_read_replica(client_rack, p.fetch_offset, rack_of, lag_now_ms)
            if preferred is not None:
                # Kafka skips the read: the answer only points the consumer to its replica.
                return FollowerRead(FetchResult(p.topic, p.partition, None, state.high_watermark,
                                                plog.log_start_offset, plog.log_end_offset,
                                                preferred_read_replica=preferred))
        if is_follower_fetch:
            diverging = self._diverging_epoch(p)
            if diverging is not None:
                return FollowerRead(FetchResult(p.topic, p.partition, None, state.high_watermark,
                                                plog.log_start_offset, plog.log_end_offset,
                                                diverging_epoch=diverging))
        # Consumers read below the HW only; followers read up to the log end.
        upper = plog.log_end_offset if is_follower_fetch else state.high_watermark
        try:
            # The first batch comes whole even past max_bytes (KIP-74), but a
            # partition whose budget is spent (max_bytes 0) gets nothing.
            records = plog.read(p.fetch_offset, max_bytes, upper) if max_bytes > 0 else b""
        except KafkaError as e:
            return FollowerRead(FetchResult(p.topic, p.partition, e, state.high_watermark, plog.log_start_offset,
                                            plog.log_end_offset))
        moved, request = False, None
        if is_follower_fetch:
            # Only a fetch offset inside our log proves what the follower holds (Kafka updates the
            # follower's state after a successful read); the HW it moves goes into this answer.
            moved, request = self._on_follower_fetch(replica_id, p.fetch_offset, lag_now_ms, is_live)
        return FollowerRead(FetchResult(p.topic, p.partition, None, state.high_watermark, plog.log_start_offset,
                                        plog.log_end_offset, records), moved, request)

    def _preferred_read_replica(self, client_rack: str, fetch_offset: int, rack_of: Callable[[int], str | None],
                                now_ms: int) -> int | None:
        with self.lock:
            state = self.state
            leader = ReplicaView(state.local_broker_id, rack_of(state.local_broker_id), state.log_end_offset, 0)
            followers = read_candidates(state.followers.values(), state.isr, fetch_offset, rack_of, now_ms)
        chosen = select_read_replica(client_rack, leader, followers)
        return None if chosen is leader else chosen.broker_id

    def _diverging_epoch(self, p: FetchRequestPartition) -> tuple[int, int] | None:
        """KIP-595's check: does the follower's last epoch end, in our log, before its fetch offset?"""
        if p.last_fetched_epoch < 0:
            return None
        epoch, end_offset = self.log.end_offset_for_epoch(p.last_fetched_epoch)
        if epoch < p.last_fetched_epoch or end_offset < p.fetch_offset:
            return epoch, end_offset
        return None

    def _on_follower_fetch(self, replica_id: int, fetch_offset: int, now_ms: int,
                           is_live: Callable[[int], bool]) -> tuple[bool, dict | None]:
        state = self.state
        with self.lock:
            moved = state.on_follower_fetch(replica_id, fetch_offset, now_ms)
            if replica_id in state.isr or not is_live(replica_id):
                return moved, None
            new_isr = state.isr_to_expand(replica_id, self._epoch_start_offset())
            if new_isr is None:
                return moved, None
            state.propose_isr(new_isr)
            # Logged by the caller (ReplicaManager): one event per fetch round when it expands many ISRs at once.
            return moved, self._alter_request(new_isr)

    def _epoch_start_offset(self) -> int:
        entries = self.log.epoch_entries
        if entries and entries[-1].epoch == self.state.leader_epoch:
            return entries[-1].start_offset
        return self.state.log_end_offset

    # ---- ISR changes: proposed here, decided by the controller (AlterPartition) -------------

    def _alter_request(self, new_isr: tuple[int, ...]) -> dict:
        s = self.state
        return {"topic": s.topic, "topic_id": self.topic_id, "partition": s.partition,
                "leader_epoch": s.leader_epoch, "partition_epoch": s.partition_epoch, "new_isr": list(new_isr)}

    def isr_shrink_request(self, now_ms: int, lag_time_max_ms: int) -> tuple[dict, tuple[int, ...]] | None:
        """An AlterPartition dropping followers that have not caught up for ``lag_time_max_ms``, and the ISR it
        shrinks (logged by the caller, ReplicaManager, which sees every partition's)."""
        with self.lock:
            new_isr = self.state.isr_to_shrink(now_ms, lag_time_max_ms)
            if new_isr is None:
                return None
            previous = self.state.isr
            self.state.propose_isr(new_isr)
            return self._alter_request(new_isr), previous

    def alter_still_pending(self, request: dict) -> bool:
        """Whether ``request`` is still this partition's pending ISR change (no newer epoch in metadata)."""
        s = self.state
        return (s.is_leader and s.leader_epoch == request["leader_epoch"]
                and s.partition_epoch == request["partition_epoch"] and s.pending_isr == tuple(request["new_isr"]))

    def alter_not_applied(self, request: dict) -> bool:
        """The controller proved the change was not applied: forget it, the next check decides again.
        (A change of unknown outcome stays pending: it may still commit; alter_partition.py.) True if
        the HW moved: a dropped expansion no longer holds it back."""
        with self.lock:
            return self.alter_still_pending(request) and self.state.drop_pending_isr()

    # ---- the follower side ---------------------------------------------------------------

    def fetch_position(self, leader_id: int, leader_epoch: int) -> tuple[int, int] | None:
        """(fetch offset, last fetched epoch) while this replica follows ``leader_id`` at ``leader_epoch``."""
        if not self.follows(leader_id, leader_epoch):
            return None
        return self.log.log_end_offset, self.log.latest_epoch

    def append_fetched(self, leader_id: int, leader_epoch: int, fetched: FetchResult, now_ms: int) -> bool:
        """Apply one partition of a leader's answer: append, truncate, or restart; False to back off."""
        with self.lock:
            if not self.follows(leader_id, leader_epoch):
                return True  # the metadata moved on while the fetch was in flight: drop the answer
            plog, state = self.log, self.state
            if fetched.diverging_epoch is not None:
                self._truncate_diverged(*fetched.diverging_epoch)
                return True
            if isinstance(fetched.error, OffsetOutOfRangeError):
                self._reset_out_of_range(fetched)
                return True
            if fetched.error is not None:
                return False
            if fetched.records:
                try:
                    plog.append_as_follower(fetched.records, now_ms)
                except KafkaStorageError as e:
                    # Our data dir failed (already reported: the broker halts); nothing partial was kept.
                    log.error("follower_append_failed", topic=self.topic, partition=self.partition, error=str(e))
                    return False
                observe_batches(self.producers, fetched.records)
            state.on_follower_append(plog.log_end_offset, fetched.high_watermark)
            if state.log_start_offset != plog.log_start_offset:
                state.on_log_start_moved(plog.log_start_offset)
        return True

    def _truncate_diverged(self, epoch: int, end_offset: int) -> None:
        plog, state = self.log, self.state
        offset, _complete = truncation_offset(epoch, end_offset, plog.end_offset_for_epoch(epoch),
                                              state.high_watermark, plog.log_end_offset)
        log.info("follower_diverged", topic=state.topic, partition=state.partition, leader=state.leader_id,
                 diverging_epoch=epoch, diverging_end_offset=end_offset, truncate_to=offset,
                 log_end_offset=plog.log_end_offset)
        plog.truncate_to(offset)
        state.on_truncated(plog.log_start_offset, plog.log_end_offset)
        # From the newest snapshot at or below the cut, not a rescan of the whole log under the lock.
        self.producers = truncate_producer_state(self.producers, plog, plog.log_end_offset)

    def _reset_out_of_range(self, fetched: FetchResult) -> None:
        """Our fetch offset is outside the leader's log: past its end, cut back; before its start, start there."""
        plog, state = self.log, self.state
        if plog.log_end_offset > fetched.log_end_offset >= 0:
            plog.truncate_to(fetched.log_end_offset)
        elif fetched.log_start_offset > plog.log_end_offset:
            plog.truncate_fully_and_start_at(fetched.log_start_offset)
        state.on_truncated(plog.log_start_offset, plog.log_end_offset)
        self.producers = truncate_producer_state(self.producers, plog, plog.log_end_offset)
        log.info("follower_offset_reset", topic=state.topic, partition=state.partition,
                 log_start_offset=plog.log_start_offset, log_end_offset=plog.log_end_offset)

    # ---- list offsets and housekeeping ----------------------------------------------------

    def list_offset(self, timestamp: int, current_leader_epoch: int, read_from_replica: bool) -> ListOffsetsResult:
        state, topic, partition = self.state, self.topic, self.partition
        error = (state.check_epoch(current_leader_epoch) if read_from_replica
                 else state.check_leader_epoch(current_leader_epoch))
        if error is not None:
            return ListOffsetsResult(topic, partition, error)
        plog, hw = self.log, state.high_watermark
        if timestamp == EARLIEST_TIMESTAMP:
            return ListOffsetsResult(topic, partition, None, plog.log_start_offset, -1, state.leader_epoch)
        if timestamp == LATEST_TIMESTAMP:
            return ListOffsetsResult(topic, partition, None, hw, -1, state.leader_epoch)
        if timestamp < 0:
            return ListOffsetsResult(topic, partition, InvalidRequestError(
                f"unsupported timestamp {timestamp}: use -2 (earliest), -1 (latest) or a time in ms"))
        found = plog.offset_for_timestamp(timestamp)
        if found is None or found[0] >= hw:
            return ListOffsetsResult(topic, partition, None, -1, -1, state.leader_epoch)
        return ListOffsetsResult(topic, partition, None, found[0], found[1], state.leader_epoch)

    def offset_for_leader_epoch(self, current_leader_epoch: int, leader_epoch: int) -> EpochEndOffset:
        """The largest epoch <= ``leader_epoch`` this leader's log knows and where it ends (the log end
        for the latest epoch): a client after a leader change compares it with its position to find
        out whether the log it read was truncated (KIP-320)."""
        error = self.state.check_leader_epoch(current_leader_epoch)
        if error is not None:
            return EpochEndOffset(self.topic, self.partition, error)
        epoch, end_offset = self.log.end_offset_for_epoch(leader_epoch)
        return EpochEndOffset(self.topic, self.partition, None, epoch, end_offset)

    def delete_expired_segments(self, now_ms: int) -> int:
        with self.lock:
            # Never past the HW: a segment not yet replicated is not old, whatever its age.
            deleted = self.log.delete_expired_segments(now_ms, high_watermark=self.state.high_watermark)
            if deleted:
                self.state.on_log_start_moved(self.log.log_start_offset)
        return deleted

    def remove_expired_producers(self, now_ms: int, expiration_ms: int) -> int:
        with self.lock:
            return self.producers.remove_expired(now_ms, expiration_ms)

    def write_producer_snapshot(self) -> bool:
        """Leave the producer state for the next open of the log (at a clean close, once nothing appends):
        False when it does not stand at the log end, which every batch observed guarantees (the next
        open then replays the log, as without a snapshot)."""
        with self.lock:
            if self.producers.map_end_offset != self.log.log_end_offset:
                return False
            if not self.log.holds_producer_snapshot_at_end:   # else the file on disk holds this state already
                snapshot = self.producers.current()
                self.log.write_producer_snapshot(snapshot.offset, encode_snapshot(snapshot), durable=False)
            return True
