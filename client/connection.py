"""Addresses and gRPC channels: one long-lived channel per broker, shared by every thread."""

from __future__ import annotations

import threading
from typing import Callable

import grpc

from client.errors import InvalidRequestError
from client.protocol.v1 import controller_pb2_grpc, kafka_pb2_grpc, replication_pb2_grpc

Address = tuple[str, int]

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect fast to a restarted broker (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),  # retries are the client library's decision, with its flags
]


def parse_bootstrap(bootstrap: str) -> list[Address]:
    """``":9092,host:19092"`` -> [("127.0.0.1", 9092), ("host", 19092)]; ":port" means localhost."""
    out: list[Address] = []
    for part in bootstrap.split(","):
        part = part.strip()
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep:
            raise InvalidRequestError(f"bootstrap address {part!r} has no port (expected host:port or :port)")
        host = host.strip("[]") or "127.0.0.1"
        if host == "localhost":
            host = "127.0.0.1"  # loopback by default; avoids an IPv6 ::1 attempt
        try:
            port_number = int(port)
        except ValueError:
            raise InvalidRequestError(f"bootstrap address {part!r} has a bad port {port!r}") from None
        if not 0 < port_number < 65536:
            raise InvalidRequestError(f"bootstrap address {part!r}: port out of range")
        out.append((host, port_number))
    if not out:
        raise InvalidRequestError(f"no bootstrap address in {bootstrap!r}")
    return out


def format_address(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


class Connections:
    """Channels and stubs per broker address, created once and reused."""

    def __init__(self, wrap: "Callable[[grpc.Channel], grpc.Channel] | None" = None) -> None:
        # ``wrap``: e.g. interceptors that add call metadata (a broker's token on its calls to peers).
        self._wrap = wrap
        self._lock = threading.Lock()
        self._channels: dict[Address, grpc.Channel] = {}
        self._stubs: dict[tuple[type, Address], object] = {}

    def _channel(self, address: Address) -> grpc.Channel:
        channel = self._channels.get(address)
        if channel is None:
            with self._lock:
                channel = self._channels.get(address)
                if channel is None:
                    channel = grpc.insecure_channel(format_address(address), options=CHANNEL_OPTIONS)
                    if self._wrap is not None:
                        channel = self._wrap(channel)
                    self._channels[address] = channel
        return channel

    def _stub(self, stub_class: type, address: Address):
        stub = self._stubs.get((stub_class, address))
        if stub is None:
            stub = self._stubs[(stub_class, address)] = stub_class(self._channel(address))
        return stub

    def kafka(self, address: Address) -> kafka_pb2_grpc.KafkaStub:
        return self._stub(kafka_pb2_grpc.KafkaStub, address)

    def replication(self, address: Address) -> replication_pb2_grpc.ReplicationStub:
        return self._stub(replication_pb2_grpc.ReplicationStub, address)

    def controller(self, address: Address) -> controller_pb2_grpc.ControllerStub:
        """The broker-to-controller API (brokers only)."""
        return self._stub(controller_pb2_grpc.ControllerStub, address)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            self._stubs.clear()
