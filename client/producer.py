"""Producer: ``send()`` returns a future; a sender thread batches and delivers in the background.

    with Producer(bootstrap=":19092", acks="all") as p:
        md = p.send("t", b"value", key=b"k").result(timeout=30)   # .topic .partition .offset

Routing: the topic's metadata comes from any bootstrap broker; each batch goes
to its partition's leader; a NOT_LEADER_OR_FOLLOWER answer with a leader hint
is retried on the hinted leader at once. Keys pick partitions with Kafka's
murmur2; records without a key stick to one partition until its batch is full
(Kafka's sticky partitioner).

Idempotent by default with acks=all (Kafka's enable.idempotence): the producer
gets a producer id from the cluster, numbers each partition's batches, and a
retry whose first answer was lost is answered with the original offset instead
of being stored twice. Up to max_in_flight_requests_per_connection (5) batches of
a partition are in flight on one ordered stream per broker; retries go back in
their place, so a partition's order is kept.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import Future

from client import record_batch
from client.accumulator import RecordAccumulator, RecordFuture, RecordMetadata
from client.client import KafkaClient, backoff_s
from client.errors import KafkaError, KafkaTimeoutError, ProducerClosedError, UnknownTopicOrPartitionError
from client.partitioner import partition_for_key
from client.sender import Sender, SenderConfig
from client.trace import Tracer

__all__ = ["Producer", "RecordMetadata", "parse_acks"]


def parse_acks(acks: str | int) -> int:
    """'all' / -1 -> -1, 1 -> 1, 0 -> 0 (strings or ints)."""
    value = str(acks).strip().lower()
    if value in ("all", "-1"):
        return -1
    if value in ("0", "1"):
        return int(value)
    raise ValueError(f"acks must be all, 1 or 0, not {acks!r}")


class Producer:
    def __init__(self, bootstrap: str = ":9092", acks: str | int = "all", *, linger_ms: int = 5,
                 batch_size: int = 16384, buffer_memory: int = 32 * 1024 * 1024,
                 request_timeout_ms: int = 30000, delivery_timeout_ms: int = 120000,
                 retry_backoff_ms: int = 100, retry_backoff_max_ms: int = 1000, max_block_ms: int = 60000,
                 enable_idempotence: bool | None = None, first_to_bootstrap: bool = False,
                 metadata_max_age_ms: int = 300000, max_in_flight_requests_per_connection: int = 5,
                 tracer: Tracer | None = None, compression_type: str = "none"):
        """first_to_bootstrap: send the first batch to the first bootstrap broker whoever leads (a
        teaching aid: a follower answers NOT_LEADER_OR_FOLLOWER with a hint and the batch follows it).
        compression_type: Kafka's none, gzip, snappy, lz4 or zstd; every batch's records are compressed
        with it, and brokers store and serve the batch as it is."""
        if compression_type not in record_batch.COMPRESSION_TYPES:
            raise ValueError(f"compression_type must be one of {', '.join(record_batch.COMPRESSION_TYPES)}, "
                             f"not {compression_type!r}")
        self.acks = parse_acks(acks)
        if enable_idempotence and self.acks != -1:
            raise ValueError("enable_idempotence needs acks='all' (Kafka's rule)")
        # Kafka 3.x: on by default, unless a setting that conflicts with it (acks 0 or 1) was chosen.
        self.idempotent = self.acks == -1 if enable_idempotence is None else enable_idempotence
        self._client = KafkaClient(bootstrap, request_timeout_ms, tracer, metadata_max_age_ms)
        if not 1 <= max_in_flight_requests_per_connection <= 5 and self.idempotent:
            # The broker remembers 5 batches per producer: more in flight could not be deduplicated.
            raise ValueError("max_in_flight_requests_per_connection must be 1..5 with idempotence")
        self._acc = RecordAccumulator(batch_size, linger_ms, buffer_memory, max_block_ms,
                                      max_in_flight_requests_per_connection)
        self._max_block_s = max_block_ms / 1000
        self._retry_backoff = (retry_backoff_ms, retry_backoff_max_ms)
        self._sticky: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._sender = Sender(self._client, self._acc, SenderConfig(
            self.acks, request_timeout_ms, delivery_timeout_ms, retry_backoff_ms, retry_backoff_max_ms,
            self.idempotent, first_to_bootstrap, record_batch.COMPRESSION_TYPES[compression_type]))
        self._sender.start()

    # ---- public API ---------------------------------------------------------------

    def send(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None,
             timestamp_ms: int | None = None) -> "RecordFuture | Future":
        """Queue one record; the future resolves to RecordMetadata or fails with a KafkaError."""
        if self._closed:
            raise ProducerClosedError("Cannot send after the producer is closed.")
        try:
            count = self._partition_count(topic)
            by_sticky = partition is None and key is None
            if partition is None:
                partition = partition_for_key(key, count) if key is not None else self._sticky_partition(topic, count)
            elif not 0 <= partition < count:
                raise UnknownTopicOrPartitionError(
                    f"Invalid partition given with record: {partition} is not in the range [0...{count}).")
            ts = timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000
            future, filled = self._acc.append(topic, partition, key, value, ts, abort_on_new_batch=by_sticky)
            if future is None:
                # The sticky partition's batch is full or gone (sent): stick to another partition now
                # (Kafka's sticky partitioner, KIP-480), so records spread batch by batch.
                partition = self._next_sticky_partition(topic, count, partition)
                future, filled = self._acc.append(topic, partition, key, value, ts)
        except KafkaError as e:
            failed: Future = Future()
            failed.set_exception(e)
            return failed
        if filled and by_sticky:
            self._sticky.pop(topic, None)  # the sticky batch is full: the next record picks a new partition
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait until each record is acknowledged or failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._acc.begin_flush()
        try:
            while self._acc.has_incomplete():
                if deadline is not None and time.monotonic() >= deadline:
                    raise KafkaTimeoutError(f"Failed to flush accumulated records within {timeout} s.")
                with self._acc.cond:
                    if self._acc.has_incomplete():
                        self._acc.cond.wait(0.1)
        finally:
            self._acc.end_flush()

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.flush(timeout)
        finally:
            self._sender.stop()
            self._sender.join(timeout)
            self._client.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- partitions ---------------------------------------------------------------

    def _partition_count(self, topic: str) -> int:
        """Partitions of ``topic``, waiting up to max_block_ms for it to appear in the metadata."""
        info = self._client.metadata.topics.get(topic)
        if info is not None:
            return len(info.partitions)
        deadline = time.monotonic() + self._max_block_s
        attempt = 0
        while True:
            self._client.refresh_metadata([topic])
            info = self._client.metadata.topics.get(topic)
            if info is not None:
                return len(info.partitions)
            attempt += 1
            pause = backoff_s(attempt, *self._retry_backoff)
            if time.monotonic() + pause >= deadline:
                raise UnknownTopicOrPartitionError(
                    f"Topic {topic} not present in metadata after {int(self._max_block_s * 1000)} ms.")
            time.sleep(pause)

    def _next_sticky_partition(self, topic: str, count: int, previous: int) -> int:
        with self._lock:
            p = random.randrange(count - 1) if count > 1 else 0
            if count > 1 and p >= previous:
                p += 1   # any partition but the one just left
            self._sticky[topic] = p
            return p

    def _sticky_partition(self, topic: str, count: int) -> int:
        p = self._sticky.get(topic)   # the per-record fast path: a dict read needs no lock
        if p is not None and p < count:
            return p
        with self._lock:
            p = self._sticky.get(topic)
            if p is None or p >= count:
                p = self._sticky[topic] = random.randrange(count)
            return p
