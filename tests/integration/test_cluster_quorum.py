"""Three real brokers and their metadata quorum: election, failover, fencing, restarts, the Raft port.

Every test starts its own three `python -m broker` processes (fresh data dirs,
free ports) and ends only those, by PID. Nothing is asserted after a sleep: every
wait is a condition polled against a deadline, and the figures a test measures
(election time, failover time, ...) are printed (run with -s to see them).
The views asserted on are each broker's own Metadata answer, not a client's
failover across the cluster.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import time
import zlib
from pathlib import Path

import grpc
import pytest

from client import record_batch
from client.protocol.v1 import common_pb2, kafka_pb2, kafka_pb2_grpc
from tests.integration.cluster import (BrokerProcess, Cluster, fetch_raw, log_events, metadata, produce_raw, wait_for,
                                       wait_log_events, wait_metadata)

pytestmark = pytest.mark.integration

# broker.session.timeout.ms for the tests where it matters (SIGSTOP); the default is 3000.
SESSION_TIMEOUT_MS = 2000
SHORT_SESSION = {"broker.session.timeout.ms": SESSION_TIMEOUT_MS}

# Loose bounds for a loaded 2-core CI machine; the goals are far lower (printed figures show them).
READY_BOUND_S = 20.0        # first process started -> three brokers registered, unfenced, one controller
ELECTION_BOUND_S = 10.0     # controller killed -> survivors agree on a new one
FAILOVER_BOUND_S = 3.0      # partition leader killed -> new leader visible in metadata (goal: 1 s)


# ---- helpers ------------------------------------------------------------------------


def partitions_of(response, topic: str) -> dict[int, kafka_pb2.PartitionMetadata]:
    for t in response.topics:
        if t.name == topic:
            assert t.error_code == common_pb2.NONE, f"{topic}: {common_pb2.ErrorCode.Name(t.error_code)}"
            return {p.partition: p for p in t.partitions}
    raise AssertionError(f"topic {topic} not in metadata from broker {response.answered_by}")


def assignment(response) -> dict[str, dict[int, list[int]]]:
    """topic -> partition -> replicas: what must survive anything short of a topic deletion."""
    return {t.name: {p.partition: list(p.replicas) for p in t.partitions} for t in response.topics}


def alive_ids(response) -> set[int]:
    return {b.broker_id for b in response.brokers if b.alive}


def create_topic_via(broker: BrokerProcess, name: str, partitions: int, replication_factor: int,
                     configs: dict[str, str] | None = None):
    """CreateTopics sent to this very broker (a non-controller forwards it to the controller)."""
    request = kafka_pb2.CreateTopicsRequest(timeout_ms=15000, topics=[kafka_pb2.CreatableTopic(
        name=name, num_partitions=partitions, replication_factor=replication_factor, configs=configs or {})])
    with grpc.insecure_channel(broker.bootstrap) as ch:
        return kafka_pb2_grpc.KafkaStub(ch).CreateTopics(request, timeout=20).topics[0]


def produce_to(broker: BrokerProcess, topic: str, partition: int, value: bytes, acks: int = 1,
               epoch: int = -1) -> kafka_pb2.PartitionProduceResponse:
    """One batch sent straight to ``broker`` (no client routing), with current_leader_epoch ``epoch``."""
    return produce_raw(broker, topic, record_batch.build_batch([(None, value, int(time.time() * 1000))]),
                       partition, epoch, acks)


def start_three(running_cluster, config=None) -> tuple[Cluster, int]:
    """Three brokers up, and the controller id all three agree on."""
    cluster = running_cluster(3, config)
    return cluster, cluster.wait_controller(timeout=10, alive={1, 2, 3})


def create_and_wait(cluster: Cluster, via: BrokerProcess, topic: str, partitions: int = 3,
                    replication_factor: int = 3) -> None:
    """Create ``topic`` and wait until every running broker sees every partition led by a live broker."""
    result = create_topic_via(via, topic, partitions, replication_factor)
    assert result.error_code == common_pb2.NONE, result

    def shows_it_led(r) -> bool:
        # Another broker applies the new topic when its Raft log catches up: until then its answer says
        # UNKNOWN_TOPIC_OR_PARTITION, which is a reason to wait, not a failure (a loaded CI machine showed it).
        t = next((t for t in r.topics if t.name == topic), None)
        return (t is not None and t.error_code == common_pb2.NONE and len(t.partitions) == partitions
                and all(p.leader_id in alive_ids(r) for p in t.partitions))
    for b in cluster.running():
        wait_metadata(b, shows_it_led, 10, f"{topic} with {partitions} led partitions", [topic])


def leader_not_controller(cluster: Cluster, controller_id: int, topic: str) -> tuple[BrokerProcess, dict]:
    """A broker that leads a partition of ``topic`` and is not the controller, and the partitions it leads."""
    parts = partitions_of(metadata(cluster.brokers[controller_id], [topic]), topic)
    for b in cluster.brokers.values():
        led = {n: p for n, p in parts.items() if p.leader_id == b.broker_id}
        if b.broker_id != controller_id and led:
            return b, led
    raise AssertionError(f"every partition of {topic} is led by the controller {controller_id}: "
                         f"{[(n, p.leader_id) for n, p in parts.items()]}")


def events_since_last_start(broker: BrokerProcess, event: str) -> list[dict]:
    entries = log_events(broker)
    starts = [i for i, e in enumerate(entries) if e.get("event") == "broker_started"]
    tail = entries[starts[-1]:] if starts else entries
    return [e for e in tail if e.get("event") == event]


# ---- 1. start and elect ------------------------------------------------------------


def test_three_brokers_start_and_agree_on_one_controller(fresh_cluster):
    cluster = fresh_cluster(3)
    started = time.monotonic()
    cluster.start_all(timeout=READY_BOUND_S)
    ready_s = time.monotonic() - started
    controller = cluster.wait_controller(timeout=5, alive={1, 2, 3})
    agreed_s = time.monotonic() - started
    print(f"\n[start] 3 brokers registered+unfenced in {ready_s:.2f} s, all agreeing on controller "
          f"{controller} after {agreed_s:.2f} s")

    assert agreed_s < READY_BOUND_S, f"the cluster took {agreed_s:.1f} s to be ready"
    assert controller in (1, 2, 3)
    views = cluster.views()
    assert set(views) == {1, 2, 3}, "every broker answers Metadata"
    for broker_id, view in views.items():
        assert view.answered_by == broker_id
        assert view.controller_id == controller, f"broker {broker_id} names controller {view.controller_id}"
        assert view.alive == {1, 2, 3} and not view.fenced, f"broker {broker_id} sees {view}"
    # The broker all three name did take the controller role (another may have held it briefly before).
    activated = {b.broker_id for b in cluster.brokers.values() if log_events(b, "controller_activated")}
    assert controller in activated, f"controller_activated logged by {activated}, not by {controller}"
    if activated != {controller}:
        print(f"[start] controller_activated logged by {sorted(activated)}: the role moved during start-up")


# ---- 2. the controller dies ----------------------------------------------------------


def test_kill_9_of_the_controller_elects_another_and_keeps_the_metadata(running_cluster):
    cluster, old = start_three(running_cluster)
    create_and_wait(cluster, cluster.brokers[old], "before")
    before = assignment(metadata(cluster.brokers[old], ["before"]))
    assert sorted(before["before"]) == [0, 1, 2]
    assert all(sorted(r) == [1, 2, 3] for r in before["before"].values()), before

    killed_at = time.monotonic()
    cluster.brokers[old].kill()
    survivors = cluster.running()
    new = cluster.wait_controller(survivors, timeout=ELECTION_BOUND_S, exclude=(old,))
    elected_s = time.monotonic() - killed_at
    for b in survivors:  # the new controller fences the old one (its connections dropped)
        wait_metadata(b, lambda r: old not in alive_ids(r) and alive_ids(r) == {s.broker_id for s in survivors},
                      10, f"broker {old} fenced, the survivors alive")
    fenced_s = time.monotonic() - killed_at
    print(f"\n[controller kill] controller {old} killed; survivors agree on {new} after {elected_s:.2f} s; "
          f"{old} fenced in every survivor's view after {fenced_s:.2f} s")

    assert new != old and new in {b.broker_id for b in survivors}
    for b in survivors:
        r = metadata(b, ["before"])
        assert assignment(r) == before, f"broker {b.broker_id}: replicas changed: {assignment(r)} != {before}"
        for n, p in partitions_of(r, "before").items():
            assert p.leader_id in alive_ids(r), f"broker {b.broker_id}: before-{n} led by {p.leader_id}"
            assert old not in p.isr, f"broker {b.broker_id}: the dead {old} still in before-{n}'s ISR {p.isr}"

    # A new topic through the survivor that is NOT the controller: it forwards the request.
    via = next(b for b in survivors if b.broker_id != new)
    result = create_topic_via(via, "after", 3, 2)
    assert result.error_code == common_pb2.NONE, result
    live = {b.broker_id for b in survivors}
    for b in survivors:
        r = wait_metadata(b, lambda r: len(partitions_of(r, "after")) == 3
                          and all(p.leader_id in live for p in partitions_of(r, "after").values()),
                          10, "topic 'after' with 3 led partitions", ["after"])
        for p in partitions_of(r, "after").values():
            assert len(p.replicas) == 2 and set(p.replicas) <= live, p


# ---- 3. a partition leader dies --------------------------------------------------------


def test_kill_9_of_a_leader_moves_its_partitions_within_seconds(running_cluster):
    cluster, controller = start_three(running_cluster)
    create_and_wait(cluster, cluster.brokers[controller], "failover")
    victim, led = leader_not_controller(cluster, controller, "failover")
    watcher = cluster.brokers[controller]

    def moved(r):
        parts = partitions_of(r, "failover")
        return all(parts[n].leader_id not in (victim.broker_id, -1) for n in led)

    killed_at = time.monotonic()
    victim.kill()
    r = wait_metadata(watcher, moved, 10, f"partitions {sorted(led)} led by someone else than {victim.broker_id}",
                      ["failover"], interval=0.01)
    failover_s = time.monotonic() - killed_at
    print(f"\n[leader kill] broker {victim.broker_id} (led partitions {sorted(led)}) killed; new leaders visible "
          f"on the controller {controller} after {failover_s * 1000:.0f} ms")

    parts = partitions_of(r, "failover")
    for n, old in led.items():
        new = parts[n]
        assert new.leader_id in old.isr and new.leader_id != victim.broker_id, (n, old, new)
        assert new.leader_epoch > old.leader_epoch, f"partition {n}: epoch {old.leader_epoch} -> {new.leader_epoch}"
    assert all(victim.broker_id not in p.isr for p in parts.values()), [list(p.isr) for p in parts.values()]
    assert victim.broker_id not in alive_ids(r), "fenced in the same batch that moved its leaderships"
    for b in cluster.running():
        wait_metadata(b, lambda r: victim.broker_id not in alive_ids(r) and moved(r), 5,
                      f"broker {victim.broker_id} fenced and its partitions moved", ["failover"])
    assert failover_s < FAILOVER_BOUND_S, f"failover took {failover_s:.2f} s (goal 1 s)"


# ---- 4. a partition leader hangs (SIGSTOP), then comes back -----------------------------------


def test_sigstop_of_a_leader_fences_it_and_sigcont_makes_it_a_follower(running_cluster):
    cluster, controller = start_three(running_cluster, SHORT_SESSION)
    create_and_wait(cluster, cluster.brokers[controller], "hung")
    victim, led = leader_not_controller(cluster, controller, "hung")
    watcher = cluster.brokers[controller]
    vid = victim.broker_id

    stopped_at = time.monotonic()
    victim.signal(signal.SIGSTOP)
    try:
        r = wait_metadata(watcher, lambda r: vid not in alive_ids(r) and all(
            partitions_of(r, "hung")[n].leader_id not in (vid, -1) for n in led),
            SESSION_TIMEOUT_MS / 1000 + 8, f"broker {vid} fenced and its partitions moved", ["hung"],
            interval=0.01)
        fenced_s = time.monotonic() - stopped_at
        after_fence = partitions_of(r, "hung")
        for n, old in led.items():
            assert after_fence[n].leader_id in old.isr, (n, old, after_fence[n])
            assert after_fence[n].leader_epoch > old.leader_epoch, (n, old, after_fence[n])
    finally:
        victim.signal(signal.SIGCONT)
    resumed_at = time.monotonic()

    # The old leader learns from the metadata it is a follower now: NOT_LEADER_OR_FOLLOWER and a hint.
    answers: list[str] = []
    for n in sorted(led):
        def refused():
            a = produce_to(victim, "hung", n, b"to-the-old-leader", acks=1, epoch=-1)
            answers.append(common_pb2.ErrorCode.Name(a.error_code))
            return a if a.error_code == common_pb2.NOT_LEADER_OR_FOLLOWER else None
        answer = wait_for(refused, 10, f"broker {vid} to refuse a produce to hung-{n} as NOT_LEADER_OR_FOLLOWER")
        new = after_fence[n]
        assert answer.error_code == 6
        assert answer.HasField("leader_hint"), answer
        assert answer.leader_hint.leader_id == new.leader_id, (answer.leader_hint, new)
        assert answer.leader_hint.leader_epoch == new.leader_epoch, (answer.leader_hint, new)
        assert answer.leader_hint.endpoint.port == cluster.brokers[new.leader_id].port, answer.leader_hint
    refused_s = time.monotonic() - resumed_at

    # And it is unfenced again: same process, same registration, heartbeats back.
    for b in cluster.running():
        wait_metadata(b, lambda r: alive_ids(r) == {1, 2, 3}, 15, f"broker {vid} unfenced again")
    unfenced_s = time.monotonic() - resumed_at
    final_controller = cluster.wait_controller(timeout=10, alive={1, 2, 3})
    print(f"\n[sigstop] broker {vid} (led {sorted(led)}) fenced {fenced_s * 1000:.0f} ms after SIGSTOP "
          f"(session timeout {SESSION_TIMEOUT_MS} ms); after SIGCONT: produce answers {answers} "
          f"(NOT_LEADER_OR_FOLLOWER after {refused_s * 1000:.0f} ms), unfenced after {unfenced_s * 1000:.0f} ms; "
          f"controller {controller} -> {final_controller}")
    registrations = log_events(victim, "broker_registration_accepted")
    assert len(registrations) == 1, f"a paused broker keeps its registration: {registrations}"
    # The leaderships did not come back to it on unfencing.
    r = metadata(watcher, ["hung"])
    assert all(partitions_of(r, "hung")[n].leader_id == after_fence[n].leader_id for n in led)


# ---- 5. a killed broker restarts ---------------------------------------------------------


def test_restart_after_kill_9_registers_anew_and_comes_back_as_follower(running_cluster):
    cluster, controller = start_three(running_cluster)
    create_and_wait(cluster, cluster.brokers[controller], "comeback")
    victim, led = leader_not_controller(cluster, controller, "comeback")
    vid = victim.broker_id
    watcher = cluster.brokers[controller]
    first = log_events(victim, "broker_registration_accepted")
    assert len(first) == 1

    victim.kill()
    r = wait_metadata(watcher, lambda r: vid not in alive_ids(r) and all(
        partitions_of(r, "comeback")[n].leader_id not in (vid, -1) for n in led), 10,
        f"broker {vid} fenced and its partitions moved", ["comeback"])
    moved = {n: partitions_of(r, "comeback")[n] for n in led}

    restarted_at = time.monotonic()
    victim.start()  # waits until it is registered and unfenced
    back_s = time.monotonic() - restarted_at
    cluster.wait_controller(timeout=10, alive={1, 2, 3})
    print(f"\n[restart] broker {vid} restarted and unfenced in {back_s:.2f} s; "
          f"its old partitions {sorted(led)} now led by {[moved[n].leader_id for n in sorted(led)]}")

    registrations = log_events(victim, "broker_registration_accepted")
    assert len(registrations) == 2, registrations
    assert registrations[1]["incarnation_id"] != registrations[0]["incarnation_id"]
    assert registrations[1]["broker_epoch"] > registrations[0]["broker_epoch"], registrations
    for b in cluster.brokers.values():
        r = metadata(b, ["comeback"])
        parts = partitions_of(r, "comeback")
        for n in led:
            assert parts[n].leader_id == moved[n].leader_id, f"broker {b.broker_id}: comeback-{n} {parts[n]}"
            assert parts[n].leader_epoch == moved[n].leader_epoch, f"broker {b.broker_id}: comeback-{n} {parts[n]}"
    # The restarted broker took its partitions as a follower, never as leader.
    took = {(e["topic"], e["partition"]): e["event"] for e in events_since_last_start(victim, "became_follower")
            + events_since_last_start(victim, "became_leader")}
    for n in led:
        assert took.get(("comeback", n)) == "became_follower", took


# ---- 6. all three die and restart -------------------------------------------------------


def test_all_three_killed_and_restarted_keep_the_metadata(running_cluster):
    cluster, controller = start_three(running_cluster)
    create_and_wait(cluster, cluster.brokers[controller], "everything", 3, 3)
    result = create_topic_via(cluster.brokers[controller], "small", 2, 2, {"retention.ms": "60000"})
    assert result.error_code == common_pb2.NONE, result
    wait_metadata(cluster.brokers[controller], lambda r: len(partitions_of(r, "small")) == 2, 10, "small", ["small"])
    before = metadata(cluster.brokers[controller])
    before_assignment = assignment(before)
    before_configs = {t.name: dict(t.configs) for t in before.topics}
    assert set(before_assignment) == {"everything", "small"}

    for b in cluster.brokers.values():
        b.kill()
    restarted_at = time.monotonic()
    cluster.start_all(timeout=READY_BOUND_S)
    new_controller = cluster.wait_controller(timeout=10, alive={1, 2, 3})
    ready_s = time.monotonic() - restarted_at
    for b in cluster.brokers.values():  # every partition gets a live leader again
        wait_metadata(b, lambda r: all(p.leader_id in alive_ids(r) for t in r.topics for p in t.partitions),
                      10, "every partition led by a live broker")
    led_s = time.monotonic() - restarted_at
    print(f"\n[full restart] controller {controller} before, {new_controller} after; ready in {ready_s:.2f} s, "
          f"every partition led after {led_s:.2f} s")

    for b in cluster.brokers.values():
        r = metadata(b)
        assert assignment(r) == before_assignment, f"broker {b.broker_id}: {assignment(r)} != {before_assignment}"
        assert {t.name: dict(t.configs) for t in r.topics} == before_configs
        assert r.controller_id == new_controller


def fetch_from(broker: BrokerProcess, topic: str, partition: int) -> kafka_pb2.FetchPartitionResponse | None:
    try:
        return fetch_raw(broker, topic, 0, partition=partition, timeout=5)
    except grpc.RpcError:
        return None


FULL_RESTART_CYCLES = 3
RECORDS_PER_PARTITION = 10


def test_full_restart_keeps_the_logs_of_topics_created_just_before(running_cluster):
    """Records acknowledged (acks=1, RF 1: no replication involved) must be in the log after a full restart.

    Each cycle creates a topic, writes to it and kills all three brokers at once within a second, then
    restarts them; the bug this guards against depends on timing, so it runs a few cycles.
    """
    cluster, controller = start_three(running_cluster)
    written: dict[tuple[str, int], int] = {}
    for cycle in range(FULL_RESTART_CYCLES):
        topic = f"recent-{cycle}"
        create_and_wait(cluster, cluster.brokers[cluster.wait_controller(timeout=10)], topic, 3, 1)
        parts = partitions_of(metadata(cluster.brokers[1], [topic]), topic)
        for n, p in parts.items():
            for k in range(RECORDS_PER_PARTITION):
                answer = produce_to(cluster.brokers[p.leader_id], topic, n, f"{topic}-{n}-{k}".encode(), acks=1)
                assert answer.error_code == common_pb2.NONE, answer
            written[(topic, n)] = RECORDS_PER_PARTITION
        for b in cluster.brokers.values():
            b.kill()
        cluster.start_all(timeout=READY_BOUND_S)
        cluster.wait_controller(timeout=10, alive={1, 2, 3})

        found = {}
        for (t, n), count in written.items():
            def readable():
                p = partitions_of(metadata(cluster.brokers[1], [t]), t)[n]
                r = fetch_from(cluster.brokers[p.leader_id], t, n) if p.leader_id in cluster.brokers else None
                return r if r is not None and r.error_code == common_pb2.NONE else None
            found[(t, n)] = wait_for(readable, 10, f"{t}-{n} readable from its leader").log_end_offset
        stray = {b.broker_id: [(e["topic"], e["partition"]) for e in log_events(b, "stray_log_deleted")]
                 for b in cluster.brokers.values()}
        print(f"\n[full restart {cycle + 1}/{FULL_RESTART_CYCLES}] log end offsets {found}; "
              f"logs deleted as stray: {stray}")
        lost = {tp: (written[tp], end) for tp, end in found.items() if end < written[tp]}
        assert not lost, f"acknowledged records gone after a full restart (written, log end): {lost}; stray: {stray}"


# ---- 7. graceful stop of a leader -----------------------------------------------------------


def test_sigterm_of_a_leader_moves_its_leaderships_before_it_exits(running_cluster):
    cluster, controller = start_three(running_cluster)
    create_and_wait(cluster, cluster.brokers[controller], "handover")
    victim, led = leader_not_controller(cluster, controller, "handover")
    vid = victim.broker_id

    stopping_at = time.monotonic()
    code = victim.terminate()
    stop_s = time.monotonic() - stopping_at
    # Read once, right after the exit: the controller committed the handover before it let the broker go.
    r = metadata(cluster.brokers[controller], ["handover"])
    print(f"\n[sigterm] broker {vid} (led {sorted(led)}) exited with {code} after {stop_s:.2f} s; "
          f"leaders now {[partitions_of(r, 'handover')[n].leader_id for n in sorted(led)]}")
    assert code == 0
    parts = partitions_of(r, "handover")
    assert vid not in alive_ids(r), f"broker {vid} not fenced when it exited"
    for n, old in led.items():
        assert parts[n].leader_id not in (vid, -1) and parts[n].leader_id in old.isr, (n, parts[n])
        assert parts[n].leader_epoch > old.leader_epoch, (n, old, parts[n])
    shutdown = log_events(victim, "controlled_shutdown")
    assert shutdown and shutdown[-1]["leaderships_moved"] is True, shutdown
    fenced = wait_log_events(cluster.brokers[controller], "broker_fenced", lambda e: e.get("broker") == vid)
    assert [e["reason"] for e in fenced] == ["controlled_shutdown"], fenced
    for b in cluster.running():
        wait_metadata(b, lambda r: vid not in alive_ids(r), 5, f"broker {vid} fenced")


# ---- 8. the Raft port and a peer without the cluster secret ---------------------------------------


class _MakeDir:
    """Unpickling this runs os.mkdir(path): proof that a frame was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _frame(data: bytes) -> bytes:
    return struct.pack("i", len(data)) + data  # pysyncobj's TcpConnection: native 4-byte length, then the data


def _send_and_wait_for_drop(port: int, payload: bytes, timeout: float = 5.0) -> str:
    """Send one frame to a Raft port as a stranger would; how the broker ended the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        deadline = time.monotonic() + timeout
        received = b""
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                return "reset"
            except socket.timeout:
                break
            if not chunk:
                return "closed"
            received += chunk
        raise AssertionError(f"the broker kept a stranger's connection open (sent back {len(received)} bytes)")


def _listen_addresses(port: int) -> list[str]:
    """Local addresses of LISTEN sockets on ``port`` in /proc/net/tcp and tcp6 (hex as the kernel writes them)."""
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(name)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def _non_loopback_ipv4() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            ip = None
    if ip and not ip.startswith("127.") and ip != "0.0.0.0":
        return ip
    try:
        for ip in socket.gethostbyname_ex(socket.gethostname())[2]:
            if not ip.startswith("127."):
                return ip
    except OSError:
        pass
    return None


def test_raft_port_drops_a_strangers_pickle_unread_and_listens_on_loopback_only(running_cluster, tmp_path):
    cluster, controller = start_three(running_cluster)
    target = cluster.brokers[controller]  # the leader of the quorum: the worst place to be hurt
    follower = next(b for b in cluster.brokers.values() if b.broker_id != controller)

    # Control: the payload really does make a directory when unpickled.
    control = tmp_path / "control-dir"
    pickle.loads(pickle.dumps(_MakeDir(str(control)), 2))
    assert control.is_dir()

    from cryptography.fernet import Fernet  # pysyncobj's own cipher, with a key that is not the cluster's
    markers, drops = [], {}
    for broker in (target, follower):
        for variant in ("plain", "zlib", "wrong-secret", "zlib-randkey"):
            marker = tmp_path / f"pwned-{broker.broker_id}-{variant}"
            markers.append(marker)
            message = pickle.dumps(_MakeDir(str(marker)), 2)
            if variant == "plain":          # a bare pickle
                data = message
            elif variant == "zlib":         # exactly what TcpConnection.send writes without a password
                data = zlib.compress(message, 3)
            elif variant == "wrong-secret":  # what it writes with a password that is not the cluster secret
                data = Fernet(Fernet.generate_key()).encrypt_at_time(zlib.compress(message, 3), int(time.monotonic()))
            else:                           # a (randKey, message) tuple, as after a key exchange
                data = zlib.compress(pickle.dumps((os.urandom(32), _MakeDir(str(marker))), 2), 3)
            drops[(broker.broker_id, variant)] = _send_and_wait_for_drop(broker.raft_port, _frame(data))
    print(f"\n[raft port] stranger's frames: {drops}")

    for marker in markers:
        assert not marker.exists(), f"{marker.name}: a stranger's pickle was unpickled by a broker"
    assert all(b.alive() for b in cluster.brokers.values())
    views = cluster.views()
    assert set(views) == {1, 2, 3}, "every broker still answers Metadata"
    assert cluster.wait_controller(timeout=10, alive={1, 2, 3}) == controller, "the quorum kept its leader"

    # The Raft port listens on loopback only.
    for b in cluster.brokers.values():
        addresses = _listen_addresses(b.raft_port)
        if Path("/proc/net/tcp").exists():
            assert addresses == ["0100007F"], f"broker {b.broker_id}'s raft port listens on {addresses}"
    ip = _non_loopback_ipv4()
    if ip is None:
        print("[raft port] no non-loopback IPv4 address here: the connect check is skipped")
        return
    for b in cluster.brokers.values():
        with pytest.raises(OSError):
            socket.create_connection((ip, b.raft_port), timeout=2).close()
    print(f"[raft port] connecting to {ip}:<raft_port> is refused for all three brokers")
