"""The replication listener (broker/replication_socket.py): followers' fetch streams over plain TCP.

Raw sockets to a real broker's replication_port: strangers, garbage and silent connections are refused
with one line each and the broker keeps serving; a broker's own HELLO and FETCH get an ANSWER. Then
three-broker clusters replicate acks=all writes over it, and over gRPC when the cluster file has no
replication_port.
"""

from __future__ import annotations

import random
import socket
import struct
import time

import pytest

from broker.inter_broker_auth import broker_token
from broker.replication_socket import ANSWER, FETCH, HELLO, HELLO_TIMEOUT_S, REFUSED
from client import Admin, Producer
from client.protocol.v1 import kafka_pb2
from raftka_testing.cluster import CLUSTER_ID, CLUSTER_SECRET, write_cluster
from tests.integration.cluster import log_events, read_replica, replica_offsets, wait_for, wait_log_events
from tests.integration.test_hostile_connections import TLS_HELLO, closed_by_peer, no_traceback, round_trip
from tests.integration.test_limits import one_broker

STREAMS = 3   # inter.broker.max.concurrent.streams: also the listener's connection limit
TOKEN = broker_token(CLUSTER_ID, CLUSTER_SECRET).encode()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with one_broker(tmp_path_factory.mktemp("replication-socket"), {"inter.broker.max.concurrent.streams": STREAMS},
                    "hostile") as b:
        yield b


def frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


def connect(broker) -> socket.socket:
    assert broker.replication_port, "write_cluster gives every broker a replication_port"
    return socket.create_connection(("127.0.0.1", broker.replication_port), timeout=5)


def next_frame(s: socket.socket, timeout: float = 5.0) -> tuple[int, bytes] | None:
    """The next frame the broker sends, or None if it closes the connection first."""
    s.settimeout(timeout)
    data = b""
    try:
        while len(data) < 5 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                return None
            data += chunk
    except ConnectionResetError:
        return None
    length, kind = struct.unpack(">IB", data[:5])
    return kind, data[5:4 + length]


def refusal(payload: bytes, broker) -> str | None:
    """What the broker says (REFUSED's line) before it closes a connection that sent ``payload``; None if
    it closed without a word."""
    with connect(broker) as s:
        s.sendall(payload)
        answer = next_frame(s)
        if answer is None:
            return None
        kind, body = answer
        assert kind == REFUSED, f"kind {kind} after {payload[:40]!r}"
        assert closed_by_peer(s, 3.0), "the broker keeps a refused connection open"
        return body.decode()


def fetch_request(replica_id: int, topic: str = "hostile") -> bytes:
    return kafka_pb2.FetchRequest(replica_id=replica_id, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, partitions=[
        kafka_pb2.FetchPartition(topic=topic, partition=0, fetch_offset=0, current_leader_epoch=-1,
                                 last_fetched_epoch=-1, partition_max_bytes=1 << 20)]).SerializeToString()


def test_strangers_and_garbage_are_refused_with_one_line_and_the_broker_keeps_serving(broker):
    pid = broker.pid
    silent = connect(broker)   # never says HELLO: closed after HELLO_TIMEOUT_S
    opened_at = time.monotonic()
    rng = random.Random(20)
    cases = {
        "wrong token": (frame(HELLO, b"0" * 64) + frame(FETCH, fetch_request(2)), "broker token"),
        "no HELLO first": (frame(FETCH, fetch_request(2)), "first frame must be HELLO"),
        "huge length": (struct.pack(">IB", 2**31, HELLO) + rng.randbytes(64), "outside"),
        "zero length": (struct.pack(">I", 0) + b"\x01", "outside"),
        "FETCH that does not parse": (frame(HELLO, TOKEN) + frame(FETCH, b"\xff" * 40), "does not parse"),
        "unknown kind": (frame(HELLO, TOKEN) + frame(9, b"x"), "kind 9"),
        "TLS client hello": (TLS_HELLO, ""),
        "HTTP": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ""),
    }
    said = {name: refusal(payload, broker) for name, (payload, _) in cases.items()}
    for name, (_, expected) in cases.items():
        assert said[name] is not None and expected in said[name] and "\n" not in said[name], (name, said[name])
    assert closed_by_peer(silent, HELLO_TIMEOUT_S + 5), "a connection that never says HELLO is kept open"
    silent_s = time.monotonic() - opened_at
    silent.close()
    assert broker.alive() and broker.pid == pid
    round_trip(broker, b"after-replication-garbage")
    no_traceback(broker)
    refused = [e["reason"] for e in log_events(broker, "replication_stream_refused")]
    assert len(refused) >= len(cases), refused
    print(f"\n[replication port] {len(cases)} hostile connections refused, each with one line "
          f"({sorted(said.items())}); a silent one closed after {silent_s:.1f} s; PID {pid} unchanged")


def test_a_brokers_fetch_is_answered_and_connections_past_the_limit_are_closed(broker):
    held = []
    for _ in range(STREAMS):
        s = connect(broker)
        s.sendall(frame(HELLO, TOKEN) + frame(FETCH, fetch_request(7)))
        answer = next_frame(s)
        assert answer is not None and answer[0] == ANSWER, answer
        response = kafka_pb2.FetchResponse.FromString(answer[1])
        assert response.answered_by == broker.broker_id and [p.topic for p in response.partitions] == ["hostile"]
        held.append(s)
    with connect(broker) as extra:   # past inter.broker.max.concurrent.streams: closed at once
        assert closed_by_peer(extra, 3.0), "a connection past the limit was kept"
    for s in held:
        s.close()

    def answered() -> bool:   # the slots free as the broker sees the closes
        with connect(broker) as s:
            s.sendall(frame(HELLO, TOKEN) + frame(FETCH, fetch_request(7)))
            answer = next_frame(s, 2.0)
            return answer is not None and answer[0] == ANSWER
    wait_for(answered, 10, "a new connection to be served once the held ones closed")
    refused = wait_log_events(broker, "replication_connection_refused")
    assert refused and "inter.broker.max.concurrent.streams" in refused[-1]["reason"], refused


@pytest.mark.parametrize("transport", ["socket", "grpc"])
def test_acks_all_writes_replicate_over_the_socket_or_over_grpc_without_a_replication_port(tmp_path, transport):
    cluster = write_cluster(tmp_path, 3, {"min.insync.replicas": 2}, replication_socket=transport == "socket")
    try:
        cluster.start_all(timeout=20)
        first = cluster.brokers[1]
        Admin(first.bootstrap).create_topic("over", partitions=1, replication_factor=3)
        values = [f"v{i}".encode() for i in range(50)]
        with Producer(first.bootstrap, acks="all") as p:
            acked = [p.send("over", v, partition=0).result(timeout=20).offset for v in values]
        assert acked == list(range(50))
        for b in cluster.brokers.values():
            wait_for(lambda: (o := replica_offsets(b, "over")) and o.high_watermark == 50, 10,
                     f"broker {b.broker_id} to hold the 50 records")
            assert [v for _, v in read_replica(b, "over", 0)] == values, f"broker {b.broker_id}'s copy"
        ports = {b.broker_id: log_events(b, "broker_started")[-1]["replication_port"] for b in cluster.brokers.values()}
        accepted = sum(len(log_events(b, "replication_stream_accepted")) for b in cluster.brokers.values())
        if transport == "socket":
            assert all(ports.values()) and accepted >= 2, (ports, accepted)   # the leader's two followers at least
        else:
            assert ports == {1: 0, 2: 0, 3: 0} and accepted == 0, (ports, accepted)
        print(f"\n[{transport}] 50 acks=all writes, 3 identical copies; replication ports {ports}, "
              f"{accepted} socket streams accepted")
    finally:
        cluster.stop_all()
