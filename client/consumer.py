"""Consumer: reads a topic's partitions from their leaders (or from one named replica).

    with Consumer(bootstrap=":9092", topic="t", from_beginning=True) as c:
        for r in c.poll(timeout=1.0):
            print(r.offset, r.value)

Position = the next offset to read, per partition. Records come only from below
the high watermark of the broker read from. ``replica=ID`` reads that broker's
local copy (Kafka's KIP-392 follower fetching), up to that replica's own HW.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

from client import record_batch
from client.client import KafkaClient, backoff_s, hint_from_proto
from client.connection import Address
from client.errors import (KafkaError, NotLeaderOrFollowerError, OffsetOutOfRangeError,
                           UnknownTopicOrPartitionError, error_for_code)
from client.protocol.v1 import kafka_pb2
from client.trace import Tracer

EARLIEST, LATEST = -2, -1


# (topic, partition, offset, timestamp, key, value), read by name: what the decoder builds.
ConsumerRecord = record_batch.Record


class Consumer:
    def __init__(self, bootstrap: str = ":9092", topic: str = "", *, from_beginning: bool = False,
                 replica: int | None = None, partition: int | None = None, offset: int | None = None,
                 auto_offset_reset: str | None = None, fetch_max_wait_ms: int = 500, fetch_min_bytes: int = 1,
                 fetch_max_bytes: int = 52428800, max_partition_fetch_bytes: int = 1048576,
                 request_timeout_ms: int = 30000, retry_backoff_ms: int = 100, retry_backoff_max_ms: int = 1000,
                 metadata_max_age_ms: int = 300000, tracer: Tracer | None = None):
        if not topic:
            raise ValueError("Consumer needs a topic")
        self.topic = topic
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
        self.positions: dict[int, int] = {}
        self._failures = 0
        self._next_partial_refresh = 0.0
        # Kafka's Fetcher: at most one fetch in flight per broker, kept across polls. A poll returns
        # what the first answers carry instead of waiting for every broker (an idle partition's
        # leader holds its fetch for fetch_max_wait_ms).
        self._in_flight: dict[Address, tuple[Future, dict[int, int]]] = {}
        self._fetch_done = threading.Event()

    # ---- public API ---------------------------------------------------------------

    def poll(self, timeout: float = 1.0) -> list[ConsumerRecord]:
        """Records fetched within ``timeout`` seconds (maybe none); advances the positions."""
        deadline = time.monotonic() + timeout
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

    def seek(self, partition: int, offset: int) -> None:
        self.positions[partition] = offset

    def assignment(self) -> list[int]:
        info = self._client.ensure_topic(self.topic)
        if self._only_partition is not None:
            if not 0 <= self._only_partition < len(info.partitions):
                raise UnknownTopicOrPartitionError(
                    f"Partition {self._only_partition} of topic {self.topic} does not exist "
                    f"(it has {len(info.partitions)}).")
            return [self._only_partition]
        return list(range(len(info.partitions)))

    def close(self) -> None:
        for fetch, _ in self._in_flight.values():
            fetch.cancel()
        self._in_flight.clear()
        self._client.close()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- fetching -----------------------------------------------------------------

    def _poll_once(self, deadline: float) -> list[ConsumerRecord]:
        partitions = self.assignment()
        missing = [p for p in partitions if p not in self.positions]
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
                if self.positions.get(r.partition) != asked.get(r.partition):
                    continue  # the position moved (seek) while the fetch was out: its data is stale
                try:
                    records.extend(self._take(r))
                except KafkaError as e:
                    self._client.trace("error", "Fetch", address, response.answered_by,
                                       f"{self.topic}-{r.partition}: {e}")
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

    def _send_fetches(self, partitions: list[int], wait_ms: int) -> None:
        """A fetch to each leader that has none in flight, for its partitions no fetch is out for."""
        out = {p for _, asked in self._in_flight.values() for p in asked}
        wait_ms = max(0, wait_ms)
        for address, parts in self._by_target([p for p in partitions if p not in out]).items():
            if address in self._in_flight:
                continue
            request = kafka_pb2.FetchRequest(
                replica_id=-1, max_wait_ms=wait_ms, min_bytes=self._fetch[1], max_bytes=self._fetch[2],
                read_from_replica=self.replica is not None,
                partitions=[kafka_pb2.FetchPartition(topic=self.topic, partition=p, fetch_offset=self.positions[p],
                                                     current_leader_epoch=self._epoch(p),
                                                     partition_max_bytes=self._fetch[3]) for p in parts])
            detail = ", ".join(f"{self.topic}-{p} from offset {self.positions[p]}" for p in parts)
            self._client.trace("request", "Fetch", address, self._client.broker_id_of(address), detail)
            stub = self._client.connections.kafka(address)
            fetch = stub.Fetch.future(request, timeout=wait_ms / 1000 + self._client.request_timeout_s)
            self._in_flight[address] = (fetch, {p: self.positions[p] for p in parts})
            fetch.add_done_callback(lambda _: self._fetch_done.set())

    def _take(self, r) -> list[ConsumerRecord]:
        if r.error_code == OffsetOutOfRangeError.code:
            self._reset_offset(r.partition, r)
            return []
        if r.error_code:
            hint = hint_from_proto(r.leader_hint) if r.HasField("leader_hint") else None
            if hint is not None and self.replica is None:
                self._client.metadata.apply_leader_hint(self.topic, r.partition, hint)
            raise error_for_code(r.error_code, r.error_message, hint)
        position = self.positions[r.partition]
        decoded = record_batch.decode_all(r.records, min_offset=position, topic=self.topic, partition=r.partition)
        if decoded:
            self.positions[r.partition] = decoded[-1].offset + 1
        return decoded

    def _reset_offset(self, partition: int, r) -> None:
        if self.auto_offset_reset == "none":
            raise OffsetOutOfRangeError(f"Offset {self.positions[partition]} is out of range for "
                                        f"{self.topic}-{partition} (log start {r.log_start_offset}, "
                                        f"high watermark {r.high_watermark})")
        self.positions[partition] = r.log_start_offset if self.auto_offset_reset == "earliest" else r.high_watermark

    def _by_target(self, partitions: list[int]) -> dict[Address, list[int]]:
        out: dict[Address, list[int]] = {}
        for p in partitions:
            out.setdefault(self._target(p), []).append(p)
        return out

    def _target(self, partition: int) -> Address:
        if self.replica is None:
            return self._client.leader_for(self.topic, partition)[1]
        address = self._client.metadata.broker_address(self.replica)
        if address is None:
            raise NotLeaderOrFollowerError(f"broker {self.replica} is not in the cluster metadata")
        return address

    def _epoch(self, partition: int) -> int:
        info = self._client.metadata.partition(self.topic, partition)
        return info.leader_epoch if info is not None and self.replica is None else -1

    def _init_positions(self, partitions: list[int]) -> None:
        if self._start_offset is not None and self._start_offset >= 0:
            for p in partitions:
                self.positions[p] = self._start_offset
            return
        when = EARLIEST if self.auto_offset_reset == "earliest" else LATEST
        for address, parts in self._by_target(partitions).items():
            request = kafka_pb2.ListOffsetsRequest(replica_id=-1, read_from_replica=self.replica is not None,
                partitions=[kafka_pb2.ListOffsetsPartition(topic=self.topic, partition=p, timestamp=when,
                                                           current_leader_epoch=self._epoch(p)) for p in parts])
            response = self._client.call(address, "ListOffsets", request,
                                         detail=f"{'earliest' if when == EARLIEST else 'latest'} offset of "
                                                + ", ".join(f"{self.topic}-{p}" for p in parts))
            for r in response.partitions:
                if r.error_code:
                    hint = hint_from_proto(r.leader_hint) if r.HasField("leader_hint") else None
                    raise error_for_code(r.error_code, r.error_message, hint)
                self.positions[r.partition] = r.offset

    def _refresh_quietly(self) -> None:
        try:
            self._client.refresh_metadata([self.topic])
        except KafkaError:
            pass
