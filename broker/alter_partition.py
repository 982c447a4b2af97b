"""Sends partition leaders' ISR changes to the controller (Kafka's AlterPartitionManager).

The replica manager decides (partition.py: isr_to_expand / isr_to_shrink) and
marks the change pending; this thread sends it, off the fetch and produce
paths. The new ISR takes effect only when the committed metadata comes back
through the publisher. A refusal or a lost answer clears the pending change, so
the next check decides again from fresh state.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

import grpc
import structlog

from client.connection import Address, Connections
from client.protocol.v1 import common_pb2, controller_pb2

log = structlog.get_logger(__name__)

_STOP = object()


class AlterPartitionManager:
    def __init__(self, broker_id: int, broker_epoch: Callable[[], int], controller_address: Callable[[], Address | None],
                 timeout_s: float = 5.0, connections: Connections | None = None):
        self.broker_id = broker_id
        self._broker_epoch = broker_epoch
        self._controller_address = controller_address
        self._timeout_s = timeout_s
        self._queue: queue.Queue = queue.Queue()
        self._connections = connections or Connections()
        self._thread = threading.Thread(target=self._run, name="alter-partition", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        self._connections.close()

    def submit(self, request: dict, on_error: Callable[[], None]) -> None:
        self._queue.put((request, on_error))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            request, on_error = item
            try:
                ok = self._send(request)
            except Exception:  # never let one request end ISR changes for good
                log.exception("alter_partition_failed", topic=request["topic"], partition=request["partition"])
                ok = False
            if not ok:
                on_error()

    def _send(self, request: dict) -> bool:
        address = self._controller_address()
        if address is None:
            return False
        try:
            r = self._connections.controller(address).AlterPartition(controller_pb2.AlterPartitionRequest(
                broker_id=self.broker_id, broker_epoch=self._broker_epoch(), **request), timeout=self._timeout_s)
        except grpc.RpcError as e:
            log.info("alter_partition_unanswered", topic=request["topic"], partition=request["partition"],
                     code=str(e.code()))
            return False
        if r.error_code != common_pb2.NONE:
            log.info("alter_partition_refused", topic=request["topic"], partition=request["partition"],
                     error=common_pb2.ErrorCode.Name(r.error_code), message=r.error_message)
            return False
        log.info("alter_partition_committed", topic=request["topic"], partition=request["partition"],
                 isr=list(r.isr), partition_epoch=r.partition_epoch)
        return True
