"""Kafka's group APIs -> the request layer -> Kafka answers. Translation only.

FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
DescribeGroups (the classic protocol); every decision is the group coordinator's
(broker/group/coordinator.py and group_metadata.py), reached through KafkaApis.
"""

from __future__ import annotations

from broker.api_messages import GROUP_KEY_TYPE
from broker.group.coordinator import CommittedOffset, OffsetCommitPartition
from broker.group.group_metadata import (HeartbeatRequest, JoinGroupRequest, MemberIdentity, SyncGroupRequest)
from broker.kafka_protocol.codec import millis
from client.errors import KafkaError


def code(error: KafkaError | None) -> int:
    if error is None:
        return 0
    return error.code if error.code is not None else -1


def message(error: KafkaError | None) -> str | None:
    return None if error is None else error.message


def find_coordinator(apis, endpoint, body) -> dict:
    keys = list(body.coordinator_keys) if hasattr(body, "coordinator_keys") else [body.key]
    results = apis.find_coordinator(int(getattr(body, "key_type", GROUP_KEY_TYPE)), keys)
    coordinators = []
    for r in results:
        ep = endpoint(r.node_id) if r.error is None else None
        error = r.error if r.error is not None or ep is not None else _not_available(r.key)
        coordinators.append({"key": r.key, "node_id": r.node_id if ep else -1, "host": ep.host if ep else "",
                             "port": ep.port if ep else -1, "error_code": code(error), "error_message": message(error)})
    if hasattr(body, "coordinator_keys"):
        return {"coordinators": coordinators}
    only = coordinators[0]     # v0-v3: one key, answered in the top-level fields
    return {k: only[k] for k in ("node_id", "host", "port", "error_code", "error_message")}


def _not_available(key: str) -> KafkaError:
    from client.errors import CoordinatorNotAvailableError
    return CoordinatorNotAvailableError(f"The coordinator of {key!r} has no Kafka listener.")


def join_group(apis, body, client_id: str | None, client_host: str) -> dict:
    session = millis(body.session_timeout)
    rebalance = millis(getattr(body, "rebalance_timeout", body.session_timeout))   # v0: the session timeout
    request = JoinGroupRequest(body.member_id, client_id or "", client_host, session, rebalance, body.protocol_type,
                               tuple((p.name, bytes(p.metadata)) for p in body.protocols),
                               getattr(body, "group_instance_id", None), require_known_member_id=body.__version__ >= 4)
    r = apis.join_group(body.group_id, request)
    return {"error_code": code(r.error), "generation_id": r.generation_id, "protocol_type": r.protocol_type,
            "protocol_name": r.protocol_name or ("" if body.__version__ < 7 else None), "leader": r.leader,
            "skip_assignment": False, "member_id": r.member_id,
            "members": [{"member_id": m.member_id, "group_instance_id": m.group_instance_id, "metadata": m.metadata}
                        for m in r.members]}


def sync_group(apis, body) -> dict:
    request = SyncGroupRequest(body.member_id, body.generation_id,
                               tuple((a.member_id, bytes(a.assignment)) for a in body.assignments),
                               getattr(body, "group_instance_id", None), getattr(body, "protocol_type", None),
                               getattr(body, "protocol_name", None))
    r = apis.sync_group(body.group_id, request)
    return {"error_code": code(r.error), "protocol_type": r.protocol_type, "protocol_name": r.protocol_name,
            "assignment": r.assignment}


def heartbeat(apis, body) -> dict:
    r = apis.heartbeat(body.group_id, HeartbeatRequest(body.member_id, body.generation_id,
                                                       getattr(body, "group_instance_id", None)))
    return {"error_code": code(r.error)}


def leave_group(apis, body) -> dict:
    members = ([MemberIdentity(m.member_id, m.group_instance_id) for m in body.members] if hasattr(body, "members")
               else [MemberIdentity(body.member_id)])
    r = apis.leave_group(body.group_id, members)
    if not hasattr(body, "members"):   # v0-v2: the one member's error is the answer's
        error = r.error or (r.members[0].error if r.members else None)
        return {"error_code": code(error)}
    return {"error_code": code(r.error),
            "members": [{"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                         "error_code": code(m.error)} for m in r.members]}


def offset_commit(apis, body) -> dict:
    generation = getattr(body, "generation_id_or_member_epoch", getattr(body, "generation_id", -1))
    offsets = [OffsetCommitPartition(t.name, p.partition_index, p.committed_offset,
                                     getattr(p, "committed_leader_epoch", -1), p.committed_metadata)
               for t in body.topics for p in t.partitions]
    results = apis.offset_commit(body.group_id, body.member_id, generation, getattr(body, "group_instance_id", None),
                                 offsets)
    by_topic: dict[str, list[dict]] = {}
    for topic, partition, error in results:
        by_topic.setdefault(topic, []).append({"partition_index": partition, "error_code": code(error)})
    return {"topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()]}


def offset_fetch(apis, body) -> dict:
    if hasattr(body, "groups"):   # v8+: several groups per request
        return {"groups": [_fetched_group(apis, g.group_id, g.topics, nested=True) for g in body.groups]}
    answer = _fetched_group(apis, body.group_id, body.topics, nested=False, partition_errors=body.__version__ < 2)
    return {"topics": answer["topics"], "error_code": answer["error_code"]}


def _fetched_group(apis, group_id: str, topics, nested: bool, partition_errors: bool = False) -> dict:
    wanted = None if topics is None else [(t.name, p) for t in topics for p in t.partition_indexes]
    error, committed = apis.offset_fetch(group_id, wanted)
    if error is not None and partition_errors:
        # v0-v1 have no group-level error code: Kafka puts the group's error (NOT_COORDINATOR, ...) on every
        # partition asked for; an answer without them reads as "nothing committed" (auto.offset.reset).
        committed = [CommittedOffset(t, p, error=error) for t, p in wanted or ()]
    by_topic: dict[str, list[dict]] = {}
    for c in committed:
        by_topic.setdefault(c.topic, []).append({
            "partition_index": c.partition, "committed_offset": c.offset, "committed_leader_epoch": c.leader_epoch,
            "metadata": c.metadata, "error_code": code(c.error)})
    out = {"topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()], "error_code": code(error)}
    return dict(out, group_id=group_id) if nested else out


def list_groups(apis, body) -> dict:
    states = set(getattr(body, "states_filter", ()) or ())
    types = set(getattr(body, "types_filter", ()) or ())
    error, listed = apis.list_groups()
    groups = [{"group_id": g, "protocol_type": ptype, "group_state": state, "group_type": "classic"}
              for g, ptype, state in listed if (not states or state in states) and (not types or "classic" in types)]
    return {"error_code": code(error), "groups": groups}


def describe_groups(apis, body) -> dict:
    out = []
    for group_id, error, d in apis.describe_groups(list(body.groups)):
        if error is not None:
            out.append({"error_code": code(error), "group_id": group_id, "group_state": "", "protocol_type": "",
                        "protocol_data": "", "members": [], "authorized_operations": -2147483648})
            continue
        out.append({"error_code": 0, "group_id": group_id, "group_state": d.state, "protocol_type": d.protocol_type,
                    "protocol_data": d.protocol, "authorized_operations": -2147483648,
                    "members": [{"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                                 "client_id": m.client_id, "client_host": m.client_host,
                                 "member_metadata": m.metadata, "member_assignment": m.assignment}
                                for m in d.members]})
    return {"groups": out}


def delete_groups(apis, body) -> dict:
    return {"results": [{"group_id": g, "error_code": code(e)} for g, e in apis.delete_groups(list(body.groups_names))]}


def offset_delete(apis, body) -> dict:
    wanted = [(t.name, p.partition_index) for t in body.topics for p in t.partitions]
    error, results = apis.offset_delete(body.group_id, wanted)
    by_topic: dict[str, list[dict]] = {}
    for topic, partition, e in results:
        by_topic.setdefault(topic, []).append({"partition_index": partition, "error_code": code(e)})
    return {"error_code": code(error), "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()]}
