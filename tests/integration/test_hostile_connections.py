"""Garbage, half-open and stuck connections on the client port, the inter-broker port and the Raft port.

Raw sockets to 127.0.0.1. The broker closes what it cannot use, keeps serving while it
happens, and stuck connections end within the configured bounds
(grpc.handshake.timeout.ms, grpc.max.connection.idle.ms, grpc.max.connection.age.ms).
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time

import grpc
import pytest

from client import Admin, Producer, record_batch
from broker.metadata.quorum import UNIDENTIFIED_TIMEOUT_S
from client.protocol.v1 import common_pb2
from tests.integration.cluster import broker_channel, fetch_raw, metadata, wait_for
from tests.integration.test_limits import one_broker

HANDSHAKE_MS, IDLE_MS, AGE_MS, GRACE_MS = 1000, 2000, 4000, 1000
WORKERS = 8
INTER_BROKER_WORKERS = 4
CONFIG = {"grpc.handshake.timeout.ms": HANDSHAKE_MS, "grpc.max.connection.idle.ms": IDLE_MS,
          "grpc.max.connection.age.ms": AGE_MS, "grpc.max.connection.age.grace.ms": GRACE_MS,
          "grpc.max.workers": WORKERS, "grpc.max.concurrent.streams": 4, "grpc.max.concurrent.rpcs": 64,
          "inter.broker.max.workers": INTER_BROKER_WORKERS, "inter.broker.max.concurrent.streams": 2,
          "inter.broker.max.concurrent.rpcs": 2 * INTER_BROKER_WORKERS}
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# The start of a real TLS 1.2 ClientHello (record header, handshake header, version, random...).
TLS_HELLO = (bytes.fromhex("16030100c4010000c00303") + os.urandom(32) + bytes.fromhex(
    "000020c02bc02fc02cc030cca9cca8c013c014009c009d002f0035000a0100007700000010000e00000b6578616d706c652e636f6d"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with one_broker(tmp_path_factory.mktemp("hostile"), CONFIG, "hostile") as b:
        yield b


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def half_open_call(port: int, method: str = "/raftka.v1.Kafka/Metadata") -> socket.socket:
    """An HTTP/2 connection that starts a unary call and sends 10 of the 1000 bytes it announces."""
    def literal(name: bytes, value: bytes) -> bytes:   # HPACK: literal header field, new name, no indexing
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    headers = (literal(b":method", b"POST") + literal(b":scheme", b"http") + literal(b":path", method.encode())
               + literal(b":authority", b"x") + literal(b"content-type", b"application/grpc")
               + literal(b"te", b"trailers"))
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(PREFACE + frame(4, 0, 0, b"") + frame(1, 4, 1, headers)
              + frame(0, 0, 1, b"\x00" + struct.pack(">I", 1000) + b"x" * 10))
    return s


def call_ended(s: socket.socket, timeout: float) -> bool:
    """Read HTTP/2 frames until the server ends stream 1 (HEADERS with END_STREAM, or RST_STREAM):
    True, or False when ``timeout`` passes or the connection closes first."""
    s.settimeout(0.2)
    deadline, buf = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            length, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
            stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            buf = buf[9 + length:]
            if stream == 1 and (kind == 3 or (kind == 1 and flags & 0x1)):
                return True
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return False
        if not data:
            return False
        buf += data
    return False


def answers(call) -> bool:
    try:
        call()
        return True
    except grpc.RpcError:
        return False


def closed_by_peer(s: socket.socket, timeout: float) -> bool:
    """Read (and drop) what the peer sends until it closes the connection (True) or ``timeout`` passes."""
    s.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not s.recv(65536):
                return True
        except socket.timeout:
            continue
        except OSError:   # reset
            return True
    return False


def serving(broker, timeout: float = 1.0) -> bool:
    r = metadata(broker, ["hostile"], timeout=timeout)
    return r is not None and r.topics[0].error_code == 0


def no_traceback(broker) -> None:
    logged = broker.log()
    assert "Traceback" not in logged and "Exception calling application" not in logged, logged[-3000:]


def round_trip(broker, value: bytes) -> None:
    """acks=all produce, then a consumer Fetch reads the same record back at its offset."""
    with Producer(broker.bootstrap, acks="all") as p:
        md = p.send("hostile", value).result(timeout=20)
    r = fetch_raw(broker, "hostile", md.offset)
    assert r.error_code == 0 and record_batch.decode_all(r.records, min_offset=md.offset)[0].value == value


def test_garbage_on_the_client_port_is_dropped_and_the_broker_keeps_serving(broker):
    rng = random.Random(8)
    payloads = {f"random-{i}": rng.randbytes(rng.choice([1, 17, 4096, 65536])) for i in range(6)}
    payloads.update({
        "tls-client-hello": TLS_HELLO,
        "http1-get": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "preface-then-garbage": PREFACE + rng.randbytes(512),
        "preface-then-huge-frame": PREFACE + frame(4, 0, 0, b"") + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01",
        "preface-then-bad-headers": PREFACE + frame(4, 0, 0, b"") + frame(1, 4, 1, rng.randbytes(64)),
    })
    pid = broker.pid
    closed = {}
    for name, payload in payloads.items():
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
            try:
                s.sendall(payload)
            except OSError:
                pass   # the broker already hung up
            closed[name] = closed_by_peer(s, 5 + HANDSHAKE_MS / 1000)
        assert serving(broker), f"Metadata failed after {name}"
    assert all(closed.values()), closed
    round_trip(broker, b"after-garbage")
    assert broker.alive() and broker.pid == pid
    no_traceback(broker)
    print(f"\n[client port] {len(closed)} garbage connections closed by the broker; Metadata answered after "
          f"each; a produce and fetch round trip after; PID {pid} unchanged")


def test_connections_that_never_send_or_stall_cannot_exhaust_the_client_port(broker):
    """300 connections that never send, 50 that stop after the HTTP/2 preface and SETTINGS: the broker
    answers throughout and closes every one (handshake timeout, idle timeout)."""
    pid = broker.pid
    silent = [socket.create_connection(("127.0.0.1", broker.port), timeout=5) for _ in range(300)]
    stalled = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        s.sendall(PREFACE + frame(4, 0, 0, b""))
        stalled.append(s)
    slowest = 0.0
    for _ in range(20):
        started = time.monotonic()
        assert serving(broker, timeout=2.0)
        slowest = max(slowest, time.monotonic() - started)
    round_trip(broker, b"during-silence")
    # Each is closed by the broker: the silent ones after the handshake timeout, the stalled ones idle.
    limit = (IDLE_MS + HANDSHAKE_MS) / 1000 + 10
    deadline = time.monotonic() + limit
    still_open = [s for s in silent + stalled if not closed_by_peer(s, max(deadline - time.monotonic(), 0.01))]
    for s in silent + stalled:
        s.close()
    assert not still_open, f"{len(still_open)} of {len(silent) + len(stalled)} connections still open after {limit} s"
    assert slowest < 1.0, slowest
    assert broker.alive() and broker.pid == pid
    no_traceback(broker)
    print(f"\n[client port] {len(silent)} silent + {len(stalled)} stalled connections: 20 Metadata calls answered "
          f"(slowest {slowest * 1000:.0f} ms), all {len(silent) + len(stalled)} closed by the broker")


def test_half_open_calls_on_every_worker_end_with_the_connection_age(broker):
    """grpcio holds a worker thread while a unary call's request is incomplete: more such calls than
    grpc.max.workers stall the port until grpc.max.connection.age.ms + grace closes their connections.
    Then the broker answers again, and no call of a real client was lost."""
    pid = broker.pid
    stuck = [half_open_call(broker.port) for _ in range(WORKERS + 4)]
    started = time.monotonic()
    # The stall is grpcio's (a worker waits for the rest of the request); if this ever stops
    # happening, the age bound below is no longer what keeps the port serving.
    wait_for(lambda: not serving(broker, timeout=0.5), 5, "the half-open calls to take every worker thread")
    bound = (AGE_MS * 1.1 + GRACE_MS) / 1000 + 5     # gRPC jitters the age by +-10%
    wait_for(lambda: serving(broker, timeout=1.0), bound, "the broker to answer Metadata again")
    recovered = time.monotonic() - started
    closed = sum(closed_by_peer(s, max(started + bound - time.monotonic(), 0.01)) for s in stuck)
    for s in stuck:
        s.close()
    assert closed == len(stuck), f"{closed} of {len(stuck)} half-open connections closed"
    round_trip(broker, b"after-half-open")
    assert broker.alive() and broker.pid == pid
    no_traceback(broker)
    print(f"\n[client port] {len(stuck)} half-open unary calls on {WORKERS} workers: Metadata answered again after "
          f"{recovered:.1f} s (bound {bound:.1f} s), all {closed} connections closed by the broker")


# ---- the inter-broker port ------------------------------------------------------------------------


def test_half_open_calls_on_the_inter_broker_port_hold_no_thread(broker):
    """That port does not age its connections (it would cut followers' fetch streams), so a stranger's
    half-sent call must not hold a worker there: without the token it is refused before its request is
    read. 3x inter.broker.max.workers of them, on both services: heartbeats still answer at once, the
    broker stays unfenced, and the idle bound closes the strangers' connections."""
    from client.protocol.v1 import controller_pb2, controller_pb2_grpc

    pid = broker.pid
    stuck = [half_open_call(broker.inter_broker_port, method)
             for method in ("/raftka.v1.Controller/BrokerHeartbeat", "/raftka.v1.Replication/ReplicaFetch")
             for _ in range(3 * INTER_BROKER_WORKERS)]
    # Each is refused without its request being read. Until grpcio has counted a refused call as
    # finished it still counts against inter.broker.max.concurrent.rpcs (a heartbeat sent in that
    # instant gets RESOURCE_EXHAUSTED), so the timing starts once every stranger has its answer.
    refused = sum(call_ended(s, 5.0) for s in stuck)
    assert refused == len(stuck), f"{refused} of {len(stuck)} strangers' calls refused"

    def heartbeat(ch):
        return controller_pb2_grpc.ControllerStub(ch).BrokerHeartbeat(controller_pb2.BrokerHeartbeatRequest(
            broker_id=1, broker_epoch=10**9), timeout=5)

    slowest = 0.0
    with broker_channel(broker) as ch:
        wait_for(lambda: answers(lambda: heartbeat(ch)), 5, "the refused calls to leave the concurrent-RPC count")
        for _ in range(20):
            started = time.monotonic()
            r = heartbeat(ch)
            slowest = max(slowest, time.monotonic() - started)
            assert r.error_code == common_pb2.STALE_BROKER_EPOCH   # answered by the controller itself
    assert [b.alive for b in metadata(broker).brokers] == [True]
    limit = IDLE_MS / 1000 + 10
    deadline = time.monotonic() + limit
    closed = sum(closed_by_peer(s, max(deadline - time.monotonic(), 0.01)) for s in stuck)
    for s in stuck:
        s.close()
    assert slowest < 1.0, slowest
    assert closed == len(stuck), f"{closed} of {len(stuck)} connections closed within {limit} s"
    assert broker.alive() and broker.pid == pid
    no_traceback(broker)
    print(f"\n[inter-broker port] {len(stuck)} half-open calls on {INTER_BROKER_WORKERS} workers: 20 heartbeats "
          f"answered (slowest {slowest * 1000:.0f} ms), all {closed} connections closed by the broker")


# ---- the Raft port --------------------------------------------------------------------------------


def commits(broker, name: str) -> bool:
    """A metadata change goes through the Raft log: the topic is created and shows up."""
    Admin(broker.bootstrap).create_topic(name, partitions=1, replication_factor=1)
    r = metadata(broker, [name])
    return r is not None and r.topics[0].error_code == 0


def test_garbage_and_silent_connections_on_the_raft_port(broker):
    """Random bytes, a TLS hello, frames with absurd or negative lengths, and 100 connections that
    never send: the Raft node keeps committing, and the frames it could parse are dropped."""
    rng = random.Random(3)
    payloads = {f"random-{i}": rng.randbytes(rng.choice([3, 64, 4096])) for i in range(4)}
    payloads.update({
        "tls-client-hello": TLS_HELLO,
        "negative-length": struct.pack("i", -5) + rng.randbytes(32),
        "zero-length": struct.pack("i", 0) * 4,
        "short-garbage-frame": struct.pack("i", 16) + rng.randbytes(16),
        "huge-length": struct.pack("i", 2**31 - 1) + rng.randbytes(1024),
        "http": b"GET / HTTP/1.1\r\n\r\n",
    })
    pid = broker.pid
    silent = [socket.create_connection(("127.0.0.1", broker.raft_port), timeout=5) for _ in range(100)]
    outcomes = {}
    for i, (name, payload) in enumerate(payloads.items()):
        with socket.create_connection(("127.0.0.1", broker.raft_port), timeout=5) as s:
            try:
                s.sendall(payload)
            except OSError:
                pass
            # Only the parsable frame must be closed (asserted below); the others are watched briefly, for the report.
            outcomes[name] = "closed" if closed_by_peer(s, 2.0 if name == "short-garbage-frame" else 0.3) \
                else "kept waiting"
        assert commits(broker, f"raft-garbage-{i}"), f"no metadata commit after {name}"
        assert broker.alive() and broker.pid == pid, f"the broker died after {name}"
    assert commits(broker, "raft-after-silent")
    for s in silent:
        s.close()
    round_trip(broker, b"after-raft-garbage")
    no_traceback(broker)
    # A frame the node can parse but not decrypt is dropped with its connection; a partial one waits.
    assert outcomes["short-garbage-frame"] == "closed", outcomes
    print(f"\n[raft port] {len(payloads)} garbage connections ({outcomes}); 100 silent connections held; "
          f"{len(payloads) + 1} metadata commits went through; PID {pid} unchanged")


def test_a_pysyncobj_peer_without_the_cluster_secret_learns_nothing_and_changes_nothing(broker, tmp_path):
    """A real pysyncobj node, with a wrong password and with none, lists the broker as its partner for
    3 s: it never sees a leader or an entry, and the broker's quorum keeps its leader and metadata."""
    from pysyncobj import SyncObj, SyncObjConf

    from tests.integration.cluster import free_port

    before = metadata(broker)
    seen = {}
    for label, password in (("wrong-secret", "not-the-cluster-secret"), ("no-secret", None)):
        conf = SyncObjConf(password=password, dynamicMembershipChange=False, useFork=False,
                           connectionRetryTime=0.2, raftMinTimeout=0.4, raftMaxTimeout=0.8)
        stranger = SyncObj(f"127.0.0.1:{free_port()}", [f"127.0.0.1:{broker.raft_port}"], conf)
        try:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                time.sleep(0.1)
                status = stranger.getStatus()
                assert status["leader"] is None or str(status["leader"]).endswith(str(stranger.selfNode.port)), status
            seen[label] = (stranger.getStatus()["leader"], stranger.getStatus()["log_len"],
                           stranger.getStatus()["commit_idx"])
        finally:
            stranger.destroy()
    after = metadata(broker)
    assert after.controller_id == before.controller_id == 1
    assert [(b.broker_id, b.alive) for b in after.brokers] == [(1, True)]
    assert commits(broker, "raft-after-stranger")
    no_traceback(broker)
    print(f"\n[raft port] strangers' view after 3 s (leader, log length, commit index): {seen}")


def test_a_strangers_partial_frame_on_the_raft_port_is_closed_within_seconds(broker):
    """pysyncobj keeps a connection for connectionTimeout (3600 s here); one that never says which
    node it is gets UNIDENTIFIED_TIMEOUT_S (broker/metadata/quorum.py StrangerBoundTransport)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", broker.raft_port), timeout=5) as s:
        s.sendall(struct.pack("i", 10**6) + b"x" * 10)   # a frame that announces 1 MB and stops
        assert closed_by_peer(s, UNIDENTIFIED_TIMEOUT_S + 5.0), "the Raft port kept a stranger's half-sent frame"
    assert time.monotonic() - started >= UNIDENTIFIED_TIMEOUT_S - 0.5, "closed before its time: by what?"
    assert serving(broker)


def test_a_stranger_streaming_a_huge_frame_to_the_raft_port_is_cut_off_early(broker):
    """A frame announcing 2 GiB, then data as fast as loopback takes it: dropped once it buffered
    more than an identification could ever need, long before its time runs out."""
    sent = 0
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", broker.raft_port), timeout=5) as s:
        s.sendall(struct.pack("i", 2**31 - 1))
        chunk = b"y" * 65536
        try:
            while sent < 256 * 1024 * 1024 and time.monotonic() - started < UNIDENTIFIED_TIMEOUT_S:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:   # reset or broken pipe: the broker dropped it
            pass
        assert closed_by_peer(s, 2.0)
    assert time.monotonic() - started < UNIDENTIFIED_TIMEOUT_S, f"sent {sent} bytes before it was dropped"
    assert sent < 256 * 1024 * 1024
    assert serving(broker)


def test_a_stranger_cannot_fence_a_broker_through_the_controller_service(fresh_cluster):
    """The Controller service takes the caller's word for its broker id, and a broker epoch is a
    small Raft offset: without the cluster's token (inter_broker_auth) a stranger's heartbeat with
    want_shut_down would fence broker 1. Every guess is refused before it reaches the controller."""
    from client.protocol.v1 import controller_pb2, controller_pb2_grpc

    broker = fresh_cluster(1).start_all().brokers[1]

    def heartbeat(channel, epoch):
        return controller_pb2_grpc.ControllerStub(channel).BrokerHeartbeat(controller_pb2.BrokerHeartbeatRequest(
            broker_id=1, broker_epoch=epoch, metadata_offset=10**6, want_shut_down=True), timeout=10)

    refused = 0
    with grpc.insecure_channel(f"127.0.0.1:{broker.inter_broker_port}") as ch:
        for epoch in range(64):
            with pytest.raises(grpc.RpcError) as e:
                heartbeat(ch, epoch)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "broker token" in e.value.details()
            refused += 1
    # The check refuses strangers only: a broker's channel reaches the controller, which judges the epoch.
    with broker_channel(broker) as ch:
        assert heartbeat(ch, 10**9).error_code == common_pb2.STALE_BROKER_EPOCH
    alive = [b.alive for b in metadata(broker).brokers]
    assert refused == 64 and alive == [True], f"refused {refused} of 64; alive {alive}"


def test_a_stranger_cannot_acknowledge_a_write_for_a_follower(running_cluster):
    """A ReplicaFetch naming a paused follower and the leader's log end would move the HW, so
    acks=all would answer before the follower has the batch. Without the token it is refused, and
    the produce times out waiting for the real follower."""
    import signal
    import threading

    from client.protocol.v1 import kafka_pb2, replication_pb2_grpc
    from tests.integration.cluster import produce_raw, replica_offsets

    cluster = running_cluster(2)
    first = cluster.brokers[1]
    Admin(first.bootstrap).create_topic("stranger-acks", partitions=1, replication_factor=2)
    md = wait_for(lambda: (r := metadata(first, ["stranger-acks"])) and r.topics[0].partitions
                  and len(r.topics[0].partitions[0].isr) == 2 and r, 10, "a leader and a full ISR")
    leader = cluster.brokers[md.topics[0].partitions[0].leader_id]
    follower = next(b for b in cluster.brokers.values() if b is not leader)
    # Broker 1's metadata can name the leader before the leader has acted on it (NOT_LEADER_OR_FOLLOWER).
    wait_for(lambda: replica_offsets(leader, "stranger-acks"), 10, "the leader to host stranger-acks-0")
    assert produce_raw(leader, "stranger-acks", record_batch.build_batch([(None, b"both", 1)])).error_code == 0
    follower.signal(signal.SIGSTOP)   # it holds offset 0 at most, and fetches nothing more
    try:
        answer = {}
        sender = threading.Thread(target=lambda: answer.update(r=produce_raw(
            leader, "stranger-acks", record_batch.build_batch([(None, b"leader-only", 1)]), timeout_ms=2000)))
        sender.start()
        end = wait_for(lambda: (o := replica_offsets(leader, "stranger-acks")) and o.log_end_offset == 2 and 2, 5,
                       "the leader to append the second batch")
        with grpc.insecure_channel(f"127.0.0.1:{leader.inter_broker_port}") as ch:
            with pytest.raises(grpc.RpcError) as e:
                replication_pb2_grpc.ReplicationStub(ch).ReplicaFetch(kafka_pb2.FetchRequest(
                    replica_id=follower.broker_id, max_wait_ms=0, partitions=[kafka_pb2.FetchPartition(
                        topic="stranger-acks", partition=0, fetch_offset=end, current_leader_epoch=-1,
                        last_fetched_epoch=-1)]), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        sender.join(10)
    finally:
        follower.signal(signal.SIGCONT)
    assert answer["r"].error_code == common_pb2.REQUEST_TIMED_OUT, \
        "acks=all must wait for the real follower (which was paused), not answer for a stranger's fetch"
