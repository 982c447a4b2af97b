"""A restarting broker serves clients only once it has caught up with the metadata log.

Kafka's BrokerServer starts its listeners at once but enables request processing
only after the lifecycle manager's initial catch-up with the metadata log. Before
that, a broker's image is whatever its journal replay has reached: a topic it has
not replayed yet looks unknown (UNKNOWN_TOPIC_OR_PARTITION for a live topic), and
an old leadership looks current (itself as leader with a full ISR, long after the
controller fenced it). Both mislead a client, so until then every call on the
client API gets gRPC UNAVAILABLE with one line saying why: retriable, and the
client moves on to another bootstrap broker.

"Caught up" means the image holds this process's own registration, which the
controller committed after everything committed before this broker started. Its
partitions may still be loading then (the publisher hosts them on its own thread,
rebuilding each one's producer state from its log); a Produce or Fetch for one of
those gets NOT_LEADER_OR_FOLLOWER, retriable, for that moment. Metadata and admin
answers are right from the first. Broker-to-broker services are never gated: the
registration that ends the wait goes through them.
"""

from __future__ import annotations

from typing import Callable

import grpc

from broker.inter_broker_auth import refusing
from client.errors import NOT_SERVING_PREFIX

# The client API (package raftka.v1): what a restarting broker must not answer from a stale image.
CLIENT_SERVICES = ("/raftka.v1.Kafka/",)


def not_serving_message(broker_id: int, applied_offset: int) -> str:
    return (f"{NOT_SERVING_PREFIX}: broker {broker_id} is catching up with the metadata log "
            f"(applied offset {applied_offset}); try another broker or retry")


class ServingGate(grpc.ServerInterceptor):
    """Refuses (UNAVAILABLE) client calls until ``caught_up()``; from then on it costs one check."""

    def __init__(self, broker_id: int, caught_up: Callable[[], bool], applied_offset: Callable[[], int]):
        self._broker_id = broker_id
        self._caught_up = caught_up
        self._applied_offset = applied_offset
        self._open = False   # once caught up, for the life of the process

    def intercept_service(self, continuation, handler_call_details):
        if self._open or not handler_call_details.method.startswith(CLIENT_SERVICES):
            return continuation(handler_call_details)
        if self._caught_up():
            self._open = True
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return refusing(handler, grpc.StatusCode.UNAVAILABLE,
                        not_serving_message(self._broker_id, self._applied_offset()))
