"""A partition's replication state as a plain state machine: role, epochs, LEO, HW, ISR.

No sockets, threads, files or clocks: the replica manager feeds it events (an
append, a follower's fetch, a metadata change) with ``now_ms`` and performs
what it answers. Tests drive it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.local_broker_id

    def become_leader(self, reg: PartitionRegistration, now_ms: int) -> None:
        self._take(reg)
        self.followers = {r: FollowerState(r, last_caught_up_ms=now_ms)
                          for r in reg.replicas if r != self.local_broker_id}
        self.maybe_advance_high_watermark()

    def become_follower(self, reg: PartitionRegistration) -> None:
        self._take(reg)
        self.followers = {}

    def _take(self, reg: PartitionRegistration) -> None:
        self.leader_id, self.leader_epoch = reg.leader, reg.leader_epoch
        self.partition_epoch, self.replicas, self.isr = reg.partition_epoch, reg.replicas, reg.isr

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

    def on_leader_append(self, log_end_offset: int) -> bool:
        """The leader's log grew to ``log_end_offset``; True if the HW moved."""
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
        return self.maybe_advance_high_watermark()

    def maybe_advance_high_watermark(self) -> bool:
        """HW = the smallest log end offset over the ISR (this leader included); only forward."""
        if not self.is_leader:
            return False
        ends = [self.log_end_offset]
        for r in self.isr:
            if r != self.local_broker_id:
                f = self.followers.get(r)
                ends.append(f.log_end_offset if f else -1)
        candidate = min(ends)
        if candidate > self.high_watermark:
            self.high_watermark = candidate
            return True
        return False
