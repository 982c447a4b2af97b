"""A listening socket served by threads: one accept thread, each connection served by its own.

The Kafka-protocol listener (kafka_protocol/listener.py) and the replication listener
(replication_socket.py) share it: bind early (the port is held, nothing is accepted), start when the
broker can serve, refuse connections past a limit at once, close every connection at stop.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ListenerLimits:
    max_connections: int
    request_max_bytes: int     # socket.request.max.bytes
    idle_ms: int               # connections.max.idle.ms


def shut(sock: socket.socket) -> None:
    """Shut both directions (a thread blocked reading it wakes up), then close; safe to repeat."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class ServedConnection(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


class SocketServer:
    """Subclasses make a connection of each accepted socket (``_connection``); ``name`` goes into the
    thread's name and the refusal event (``<name>_connection_refused``)."""

    def __init__(self, host: str, port: int, name: str, max_connections: int, limit_setting: str):
        self.host, self.port = host, port
        self._name = name
        self._max_connections = max_connections
        self._limit_setting = limit_setting   # the setting that raises the limit, for the refusal's line
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._connections: set[ServedConnection] = set()
        self._stopping = threading.Event()

    def _connection(self, sock: socket.socket, peer) -> ServedConnection:
        raise NotImplementedError

    def bind(self) -> None:
        """Hold the port; nothing connects until start() (a connection is refused, not queued)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        self._socket = s

    def start(self) -> None:
        self._socket.listen(128)
        threading.Thread(target=self._accept, name=f"{self._name}-accept", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        if self._socket is not None:
            shut(self._socket)
        with self._lock:
            connections = list(self._connections)
        for c in connections:
            c.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, peer = self._socket.accept()
            except OSError:
                return   # the listening socket was closed: stopping
            with self._lock:
                full = len(self._connections) >= self._max_connections
                conn = None if full else self._connection(sock, peer)
                if conn is not None:
                    self._connections.add(conn)
            if conn is None:
                log.warning(f"{self._name}_connection_refused", peer=f"{peer[0]}:{peer[1]}",
                            reason=f"{self._limit_setting} ({self._max_connections}) reached")
                sock.close()
                continue
            conn.start()

    def _closed(self, conn: ServedConnection) -> None:
        with self._lock:
            self._connections.discard(conn)
