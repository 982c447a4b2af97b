"""Prometheus metrics of one broker, named as the Prometheus JMX exporter renders Kafka's MBeans.

Each broker has its own ``CollectorRegistry`` (``of(broker_id)``), never prometheus_client's
global one: tests run several brokers' code in one process. ``metrics_port`` in cluster.toml
serves it over HTTP (``serve``: prometheus_client's WSGI app on the standard library's wsgiref
server), on the broker's ``host`` like every other listener.

Names follow the JMX exporter's Kafka example (example_configs/kafka-2_0_0.yml: lowercaseOutputName;
a Meter ``...PerSec`` -> ``kafka_<domain>_<type>_<name>_total``, a gauge ``Value`` ->
``kafka_<domain>_<type>_<name>``, a Histogram / Timer ``Count`` -> ``kafka_<domain>_<type>_<name>_count``),
so a dashboard written for Kafka reads raftka. Metrics Kafka has no MBean for are ``raftka_``.

Two kinds, so that nothing drifts:
- state gauges are computed at scrape time (``BrokerStateCollector``) from what the broker already
  holds: its hosted partitions, its controller, its metadata image;
- event counters and histograms are bumped where the event happens, by one-line calls into
  ``BrokerMetrics`` (the produce path pays one counter increment per batch, no lock of its own).

The metrics, one block each: name (type; labels), the Kafka MBean it mirrors, what raftka counts.

kafka_server_replicamanager_underreplicatedpartitions (gauge)
    kafka.server:type=ReplicaManager,name=UnderReplicatedPartitions
    partitions this broker leads whose ISR is smaller than their replica list
kafka_server_replicamanager_leadercount (gauge)
    kafka.server:type=ReplicaManager,name=LeaderCount
    partitions this broker leads
kafka_server_replicamanager_partitioncount (gauge)
    kafka.server:type=ReplicaManager,name=PartitionCount
    replicas this broker hosts, leader or follower
kafka_controller_kafkacontroller_activecontrollercount (gauge)
    kafka.controller:type=KafkaController,name=ActiveControllerCount
    1 on the active controller, else 0: sums to 1 over a healthy cluster
kafka_controller_kafkacontroller_offlinepartitionscount (gauge)
    kafka.controller:type=KafkaController,name=OfflinePartitionsCount
    on the active controller, partitions without a leader in the metadata; 0 on the others, as in Kafka
kafka_server_replicafetchermanager_maxlag (gauge; clientId="Replica")
    kafka.server:type=ReplicaFetcherManager,name=MaxLag,clientId=Replica
    over the partitions this broker follows, the largest lag in records: the leader's log end offset in its
    last fetch answer minus this replica's log end offset (0 when it follows nothing)
kafka_server_replicamanager_isrshrinks_total (counter)
    kafka.server:type=ReplicaManager,name=IsrShrinksPerSec
    committed ISR changes that removed replicas of a partition this broker leads after the change: its own
    AlterPartition (a lagging follower), or the controller fencing a dead broker (a new leader counts the
    dead one's removal too)
kafka_server_replicamanager_isrexpands_total (counter)
    kafka.server:type=ReplicaManager,name=IsrExpandsPerSec
    committed ISR changes that added replicas (a follower caught up again)
kafka_server_brokertopicmetrics_messagesin_total (counter; topic)
    kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec,topic=T
    records appended as leader (an idempotent producer's duplicate is not appended, so not counted)
kafka_server_brokertopicmetrics_bytesin_total (counter; topic)
    kafka.server:type=BrokerTopicMetrics,name=BytesInPerSec,topic=T
    bytes of those batches
kafka_server_brokertopicmetrics_bytesout_total (counter; topic)
    kafka.server:type=BrokerTopicMetrics,name=BytesOutPerSec,topic=T
    record bytes in answers to consumers' fetches (followers' fetches are replication: Kafka counts them apart)
kafka_server_brokertopicmetrics_failedproducerequests_total (counter; topic)
    kafka.server:type=BrokerTopicMetrics,name=FailedProduceRequestsPerSec,topic=T
    partitions of produce requests answered with an error; as in Kafka, not the stale-metadata errors
    (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, ...) that a client retries elsewhere
kafka_network_requestmetrics_totaltimems (histogram in milliseconds; request, acks)
    kafka.network:type=RequestMetrics,name=TotalTimeMs,request=Produce|FetchConsumer|FetchFollower
    time from a request's arrival at the request layer (kafka_apis.py, either front door) to its answer;
    acks = "-1", "0" or "1" for Produce, "" (no label) for fetches. The exporter renders Kafka's as a summary
    (_count and quantiles): the _count is the same, with _bucket and _sum instead of quantiles
kafka_controller_controllerstats_leaderelectionrateandtimems (summary in milliseconds)
    kafka.controller:type=ControllerStats,name=LeaderElectionRateAndTimeMs
    _count: partitions that this broker, as the active controller, gave a new leader (a fenced or shut-down
    leader, an offline partition back, kclient leader-election); _sum: the time to commit its batch
raftka_raft_term (gauge)
    raftka's own (KRaft's raft-metrics current-epoch is the nearest)
    this node's Raft term; every Raft election (a new controller) raises it, so it counts them
raftka_raft_commit_latency_seconds (histogram in seconds)
    raftka's own (KRaft's raft-metrics commit-latency-avg is the nearest)
    metadata batches this node submitted (the controller does): from the submit to the commit applied here
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol
from wsgiref.simple_server import WSGIRequestHandler, make_server

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, disable_created_metrics, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from broker.metadata.records import ChangePartition

log = structlog.get_logger(__name__)

# Milliseconds, as the metric's name says: from a produce appended in place to a long poll held its full wait.
REQUEST_TIME_BUCKETS_MS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
RAFT_COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A scrape connection that sends nothing for this long is closed: idle ones cannot pile up threads.
REQUEST_TIMEOUT_S = 10.0
SHUTDOWN_POLL_S = 0.05
PRODUCE, FETCH_CONSUMER, FETCH_FOLLOWER = "Produce", "FetchConsumer", "FetchFollower"
NO_ACKS = ""   # the acks label of a fetch: Prometheus reads an empty label as no label


class _PerTopic:
    """A labelled counter's child per topic, cached: the produce path does a dict lookup, not labels()'s lock."""

    def __init__(self, counter: Counter):
        self._counter = counter
        self._children: dict[str, Counter] = {}

    def inc(self, topic: str, amount: float = 1) -> None:
        child = self._children.get(topic)
        if child is None:
            child = self._children.setdefault(topic, self._counter.labels(topic))
        child.inc(amount)


@dataclass(frozen=True)
class _LeaderEnd:
    """The leader's log end offset in the last fetch answer for a partition, with whom it was fetched from."""
    leader_id: int
    leader_epoch: int
    log_end_offset: int


class HostedPartition(Protocol):
    """What the collector reads of a hosted replica (broker/partition.py's Partition)."""
    state: object   # PartitionState: is_leader, isr, replicas
    log: object     # PartitionLog: log_end_offset

    def follows(self, leader_id: int, leader_epoch: int) -> bool: ...


class BrokerState(Protocol):
    """Where the state gauges come from: the broker's replica manager, controller and metadata."""

    def hosted_partitions(self) -> dict[tuple[str, int], HostedPartition]: ...
    def controller_active(self) -> bool: ...
    def offline_partitions(self) -> int: ...
    def raft_term(self) -> int: ...


@dataclass
class LiveBrokerState:
    """The running broker's parts, read at each scrape (replica_manager.ReplicaManager, controller.Controller)."""
    replica_manager: object
    controller: object
    quorum: object = None   # metadata.quorum.MetadataQuorum (None: no Raft node, term -1)

    def raft_term(self) -> int:
        return self.quorum.term() if self.quorum is not None else -1

    def hosted_partitions(self) -> dict[tuple[str, int], HostedPartition]:
        return self.replica_manager.hosted_partitions()

    def controller_active(self) -> bool:
        return self.controller.is_active()

    def offline_partitions(self) -> int:
        image = self.controller.image
        return sum(1 for t in image.topics.values() for reg in t.partitions if reg.leader < 0)


class BrokerStateCollector(Collector):
    """The state gauges, computed at scrape time from the broker's own state (nothing kept that could drift)."""

    def __init__(self, leader_ends: dict[tuple[str, int], _LeaderEnd]):
        self.source: BrokerState | None = None   # set by BrokerMetrics.attach once the broker is built
        self._leader_ends = leader_ends

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.source)

    def _families(self, source: BrokerState | None) -> list[Metric]:
        parts = source.hosted_partitions() if source is not None else {}
        leaders = [p for p in parts.values() if p.state.is_leader]
        active = source is not None and source.controller_active()
        values = [
            ("kafka_server_replicamanager_underreplicatedpartitions",
             "Partitions this broker leads whose ISR is smaller than their replica list.",
             sum(1 for p in leaders if len(p.state.isr) < len(p.state.replicas))),
            ("kafka_server_replicamanager_leadercount", "Partitions this broker leads.", len(leaders)),
            ("kafka_server_replicamanager_partitioncount", "Replicas this broker hosts.", len(parts)),
            ("kafka_controller_kafkacontroller_activecontrollercount",
             "1 on the active controller, else 0.", 1 if active else 0),
            ("kafka_controller_kafkacontroller_offlinepartitionscount",
             "On the active controller: partitions without a leader; 0 elsewhere.",
             source.offline_partitions() if active else 0),
            ("raftka_raft_term", "This node's Raft term: each Raft election raises it (the election count).",
             source.raft_term() if source is not None else -1),
        ]
        families: list[Metric] = [GaugeMetricFamily(name, doc, value=value) for name, doc, value in values]
        lag = GaugeMetricFamily("kafka_server_replicafetchermanager_maxlag",
                                "Largest lag, in records, of a partition this broker follows behind its leader.",
                                labels=["clientId"])
        # Unattached (describe, or a scrape while the broker starts): it follows nothing yet.
        lag.add_metric(["Replica"], self._max_lag(parts) if source is not None else 0)
        families.append(lag)
        return families

    def _max_lag(self, parts: dict[tuple[str, int], HostedPartition]) -> int:
        """Only partitions still followed from the leader and epoch of the recorded answer count: one
        that became leader, moved to another leader or went away is not lagging behind anyone."""
        lag = 0
        for tp, seen in list(self._leader_ends.items()):
            hosted = parts.get(tp)
            if hosted is None:
                self._leader_ends.pop(tp, None)   # deleted here: forget it
            elif hosted.follows(seen.leader_id, seen.leader_epoch):
                lag = max(lag, seen.log_end_offset - hosted.log.log_end_offset)
        return lag


class BrokerMetrics:
    """One broker's registry: its event counters and histograms, and the state collector."""

    def __init__(self, broker_id: int):
        self.broker_id = broker_id
        self.registry = CollectorRegistry()
        r = self.registry
        self._messages_in = _PerTopic(Counter("kafka_server_brokertopicmetrics_messagesin",
                                              "Records appended as leader.", ["topic"], registry=r))
        self._bytes_in = _PerTopic(Counter("kafka_server_brokertopicmetrics_bytesin",
                                           "Bytes of the batches appended as leader.", ["topic"], registry=r))
        self._bytes_out = _PerTopic(Counter("kafka_server_brokertopicmetrics_bytesout",
                                            "Record bytes answered to consumers' fetches.", ["topic"], registry=r))
        self._failed_produce = _PerTopic(Counter(
            "kafka_server_brokertopicmetrics_failedproducerequests",
            "Partitions of produce requests answered with an error other than stale metadata.", ["topic"],
            registry=r))
        self.isr_shrinks = Counter("kafka_server_replicamanager_isrshrinks",
                                   "Committed ISR changes that removed replicas of a partition led here.", registry=r)
        self.isr_expands = Counter("kafka_server_replicamanager_isrexpands",
                                   "Committed ISR changes that added replicas to a partition led here.", registry=r)
        self._request_time = Histogram("kafka_network_requestmetrics_totaltimems",
                                       "Request time from arrival to answer, in milliseconds.", ["request", "acks"],
                                       buckets=REQUEST_TIME_BUCKETS_MS, registry=r)
        self._request_children: dict[tuple[str, str], Histogram] = {}
        self.leader_elections = Summary("kafka_controller_controllerstats_leaderelectionrateandtimems",
                                        "Partitions given a new leader by this controller; time from decision to "
                                        "commit, in milliseconds.", registry=r)
        self.raft_commit = Histogram("raftka_raft_commit_latency_seconds",
                                     "Metadata batches submitted here: time from submit to commit.",
                                     buckets=RAFT_COMMIT_BUCKETS_S, registry=r)
        self._leader_ends: dict[tuple[str, int], _LeaderEnd] = {}
        self.state = BrokerStateCollector(self._leader_ends)
        r.register(self.state)

    def attach(self, source: BrokerState) -> None:
        """The broker is built: the state gauges read it from now on."""
        self.state.source = source

    # ---- events: one call each, where they happen ----------------------------------------------

    def appended_as_leader(self, topic: str, records: int, size: int) -> None:
        self._messages_in.inc(topic, records)
        self._bytes_in.inc(topic, size)

    def produce_answered(self, acks: int, started: float, results: Iterable) -> None:
        """A produce request answered (``started``: time.monotonic() at its arrival)."""
        self._time(PRODUCE, str(acks), started)
        for r in results:
            if r.error is not None and not r.error.invalid_metadata:
                self._failed_produce.inc(r.topic)

    def fetch_answered(self, follower: bool, started: float, results: Iterable) -> None:
        """A fetch answered; a consumer's record bytes are its bytes out."""
        self._time(FETCH_FOLLOWER if follower else FETCH_CONSUMER, NO_ACKS, started)
        if not follower:
            for r in results:
                if r.records:
                    self._bytes_out.inc(r.topic, len(r.records))

    def _time(self, request: str, acks: str, started: float) -> None:
        child = self._request_children.get((request, acks))
        if child is None:
            child = self._request_children.setdefault((request, acks), self._request_time.labels(request, acks))
        child.observe((time.monotonic() - started) * 1000)

    def isr_changed(self, old_partition_epoch: int, old_isr: Iterable[int], new_isr: Iterable[int]) -> None:
        """Committed metadata gave a partition this broker leads ``new_isr``; ``old_isr`` is what it knew
        before (a partition epoch < 0: nothing, it is newly hosted, so nothing shrank or grew)."""
        if old_partition_epoch < 0:
            return
        old, new = set(old_isr), set(new_isr)
        if old - new:
            self.isr_shrinks.inc()
        if new - old:
            self.isr_expands.inc()

    def fetched_from_leader(self, tp: tuple[str, int], leader_id: int, leader_epoch: int, log_end_offset: int) -> None:
        """A follower's fetch answer told the leader's log end offset (the lag is computed at scrape time)."""
        self._leader_ends[tp] = _LeaderEnd(leader_id, leader_epoch, log_end_offset)

    def controller_committed(self, before, after, records: Iterable, started: float) -> None:
        """The active controller committed ``records`` (``before`` / ``after``: the images around it);
        each partition that got a new live leader is one leader election."""
        elapsed_ms = (time.monotonic() - started) * 1000
        for _ in elected_partitions(before, after, records):
            self.leader_elections.observe(elapsed_ms)

    def metadata_committed(self, started: float) -> None:
        self.raft_commit.observe(time.monotonic() - started)


def elected_partitions(before, after, records: Iterable) -> Iterator[tuple[str, int]]:
    """The partitions whose ChangePartition in ``records`` applied (its partition epoch moved by one from
    the record's) and gave them a new leader that is a broker (not -1: offline is not an election)."""
    for c in records:
        if not isinstance(c, ChangePartition):
            continue
        old, new = before.partition(c.topic, c.partition), after.partition(c.topic, c.partition)
        if (old is not None and new is not None and new.partition_epoch == c.partition_epoch + 1
                and new.leader >= 0 and new.leader != old.leader):
            yield c.topic, c.partition


_brokers: dict[int, BrokerMetrics] = {}
_brokers_lock = threading.Lock()


def of(broker_id: int) -> BrokerMetrics:
    """Broker ``broker_id``'s metrics. Looked up by id so that a hook is one line in any module, with no
    metrics object threaded through every constructor; one registry per id, never the global one."""
    found = _brokers.get(broker_id)
    if found is None:
        with _brokers_lock:
            found = _brokers.setdefault(broker_id, BrokerMetrics(broker_id))
    return found


# ---- the HTTP listener: prometheus_client's WSGI app on wsgiref -----------------------------------


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr; a connection idle for REQUEST_TIMEOUT_S is dropped (its thread ends)."""
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - wsgiref's signature
        pass


class _Server(ThreadingWSGIServer):
    """prometheus_client's threading server (daemon threads); a broken or garbage request is one debug
    line, not wsgiref's traceback on the broker's stderr."""

    def handle_error(self, request, client_address) -> None:
        log.debug("metrics_request_failed", client=str(client_address), error=repr(sys.exc_info()[1]))


class _Server6(_Server):
    address_family = socket.AF_INET6


@dataclass
class MetricsServer:
    """A running metrics listener; ``close`` stops it and frees the port."""
    server: _Server
    thread: threading.Thread = field(repr=False)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(host: str, port: int, registry: CollectorRegistry) -> MetricsServer:
    """Serve ``registry`` at http://host:port/metrics (any path answers, as prometheus_client's app does).
    OSError (EADDRINUSE...) when the port cannot be bound."""
    # Kafka's MBeans have no creation time; without this every counter child adds a *_created series.
    disable_created_metrics()
    server = make_server(host, port, make_wsgi_app(registry), _Server6 if ":" in host else _Server,
                         handler_class=_QuietHandler)
    # The poll interval bounds how long close() (the broker's stop) waits for the serving loop.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_S},
                              name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
