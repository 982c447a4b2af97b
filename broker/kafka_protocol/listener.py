"""The Kafka-protocol listener: Kafka's socket server, in threads.

One accept thread; per connection a reader thread and a writer thread. The reader takes one
size-prefixed request after another and starts serving it (handlers.py; a Produce is appended at
once); the writer sends the answers in the order the requests came, as Kafka does for one
connection. What Kafka's socket server refuses is refused here with one warning line, and the
broker lives on: a frame larger than socket.request.max.bytes or one that does not parse closes
its connection; an unknown API or an unsupported version closes it too (ApiVersions excepted: a
version it does not know is answered at v0 with UNSUPPORTED_VERSION and the list, so the client
can pick again). A connection idle for connections.max.idle.ms, or one that takes longer than that
to send one request, is closed; connections past kafka.max.connections are closed at once.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time

import structlog

from broker.admission import SlotsExhaustedError
from broker.fault_injection import AnswerDroppedForTest
from broker.kafka_protocol import codec
from broker.kafka_protocol.handlers import Answer, Connection, KafkaProtocolHandlers, api_versions_answer
from broker.kafka_protocol.versions import API_VERSIONS, supported
from broker.request_errors import MalformedRequestError
from broker.socket_server import ListenerLimits, SocketServer, shut

log = structlog.get_logger(__name__)

UNSUPPORTED_VERSION = 35
MAX_QUEUED_REQUESTS = 64   # read but not yet answered, per connection; then TCP pushes back
POLL_S = 0.5


class _Idle(socket.timeout):
    """No byte of a next request within connections.max.idle.ms."""


class _Closed(Exception):
    """The peer closed the connection, or it is being closed."""


class KafkaListener(SocketServer):
    def __init__(self, host: str, port: int, handlers: KafkaProtocolHandlers, limits: ListenerLimits):
        super().__init__(host, port, "kafka", limits.max_connections, "kafka.max.connections")
        self._handlers = handlers
        self._limits = limits

    def _connection(self, sock: socket.socket, peer) -> "_KafkaConnection":
        return _KafkaConnection(sock, peer, self)


class _KafkaConnection:
    def __init__(self, sock: socket.socket, peer, listener: KafkaListener):
        self._sock = sock
        self._peer = f"{peer[0]}:{peer[1]}"
        self._listener = listener
        self._limits = listener._limits
        self._answers: queue.Queue = queue.Queue(maxsize=MAX_QUEUED_REQUESTS)
        self._open = threading.Event()
        self._open.set()
        self._info = Connection(call=self, open=self._open.is_set, client_host=f"/{peer[0]}")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def start(self) -> None:
        threading.Thread(target=self._read_loop, name="kafka-read", daemon=True).start()
        threading.Thread(target=self._write_loop, name="kafka-write", daemon=True).start()

    def close(self) -> None:
        if not self._open.is_set():
            return
        self._open.clear()
        shut(self._sock)
        self._listener._closed(self)

    def _refuse(self, reason: str, routine: bool = False) -> None:
        # An idle client's connection closing is routine (Kafka's Selector logs it at debug); a stalled,
        # oversized or unparsable request is worth a warning.
        (log.info if routine else log.warning)("kafka_connection_closed", peer=self._peer, reason=reason)
        self.close()

    # ---- reading ----------------------------------------------------------------------------------

    def _recv_exactly(self, n: int, deadline: float | None) -> bytes:
        chunks, left = [], n
        while left:
            timeout = self._limits.idle_ms / 1000 if deadline is None else deadline - time.monotonic()
            if timeout <= 0:
                raise socket.timeout()
            self._sock.settimeout(timeout)
            try:
                chunk = self._sock.recv(min(left, 1 << 20))
            except socket.timeout:
                if deadline is None:
                    raise _Idle() from None      # not one byte of a next request: an idle connection
                raise
            if not chunk:
                raise _Closed()
            chunks.append(chunk)
            left -= len(chunk)
            if deadline is None:   # the request has begun: the rest must come within the idle bound
                deadline = time.monotonic() + self._limits.idle_ms / 1000
        return b"".join(chunks)

    def _read_loop(self) -> None:
        try:
            while self._open.is_set():
                size, = struct.unpack(">i", self._recv_exactly(4, None))
                if size < 8 or size > self._limits.request_max_bytes:
                    return self._refuse(f"request size {size} is outside 8..{self._limits.request_max_bytes} "
                                        "(socket.request.max.bytes)")
                frame = self._recv_exactly(size, time.monotonic() + self._limits.idle_ms / 1000)
                answer = self._begin(frame)
                if answer is None:
                    return
                if not self._queue(answer):
                    return
        except _Idle:
            self._refuse(f"idle for connections.max.idle.ms ({self._limits.idle_ms} ms)", routine=True)
        except socket.timeout:
            self._refuse(f"a request stalled for connections.max.idle.ms ({self._limits.idle_ms} ms)")
        except (_Closed, OSError):
            self.close()
        except Exception as e:  # noqa: BLE001 - one bad request closes its connection, never the broker
            log.exception("kafka_request_failed", peer=self._peer, error=str(e))
            self.close()
        finally:
            self._queue_end()

    def _begin(self, frame: bytes) -> tuple | None:
        """(api_key, version, correlation_id, answer) for one request, or None after refusing it."""
        try:
            api_key, version, correlation_id = codec.peek_header(frame)
            if api_key == API_VERSIONS and not supported(api_key, version):
                # KIP-511: answer at v0, which every client reads, with the versions we serve.
                return API_VERSIONS, 0, correlation_id, lambda: api_versions_answer(UNSUPPORTED_VERSION)
            if not supported(api_key, version):
                self._refuse(f"api_key {api_key} version {version} is not served on this listener")
                return None
            request = codec.parse_request(frame)
            return api_key, version, correlation_id, self._listener._handlers.begin(api_key, request.body,
                                                                                   self._info, request.client_id)
        except codec.FrameError as e:
            self._refuse(f"a request that does not parse: {e}")
        except MalformedRequestError as e:
            self._refuse(f"a malformed request: {e}")
        return None

    def _queue(self, item) -> bool:
        while self._open.is_set():
            try:
                self._answers.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _queue_end(self) -> None:
        try:
            self._answers.put_nowait(None)
        except queue.Full:
            pass   # the writer sees the connection closed

    # ---- writing, in request order -------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            try:
                item = self._answers.get(timeout=POLL_S)
            except queue.Empty:
                if not self._open.is_set():
                    return
                continue
            if item is None or not self._open.is_set():
                return
            api_key, version, correlation_id, answer = item
            if not self._send(api_key, version, correlation_id, answer):
                return

    def _send(self, api_key: int, version: int, correlation_id: int, answer: Answer) -> bool:
        try:
            values = answer()
            if values is None:
                return True   # acks=0: no response
            frame = codec.encode_response(api_key, version, correlation_id, values)
            self._sock.sendall(frame)
            return True
        except (MalformedRequestError, SlotsExhaustedError) as e:
            self._refuse(f"api_key {api_key} v{version}: {e}")
        except AnswerDroppedForTest:
            self._refuse("test fault: produce answer dropped after the append")
        except OSError:
            self.close()
        except Exception as e:  # noqa: BLE001 - one bad answer closes its connection, never the broker
            log.exception("kafka_answer_failed", peer=self._peer, api_key=api_key, version=version, error=str(e))
            self.close()
        return False
