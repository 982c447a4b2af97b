"""Which committed offsets have outlived offsets.retention.minutes, and which groups go with them.

Kafka's GroupMetadata.removeExpiredOffsets (KIP-211) and GroupMetadataManager.cleanupGroupMetadata,
as a pure function the coordinator calls with the wall clock passed in:

- an Empty group (it had members, now none): every offset expires once the retention has passed
  since the group became Empty (its stored current_state_timestamp; else each offset's commit time);
- a Stable consumer group: only offsets of topics no member subscribes to, by their commit time;
- a group with offsets only (standalone commits, no protocol type): each offset by its commit time;
- a group that is rebalancing, or Stable with another protocol type, keeps everything;
- an offset committed with an explicit expire timestamp (OffsetCommit v2-v4) expires then.

An Empty (or offsets-only) group whose last offset expired is deleted too: its metadata gets a tombstone.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.group.group_metadata import GroupMetadata, GroupState
from broker.group.offsets_records import NO_TIMESTAMP, OffsetCommitValue, OffsetsPartitionImage

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class Expiry:
    group_id: str
    offsets: list[TopicPartition]     # tombstones to write
    delete_group: bool                # the group's metadata too (it is left with nothing)


def expired(image: OffsetsPartitionImage, group_id: str, group: GroupMetadata | None, subscribed: set[str],
            now_ms: int, retention_ms: int) -> Expiry | None:
    """What of ``group_id`` has expired at ``now_ms`` (None: nothing). ``subscribed``: the topics the
    group's members subscribe to (a Stable consumer group keeps their offsets)."""
    committed = image.committed(group_id)
    state = group.state if group is not None else GroupState.EMPTY
    protocol_type = group.protocol_type if group is not None else None
    stored = image.groups.get(group_id)
    if protocol_type is None:
        base = None                                  # offsets only: each by its own commit time
    elif state is GroupState.EMPTY:
        base = stored.current_state_timestamp_ms if stored is not None and \
            stored.current_state_timestamp_ms != NO_TIMESTAMP else None
    elif state is GroupState.STABLE and protocol_type == "consumer":
        base = None
    else:
        return None
    keep = subscribed if state is GroupState.STABLE else set()
    gone = [tp for tp, v in committed.items() if tp[0] not in keep and _expired(v, base, now_ms, retention_ms)]
    emptied = state is GroupState.EMPTY and len(gone) == len(committed)
    if not gone and not (emptied and stored is not None):
        return None
    return Expiry(group_id, sorted(gone), emptied)


def _expired(v: OffsetCommitValue, base_ms: int | None, now_ms: int, retention_ms: int) -> bool:
    if v.expire_timestamp_ms != NO_TIMESTAMP:
        return now_ms >= v.expire_timestamp_ms
    return now_ms - (v.commit_timestamp_ms if base_ms is None else base_ms) >= retention_ms
