"""A follower's fetch stream as an incremental fetch session (Kafka's FetchSession, KIP-227).

Without sessions every replica fetch names every partition the follower takes
from this leader, and the leader reads and answers every one of them, new data
or not: at thousands of partitions an idle cluster spends its CPU re-reading
partitions where nothing happened. A session remembers the follower's position
in each partition (its fetch offset, epochs and size limit) and what the leader
last told it (HW, log start, log end), so that:

- the follower's requests after the first name only the partitions whose
  position changed (after it appended, truncated, or started or stopped
  following one) and the ones it dropped (``forgotten``);
- the leader reads only the partitions that can say something new: new data
  past the follower's position, a leadership that moved, a follower outside the
  ISR (its fetch may bring it back in, so it is checked every round), or a HW or
  log start that moved since it last answered;
- and it looks only at the partitions that changed since it last looked: the
  replica manager marks a partition in every session holding it when it is
  appended to, its HW or log start moves, or its leadership or ISR changes; a
  round examines the marked partitions, the watched ones (outside the ISR, or
  answering an error) and, every FULL_SCAN_INTERVAL_MS, all of them (a safety
  net under the marks). An idle partition costs nothing per round;
- the answer holds only the partitions with records, an error, or offsets the
  follower has not been told.

A ReplicaFetchStream is one session: it starts with the stream's first request
(a full one) and ends with the stream. A full request (the stream's first, or a
unary ReplicaFetch) replaces the session's partitions and is answered whole.

What a partition left unread does not do is record the follower's fetch, which
the ISR lag rule (replica.lag.time.max.ms) reads. A follower holding the
leader's log end is never lagging (Kafka's rule), so nothing is lost while the
partition is idle; when the leader next appends, the follower is taken as
caught up at its session's latest round (``fetched_at``), as if it had fetched
then, which it did (partition_state.py, PartitionState.on_leader_append).

Plain Python: the replica manager drives it with the partitions' states.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from broker.partition import FetchRequestPartition, FetchResult
from broker.partition_state import PartitionState

TopicPartition = tuple[str, int]
Offsets = tuple[int, int, int]   # (high watermark, log start offset, log end offset) as answered
FULL_SCAN_INTERVAL_MS = 10_000


@dataclass
class SessionPartition:
    fetch: FetchRequestPartition
    sent: Offsets | None = None   # what the follower was last told; None: nothing yet
    # The leader has read at ``fetch``'s position: a new position must be read at least once, since
    # the read is where the follower's position is recorded (and may move the HW or the ISR).
    read_at_position: bool = False


class FetchSession:
    def __init__(self, replica_id: int):
        self.replica_id = replica_id
        self.partitions: dict[TopicPartition, SessionPartition] = {}
        self.round_ms = -1   # the lag clock when the latest request arrived; -1 before the first
        self._marked: set[TopicPartition] = set()    # changed since last examined (mark(), any thread)
        self._marks_lock = threading.Lock()
        self._watched: set[TopicPartition] = set()   # examined every round until it settles
        self._next_full_scan_ms = 0

    def mark(self, tp: TopicPartition) -> None:
        """The leader's side of ``tp`` changed (an append, a HW, log start, leadership or ISR that moved):
        the next round examines it."""
        if tp in self.partitions:
            with self._marks_lock:
                self._marked.add(tp)

    def settled(self) -> bool:
        """No partition is watched (read every round): a round reads only what changed, so an append may
        complete a parked fetch of this session on the appending thread (broker/delayed_fetch.py)."""
        return not self._watched

    def candidates(self, now_ms: int) -> list[TopicPartition]:
        """The partitions to examine now: the marked and the watched ones, or every one now and then."""
        with self._marks_lock:
            marked, self._marked = self._marked, set()
        if now_ms >= self._next_full_scan_ms:
            self._next_full_scan_ms = now_ms + FULL_SCAN_INTERVAL_MS
            return list(self.partitions)
        return [tp for tp in marked | self._watched if tp in self.partitions]

    def update(self, partitions: Iterable[FetchRequestPartition], forgotten: Iterable[TopicPartition],
               incremental: bool, now_ms: int) -> None:
        """Take one request: an incremental one changes the named partitions and drops the forgotten;
        a full one replaces them all (and everything is answered again)."""
        if not incremental:
            self.partitions, self._watched, self._next_full_scan_ms = {}, set(), 0
        for tp in forgotten:
            self.partitions.pop(tp, None)
            self._watched.discard(tp)
        for p in partitions:
            tp = (p.topic, p.partition)
            known = self.partitions.get(tp)
            if known is None:
                self.partitions[tp] = SessionPartition(p)
            else:
                known.fetch, known.read_at_position = p, False
            self.mark(tp)
        self.round_ms = now_ms

    def needs_read(self, tp: TopicPartition, sp: SessionPartition, state: PartitionState | None) -> bool:
        """Whether a read of ``sp`` this round can tell the follower anything (else it is skipped). A
        partition that is not hosted, not led at the follower's epoch (the read answers the error) or
        whose follower is outside the ISR (its fetch may bring it back in) is read, and watched, every round."""
        f = sp.fetch
        if (state is None or not state.is_leader or state.leader_epoch != f.current_leader_epoch
                or self.replica_id not in state.isr):
            self._watched.add(tp)
            return True
        self._watched.discard(tp)
        return (not sp.read_at_position or state.log_end_offset != f.fetch_offset
                or sp.sent != (state.high_watermark, state.log_start_offset, state.log_end_offset))

    @staticmethod
    def read_is_stale(read: FetchResult, state: PartitionState | None) -> bool:
        """A partition read earlier in this (long-polling) round: has its leader appended or moved since, or
        its HW or log start? Each look takes the partition's mark: a change skipped here would be told to the
        follower only when the partition next changed (the other follower's fetch moves the HW after this
        one's read: its HW stayed one write behind)."""
        if state is None:
            return read.error is None
        return read.error is None and (not state.is_leader or state.log_end_offset != read.log_end_offset
                                       or state.high_watermark != read.high_watermark
                                       or state.log_start_offset != read.log_start_offset)

    def answer(self, reads: dict[TopicPartition, FetchResult]) -> list[FetchResult]:
        """The partitions worth answering, in the session's order; records what each was told."""
        out = []
        for tp, r in reads.items():
            sp = self.partitions.get(tp)
            if sp is not None:
                sp.read_at_position = True
            offsets = (r.high_watermark, r.log_start_offset, r.log_end_offset)
            if (r.records or r.error is not None or r.diverging_epoch is not None or sp is None
                    or sp.sent != offsets):
                out.append(r)
                if sp is not None:
                    # An error is told every time it is read: the follower backs off and asks again.
                    sp.sent = None if r.error is not None else offsets
        return out

    def fetched_at(self, tp: TopicPartition) -> int | None:
        """When the follower last fetched ``tp`` through this session (its latest round), if it is in it."""
        return self.round_ms if tp in self.partitions and self.round_ms >= 0 else None
