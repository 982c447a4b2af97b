"""Replica state on the wire: each broker's own replicas as it sees them (the DescribeReplicas RPC).

Kafka spreads this over DescribeLogDirs (each replica's size and offsets, per broker) and the leader's
replica lag metrics; raftka answers both in one call that every broker serves for itself, so asking
each broker shows replication as it stands: a follower's log end trailing its leader's, its HW a fetch
behind, the lag the leader counts. ``describe_replicas`` asks every registered broker at once, with a
short timeout: a dead broker becomes a row with an error, never a stalled answer.

    from client.admin import Admin
    for broker in Admin(":9092").describe_replicas(["email.send"]):
        for r in broker.replicas:
            print(broker.broker_id, r.topic, r.partition, r.log_start_offset, r.high_watermark, r.log_end_offset)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from client.client import KafkaClient
from client.connection import Address, format_address
from client.errors import KafkaError
from client.protocol.v1 import kafka_pb2

# A broker that has not answered in this long is shown as not answering (it is dead, paused or cut off).
DESCRIBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class FollowerView:
    """A follower as its leader sees it."""
    broker_id: int
    log_end_offset: int       # -1 until it fetched
    lag: int | None           # the leader's log end minus the follower's (Kafka's replica lag); None: unknown
    caught_up_ms_ago: int     # since it last reached the leader's log end (replica.lag.time.max.ms)
    in_isr: bool


@dataclass(frozen=True)
class ReplicaView:
    """One broker's replica of a partition, as that broker sees it."""
    topic: str
    partition: int
    broker_id: int
    is_leader: bool
    leader_id: int
    leader_epoch: int
    isr: tuple[int, ...]
    log_start_offset: int
    high_watermark: int
    log_end_offset: int
    size_bytes: int
    followers: tuple[FollowerView, ...]   # only on the leader's view


@dataclass(frozen=True)
class BrokerReplicas:
    """One broker's answer; ``error`` set (and the rest empty) when it did not answer."""
    broker_id: int
    address: str
    error: str | None
    raft_term: int = -1
    controller_id: int = -1
    metadata_offset: int = -1
    replicas: tuple[ReplicaView, ...] = ()


def _replica(broker_id: int, r: kafka_pb2.LocalReplicaState) -> ReplicaView:
    followers = tuple(FollowerView(f.broker_id, f.log_end_offset, f.lag if f.lag >= 0 else None,
                                   f.caught_up_ms_ago, f.in_isr)
                      for f in r.followers)
    return ReplicaView(r.topic, r.partition, broker_id, r.is_leader, r.leader_id, r.leader_epoch, tuple(r.isr),
                       r.log_start_offset, r.high_watermark, r.log_end_offset, r.size_bytes, followers)


def _ask(client: KafkaClient, broker_id: int, address: Address, topics: list[str],
         timeout_s: float) -> BrokerReplicas:
    where = format_address(address)
    try:
        response = client.call(address, "DescribeReplicas", kafka_pb2.DescribeReplicasRequest(topics=topics),
                               timeout_s, f"replicas of {', '.join(topics) or 'every topic'}")
    except KafkaError as e:
        return BrokerReplicas(broker_id, where, str(e))
    return BrokerReplicas(response.broker_id, where, None, response.raft_term, response.controller_id,
                          response.metadata_offset, tuple(_replica(response.broker_id, r) for r in response.replicas))


def describe_replicas(client: KafkaClient, topics: list[str],
                      timeout_s: float = DESCRIBE_TIMEOUT_S) -> list[BrokerReplicas]:
    """Ask every registered broker (alive or fenced: a fenced one may still answer) in parallel."""
    response = client.refresh_metadata([])
    brokers = sorted((b.broker_id, (b.host, b.port)) for b in response.brokers)
    if not brokers:
        return []
    with ThreadPoolExecutor(max_workers=len(brokers)) as pool:
        return list(pool.map(lambda b: _ask(client, b[0], b[1], topics, timeout_s), brokers))


def replicas_by_partition(answers: list[BrokerReplicas]) -> dict[tuple[str, int], list[ReplicaView]]:
    """(topic, partition) -> each answering broker's view of its replica, by broker id."""
    out: dict[tuple[str, int], list[ReplicaView]] = {}
    for answer in answers:
        for r in answer.replicas:
            out.setdefault((r.topic, r.partition), []).append(r)
    for views in out.values():
        views.sort(key=lambda r: r.broker_id)
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class ReplicaRow:
    """One line of `kclient topics --describe --replicas`: a replica as its own broker sees it, and its lag
    as the partition's leader counts it (None: unknown)."""
    topic: str
    partition: int
    broker_id: int
    role: str                      # leader | follower | offline (its broker did not answer)
    log_start_offset: int | None
    high_watermark: int | None
    log_end_offset: int | None
    lag: int | None
    in_isr: bool
    size_bytes: int | None


def replica_rows(partitions: list[tuple[str, int, tuple[int, ...], tuple[int, ...]]],
                 answers: list[BrokerReplicas]) -> list[ReplicaRow]:
    """A row per (topic, partition, replicas, isr) of the metadata, per replica in assignment order."""
    views = replicas_by_partition(answers)
    rows = []
    for topic, partition, replicas, isr in partitions:
        by_broker = {v.broker_id: v for v in views.get((topic, partition), [])}
        leader = next((v for v in by_broker.values() if v.is_leader), None)
        lag_of = {f.broker_id: f.lag for f in leader.followers} if leader else {}
        for b in replicas:
            v = by_broker.get(b)
            lag = 0 if v is not None and v.is_leader else lag_of.get(b)
            if v is None:
                rows.append(ReplicaRow(topic, partition, b, "offline", None, None, None, lag, b in isr, None))
                continue
            rows.append(ReplicaRow(topic, partition, b, "leader" if v.is_leader else "follower", v.log_start_offset,
                                   v.high_watermark, v.log_end_offset, lag, b in isr, v.size_bytes))
    return rows


REPLICA_COLUMNS = ("TOPIC", "PARTITION", "REPLICA", "ROLE", "LOG-START-OFFSET", "HIGH-WATERMARK", "LOG-END-OFFSET",
                   "LAG", "IN-ISR", "SIZE")


def replica_table(rows: list[ReplicaRow]) -> str:
    """The header and a line per row, each column as wide as its widest value ("-": unknown)."""
    def shown(value: object) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        return "-" if value is None else str(value)

    table = [REPLICA_COLUMNS] + [tuple(shown(getattr(r, f)) for f in (
        "topic", "partition", "broker_id", "role", "log_start_offset", "high_watermark", "log_end_offset", "lag",
        "in_isr", "size_bytes")) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(REPLICA_COLUMNS))]
    return "\n".join(" ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table)
