"""Followers' fetch streams over a plain TCP socket: the replication listener, on ``replication_port``.

Why not gRPC: an acks=all write crosses four one-way hops (producer to leader, leader to followers,
followers' next fetch back, ack) and grpcio's Python layer costs 0.25-0.37 ms per hop here, where a
blocking socket's whole round trip between two processes costs 0.06 ms. Kafka's followers speak its own
binary protocol on the inter-broker listener; this is the same idea with raftka's replication messages.
The semantics are ReplicaFetchStream's (KafkaApis.replica_fetch_stream): lock step, a fetch session
(KIP-227) per connection, a slot among inter.broker.max.concurrent.streams. Without a replication_port
in the cluster file, followers use ReplicaFetchStream on inter_broker_port.

Every frame is a 4-byte big-endian length (of what follows it), a kind byte, then the body:
  HELLO    follower -> leader, first, within HELLO_TIMEOUT_S: the cluster's broker token (inter_broker_auth)
  FETCH    follower -> leader: a FetchRequest (client/protocol/v1, as on ReplicaFetchStream)
  ANSWER   leader -> follower: its FetchResponse, one per FETCH, in order
  REFUSED  leader -> follower, last: one line saying why; the leader then closes the connection
A wrong token, a frame past socket.request.max.bytes, a kind out of place or a body that does not parse
is refused with one warning line; the connection closes and the broker lives on.
"""

from __future__ import annotations

import hmac
import math
import os
import select
import socket
import struct
import threading
import time
from typing import Iterator

import structlog
from google.protobuf.message import DecodeError

from broker import grpc_translate as wire
from broker.admission import SlotsExhaustedError
from broker.delayed_fetch import DelayedFetch
from broker.api_messages import FetchRequest
from broker.inter_broker_auth import REFUSAL
from broker.kafka_apis import KafkaApis
from broker.request_errors import MalformedRequestError
from broker.socket_server import ListenerLimits, SocketServer, shut
from client.bidi_stream import StreamEnded
from client.protocol.v1 import kafka_pb2

log = structlog.get_logger(__name__)

HELLO, FETCH, ANSWER, REFUSED = 1, 2, 3, 4
_HEADER = struct.Struct(">IB")   # the length of kind + body, the kind
HELLO_TIMEOUT_S = 5.0
MAX_HELLO_BYTES = 256
MAX_ANSWER_BYTES = 1 << 30       # a follower's bound on one answer: far above replica.fetch.response.max.bytes
CONNECT_TIMEOUT_S = 3.0
PEER_CHECK_INTERVAL_S = 0.2
_SMALL = 64 * 1024               # a body below this goes out in one write with its header


class FrameError(Exception):
    """A frame this side will not read: its length is out of bounds."""


def send_frame(sock: socket.socket, kind: int, body: bytes) -> None:
    header = _HEADER.pack(len(body) + 1, kind)
    # A large body is not concatenated: that would copy a megabyte answer once more.
    send_rest(sock, (b"", header + body) if len(body) < _SMALL else (header, body))


def send_frame_now(sock: socket.socket, kind: int, body: bytes) -> tuple[bytes, bytes]:
    """Send what of a small frame the socket takes without blocking; (header, body) left to send_rest."""
    header = _HEADER.pack(len(body) + 1, kind)
    if len(body) >= _SMALL:
        return header, body
    frame = header + body
    try:
        sent = sock.send(frame, socket.MSG_DONTWAIT)
    except BlockingIOError:
        sent = 0
    return b"", frame[sent:]


def send_rest(sock: socket.socket, rest: tuple[bytes, bytes]) -> None:
    for part in rest:
        if part:
            sock.sendall(part)


def set_timeouts(sock: socket.socket, timeout_s: float) -> None:
    """Bound each blocking read and write by ``timeout_s`` in the kernel (SO_RCVTIMEO, SO_SNDTIMEO): it then
    fails with EAGAIN (an OSError). Not Python's settimeout, which polls before every call: two system calls
    where one does, and each lets another thread take the GIL, on every hop of every acks=all write."""
    sock.settimeout(None)
    seconds = int(timeout_s)
    timeval = struct.pack("ll", seconds, int((timeout_s - seconds) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


class FrameReader:
    """The frames coming in on one blocking socket. Each recv takes what the kernel has, so a frame's header
    and body usually come in one call; a large body is read straight into a buffer of its size."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buf = bytearray()

    def next(self, max_body: int) -> tuple[int, bytes | bytearray]:
        """(kind, body); EOFError when the peer closed, OSError (EAGAIN) past the socket's timeout."""
        while len(self._buf) < _HEADER.size:
            self._fill()
        length, kind = _HEADER.unpack_from(self._buf)
        if length < 1 or length - 1 > max_body:
            raise FrameError(f"a frame of {length} bytes is outside 1..{max_body + 1}")
        end = 4 + length
        if end - len(self._buf) > _SMALL:
            return kind, self._read_large(end)
        while len(self._buf) < end:
            self._fill()
        body = bytes(memoryview(self._buf)[_HEADER.size:end])
        del self._buf[:end]
        return kind, body

    def _fill(self) -> None:
        chunk = self._sock.recv(_SMALL)
        if not chunk:
            raise EOFError("the peer closed the connection")
        self._buf += chunk

    def _read_large(self, end: int) -> bytearray:
        body = bytearray(end - _HEADER.size)
        have = len(self._buf) - _HEADER.size
        body[:have] = memoryview(self._buf)[_HEADER.size:]
        self._buf.clear()
        view = memoryview(body)
        while have < len(body):
            k = self._sock.recv_into(view[have:], min(len(body) - have, 1 << 20))
            if k == 0:
                raise EOFError("the peer closed the connection")
            have += k
        return body


def _drain(fd: int) -> None:
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        pass


class ReplicationListener(SocketServer):
    """The leader's side: each connection is one follower's fetch stream, served on its own thread."""

    def __init__(self, host: str, port: int, apis: KafkaApis, token: str, limits: ListenerLimits):
        super().__init__(host, port, "replication", limits.max_connections, "inter.broker.max.concurrent.streams")
        self.apis = apis
        self.limits = limits
        self.token = token.encode()

    def _connection(self, sock: socket.socket, peer) -> "_FollowerConnection":
        return _FollowerConnection(sock, peer, self)


class _Refusal(Exception):
    """The connection is refused with this one line."""


class _FollowerConnection:
    def __init__(self, sock: socket.socket, peer, listener: ReplicationListener):
        self._sock = sock
        self._peer = f"{peer[0]}:{peer[1]}"
        self._listener = listener
        self._open = True
        self._close_lock = threading.Lock()
        self._greeted = False
        self._peer_checked_at = 0.0
        self._unsent: tuple[bytes, bytes] = (b"", b"")   # of the latest answer: sent by this connection's thread
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        set_timeouts(sock, listener.limits.idle_ms / 1000)
        self._frames = FrameReader(sock)
        # While a fetch is parked this thread sleeps in a poll of the socket (the follower's next FETCH comes
        # once the answer went, whoever sent it) and of an eventfd (wake: an answer left half sent, a poke).
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poller = select.poll()   # not select(): a broker with 10,000 logs has descriptors past 1024
        self._poller.register(sock, select.POLLIN)
        self._poller.register(self._wake_fd, select.POLLIN)

    def start(self) -> None:
        threading.Thread(target=self._serve, name="replication-stream", daemon=True).start()

    def close(self) -> None:
        with self._close_lock:
            if not self._open:
                return
            self._open = False
        shut(self._sock)
        self._listener._closed(self)

    def _serve(self) -> None:
        apis = self._listener.apis
        try:
            self._hello()
            log.info("replication_stream_accepted", peer=self._peer)
            for _ in apis.replica_fetch_stream(self._requests(), self, self._peer_open, respond=self._answer,
                                               waker=self):
                send_rest(self._sock, self._unsent)
                self._unsent = (b"", b"")
        except (_Refusal, MalformedRequestError, SlotsExhaustedError, FrameError) as e:
            self._refuse(str(e))
        except (EOFError, OSError):
            pass   # the follower went, stalled past connections.max.idle.ms, or the listener is stopping
        except Exception as e:  # noqa: BLE001 - one bad stream closes its connection, never the broker
            log.exception("replication_stream_failed", peer=self._peer, error=str(e))
        finally:
            self.close()
            with self._close_lock:   # a late poke (a snapshot of the parked fetches) must not write a reused fd
                os.close(self._wake_fd)
                self._wake_fd = -1

    # ---- a parked fetch's waker (broker/delayed_fetch.py): completion does not wake this thread --------------
    wakes_on_completion = False

    def wait(self, fetch: DelayedFetch, timeout: float) -> bool:
        woken = False
        for fd, _ in self._poller.poll(math.ceil(timeout * 1000)):
            if fd == self._wake_fd:
                _drain(self._wake_fd)
                woken = True
            elif not fetch.completed:
                fetch.cancel()   # the follower spoke before its answer, or went: either way it is not waiting
        return woken

    def wake(self) -> None:
        with self._close_lock:
            if self._wake_fd >= 0:
                os.eventfd_write(self._wake_fd, 1)

    def _answer(self, results) -> None:
        """An answer, sent at once: often on the thread whose append completed the parked fetch (KafkaApis.
        replica_fetch_stream), which must not block on a slow follower; what the socket does not take now,
        this connection's own thread sends next."""
        body = wire.fetch_response(results, self._listener.apis.broker_id).SerializeToString()
        self._unsent = send_frame_now(self._sock, ANSWER, body)
        if any(self._unsent):
            self.wake()

    def _hello(self) -> None:
        # One deadline for the whole HELLO (the socket's timeout bounds each read only: a trickle would pass).
        timer = threading.Timer(HELLO_TIMEOUT_S, self._hello_overdue)
        timer.daemon = True
        timer.start()
        try:
            kind, body = self._frames.next(MAX_HELLO_BYTES)
        finally:
            timer.cancel()
        if kind != HELLO:
            raise _Refusal(f"the first frame must be HELLO ({HELLO}), not kind {kind}")
        if not hmac.compare_digest(body, self._listener.token):
            raise _Refusal(REFUSAL)
        self._greeted = True

    def _hello_overdue(self) -> None:
        if not self._greeted:
            log.warning("replication_stream_refused", peer=self._peer,
                        reason=f"no HELLO within {HELLO_TIMEOUT_S:g} s")
            self.close()

    def _requests(self) -> Iterator[FetchRequest]:
        limits = self._listener.limits
        while True:
            kind, body = self._frames.next(limits.request_max_bytes)
            if kind != FETCH:
                raise _Refusal(f"frame kind {kind} where a FETCH ({FETCH}) was expected")
            try:
                request = kafka_pb2.FetchRequest.FromString(body)
            except DecodeError:
                raise MalformedRequestError("a FETCH frame whose FetchRequest does not parse") from None
            yield wire.fetch_request(request)

    def _peer_open(self) -> bool:
        """The long poll's question (is the follower still there?), without reading its next request; asked
        on every wake-up, answered from the socket at most every PEER_CHECK_INTERVAL_S (a poll per write
        was a system call, and a GIL hand-off, on the acks=all path)."""
        if not self._open:
            return False
        now = time.monotonic()
        if now - self._peer_checked_at < PEER_CHECK_INTERVAL_S:
            return True
        self._peer_checked_at = now
        try:
            poller = select.poll()   # not select(): a broker with 10,000 logs has descriptors past 1024
            poller.register(self._sock, select.POLLIN)
            events = poller.poll(0)
            if not events:
                return True
            if events[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return False
            return self._sock.recv(1, socket.MSG_PEEK) != b""
        except (OSError, ValueError):
            return False

    def _refuse(self, reason: str) -> None:
        log.warning("replication_stream_refused", peer=self._peer, reason=reason)
        try:
            set_timeouts(self._sock, 1.0)
            send_frame(self._sock, REFUSED, reason.encode())
        except OSError:
            pass


class ReplicationSocketStream:
    """The follower's side: client.bidi_stream.BidiStream's send / next_answer / close over the
    replication socket. Every failure is StreamEnded (with why); close() is safe from any thread."""

    def __init__(self, address: tuple[str, int], token: str, answer_timeout_s: float):
        self._address = f"{address[0]}:{address[1]}"
        self._closed = False
        try:
            self._sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT_S)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            set_timeouts(self._sock, answer_timeout_s)
            self._frames = FrameReader(self._sock)
            send_frame(self._sock, HELLO, token.encode())
        except OSError as e:
            raise StreamEnded(f"cannot reach the leader's replication port {self._address}: {e}") from None

    def send(self, request: kafka_pb2.FetchRequest) -> None:
        try:
            send_frame(self._sock, FETCH, request.SerializeToString())
        except OSError as e:
            raise StreamEnded(f"sending to {self._address}: {e}") from None

    def next_answer(self) -> kafka_pb2.FetchResponse:
        try:
            kind, body = self._frames.next(MAX_ANSWER_BYTES)
        except (OSError, EOFError, FrameError) as e:
            raise StreamEnded(f"reading from {self._address}: {e or type(e).__name__}") from None
        if kind == REFUSED:
            raise StreamEnded(f"refused by {self._address}: {body.decode(errors='replace')}")
        if kind != ANSWER:
            raise StreamEnded(f"frame kind {kind} from {self._address} where an ANSWER ({ANSWER}) was expected")
        try:
            return kafka_pb2.FetchResponse.FromString(body)
        except DecodeError:
            raise StreamEnded(f"an ANSWER from {self._address} that does not parse") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        shut(self._sock)
