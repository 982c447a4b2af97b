"""The Kafka port's connection bounds, with one real broker process and raw sockets on 127.0.0.1.

connections.max.idle.ms: a connection that sends nothing for that long is closed, and so is one
that starts a request and never finishes it; a request resets the idle clock. kafka.max.connections:
the connection past the cap is closed at once, and a freed slot is taken again. Pipelining: many
requests written at once on one connection are all answered, in the order they came.

Frames are written and read by hand (ApiVersions v0, Metadata v1: request header v1, non-flexible).
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from broker.kafka_protocol.versions import SUPPORTED
from tests.integration.cluster import log_events, metadata, wait_for, write_cluster
from tests.integration.test_kafka_clients import accepts, api_versions_v0, recv_exactly

pytestmark = pytest.mark.integration

IDLE_MS = 1500
MAX_CONNECTIONS = 4
IDLE_S = IDLE_MS / 1000
SLACK_S = 3.0          # how late past its bound a close may come on a busy 2-core machine
CLIENT_ID = b"limits"
API_VERSIONS, METADATA = 18, 3


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    c = write_cluster(tmp_path_factory.mktemp("kafka-limits"), 1,
                      {"connections.max.idle.ms": IDLE_MS, "kafka.max.connections": MAX_CONNECTIONS})
    try:
        c.start_all()
        b = c.brokers[1]
        wait_for(lambda: accepts(b.kafka_port), 20, "the Kafka listener to accept")
        yield b
    finally:
        c.stop_all()


# ---- frames -----------------------------------------------------------------------------------------


def request(api_key: int, version: int, correlation_id: int, body: bytes = b"") -> bytes:
    """A size-prefixed request with header v1 (api_key, api_version, correlation_id, client_id)."""
    frame = struct.pack(">hhih", api_key, version, correlation_id, len(CLIENT_ID)) + CLIENT_ID + body
    return struct.pack(">i", len(frame)) + frame


def api_versions_request(correlation_id: int) -> bytes:
    return request(API_VERSIONS, 0, correlation_id)


def metadata_request(correlation_id: int) -> bytes:
    """Metadata v1 naming no topic (an empty array: brokers and controller only)."""
    return request(METADATA, 1, correlation_id, struct.pack(">i", 0))


def read_response(s: socket.socket) -> tuple[int, bytes]:
    """(correlation id, body) of the next response on ``s`` (response header v0)."""
    size, = struct.unpack(">i", recv_exactly(s, 4))
    assert 4 <= size < 1 << 20, f"a response size of {size}"
    frame = recv_exactly(s, size)
    return struct.unpack_from(">i", frame)[0], frame[4:]


def check_api_versions(body: bytes) -> None:
    error_code, count = struct.unpack_from(">hi", body)
    assert error_code == 0
    entries = [struct.unpack_from(">hhh", body, 6 + 6 * i) for i in range(count)]
    assert {key: (lo, hi) for key, lo, hi in entries} == SUPPORTED
    assert len(body) == 6 + 6 * count, "bytes after the ApiVersions v0 body"


def string(body: bytes, at: int) -> tuple[str | None, int]:
    n, = struct.unpack_from(">h", body, at)
    if n < 0:
        return None, at + 2
    return body[at + 2:at + 2 + n].decode(), at + 2 + n


def check_metadata(body: bytes, b) -> None:
    """Metadata v1 for no topic: exactly this broker (its Kafka port), itself the controller."""
    count, = struct.unpack_from(">i", body)
    at, brokers = 4, []
    for _ in range(count):
        node_id, = struct.unpack_from(">i", body, at)
        host, at = string(body, at + 4)
        port, = struct.unpack_from(">i", body, at)
        rack, at = string(body, at + 4)
        brokers.append((node_id, host, port, rack))
    controller_id, topics = struct.unpack_from(">ii", body, at)
    assert brokers == [(1, "127.0.0.1", b.kafka_port, "rack-1")]
    assert (controller_id, topics) == (1, 0)
    assert len(body) == at + 8, "bytes after the Metadata v1 body"


# ---- sockets ------------------------------------------------------------------------------------------


def connect(b, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", b.kafka_port), timeout=timeout)


def peer_name(s: socket.socket) -> str:
    """How the broker's log names this client socket (its `peer` field)."""
    host, port = s.getsockname()[:2]
    return f"{host}:{port}"


def ask_api_versions(s: socket.socket, correlation_id: int) -> None:
    s.sendall(api_versions_request(correlation_id))
    got, body = read_response(s)
    assert got == correlation_id
    check_api_versions(body)


def stays_open_and_silent(s: socket.socket, seconds: float) -> None:
    """Nothing arrives on ``s`` for ``seconds``, and it is not closed (the pause between requests)."""
    s.settimeout(seconds)
    try:
        data = s.recv(1)
    except socket.timeout:
        return
    finally:
        s.settimeout(5.0)
    raise AssertionError("the broker closed the connection" if data == b"" else f"unasked-for bytes {data!r}")


def wait_closed(s: socket.socket, timeout: float) -> float:
    """Seconds until the broker closes ``s`` (EOF or reset); AssertionError if it answers or stays open."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the connection was still open after {timeout} s")
        s.settimeout(left)
        try:
            data = s.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
        if data == b"":
            return time.monotonic() - start
        raise AssertionError(f"the broker sent {len(data)} bytes on a connection it should close: {data[:40]!r}")


def answered_connection(b) -> socket.socket | None:
    """A new connection whose ApiVersions was answered, or None (closed) if the broker refused it."""
    s = connect(b)
    try:
        ask_api_versions(s, 1)
        return s
    except (AssertionError, OSError):
        s.close()
        return None


def answered_connections(b, n: int) -> list[socket.socket] | None:
    """``n`` new connections, each answered, or None (all closed again) if any was refused."""
    held: list[socket.socket] = []
    for _ in range(n):
        s = answered_connection(b)
        if s is None:
            close_all(held)
            return None
        held.append(s)
    return held


def close_all(sockets: list[socket.socket]) -> None:
    for s in sockets:
        s.close()


def events_for(b, event: str, peer: str) -> list[dict]:
    return [e for e in log_events(b, event) if e.get("peer") == peer]


def assert_broker_serves(b) -> None:
    """Alive, and both doors answer: gRPC Metadata and a fresh connection's ApiVersions."""
    assert b.alive(), f"the broker exited:\n{b.log()[-3000:]}"
    r = metadata(b)
    assert r is not None and r.controller_id == 1, "the gRPC port did not answer"
    assert api_versions_v0(b.kafka_port, 0)[:2] == (42, 0)


def assert_no_failures(b) -> None:
    assert not log_events(b, "kafka_request_failed") and not log_events(b, "kafka_answer_failed")


# ---- tests --------------------------------------------------------------------------------------------


def test_an_idle_connection_is_closed_after_connections_max_idle_ms(broker):
    """Requests 0.3 x idle apart keep a connection open well past the idle time (each resets the
    clock); once silent, it is closed about idle ms after its last request, with one warning line."""
    rounds, pause = 5, 0.3 * IDLE_S
    with connect(broker) as s:
        peer = peer_name(s)
        ask_api_versions(s, 0)
        opened = time.monotonic()
        for i in range(1, rounds + 1):
            stays_open_and_silent(s, pause)
            ask_api_versions(s, i)
        last_answer = time.monotonic()
        assert last_answer - opened >= IDLE_S, "the requests did not outlast one idle period"
        closed_after = wait_closed(s, IDLE_S + SLACK_S)
    print(f"\n[idle] {rounds} requests over {last_answer - opened:.2f} s answered; closed "
          f"{closed_after:.2f} s after the last answer (connections.max.idle.ms {IDLE_MS})")
    assert closed_after >= 0.8 * IDLE_S, f"closed {closed_after:.2f} s after a request, before {IDLE_MS} ms idle"
    closes = wait_for(lambda: events_for(broker, "kafka_connection_closed", peer), 5, "the close's log line")
    assert len(closes) == 1, closes
    # Routine, as Kafka's Selector has it: an idle close is no warning (a stalled request's is, below).
    assert closes[0]["level"] == "info" and closes[0]["reason"].startswith("idle for connections.max.idle.ms"), \
        closes[0]
    assert_no_failures(broker)
    assert_broker_serves(broker)


def test_a_half_sent_request_is_closed_and_the_broker_serves_meanwhile(broker):
    """A size prefix for 100 bytes, 10 of them, then silence: closed within about idle ms; fresh
    connections' ApiVersions are answered while it hangs and after it is gone."""
    with connect(broker) as s:
        peer = peer_name(s)
        s.sendall(struct.pack(">i", 100) + struct.pack(">hhi", API_VERSIONS, 0, 9) + b"\x00\x06")
        sent = time.monotonic()
        answered_meanwhile = 0
        closed_after = None
        for _ in range(200):   # bounded: about 0.2 s a round, the deadline ends it first
            waited = time.monotonic() - sent
            assert waited < IDLE_S + SLACK_S, f"the half-sent request's connection still open after {waited:.2f} s"
            s.settimeout(0.2)
            try:
                data = s.recv(4096)
            except socket.timeout:
                assert api_versions_v0(broker.kafka_port, 0)[:2] == (42, 0)
                answered_meanwhile += 1
                continue
            except ConnectionResetError:
                data = b""
            assert data == b"", f"the broker answered a request it never got whole: {data!r}"
            closed_after = time.monotonic() - sent
            break
        assert closed_after is not None, "the round limit ended the wait"
    print(f"\n[half-open] closed {closed_after:.2f} s after the 14 bytes; {answered_meanwhile} fresh "
          "connections answered meanwhile")
    assert closed_after >= 0.8 * IDLE_S, f"closed after {closed_after:.2f} s, before {IDLE_MS} ms"
    assert answered_meanwhile >= 2, "fresh connections were not answered while the half-sent request hung"
    assert api_versions_v0(broker.kafka_port, 0)[:2] == (42, 0)
    closes = wait_for(lambda: events_for(broker, "kafka_connection_closed", peer), 5, "the close's log line")
    assert len(closes) == 1, closes
    assert closes[0]["level"] == "warning" and closes[0]["reason"].startswith("a request stalled"), closes[0]
    assert_no_failures(broker)
    assert_broker_serves(broker)


def test_connections_past_kafka_max_connections_are_closed_at_once(broker):
    """Four held connections fill kafka.max.connections; the fifth is closed unanswered at once
    (one warning line); two closed make room for exactly two more; the broker serves throughout."""
    held: list[socket.socket] = []
    try:
        # Earlier tests' connections may take a moment to be let go: wait until four fit.
        held = wait_for(lambda: answered_connections(broker, MAX_CONNECTIONS), 10,
                        f"{MAX_CONNECTIONS} connections, each answered")
        with connect(broker) as fifth:
            peer = peer_name(fifth)
            try:
                fifth.sendall(api_versions_request(5))
            except OSError:
                pass   # already reset: refused all the same
            refused_after = wait_closed(fifth, 5)
        assert refused_after < 2.0, f"the fifth connection took {refused_after:.2f} s to be closed"
        refusals = wait_for(lambda: events_for(broker, "kafka_connection_refused", peer), 5, "the refusal's log line")
        assert len(refusals) == 1 and "kafka.max.connections (4)" in refusals[0]["reason"], refusals
        assert not events_for(broker, "kafka_connection_closed", peer)

        # At the cap: the held connections are still served, and so is the gRPC port.
        for i, s in enumerate(held):
            ask_api_versions(s, 100 + i)
        assert broker.alive() and metadata(broker) is not None

        close_all(held[:2])
        held = held[2:]
        attempts = []

        def one_more() -> socket.socket | None:
            attempts.append(1)
            return answered_connection(broker)
        for n in range(2):
            held.append(wait_for(one_more, 10, f"freed slot {n + 1} of 2 to take a new connection", 0.1))
        assert len(held) == MAX_CONNECTIONS

        # Exactly two were freed: the cap holds again.
        with connect(broker) as extra:
            extra.sendall(api_versions_request(6))
            wait_closed(extra, 5)
        print(f"\n[cap] 5th closed in {refused_after * 1000:.0f} ms; {len(attempts)} attempts to fill "
              f"2 freed slots; the next one closed again")
    finally:
        close_all(held)
    wait_for(lambda: accepts_and_answers(broker), 10, "a fresh connection answered once the held ones are closed")
    assert_no_failures(broker)
    assert_broker_serves(broker)


def accepts_and_answers(b) -> bool:
    s = answered_connection(b)
    if s is None:
        return False
    s.close()
    return True


def test_pipelined_requests_are_all_answered_in_order(broker):
    """200 requests (ApiVersions and Metadata in turn) in one write before reading: 200 answers,
    correlation ids 0..199 in order, each body the right API's."""
    n = 200
    frames = b"".join(api_versions_request(i) if i % 2 == 0 else metadata_request(i) for i in range(n))
    with connect(broker, timeout=10) as s:
        s.sendall(frames)
        deadline = time.monotonic() + 20
        ids = []
        for i in range(n):
            assert time.monotonic() < deadline, f"only {i} of {n} answers in 20 s"
            correlation_id, body = read_response(s)
            ids.append(correlation_id)
            if correlation_id % 2 == 0:
                check_api_versions(body)
            else:
                check_metadata(body, broker)
        assert ids == list(range(n))
        ask_api_versions(s, n)   # nothing left over, and the connection still serves
    print(f"\n[pipeline] {n} requests in one write ({len(frames)} bytes): {n} answers in order")
    assert_no_failures(broker)
    assert_broker_serves(broker)
