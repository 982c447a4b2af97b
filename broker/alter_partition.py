"""Sends partition leaders' ISR changes to the controller (Kafka's AlterPartitionManager).

The replica manager decides (partition.py: isr_to_expand / isr_to_shrink) and
marks the change pending; this thread sends it, off the fetch and produce
paths. The new ISR takes effect only when the committed metadata comes back
through the publisher. Until then the HW counts the larger of the two ISRs.

What an answer proves decides what happens to the pending change (Kafka's
Partition.handleAlterPartitionError), because a change whose outcome is unknown
may still commit: the RPC deadline equals the controller's commit timeout, so a
REQUEST_TIMED_OUT or a lost answer can be followed by the commit. Dropping the
pending change then would let the HW stop counting a joiner that the late commit
makes an ISR member, and the controller may elect it: acked writes lost. So:
- not applied, proven (INELIGIBLE_REPLICA): the pending change is dropped, and the
  next check decides again from fresh state;
- refused because the partition moved on (FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION,
  UNKNOWN_TOPIC_OR_PARTITION, INVALID_REQUEST): kept until the newer partition epoch
  arrives in metadata (which clears it), never resent;
- unknown (no answer, REQUEST_TIMED_OUT, NOT_CONTROLLER, STALE_BROKER_EPOCH, no
  controller yet): kept and resent, with backoff, while it is still the pending change.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import grpc
import structlog

from broker.logging_setup import log_partitions
from client.connection import Address, Connections
from client.protocol.v1 import common_pb2, controller_pb2

log = structlog.get_logger(__name__)

_STOP = object()
RETRY_BACKOFF_S = (0.05, 1.0)   # first and largest wait before resending a change of unknown outcome
# Changes sent in one AlterPartition (Kafka's request carries many partitions too): every change that is
# ready when a request leaves goes with it, so a broker rejoining thousands of ISRs costs a few commits.
MAX_CHANGES_PER_REQUEST = 1000


class AlterOutcome(enum.Enum):
    COMMITTED = "committed"
    NOT_APPLIED = "not_applied"          # proven not applied: drop the pending change
    AWAIT_METADATA = "await_metadata"    # the partition moved on: the newer epoch will clear it
    UNKNOWN = "unknown"                  # may still commit: keep it and resend


_NOT_APPLIED = frozenset({common_pb2.INELIGIBLE_REPLICA})
_AWAIT_METADATA = frozenset({common_pb2.FENCED_LEADER_EPOCH, common_pb2.INVALID_UPDATE_VERSION,
                             common_pb2.UNKNOWN_TOPIC_OR_PARTITION, common_pb2.INVALID_REQUEST})


def outcome_of(error_code: int | None) -> AlterOutcome:
    """What an AlterPartition answer proves; None = no answer at all."""
    if error_code == common_pb2.NONE:
        return AlterOutcome.COMMITTED
    if error_code in _NOT_APPLIED:
        return AlterOutcome.NOT_APPLIED
    if error_code in _AWAIT_METADATA:
        return AlterOutcome.AWAIT_METADATA
    return AlterOutcome.UNKNOWN


@dataclass
class AlterItem:
    request: dict
    on_not_applied: Callable[[], None]     # drops the pending change
    still_pending: Callable[[], bool]      # is this request still the partition's pending change?
    attempt: int = 0


class AlterPartitionManager:
    def __init__(self, broker_id: int, broker_epoch: Callable[[], int], controller_address: Callable[[], Address | None],
                 timeout_s: float = 5.0, connections: Connections | None = None):
        self.broker_id = broker_id
        self._broker_epoch = broker_epoch
        self._controller_address = controller_address
        self._timeout_s = timeout_s
        self._queue: queue.Queue = queue.Queue()
        self._retries: list[tuple[float, int, AlterItem]] = []   # (due, tie-breaker, item): a heap
        self._order = itertools.count()
        self._stopping = threading.Event()
        self._connections = connections or Connections()
        self._thread = threading.Thread(target=self._run, name="alter-partition", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()   # before any resend that is due: a stopping broker sends nothing more
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        self._connections.close()

    @property
    def resends_scheduled(self) -> int:
        """Changes of unknown outcome waiting to be resent."""
        return len(self._retries)

    def submit(self, request: dict, on_not_applied: Callable[[], None], still_pending: Callable[[], bool]) -> None:
        self._queue.put(AlterItem(request, on_not_applied, still_pending))

    def _next(self) -> object:
        """The next item to send: a new one, or a retry that is due."""
        while True:
            if self._stopping.is_set():
                return _STOP
            if self._retries and self._retries[0][0] <= time.monotonic():
                return heapq.heappop(self._retries)[2]
            wait = self._retries[0][0] - time.monotonic() if self._retries else None
            try:
                return self._queue.get(timeout=wait)
            except queue.Empty:
                continue

    def _run(self) -> None:
        while True:
            first = self._next()
            if first is _STOP:
                return
            items = self._pending(self._with_ready(first))
            if self._stopping.is_set():
                return
            if not items:
                continue
            try:
                outcomes = self._send(items)
            except Exception:  # never let one request end ISR changes for good
                log.exception("alter_partition_failed", partitions=len(items))
                outcomes = [AlterOutcome.UNKNOWN] * len(items)
            for item, outcome in zip(items, outcomes):
                self._settle(item, outcome)

    def _with_ready(self, first: AlterItem) -> list[AlterItem]:
        """``first`` and every other change ready now (new ones, resends that are due), up to a request's worth."""
        items = [first]
        while len(items) < MAX_CHANGES_PER_REQUEST:
            if self._retries and self._retries[0][0] <= time.monotonic():
                items.append(heapq.heappop(self._retries)[2])
                continue
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)   # seen again by _next, after this round
                break
            items.append(item)
        return items

    @staticmethod
    def _pending(items: list[AlterItem]) -> list[AlterItem]:
        """The changes still pending, one per partition (the newest): metadata may have moved on meanwhile
        (a newer partition epoch: nothing left to decide), and a request names each partition once."""
        latest: dict[tuple[str, int], AlterItem] = {}
        for item in items:
            if item.still_pending():
                latest[(item.request["topic"], item.request["partition"])] = item
        return list(latest.values())

    def _settle(self, item: AlterItem, outcome: AlterOutcome) -> None:
        if outcome is AlterOutcome.NOT_APPLIED:
            item.on_not_applied()
        elif outcome is AlterOutcome.UNKNOWN:
            item.attempt += 1
            backoff = min(RETRY_BACKOFF_S[0] * 2 ** (item.attempt - 1), RETRY_BACKOFF_S[1])
            heapq.heappush(self._retries, (time.monotonic() + backoff, next(self._order), item))

    def _send(self, items: list[AlterItem]) -> list[AlterOutcome]:
        """One AlterPartition for ``items``; the outcome of each, in order."""
        unknown = [AlterOutcome.UNKNOWN] * len(items)
        address = self._controller_address()
        if address is None:
            return unknown
        request = controller_pb2.AlterPartitionRequest(
            broker_id=self.broker_id, broker_epoch=self._broker_epoch(),
            partitions=[controller_pb2.PartitionIsrChange(**item.request) for item in items])
        try:
            r = self._connections.controller(address).AlterPartition(request, timeout=self._timeout_s)
        except grpc.RpcError as e:
            log.info("alter_partition_unanswered", partitions=len(items), code=str(e.code()))
            return unknown
        if r.error_code != common_pb2.NONE or len(r.partitions) != len(items):
            # The request as a whole (NOT_CONTROLLER, REQUEST_TIMED_OUT): each change may still apply.
            log.info("alter_partition_unsettled", partitions=len(items), answered=len(r.partitions),
                     error=common_pb2.ErrorCode.Name(r.error_code), message=r.error_message)
            return [outcome_of(r.error_code) if r.error_code != common_pb2.NONE else AlterOutcome.UNKNOWN] * len(items)
        outcomes = [self._outcome(item.request, result) for item, result in zip(items, r.partitions)]
        log_partitions(log, "alter_partition_committed", "alter_partitions_committed", [
            dict(topic=item.request["topic"], partition=item.request["partition"], isr=list(result.isr),
                 partition_epoch=result.partition_epoch)
            for item, result, outcome in zip(items, r.partitions, outcomes) if outcome is AlterOutcome.COMMITTED])
        return outcomes

    @staticmethod
    def _outcome(request: dict, result: controller_pb2.PartitionIsrResult) -> AlterOutcome:
        outcome = outcome_of(result.error_code)
        if outcome is not AlterOutcome.COMMITTED:
            log.info("alter_partition_refused", topic=request["topic"], partition=request["partition"],
                     error=common_pb2.ErrorCode.Name(result.error_code), message=result.error_message,
                     outcome=outcome.value)
        return outcome
