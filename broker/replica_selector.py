"""Which replica a consumer should read from (KIP-392): Kafka's RackAwareReplicaSelector.

Pure: the leader gives its own view and its in-sync followers' (their log end as their fetches
told it, how long since each was caught up); the choice is the client's rack's replica. The leader
answers a consumer that should read elsewhere with `preferred_read_replica` and no records; the
consumer then fetches from that follower, which serves up to its own high watermark.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaView:
    broker_id: int
    rack: str | None
    log_end_offset: int
    time_since_caught_up_ms: int


def select_read_replica(client_rack: str | None, leader: ReplicaView, followers: list[ReplicaView]) -> ReplicaView:
    """The replicas in the client's rack: the leader if it is one of them, else the most caught up (the
    largest log end, then the most recently caught up). No client rack, or none in it: the leader."""
    if not client_rack:
        return leader
    if leader.rack == client_rack:
        return leader
    same_rack = [r for r in followers if r.rack == client_rack]
    if not same_rack:
        return leader
    return max(same_rack, key=lambda r: (r.log_end_offset, -r.time_since_caught_up_ms))


def read_candidates(followers, isr: tuple[int, ...], fetch_offset: int, rack_of, now_ms: int) -> list[ReplicaView]:
    """Followers a consumer at ``fetch_offset`` may be sent to: in the ISR (one that lags could keep the
    consumer behind for ever) and holding the offset already."""
    return [ReplicaView(f.broker_id, rack_of(f.broker_id), f.log_end_offset, max(0, now_ms - f.last_caught_up_ms))
            for f in followers if f.broker_id in isr and f.log_end_offset >= fetch_offset]
