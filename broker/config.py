"""cluster.toml: which brokers exist, where they listen, and the broker-wide settings.

Everything here is checked before the broker writes anything; a bad file is a
ConfigError whose message is the one line `kbroker` prints before exiting with 2.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.log import LogConfig


class ConfigError(Exception):
    """A bad cluster.toml or command line; the message is shown to the user as is."""


@dataclass(frozen=True)
class BrokerAddress:
    broker_id: int
    host: str
    port: int        # client gRPC port
    raft_port: int   # metadata quorum (pysyncobj) port
    # Broker-to-broker gRPC port (Replication, Controller): its own server, threads and stream slots,
    # so client load on `port` can never starve replication or heartbeats (Kafka's control plane listener).
    inter_broker_port: int
    data_dir: Path
    # The Kafka-protocol listener (kcat, librdkafka, kafka-python, aiokafka); 0: none.
    kafka_port: int = 0
    # Kafka's broker.rack: a Kafka consumer whose client.rack names it is sent to read from this
    # broker's replica (KIP-392); None: no rack.
    rack: str | None = None
    # Prometheus metrics over HTTP (broker/metrics.py); 0: no metrics listener.
    metrics_port: int = 0
    # Followers' fetch streams over plain TCP (broker/replication_socket.py); 0: over gRPC on inter_broker_port.
    replication_port: int = 0


@dataclass(frozen=True)
class BrokerSettings:
    """Broker-wide settings in Kafka's names (cluster.toml's [config] table)."""

    num_partitions: int = 1
    default_replication_factor: int = 1
    min_insync_replicas: int = 2
    message_max_bytes: int = 1048576
    log_retention_check_interval_ms: int = 300000
    high_watermark_checkpoint_interval_ms: int = 5000
    fetch_max_wait_cap_ms: int = 30000     # bounds a long poll's hold on a worker thread
    grpc_max_workers: int = 64
    grpc_max_concurrent_rpcs: int = 256
    grpc_max_message_bytes: int = 64 * 1024 * 1024
    # Calls that hold a worker thread for long (ProduceStream, ReplicaFetchStream, a Fetch or
    # ReplicaFetch that long-polls) share this many slots; one more is refused with
    # RESOURCE_EXHAUSTED, so grpc_max_workers - this many threads always serve unary calls.
    grpc_max_concurrent_streams: int = 32
    # A connection that has not finished its HTTP/2 handshake by then is closed.
    grpc_handshake_timeout_ms: int = 10000
    # A connection with no call in progress for this long gets a GOAWAY (clients reconnect on their
    # next call): idle connections, a stranger's included, cannot pile up.
    grpc_max_connection_idle_ms: int = 300000
    # Every connection is closed (GOAWAY, then cut after the grace) once this old: calls that never
    # finish sending their request (each holds a worker thread in grpcio) end with it. Clients
    # reconnect; an idempotent producer resends what was in flight.
    grpc_max_connection_age_ms: int = 300000
    grpc_max_connection_age_grace_ms: int = 10000
    # The inter-broker server's own capacity. Per broker it holds one fetch stream (or long-polling
    # ReplicaFetch) from each follower of its partitions, and short unary calls: heartbeats, registration,
    # AlterPartition (each broker has at most one of each in flight). 16 streams cover every follower of
    # a cluster of up to 17 brokers, twice over for 3 (a cancelled stream and its replacement); the 16
    # other threads keep the unary calls from ever queueing behind the streams.
    inter_broker_max_workers: int = 32
    inter_broker_max_concurrent_rpcs: int = 128
    inter_broker_max_concurrent_streams: int = 16
    # Broker cap on one Fetch answer (Kafka's fetch.max.bytes, 55 MiB there): a request asking for
    # more, or for 0 (no limit), gets this; the first batch still comes whole (KIP-74).
    fetch_max_bytes: int = 52428800
    # Liveness: a broker whose connections dropped is fenced after two missed
    # heartbeats; a hung one after the session timeout (Kafka: 2000 / 9000).
    broker_heartbeat_interval_ms: int = 250
    broker_session_timeout_ms: int = 3000
    # The metadata quorum's Raft timers (pysyncobj): an election starts after a
    # random timeout in [min, max] without a heartbeat from the leader.
    quorum_election_timeout_ms: int = 400
    quorum_election_timeout_max_ms: int = 800
    quorum_heartbeat_interval_ms: int = 100
    metadata_commit_timeout_ms: int = 5000
    # Replication (Kafka's names): a follower out of sync this long leaves the ISR (Kafka: 30000).
    replica_lag_time_max_ms: int = 5000
    replica_fetch_wait_max_ms: int = 500
    replica_fetch_max_bytes: int = 1048576
    replica_fetch_response_max_bytes: int = 10485760
    replica_fetch_backoff_ms: int = 200
    # 1: fetch over one long-lived stream per leader; 0: one unary call per fetch (to compare).
    replica_fetch_stream: int = 1
    # A producer id whose last batch's max timestamp is this old is forgotten (Kafka's default: 1 day).
    producer_id_expiration_ms: int = 86400000
    # The Kafka-protocol listener (Kafka's names): a Metadata request naming an unknown topic creates it
    # (1, Kafka's default) with num.partitions and default.replication.factor; requests larger than
    # socket.request.max.bytes close their connection; so does connections.max.idle.ms without a request;
    # connections past kafka.max.connections are closed at once (each holds two threads).
    auto_create_topics_enable: int = 1
    socket_request_max_bytes: int = 104857600
    connections_max_idle_ms: int = 600000
    kafka_max_connections: int = 256
    # Consumer groups (Kafka's names and defaults): committed offsets and group metadata live in the
    # internal topic __consumer_offsets, created on first use; a group's coordinator is the leader of
    # its partition. Session timeouts outside [min, max] are refused; a new group waits the initial
    # delay for more members before its first rebalance.
    offsets_topic_num_partitions: int = 50
    offsets_topic_replication_factor: int = 3
    offset_metadata_max_bytes: int = 4096
    # Kafka's offset expiry (KIP-211): an Empty group's offsets go this long after it emptied, an offsets-only
    # group's and a Stable group's unsubscribed ones this long after their commit; checked this often.
    offsets_retention_minutes: int = 10080
    offsets_retention_check_interval_ms: int = 600000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1800000
    group_initial_rebalance_delay_ms: int = 3000
    group_max_size: int = 2147483647
    # raftka's own bound (Kafka has none): the groups one coordinator holds in memory. A new group past
    # it is refused with GROUP_MAX_SIZE_REACHED; existing groups, and groups loaded at failover, go on.
    group_max_count: int = 100000
    log: LogConfig = field(default_factory=LogConfig)
    # The [config] keys cluster.toml sets (DescribeConfigs: STATIC_BROKER_CONFIG, the others DEFAULT_CONFIG).
    set_in_file: frozenset[str] = frozenset()


# cluster.toml [config] key -> (BrokerSettings field or "log.<LogConfig field>")
_SETTING_KEYS = {
    "num.partitions": "num_partitions",
    "default.replication.factor": "default_replication_factor",
    "min.insync.replicas": "min_insync_replicas",
    "message.max.bytes": "message_max_bytes",
    "log.retention.check.interval.ms": "log_retention_check_interval_ms",
    "replica.high.watermark.checkpoint.interval.ms": "high_watermark_checkpoint_interval_ms",
    "fetch.max.wait.cap.ms": "fetch_max_wait_cap_ms",
    "grpc.max.workers": "grpc_max_workers",
    "grpc.max.concurrent.rpcs": "grpc_max_concurrent_rpcs",
    "grpc.max.message.bytes": "grpc_max_message_bytes",
    "grpc.max.concurrent.streams": "grpc_max_concurrent_streams",
    "grpc.handshake.timeout.ms": "grpc_handshake_timeout_ms",
    "grpc.max.connection.idle.ms": "grpc_max_connection_idle_ms",
    "grpc.max.connection.age.ms": "grpc_max_connection_age_ms",
    "grpc.max.connection.age.grace.ms": "grpc_max_connection_age_grace_ms",
    "inter.broker.max.workers": "inter_broker_max_workers",
    "inter.broker.max.concurrent.rpcs": "inter_broker_max_concurrent_rpcs",
    "inter.broker.max.concurrent.streams": "inter_broker_max_concurrent_streams",
    "fetch.max.bytes": "fetch_max_bytes",
    "broker.heartbeat.interval.ms": "broker_heartbeat_interval_ms",
    "broker.session.timeout.ms": "broker_session_timeout_ms",
    "controller.quorum.election.timeout.ms": "quorum_election_timeout_ms",
    "controller.quorum.election.timeout.max.ms": "quorum_election_timeout_max_ms",
    "controller.quorum.heartbeat.interval.ms": "quorum_heartbeat_interval_ms",
    "metadata.commit.timeout.ms": "metadata_commit_timeout_ms",
    "replica.lag.time.max.ms": "replica_lag_time_max_ms",
    "replica.fetch.wait.max.ms": "replica_fetch_wait_max_ms",
    "replica.fetch.max.bytes": "replica_fetch_max_bytes",
    "replica.fetch.response.max.bytes": "replica_fetch_response_max_bytes",
    "replica.fetch.backoff.ms": "replica_fetch_backoff_ms",
    "replica.fetch.stream": "replica_fetch_stream",
    "producer.id.expiration.ms": "producer_id_expiration_ms",
    "auto.create.topics.enable": "auto_create_topics_enable",
    "socket.request.max.bytes": "socket_request_max_bytes",
    "connections.max.idle.ms": "connections_max_idle_ms",
    "kafka.max.connections": "kafka_max_connections",
    "offsets.topic.num.partitions": "offsets_topic_num_partitions",
    "offsets.topic.replication.factor": "offsets_topic_replication_factor",
    "offset.metadata.max.bytes": "offset_metadata_max_bytes",
    "group.min.session.timeout.ms": "group_min_session_timeout_ms",
    "group.max.session.timeout.ms": "group_max_session_timeout_ms",
    "group.initial.rebalance.delay.ms": "group_initial_rebalance_delay_ms",
    "group.max.size": "group_max_size",
    "group.max.count": "group_max_count",
    "offsets.retention.minutes": "offsets_retention_minutes",
    "offsets.retention.check.interval.ms": "offsets_retention_check_interval_ms",
    "log.segment.bytes": "log.segment_bytes",
    "log.roll.ms": "log.segment_ms",
    "log.retention.ms": "log.retention_ms",
    "log.retention.bytes": "log.retention_bytes",
    "log.index.interval.bytes": "log.index_interval_bytes",
    "log.flush.interval.messages": "log.flush_interval_messages",
}


SECRET_ENV = "RAFTKA_CLUSTER_SECRET"
# Room for the protobuf fields around the record bytes of a request or answer.
GRPC_ENVELOPE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ClusterConfig:
    cluster_id: str
    brokers: tuple[BrokerAddress, ...]
    settings: BrokerSettings
    path: Path
    # Shared by the brokers' Raft ports (pysyncobj's password): a peer without it is refused.
    cluster_secret: str = field(default="", repr=False)
    # The brokers whose Raft nodes vote and may become the controller (Kafka's controller.quorum.voters);
    # the others are observers: they replicate the metadata log but never vote or lead. Empty: all vote.
    quorum_voters: tuple[int, ...] = ()

    def is_voter(self, broker_id: int) -> bool:
        return not self.quorum_voters or broker_id in self.quorum_voters

    def broker(self, broker_id: int) -> BrokerAddress:
        for b in self.brokers:
            if b.broker_id == broker_id:
                return b
        ids = ", ".join(str(b.broker_id) for b in self.brokers)
        raise ConfigError(f"broker id {broker_id} is not in {self.path} (it names {ids})")


def load_cluster_config(path: str | Path) -> ClusterConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"cannot read cluster config {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"cannot read cluster config {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:  # TOML is UTF-8; say where, not the codec's wording
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}: {e.object[e.start]:#04x})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return parse_cluster_config(raw, path)


def parse_cluster_config(raw: dict[str, Any], path: Path) -> ClusterConfig:
    cluster_id = raw.get("cluster_id", "raftka-local")
    if not isinstance(cluster_id, str) or not cluster_id:
        raise ConfigError(f"{path}: cluster_id must be a non-empty string")
    entries = raw.get("broker")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[broker]] entries")
    brokers = tuple(_parse_broker(e, i, path) for i, e in enumerate(entries))
    _check_unique(brokers, path)
    settings = _parse_settings(raw.get("config", {}), path)
    streams = settings.inter_broker_max_concurrent_streams
    if streams < len(brokers) - 1:
        # A leader serves one fetch stream from every other broker; a refused one would leave the ISR.
        raise ConfigError(f"{path}: inter.broker.max.concurrent.streams ({streams}) must be at least the number "
                          f"of brokers minus one ({len(brokers) - 1}), so every follower's fetch stream fits")
    return ClusterConfig(cluster_id, brokers, settings, path, _cluster_secret(raw, path),
                         _quorum_voters(raw, brokers, path))


def _quorum_voters(raw: dict[str, Any], brokers: tuple[BrokerAddress, ...], path: Path) -> tuple[int, ...]:
    """controller_quorum_voters: the ids of the brokers whose Raft nodes vote; left out, every broker votes."""
    ids = [b.broker_id for b in brokers]
    value = raw.get("controller_quorum_voters")
    if value is None:
        return tuple(ids)
    where = f"{path}: controller_quorum_voters"
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a non-empty list of broker ids, e.g. [1, 2, 3]")
    bad = next((v for v in value if isinstance(v, bool) or not isinstance(v, int)), None)
    if bad is not None:
        raise ConfigError(f"{where} must hold broker ids (integers), not {bad!r}")
    voters: list[int] = value
    unknown = [v for v in voters if v not in ids]
    if unknown:
        raise ConfigError(f"{where} names broker {unknown[0]}, which has no [[broker]] entry "
                          f"(the file names {', '.join(map(str, ids))})")
    if len(set(voters)) != len(voters):
        raise ConfigError(f"{where} names a broker twice")
    return tuple(sorted(voters))


def _cluster_secret(raw: dict[str, Any], path: Path) -> str:
    """The environment wins over the file, so a shared cluster.toml need not hold the real secret."""
    secret = os.environ.get(SECRET_ENV) or raw.get("cluster_secret")
    if not secret:
        raise ConfigError(f"{path}: no cluster secret: set cluster_secret in the file or {SECRET_ENV} "
                          "(the Raft ports refuse peers without it)")
    if not isinstance(secret, str) or len(secret) < 8:
        raise ConfigError(f"{path}: cluster_secret must be a string of at least 8 characters")
    return secret


def _parse_broker(entry: Any, index: int, path: Path) -> BrokerAddress:
    where = f"{path}: [[broker]] #{index + 1}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} is not a table")
    for key in ("id", "port", "raft_port", "inter_broker_port"):
        if key not in entry:
            raise ConfigError(f"{where} is missing '{key}'")
    broker_id = _int(entry["id"], f"{where} id", 0, 2**31 - 1)
    host = entry.get("host", "127.0.0.1")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError(f"{where} host {host!r} is not an IP address or localhost") from None
    data_dir = Path(entry.get("data_dir", f"data/broker-{broker_id}"))
    if not data_dir.is_absolute():
        data_dir = path.resolve().parent / data_dir
    port, raft_port, inter_broker_port = (_int(entry[k], f"{where} {k}", 1, 65535)
                                          for k in ("port", "raft_port", "inter_broker_port"))
    kafka_port = _int(entry["kafka_port"], f"{where} kafka_port", 1, 65535) if "kafka_port" in entry else 0
    # Optional; 0 says "none" as plainly as leaving it out.
    metrics_port = _int(entry.get("metrics_port", 0), f"{where} metrics_port", 0, 65535)
    replication_port = _int(entry.get("replication_port", 0), f"{where} replication_port", 0, 65535)
    return BrokerAddress(broker_id, host, port, raft_port, inter_broker_port, data_dir, kafka_port,
                         _rack(entry.get("rack"), where), metrics_port, replication_port)


def _rack(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 255 or not value.isprintable():
        raise ConfigError(f"{where} rack must be a non-empty string of at most 255 printable characters")
    return value


def _check_unique(brokers: tuple[BrokerAddress, ...], path: Path) -> None:
    seen_ids: set[int] = set()
    seen_ports: dict[tuple[str, int], int] = {}
    for b in brokers:
        if b.broker_id in seen_ids:
            raise ConfigError(f"{path}: broker id {b.broker_id} appears twice")
        seen_ids.add(b.broker_id)
        own: dict[int, str] = {}   # port -> its setting, so a clash names both ("broker 1 and broker 1" would not)
        ports = [("port", b.port), ("raft_port", b.raft_port), ("inter_broker_port", b.inter_broker_port)]
        optional = [(name, port) for name, port in (("kafka_port", b.kafka_port), ("metrics_port", b.metrics_port),
                                                    ("replication_port", b.replication_port)) if port]
        for name, port in ports + optional:
            if port in own:
                raise ConfigError(f"{path}: broker {b.broker_id} has {own[port]} = {name} = {port}; they must differ")
            own[port] = name
        for port in own:
            other = seen_ports.get((b.host, port))
            if other is not None:
                raise ConfigError(f"{path}: port {b.host}:{port} is used by broker {other} and broker {b.broker_id}")
            seen_ports[(b.host, port)] = b.broker_id
    dirs = [b.data_dir for b in brokers]
    if len(set(dirs)) != len(dirs):
        raise ConfigError(f"{path}: two brokers share a data_dir")


def _parse_settings(table: Any, path: Path) -> BrokerSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [config] must be a table")
    top: dict[str, int] = {}
    log: dict[str, int] = {}
    for key, value in table.items():
        target = _SETTING_KEYS.get(key)
        if target is None:
            raise ConfigError(f"{path}: unknown setting {key!r} in [config]")
        if target == "auto_create_topics_enable" and isinstance(value, bool):
            value = int(value)   # Kafka writes it true / false
        number = _int(value, f"{path}: {key}", -1, 2**62)
        if target.startswith("log."):
            log[target[4:]] = number
        else:
            top[target] = number
    for key in ("num_partitions", "default_replication_factor", "min_insync_replicas", "grpc_max_workers",
                "grpc_max_concurrent_rpcs", "broker_heartbeat_interval_ms", "quorum_heartbeat_interval_ms",
                "metadata_commit_timeout_ms", "replica_lag_time_max_ms", "replica_fetch_max_bytes",
                "replica_fetch_response_max_bytes", "grpc_max_concurrent_streams", "grpc_handshake_timeout_ms",
                "grpc_max_connection_idle_ms", "grpc_max_connection_age_ms", "grpc_max_connection_age_grace_ms",
                "fetch_max_bytes", "inter_broker_max_workers", "inter_broker_max_concurrent_rpcs",
                "inter_broker_max_concurrent_streams", "producer_id_expiration_ms", "socket_request_max_bytes",
                "connections_max_idle_ms", "kafka_max_connections", "offsets_topic_num_partitions",
                "offsets_topic_replication_factor", "group_min_session_timeout_ms", "group_max_session_timeout_ms",
                "group_max_size", "group_max_count", "offsets_retention_minutes",
                "offsets_retention_check_interval_ms"):
        if top.get(key, 1) < 1:
            raise ConfigError(f"{path}: {_key_of(key)} must be at least 1")
    _check_limits(top, path)
    for key in ("replica_fetch_stream", "auto_create_topics_enable"):
        if top.get(key, 1) not in (0, 1):
            raise ConfigError(f"{path}: {_key_of(key)} must be 0 or 1 (false or true)")
    defaults = BrokerSettings()
    heartbeat = top.get("broker_heartbeat_interval_ms", defaults.broker_heartbeat_interval_ms)
    if top.get("broker_session_timeout_ms", defaults.broker_session_timeout_ms) <= 2 * heartbeat:
        raise ConfigError(f"{path}: broker.session.timeout.ms must be more than twice broker.heartbeat.interval.ms")
    if top.get("group_min_session_timeout_ms", defaults.group_min_session_timeout_ms) > top.get(
            "group_max_session_timeout_ms", defaults.group_max_session_timeout_ms):
        raise ConfigError(f"{path}: group.min.session.timeout.ms must be at most group.max.session.timeout.ms")
    if top.get("offsets_topic_num_partitions", defaults.offsets_topic_num_partitions) > 10000:
        raise ConfigError(f"{path}: offsets.topic.num.partitions must be at most 10000 (partitions per topic)")
    low = top.get("quorum_election_timeout_ms", defaults.quorum_election_timeout_ms)
    high = top.get("quorum_election_timeout_max_ms", defaults.quorum_election_timeout_max_ms)
    raft_heartbeat = top.get("quorum_heartbeat_interval_ms", defaults.quorum_heartbeat_interval_ms)
    if not 3 * raft_heartbeat < low < high:
        raise ConfigError(f"{path}: need 3 x controller.quorum.heartbeat.interval.ms < "
                          "controller.quorum.election.timeout.ms < controller.quorum.election.timeout.max.ms")
    try:
        return BrokerSettings(**top, log=LogConfig(**log), set_in_file=frozenset(table))
    except ValueError as e:  # the log layer's own range checks
        raise ConfigError(f"{path}: {e}") from None


def _check_limits(top: dict[str, int], path: Path) -> None:
    """The limits must nest: on each gRPC server a stream cap below the worker threads, a batch and a
    fetch answer below the largest gRPC message."""
    defaults = BrokerSettings()
    value = {k: top.get(k, getattr(defaults, k)) for k in (
        "grpc_max_workers", "grpc_max_concurrent_streams", "grpc_max_concurrent_rpcs", "grpc_max_message_bytes",
        "message_max_bytes", "fetch_max_bytes", "replica_fetch_response_max_bytes", "inter_broker_max_workers",
        "inter_broker_max_concurrent_streams", "inter_broker_max_concurrent_rpcs")}
    for server in ("grpc", "inter_broker"):   # the client server, then the inter-broker server
        workers, streams, rpcs = (f"{server}_max_{k}" for k in ("workers", "concurrent_streams", "concurrent_rpcs"))
        if value[streams] >= value[workers]:
            raise ConfigError(f"{path}: {_key_of(streams)} ({value[streams]}) must be less than {_key_of(workers)} "
                              f"({value[workers]}), so unary calls keep threads")
        if value[rpcs] < value[workers]:
            raise ConfigError(f"{path}: {_key_of(rpcs)} must be at least {_key_of(workers)}")
    for key in ("message_max_bytes", "fetch_max_bytes", "replica_fetch_response_max_bytes"):
        if value[key] + GRPC_ENVELOPE_BYTES > value["grpc_max_message_bytes"]:
            raise ConfigError(f"{path}: {_key_of(key)} ({value[key]}) plus {GRPC_ENVELOPE_BYTES} bytes of envelope "
                              f"must fit in grpc.max.message.bytes ({value['grpc_max_message_bytes']})")


def setting_names() -> list[str]:
    """Every [config] key a broker takes, in Kafka's names."""
    return list(_SETTING_KEYS)


def setting_value(settings: BrokerSettings, key: str) -> int:
    """The value in force of [config] ``key``."""
    target = _SETTING_KEYS[key]
    return getattr(settings.log, target[4:]) if target.startswith("log.") else getattr(settings, target)


def _key_of(field_name: str) -> str:
    return next(k for k, v in _SETTING_KEYS.items() if v == field_name)


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{what} must be an integer, not {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{what} must be an integer, not {value!r}") from None
    if not lo <= number <= hi:
        raise ConfigError(f"{what} = {number} is out of range [{lo}, {hi}]")
    return number
