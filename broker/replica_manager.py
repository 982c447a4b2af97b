"""Routes requests to the partitions this broker hosts (Kafka's ReplicaManager).

It turns metadata changes into make-leader / make-follower / delete on each hosted
Partition (broker/partition.py: the replica's log, state, producers and lock, where
every per-replica operation lives), routes produce, fetch and list-offsets to them,
waits for acks=all and for fetch data (the AppendNotifier), and sends the ISR
changes partitions propose to the controller. The request layer (kafka_apis.py)
calls it; a produced batch is validated (produce_validation.py) before it is routed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Protocol

import structlog

from broker import metrics
from broker.append_notifier import HIGH_WATERMARK, LOG_END, AppendNotifier
from broker.config import BrokerSettings
from broker.delayed_fetch import COMPLETE, IGNORE, POKE, DelayedFetch, Waker
from broker.fetch_session import FetchSession
from broker.log import LogConfig, LogManager
from broker.logging_setup import log_partitions
from broker.metadata.image import MetadataImage, PartitionRegistration, local_changes
from broker.partition import (EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, EpochEndOffset, FetchRequestPartition, FetchResult,
                              ListOffsetsResult, LocalReplicaState, Partition, ProduceResult)
from broker.partition_state import PartitionState
from broker.produce_validation import acks_error, validate_batch
from broker.producer_state import rebuild_producer_state
from client.errors import (KafkaError, KafkaStorageError, LeaderHintInfo, NotLeaderOrFollowerError,
                           RequestTimedOutError, UnknownTopicOrPartitionError)

log = structlog.get_logger(__name__)

CONSUMER_REPLICA_ID = -1

__all__ = ["CONSUMER_REPLICA_ID", "EARLIEST_TIMESTAMP", "LATEST_TIMESTAMP", "FetchRequestPartition", "FetchResult",
           "ListOffsetsResult", "ProduceResult", "ReplicaManager", "monotonic_ms", "wall_clock_ms"]


# A metadata change of at least this many partitions writes what must be durable first and syncs it once.
SYNC_TOGETHER_FROM = 16


def _run_steps(steps: list[tuple[tuple[str, int], Callable[[], None]]], workers: int = 1) -> list[tuple[str, int]]:
    """Run each partition's step on its own: one that fails (its log cannot be opened, say) must not keep
    the others from being served; the failed partitions are returned for the publisher to retry. With
    ``workers`` > 1, steps that only write files run that many at a time (_FILE_STEP_WORKERS)."""
    def run(tp: tuple[str, int], step: Callable[[], None]) -> bool:
        try:
            step()
            return True
        except Exception as e:  # noqa: BLE001 - reported, retried by the publisher
            log.exception("partition_change_failed", topic=tp[0], partition=tp[1], error=str(e))
            return False
    if workers <= 1 or len(steps) < 2 * workers:
        done = [run(tp, step) for tp, step in steps]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="partition-change") as pool:
            done = list(pool.map(lambda s: run(*s), steps))
    return [tp for (tp, _), ok in zip(steps, done) if not ok]


# A failover's new leaderships each write a file (the leader epoch checkpoint, KIP-279) before one sync makes
# them durable. Each write is a few system calls, and at each the broker's busy threads (fetchers, produce
# requests) may take the GIL for up to a switch interval (5 ms): one at a time, 1,667 new leaderships took 1-2 ms
# apiece on the publisher's thread at 10,000 partitions (then with a new file and a rename each), and held every
# leadership change of the broker back by seconds. Several at a time, their waits overlap.
_FILE_STEP_WORKERS = 8


# What a metadata change made of this broker's partitions, when many: one event per kind (logging_setup).
_ROLE_EVENT_BULK = {"became_leader": "became_leaders", "became_follower": "became_followers",
                    "isr_updated": "isrs_updated"}


def _tell_roles(told: list[tuple[str, dict]]) -> None:
    """Log what one metadata change made of this broker's partitions: an event each, or one per kind in bulk."""
    by_event: dict[str, list[dict]] = {}
    for event, fields in told:
        by_event.setdefault(event, []).append(fields)
    for event, each in by_event.items():
        log_partitions(log, event, _ROLE_EVENT_BULK[event], each, first_keys=("leader", "isr"))


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


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


def _tell_expansions(expansions: list[dict]) -> None:
    """The ISR expansions one read pass of a fetch proposed, told by that pass (not when its long poll ends,
    which may be after the controller has already applied them): an event each, or one for many (a restarted
    follower catching up on thousands of partitions at once)."""
    log_partitions(log, "isr_expand_requested", "isr_expands_requested", expansions, ("replica", "isr"))


class ReplicaManager:
    def __init__(self, broker_id: int, logs: LogManager, metadata, settings: BrokerSettings,
                 notifier: AppendNotifier, clock_ms: Callable[[], int] = wall_clock_ms,
                 fetchers: "FetcherControl | None" = None, alter_partition: "AlterPartitionSubmit | None" = None,
                 lag_clock_ms: Callable[[], int] = monotonic_ms,
                 rack_of: Callable[[int], str | None] = lambda broker_id: None):
        self.broker_id = broker_id
        # A broker's rack as Kafka clients see it (KIP-392's choice of a replica to read); None: none.
        self._rack_of = rack_of
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
        self._partitions: dict[tuple[str, int], Partition] = {}
        self._by_topic: dict[str, dict[int, Partition]] = {}   # the same, by topic (one topic's, at once)
        self._lock = threading.Lock()  # guards the _partitions and _by_topic dicts
        # Each follower's latest fetch session (its ReplicaFetchStream; broker/fetch_session.py), by broker id.
        self._sessions: dict[int, FetchSession] = {}

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
        failed = _run_steps([(tp, lambda tp=tp: self._stop_partition(tp)) for tp in changes.deleted])
        roles = ([(tp, reg, True) for tp, reg in changes.leaders.items()]
                 + [(tp, reg, False) for tp, reg in changes.followers.items()])
        # What must be durable before a partition leads or fetches (the logs of partitions new here, the new
        # leader epochs of partitions this broker starts to lead, KIP-279) costs fsyncs per file. A change of
        # many partitions (a new topic, a broker's restart or failure) writes them all without, then makes
        # them durable at once: one syncfs (LogManager.sync), before any of them leads or fetches. A small
        # one fsyncs as it goes: a syncfs also flushes every other log's unflushed data.
        together = len(roles) >= SYNC_TOGETHER_FROM
        new_here = [(tp, lambda tp=tp: self._host(tp, new, durable=not together))
                    for tp, _, _ in roles if tp not in self._partitions]
        not_hosted = set(_run_steps(new_here))
        epochs = [(tp, lambda tp=tp, reg=reg: self._partitions[tp].assign_leader_epoch_ahead(reg))
                  for tp, reg, leader in roles
                  if together and leader and tp not in not_hosted and not self._partitions[tp].state.is_leader]
        not_hosted |= set(_run_steps(epochs, _FILE_STEP_WORKERS))
        if together and (new_here or epochs):
            try:
                self._logs.sync()
            except KafkaStorageError:   # the data dir is offline now (the broker halts): none of them serves
                not_hosted |= {tp for tp, _ in new_here + epochs}
        failed += sorted(not_hosted)
        told: list[tuple[str, dict]] = []
        failed += _run_steps([(tp, lambda tp=tp, reg=reg, leader=leader: self._become(tp, reg, new, now, leader, told))
                              for tp, reg, leader in roles if tp not in not_hosted])
        if changes:
            self._notifier.notify()
        _tell_roles(told)
        return failed

    def _become(self, tp: tuple[str, int], reg: PartitionRegistration, image: MetadataImage,
                now_ms: int, leader: bool, told: list[tuple[str, dict]]) -> None:
        hosted = self._partitions.get(tp) or self._host(tp, image)
        known_epoch, known_isr = hosted.state.partition_epoch, hosted.state.isr   # only this thread changes them
        new_term = hosted.make_leader(reg, now_ms) if leader else hosted.make_follower(reg)
        self._mark_changed(tp)
        if leader:
            metrics.of(self.broker_id).isr_changed(known_epoch, known_isr, reg.isr)
            self._fetchers.stop_following(tp)
        elif new_term:
            self._fetchers.follow(tp, reg.leader, reg.leader_epoch)
        event = ("became_leader" if leader else "became_follower") if new_term else "isr_updated"
        told.append((event, dict(topic=tp[0], partition=tp[1], leader=reg.leader, leader_epoch=reg.leader_epoch,
                                 partition_epoch=reg.partition_epoch, isr=list(reg.isr),
                                 log_end_offset=hosted.state.log_end_offset,
                                 high_watermark=hosted.state.high_watermark)))

    def _host(self, tp: tuple[str, int], image: MetadataImage, durable: bool = True) -> Partition:
        """Open (or create) the log of a partition this broker now hosts, and its Partition (without
        ``durable``, a new log's files wait for the caller's LogManager.sync())."""
        topic = image.topics[tp[0]]
        config = LogConfig.from_topic_config(dict(topic.configs), self._settings.log)
        # A log of another topic by this name (deleted and re-created while this broker was away)
        # is replaced, never adopted (KIP-516; broker/log/partition_metadata.py).
        plog = self._logs.get_or_create(tp[0], tp[1], config, self._clock_ms(), topic.topic_id, durable)
        state = PartitionState(tp[0], tp[1], self.broker_id, log_start_offset=plog.log_start_offset,
                               log_end_offset=plog.log_end_offset, high_watermark=plog.read_high_watermark(),
                               min_insync_replicas=int(topic.configs.get(
                                   "min.insync.replicas", self._settings.min_insync_replicas)))
        hosted = Partition(state, plog, self._max_message_bytes(topic.configs), topic.topic_id,
                           rebuild_producer_state(plog))
        with self._lock:
            self._partitions[tp] = hosted
            self._by_topic.setdefault(tp[0], {})[tp[1]] = hosted
        return hosted

    def _max_message_bytes(self, configs) -> int:
        return int(configs.get("max.message.bytes", self._settings.message_max_bytes))

    def _stop_partition(self, tp: tuple[str, int]) -> None:
        self._fetchers.stop_following(tp)
        with self._lock:
            hosted = self._partitions.pop(tp, None)
            of_topic = self._by_topic.get(tp[0], {})
            of_topic.pop(tp[1], None)
            if not of_topic:
                self._by_topic.pop(tp[0], None)
        self._mark_changed(tp)
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

    def _hosted(self, topic: str, partition: int) -> Partition | KafkaError:
        hosted = self._partitions.get((topic, partition))
        if hosted is not None:
            return hosted
        if self._metadata.image.partition(topic, partition) is None:
            return UnknownTopicOrPartitionError(f"Topic-partition {topic}-{partition} does not exist.")
        return NotLeaderOrFollowerError(f"Broker {self.broker_id} does not host {topic}-{partition}.")

    def led_partitions(self, topic: str) -> dict[int, int]:
        """partition -> leader epoch of ``topic``'s partitions this broker leads (a group coordinator
        serves the groups of exactly these)."""
        with self._lock:
            of_topic = list(self._by_topic.get(topic, {}).items())
        return {p: h.state.leader_epoch for p, h in of_topic if h.state.is_leader}

    def read_local_log(self, topic: str, partition: int, from_offset: int,
                       max_bytes: int = 1 << 20) -> tuple[bytes, int]:
        """(whole batches from ``from_offset`` up to the log end, the log end offset) of a hosted
        partition: a new group coordinator loads its partition this way, as Kafka's does."""
        hosted = self._hosted(topic, partition)
        if isinstance(hosted, KafkaError):
            raise hosted
        end = hosted.log.log_end_offset
        start = max(from_offset, hosted.log.log_start_offset)
        return (hosted.log.read(start, max_bytes) if start < end else b""), end

    def replica_states(self, topics: set[str] | None) -> list[LocalReplicaState]:
        """Every hosted replica (of ``topics``; None: all), as this broker sees it, in topic-partition order."""
        now = self._lag_clock_ms()
        hosted = sorted(((tp, h) for tp, h in list(self._partitions.items()) if topics is None or tp[0] in topics),
                        key=lambda item: item[0])
        return [h.replica_state(now, self._fetched_at(tp)) for tp, h in hosted]

    def hosted_partitions(self) -> dict[tuple[str, int], Partition]:
        """A copy of the partitions this broker hosts (the metrics' state gauges read them)."""
        return dict(self._partitions)

    @property
    def log_dir(self) -> tuple[str, bool]:
        """(this broker's data dir, offline?): Kafka's log.dirs, of which raftka has one."""
        return str(self._logs.data_dir.resolve()), self._logs.offline

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
        refused = acks_error(acks)
        if refused is not None:
            return ProduceResult(topic, partition, refused)
        hosted = self._hosted(topic, partition)
        if isinstance(hosted, KafkaError):
            return ProduceResult(topic, partition, hosted)
        header = validate_batch(batch, hosted.max_message_bytes)
        if isinstance(header, KafkaError):
            return ProduceResult(topic, partition, header)
        result, hw_moved = hosted.append_as_leader(acks, batch, header, leader_epoch, self._clock_ms(),
                                                   self._fetched_at((topic, partition)))
        self._mark_changed((topic, partition))
        if result.error is None:   # the followers' parked fetches of it: answered now, on this thread
            self._notifier.delayed_fetches.complete_on_append((topic, partition))
        if hw_moved:   # a single-replica ISR: the append alone moves the HW
            self._notifier.notify(LOG_END, HIGH_WATERMARK)
        elif result.error is None:
            self._notifier.notify(LOG_END)
        return result

    def _await_one(self, result: ProduceResult, deadline: float) -> ProduceResult:
        """acks=all: answer once the HW passed the batch (every ISR member has it)."""
        if result.error is not None:
            return result
        hosted = self._partitions.get((result.topic, result.partition))
        if hosted is None or hosted.topic_id != result.topic_id:
            return ProduceResult(result.topic, result.partition,
                                 NotLeaderOrFollowerError("The partition moved away while waiting for replication."))
        if self._notifier.wait_until(lambda: hosted.acknowledged(result) is not None, deadline):
            if hosted.acknowledged(result):
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
              still_wanted: Callable[[], bool] = lambda: True, client_rack: str | None = None) -> list[FetchResult]:
        """Read each partition; long-poll until ``min_bytes`` are there or ``max_wait_ms`` passed. A
        consumer's ``client_rack`` may get it sent to a replica in its rack (answered at once)."""
        deadline = time.monotonic() + max(0, min(max_wait_ms, self._settings.fetch_max_wait_cap_ms)) / 1000
        results: list[FetchResult] = []

        def ready() -> bool:
            expansions: list[dict] = []
            results[:] = self._read_all(replica_id, max_bytes, partitions, read_from_replica, client_rack, expansions)
            _tell_expansions(expansions)
            total = sum(len(r.records) for r in results)
            return total >= min_bytes or any(r.error is not None or r.preferred_read_replica >= 0 for r in results)

        # A follower reads to the log end; a consumer below the HW: each waits for what can feed it.
        self._notifier.wait_until(ready, deadline, still_wanted, on=LOG_END if replica_id >= 0 else HIGH_WATERMARK)
        return results

    def open_session(self, replica_id: int) -> FetchSession:
        """A follower's new fetch stream: its fetch session, the follower's latest (an older stream of
        the same follower, being replaced, no longer speaks for it)."""
        session = FetchSession(replica_id)
        with self._lock:
            self._sessions[replica_id] = session
        return session

    def close_session(self, session: FetchSession) -> None:
        with self._lock:
            if self._sessions.get(session.replica_id) is session:
                del self._sessions[session.replica_id]

    def session_fetch(self, session: FetchSession, max_wait_ms: int, max_bytes: int,
                      partitions: list[FetchRequestPartition], forgotten: Iterable[tuple[str, int]],
                      incremental: bool, still_wanted: Callable[[], bool] = lambda: True) -> list[FetchResult]:
        """park_session_fetch, waited for on this thread: the answer ([] if ``still_wanted`` turned False)."""
        answers: list[list[FetchResult]] = []
        fetch = self.park_session_fetch(session, max_wait_ms, max_bytes, partitions, forgotten, incremental,
                                        answers.append)
        self.await_fetch(fetch, still_wanted)
        return answers[0] if answers else []

    def park_session_fetch(self, session: FetchSession, max_wait_ms: int, max_bytes: int,
                           partitions: list[FetchRequestPartition], forgotten: Iterable[tuple[str, int]],
                           incremental: bool, respond: Callable[[list[FetchResult]], None],
                           waker: Waker | None = None) -> DelayedFetch:
        """A follower's fetch in its session: read only the partitions that can say something new, answer
        only those that do. With nothing to answer it long-polls, parked (broker/delayed_fetch.py) until an
        append feeds it (the appending thread then answers it: ``respond`` must not block), an error or
        metadata change, or its deadline. Answered at once when it can be (``respond`` on this thread). ``waker``:
        how the fetch's own thread sleeps while it is parked (await_fetch)."""
        session.update(partitions, forgotten, incremental, self._lag_clock_ms())
        deadline = time.monotonic() + max(0, min(max_wait_ms, self._settings.fetch_max_wait_cap_ms)) / 1000
        reads: dict[tuple[str, int], FetchResult] = {}
        budget = [max_bytes]

        def ready() -> bool:
            found = False
            expansions: list[dict] = []
            for tp in session.candidates(self._lag_clock_ms()):
                sp = session.partitions[tp]
                hosted = self._partitions.get(tp)
                state = None if hosted is None else hosted.state
                earlier = reads.get(tp)
                if not (session.needs_read(tp, sp, state) if earlier is None
                        else session.read_is_stale(earlier, state)):
                    continue
                read = self._read_one(session.replica_id, sp.fetch, min(sp.fetch.max_bytes, max(budget[0], 0)),
                                      False, None, expansions)
                budget[0] -= len(read.records)
                reads[tp] = read
                found = found or bool(read.records) or read.error is not None or read.diverging_epoch is not None
            _tell_expansions(expansions)
            return found

        def on_append(tp: tuple[str, int]) -> str:
            return IGNORE if tp not in session.partitions else COMPLETE if session.settled() else POKE

        fetch = DelayedFetch(ready, lambda: session.answer(reads), respond, deadline, waker, on_append)
        self._notifier.delayed_fetches.park(fetch)
        return fetch

    def await_fetch(self, fetch: DelayedFetch, still_wanted: Callable[[], bool]) -> bool:
        """On the parked fetch's own thread: until it is answered (True) or cancelled because ``still_wanted``
        turned False; raises what failed it on another thread."""
        return self._notifier.delayed_fetches.await_completion(fetch, still_wanted)

    def _fetched_at(self, tp: tuple[str, int]) -> dict[int, int]:
        """Follower -> when its fetch session last fetched ``tp`` (for the ISR lag rule; fetch_session.py)."""
        out = {}
        for replica_id, session in list(self._sessions.items()):
            at = session.fetched_at(tp)
            if at is not None:
                out[replica_id] = at
        return out

    def _mark_changed(self, tp: tuple[str, int]) -> None:
        """The leader's side of ``tp`` changed: every fetch session holding it looks at it next round."""
        for session in list(self._sessions.values()):
            session.mark(tp)

    def _read_all(self, replica_id: int, max_bytes: int, partitions: list[FetchRequestPartition],
                  read_from_replica: bool, client_rack: str | None, expansions: list[dict]) -> list[FetchResult]:
        out = []
        budget = max_bytes
        for p in partitions:
            r = self._read_one(replica_id, p, min(p.max_bytes, max(budget, 0)), read_from_replica, client_rack,
                               expansions)
            budget -= len(r.records)
            out.append(r)
        return out

    def _read_one(self, replica_id: int, p: FetchRequestPartition, max_bytes: int,
                  read_from_replica: bool, client_rack: str | None, expansions: list[dict]) -> FetchResult:
        """One partition's read; an ISR expansion it proposes is sent, and told in ``expansions`` (for the event)."""
        hosted = self._hosted(p.topic, p.partition)
        if isinstance(hosted, KafkaError):
            return FetchResult(p.topic, p.partition, hosted)
        read = hosted.read(replica_id, p, max_bytes, read_from_replica, self._lag_clock_ms(),
                           self._metadata.image.is_live, client_rack, self._rack_of)
        if read.high_watermark_moved:
            self._mark_changed((p.topic, p.partition))
            self._notifier.notify(HIGH_WATERMARK)
        request = read.alter_request
        if request is not None:
            self._submit_alter(hosted, request)
            expansions.append(dict(topic=p.topic, partition=p.partition, replica=replica_id, isr=request["new_isr"],
                                   partition_epoch=request["partition_epoch"]))
        return read.result

    # ---- ISR changes, sent to the controller ------------------------------------------

    def _submit_alter(self, hosted: Partition, request: dict) -> None:
        self._alter_partition(request, lambda: self._alter_not_applied(hosted, request),
                              lambda: self._partitions.get((hosted.topic, hosted.partition)) is hosted
                              and hosted.alter_still_pending(request))

    def _alter_not_applied(self, hosted: Partition, request: dict) -> None:
        """An ISR change proven not applied is dropped; if that moved the HW (an expansion to a broker that
        died meanwhile held it back), acks=all waiters and the followers' sessions must hear of it."""
        if hosted.alter_not_applied(request):
            self._mark_changed((hosted.topic, hosted.partition))
            self._notifier.notify(HIGH_WATERMARK)

    def maybe_shrink_isr(self) -> None:
        """Leaders drop followers that have not caught up for replica.lag.time.max.ms (via the controller)."""
        now = self._lag_clock_ms()
        shrinks: list[dict] = []
        for hosted in list(self._partitions.values()):
            if not hosted.state.is_leader:
                continue   # (checked again under its lock) a follower has no ISR to shrink
            shrink = hosted.isr_shrink_request(now, self._settings.replica_lag_time_max_ms)
            if shrink is not None:
                request, previous = shrink
                self._submit_alter(hosted, request)
                shrinks.append(dict(topic=hosted.topic, partition=hosted.partition, isr=request["new_isr"],
                                    previous_isr=list(previous)))
        # One event when many shrink together (a dead follower leaves thousands of ISRs at once).
        log_partitions(log, "isr_shrink_requested", "isr_shrinks_requested", shrinks, ("isr", "previous_isr"))

    # ---- the follower side (called by the replica fetchers) -------------------------

    def fetch_position(self, tp: tuple[str, int], leader_id: int,
                       leader_epoch: int) -> tuple[int, int] | None:
        """(fetch offset, last fetched epoch) while this broker follows ``leader_id`` at ``leader_epoch``."""
        hosted = self._partitions.get(tp)
        return None if hosted is None else hosted.fetch_position(leader_id, leader_epoch)

    def on_fetched(self, tp: tuple[str, int], leader_id: int, leader_epoch: int, fetched: FetchResult) -> bool:
        """Apply one partition of a leader's answer: append, truncate, or restart; False to back off."""
        hosted = self._partitions.get(tp)
        if hosted is None:
            return True
        applied = hosted.append_fetched(leader_id, leader_epoch, fetched, self._clock_ms())
        if applied and fetched.records:
            self._notifier.notify(HIGH_WATERMARK)  # consumers reading this replica (KIP-392)
        return applied

    # ---- list offsets -------------------------------------------------------------

    def list_offset(self, topic: str, partition: int, timestamp: int, current_leader_epoch: int,
                    read_from_replica: bool = False) -> ListOffsetsResult:
        hosted = self._hosted(topic, partition)
        if isinstance(hosted, KafkaError):
            return ListOffsetsResult(topic, partition, hosted)
        return hosted.list_offset(timestamp, current_leader_epoch, read_from_replica)

    def offset_for_leader_epoch(self, topic: str, partition: int, current_leader_epoch: int,
                                leader_epoch: int) -> EpochEndOffset:
        hosted = self._hosted(topic, partition)
        if isinstance(hosted, KafkaError):
            return EpochEndOffset(topic, partition, hosted)
        return hosted.offset_for_leader_epoch(current_leader_epoch, leader_epoch)

    # ---- housekeeping -------------------------------------------------------------

    def checkpoint_high_watermarks(self) -> None:
        """Checkpoint the HWs that moved since their last checkpoint (idle partitions cost one comparison)."""
        moved = {tp: h.state.high_watermark for tp, h in list(self._partitions.items())
                 if h.state.high_watermark != h.log.checkpointed_high_watermark}
        self._logs.checkpoint_high_watermarks(moved)

    def snapshot_producer_states(self) -> None:
        """At a clean stop, once nothing appends: each partition's producer state, written next to its log
        (made durable by LogManager.close's syncfs), so the next start loads it instead of replaying every
        log (broker/log/producer_snapshot_file.py). A partition that cannot is replayed then, as before."""
        skipped = []
        for tp, hosted in list(self._partitions.items()):
            try:
                if not hosted.write_producer_snapshot():
                    skipped.append(tp)
            except KafkaStorageError:
                skipped.append(tp)
        if skipped:
            log.warning("producer_snapshots_skipped", count=len(skipped), first=list(skipped[0]))

    def remove_expired_producers(self) -> int:
        """Forget producers idle for producer.id.expiration.ms (by their batches' own timestamps: wall time)."""
        now = self._clock_ms()
        return sum(h.remove_expired_producers(now, self._settings.producer_id_expiration_ms)
                   for h in list(self._partitions.values()))

    def run_retention(self) -> int:
        now = self._clock_ms()
        deleted = 0
        for tp, hosted in list(self._partitions.items()):
            segments = hosted.delete_expired_segments(now)
            if segments:
                self._mark_changed(tp)   # the log start moved: followers are told
            deleted += segments
        return deleted
