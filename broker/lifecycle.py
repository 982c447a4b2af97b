"""The broker's side of liveness (Kafka's BrokerLifecycleManager): register, then heartbeat the controller.

One thread per broker. It registers this process (a new incarnation id per
start) with whichever broker is the controller, then heartbeats it every
broker.heartbeat.interval.ms with its metadata offset; the controller unfences
it once it has caught up. STALE_BROKER_EPOCH (a controller that no longer knows
this incarnation) means register again. On a graceful stop it asks for a
controlled shutdown, so its leaderships move before it goes.
"""

from __future__ import annotations

import threading
import uuid
import grpc
import structlog

from broker.config import ClusterConfig
from broker.metadata.image import MetadataImage
from broker.metadata.quorum import MetadataQuorum
from client.connection import Connections
from client.protocol.v1 import common_pb2, controller_pb2

log = structlog.get_logger(__name__)

NOT_REGISTERED = -1


class BrokerLifecycleManager:
    def __init__(self, cluster: ClusterConfig, broker_id: int, quorum: MetadataQuorum,
                 connections: Connections | None = None):
        self._cluster = cluster
        self.broker_id = broker_id
        self._quorum = quorum
        self._connections = connections or Connections()
        self.incarnation_id = uuid.uuid4().hex
        self.broker_epoch = NOT_REGISTERED
        self.fenced = True
        self._interval_s = cluster.settings.broker_heartbeat_interval_ms / 1000
        self._want_shut_down = False
        self._shut_down_granted = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holds_own_registration(self, image: MetadataImage) -> bool:
        """Whether ``image`` holds this process's registration: then it has caught up with the quorum."""
        reg = image.brokers.get(self.broker_id)
        return reg is not None and reg.incarnation_id == self.incarnation_id

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lifecycle", daemon=True)
        self._thread.start()

    def controlled_shutdown(self, timeout_s: float) -> bool:
        """Ask the controller to move this broker's leaderships away; True once it agreed."""
        if self.broker_epoch == NOT_REGISTERED or self._stop.is_set():
            return False
        self._want_shut_down = True
        return self._shut_down_granted.wait(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._connections.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self._interval_s
            try:
                wait = self._beat()
            except Exception:  # keep beating whatever one round did
                log.exception("heartbeat_round_failed")
            self._stop.wait(wait)

    def _controller_stub(self):
        controller_id = self._quorum.controller_id()
        if controller_id < 0:
            return None
        b = self._cluster.broker(controller_id)
        # Its inter-broker port: heartbeats never queue behind client calls, so client load cannot fence us.
        return self._connections.controller((b.host, b.inter_broker_port))

    def _beat(self) -> float:
        """One registration or heartbeat; returns how long to wait before the next."""
        stub = self._controller_stub()
        if stub is None:
            return 0.05  # no controller known yet: an election is running
        timeout = max(self._interval_s * 4, 1.0)
        try:
            if self.broker_epoch == NOT_REGISTERED:
                return self._register(stub, timeout)
            return self._heartbeat(stub, timeout)
        except grpc.RpcError as e:
            log.debug("controller_unreachable", code=str(e.code()))
            return 0.1

    def _register(self, stub, timeout: float) -> float:
        me = self._cluster.broker(self.broker_id)
        r = stub.BrokerRegistration(controller_pb2.BrokerRegistrationRequest(
            broker_id=self.broker_id, cluster_id=self._cluster.cluster_id, incarnation_id=self.incarnation_id,
            host=me.host, port=me.port), timeout=timeout)
        if r.error_code != common_pb2.NONE:
            log.info("registration_refused", error=common_pb2.ErrorCode.Name(r.error_code), message=r.error_message)
            return 0.1 if r.error_code in (common_pb2.NOT_CONTROLLER, common_pb2.REQUEST_TIMED_OUT) else 1.0
        self.broker_epoch = r.broker_epoch
        log.info("broker_registration_accepted", broker_epoch=r.broker_epoch, incarnation_id=self.incarnation_id)
        return 0.0  # heartbeat at once: that is what gets us unfenced

    def _heartbeat(self, stub, timeout: float) -> float:
        r = stub.BrokerHeartbeat(controller_pb2.BrokerHeartbeatRequest(
            broker_id=self.broker_id, broker_epoch=self.broker_epoch,
            metadata_offset=self._quorum.image.offset, want_shut_down=self._want_shut_down), timeout=timeout)
        if r.error_code == common_pb2.STALE_BROKER_EPOCH:
            log.info("broker_epoch_stale", broker_epoch=self.broker_epoch)
            self.broker_epoch = NOT_REGISTERED
            return 0.0
        if r.error_code != common_pb2.NONE:
            return 0.1  # NOT_CONTROLLER: the controller moved; ask the new one soon
        if r.is_fenced != self.fenced:
            self.fenced = r.is_fenced
            log.info("broker_fenced_state", fenced=r.is_fenced)
        if r.should_shut_down:
            self._shut_down_granted.set()
            self._stop.set()
        return self._interval_s
