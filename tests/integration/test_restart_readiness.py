"""A restarting broker answers clients only from metadata at least as new as what was committed at its start.

Each case kills one broker with kill -9 (a partition leader, a follower, the
controller), waits until the survivors have committed its fencing and moved its
leaderships, then restarts it and polls it from the moment its process starts,
as fast as it answers. Every answer it gives must be at least as new as the
committed metadata at its start: every topic known (never UNKNOWN_TOPIC_OR_PARTITION
for a live topic), no partition at an older leader or partition epoch. Before it
has caught up it must refuse with gRPC UNAVAILABLE "not serving yet" (which the
client library turns into a retriable BrokerNotReadyError).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc
import pytest

from client.errors import NOT_SERVING_PREFIX
from client.protocol.v1 import common_pb2, kafka_pb2, kafka_pb2_grpc
from tests.integration.cluster import BrokerProcess, Cluster, metadata, wait_metadata
from tests.integration.test_cluster_quorum import (alive_ids, create_and_wait, partitions_of, start_three,
                                                   SHORT_SESSION)

pytestmark = pytest.mark.integration

TOPICS = ["s", "f"]
POLL_BOUND_S = 30.0          # restart -> registered and unfenced, on a loaded 2-core machine
ANSWERS_AFTER_READY = 5      # answers checked once the restarted broker calls itself alive
# Fast redial: gRPC's default reconnect backoff (1 s and up) would hide the moment the port opens.
FAST_REDIAL = [("grpc.initial_reconnect_backoff_ms", 10), ("grpc.min_reconnect_backoff_ms", 10),
               ("grpc.max_reconnect_backoff_ms", 50)]


@dataclass
class Observation:
    case: str
    victim: int
    refused_not_serving: int = 0
    answers: int = 0
    stale: list[str] = field(default_factory=list)
    started_at: float = 0.0
    port_open_at: float | None = None      # first reply of any kind (a refusal or an answer)
    first_answer_at: float | None = None

    def row(self) -> str:
        port = f"{(self.port_open_at - self.started_at) * 1000:.0f} ms" if self.port_open_at else "-"
        gap = (f"{(self.first_answer_at - self.port_open_at) * 1000:.0f} ms"
               if self.first_answer_at and self.port_open_at else "-")
        return (f"{self.case:<16} broker {self.victim}: port open after start {port}, first answer after port "
                f"open {gap}, {self.refused_not_serving} refused (not serving yet), {self.answers} answers, "
                f"{len(self.stale)} stale")


def committed_state(response) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(topic, partition) -> (leader, leader_epoch, partition_epoch) of one Metadata answer."""
    return {(t, n): (p.leader_id, p.leader_epoch, p.partition_epoch)
            for t in TOPICS for n, p in partitions_of(response, t).items()}


def staleness(response, committed: dict[tuple[str, int], tuple[int, int, int]]) -> list[str]:
    """What in ``response`` is older than ``committed`` (an unknown topic, an older epoch)."""
    found = []
    for t in response.topics:
        if t.error_code != common_pb2.NONE:
            found.append(f"{t.name}: {common_pb2.ErrorCode.Name(t.error_code)}")
            continue
        for p in t.partitions:
            leader, leader_epoch, partition_epoch = committed[(t.name, p.partition)]
            if p.leader_epoch < leader_epoch or p.partition_epoch < partition_epoch:
                found.append(f"{t.name}-{p.partition}: leader {p.leader_id} epoch {p.leader_epoch} partition epoch "
                             f"{p.partition_epoch}, older than committed leader {leader} epoch {leader_epoch} "
                             f"partition epoch {partition_epoch}")
    return found


def observe_restart(case: str, victim: BrokerProcess, committed) -> Observation:
    """Start ``victim`` and poll its Metadata until it has answered as registered and unfenced a few times."""
    obs = Observation(case, victim.broker_id, started_at=time.monotonic())
    victim.start(wait=False)
    deadline = obs.started_at + POLL_BOUND_S
    ready_answers = 0
    with grpc.insecure_channel(victim.bootstrap, options=FAST_REDIAL) as channel:
        stub = kafka_pb2_grpc.KafkaStub(channel)
        while ready_answers < ANSWERS_AFTER_READY and time.monotonic() < deadline:
            assert victim.proc.poll() is None, f"broker {victim.broker_id} exited:\n{victim.log()}"
            try:
                r = stub.Metadata(kafka_pb2.MetadataRequest(topics=TOPICS), timeout=1.0)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE and (e.details() or "").startswith(NOT_SERVING_PREFIX):
                    obs.port_open_at = obs.port_open_at or time.monotonic()
                    obs.refused_not_serving += 1
                time.sleep(0.005)
                continue
            now = time.monotonic()
            obs.port_open_at = obs.port_open_at or now
            obs.first_answer_at = obs.first_answer_at or now
            obs.answers += 1
            obs.stale += staleness(r, committed)
            if victim.broker_id in alive_ids(r):
                ready_answers += 1
    assert ready_answers >= ANSWERS_AFTER_READY, (f"broker {victim.broker_id} not registered and unfenced "
                                                  f"{POLL_BOUND_S} s after its restart:\n{victim.log()[-3000:]}")
    return obs


def kill_and_wait_fenced(cluster: Cluster, victim: BrokerProcess) -> dict:
    """kill -9 ``victim``; once a survivor shows it fenced and leading nothing, that survivor's state."""
    vid = victim.broker_id
    watcher = next(b for b in cluster.brokers.values() if b.broker_id != vid)
    victim.kill()
    r = wait_metadata(watcher, lambda r: vid not in alive_ids(r) and r.controller_id not in (vid, -1) and all(
        p.leader_id not in (vid, -1) for t in TOPICS for p in partitions_of(r, t).values()), 15,
        f"broker {vid} fenced and its leaderships moved", TOPICS)
    return committed_state(r)


def pick_victims(cluster: Cluster, controller: int) -> list[tuple[str, int]]:
    parts = partitions_of(metadata(cluster.brokers[controller], ["f"]), "f")
    f_leader = parts[0].leader_id
    s_parts = partitions_of(metadata(cluster.brokers[controller], ["s"]), "s")
    leader = next(p.leader_id for p in s_parts.values() if p.leader_id != controller)
    follower = next(b for b in (1, 2, 3) if b not in (controller, f_leader))
    return [("killed leader", leader), ("killed follower", follower), ("killed controller", controller)]


def test_a_restarting_broker_never_answers_from_metadata_older_than_at_its_start(running_cluster):
    cluster, controller = start_three(running_cluster, SHORT_SESSION)
    create_and_wait(cluster, cluster.brokers[controller], "s", partitions=3)
    create_and_wait(cluster, cluster.brokers[controller], "f", partitions=1)
    observations = []
    for case, vid in pick_victims(cluster, controller):
        victim = cluster.brokers[vid]
        committed = kill_and_wait_fenced(cluster, victim)
        observations.append(observe_restart(case, victim, committed))
        victim.wait_ready()
        cluster.wait_controller(timeout=15, alive={1, 2, 3})
    print("\n[readiness] " + "\n[readiness] ".join(o.row() for o in observations))
    for o in observations:
        assert not o.stale, f"{o.case}: broker {o.victim} answered from stale metadata: {o.stale[:5]}"
        assert o.answers >= ANSWERS_AFTER_READY, o.row()
