"""Kafka-protocol requests -> KafkaApis calls -> Kafka-protocol answers. Translation only.

Each handler reads a kio request entity (any version the listener serves), calls the request
layer (broker/kafka_apis.py) with plain values, and returns the answer as plain values by Kafka
field name; codec.py writes them at the request's version. The one thing added here is where
this listener's clients reach a broker: every broker's Kafka host and port (never the gRPC port).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable

from broker.api_messages import (ConfigResource, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, ElectLeadersRequest,
                                 FetchPartition, FetchRequest,
                                 ListOffsetsPartition, OffsetForLeaderEpochPartition, ProducePartition,
                                 ProduceRequest)
from broker.controller import PartitionsIncrease, TopicRequest
from broker.describe_configs import ConfigEntry
from broker.group.offsets_topic import is_internal
from broker.kafka_apis import KafkaApis, PendingProduce
from broker.kafka_protocol import group_handlers
from broker.kafka_protocol.codec import ZERO_UUID, millis
from broker.kafka_protocol.versions import SUPPORTED
from client.errors import KafkaError

# Kafka's "no authorized operations were asked for" (topic_authorized_operations).
AUTHORIZED_OPERATIONS_OMITTED = -2147483648
UNSUPPORTED_ENDPOINT_TYPE = 119   # KIP-919: DescribeCluster asked for controller endpoints



@dataclass(frozen=True)
class KafkaEndpoint:
    """Where Kafka clients reach one broker: its Kafka listener, and its rack (broker.rack)."""
    host: str
    port: int
    rack: str | None = None


Endpoint = Callable[[int], "KafkaEndpoint | None"]   # broker id -> its Kafka listener, if it has one
Answer = Callable[[], "dict[str, Any] | None"]          # the response values, or None: no response (acks=0)


def _code(error: KafkaError | None) -> int:
    if error is None:
        return 0
    return error.code if error.code is not None else -1


def _message(error: KafkaError | None) -> str | None:
    return None if error is None else error.message


def _topic_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        return ZERO_UUID


@dataclass
class Connection:
    """What a handler may know of the connection a request came on."""
    call: object                       # the admission key of this connection's long polls
    open: Callable[[], bool]           # False once the client has gone
    client_host: str = ""              # as Kafka shows a member's host: "/127.0.0.1"


class KafkaProtocolHandlers:
    def __init__(self, apis: KafkaApis, endpoint: Endpoint, slots):
        self._apis = apis
        self._endpoint = endpoint
        self._slots = slots             # this listener's long-poll slots (one per connection is enough)

    def begin(self, api_key: int, body, conn: Connection, client_id: str | None = None) -> Answer:
        """Start serving one request; the returned function gives its answer. A Produce is appended
        here, at once, so a client's pipelined produces land in the order they came on the wire."""
        if api_key == 0:
            return self._produce(body)
        if api_key in _GROUP_HANDLERS:
            return lambda: self._group_request(api_key, body, conn, client_id)
        handler = self._HANDLERS[api_key]
        return lambda: handler(self, body, conn)

    def _group_request(self, api_key: int, body, conn: Connection, client_id: str | None) -> dict:
        if api_key == FIND_COORDINATOR:
            return group_handlers.find_coordinator(self._apis, self._endpoint, body)
        if api_key == JOIN_GROUP:
            return group_handlers.join_group(self._apis, body, client_id, conn.client_host)
        return _GROUP_HANDLERS[api_key](self._apis, body)

    # ---- ApiVersions ----------------------------------------------------------------------------

    def api_versions(self, body, conn: Connection) -> dict:
        return api_versions_answer(0)

    # ---- Metadata -------------------------------------------------------------------------------

    def metadata(self, body, conn: Connection) -> dict:
        names = None if body.topics is None else [t.name for t in body.topics if t.name is not None]
        if names == [] and body.__version__ == 0:
            names = None                  # v0: an empty list asks for every topic (v1+: null does)
        answer = self._apis.metadata(names, auto_create=bool(getattr(body, "allow_auto_topic_creation", True)))
        topics = [{"error_code": _code(t.error), "name": t.name, "topic_id": ZERO_UUID, "is_internal": is_internal(t.name),
                   "partitions": [{"error_code": _code(p.error), "partition_index": p.partition,
                                   "leader_id": p.leader_id, "leader_epoch": p.leader_epoch,
                                   "replica_nodes": p.replicas, "isr_nodes": p.isr,
                                   "offline_replicas": p.offline_replicas} for p in t.partitions],
                   "topic_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED} for t in answer.topics]
        brokers = [self._node(b.broker_id, ep) for b in answer.brokers
                   if b.alive and (ep := self._endpoint(b.broker_id)) is not None]
        return {"brokers": brokers, "cluster_id": answer.cluster_id, "controller_id": answer.controller_id,
                "topics": topics}

    def _current_leader(self, error: KafkaError | None) -> dict:
        hint = error.leader_hint if error is not None else None
        if hint is None:
            return {"leader_id": -1, "leader_epoch": -1}
        return {"leader_id": hint.leader_id, "leader_epoch": hint.leader_epoch}

    def _node_endpoints(self, errors: list[KafkaError | None]) -> list[dict]:
        """KIP-951: the brokers the current_leader fields name, so the client goes there at once."""
        ids = sorted({e.leader_hint.leader_id for e in errors if e is not None and e.leader_hint is not None
                      and e.leader_hint.leader_id >= 0})
        return [self._node(i, ep) for i in ids if (ep := self._endpoint(i)) is not None]

    @staticmethod
    def _node(broker_id: int, ep: KafkaEndpoint) -> dict:
        return {"node_id": broker_id, "host": ep.host, "port": ep.port, "rack": ep.rack}

    # ---- Produce --------------------------------------------------------------------------------

    def _produce(self, body) -> Answer:
        partitions = [ProducePartition(t.name, p.index, p.records or b"")
                      for t in body.topic_data for p in t.partition_data]
        request = ProduceRequest(int(body.acks), millis(body.timeout), partitions,
                                 zstd_allowed=body.__version__ >= 7)
        pending = self._apis.append_produce(request)
        if request.acks == 0:
            return lambda: None        # Kafka sends no response to acks=0
        return lambda: self._produce_answer(pending)

    def _produce_answer(self, pending: PendingProduce) -> dict:
        results = self._apis.complete_produce(pending).results
        by_topic: dict[str, list[dict]] = {}
        for r in results:
            by_topic.setdefault(r.topic, []).append({
                "index": r.partition, "error_code": _code(r.error), "base_offset": r.base_offset,
                "log_append_time": None, "log_start_offset": r.log_start_offset, "record_errors": [],
                "error_message": _message(r.error), "current_leader": self._current_leader(r.error)})
        return {"responses": [{"name": t, "partition_responses": ps} for t, ps in by_topic.items()],
                "node_endpoints": self._node_endpoints([r.error for r in results])}

    # ---- Fetch ----------------------------------------------------------------------------------

    def fetch(self, body, conn: Connection) -> dict:
        partitions = [FetchPartition(t.topic, p.partition, p.fetch_offset, getattr(p, "current_leader_epoch", -1),
                                     p.partition_max_bytes)
                      for t in body.topics for p in t.partitions]
        # v11+ (KIP-392): a consumer may read a follower, and its rack may send it to one.
        request = FetchRequest(-1, millis(body.max_wait), body.min_bytes, getattr(body, "max_bytes", 0) or 0,
                               partitions, read_from_replica=body.__version__ >= 11,
                               client_rack=getattr(body, "rack_id", "") or None)
        results = self._apis.fetch(request, conn.call, caller_waiting=conn.open, slots=self._slots)
        by_topic: dict[str, list[dict]] = {}
        for r in results:
            by_topic.setdefault(r.topic, []).append({
                "partition_index": r.partition, "error_code": _code(r.error), "high_watermark": r.high_watermark,
                "last_stable_offset": r.high_watermark, "log_start_offset": r.log_start_offset,
                "current_leader": self._current_leader(r.error), "aborted_transactions": [],
                "preferred_read_replica": r.preferred_read_replica, "records": r.records})
        return {"error_code": 0, "session_id": 0,
                "responses": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()]}

    # ---- ListOffsets ----------------------------------------------------------------------------

    def list_offsets(self, body, conn: Connection) -> dict:
        partitions = [ListOffsetsPartition(t.name, p.partition_index, p.timestamp,
                                           getattr(p, "current_leader_epoch", -1))
                      for t in body.topics for p in t.partitions]
        by_topic: dict[str, list[dict]] = {}
        for r in self._apis.list_offsets(partitions, read_from_replica=False):
            by_topic.setdefault(r.topic, []).append({
                "partition_index": r.partition, "error_code": _code(r.error), "timestamp": r.timestamp,
                "offset": r.offset, "leader_epoch": r.leader_epoch})
        return {"topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()]}

    # ---- OffsetForLeaderEpoch ----------------------------------------------------------------------

    def offset_for_leader_epoch(self, body, conn: Connection) -> dict:
        partitions = [OffsetForLeaderEpochPartition(t.topic, p.partition, p.leader_epoch,
                                                    getattr(p, "current_leader_epoch", -1))
                      for t in body.topics for p in t.partitions]
        by_topic: dict[str, list[dict]] = {}
        for r in self._apis.offset_for_leader_epoch(partitions):
            by_topic.setdefault(r.topic, []).append({"error_code": _code(r.error), "partition": r.partition,
                                                     "leader_epoch": r.leader_epoch, "end_offset": r.end_offset})
        return {"topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()]}

    # ---- InitProducerId -------------------------------------------------------------------------

    def init_producer_id(self, body, conn: Connection) -> dict:
        # transaction_timeout is the transaction's (librdkafka sends -1 without one), not the request's:
        # the request gets the broker's admin timeout.
        answer = self._apis.init_producer_id()
        return {"error_code": _code(answer.error), "producer_id": answer.producer_id,
                "producer_epoch": answer.producer_epoch}

    # ---- CreateTopics / DeleteTopics ---------------------------------------------------------------

    def create_topics(self, body, conn: Connection) -> dict:
        topics = [TopicRequest(t.name, t.num_partitions, t.replication_factor,
                               {c.name: c.value for c in t.configs if c.value is not None})
                  for t in body.topics]
        answer = self._apis.create_topics(CreateTopicsRequest(topics, bool(body.validate_only), millis(body.timeout)))
        requested = {t.name: t for t in topics}
        return {"topics": [{"name": o.name, "topic_id": ZERO_UUID, "error_code": _code(o.error),
                            "error_message": _message(o.error),
                            "num_partitions": requested[o.name].num_partitions,
                            "replication_factor": requested[o.name].replication_factor}
                           for o in answer.outcomes]}

    def delete_topics(self, body, conn: Connection) -> dict:
        names = list(body.topic_names) if hasattr(body, "topic_names") else [t.name for t in body.topics]
        answer = self._apis.delete_topics(DeleteTopicsRequest(names, millis(body.timeout)))
        return {"responses": [{"name": o.name, "topic_id": ZERO_UUID, "error_code": _code(o.error),
                               "error_message": _message(o.error)} for o in answer.outcomes]}

    # ---- CreatePartitions -----------------------------------------------------------------------

    def create_partitions(self, body, conn: Connection) -> dict:
        topics = [PartitionsIncrease(t.name, t.count, None if t.assignments is None
                                     else [list(a.broker_ids) for a in t.assignments]) for t in body.topics]
        answer = self._apis.create_partitions(CreatePartitionsRequest(topics, bool(body.validate_only),
                                                                      millis(body.timeout)))
        return {"results": [{"name": o.name, "error_code": _code(o.error), "error_message": _message(o.error)}
                            for o in answer.outcomes]}

    # ---- ElectLeaders ---------------------------------------------------------------------------

    def elect_leaders(self, body, conn: Connection) -> dict:
        targets = (None if body.topic_partitions is None
                   else [(t.topic, list(t.partitions)) for t in body.topic_partitions])
        election_type = int(getattr(body, "election_type", 0))   # v0: preferred only
        answer = self._apis.elect_leaders(ElectLeadersRequest(election_type, targets, millis(body.timeout)))
        by_topic: dict[str, list[dict]] = {}
        for o in answer.outcomes:
            by_topic.setdefault(o.topic, []).append({"partition_id": o.partition, "error_code": _code(o.error),
                                                     "error_message": _message(o.error)})
        return {"error_code": _code(answer.error),
                "replica_election_results": [{"topic": t, "partition_result": ps} for t, ps in by_topic.items()]}

    # ---- DescribeConfigs --------------------------------------------------------------------------

    def describe_configs(self, body, conn: Connection) -> dict:
        resources = [ConfigResource(int(r.resource_type), r.resource_name,
                                    None if r.configuration_keys is None else list(r.configuration_keys))
                     for r in body.resources]
        with_synonyms = bool(getattr(body, "include_synonyms", False))
        return {"results": [{"error_code": _code(r.error), "error_message": _message(r.error),
                             "resource_type": r.resource_type, "resource_name": r.resource_name,
                             "configs": [_config_entry(e, with_synonyms) for e in r.entries]}
                            for r in self._apis.describe_configs(resources)]}

    # ---- DescribeCluster --------------------------------------------------------------------------

    def describe_cluster(self, body, conn: Connection) -> dict:
        if int(getattr(body, "endpoint_type", 1)) != 1:
            return {"error_code": UNSUPPORTED_ENDPOINT_TYPE, "cluster_id": "", "controller_id": -1,
                    "error_message": "raftka's Kafka listeners are broker endpoints (endpoint_type 1)"}
        with_fenced = bool(getattr(body, "include_fenced_brokers", False))
        answer = self._apis.metadata([])
        brokers = [dict(self._node(b.broker_id, ep), broker_id=b.broker_id, is_fenced=not b.alive)
                   for b in answer.brokers
                   if (b.alive or with_fenced) and (ep := self._endpoint(b.broker_id)) is not None]
        return {"error_code": 0, "cluster_id": answer.cluster_id, "controller_id": answer.controller_id,
                "brokers": brokers, "cluster_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}

    # ---- DescribeLogDirs ----------------------------------------------------------------------------

    def describe_log_dirs(self, body, conn: Connection) -> dict:
        wanted = None if body.topics is None else {t.topic: set(t.partitions) for t in body.topics}
        d = self._apis.describe_log_dirs(wanted)
        topics: dict[str, list[dict]] = {}
        for r in d.replicas:
            # Kafka's offset lag of a current (not future) replica: how far its log end is behind the HW.
            topics.setdefault(r.topic, []).append({"partition_index": r.partition, "partition_size": r.size_bytes,
                                                   "offset_lag": max(r.high_watermark - r.log_end_offset, 0),
                                                   "is_future_key": False})
        return {"error_code": 0, "results": [{
            "error_code": _code(d.error), "log_dir": d.log_dir, "total_bytes": d.total_bytes,
            "usable_bytes": d.usable_bytes, "topics": [{"name": n, "partitions": ps} for n, ps in topics.items()]}]}

    _HANDLERS = {1: fetch, 2: list_offsets, 3: metadata, 18: api_versions, 19: create_topics, 20: delete_topics,
                 22: init_producer_id, 23: offset_for_leader_epoch, 32: describe_configs, 37: create_partitions,
                 35: describe_log_dirs, 43: elect_leaders, 60: describe_cluster}


_GROUP_HANDLERS = {8: group_handlers.offset_commit, 9: group_handlers.offset_fetch, 10: None, 11: None,
                   12: group_handlers.heartbeat, 13: group_handlers.leave_group, 14: group_handlers.sync_group,
                   15: group_handlers.describe_groups, 16: group_handlers.list_groups,
                   42: group_handlers.delete_groups, 47: group_handlers.offset_delete}
FIND_COORDINATOR, JOIN_GROUP = 10, 11


def _config_entry(e: ConfigEntry, with_synonyms: bool) -> dict:
    return {"name": e.name, "value": e.value, "read_only": e.read_only, "config_source": e.source,
            "is_sensitive": False, "config_type": e.config_type, "documentation": None,
            "synonyms": [{"name": s.name, "value": s.value, "source": s.source} for s in e.synonyms]
            if with_synonyms else []}


def api_versions_answer(error_code: int) -> dict:
    """ApiVersions' answer: every API this listener serves, with the versions it serves."""
    return {"error_code": error_code,
            "api_keys": [{"api_key": k, "min_version": lo, "max_version": hi} for k, (lo, hi) in sorted(SUPPORTED.items())]}
