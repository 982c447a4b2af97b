"""Idempotent-producer state of one partition (Kafka's ProducerStateManager), as plain data.

Per producer id: its epoch and the last five batches it wrote (first and last
sequence, first and last offset). The leader checks every batch that carries a
producer id against it before appending:

- the same sequences as a retained batch: a duplicate (a retry whose first
  answer was lost); nothing is appended, the original offset is the answer;
- an older producer epoch: INVALID_PRODUCER_EPOCH;
- a first sequence that does not follow the last one: OUT_OF_ORDER_SEQUENCE_NUMBER;
- otherwise it is appended and remembered.

Followers, and a broker that opens its log after a restart, rebuild the same
state from the batch headers they hold (``observe``), so the dedup window
survives a leader change: the new leader answers a retry with the offset the
old one gave.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from client.errors import InvalidProducerEpochError, KafkaError, OutOfOrderSequenceNumberError

NO_PRODUCER_ID = -1
BATCHES_TO_RETAIN = 5  # Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN; also the client's in-flight bound


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

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1


@dataclass(frozen=True)
class Duplicate:
    """The batch was written before: answer with its offsets, append nothing."""
    first_offset: int
    last_offset: int


@dataclass
class ProducerStateManager:
    producers: dict[int, ProducerEntry] = field(default_factory=dict)

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
                first_offset: int, last_offset: int) -> None:
        """A batch is in the log (appended by us as leader, copied as follower, or found on load)."""
        if producer_id == NO_PRODUCER_ID or first_seq < 0:
            return
        entry = self.producers.get(producer_id)
        if entry is None or epoch > entry.epoch:
            entry = self.producers[producer_id] = ProducerEntry(epoch)
        elif epoch < entry.epoch:
            return
        entry.batches.append(BatchMetadata(first_seq, last_seq, first_offset, last_offset))
