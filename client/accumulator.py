"""The producer's record accumulator: per-partition batches waiting to be sent.

``send()`` appends here; the sender thread drains batches that are full, whose
linger time passed, or that a flush asks for. Up to ``max_in_flight`` batches
of a partition are in flight at once (max.in.flight.requests.per.connection);
they travel on one ordered stream, so they land in order. A batch that must be
retried goes back to its place by drain order, ahead of newer batches, and is
sent alone once the partition has nothing in flight: that keeps the order
across retries too. The buffer is bounded: appends block (back-pressure) until
the sender frees space or max_block_ms passes.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Callable
from collections import deque
from dataclasses import dataclass, field

from client.errors import KafkaTimeoutError
from client.record_batch import HEADER_SIZE

def _varint_size(n: int) -> int:
    """Bytes of Kafka's zigzag varint for ``n`` (a record's lengths are written so)."""
    v, size = (n << 1) ^ (n >> 63), 1
    while v >= 0x80:
        v >>= 7
        size += 1
    return size


# A record's fixed part in Kafka's v2 format, bounded: attributes (1), timestamp delta (at most 5 bytes:
# records of one batch within about 99 days of each other), offset delta (at most 3: a batch of up to
# a million records), header count (1). A record past the bound makes a batch a few bytes larger than
# batch.size; one the broker refuses as too large is split and sent again.
RECORD_FIXED_BOUND = 1 + 5 + 3 + 1


def record_size(key: bytes | None, value: bytes | None) -> int:
    """Bytes one record takes in a batch body (at most: see RECORD_FIXED_BOUND)."""
    k = -1 if key is None else len(key)
    v = -1 if value is None else len(value)
    inner = RECORD_FIXED_BOUND + _varint_size(k) + max(k, 0) + _varint_size(v) + max(v, 0)
    return _varint_size(inner) + inner
# batch.size counts the whole encoded batch, header included (Kafka's too): a batch of exactly
# batch.size = max.message.bytes must not come out bigger than the broker takes.
BATCH_HEADER = HEADER_SIZE


@dataclass(frozen=True)
class RecordMetadata:
    topic: str
    partition: int
    offset: int
    timestamp: int


@dataclass(eq=False)
class ProducerBatch:
    topic: str
    partition: int
    created: float                       # monotonic seconds
    records: list[tuple[bytes | None, bytes | None, int]] = field(default_factory=list)
    size: int = 0
    attempts: int = 0
    retry_at: float = 0.0
    leader_epoch: int = -1               # the leader epoch its last failed attempt was aimed at
    full: bool = False
    # When it was first drained (-1: never): its place in the partition. The halves of a split
    # batch take its place: the first keeps it, the second sits between it and the next batch.
    drain_order: float = -1
    # Split because the broker refused it as RECORD_TOO_LARGE: its halves (first record index,
    # batch); the records' futures follow them. It is done once both are.
    pieces: list[tuple[int, "ProducerBatch"]] = field(default_factory=list)
    parent: "ProducerBatch | None" = None
    split_depth: int = 0
    # Idempotence: the bytes are built once, with the producer id and sequence, and every
    # retry resends them unchanged so the leader can recognise a duplicate.
    built: bytes | None = None
    producer_id: int = -1
    base_sequence: int = -1              # its first sequence once built (-1: not numbered yet)
    sent_to: object = None               # the broker address its last attempt went to
    # The outcome, shared by every record's future (one Event per batch, not one per record).
    done_event: threading.Event = field(default_factory=threading.Event)
    base_offset: int = -1
    error: BaseException | None = None
    callbacks: list = field(default_factory=list)

    def add(self, key: bytes | None, value: bytes | None, timestamp_ms: int, size: int) -> "RecordFuture":
        """Queue one record of ``size`` bytes (record_size, which the caller has computed already)."""
        records = self.records
        records.append((key, value, timestamp_ms))
        self.size += size
        return _new_tuple(RecordFuture, (self, len(records) - 1))

    def complete(self, base_offset: int) -> None:
        self.base_offset = base_offset
        self._resolve()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._resolve()

    def _resolve(self) -> None:
        with _CALLBACKS_LOCK:
            self.done_event.set()
            callbacks, self.callbacks = self.callbacks, []
        for fn in callbacks:
            fn()
        parent = self.parent
        if parent is not None and all(piece.done_event.is_set() for _, piece in parent.pieces):
            parent._resolve()

    def holding(self, index: int) -> tuple["ProducerBatch", int]:
        """The batch (this one, or a piece of it once split) that carries record ``index``, and
        the record's index there."""
        batch = self
        while batch.pieces:
            first, piece = next((f, p) for f, p in reversed(batch.pieces) if index >= f)
            batch, index = piece, index - first
        return batch, index


_CALLBACKS_LOCK = threading.Lock()  # orders add_done_callback against completion
_new_tuple = tuple.__new__


class RecordFuture(tuple):
    """One record's outcome: concurrent.futures.Future's reading API (result, exception, done,
    add_done_callback), backed by its batch. Kafka hands out a future per record too; this one
    is a (batch, index) tuple, built with one C call (``tuple.__new__``) on the producer's hot
    path, instead of a lock and a condition per record."""

    __slots__ = ()

    @property
    def _batch(self) -> ProducerBatch:
        return self[0]

    @property
    def _index(self) -> int:
        return self[1]

    def done(self) -> bool:
        return self._batch.done_event.is_set()

    def _wait(self, timeout: float | None) -> None:
        if not self._batch.done_event.wait(timeout):
            raise TimeoutError(f"record not acknowledged within {timeout} s")

    def result(self, timeout: float | None = None) -> RecordMetadata:
        self._wait(timeout)
        b, index = self._batch.holding(self._index)
        if b.error is not None:
            raise b.error
        return RecordMetadata(b.topic, b.partition, b.base_offset + index if b.base_offset >= 0 else -1,
                              b.records[index][2])

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._batch.holding(self._index)[0].error

    def add_done_callback(self, fn) -> None:
        """``fn(self)`` once the record is acknowledged or failed (at once if it already is)."""
        with _CALLBACKS_LOCK:
            if not self._batch.done_event.is_set():
                self._batch.callbacks.append(lambda: fn(self))
                return
        fn(self)


class RecordAccumulator:
    def __init__(self, batch_size: int, linger_ms: int, buffer_memory: int, max_block_ms: int,
                 max_in_flight: int = 5):
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.linger_s = linger_ms / 1000
        self.buffer_memory = buffer_memory
        self.max_block_s = max_block_ms / 1000
        # append() takes the lock itself (C code) rather than through the Condition's Python
        # __enter__/__exit__: it runs once per record.
        self._lock = threading.RLock()
        self.cond = threading.Condition(self._lock)
        self._queues: dict[tuple[str, int], deque[ProducerBatch]] = {}
        # Batches sent and not answered, per partition: their outcome is unknown until they are.
        self._in_flight: dict[tuple[str, int], set[ProducerBatch]] = {}
        # Partition -> the producer id of its latest acknowledged batch (idempotence; see drain).
        self._acknowledged_as: dict[tuple[str, int], int] = {}
        self._drained = 0
        self._buffered = 0       # bytes of records not yet completed
        self._incomplete = 0     # batches not yet completed or failed
        self.flushing = 0
        self._version = 0        # bumped on every change the sender may care about

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
               timestamp_ms: int, abort_on_new_batch: bool = False) -> tuple[RecordFuture | None, bool]:
        """Queue one record; (its future, whether a batch just filled up).

        ``abort_on_new_batch`` (records without a key, KIP-480): when the record needs a new batch,
        queue nothing and answer (None, True), so that the sticky partitioner moves on first."""
        size = record_size(key, value)
        with self._lock:
            if self._buffered + size > self.buffer_memory and self._buffered > 0:
                self._wait_for_room(size)
            tp = (topic, partition)
            queue = self._queues.get(tp)
            if queue is None:
                queue = self._queues[tp] = deque()
            batch = queue[-1] if queue and not queue[-1].full and queue[-1].attempts == 0 else None
            created = batch is None or (BATCH_HEADER + batch.size + size > self.batch_size and batch.records)
            if created and abort_on_new_batch:
                return None, True
            if created:
                if batch is not None:
                    batch.full = True
                batch = ProducerBatch(topic, partition, time.monotonic())
                queue.append(batch)
                self._incomplete += 1
            future = batch.add(key, value, timestamp_ms, size)
            self._buffered += size
            filled = BATCH_HEADER + batch.size >= self.batch_size
            if filled:
                batch.full = True
            if filled or created:  # a new batch has a new linger deadline; a full one is due now
                self._wake()
        return future, filled

    def _wait_for_room(self, size: int) -> None:
        """buffer.memory is used up: wait (holding the condition) for room, up to max.block.ms."""
        deadline = time.monotonic() + self.max_block_s
        while self._buffered + size > self.buffer_memory and self._buffered > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KafkaTimeoutError(f"Failed to allocate {size} bytes within the configured max "
                                        f"blocking time {int(self.max_block_s * 1000)} ms.")
            self.cond.wait(left)

    def drain(self, now: float, destination: Callable[[tuple[str, int]], object] | None = None,
              producer_id: int | None = None) -> tuple[list[ProducerBatch], float, int]:
        """Batches ready to send (in partition order), when the next one is due, and a version.

        ``destination(tp)``: where a batch of ``tp`` would go now (its leader's address). While batches
        of a partition are in flight to another broker (the leader moved), none is drained: their
        outcome is unknown, and a later batch reaching the new leader first would be stored there
        as that producer's first (a broker takes any sequence from a producer it does not know),
        leaving the earlier ones OUT_OF_ORDER_SEQUENCE_NUMBER for good. One partition's requests
        stay on one connection, in order, as in Kafka.

        ``producer_id`` (an idempotent producer's; -1 before it has one): until a batch of a partition has
        been acknowledged under it, one batch of that partition is in flight at a time. The broker takes
        any sequence from a producer it does not know, so two batches pipelined to a broker that refuses
        the first (NOT_LEADER_OR_FOLLOWER: it is about to lead) and takes the second (it leads by then)
        would leave the first OUT_OF_ORDER_SEQUENCE_NUMBER for good. Once one is acknowledged (acks=all:
        in every ISR replica, so in any leader to come) the broker knows the producer and refuses a gap."""
        ready, next_ready = [], now + 1.0
        with self.cond:
            version = self._version
            for tp, queue in self._queues.items():
                in_flight = self._in_flight.get(tp)
                if in_flight is None:
                    in_flight = self._in_flight[tp] = set()
                if queue and in_flight and destination is not None and _elsewhere(in_flight, destination(tp)):
                    continue
                limit = self.max_in_flight
                if producer_id is not None and (producer_id < 0 or self._acknowledged_as.get(tp) != producer_id):
                    limit = 1
                while queue and len(in_flight) < limit:
                    batch = queue[0]
                    if batch.attempts and in_flight:
                        break  # a retry waits until everything before it has answered, then goes alone
                    due = batch.retry_at if batch.attempts else batch.created + self.linger_s
                    if batch.attempts == 0 and (batch.full or len(queue) > 1 or self.flushing):
                        due = now
                    if due > now:
                        next_ready = min(next_ready, due)
                        break
                    queue.popleft()
                    in_flight.add(batch)
                    if batch.drain_order < 0:
                        self._drained += 1
                        batch.drain_order = self._drained
                    ready.append(batch)
                    if batch.attempts:
                        break
        return ready, next_ready, version

    def requeue(self, batch: ProducerBatch) -> None:
        """Put a batch that must be retried back in its place: after the retries drained before it,
        ahead of every batch drained after it or never drained."""
        tp = (batch.topic, batch.partition)
        with self.cond:
            queue = self._queues.setdefault(tp, deque())
            at = next((i for i, b in enumerate(queue) if b.drain_order < 0 or b.drain_order > batch.drain_order),
                      len(queue))
            queue.insert(at, batch)
            self._in_flight[tp].discard(batch)
            self._wake()

    def backing_off(self, now: float) -> set[tuple[str, int]]:
        """Partitions whose next batch is a retry still waiting out its backoff."""
        with self.cond:
            return {tp for tp, queue in self._queues.items()
                    if queue and queue[0].attempts and queue[0].retry_at > now}

    def leader_changed(self, tp: tuple[str, int], leader_epoch: int, now: float) -> bool:
        """A newer leader is known for ``tp``: its retries aimed at an older one go now, without
        waiting out their backoff (KIP-951: the backoff is for asking the same leader again)."""
        with self.cond:
            due = [b for b in self._queues.get(tp, ()) if b.attempts and b.retry_at > now
                   and b.leader_epoch < leader_epoch]
            for b in due:
                b.retry_at = now
            if due:
                self._wake()
            return bool(due)

    def split(self, batch: ProducerBatch, at: int) -> tuple[ProducerBatch, ProducerBatch]:
        """Replace a drained batch by its records [:at] and [at:], queued in its place as retries due
        now (Kafka splits a batch the broker refused as too large; the split is not an attempt)."""
        tp = (batch.topic, batch.partition)
        halves = []
        for records, order in ((batch.records[:at], batch.drain_order),
                               (batch.records[at:], batch.drain_order + 0.5 ** (batch.split_depth + 1))):
            half = ProducerBatch(batch.topic, batch.partition, batch.created, records, full=True,
                                 attempts=max(batch.attempts, 1), retry_at=0.0, drain_order=order,
                                 parent=batch, split_depth=batch.split_depth + 1)
            half.size = sum(record_size(k, v) for k, v, _ in records)
            halves.append(half)
        batch.pieces = [(0, halves[0]), (at, halves[1])]
        with self.cond:
            queue = self._queues.setdefault(tp, deque())
            where = next((i for i, b in enumerate(queue) if b.drain_order < 0 or b.drain_order > batch.drain_order),
                         len(queue))
            queue.insert(where, halves[1])
            queue.insert(where, halves[0])
            self._in_flight[tp].discard(batch)
            self._incomplete += 1     # two batches to complete instead of one
            self._wake()
        return halves[0], halves[1]

    def has_unresolved_earlier(self, batch: ProducerBatch) -> bool:
        """Is a batch numbered before this one (same partition and producer id, a lower base
        sequence) still unresolved: in flight, its outcome unknown (to the old leader, say), or
        waiting to be retried? Then this one's OUT_OF_ORDER_SEQUENCE_NUMBER only says it overtook
        that batch, and it is retried behind it (Kafka's TransactionManager.canRetry: the batch is
        not the next after the last acknowledged sequence)."""
        if batch.base_sequence < 0:
            return False
        tp = (batch.topic, batch.partition)
        with self.cond:
            unresolved = itertools.chain(self._in_flight.get(tp, ()), self._queues.get(tp, ()))
            return any(b.producer_id == batch.producer_id and 0 <= b.base_sequence < batch.base_sequence
                       for b in unresolved)

    def done(self, batch: ProducerBatch, acknowledged: bool = False) -> None:
        """The batch completed (``acknowledged``) or failed: free its place in flight and its buffer space."""
        with self.cond:
            if acknowledged and batch.producer_id >= 0:
                self._acknowledged_as[(batch.topic, batch.partition)] = batch.producer_id
            self._in_flight[(batch.topic, batch.partition)].discard(batch)
            self._buffered -= batch.size
            self._incomplete -= 1
            self._wake()

    def _wake(self) -> None:
        # Caller holds self.cond.
        self._version += 1
        self.cond.notify_all()

    def begin_flush(self) -> None:
        """Make every queued batch due now, whatever its linger time."""
        with self.cond:
            self.flushing += 1
            self._wake()

    def end_flush(self) -> None:
        with self.cond:
            self.flushing -= 1

    def wake(self) -> None:
        with self.cond:
            self._wake()

    def has_incomplete(self) -> bool:
        return self._incomplete > 0

    def wait_for_work(self, until: float, version: int) -> None:
        """Sleep until ``until`` unless something changed since ``drain`` returned ``version``."""
        with self.cond:
            while self._version == version:
                left = until - time.monotonic()
                if left <= 0:
                    return
                self.cond.wait(left)


def _elsewhere(in_flight: set[ProducerBatch], address: object) -> bool:
    """Whether any of ``in_flight`` went to a broker other than ``address``."""
    return any(b.sent_to != address for b in in_flight)
