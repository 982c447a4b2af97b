"""Consumer: reads partitions from their leaders (or from one named replica), alone or in a group.

    with Consumer(bootstrap=":9092", topic="t", from_beginning=True) as c:
        for r in c.poll(timeout=1.0):
            print(r.topic, r.partition, r.offset, r.value)

    with Consumer(":9092", group_id="billing", topics=["email.send"], enable_auto_commit=True) as c:
        c.poll(1.0)          # joins the group; reads only the partitions the group gave it
        c.commit()           # what poll returned so far (auto commit does this every 5 s)

Position = the next offset to read, per (topic, partition). Records come only from below the high
watermark of the broker read from. ``replica=ID`` reads that broker's local copy (Kafka's KIP-392
follower fetching), up to that replica's own HW. With ``group_id`` the partitions are the group's
to hand out (client/group_coordinator.py: join, sync, heartbeat, as Kafka's classic protocol), and a
partition starts at the group's committed offset, else at ``auto_offset_reset``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from client import record_batch
from client.assignors import assignor as assignor_named
from client.client import KafkaClient, backoff_s, hint_from_proto
from client.connection import Address
from client.errors import (InvalidGroupIdError, KafkaError, NotLeaderOrFollowerError, OffsetOutOfRangeError,
                           UnknownTopicOrPartitionError, error_for_code)
from client.group_coordinator import ConsumerCoordinator, GroupSettings, TopicPartition
from client.protocol.v1 import kafka_pb2
from client.trace import Tracer

EARLIEST, LATEST = -2, -1
# Kafka 3.x's partition.assignment.strategy default: range, and cooperative-sticky to upgrade to.
DEFAULT_ASSIGNMENT_STRATEGY = "range,cooperative-sticky"

# (topic, partition, offset, timestamp, key, value), read by name: what the decoder builds.
ConsumerRecord = record_batch.Record
PartitionsCallback = Callable[[list[TopicPartition]], None]
CommitCallback = Callable[[dict[TopicPartition, int], KafkaError | None], None]


class Consumer:
    def __init__(self, bootstrap: str = ":9092", topic: str = "", *, topics: list[str] | None = None,
                 group_id: str | None = None, from_beginning: bool = False, replica: int | None = None,
                 partition: int | None = None, offset: int | None = None, auto_offset_reset: str | None = None,
                 fetch_max_wait_ms: int = 500, fetch_min_bytes: int = 1, fetch_max_bytes: int = 52428800,
                 max_partition_fetch_bytes: int = 1048576, request_timeout_ms: int = 30000,
                 retry_backoff_ms: int = 100, retry_backoff_max_ms: int = 1000, metadata_max_age_ms: int = 300000,
                 enable_auto_commit: bool = True, auto_commit_interval_ms: int = 5000,
                 session_timeout_ms: int = 45000, heartbeat_interval_ms: int = 3000,
                 max_poll_interval_ms: int = 300000, partition_assignment_strategy: str = DEFAULT_ASSIGNMENT_STRATEGY,
                 group_instance_id: str | None = None, client_id: str = "raftka",
                 on_assign: PartitionsCallback | None = None, on_revoke: PartitionsCallback | None = None,
                 on_lost: PartitionsCallback | None = None, on_commit: CommitCallback | None = None,
                 tracer: Tracer | None = None):
        self.topics = list(dict.fromkeys(topics or ([topic] if topic else [])))
        if not self.topics:
            raise ValueError("Consumer needs a topic (topic=...) or topics (topics=[...])")
        self.topic = self.topics[0]
        if group_id is not None and partition is not None:
            raise ValueError("a group consumer is given its partitions by the group: partition= is for one "
                             "without a group (Kafka: subscribe or assign, not both)")
        self.replica = replica
        self._only_partition = partition
        self._start_offset = offset
        # --from-beginning means auto.offset.reset=earliest; Kafka's default is latest.
        self.auto_offset_reset = auto_offset_reset or ("earliest" if from_beginning else "latest")
        if self.auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError("auto_offset_reset must be earliest, latest or none")
        self._fetch = (fetch_max_wait_ms, fetch_min_bytes, fetch_max_bytes, max_partition_fetch_bytes)
        self._backoff = (retry_backoff_ms, retry_backoff_max_ms)
        self._client = KafkaClient(bootstrap, request_timeout_ms, tracer, metadata_max_age_ms)
        self.positions: dict[TopicPartition, int] = {}
        self._failures = 0
        self._next_partial_refresh = 0.0
        # Kafka's Fetcher: at most one fetch in flight per broker, kept across polls. A poll returns
        # what the first answers carry instead of waiting for every broker (an idle partition's
        # leader holds its fetch for fetch_max_wait_ms).
        self._in_flight: dict[Address, tuple[Future, dict[TopicPartition, int]]] = {}
        self._fetch_done = threading.Event()
        self.group_id = group_id
        self._callbacks = (on_assign, on_revoke, on_lost, on_commit)
        self._auto_commit_s = auto_commit_interval_ms / 1000 if enable_auto_commit else None
        self._next_auto_commit = time.monotonic() + (self._auto_commit_s or 0)
        self._committer: ThreadPoolExecutor | None = None
        self._coordinator: ConsumerCoordinator | None = None
        if group_id is not None:
            assignors = [assignor_named(n.strip()) for n in partition_assignment_strategy.split(",") if n.strip()]
            settings = GroupSettings(session_timeout_ms, heartbeat_interval_ms, max_poll_interval_ms,
                                     group_instance_id, client_id, retry_backoff_ms, retry_backoff_max_ms)
            self._coordinator = ConsumerCoordinator(self._client, group_id, self.topics, assignors, settings,
                                                    self._revoked, self._assigned, self._lost)

    # ---- public API ---------------------------------------------------------------

    def poll(self, timeout: float = 1.0) -> list[ConsumerRecord]:
        """Records fetched within ``timeout`` seconds (maybe none); advances the positions. A group
        consumer first takes part in any rebalance (its callbacks run here) and auto-commits."""
        deadline = time.monotonic() + timeout
        if self._coordinator is not None:
            self._maybe_auto_commit()
            if not self._coordinator.ensure_active_group(deadline):
                return []
        while True:
            try:
                records = self._poll_once(deadline)
                self._failures = 0
            except KafkaError as e:
                if not e.retriable:
                    raise
                self._failures += 1
                self._refresh_quietly()
                pause = backoff_s(self._failures, *self._backoff)
                if time.monotonic() + pause >= deadline:
                    return []
                time.sleep(pause)
                continue
            if records or time.monotonic() >= deadline:
                return records

    def seek(self, partition: int | TopicPartition, offset: int) -> None:
        """The next poll reads ``partition`` (a number: of the first topic) from ``offset``."""
        self.positions[self._tp(partition)] = offset

    def assignment(self) -> list[TopicPartition]:
        """The partitions this consumer reads: the group's gift with a group_id, else every partition of
        its topics (or the one it was given)."""
        if self._coordinator is not None:
            return list(self._coordinator.assigned)
        out: list[TopicPartition] = []
        for topic in self.topics:
            info = self._client.ensure_topic(topic)
            if self._only_partition is not None:
                if not 0 <= self._only_partition < len(info.partitions):
                    raise UnknownTopicOrPartitionError(
                        f"Partition {self._only_partition} of topic {topic} does not exist "
                        f"(it has {len(info.partitions)}).")
                out.append((topic, self._only_partition))
            else:
                out += [(topic, p) for p in range(len(info.partitions))]
        return out

    def ensure_topics(self) -> None:
        """UnknownTopicOrPartitionError now if a topic does not exist (a CLI's early check; a group
        consumer subscribed to a missing topic is otherwise just given nothing of it, as in Kafka)."""
        for topic in self.topics:
            self._client.ensure_topic(topic)
        if self._coordinator is None:
            self.assignment()

    def generation(self) -> tuple[int, str]:
        """(generation id, member id) of this member's current generation; (-1, "") without one."""
        if self._coordinator is None:
            return -1, ""
        return self._coordinator.generation_id, self._coordinator.member_id

    def close(self) -> None:
        try:
            if self._coordinator is not None:
                self._coordinator.close()        # commits (auto commit) and revokes, then leaves
        finally:
            if self._committer is not None:
                self._committer.shutdown(wait=True)
            for fetch, _ in self._in_flight.values():
                fetch.cancel()
            self._in_flight.clear()
            self._client.close()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tp(self, partition: int | TopicPartition) -> TopicPartition:
        return (self.topic, partition) if isinstance(partition, int) else (partition[0], partition[1])

    # ---- offsets of a group (Kafka's commitSync / commitAsync / committed) ----------

    def commit(self, offsets: dict[TopicPartition, int] | None = None, asynchronous: bool = False) -> None:
        """Commit ``offsets`` (None: the positions of every assigned partition, i.e. what poll returned).
        Synchronous by default: raises CommitFailedError if the group moved on without this member,
        RebalanceInProgressError while it rebalances. ``asynchronous``: sent in the background, in
        order; the outcome goes to ``on_commit(offsets, error)``."""
        coordinator = self._require_group()
        offsets = self._current_offsets() if offsets is None else {self._tp(tp): o for tp, o in offsets.items()}
        if not asynchronous:
            coordinator.commit(offsets)
            return
        if self._committer is None:
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"commit-{self.group_id}")
        self._committer.submit(self._commit_in_background, offsets)

    def committed(self, partitions: list[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """The group's committed offsets of ``partitions`` (None: of this consumer's assignment)."""
        coordinator = self._require_group()
        return coordinator.committed(self.assignment() if partitions is None else [self._tp(p) for p in partitions])

    def _require_group(self) -> ConsumerCoordinator:
        if self._coordinator is None:
            raise InvalidGroupIdError("To use the group management or offset commit APIs, you must provide a "
                                      "valid group_id in the consumer configuration.")
        return self._coordinator

    def _current_offsets(self) -> dict[TopicPartition, int]:
        return {tp: self.positions[tp] for tp in self.assignment() if tp in self.positions}

    def _commit_in_background(self, offsets: dict[TopicPartition, int]) -> None:
        error: KafkaError | None = None
        try:
            self._require_group().commit(offsets)
        except KafkaError as e:
            error = e
            self._client.trace("error", "OffsetCommit", ("", 0), None, f"group {self.group_id}: {e}")
        if self._callbacks[3] is not None:
            self._callbacks[3](offsets, error)

    def _maybe_auto_commit(self) -> None:
        """enable.auto.commit: every auto.commit.interval.ms, poll commits the positions it has handed
        out (asynchronously, as Kafka's maybeAutoCommitOffsetsAsync)."""
        if self._auto_commit_s is None or time.monotonic() < self._next_auto_commit:
            return
        self._next_auto_commit = time.monotonic() + self._auto_commit_s
        offsets = self._current_offsets()
        if offsets and self._coordinator is not None and self._coordinator.generation_id >= 0:
            self.commit(offsets, asynchronous=True)

    # ---- the group's hooks (called on the polling thread by the coordinator) ----------

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        """Before partitions go: auto commit commits them (synchronously), then on_revoke."""
        if self._auto_commit_s is not None:
            offsets = {tp: self.positions[tp] for tp in partitions if tp in self.positions}
            try:
                self._require_group().commit(offsets)
            except KafkaError as e:
                self._client.trace("error", "OffsetCommit", ("", 0), None,
                                   f"group {self.group_id}: commit before revoking failed: {e}")
        try:
            if self._callbacks[1] is not None:
                self._callbacks[1](list(partitions))
        finally:
            self._forget(partitions)

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        # Positions come at the next fetch: the committed offset, else auto_offset_reset.
        if self._callbacks[0] is not None:
            self._callbacks[0](list(partitions))

    def _lost(self, partitions: list[TopicPartition]) -> None:
        """The generation ended without us (evicted, fenced): nothing to commit; Kafka's default
        onPartitionsLost is onPartitionsRevoked."""
        try:
            callback = self._callbacks[2] or self._callbacks[1]
            if callback is not None:
                callback(list(partitions))
        finally:
            self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions.pop(tp, None)

    # ---- fetching -----------------------------------------------------------------

    def _poll_once(self, deadline: float) -> list[ConsumerRecord]:
        partitions = self.assignment()
        missing = [tp for tp in partitions if tp not in self.positions]
        if missing:
            self._init_positions(missing)
        self._send_fetches(partitions, min(self._fetch[0], int((deadline - time.monotonic()) * 1000)))
        self._fetch_done.clear()   # cleared before looking, so an answer arriving now still wakes us
        while not any(fetch.done() for fetch, _ in self._in_flight.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self._fetch_done.wait(left)
            self._fetch_done.clear()
        records: list[ConsumerRecord] = []
        error: KafkaError | None = None
        for address, (fetch, asked) in list(self._in_flight.items()):
            if not fetch.done():
                continue
            del self._in_flight[address]
            try:
                response = fetch.result()
            except Exception as e:  # grpc.RpcError: the broker went away
                error = self._client.map_rpc_error(e, address)
                self._client.trace("error", "Fetch", address, self._client.broker_id_of(address), str(error))
                continue
            for r in response.partitions:
                tp = (r.topic, r.partition)
                if tp not in asked or self.positions.get(tp) != asked[tp]:
                    continue  # the position moved (seek) or the partition went (rebalance): stale data
                try:
                    records.extend(self._take(r))
                except KafkaError as e:
                    self._client.trace("error", "Fetch", address, response.answered_by,
                                       f"{r.topic}-{r.partition}: {e}")
                    error = e
        if records:
            # As Kafka's consumer does: the next fetches go out before these records are handed back,
            # so the brokers read and send while the application handles this poll's records.
            self._send_fetches(partitions, self._fetch[0])
        if error is not None:
            if not records:
                raise error  # poll() refreshes and backs off
            # Other partitions answered: keep their records, but still follow the failed ones to
            # their new leader (a refresh at most once per backoff), or they would stall while the
            # rest stays busy.
            now = time.monotonic()
            if error.retriable and now >= self._next_partial_refresh:
                self._next_partial_refresh = now + backoff_s(1, *self._backoff)
                self._refresh_quietly()
        return records

    def _send_fetches(self, partitions: list[TopicPartition], wait_ms: int) -> None:
        """A fetch to each leader that has none in flight, for its partitions no fetch is out for."""
        out = {tp for _, asked in self._in_flight.values() for tp in asked}
        wait_ms = max(0, wait_ms)
        for address, tps in self._by_target([tp for tp in partitions if tp not in out]).items():
            if address in self._in_flight:
                continue
            request = kafka_pb2.FetchRequest(
                replica_id=-1, max_wait_ms=wait_ms, min_bytes=self._fetch[1], max_bytes=self._fetch[2],
                read_from_replica=self.replica is not None,
                partitions=[kafka_pb2.FetchPartition(topic=t, partition=p, fetch_offset=self.positions[(t, p)],
                                                     current_leader_epoch=self._epoch((t, p)),
                                                     partition_max_bytes=self._fetch[3]) for t, p in tps])
            detail = ", ".join(f"{t}-{p} from offset {self.positions[(t, p)]}" for t, p in tps)
            self._client.trace("request", "Fetch", address, self._client.broker_id_of(address), detail)
            stub = self._client.connections.kafka(address)
            fetch = stub.Fetch.future(request, timeout=wait_ms / 1000 + self._client.request_timeout_s)
            self._in_flight[address] = (fetch, {tp: self.positions[tp] for tp in tps})
            fetch.add_done_callback(lambda _: self._fetch_done.set())

    def _take(self, r) -> list[ConsumerRecord]:
        tp = (r.topic, r.partition)
        if r.error_code == OffsetOutOfRangeError.code:
            self._reset_offset(tp, r)
            return []
        if r.error_code:
            hint = hint_from_proto(r.leader_hint) if r.HasField("leader_hint") else None
            if hint is not None and self.replica is None:
                self._client.metadata.apply_leader_hint(r.topic, r.partition, hint)
            raise error_for_code(r.error_code, r.error_message, hint)
        position = self.positions[tp]
        decoded = record_batch.decode_all(r.records, min_offset=position, topic=r.topic, partition=r.partition)
        if decoded:
            self.positions[tp] = decoded[-1].offset + 1
        return decoded

    def _reset_offset(self, tp: TopicPartition, r) -> None:
        if self.auto_offset_reset == "none":
            raise OffsetOutOfRangeError(f"Offset {self.positions[tp]} is out of range for "
                                        f"{tp[0]}-{tp[1]} (log start {r.log_start_offset}, "
                                        f"high watermark {r.high_watermark})")
        self.positions[tp] = r.log_start_offset if self.auto_offset_reset == "earliest" else r.high_watermark

    def _by_target(self, partitions: list[TopicPartition]) -> dict[Address, list[TopicPartition]]:
        out: dict[Address, list[TopicPartition]] = {}
        for tp in partitions:
            out.setdefault(self._target(tp), []).append(tp)
        return out

    def _target(self, tp: TopicPartition) -> Address:
        if self.replica is None:
            return self._client.leader_for(*tp)[1]
        address = self._client.metadata.broker_address(self.replica)
        if address is None:
            raise NotLeaderOrFollowerError(f"broker {self.replica} is not in the cluster metadata")
        return address

    def _epoch(self, tp: TopicPartition) -> int:
        info = self._client.metadata.partition(*tp)
        return info.leader_epoch if info is not None and self.replica is None else -1

    def _init_positions(self, partitions: list[TopicPartition]) -> None:
        """Where each new partition starts: the offset given, else the group's committed offset, else
        auto_offset_reset (earliest / latest, asked of the leader; "none" raises)."""
        if self._start_offset is not None and self._start_offset >= 0:
            for tp in partitions:
                self.positions[tp] = self._start_offset
            return
        if self._coordinator is not None:
            committed = self._coordinator.committed(partitions)
            self.positions.update((tp, o) for tp, o in committed.items() if tp in partitions)
            partitions = [tp for tp in partitions if tp not in committed]
            if partitions and self.auto_offset_reset == "none":
                raise OffsetOutOfRangeError(f"group {self.group_id} has no committed offset for "
                                            + ", ".join(f"{t}-{p}" for t, p in partitions)
                                            + " and auto_offset_reset is none")
        when = EARLIEST if self.auto_offset_reset == "earliest" else LATEST
        for address, tps in self._by_target(partitions).items():
            request = kafka_pb2.ListOffsetsRequest(replica_id=-1, read_from_replica=self.replica is not None,
                partitions=[kafka_pb2.ListOffsetsPartition(topic=t, partition=p, timestamp=when,
                                                           current_leader_epoch=self._epoch((t, p))) for t, p in tps])
            response = self._client.call(address, "ListOffsets", request,
                                         detail=f"{'earliest' if when == EARLIEST else 'latest'} offset of "
                                                + ", ".join(f"{t}-{p}" for t, p in tps))
            for r in response.partitions:
                if r.error_code:
                    hint = hint_from_proto(r.leader_hint) if r.HasField("leader_hint") else None
                    raise error_for_code(r.error_code, r.error_message, hint)
                self.positions[(r.topic, r.partition)] = r.offset

    def _refresh_quietly(self) -> None:
        try:
            self._client.refresh_metadata(self.topics)
        except KafkaError:
            pass
