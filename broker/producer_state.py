"""Idempotent-producer state of one partition (Kafka's ProducerStateManager), as plain data.

Per producer id: its epoch, the last five batches it wrote (first and last
sequence, first and last offset) and the max timestamp of its last batch. The
leader checks every batch that carries a producer id against it before appending:

- the same sequences as a retained batch: a duplicate (a retry whose first
  answer was lost); nothing is appended, the original offset is the answer;
- an older producer epoch: INVALID_PRODUCER_EPOCH;
- a first sequence that does not follow the last one: OUT_OF_ORDER_SEQUENCE_NUMBER;
- otherwise it is appended and remembered.

Followers, and a broker that opens its log after a restart, rebuild the same
state from the batch headers they hold (``observe``), so the dedup window
survives a leader change: the new leader answers a retry with the offset the
old one gave.

A producer idle for ``producer.id.expiration.ms`` is forgotten (``remove_expired``).
Every ``snapshot_interval_bytes`` of observed batches the manager keeps an
in-memory snapshot (Kafka writes one at each segment roll), so that a follower
that truncates its log restores the newest snapshot below the cut and replays
only the batches after it (``truncate_producer_state``), instead of the whole log.
A clean stop writes the state next to the log (``encode_snapshot``; the file is
broker/log/producer_snapshot_file.py's), and the next start loads it instead of
replaying the log (``rebuild_producer_state``).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from client import record_batch
from client.errors import InvalidProducerEpochError, KafkaError, OutOfOrderSequenceNumberError

if TYPE_CHECKING:
    from broker.log import PartitionLog

NO_PRODUCER_ID = -1
NO_TIMESTAMP = -1  # Kafka's RecordBatch.NO_TIMESTAMP
BATCHES_TO_RETAIN = 5  # Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN; also the client's in-flight bound
DEFAULT_SNAPSHOT_INTERVAL_BYTES = 1024 * 1024
DEFAULT_MAX_SNAPSHOTS = 8
REBUILD_CHUNK_BYTES = 4 * 1024 * 1024  # how much of the log one read brings when replaying it

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int


@dataclass
class ProducerEntry:
    epoch: int
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=BATCHES_TO_RETAIN))
    # Kafka's lastTimestamp: the max timestamp of the last batch; the producer's age is counted from it.
    last_timestamp: int = NO_TIMESTAMP

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1


@dataclass(frozen=True)
class Duplicate:
    """The batch was written before: answer with its offsets, append nothing."""
    first_offset: int
    last_offset: int


# One producer in a snapshot: (epoch, its retained batches, last timestamp). Tuples of the frozen
# BatchMetadata the live state holds too, so a snapshot costs a few references per producer.
SnapshotEntry = tuple[int, tuple[BatchMetadata, ...], int]


@dataclass(frozen=True)
class ProducerStateSnapshot:
    """The state as it was once every batch below ``offset`` was observed (Kafka names its snapshot
    files by this offset)."""
    offset: int
    entries: dict[int, SnapshotEntry]


def is_producer_expired(last_timestamp: int, now_ms: int, expiration_ms: int) -> bool:
    """Kafka's isProducerExpired (no transactions here). A producer whose last batch had no
    timestamp cannot be aged: it is kept, since forgetting it too early turns a retry into a
    second copy."""
    return last_timestamp != NO_TIMESTAMP and now_ms - last_timestamp >= expiration_ms


@dataclass
class ProducerStateManager:
    producers: dict[int, ProducerEntry] = field(default_factory=dict)
    snapshot_interval_bytes: int = DEFAULT_SNAPSHOT_INTERVAL_BYTES
    max_snapshots: int = DEFAULT_MAX_SNAPSHOTS
    # Kafka's mapEndOffset: the offset after the last batch observed, where a snapshot taken now stands.
    map_end_offset: int = 0
    snapshots: deque[ProducerStateSnapshot] = field(default_factory=deque)  # oldest first
    bytes_since_snapshot: int = 0
    # Batch bytes read back from the log to build this state (a rebuild, or the replay after a truncation).
    replayed_bytes: int = 0

    def __post_init__(self) -> None:
        if self.snapshot_interval_bytes < 1 or self.max_snapshots < 1:
            raise ValueError("snapshot_interval_bytes and max_snapshots must be at least 1")
        self.snapshots = deque(self.snapshots, maxlen=self.max_snapshots)

    def check(self, producer_id: int, epoch: int, first_seq: int, last_seq: int) -> Duplicate | KafkaError | None:
        """What the leader must do with a new batch: None (append it), a Duplicate, or the error."""
        if producer_id == NO_PRODUCER_ID:
            return None
        entry = self.producers.get(producer_id)
        if entry is None:
            return None  # a producer we know nothing of (new, or its batches were deleted): accept
        if epoch < entry.epoch:
            return InvalidProducerEpochError(f"Producer {producer_id} epoch {epoch} is older than {entry.epoch}.")
        if epoch > entry.epoch:
            return None if first_seq == 0 else OutOfOrderSequenceNumberError(
                f"A new epoch {epoch} of producer {producer_id} must start at sequence 0, not {first_seq}.")
        for b in entry.batches:
            if (b.first_seq, b.last_seq) == (first_seq, last_seq):
                return Duplicate(b.first_offset, b.last_offset)
        if first_seq != entry.last_seq + 1:
            return OutOfOrderSequenceNumberError(
                f"Out of order sequence number for producer {producer_id}: expected {entry.last_seq + 1}, "
                f"got {first_seq}.")
        return None

    def observe(self, producer_id: int, epoch: int, first_seq: int, last_seq: int,
                first_offset: int, last_offset: int, *, max_timestamp: int = NO_TIMESTAMP,
                batch_bytes: int = 0) -> None:
        """A batch is in the log (appended by us as leader, copied as follower, or found on load).

        Every batch of the log must be observed, in log order, non-idempotent ones too: that is
        what makes a snapshot at ``map_end_offset`` true. ``max_timestamp`` is the batch header's
        (the producer's age counts from it); ``batch_bytes`` its whole size (it paces snapshots)."""
        self._remember(producer_id, epoch, first_seq, last_seq, first_offset, last_offset, max_timestamp)
        self.map_end_offset = last_offset + 1
        self.bytes_since_snapshot += batch_bytes
        if self.bytes_since_snapshot >= self.snapshot_interval_bytes:
            self.take_snapshot()

    def _remember(self, producer_id: int, epoch: int, first_seq: int, last_seq: int,
                  first_offset: int, last_offset: int, max_timestamp: int) -> None:
        if producer_id == NO_PRODUCER_ID or first_seq < 0:
            return
        entry = self.producers.get(producer_id)
        if entry is None or epoch > entry.epoch:
            entry = self.producers[producer_id] = ProducerEntry(epoch)
        elif epoch < entry.epoch:
            return
        entry.batches.append(BatchMetadata(first_seq, last_seq, first_offset, last_offset))
        entry.last_timestamp = max_timestamp

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        """Forget producers idle for ``expiration_ms`` (Kafka's removeExpiredProducers, run by the
        broker's housekeeping); returns how many were removed."""
        expired = [pid for pid, e in self.producers.items()
                   if is_producer_expired(e.last_timestamp, now_ms, expiration_ms)]
        for pid in expired:
            del self.producers[pid]
        # Kafka drops expired producers when it loads a snapshot; dropping them from the snapshots
        # now does the same, so a truncation that restores one does not bring them back.
        self.snapshots = deque((_without_expired(s, now_ms, expiration_ms) for s in self.snapshots),
                               maxlen=self.max_snapshots)
        return len(expired)

    def current(self) -> ProducerStateSnapshot:
        """The state as of ``map_end_offset``, as a snapshot (nothing kept)."""
        return ProducerStateSnapshot(self.map_end_offset, {pid: (e.epoch, tuple(e.batches), e.last_timestamp)
                                                           for pid, e in self.producers.items()})

    def take_snapshot(self) -> None:
        """Keep a copy of the state as of ``map_end_offset``; the oldest copy goes past max_snapshots."""
        if self.snapshots and self.snapshots[-1].offset == self.map_end_offset:
            self.snapshots.pop()
        self.snapshots.append(self.current())
        self.bytes_since_snapshot = 0

    def load_snapshot(self, snapshot: ProducerStateSnapshot) -> None:
        """Replace the state by the snapshot's (the snapshot list itself is left as it is)."""
        self.producers = {pid: ProducerEntry(epoch, deque(batches, maxlen=BATCHES_TO_RETAIN), ts)
                          for pid, (epoch, batches, ts) in snapshot.entries.items()}
        self.map_end_offset = snapshot.offset
        self.bytes_since_snapshot = 0


def _without_expired(snapshot: ProducerStateSnapshot, now_ms: int, expiration_ms: int) -> ProducerStateSnapshot:
    kept = {pid: e for pid, e in snapshot.entries.items() if not is_producer_expired(e[2], now_ms, expiration_ms)}
    return snapshot if len(kept) == len(snapshot.entries) else ProducerStateSnapshot(snapshot.offset, kept)


def observe_header(producers: ProducerStateManager, h: record_batch.BatchHeader) -> None:
    """Feed the producer state one stored batch, from its header."""
    producers.observe(h.producer_id, h.producer_epoch, h.base_sequence, h.base_sequence + h.last_offset_delta,
                      h.base_offset, h.last_offset, max_timestamp=h.max_timestamp, batch_bytes=h.size)


def observe_batches(producers: ProducerStateManager, batches: bytes | memoryview) -> None:
    """Feed the producer state the headers of whole batches (per batch, never per record)."""
    for _, h in record_batch.iter_batches(batches):
        observe_header(producers, h)


def rebuild_producer_state(plog: PartitionLog, chunk_bytes: int = REBUILD_CHUNK_BYTES) -> ProducerStateManager:
    """The state of a log just opened: the snapshot its last clean close left at the log end
    (broker/log/producer_snapshot_file.py), else a scan of its batch headers from its start."""
    producers = ProducerStateManager()
    taken = plog.take_producer_snapshot()
    if taken is not None:
        try:
            producers.snapshots.append(decode_snapshot(*taken))
        except ValueError as e:   # written by us and checksummed: a bug, not a disk fault; the replay is right
            log.warning("producer_snapshot_ignored", dir=str(plog.directory), why=str(e))
    return truncate_producer_state(producers, plog, plog.log_end_offset, chunk_bytes)


def encode_snapshot(snapshot: ProducerStateSnapshot) -> str:
    """The body of a snapshot file (its offset is the file's name): one JSON list of producers, each
    [producer id, epoch, last timestamp, [[first seq, last seq, first offset, last offset], ...]]."""
    return json.dumps([[pid, epoch, ts, [[b.first_seq, b.last_seq, b.first_offset, b.last_offset] for b in batches]]
                       for pid, (epoch, batches, ts) in snapshot.entries.items()], separators=(",", ":"))


def decode_snapshot(offset: int, body: str) -> ProducerStateSnapshot:
    """encode_snapshot's inverse; ValueError when ``body`` is not one."""
    try:
        entries = {int(pid): (int(epoch), tuple(BatchMetadata(*map(int, b)) for b in batches), int(ts))
                   for pid, epoch, ts, batches in json.loads(body)}
    except (TypeError, ValueError) as e:
        raise ValueError(f"not a producer snapshot: {e}") from None
    if any(len(batches) > BATCHES_TO_RETAIN for _, batches, _ in entries.values()):
        raise ValueError(f"a producer with more than {BATCHES_TO_RETAIN} batches")
    return ProducerStateSnapshot(offset, entries)


def truncate_producer_state(producers: ProducerStateManager, plog: PartitionLog, offset: int,
                            chunk_bytes: int = REBUILD_CHUNK_BYTES) -> ProducerStateManager:
    """The state as of ``offset`` (call it once the log is cut there): Kafka's truncateAndReload.

    Restores the newest snapshot at or below ``offset`` and replays the batch headers from there;
    with none (or none inside the log) it replays the whole log. Snapshots above ``offset`` cover
    batches that are gone; those below the log start cover deleted ones: both are dropped.
    ``replayed_bytes`` of the result says how much of the log was read."""
    end = min(offset, plog.log_end_offset)
    start = plog.log_start_offset
    kept = [s for s in producers.snapshots if start <= s.offset <= end]
    rebuilt = ProducerStateManager(snapshot_interval_bytes=producers.snapshot_interval_bytes,
                                   max_snapshots=producers.max_snapshots, map_end_offset=start,
                                   snapshots=deque(kept))
    if kept:
        rebuilt.load_snapshot(kept[-1])
        start = kept[-1].offset
    rebuilt.replayed_bytes = _replay(rebuilt, plog, start, end, chunk_bytes)
    return rebuilt


def _replay(producers: ProducerStateManager, plog: PartitionLog, start: int, end: int, chunk_bytes: int) -> int:
    """Observe the log's batches that lie whole in [start, end); returns their bytes."""
    replayed, offset = 0, start
    while offset < end:
        data = plog.read(offset, chunk_bytes, end)
        last = None
        for _, h in record_batch.iter_batches(data):
            if h.last_offset >= offset:  # the first batch read may begin before ``offset``
                observe_header(producers, h)
                replayed += h.size
            last = h
        if last is None:
            break
        offset = last.next_offset
    return replayed
