"""The producer's sender thread: drains ready batches, sends them to their leaders, retries.

Requests go on one ProduceStream per broker (client/produce_stream.py), which
the broker handles in order, so up to max.in.flight batches of a partition may
be outstanding without reordering. Answers come back in request order; a
stream that breaks or whose oldest request outlives request.timeout.ms is
closed, and everything in flight on it is retried (the idempotent producer
makes a retry of a batch that was stored harmless).

Per partition outcome: success resolves the record futures with their offsets;
a retriable error puts the batch back (after following the leader hint, or
refreshing metadata when the error says it is stale) with exponential backoff,
until delivery.timeout.ms; any other error fails the futures. The decision
reads only the error's ``retriable`` / ``invalid_metadata`` flags.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from client import record_batch
from client.accumulator import ProducerBatch, RecordAccumulator
from client.client import KafkaClient, backoff_s, hint_from_proto
from client.connection import Address
from client.errors import (KafkaConnectionError, KafkaError, KafkaTimeoutError, OutOfOrderSequenceNumberError,
                           RecordTooLargeError, RequestTimedOutError, error_for_code)
from client.produce_stream import ProduceStream
from client.protocol.v1 import kafka_pb2

# The library's own diagnostics go to stdlib logging (silent unless the application configures it);
# what a user should see is the trace hook (client/trace.py).
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SenderConfig:
    acks: int
    request_timeout_ms: int
    delivery_timeout_ms: int
    retry_backoff_ms: int
    retry_backoff_max_ms: int
    idempotent: bool = False
    first_to_bootstrap: bool = False   # teaching aid: the first batch goes to the bootstrap broker
    compression_type: int = 0          # record_batch.COMPRESSION_TYPES: the codec of every batch built


@dataclass
class InFlightRequest:
    correlation_id: int
    batches: list[ProducerBatch]
    deadline: float          # monotonic: no answer by then and the stream is given up


@dataclass
class StreamState:
    stream: ProduceStream
    in_flight: deque[InFlightRequest] = field(default_factory=deque)


class Sender(threading.Thread):
    def __init__(self, client: KafkaClient, accumulator: RecordAccumulator, config: SenderConfig):
        super().__init__(name="raftka-producer-sender", daemon=True)
        self._client = client
        self._acc = accumulator
        self._config = config
        self._stopping = False
        self._metadata_stale = False
        self._next_leader_poll = 0.0   # 0: no retry is waiting (see _poll_new_leaders)
        # Idempotence (KIP-98): the producer id and each partition's next sequence number.
        self._producer_id = -1
        self._producer_epoch = -1
        self._next_sequence: dict[tuple[str, int], int] = {}
        self._init_attempts = 0
        self._probe_bootstrap = config.first_to_bootstrap
        self._streams: dict[Address, StreamState] = {}
        self._answers: deque = deque()       # (stream, response, error) from the streams' reader threads
        # Guards each stream's in_flight and the answers handed over: a reader thread settles an answer that
        # is all success itself (_settled_on_reader), which pops its request.
        self._lock = threading.Lock()
        self._correlation = itertools.count(1)

    def stop(self) -> None:
        self._stopping = True
        self._acc.wake()

    def run(self) -> None:
        try:
            # Stop once nothing is left to send and no request is unanswered (an acks=0 request too:
            # cancelling its stream early could drop it before it left).
            while not (self._stopping and not self._acc.has_incomplete()
                       and not any(s.in_flight for s in self._streams.values())):
                self._run_once()
        finally:
            for state in list(self._streams.values()):
                state.stream.close()
            self._streams.clear()

    def _run_once(self) -> None:
        """One round of the loop. The clock is read here only, as etcd's raft is handed time by its
        caller: the helpers below take ``now`` and never read it. It is read again after each step that
        can take time (answers run the futures' callbacks; dropping a stream joins its reader thread; a
        metadata refresh or InitProducerId is a network call), so every deadline, age and backoff
        counts from when its step ran, as when each helper read the clock itself."""
        now = time.monotonic()
        self._handle_answers(now)
        now = time.monotonic()
        self._expire_requests(now)
        now = time.monotonic()
        next_poll = self._poll_new_leaders(now)
        now = time.monotonic()
        batches, next_ready, version = self._acc.drain(now, self._destination,
                                                       self._producer_id if self._config.idempotent else None)
        if not batches:
            self._acc.wait_for_work(min(next_ready, self._next_deadline(), next_poll, now + 0.5), version)
            return
        if self._metadata_stale:
            self._refresh_metadata({b.topic for b in batches})
        if self._config.idempotent and self._producer_id < 0 and not self._init_producer_id():
            now = time.monotonic()
            for b in batches:
                self._retry_or_fail(b, KafkaConnectionError("no producer id yet (InitProducerId failed)"), now)
            return
        now = time.monotonic()   # the refresh and InitProducerId above are network calls
        groups = self._by_leader(batches, now)
        now = time.monotonic()   # so may routing be: leader_for refreshes metadata past its max age
        for address, group in groups.items():
            for request_batches in _one_per_partition(group):
                self._send(address, request_batches, now)

    # ---- streams ------------------------------------------------------------------

    def _on_answer(self, stream: ProduceStream, response, error: KafkaError | None) -> None:
        """Called on a stream's reader thread: settle a plain success here, hand anything else over to the
        sender thread."""
        request = None if response is None else self._settled_on_reader(stream, response)
        if request is not None:
            self._complete(stream.address, request, response)
            return
        with self._lock:
            self._answers.append((stream, response, error))
        self._acc.wake()

    def _settled_on_reader(self, stream: ProduceStream, response) -> InFlightRequest | None:
        """The oldest request of ``stream``, taken, if ``response`` answers it with success for every batch
        and no earlier answer waits for the sender thread (answers settle in order). Settling it here wakes
        the thread waiting on its records one thread hand-off sooner (the sender's, 0.04 ms per acks=all
        write); an error, a retry, a dropped stream stay the sender thread's."""
        if any(p.error_code != 0 for p in response.partitions):
            return None
        with self._lock:
            state = self._streams.get(stream.address)
            if self._answers or state is None or state.stream is not stream or not state.in_flight:
                return None
            request = state.in_flight[0]
            if (request.correlation_id != response.correlation_id or {(b.topic, b.partition) for b in request.batches}
                    != {(p.topic, p.partition) for p in response.partitions}):
                return None
            return state.in_flight.popleft()

    def _handle_answers(self, now: float) -> None:
        while True:
            with self._lock:
                if not self._answers:
                    return
                stream, response, error = self._answers.popleft()
                state = self._streams.get(stream.address)
                if state is None or state.stream is not stream:
                    continue  # a stream already given up: its requests were retried
                request = None if response is None else state.in_flight.popleft()
            if request is None:
                self._drop_stream(stream.address, error, now)
                continue
            if request.correlation_id != response.correlation_id:  # the broker broke the ordering contract
                with self._lock:
                    state.in_flight.appendleft(request)
                self._drop_stream(stream.address, KafkaConnectionError(
                    f"answer {response.correlation_id} came while {request.correlation_id} was the oldest"), now)
                continue
            self._complete(stream.address, request, response, now)

    def _drop_stream(self, address: Address, error: KafkaError, now: float) -> None:
        """Close the stream; every request in flight on it has an unknown outcome and is retried."""
        with self._lock:
            state = self._streams.pop(address)
            in_flight = list(state.in_flight)
            state.in_flight.clear()
        state.stream.close()   # joins its reader thread: not under the lock, which that thread may wait for
        if in_flight:
            # Something was lost on the way: the leader may have moved. (An idle stream that closed
            # says nothing about leadership; the next send opens a new one.)
            self._metadata_stale = True
        for request in in_flight:
            self._client.trace("error", "Produce", address, self._client.broker_id_of(address), str(error))
            for b in request.batches:
                self._retry_or_fail(b, error, now)

    def _expire_requests(self, now: float) -> None:
        with self._lock:
            expired = [address for address, state in self._streams.items()
                       if state.in_flight and state.in_flight[0].deadline <= now]
        for address in expired:
            self._drop_stream(address, RequestTimedOutError(
                f"no answer from {address[0]}:{address[1]} before the request timeout"), now)

    def _next_deadline(self) -> float:
        with self._lock:
            return min((s.in_flight[0].deadline for s in self._streams.values() if s.in_flight),
                       default=float("inf"))

    def _stream(self, address: Address) -> StreamState:
        state = self._streams.get(address)
        if state is None:
            stream = ProduceStream(self._client.connections.kafka(address), address, self._on_answer,
                                   self._client.map_rpc_error)
            state = self._streams[address] = StreamState(stream)
        return state

    def _init_producer_id(self) -> bool:
        """Ask any broker for a producer id (the controller hands it out); False to retry later."""
        self._init_attempts += 1
        for address in self._client.candidate_addresses():
            try:
                r = self._client.call(address, "InitProducerId", kafka_pb2.InitProducerIdRequest(),
                                      detail="a producer id for idempotence")
            except KafkaError:
                continue
            if r.error_code == 0:
                self._producer_id, self._producer_epoch = r.producer_id, r.producer_epoch
                self._next_sequence.clear()
                self._init_attempts = 0
                self._client.trace("response", "InitProducerId", address, self._client.broker_id_of(address),
                                   f"producer id {r.producer_id}, epoch {r.producer_epoch}")
                return True
        time.sleep(backoff_s(self._init_attempts, self._config.retry_backoff_ms, self._config.retry_backoff_max_ms))
        return False

    def _records(self, batch: ProducerBatch) -> bytes:
        """The batch's bytes: built once when idempotent (with the next sequence of its partition)."""
        if not self._config.idempotent:
            return record_batch.build_batch(batch.records, compression_type=self._config.compression_type)
        if batch.built is None:
            tp = (batch.topic, batch.partition)
            sequence = self._next_sequence.get(tp, 0)
            batch.built = record_batch.build_batch(batch.records, producer_id=self._producer_id,
                                                   producer_epoch=self._producer_epoch, base_sequence=sequence,
                                                   compression_type=self._config.compression_type)
            batch.producer_id, batch.base_sequence = self._producer_id, sequence
            self._next_sequence[tp] = sequence + len(batch.records)
        return batch.built

    def _poll_new_leaders(self, now: float) -> float:
        """While retries back off, look for their partitions' new leaders every retry.backoff.ms; a
        retry whose leader changed goes at once (KIP-951) instead of after a backoff grown to up to
        retry.backoff.max.ms. Returns when to look next (inf when no retry is waiting)."""
        waiting = self._acc.backing_off(now)
        if not waiting:
            self._next_leader_poll = 0.0
            return float("inf")
        if self._next_leader_poll == 0.0:
            self._next_leader_poll = now + self._config.retry_backoff_ms / 1000  # the failure just refreshed
        if now < self._next_leader_poll:
            return self._next_leader_poll
        self._next_leader_poll = now + self._config.retry_backoff_ms / 1000
        self._refresh_metadata({topic for topic, _ in waiting})
        for tp in waiting:
            info = self._client.metadata.partition(*tp)
            if info is not None and info.leader >= 0:
                self._acc.leader_changed(tp, info.leader_epoch, now)
        return self._next_leader_poll

    def _refresh_metadata(self, sending: set[str]) -> None:
        """Ask for the topics being sent to as well as the cached ones: a lagging broker (one that just
        restarted and replays its journal) may answer UNKNOWN_TOPIC_OR_PARTITION, which drops the topic
        from the cache, and a refresh of the cached topics alone would never ask for it again."""
        try:
            self._client.refresh_metadata(sorted(set(self._client.metadata.topics) | sending) or None)
            self._metadata_stale = False
        except KafkaError:
            pass  # the batches retry with backoff; the next round tries again

    def _by_leader(self, batches: list[ProducerBatch], now: float) -> dict[Address, list[ProducerBatch]]:
        groups: dict[Address, list[ProducerBatch]] = defaultdict(list)
        for batch in batches:
            if self._expired(batch, now):
                continue
            try:
                _, address = self._client.leader_for(batch.topic, batch.partition)
            except KafkaError as e:
                self._retry_or_fail(batch, e, now)
                continue
            if self._probe_bootstrap:
                self._probe_bootstrap = False
                address = self._client.bootstrap[0]
            groups[address].append(batch)
        return groups

    def _destination(self, tp: tuple[str, int]) -> Address | None:
        """Where a batch of ``tp`` would go now (the accumulator holds it back while others are in flight
        elsewhere); None when no leader is known. The cached metadata only: this runs under the
        accumulator's lock, where leader_for's refresh (a network call) would block every send()."""
        info = self._client.metadata.partition(*tp)
        return self._client.metadata.broker_address(info.leader) if info is not None and info.leader >= 0 else None

    def _expired(self, batch: ProducerBatch, now: float) -> bool:
        age_ms = (now - batch.created) * 1000
        if age_ms < self._config.delivery_timeout_ms:
            return False
        self._finish(batch, KafkaTimeoutError(
            f"Expiring {len(batch.records)} record(s) for {batch.topic}-{batch.partition}: "
            f"{int(age_ms)} ms has passed since batch creation"))
        return True

    def _send(self, address: Address, batches: list[ProducerBatch], now: float) -> None:
        cfg = self._config
        correlation_id = next(self._correlation)
        request = kafka_pb2.ProduceRequest(acks=cfg.acks, timeout_ms=cfg.request_timeout_ms,
                                           correlation_id=correlation_id, partitions=[
            kafka_pb2.PartitionProduceData(topic=b.topic, partition=b.partition, records=self._records(b),
                                           current_leader_epoch=self._leader_epoch(b))
            for b in batches])
        detail = ", ".join(f"{b.topic}-{b.partition} ({len(b.records)} record(s))" for b in batches)
        state = self._stream(address)
        for b in batches:
            b.sent_to = address
        self._client.trace("request", "Produce", address, self._client.broker_id_of(address),
                           detail + (", acks=0: no answer awaited" if cfg.acks == 0 else ""))
        if cfg.acks == 0:
            # The records count as sent once handed over: no offset, no retry. The broker still
            # answers on the stream, so the request is tracked (answers pair with requests in order).
            for b in batches:
                self._finish(b, None, -1)
            batches = []
        with self._lock:   # before the send: its answer may come at once
            state.in_flight.append(InFlightRequest(correlation_id, batches, now + cfg.request_timeout_ms / 1000 + 1))
        state.stream.send(request)

    def _complete(self, address: Address, request: InFlightRequest, response: kafka_pb2.ProduceResponse,
                  now: float | None = None) -> None:
        """Settle each batch of an answered request. ``now``: the loop's clock; None (a caller outside
        the loop, such as a unit test handing it an answer) reads the clock."""
        now = time.monotonic() if now is None else now
        by_tp = {(b.topic, b.partition): b for b in request.batches}
        for r in response.partitions:
            batch = by_tp.pop((r.topic, r.partition), None)
            if batch is None:
                continue
            if r.error_code == 0:
                self._client.trace("response", "Produce", address, response.answered_by,
                                   f"{r.topic}-{r.partition} stored at offset {r.base_offset}")
                self._finish(batch, None, r.base_offset)
                continue
            hint = hint_from_proto(r.leader_hint) if r.HasField("leader_hint") else None
            error = error_for_code(r.error_code, r.error_message, hint)
            if isinstance(error, RecordTooLargeError) and len(batch.records) > 1:
                self._split(batch, address, response.answered_by)
                continue
            # Overtaking a batch numbered before it whose fate is still open (in flight, perhaps to the old
            # leader, or waiting to be retried) is not this batch's fault: retry it behind that one.
            overtook = isinstance(error, OutOfOrderSequenceNumberError) and self._acc.has_unresolved_earlier(batch)
            self._retry_or_fail(batch, error, now, address, response.answered_by, force_retry=overtook)
        for batch in by_tp.values():  # a broker that forgot a partition: treat as a lost answer
            self._retry_or_fail(batch, KafkaError("no answer for this partition in the produce response"), now)

    def _split(self, batch: ProducerBatch, address: Address, answered_by: int) -> None:
        """RECORD_TOO_LARGE for a batch of several records (batch.size above the topic's
        max.message.bytes): send its halves instead, as Kafka's producer does. Idempotent halves
        keep the batch's sequence range (first half from its base sequence, second after it), so
        the batches behind it in flight stay numbered right."""
        half = len(batch.records) // 2
        first, second = self._acc.split(batch, half)
        if batch.built is not None and batch.producer_id == self._producer_id:
            h = record_batch.parse_header(batch.built)
            for piece, start in ((first, 0), (second, half)):
                piece.built = record_batch.build_batch(piece.records, producer_id=h.producer_id,
                                                       producer_epoch=h.producer_epoch,
                                                       base_sequence=h.base_sequence + start,
                                                       compression_type=self._config.compression_type)
                piece.producer_id, piece.base_sequence = h.producer_id, h.base_sequence + start
        self._client.trace("retry", "Produce", address, answered_by,
                           f"RECORD_TOO_LARGE for {batch.topic}-{batch.partition}: splitting its "
                           f"{len(batch.records)} records into {half} + {len(batch.records) - half}")

    def _leader_epoch(self, batch: ProducerBatch) -> int:
        info = self._client.metadata.partition(batch.topic, batch.partition)
        return info.leader_epoch if info else -1

    def _retry_or_fail(self, batch: ProducerBatch, error: KafkaError, now: float, address: Address | None = None,
                       answered_by: int | None = None, force_retry: bool = False) -> None:
        cfg = self._config
        age_ms = (now - batch.created) * 1000
        if not (error.retriable or force_retry) or age_ms >= cfg.delivery_timeout_ms:
            self._finish(batch, error)
            return
        where = f"{batch.topic}-{batch.partition}"
        if error.leader_hint is not None and self._client.metadata.apply_leader_hint(
                batch.topic, batch.partition, error.leader_hint):
            h = error.leader_hint
            if address is not None:
                self._client.trace("redirect", "Produce", address, answered_by,
                                   f"{error.name} for {where}: leader is broker {h.leader_id} at "
                                   f"{h.host}:{h.port}, epoch {h.leader_epoch} -> retrying there")
            batch.retry_at = now  # the hint names the leader: retry at once (KIP-951)
        else:
            if error.invalid_metadata:
                self._metadata_stale = True
            batch.leader_epoch = self._leader_epoch(batch)
            batch.retry_at = now + backoff_s(batch.attempts + 1, cfg.retry_backoff_ms, cfg.retry_backoff_max_ms)
            if address is not None:
                self._client.trace("retry", "Produce", address, answered_by, f"{error} for {where}: retrying")
        batch.attempts += 1
        log.debug("produce_retry topic=%s partition=%d error=%s attempt=%d", batch.topic, batch.partition,
                  error.name, batch.attempts)
        self._acc.requeue(batch)

    def _finish(self, batch: ProducerBatch, error: KafkaError | None, base_offset: int = -1) -> None:
        if error is not None and batch.built is not None and batch.producer_id == self._producer_id:
            # A numbered batch failed for good: whether it was stored is unknown, so the partition's
            # sequence cannot continue. Start over with a new producer id (Kafka bumps the epoch, KIP-360).
            self._producer_id = -1
        self._acc.done(batch, acknowledged=error is None)
        if error is None:
            batch.complete(base_offset)
        else:
            batch.fail(error)


def _one_per_partition(batches: list[ProducerBatch]) -> list[list[ProducerBatch]]:
    """Split one leader's batches into requests holding at most one batch per partition (a produce
    request carries one batch per partition, like Kafka's): the k-th request takes each partition's
    k-th batch, so sending the requests in order keeps every partition's order."""
    requests: list[list[ProducerBatch]] = []
    seen: dict[tuple[str, int], int] = defaultdict(int)
    for b in batches:
        k = seen[(b.topic, b.partition)]
        seen[(b.topic, b.partition)] = k + 1
        if k == len(requests):
            requests.append([])
        requests[k].append(b)
    return requests
