"""One broker process: wires storage, metadata, controller, replica manager and the gRPC servers.

Start-up order matters for bad input: the port is bound and the data dir locked
before anything is written, so a port in use or a second broker on the same
data dir fails with one line and leaves no trace.

A storage failure halts the broker (exit code EXIT_LOG_DIR_FAILURE). Kafka marks the
failed log dir offline and halts once its last log dir is offline; raftka has one
data dir per broker, so its first failure (disk full, read-only, a deleted or
damaged file: broker/log/log_dir_failure.py) is that case. Halting instead of
serving on is what moves leadership: the controller already fences a broker whose
process is gone (its connections drop and its heartbeats stop) and elects the
first live in-sync replica, so no new controller command is needed; staying up
without storage would keep the leaderships and lose or refuse every write. The
request in hand still gets its KAFKA_STORAGE_ERROR: the logs are offline at once,
then the gRPC server gets a short grace to send the answers in flight. No log is
closed cleanly, so the next start recovers (CRC-checks) what changed since the
last flush and cuts any damaged tail; the supervisor restarts the broker (any exit
code but 2) and it comes back as a follower.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import structlog

from broker import metrics
from broker.alter_partition import AlterPartitionManager
from broker.append_notifier import AppendNotifier
from broker.config import BrokerAddress, BrokerSettings, ClusterConfig
from broker.gc_pauses import GcPauses
from broker.controller import Controller
from broker.inter_broker_auth import BrokerOnly, broker_token, with_token
from broker.invariants import InvariantViolation, set_violation_handler
from broker.lifecycle import BrokerLifecycleManager
from broker.log import LogManager
from broker.log.log_dir_failure import LogDirFailure
from broker.log.meta_properties import MetaProperties, mark_voter
from broker.logging_setup import flush_logs
from broker.metadata.quorum import MetadataQuorum
from broker.metadata_publisher import MetadataPublisher
from broker.readiness import ServingGate
from broker.replica_fetcher import ReplicaFetcherManager, SocketRoute
from broker.replica_manager import ReplicaManager, wall_clock_ms
from broker.admission import StreamSlots
from broker.fault_injection import FaultBudget
from broker.forwarding import ControllerForwarder
from broker.group.coordinator import GroupCoordinator
from broker.kafka_apis import KafkaApis
from broker.kafka_protocol.handlers import KafkaEndpoint, KafkaProtocolHandlers
from broker.kafka_protocol.listener import KafkaListener, ListenerLimits
from broker.replication_socket import ReplicationListener
from broker.socket_server import SocketServer
from broker.servicer import ControllerServicer, KafkaServicer, ReplicationServicer
# Exit code 3 after a storage failure (not 2: the supervisor does not restart that one, and a
# restart is what recovers the log).
from broker.supervisor import EXIT_INVARIANT_VIOLATED, EXIT_LOG_DIR_FAILURE
from client.connection import Connections
from client.protocol.v1 import controller_pb2_grpc, kafka_pb2_grpc, replication_pb2_grpc

log = structlog.get_logger(__name__)

# Kafka's producer.id.expiration.check.interval.ms (10 min): how often idle producer ids are forgotten.
PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_S = 600.0
# How long in-flight answers (the KAFKA_STORAGE_ERROR of the failed request) get to go out.
HALT_GRACE_S = 0.5


class PortInUseError(Exception):
    pass


def _grpc_server(host: str, port: int, what: str, s: BrokerSettings, workers: int, max_rpcs: int,
                 interceptors: list[grpc.ServerInterceptor], options: list[tuple[str, int]]) -> grpc.Server:
    """A gRPC server bound to host:port (not started yet) with a thread pool of its own: a listener's
    load queues on its own workers and ``max_rpcs`` only."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"grpc-{what}"),
        maximum_concurrent_rpcs=max_rpcs,
        interceptors=interceptors,
        options=[
            ("grpc.so_reuseport", 0),  # a second broker on the same port must fail, not share it
            ("grpc.max_receive_message_length", s.grpc_max_message_bytes),
            ("grpc.max_send_message_length", s.grpc_max_message_bytes),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.http2.max_pings_without_data", 0),
            # A connection that never finishes its HTTP/2 preface is closed, not kept forever.
            ("grpc.server_handshake_timeout_ms", s.grpc_handshake_timeout_ms),
            ("grpc.max_connection_idle_ms", s.grpc_max_connection_idle_ms),
            *options,
        ])
    try:
        server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        raise PortInUseError(f"cannot listen on {host}:{port} ({what}): the port is in use") from None
    return server


def _check_port_free(host: str, port: int, what: str) -> None:
    """Fail with one clear line before gRPC tries (its own bind error is a C-level log line);
    ``what`` names the setting (port, raft_port, inter_broker_port) so the user knows which one to change."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise PortInUseError(f"cannot listen on {host}:{port} ({what}): the port is in use") from None
            raise PortInUseError(f"cannot listen on {host}:{port} ({what}): {e.strerror}") from None


def _bound(listener: SocketServer, what: str) -> SocketServer:
    """``listener`` holding its port, or one PortInUseError line naming the setting (``what``): the port
    was checked free at start, but another process may take it before the bind."""
    try:
        listener.bind()
    except OSError as e:
        raise PortInUseError(f"cannot listen on {listener.host}:{listener.port} ({what}): {e.strerror}") from None
    return listener


def _exit_now(code: int) -> None:
    """Halt without closing anything (os._exit: no atexit, no logging.shutdown), once every line logged so far
    and whatever stdout and stderr hold are written."""
    flush_logs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Broker:
    def __init__(self, cluster: ClusterConfig, broker_id: int):
        self.cluster = cluster
        self.address = cluster.broker(broker_id)
        self.settings = cluster.settings
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._gc_pauses = GcPauses()   # keeps full GC pauses short at thousands of partitions
        self._server: grpc.Server | None = None               # the client API, on `port`
        self._inter_broker_server: grpc.Server | None = None  # Replication and Controller, on `inter_broker_port`
        self._logs: LogManager | None = None
        self.quorum: MetadataQuorum | None = None
        self.controller: Controller | None = None
        self._publisher: MetadataPublisher | None = None
        self.group_coordinator: GroupCoordinator | None = None
        self._lifecycle: BrokerLifecycleManager | None = None
        self._apis: KafkaApis | None = None           # the request layer every listener's services call
        self._kafka_listener: KafkaListener | None = None   # the Kafka protocol, on `kafka_port`
        # Followers' fetch streams over plain TCP, on `replication_port` (broker/replication_socket.py).
        self._replication_listener: ReplicationListener | None = None
        self._metrics_server: metrics.MetricsServer | None = None   # Prometheus, on `metrics_port`
        self._forwarder: ControllerForwarder | None = None
        self._fetchers: ReplicaFetcherManager | None = None
        self._alter_partition: AlterPartitionManager | None = None
        self.replica_manager: ReplicaManager | None = None
        self._pid_file = self.address.data_dir / "broker.pid"
        self._wrote_pid_file = False  # stop() must not remove the pid file of the broker holding the lock
        self._started = False

    def start(self) -> None:
        started = time.monotonic()
        a, s = self.address, self.settings
        _check_port_free(a.host, a.port, "port")
        _check_port_free(a.host, a.raft_port, "raft_port")
        _check_port_free(a.host, a.inter_broker_port, "inter_broker_port")
        if a.kafka_port:
            _check_port_free(a.host, a.kafka_port, "kafka_port")
        if a.metrics_port:
            _check_port_free(a.host, a.metrics_port, "metrics_port")
        if a.replication_port:
            _check_port_free(a.host, a.replication_port, "replication_port")
        open_files = raise_open_files_limit()
        self._broker_token = broker_token(self.cluster.cluster_id, self.cluster.cluster_secret)
        self._bind_servers()
        self._serve_metrics()

        self._logs = LogManager(a.data_dir, s.log)
        # Refuses an unformatted data dir (`kbroker format`: never formatted here, it may be a lost disk)
        # or another cluster's or broker's, then takes its lock, then recovers: in that order, so a
        # refused data dir is left as it was.
        meta = self._logs.lock(identity=(self.cluster.cluster_id, a.broker_id))
        self._start_quorum(meta)
        try:
            # While the Raft node joins and replays the metadata log (as KRaft's broker loads its logs while
            # it catches up): 10,000 partition logs took 3-4 s, the Raft join another 1-1.5 s after them.
            self._logs.load(wall_clock_ms())
        except BaseException:
            self.quorum.stop()   # no Raft node outlives a start that failed
            raise
        self._logs.failure_channel.add_listener(self._on_log_dir_offline)
        set_violation_handler(self._on_invariant_violated)
        self._pid_file.write_text(f"{os.getpid()}\n")  # for `make kill BROKER=N`
        self._wrote_pid_file = True
        self._start_parts(started, open_files)

    def _start_quorum(self, meta: MetaProperties) -> None:
        a, s = self.address, self.settings
        self.quorum = MetadataQuorum(
            self.cluster.cluster_id, f"{a.host}:{a.raft_port}",
            {b.broker_id: f"{b.host}:{b.raft_port}" for b in self.cluster.brokers if b.broker_id != a.broker_id},
            a.broker_id, a.data_dir, self.cluster.cluster_secret,
            (s.quorum_election_timeout_ms / 1000, s.quorum_election_timeout_max_ms / 1000),
            s.quorum_heartbeat_interval_ms / 1000,
            # Formatted to rejoin (a lost disk): no vote until caught up, then meta.properties says voter.
            rejoining=meta.rejoining, mark_voter=lambda: mark_voter(a.data_dir),
            # Not in controller_quorum_voters: an observer (replicates the metadata log, never controller).
            voters=frozenset(self.cluster.quorum_voters) or None)
        self.quorum.start()

    def _start_parts(self, started: float, open_files: int) -> None:
        """Everything after the logs and the Raft node: the data path, the controller, the servers."""
        a, s = self.address, self.settings
        notifier = AppendNotifier()
        # Calls to other brokers' broker-only services carry the cluster's token (inter_broker_auth).
        as_broker = with_token(self._broker_token)
        self._lifecycle = BrokerLifecycleManager(self.cluster, a.broker_id, self.quorum, Connections(as_broker))
        self._fetchers = ReplicaFetcherManager(a.broker_id, self._inter_broker_address, s, Connections(as_broker),
                                               self._replication_route)
        self._alter_partition = AlterPartitionManager(a.broker_id, lambda: self._lifecycle.broker_epoch,
                                                      self._controller_address,
                                                      s.metadata_commit_timeout_ms / 1000, Connections(as_broker))
        self._alter_partition.start()
        self.replica_manager = ReplicaManager(a.broker_id, self._logs, self.quorum, s, notifier,
                                       fetchers=self._fetchers, alter_partition=self._alter_partition.submit,
                                       rack_of=self._kafka_rack)
        self._fetchers.attach(self.replica_manager)
        self.controller = Controller(self.quorum, self.cluster, a.broker_id)
        self.controller.start()
        metrics.of(a.broker_id).attach(metrics.LiveBrokerState(self.replica_manager, self.controller, self.quorum))
        self._publisher = MetadataPublisher(self.quorum, self.replica_manager, self._lifecycle.holds_own_registration)
        self._publisher.start()
        self._forwarder = ControllerForwarder(a.broker_id, self.controller, self.quorum, self._client_address,
                                              self._publisher.wait_published)
        self.group_coordinator = GroupCoordinator(a.broker_id, self.replica_manager, self.quorum, s)
        self.group_coordinator.start()
        # Followers' fetch streams get slots of their own: a client port full of streams refuses no follower.
        self._apis = KafkaApis(a.broker_id, self.controller, self.quorum, self.replica_manager, self._forwarder,
                               client_slots=StreamSlots(s.grpc_max_concurrent_streams, a.broker_id),
                               follower_slots=StreamSlots(s.inter_broker_max_concurrent_streams, a.broker_id,
                                                          "inter.broker.max.concurrent.streams"),
                               fetch_max_bytes=s.fetch_max_bytes, drop_produce_answers=FaultBudget.from_env(),
                               auto_create_topics=bool(s.auto_create_topics_enable), settings=s, rack=a.rack,
                               group_coordinator=self.group_coordinator)
        if a.kafka_port:
            self._kafka_listener = self._bind_kafka_listener()
        if a.replication_port:
            self._replication_listener = self._bind_replication_listener()
        kafka_pb2_grpc.add_KafkaServicer_to_server(KafkaServicer(self._apis), self._server)
        replication_pb2_grpc.add_ReplicationServicer_to_server(ReplicationServicer(self._apis),
                                                               self._inter_broker_server)
        controller_pb2_grpc.add_ControllerServicer_to_server(ControllerServicer(self.controller),
                                                             self._inter_broker_server)
        self._inter_broker_server.start()
        if self._replication_listener is not None:
            self._replication_listener.start()
        self._server.start()
        if self._kafka_listener is not None:
            # Kafka's broker enables request processing after its metadata catch-up; until then
            # a Kafka client's connection is refused and it tries another bootstrap broker.
            threading.Thread(target=self._start_kafka_listener, name="kafka-listener-start", daemon=True).start()
        self._lifecycle.start()
        self._gc_pauses.install()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        self._housekeeper.start()
        self._started = True
        log.info("broker_started", open_files_limit=open_files, host=a.host, port=a.port, raft_port=a.raft_port,
                 inter_broker_port=a.inter_broker_port, replication_port=a.replication_port,
                 metrics_port=a.metrics_port, pid=os.getpid(),
                 data_dir=str(a.data_dir), startup_ms=round((time.monotonic() - started) * 1000, 1))

    def _bind_servers(self) -> None:
        """The client server on ``port`` and the inter-broker server on ``inter_broker_port``, each with
        its own threads, call budget and stream slots (Kafka's control plane listener): no client load
        can starve replication, heartbeats or AlterPartition."""
        a, s = self.address, self.settings
        # Client calls wait for the metadata catch-up (readiness.py).
        self._server = _grpc_server(a.host, a.port, "port", s, s.grpc_max_workers, s.grpc_max_concurrent_rpcs,
                                    [ServingGate(a.broker_id, self._caught_up, self._applied_metadata_offset)], [
            # Every client connection ends at this age, with the calls it never finished sending.
            ("grpc.max_connection_age_ms", s.grpc_max_connection_age_ms),
            ("grpc.max_connection_age_grace_ms", s.grpc_max_connection_age_grace_ms)])
        # No connection age here: it would cut followers' fetch streams. Nor is it needed: without the
        # token a call is refused before its request is read (BrokerOnly), so a stranger's half-sent
        # call holds no thread of this server.
        self._inter_broker_server = _grpc_server(
            a.host, a.inter_broker_port, "inter_broker_port", s, s.inter_broker_max_workers,
            s.inter_broker_max_concurrent_rpcs, [BrokerOnly(self._broker_token)], [])

    def _serve_metrics(self) -> None:
        """Bound with the other listeners, before anything is written; its state gauges read nothing until
        the broker's parts exist (metrics.BrokerMetrics.attach)."""
        a = self.address
        if not a.metrics_port:
            return
        try:
            self._metrics_server = metrics.serve(a.host, a.metrics_port, metrics.of(a.broker_id).registry)
        except OSError as e:   # taken between the check and the bind
            raise PortInUseError(f"cannot listen on {a.host}:{a.metrics_port} (metrics_port): {e.strerror}") from None

    def _kafka_address(self, broker_id: int) -> BrokerAddress | None:
        """A broker that Kafka clients can reach (it has a kafka_port), from the cluster file."""
        b = next((b for b in self.cluster.brokers if b.broker_id == broker_id), None)
        return b if b is not None and b.kafka_port else None

    def _kafka_rack(self, broker_id: int) -> str | None:
        b = self._kafka_address(broker_id)
        return b.rack if b is not None else None

    def _bind_kafka_listener(self) -> KafkaListener:
        """Kafka clients get every broker's Kafka listener in Metadata, never a gRPC port. Its long polls
        hold a connection's own thread, so its slots are one per connection."""
        a, s = self.address, self.settings

        def kafka_endpoint(broker_id: int) -> KafkaEndpoint | None:
            b = self._kafka_address(broker_id)
            return KafkaEndpoint(b.host, b.kafka_port, b.rack) if b is not None else None

        handlers = KafkaProtocolHandlers(self._apis, kafka_endpoint,
                                         StreamSlots(s.kafka_max_connections, a.broker_id, "kafka.max.connections"))
        return _bound(KafkaListener(a.host, a.kafka_port, handlers, ListenerLimits(
            s.kafka_max_connections, s.socket_request_max_bytes, s.connections_max_idle_ms)), "kafka_port")

    def _bind_replication_listener(self) -> ReplicationListener:
        a, s = self.address, self.settings
        return _bound(ReplicationListener(a.host, a.replication_port, self._apis, self._broker_token, ListenerLimits(
            s.inter_broker_max_concurrent_streams, s.socket_request_max_bytes, s.connections_max_idle_ms)),
            "replication_port")

    def _replication_route(self, broker_id: int) -> SocketRoute | None:
        """Where this broker's fetch stream to leader ``broker_id`` goes if not over gRPC: its replication_port."""
        b = self.cluster.broker(broker_id)
        return SocketRoute((b.host, b.replication_port), self._broker_token) if b.replication_port else None

    def _start_kafka_listener(self) -> None:
        while not self._stop.wait(0.05):
            if self._caught_up():
                self._kafka_listener.start()
                log.info("kafka_listener_started", host=self.address.host, kafka_port=self.address.kafka_port)
                return

    def _caught_up(self) -> bool:
        """The image holds this process's registration: it has applied the metadata log past everything
        committed before this broker started (readiness.py)."""
        return (self._lifecycle is not None and self.quorum is not None
                and self._lifecycle.holds_own_registration(self.quorum.image))

    def _applied_metadata_offset(self) -> int:
        return self.quorum.image.offset if self.quorum is not None else -1

    def _client_address(self, broker_id: int) -> tuple[str, int]:
        """Where clients reach ``broker_id``; admin requests are forwarded to the controller here too."""
        b = self.cluster.broker(broker_id)
        return b.host, b.port

    def _inter_broker_address(self, broker_id: int) -> tuple[str, int]:
        """Where this broker's own calls to ``broker_id`` go: fetches, heartbeats, AlterPartition."""
        b = self.cluster.broker(broker_id)
        return b.host, b.inter_broker_port

    def _controller_address(self) -> tuple[str, int] | None:
        controller_id = self.quorum.controller_id()
        return self._inter_broker_address(controller_id) if controller_id >= 0 else None

    def _housekeeping(self) -> None:
        """HW checkpoints and retention, on their own intervals, off the request path."""
        next_checkpoint = next_retention = next_isr_check = next_expiry = time.monotonic()
        while not self._stop.wait(0.2):
            now = time.monotonic()
            try:
                self._gc_pauses.tick(now)
                if now >= next_isr_check:
                    # Kafka checks every replica.lag.time.max.ms / 2: a stuck follower leaves after 1x-1.5x.
                    next_isr_check = now + self.settings.replica_lag_time_max_ms / 2000
                    self.replica_manager.maybe_shrink_isr()
                if now >= next_checkpoint:
                    next_checkpoint = now + self.settings.high_watermark_checkpoint_interval_ms / 1000
                    self.replica_manager.checkpoint_high_watermarks()
                if now >= next_expiry:
                    next_expiry = now + PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_S
                    expired = self.replica_manager.remove_expired_producers()
                    if expired:
                        log.info("producer_ids_expired", count=expired)
                if now >= next_retention:
                    next_retention = now + self.settings.log_retention_check_interval_ms / 1000
                    deleted = self.replica_manager.run_retention()
                    if deleted:
                        log.info("retention_ran", segments_deleted=deleted)
            except Exception:  # a storage error must not end checkpoints and retention for good
                log.exception("housekeeping_failed")

    def _on_log_dir_offline(self, failure: LogDirFailure) -> None:
        # On its own thread: the reporting thread is answering the request in hand.
        threading.Thread(target=self._halt, args=(failure,), name="log-dir-failure", daemon=True).start()

    @staticmethod
    def _on_invariant_violated(error: InvariantViolation) -> None:
        """No grace and no answer: the state the answers would come from is wrong."""
        log.critical("broker_halting", reason="invariant_violated", invariant=error.name, error=str(error),
                     exit_code=EXIT_INVARIANT_VIOLATED)
        _exit_now(EXIT_INVARIANT_VIOLATED)

    def _halt(self, failure: LogDirFailure) -> None:
        """Answer what is in flight, then exit without closing anything (Kafka's Exit.halt)."""
        log.error("broker_halting", reason=failure.reason, log_dir=str(failure.log_dir), error=failure.message,
                  exit_code=EXIT_LOG_DIR_FAILURE)
        try:
            self._stop_servers(HALT_GRACE_S)
        except Exception:  # noqa: BLE001 - halting anyway
            log.exception("halt_grace_failed")
        finally:
            _exit_now(EXIT_LOG_DIR_FAILURE)

    def _stop_servers(self, grace_s: float) -> None:
        """Both servers at once: produce and fetch streams end first (their peers reconnect, to the new
        leaders), then the calls in flight get ``grace_s`` to be answered."""
        servers = [server for server in (self._server, self._inter_broker_server) if server is not None]
        if servers and self._apis is not None:
            self._apis.stopping.set()
        if self._kafka_listener is not None:
            self._kafka_listener.stop()
        if self._replication_listener is not None:
            self._replication_listener.stop()
        for stopped in [server.stop(grace=grace_s) for server in servers]:
            stopped.wait(grace_s + 1.0)

    def stop(self) -> None:
        """Graceful stop: controlled shutdown (leaderships move first), refuse new RPCs, close logs cleanly."""
        self._stop.set()
        if self._lifecycle is not None:
            moved = self._lifecycle.controlled_shutdown(timeout_s=1.5)  # bounded: honcho kills at 5 s
            log.info("controlled_shutdown", leaderships_moved=moved)
            self._lifecycle.stop()
        self._stop_servers(grace_s=2.0)
        if self.quorum is not None:
            self.quorum.refuse_commits()   # a commit the controller waits on may never come now
        for part in (self.group_coordinator, self.controller, self._publisher):
            if part is not None:
                part.stop()
        if self._fetchers is not None:
            self._fetchers.shutdown()
        if self._alter_partition is not None:
            self._alter_partition.stop()
        if self._forwarder is not None:
            self._forwarder.close()
        if self._housekeeper is not None:
            self._housekeeper.join()
        self._gc_pauses.uninstall()
        if self.replica_manager is not None:
            self.replica_manager.checkpoint_high_watermarks()
            self.replica_manager.snapshot_producer_states()
        if self.quorum is not None:
            self.quorum.stop()
        if self._logs is not None:
            self._logs.close(clean=True)
        if self._wrote_pid_file:
            self._pid_file.unlink(missing_ok=True)
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self._started:
            log.info("broker_stopped")


def raise_open_files_limit() -> int:
    """Raise this process's limit on open files to the most it may (the hard limit), as Kafka's docs ask of
    its operators: each partition log holds its active segment's file open, plus every connection, so a
    broker hosting thousands of partitions needs thousands of files. Returns the limit now in force (the
    broker_started event tells it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit is capped by the kernel at fs.nr_open: ask for that.
    target = hard if hard != resource.RLIM_INFINITY else _nr_open()
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("open_files_limit_not_raised", limit=soft, hard=hard, error=str(e))
    return soft


def _nr_open() -> int:
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1 << 20   # Linux's default fs.nr_open
