"""Owns the partitions this broker hosts: their logs and replication state.

It turns metadata changes into become-leader / become-follower / delete, and
serves produce, fetch and list-offsets by combining each partition's pure
PartitionState (the decisions) with its PartitionLog (the bytes). The gRPC
servicer translates protobuf to these calls and back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import structlog

from broker.append_notifier import HIGH_WATERMARK, LOG_END, AppendNotifier
from broker.config import BrokerSettings
from broker.log import LogConfig, LogManager, PartitionLog
from broker.metadata.image import MetadataImage, PartitionRegistration, local_changes
from broker.partition import PartitionState, truncation_offset
from broker.producer_state import (Duplicate, ProducerStateManager, observe_batches, rebuild_producer_state,
                                   truncate_producer_state)
from client import record_batch
from client.errors import (CorruptMessageError, InvalidRequiredAcksError, KafkaError, KafkaStorageError,
                           LeaderHintInfo, NotEnoughReplicasError, NotLeaderOrFollowerError, RecordTooLargeError,
                           RequestTimedOutError, InvalidRequestError, OffsetOutOfRangeError,
                           UnknownTopicOrPartitionError)

log = structlog.get_logger(__name__)

EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1
CONSUMER_REPLICA_ID = -1


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


@dataclass
class HostedPartition:
    state: PartitionState
    log: PartitionLog
    max_message_bytes: int
    topic_id: str = ""
    # Idempotent producers' last batches, rebuilt from the log on load and after truncation.
    producers: ProducerStateManager = field(default_factory=ProducerStateManager)
    # Serialises appends and state changes; reads of the log need no lock.
    lock: threading.Lock = field(default_factory=threading.Lock)


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


@dataclass(frozen=True)
class ListOffsetsResult:
    topic: str
    partition: int
    error: KafkaError | None = None
    offset: int = -1
    timestamp: int = -1
    leader_epoch: int = -1


class FetcherControl(Protocol):
    """What the replica manager tells the follower fetchers (replica_fetcher.ReplicaFetcherManager)."""

    def follow(self, tp: tuple[str, int], leader_id: int, leader_epoch: int) -> None: ...
    def stop_following(self, tp: tuple[str, int]) -> None: ...


class NoFetchers:
    def follow(self, tp: tuple[str, int], leader_id: int, leader_epoch: int) -> None:
        pass

    def stop_following(self, tp: tuple[str, int]) -> None:
        pass


# Sends an ISR change to the controller: (request as a dict, on_not_applied, still_pending); see alter_partition.py.
AlterPartitionSubmit = Callable[[dict, Callable[[], None], Callable[[], bool]], None]


class ReplicaManager:
    def __init__(self, broker_id: int, logs: LogManager, metadata, settings: BrokerSettings,
                 notifier: AppendNotifier, clock_ms: Callable[[], int] = wall_clock_ms,
                 fetchers: "FetcherControl | None" = None, alter_partition: "AlterPartitionSubmit | None" = None,
                 lag_clock_ms: Callable[[], int] = monotonic_ms):
        self.broker_id = broker_id
        self._fetchers = fetchers or NoFetchers()
        self._alter_partition = alter_partition or (lambda request, not_applied, still_pending: not_applied())
        self._logs = logs
        self._metadata = metadata  # anything with .image: the committed MetadataImage
        self._settings = settings
        self._notifier = notifier
        self._clock_ms = clock_ms            # wall time: record timestamps, retention
        # The ISR lag clock (replica.lag.time.max.ms) is monotonic: a wall clock stepped forward
        # would drop every follower at once, one stepped back would keep a dead one in the ISR.
        self._lag_clock_ms = lag_clock_ms
        self._partitions: dict[tuple[str, int], HostedPartition] = {}
        self._lock = threading.Lock()  # guards the _partitions dict

    # ---- metadata changes ---------------------------------------------------------

    def delete_stray_logs(self) -> None:
        """Logs on disk for partitions the metadata no longer gives this broker (a topic deleted while
        it was down) are removed. Only once the metadata has caught up (the publisher calls this).
        Never while the data dir is offline: a partition that failed to load looks stray too."""
        if self._logs.offline:
            return
        for tp in list(self._logs.all()):
            if tp not in self._partitions:
                log.info("stray_log_deleted", topic=tp[0], partition=tp[1])
                self._logs.delete(*tp)

    def on_metadata_change(self, old: MetadataImage, new: MetadataImage) -> list[tuple[str, int]]:
        """Act on every local change from ``old`` to ``new``; returns the partitions that failed.

        Each partition is handled on its own: one that fails (its log cannot be opened, say)
        must not keep the others from being served. The caller diffs again later for the failed
        ones, and deletes no stray log until a diff applied whole (a partition that never became
        hosted would look stray)."""
        changes = local_changes(old, new, self.broker_id)
        now = self._lag_clock_ms()
        failed: list[tuple[str, int]] = []
        steps = ([(tp, lambda tp=tp: self._stop_partition(tp)) for tp in changes.deleted]
                 + [(tp, lambda tp=tp, reg=reg: self._become(tp, reg, new, now, leader=True))
                    for tp, reg in changes.leaders.items()]
                 + [(tp, lambda tp=tp, reg=reg: self._become(tp, reg, new, now, leader=False))
                    for tp, reg in changes.followers.items()])
        for tp, step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - reported, retried by the publisher
                log.exception("partition_change_failed", topic=tp[0], partition=tp[1], error=str(e))
                failed.append(tp)
        if changes:
            self._notifier.notify()
        return failed

    def _become(self, tp: tuple[str, int], reg: PartitionRegistration, image: MetadataImage,
                now_ms: int, leader: bool) -> None:
        hosted = self._partitions.get(tp)
        topic = image.topics[tp[0]]
        if hosted is None:
            config = LogConfig.from_topic_config(dict(topic.configs), self._settings.log)
            # A log of another topic by this name (deleted and re-created while this broker was away)
            # is replaced, never adopted (KIP-516; broker/log/partition_metadata.py).
            plog = self._logs.get_or_create(tp[0], tp[1], config, self._clock_ms(), topic.topic_id)
            state = PartitionState(tp[0], tp[1], self.broker_id, log_start_offset=plog.log_start_offset,
                                   log_end_offset=plog.log_end_offset, high_watermark=plog.read_high_watermark(),
                                   min_insync_replicas=int(topic.configs.get(
                                       "min.insync.replicas", self._settings.min_insync_replicas)))
            hosted = HostedPartition(state, plog, self._max_message_bytes(topic.configs), topic.topic_id,
                                     rebuild_producer_state(plog))
            with self._lock:
                self._partitions[tp] = hosted
        with hosted.lock:
            if leader:
                new_term = hosted.state.become_leader(reg, now_ms)
                if new_term:
                    # KIP-279: the new epoch starts at our log end, so followers can find where the old one ended.
                    hosted.log.assign_leader_epoch(reg.leader_epoch)
            else:
                new_term = hosted.state.become_follower(reg)
            hosted.log.write_high_watermark(hosted.state.high_watermark)
        if leader:
            self._fetchers.stop_following(tp)
        elif new_term:
            self._fetchers.follow(tp, reg.leader, reg.leader_epoch)
        event = ("became_leader" if leader else "became_follower") if new_term else "isr_updated"
        log.info(event, topic=tp[0], partition=tp[1], leader=reg.leader, leader_epoch=reg.leader_epoch,
                 partition_epoch=reg.partition_epoch, isr=list(reg.isr),
                 log_end_offset=hosted.state.log_end_offset, high_watermark=hosted.state.high_watermark)

    def _max_message_bytes(self, configs) -> int:
        return int(configs.get("max.message.bytes", self._settings.message_max_bytes))

    def _stop_partition(self, tp: tuple[str, int]) -> None:
        self._fetchers.stop_following(tp)
        with self._lock:
            hosted = self._partitions.pop(tp, None)
        if hosted is not None:
            with hosted.lock:
                self._logs.delete(*tp)
            log.info("partition_deleted", topic=tp[0], partition=tp[1])

    # ---- lookups ------------------------------------------------------------------

    def leader_hint(self, topic: str, partition: int) -> LeaderHintInfo | None:
        image = self._metadata.image
        reg = image.partition(topic, partition)
        if reg is None:
            return None
        broker = image.brokers.get(reg.leader)
        if broker is None:
            return LeaderHintInfo(reg.leader, reg.leader_epoch, "", 0)
        return LeaderHintInfo(reg.leader, reg.leader_epoch, broker.host, broker.port)

    def _hosted(self, topic: str, partition: int) -> HostedPartition | KafkaError:
        hosted = self._partitions.get((topic, partition))
        if hosted is not None:
            return hosted
        if self._metadata.image.partition(topic, partition) is None:
            return UnknownTopicOrPartitionError(f"Topic-partition {topic}-{partition} does not exist.")
        return NotLeaderOrFollowerError(f"Broker {self.broker_id} does not host {topic}-{partition}.")

    def high_watermarks(self) -> dict[tuple[str, int], int]:
        return {tp: h.state.high_watermark for tp, h in list(self._partitions.items())}

    # ---- produce ------------------------------------------------------------------

    def append_records(self, acks: int, timeout_ms: int,
                       entries: list[tuple[str, int, bytes, int]]) -> list[ProduceResult]:
        """Append one batch per (topic, partition, batch, current_leader_epoch) entry; with acks=all,
        answer once replicated (or when ``timeout_ms`` runs out)."""
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000
        return self.await_replication(acks, self.append_to_leader(acks, entries), deadline)

    def append_to_leader(self, acks: int, entries: list[tuple[str, int, bytes, int]]) -> list[ProduceResult]:
        """The first half of a produce: check and append each batch to the leader's log, now.

        A produce stream calls this for its requests in the order they arrive, so a
        producer's pipelined batches land in its order (Kafka: one connection's
        requests are handled one at a time)."""
        return [self._append_one(acks, *entry) for entry in entries]

    def await_replication(self, acks: int, results: list[ProduceResult], deadline: float) -> list[ProduceResult]:
        """The second half: with acks=all, wait until the HW passed each appended batch."""
        if acks != -1:
            return results
        return [self._await_one(r, deadline) for r in results]

    def _append_one(self, acks: int, topic: str, partition: int, batch: bytes,
                    leader_epoch: int) -> ProduceResult:
        if acks not in (-1, 0, 1):
            return ProduceResult(topic, partition, InvalidRequiredAcksError(f"acks must be -1, 0 or 1, not {acks}"))
        hosted = self._hosted(topic, partition)
        if isinstance(hosted, KafkaError):
            return ProduceResult(topic, partition, hosted)
        if len(batch) > hosted.max_message_bytes:
            return ProduceResult(topic, partition, RecordTooLargeError(
                f"The record batch is {len(batch)} bytes, larger than max.message.bytes "
                f"({hosted.max_message_bytes})."))
        try:
            header = record_batch.check_batch(batch)
        except CorruptMessageError as e:
            return ProduceResult(topic, partition, e)
        last_seq = header.base_sequence + header.last_offset_delta
        with hosted.lock:
            error = hosted.state.check_leader_epoch(leader_epoch)
            if error is not None:
                return ProduceResult(topic, partition, error)
            state = hosted.state
            if acks == -1 and len(state.isr) < state.effective_min_isr:
                # Refused before writing: nothing of this batch is stored (Kafka's NotEnoughReplicas).
                return ProduceResult(topic, partition, NotEnoughReplicasError(
                    f"The size of the current ISR {list(state.isr)} is insufficient to satisfy the min.isr "
                    f"requirement of {state.effective_min_isr} for partition {topic}-{partition}."))
            verdict = hosted.producers.check(header.producer_id, header.producer_epoch, header.base_sequence,
                                             last_seq)
            if isinstance(verdict, Duplicate):
                # A retry of a batch we hold: its original offset, nothing appended (KIP-98).
                return ProduceResult(topic, partition, None, verdict.first_offset, hosted.log.log_start_offset,
                                     verdict.last_offset, hosted.state.leader_epoch, hosted.topic_id)
            if verdict is not None:
                return ProduceResult(topic, partition, verdict)
            try:
                info = hosted.log.append_as_leader(batch, hosted.state.leader_epoch, self._clock_ms())
            except KafkaStorageError as e:
                log.error("append_failed", topic=topic, partition=partition, error=str(e))
                return ProduceResult(topic, partition, e)
            hosted.producers.observe(header.producer_id, header.producer_epoch, header.base_sequence, last_seq,
                                     info.base_offset, info.last_offset, max_timestamp=header.max_timestamp,
                                     batch_bytes=info.size)
            hw_moved = hosted.state.on_leader_append(info.last_offset + 1)
            log_start = hosted.log.log_start_offset
            epoch = hosted.state.leader_epoch
        if hw_moved:   # a single-replica ISR: the append alone moves the HW
            self._notifier.notify(LOG_END, HIGH_WATERMARK)
        else:
            self._notifier.notify(LOG_END)
        return ProduceResult(topic, partition, None, info.base_offset, log_start, info.last_offset, epoch,
                             hosted.topic_id)

    def _await_one(self, result: ProduceResult, deadline: float) -> ProduceResult:
        """acks=all: answer once the HW passed the batch (every ISR member has it)."""
        if result.error is not None:
            return result
        hosted = self._partitions.get((result.topic, result.partition))
        if hosted is None or hosted.topic_id != result.topic_id:
            return ProduceResult(result.topic, result.partition,
                                 NotLeaderOrFollowerError("The partition moved away while waiting for replication."))
        target = max(result.base_offset, result.last_offset) + 1
        state = hosted.state
        epoch = result.leader_epoch
        if self._notifier.wait_until(lambda: state.high_watermark >= target or not state.is_leader
                                     or state.leader_epoch != epoch, deadline):
            if state.is_leader and state.leader_epoch == epoch:
                return result
            # Deposed while waiting: the batch may be truncated away; never acknowledge it.
            return ProduceResult(result.topic, result.partition, NotLeaderOrFollowerError(
                f"Broker {self.broker_id} lost the leadership of {result.topic}-{result.partition} "
                "before the batch was replicated."))
        return ProduceResult(result.topic, result.partition, RequestTimedOutError(
            "The batch was not replicated to every in-sync replica within the request timeout."))

    # ---- fetch --------------------------------------------------------------------

    def fetch(self, replica_id: int, max_wait_ms: int, min_bytes: int, max_bytes: int,
              partitions: list[FetchRequestPartition], read_from_replica: bool = False,
              still_wanted: Callable[[], bool] = lambda: True) -> list[FetchResult]:
        """Read each partition; long-poll until ``min_bytes`` are there or ``max_wait_ms`` passed."""
        deadline = time.monotonic() + max(0, min(max_wait_ms, self._settings.fetch_max_wait_cap_ms)) / 1000
        results: list[FetchResult] = []

        def ready() -> bool:
            results[:] = self._read_all(replica_id, max_bytes, partitions, read_from_replica)
            total = sum(len(r.records) for r in results)
            return total >= min_bytes or any(r.error is not None for r in results)

        # A follower reads to the log end; a consumer below the HW: each waits for what can feed it.
        self._notifier.wait_until(ready, deadline, still_wanted, on=LOG_END if replica_id >= 0 else HIGH_WATERMARK)
        return results

    def _read_all(self, replica_id: int, max_bytes: int, partitions: list[FetchRequestPartition],
                  read_from_replica: bool) -> list[FetchResult]:
        out = []
        budget = max_bytes
        for p in partitions:
            r = self._read_one(replica_id, p, min(p.max_bytes, max(budget, 0)), read_from_replica)
            budget -= len(r.records)
            out.append(r)
        return out

    def _read_one(self, replica_id: int, p: FetchRequestPartition, max_bytes: int,
                  read_from_replica: bool) -> FetchResult:
        hosted = self._hosted(p.topic, p.partition)
        if isinstance(hosted, KafkaError):
            return FetchResult(p.topic, p.partition, hosted)
        state = hosted.state
        is_follower_fetch = replica_id >= 0
        error = (state.check_epoch(p.current_leader_epoch) if read_from_replica and not is_follower_fetch
                 else state.check_leader_epoch(p.current_leader_epoch))
        if error is None and is_follower_fetch and replica_id not in state.replicas:
            error = NotLeaderOrFollowerError(f"Broker {replica_id} is not a replica of {p.topic}-{p.partition}.")
        if error is not None:
            return FetchResult(p.topic, p.partition, error)
        plog = hosted.log
        if is_follower_fetch:
            diverging = self._diverging_epoch(plog, p)
            if diverging is not None:
                return FetchResult(p.topic, p.partition, None, state.high_watermark, plog.log_start_offset,
                                   plog.log_end_offset, diverging_epoch=diverging)
        # Consumers read below the HW only; followers read up to the log end.
        upper = plog.log_end_offset if is_follower_fetch else state.high_watermark
        try:
            # The first batch comes whole even past max_bytes (KIP-74), but a
            # partition whose budget is spent (max_bytes 0) gets nothing.
            records = plog.read(p.fetch_offset, max_bytes, upper) if max_bytes > 0 else b""
        except KafkaError as e:
            return FetchResult(p.topic, p.partition, e, state.high_watermark, plog.log_start_offset,
                               plog.log_end_offset)
        if is_follower_fetch:
            # Only a fetch offset inside our log proves what the follower holds (Kafka updates the
            # follower's state after a successful read); the HW it moves goes into this answer.
            self._on_follower_fetch(hosted, replica_id, p.fetch_offset)
        return FetchResult(p.topic, p.partition, None, state.high_watermark, plog.log_start_offset,
                           plog.log_end_offset, records)

    @staticmethod
    def _diverging_epoch(plog: PartitionLog, p: FetchRequestPartition) -> tuple[int, int] | None:
        """KIP-595's check: does the follower's last epoch end, in our log, before its fetch offset?"""
        if p.last_fetched_epoch < 0:
            return None
        epoch, end_offset = plog.end_offset_for_epoch(p.last_fetched_epoch)
        if epoch < p.last_fetched_epoch or end_offset < p.fetch_offset:
            return epoch, end_offset
        return None

    def _on_follower_fetch(self, hosted: HostedPartition, replica_id: int, fetch_offset: int) -> None:
        """Record the follower's progress; the HW may move; a follower that caught up rejoins the ISR."""
        state = hosted.state
        with hosted.lock:
            moved = state.on_follower_fetch(replica_id, fetch_offset, self._lag_clock_ms())
            new_isr = None
            if replica_id not in state.isr and self._metadata.image.is_live(replica_id):
                new_isr = state.isr_to_expand(replica_id, self._epoch_start_offset(hosted))
                if new_isr is not None:
                    state.pending_isr = new_isr
                    request = self._alter_request(hosted, new_isr)
        if moved:
            self._notifier.notify(HIGH_WATERMARK)
        if new_isr is not None:
            log.info("isr_expand_requested", topic=state.topic, partition=state.partition, replica=replica_id,
                     isr=list(new_isr), partition_epoch=state.partition_epoch)
            self._submit_alter(hosted, request)

    @staticmethod
    def _epoch_start_offset(hosted: HostedPartition) -> int:
        entries = hosted.log.epoch_entries
        if entries and entries[-1].epoch == hosted.state.leader_epoch:
            return entries[-1].start_offset
        return hosted.state.log_end_offset

    def _alter_request(self, hosted: HostedPartition, new_isr: tuple[int, ...]) -> dict:
        s = hosted.state
        return {"topic": s.topic, "topic_id": hosted.topic_id, "partition": s.partition,
                "leader_epoch": s.leader_epoch, "partition_epoch": s.partition_epoch, "new_isr": list(new_isr)}

    def _submit_alter(self, hosted: HostedPartition, request: dict) -> None:
        self._alter_partition(request, lambda: self._alter_not_applied(hosted, request),
                              lambda: self._alter_still_pending(hosted, request))

    def _alter_not_applied(self, hosted: HostedPartition, request: dict) -> None:
        """The controller proved the change was not applied: forget it, the next check decides again.
        (A change of unknown outcome stays pending: it may still commit; alter_partition.py.)"""
        with hosted.lock:
            if self._alter_still_pending(hosted, request):
                hosted.state.pending_isr = None

    def _alter_still_pending(self, hosted: HostedPartition, request: dict) -> bool:
        """Whether ``request`` is still this partition's pending ISR change (no newer epoch in metadata)."""
        s = hosted.state
        return (self._partitions.get((s.topic, s.partition)) is hosted and s.is_leader
                and s.leader_epoch == request["leader_epoch"] and s.partition_epoch == request["partition_epoch"]
                and s.pending_isr == tuple(request["new_isr"]))

    def maybe_shrink_isr(self) -> None:
        """Leaders drop followers that have not caught up for replica.lag.time.max.ms (via the controller)."""
        now = self._lag_clock_ms()
        for hosted in list(self._partitions.values()):
            with hosted.lock:
                new_isr = hosted.state.isr_to_shrink(now, self._settings.replica_lag_time_max_ms)
                if new_isr is None:
                    continue
                hosted.state.pending_isr = new_isr
                request = self._alter_request(hosted, new_isr)
            log.info("isr_shrink_requested", topic=hosted.state.topic, partition=hosted.state.partition,
                     isr=list(new_isr), previous_isr=list(hosted.state.isr))
            self._submit_alter(hosted, request)

    # ---- the follower side (called by the replica fetchers) -------------------------

    def fetch_position(self, tp: tuple[str, int], leader_id: int,
                       leader_epoch: int) -> tuple[int, int] | None:
        """(fetch offset, last fetched epoch) while this broker follows ``leader_id`` at ``leader_epoch``."""
        hosted = self._partitions.get(tp)
        if hosted is None or not self._follows(hosted, leader_id, leader_epoch):
            return None
        return hosted.log.log_end_offset, hosted.log.latest_epoch

    @staticmethod
    def _follows(hosted: HostedPartition, leader_id: int, leader_epoch: int) -> bool:
        s = hosted.state
        return not s.is_leader and s.leader_id == leader_id and s.leader_epoch == leader_epoch

    def on_fetched(self, tp: tuple[str, int], leader_id: int, leader_epoch: int, fetched: FetchResult) -> bool:
        """Apply one partition of a leader's answer: append, truncate, or restart; False to back off."""
        hosted = self._partitions.get(tp)
        if hosted is None:
            return True
        with hosted.lock:
            if not self._follows(hosted, leader_id, leader_epoch):
                return True  # the metadata moved on while the fetch was in flight: drop the answer
            plog, state = hosted.log, hosted.state
            if fetched.diverging_epoch is not None:
                self._truncate_diverged(hosted, *fetched.diverging_epoch)
                return True
            if isinstance(fetched.error, OffsetOutOfRangeError):
                self._reset_out_of_range(hosted, fetched)
                return True
            if fetched.error is not None:
                return False
            if fetched.records:
                try:
                    plog.append_as_follower(fetched.records, self._clock_ms())
                except KafkaStorageError as e:
                    # Our data dir failed (already reported: the broker halts); nothing partial was kept.
                    log.error("follower_append_failed", topic=tp[0], partition=tp[1], error=str(e))
                    return False
                observe_batches(hosted.producers, fetched.records)
            state.on_follower_append(plog.log_end_offset, fetched.high_watermark)
            state.log_start_offset = plog.log_start_offset
        if fetched.records:
            self._notifier.notify(HIGH_WATERMARK)  # consumers reading this replica (KIP-392)
        return True

    def _truncate_diverged(self, hosted: HostedPartition, epoch: int, end_offset: int) -> None:
        plog, state = hosted.log, hosted.state
        offset, _complete = truncation_offset(epoch, end_offset, plog.end_offset_for_epoch(epoch),
                                              state.high_watermark, plog.log_end_offset)
        log.info("follower_diverged", topic=state.topic, partition=state.partition, leader=state.leader_id,
                 diverging_epoch=epoch, diverging_end_offset=end_offset, truncate_to=offset,
                 log_end_offset=plog.log_end_offset)
        plog.truncate_to(offset)
        state.log_end_offset = plog.log_end_offset
        state.high_watermark = min(state.high_watermark, state.log_end_offset)
        # From the newest snapshot at or below the cut, not a rescan of the whole log under the lock.
        hosted.producers = truncate_producer_state(hosted.producers, plog, plog.log_end_offset)

    def _reset_out_of_range(self, hosted: HostedPartition, fetched: FetchResult) -> None:
        """Our fetch offset is outside the leader's log: past its end, cut back; before its start, start there."""
        plog, state = hosted.log, hosted.state
        if plog.log_end_offset > fetched.log_end_offset >= 0:
            plog.truncate_to(fetched.log_end_offset)
        elif fetched.log_start_offset > plog.log_end_offset:
            plog.truncate_fully_and_start_at(fetched.log_start_offset)
        state.log_end_offset, state.log_start_offset = plog.log_end_offset, plog.log_start_offset
        state.high_watermark = min(state.high_watermark, state.log_end_offset)
        hosted.producers = truncate_producer_state(hosted.producers, plog, plog.log_end_offset)
        log.info("follower_offset_reset", topic=state.topic, partition=state.partition,
                 log_start_offset=plog.log_start_offset, log_end_offset=plog.log_end_offset)

    # ---- list offsets -------------------------------------------------------------

    def list_offset(self, topic: str, partition: int, timestamp: int, current_leader_epoch: int,
                    read_from_replica: bool = False) -> ListOffsetsResult:
        hosted = self._hosted(topic, partition)
        if isinstance(hosted, KafkaError):
            return ListOffsetsResult(topic, partition, hosted)
        state = hosted.state
        error = (state.check_epoch(current_leader_epoch) if read_from_replica
                 else state.check_leader_epoch(current_leader_epoch))
        if error is not None:
            return ListOffsetsResult(topic, partition, error)
        plog, hw = hosted.log, state.high_watermark
        if timestamp == EARLIEST_TIMESTAMP:
            return ListOffsetsResult(topic, partition, None, plog.log_start_offset, -1, state.leader_epoch)
        if timestamp == LATEST_TIMESTAMP:
            return ListOffsetsResult(topic, partition, None, hw, -1, state.leader_epoch)
        if timestamp < 0:
            return ListOffsetsResult(topic, partition, InvalidRequestError(f"unsupported timestamp {timestamp}: use -2 (earliest), -1 (latest) or a time in ms"))
        found = plog.offset_for_timestamp(timestamp)
        if found is None or found[0] >= hw:
            return ListOffsetsResult(topic, partition, None, -1, -1, state.leader_epoch)
        return ListOffsetsResult(topic, partition, None, found[0], found[1], state.leader_epoch)

    # ---- housekeeping -------------------------------------------------------------

    def checkpoint_high_watermarks(self) -> None:
        self._logs.checkpoint_high_watermarks(self.high_watermarks())

    def remove_expired_producers(self) -> int:
        """Forget producers idle for producer.id.expiration.ms (by their batches' own timestamps: wall time)."""
        now, removed = self._clock_ms(), 0
        for hosted in list(self._partitions.values()):
            with hosted.lock:
                removed += hosted.producers.remove_expired(now, self._settings.producer_id_expiration_ms)
        return removed

    def run_retention(self) -> int:
        deleted = 0
        now = self._clock_ms()
        for hosted in list(self._partitions.values()):
            with hosted.lock:
                # Never past the HW: a segment not yet replicated is not old, whatever its age.
                deleted += hosted.log.delete_expired_segments(now, high_watermark=hosted.state.high_watermark)
                hosted.state.log_start_offset = hosted.log.log_start_offset
        return deleted
