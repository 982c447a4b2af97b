"""The core every public class shares: bootstrap, metadata refresh, calls with error mapping, tracing."""

from __future__ import annotations

import random
import threading
import time

import grpc

from client.connection import Address, Connections, format_address, parse_bootstrap
from client.errors import (NOT_SERVING_PREFIX, BrokerBusyError, BrokerNotReadyError, InvalidRequestError,
                           KafkaConnectionError, KafkaError, LeaderHintInfo, LeaderNotAvailableError,
                           NoBrokersAvailable, RequestTimedOutError, UnknownTopicOrPartitionError)
from client.metadata import ClusterMetadata
from client.protocol.v1 import kafka_pb2
from client.trace import TraceEvent, Tracer

METADATA_TIMEOUT_S = 5.0


def backoff_s(attempt: int, base_ms: int, max_ms: int) -> float:
    """Exponential backoff with 20 % jitter (Kafka's KIP-580)."""
    ms = min(base_ms * (2 ** max(attempt - 1, 0)), max_ms)
    return ms * random.uniform(0.8, 1.2) / 1000


def hint_from_proto(hint) -> LeaderHintInfo | None:
    if hint is None or not hint.HasField("endpoint") or hint.leader_id < 0:
        return None
    return LeaderHintInfo(hint.leader_id, hint.leader_epoch, hint.endpoint.host, hint.endpoint.port)


class KafkaClient:
    def __init__(self, bootstrap: str, request_timeout_ms: int = 30000, tracer: Tracer | None = None,
                 metadata_max_age_ms: int = 300000):
        self.bootstrap: list[Address] = parse_bootstrap(bootstrap)
        self.request_timeout_s = request_timeout_ms / 1000
        self.connections = Connections()
        self.metadata = ClusterMetadata()
        self.tracer = tracer
        self._refresh_lock = threading.Lock()
        # metadata.max.age.ms: refresh even without an error, so new brokers and moved leaders show up.
        self.metadata_max_age_s = metadata_max_age_ms / 1000
        self._refreshed_at = float("-inf")

    # ---- tracing ------------------------------------------------------------------

    def trace(self, kind: str, api: str, address: Address, broker_id: int | None, detail: str) -> None:
        if self.tracer is not None:
            self.tracer(TraceEvent(kind, api, format_address(address), broker_id, detail))

    def broker_id_of(self, address: Address) -> int | None:
        for b in list(self.metadata.brokers.values()):
            if b.address == address:
                return b.broker_id
        return None

    # ---- calls --------------------------------------------------------------------

    def call(self, address: Address, api: str, request, timeout_s: float | None = None,
             detail: str = ""):
        """One unary RPC; gRPC failures become KafkaErrors (connection errors are retriable)."""
        broker_id = self.broker_id_of(address)
        self.trace("request", api, address, broker_id, detail or api)
        stub = self.connections.kafka(address)
        try:
            return getattr(stub, api)(request, timeout=timeout_s or self.request_timeout_s)
        except grpc.RpcError as e:
            error = self.map_rpc_error(e, address)
            self.trace("error", api, address, broker_id, str(error))
            raise error from None

    @staticmethod
    def map_rpc_error(e: grpc.RpcError, address: Address) -> KafkaError:
        code, where = e.code(), format_address(address)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return RequestTimedOutError(f"no answer from {where} before the request timeout")
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
            return InvalidRequestError(f"{where} refused the request: {e.details()}")
        if code == grpc.StatusCode.UNAVAILABLE:
            if (e.details() or "").startswith(NOT_SERVING_PREFIX):
                return BrokerNotReadyError(f"broker at {where} is {e.details()}")
            return KafkaConnectionError(f"broker at {where} is unreachable")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" not in (e.details() or ""):
            # A broker limit on calls in progress; gRPC's message-size check (grpc.max.message.bytes)
            # says "larger than max" and stays a connection error: on a stream it is not one batch's fault.
            return BrokerBusyError(f"{where} is busy: {e.details()}")
        return KafkaConnectionError(f"call to {where} failed: {code.name} {e.details()}")

    # ---- metadata -----------------------------------------------------------------

    def candidate_addresses(self) -> list[Address]:
        """Known live brokers first (in random order, to spread load), then the bootstrap list."""
        known = [b.address for b in self.metadata.brokers.values() if b.alive]
        random.shuffle(known)
        return known + [a for a in self.bootstrap if a not in known]

    def refresh_metadata(self, topics: list[str] | None = None):
        """Ask any reachable broker; NoBrokersAvailable naming every address tried."""
        with self._refresh_lock:
            tried = []
            for address in self.candidate_addresses():
                tried.append(format_address(address))
                try:
                    response = self.call(address, "Metadata", kafka_pb2.MetadataRequest(topics=topics or []),
                                         timeout_s=min(METADATA_TIMEOUT_S, self.request_timeout_s),
                                         detail=f"who leads {', '.join(topics) if topics else 'all topics'}?")
                except KafkaError:
                    continue
                self.metadata.update(response)
                self._refreshed_at = time.monotonic()
                self.trace("response", "Metadata", address, response.answered_by, _describe_metadata(response))
                return response
            raise NoBrokersAvailable(f"could not reach any broker (tried {', '.join(tried)})")

    def ensure_topic(self, topic: str):
        """TopicInfo for ``topic`` (refreshing once if unknown); UnknownTopicOrPartitionError if none."""
        info = self.metadata.topics.get(topic)
        if info is None:
            self.refresh_metadata([topic])
            info = self.metadata.topics.get(topic)
        if info is None:
            raise UnknownTopicOrPartitionError(f"Topic '{topic}' does not exist.")
        return info

    def leader_for(self, topic: str, partition: int) -> tuple[int, Address]:
        if time.monotonic() - self._refreshed_at > self.metadata_max_age_s and self.metadata.topics:
            try:
                self.refresh_metadata(sorted(self.metadata.topics))
            except KafkaError:
                self._refreshed_at = time.monotonic()  # unreachable now: errors will trigger the next refresh
        info = self.metadata.partition(topic, partition)
        if info is None:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} is not in the metadata")
        address = self.metadata.broker_address(info.leader)
        if info.leader < 0 or address is None:
            raise LeaderNotAvailableError(f"{topic}-{partition} has no leader right now")
        return info.leader, address

    def close(self) -> None:
        self.connections.close()


def _describe_metadata(response) -> str:
    parts = []
    for t in response.topics:
        if t.error_code:
            parts.append(f"topic {t.name}: unknown")
            continue
        leaders = ", ".join(f"p{p.partition} leader {p.leader_id} epoch {p.leader_epoch}" for p in t.partitions)
        parts.append(f"topic {t.name}: {leaders}")
    brokers = ", ".join(f"{b.broker_id}={b.host}:{b.port}" for b in response.brokers)
    return "; ".join([f"brokers {brokers}", *parts]) if parts else f"brokers {brokers}"
