"""Admin requests reach the active controller from any broker (Kafka's ForwardingManager).

Any broker takes CreateTopics, DeleteTopics, CreatePartitions, ElectLeaders and InitProducerId. The active
controller answers them itself; another broker forwards the request once, marked as forwarded so the
receiver never forwards it again, and retries while the controller moves until the request's deadline.
After a success it waits (briefly) until its own image shows the change, so a Metadata, Produce or
Fetch sent to this broker right after sees it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

import grpc
import structlog

from broker import grpc_translate as wire
from broker.controller import Controller
from broker.metadata.image import MetadataImage
from broker.metadata.quorum import MetadataQuorum
from client.connection import Connections
from client.errors import KafkaError, NotControllerError, RequestTimedOutError

log = structlog.get_logger(__name__)

R = TypeVar("R")

# Set on a request one broker forwards to the controller: the receiver must not forward it again.
FORWARDED_HEADER = "raftka-forwarded-by"
RETRY_BACKOFF_S = 0.05
# How long a success waits for this broker's image to show the change.
SETTLE_WAIT_MAX_S = 2.0

# The wire of a forwarded request: (encode the plain request, decode the controller's answer).
_WIRE: dict[str, tuple[Callable, Callable]] = {
    "CreateTopics": (wire.create_topics_request_pb, wire.topics_response),
    "DeleteTopics": (wire.delete_topics_request_pb, wire.topics_response),
    "CreatePartitions": (wire.create_partitions_request_pb, wire.topics_response),
    "ElectLeaders": (wire.elect_leaders_request_pb, wire.elect_leaders_response),
    "InitProducerId": (wire.init_producer_id_request_pb, wire.init_producer_id_response),
}


@dataclass(frozen=True)
class AdminCall(Generic[R]):
    """One admin request, as the forwarder runs it."""
    method: str                                  # a key of _WIRE: the Kafka service's method
    request: object                              # the plain request (forwarded as it is)
    handle: Callable[[], R]                      # answers it on this broker, the active controller
    refuse: Callable[[KafkaError], R]            # the answer when no controller took it
    settled: Callable[[MetadataImage], bool]     # this broker's image shows the change


def refused_as_not_controller(answer) -> bool:
    """An answer that says its broker was not (or no longer) the controller: try again."""
    if isinstance(getattr(answer, "error", None), NotControllerError):
        return True
    outcomes = list(getattr(answer, "outcomes", []))
    return bool(outcomes) and all(isinstance(o.error, NotControllerError) for o in outcomes)


class ControllerForwarder:
    def __init__(self, broker_id: int, controller: Controller, quorum: MetadataQuorum,
                 broker_address: Callable[[int], tuple[str, int]],
                 wait_published: Callable[[Callable[[MetadataImage], bool], float], bool]):
        self._broker_id = broker_id
        self._controller = controller
        self._quorum = quorum
        self._broker_address = broker_address
        self._wait_published = wait_published
        self._connections = Connections()

    def close(self) -> None:
        self._connections.close()

    def run(self, call: AdminCall[R], timeout_s: float, forwarded: bool) -> R:
        """Answer ``call`` on the active controller, here or there, within ``timeout_s``.

        ``forwarded``: another broker sent it here; if this one is not the controller, it says so
        (NOT_CONTROLLER) and the sender looks again."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._controller.is_active():
                answer = call.handle()
                self._settle(call, deadline)
                return answer
            if forwarded:
                return call.refuse(NotControllerError(f"Broker {self._broker_id} is not the active controller."))
            controller_id = self._quorum.controller_id()
            left = deadline - time.monotonic()
            if controller_id >= 0 and controller_id != self._broker_id and left > 0:
                answer = self._forward(controller_id, call, left)
                if answer is not None and not refused_as_not_controller(answer):
                    self._settle(call, deadline)
                    return answer
            if time.monotonic() >= deadline:
                return call.refuse(RequestTimedOutError(
                    f"No active controller answered within {timeout_s:.0f} s (is a majority of brokers up?)."))
            time.sleep(RETRY_BACKOFF_S)

    def _settle(self, call: AdminCall, deadline: float) -> None:
        self._wait_published(call.settled, min(SETTLE_WAIT_MAX_S, max(deadline - time.monotonic(), 0.0)))

    def _forward(self, controller_id: int, call: AdminCall[R], timeout_s: float) -> R | None:
        encode, decode = _WIRE[call.method]
        stub = self._connections.kafka(self._broker_address(controller_id))
        try:
            answer = getattr(stub, call.method)(encode(call.request), timeout=timeout_s,
                                                metadata=[(FORWARDED_HEADER, str(self._broker_id))])
        except grpc.RpcError as e:
            log.debug("forward_failed", method=call.method, controller=controller_id, code=str(e.code()))
            return None
        return decode(answer)
