"""A partition's replication state as a plain state machine: role, epochs, LEO, HW, ISR.

No sockets, threads, files or clocks: its Partition (broker/partition.py) feeds it
events (an append, a follower's fetch, a truncation, a metadata change) with ``now_ms``
and performs what it answers. Tests drive it directly. Only its methods change the LEO,
the HW, the ISR and the pending ISR, and each such change ends with an invariant check:
a broken invariant stops the broker, naming it (broker/invariants.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.invariants import violated
from broker.metadata.image import NO_LEADER, PartitionRegistration
from client.errors import (FencedLeaderEpochError, KafkaError, NotLeaderOrFollowerError,
                           UnknownLeaderEpochError)

NO_EPOCH = -1


@dataclass
class FollowerState:
    broker_id: int
    # The follower's log end offset, learned from its fetch offset; -1 until it fetched.
    log_end_offset: int = -1
    last_caught_up_ms: int = 0
    # The leader's LEO and the time at the follower's previous fetch (Kafka's Replica
    # state): a fetch that reaches what the leader had then proves the follower was
    # caught up then, even if the leader has appended since.
    last_fetch_leader_log_end_offset: int = -1
    last_fetch_ms: int = 0


@dataclass
class PartitionState:
    topic: str
    partition: int
    local_broker_id: int
    leader_id: int = NO_LEADER
    leader_epoch: int = NO_EPOCH
    partition_epoch: int = NO_EPOCH
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()
    # Invariant: log_start_offset <= high_watermark <= log_end_offset; the HW never
    # moves back while this broker leads at one epoch.
    log_start_offset: int = 0
    log_end_offset: int = 0
    high_watermark: int = 0
    followers: dict[int, FollowerState] = field(default_factory=dict)
    # The topic's min.insync.replicas: below it acks=all is refused and the HW stands still.
    min_insync_replicas: int = 1
    # An ISR change sent to the controller and not yet seen in metadata (one at a time).
    pending_isr: tuple[int, ...] | None = None

    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.local_broker_id

    def become_leader(self, reg: PartitionRegistration, now_ms: int) -> bool:
        """Take ``reg``; True if this starts a new leadership (False: same epoch, only the ISR moved)."""
        same_term = self.is_leader and reg.leader == self.local_broker_id and reg.leader_epoch == self.leader_epoch
        self._take(reg)
        self.pending_isr = None
        if not same_term:
            self.followers = {}
        for r in reg.replicas:
            if r != self.local_broker_id and r not in self.followers:
                self.followers[r] = FollowerState(r, last_caught_up_ms=now_ms)
        self.maybe_advance_high_watermark()
        return not same_term

    def become_follower(self, reg: PartitionRegistration) -> bool:
        """Take ``reg``; True if the leader or its epoch changed (the fetcher must move)."""
        changed = (reg.leader, reg.leader_epoch) != (self.leader_id, self.leader_epoch) or self.is_leader
        self._take(reg)
        self.followers = {}
        self.pending_isr = None
        return changed

    def _take(self, reg: PartitionRegistration) -> None:
        self.leader_id, self.leader_epoch = reg.leader, reg.leader_epoch
        self.partition_epoch, self.replicas, self.isr = reg.partition_epoch, reg.replicas, reg.isr

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        """The ISR plus members a pending expansion adds: what the HW must wait for (the safe side)."""
        if self.pending_isr is None:
            return self.isr
        return self.isr + tuple(r for r in self.pending_isr if r not in self.isr)

    @property
    def effective_min_isr(self) -> int:
        return min(self.min_insync_replicas, len(self.replicas)) if self.replicas else 1

    def check_leader_epoch(self, request_epoch: int) -> KafkaError | None:
        """Whether a leader-only request (produce, consumer fetch) may be served here.

        ``request_epoch`` is the leader epoch the sender knows; -1 skips the epoch check.
        """
        if not self.is_leader:
            return NotLeaderOrFollowerError(
                f"Broker {self.local_broker_id} is not the leader of {self.topic}-{self.partition}"
                f" (leader: {self.leader_id}, epoch {self.leader_epoch}).")
        return self.check_epoch(request_epoch)

    def check_epoch(self, request_epoch: int) -> KafkaError | None:
        if request_epoch == NO_EPOCH or request_epoch == self.leader_epoch:
            return None
        if request_epoch < self.leader_epoch:
            return FencedLeaderEpochError(f"Leader epoch {request_epoch} of the request is older than "
                                          f"the current epoch {self.leader_epoch}.")
        return UnknownLeaderEpochError(f"Leader epoch {request_epoch} of the request is newer than "
                                       f"the current epoch {self.leader_epoch}.")

    def on_leader_append(self, log_end_offset: int, fetched_at: dict[int, int] | None = None) -> bool:
        """The leader's log grew to ``log_end_offset``; True if the HW moved.

        ``fetched_at``: when each follower's fetch session last fetched this partition. A session does
        not re-read a partition whose follower holds the leader's log end (broker/fetch_session.py), so
        such a follower's last fetch here may be long ago; it was caught up at its session's latest
        round, and is taken as having fetched then, before this append (as a full fetch would have)."""
        for replica_id, at in (fetched_at or {}).items():
            f = self.followers.get(replica_id)
            if f is not None and f.log_end_offset == self.log_end_offset and at > f.last_fetch_ms:
                f.last_caught_up_ms = max(f.last_caught_up_ms, at)
                f.last_fetch_ms = at
                f.last_fetch_leader_log_end_offset = self.log_end_offset
        self.log_end_offset = log_end_offset
        return self.maybe_advance_high_watermark()

    def on_follower_fetch(self, replica_id: int, fetch_offset: int, now_ms: int) -> bool:
        """A follower asked for ``fetch_offset``, so it holds everything below; True if the HW moved."""
        follower = self.followers.get(replica_id)
        if follower is None:
            return False
        follower.log_end_offset = fetch_offset
        if fetch_offset >= self.log_end_offset:
            follower.last_caught_up_ms = now_ms
        elif fetch_offset >= follower.last_fetch_leader_log_end_offset >= 0:
            follower.last_caught_up_ms = max(follower.last_caught_up_ms, follower.last_fetch_ms)
        follower.last_fetch_leader_log_end_offset = self.log_end_offset
        follower.last_fetch_ms = now_ms
        return self.maybe_advance_high_watermark()

    def maybe_advance_high_watermark(self) -> bool:
        """HW = the smallest log end offset over the maximal ISR (this leader included); only forward,
        and only while the ISR is at least min.insync.replicas (Kafka 3.7+, KIP-966): with fewer
        replicas in sync, acks=1 writes are stored but not yet visible."""
        if not self.is_leader or len(self.isr) < self.effective_min_isr:
            return False
        ends = [self.log_end_offset]
        for r in self.maximal_isr:
            if r != self.local_broker_id:
                f = self.followers.get(r)
                ends.append(f.log_end_offset if f else -1)
        candidate = min(ends)
        if candidate > self.high_watermark:
            self.high_watermark = candidate
            self.check_invariants()
            return True
        return False

    # ---- ISR changes: the leader proposes, the controller decides (AlterPartition) ------

    def isr_to_expand(self, replica_id: int, leader_epoch_start_offset: int) -> tuple[int, ...] | None:
        """The ISR with ``replica_id`` added, if it has caught up: its LEO reached the HW and the
        start of this leader's epoch (so it holds everything this leader may have acknowledged)."""
        follower = self.followers.get(replica_id)
        if (not self.is_leader or self.pending_isr is not None or follower is None
                or replica_id in self.isr):
            return None
        if follower.log_end_offset >= max(self.high_watermark, leader_epoch_start_offset):
            return self.isr + (replica_id,)
        return None

    def isr_to_shrink(self, now_ms: int, lag_time_max_ms: int) -> tuple[int, ...] | None:
        """The ISR without followers that have not caught up for ``lag_time_max_ms``, if any."""
        if not self.is_leader or self.pending_isr is not None:
            return None
        out = [r for r in self.isr if r != self.local_broker_id and self._lagging(r, now_ms, lag_time_max_ms)]
        if not out:
            return None
        return tuple(r for r in self.isr if r not in out)

    def _lagging(self, replica_id: int, now_ms: int, lag_time_max_ms: int) -> bool:
        f = self.followers.get(replica_id)
        if f is None:
            return True
        return f.log_end_offset != self.log_end_offset and now_ms - f.last_caught_up_ms > lag_time_max_ms

    def propose_isr(self, new_isr: tuple[int, ...]) -> None:
        """``new_isr`` was sent to the controller: pending until committed metadata settles it."""
        if not new_isr or self.local_broker_id not in new_isr:
            violated("isr_holds_leader", f"{self.topic}-{self.partition}: proposed ISR {list(new_isr)} "
                                         f"without its leader {self.local_broker_id}")
        self.pending_isr = new_isr

    def drop_pending_isr(self) -> bool:
        """The controller proved the pending change was not applied: the next check decides again. A
        dropped expansion no longer holds the HW back, so it moves now (True if it did): nothing else
        may come to move it, since a follower at the log end sends nothing new for its partition."""
        self.pending_isr = None
        return self.maybe_advance_high_watermark()

    # ---- follower side ----------------------------------------------------------------

    def on_follower_append(self, log_end_offset: int, leader_high_watermark: int) -> None:
        """This follower's log grew (or not) and the leader told its HW: ours is min(leader's, our LEO)."""
        self.log_end_offset = log_end_offset
        self.high_watermark = max(min(leader_high_watermark, log_end_offset), 0)
        self.check_invariants()

    def on_truncated(self, log_start_offset: int, log_end_offset: int) -> None:
        """The log was cut back (a diverged tail, an out-of-range reset): the HW cannot stay past it."""
        self.log_start_offset, self.log_end_offset = log_start_offset, log_end_offset
        self.high_watermark = max(min(self.high_watermark, log_end_offset), log_start_offset)
        self.check_invariants()

    def on_log_start_moved(self, log_start_offset: int) -> None:
        """Retention deleted old segments (never past the HW)."""
        self.log_start_offset = log_start_offset
        self.check_invariants()

    def check_invariants(self) -> None:
        """log_start <= HW <= LEO (Kafka's Partition); a broken one raises InvariantViolation."""
        if not self.log_start_offset <= self.high_watermark <= self.log_end_offset:
            violated("log_start_le_hw_le_leo", (
                f"{self.topic}-{self.partition}: log start {self.log_start_offset}, high watermark "
                f"{self.high_watermark}, log end {self.log_end_offset}"))


def truncation_offset(diverging_epoch: int, diverging_end_offset: int, own_end_for_epoch: tuple[int, int],
                      own_high_watermark: int, own_log_end_offset: int) -> tuple[int, bool]:
    """Where a follower truncates after the leader answered DivergingEpoch (Kafka's AbstractFetcherThread).

    ``own_end_for_epoch`` is this follower's (epoch, end offset) for ``diverging_epoch``:
    its largest epoch <= that one, and where it ended here. Returns (offset, complete);
    complete=False means fetch again: the follower did not know the leader's epoch, so
    it cut back to the end of its own older epoch and the next answer may point further back.
    """
    if diverging_end_offset < 0:
        return min(own_high_watermark, own_log_end_offset), True  # the leader knows no such epoch
    own_epoch, own_end = own_end_for_epoch
    if own_epoch < 0 or diverging_epoch < 0:
        # We tracked no epoch there: the leader's end is the safe cut (Kafka's post-KIP-101 rule).
        return min(diverging_end_offset, own_log_end_offset), True
    if own_epoch == diverging_epoch:
        return min(diverging_end_offset, own_end, own_log_end_offset), True
    return min(own_end, own_log_end_offset), False
