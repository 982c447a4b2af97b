"""The APIs and versions the Kafka listener serves: what ApiVersions advertises, nothing more.

Clients switch features on by this list, so an API is here only once it is served end to end.
Produce and Fetch stop below the versions that address topics by id (Produce 13, Fetch 13), which
raftka does not serve on this listener yet; Produce starts at 3 and Fetch at 4, the first versions
of RecordBatch v2 (the only batch format raftka stores).
"""

from __future__ import annotations

PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
API_VERSIONS, CREATE_TOPICS, DELETE_TOPICS, INIT_PRODUCER_ID, OFFSET_FOR_LEADER_EPOCH = 18, 19, 20, 22, 23
DESCRIBE_CONFIGS, DESCRIBE_LOG_DIRS, CREATE_PARTITIONS, ELECT_LEADERS, DESCRIBE_CLUSTER = 32, 35, 37, 43, 60
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR, JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP = 8, 9, 10, 11, 12, 13, 14
DESCRIBE_GROUPS, LIST_GROUPS, DELETE_GROUPS, OFFSET_DELETE = 15, 16, 42, 47

# api key -> (min version, max version)
SUPPORTED: dict[int, tuple[int, int]] = {
    PRODUCE: (3, 10),          # v10: KIP-951 current_leader and node_endpoints on NOT_LEADER_OR_FOLLOWER
    FETCH: (4, 12),            # v12: diverging_epoch and current_leader, flexible; v13 needs topic ids
    LIST_OFFSETS: (1, 7),
    METADATA: (0, 12),
    API_VERSIONS: (0, 3),
    CREATE_TOPICS: (2, 7),
    DELETE_TOPICS: (1, 6),
    INIT_PRODUCER_ID: (0, 4),
    OFFSET_FOR_LEADER_EPOCH: (2, 4),   # v2: current_leader_epoch (fencing); v4 flexible
    DESCRIBE_CONFIGS: (1, 4),          # v0 has no schema in kio; v1 adds synonyms, v3 types
    DESCRIBE_LOG_DIRS: (1, 4),         # v0 has no schema in kio; v4 adds the dir's total and usable bytes
    CREATE_PARTITIONS: (0, 3),
    ELECT_LEADERS: (0, 2),             # v1: election_type (preferred / unclean)
    DESCRIBE_CLUSTER: (0, 2),          # v2: fenced brokers on request (KIP-1073)
    # The classic group protocol (librdkafka turns its group consumer on only when all seven of
    # OffsetCommit .. SyncGroup are listed). OffsetCommit/OffsetFetch stop below v10 (topic ids).
    OFFSET_COMMIT: (2, 9),
    OFFSET_FETCH: (1, 9),
    FIND_COORDINATOR: (0, 5),
    JOIN_GROUP: (0, 9),
    HEARTBEAT: (0, 4),
    LEAVE_GROUP: (0, 5),
    SYNC_GROUP: (0, 5),
    DESCRIBE_GROUPS: (0, 5),
    LIST_GROUPS: (0, 5),
    DELETE_GROUPS: (0, 2),
    OFFSET_DELETE: (0, 0),
}


def supported(api_key: int, api_version: int) -> bool:
    lo, hi = SUPPORTED.get(api_key, (0, -1))
    return lo <= api_version <= hi
