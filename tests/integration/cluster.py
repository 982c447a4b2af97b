"""The test side of the cluster harness: raftka_testing.cluster plus probes only tests use.

Processes, clusters, waits and replica reads live in raftka_testing.cluster (bench/ and the
chaos harness use them too); they are imported here so every test keeps importing from this
module. What stays here pokes a broker the way only a test does: a raw produce / fetch, its log
events, a call as a broker on the inter-broker port, the kclient subprocess, its files on disk.
"""

from __future__ import annotations

import json
import subprocess
import sys

import grpc

from broker.inter_broker_auth import broker_token, with_token
from client.protocol.v1 import kafka_pb2, kafka_pb2_grpc
from client.record_batch import decode_all
from raftka_testing.cluster import (  # noqa: F401  (re-exported: tests import them from here)
    CLUSTER_ID, CLUSTER_SECRET, REPO, BrokerProcess, Cluster, ClusterView, ReplicaOffsets, cluster_view,
    free_port, free_ports, log_bytes, metadata, partition_dir, read_replica, replica_offsets, segment_files,
    wait_for, wait_metadata, write_cluster)


def produce_raw(broker: BrokerProcess, topic: str, records: bytes, partition: int = 0, epoch: int = -1,
                acks: int = -1, timeout_ms: int = 5000) -> kafka_pb2.PartitionProduceResponse:
    """One record batch sent straight to ``broker`` (no client routing, no retry)."""
    request = kafka_pb2.ProduceRequest(acks=acks, timeout_ms=timeout_ms, partitions=[kafka_pb2.PartitionProduceData(
        topic=topic, partition=partition, records=records, current_leader_epoch=epoch)])
    with grpc.insecure_channel(broker.bootstrap) as ch:
        return kafka_pb2_grpc.KafkaStub(ch).Produce(request, timeout=timeout_ms / 1000 + 10).partitions[0]


def fetch_raw(broker: BrokerProcess, topic: str, offset: int, max_wait_ms: int = 0, partition: int = 0,
              timeout: float = 10.0) -> kafka_pb2.FetchPartitionResponse:
    """One consumer Fetch sent straight to ``broker`` (below its HW; no client routing)."""
    request = kafka_pb2.FetchRequest(replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1, partitions=[
        kafka_pb2.FetchPartition(topic=topic, partition=partition, fetch_offset=offset, current_leader_epoch=-1)])
    with grpc.insecure_channel(broker.bootstrap) as ch:
        return kafka_pb2_grpc.KafkaStub(ch).Fetch(request, timeout=max_wait_ms / 1000 + timeout).partitions[0]


def log_events(broker: BrokerProcess, event: str | None = None) -> list[dict]:
    """The broker's JSON log lines (all, or those whose event is ``event``), oldest first."""
    out = []
    for line in broker.log().splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if event is None or entry.get("event") == event:
            out.append(entry)
    return out


def wait_log_events(broker: BrokerProcess, event: str, where=lambda e: True, timeout: float = 10.0) -> list[dict]:
    """The broker's ``event`` lines that satisfy ``where``, once there is one (AssertionError after ``timeout``).
    A broker's lines reach its log file from a writer thread of their own (logging_setup.LineWriter), a moment
    after the call that logged them may have answered: a line logged just before an answer is waited for."""
    return wait_for(lambda: [e for e in log_events(broker, event) if where(e)], timeout,
                    f"broker {broker.broker_id} to log {event}")


def broker_channel(broker: "BrokerProcess") -> grpc.Channel:
    """A channel that calls as a broker does: to its inter-broker port, with the cluster's token,
    which the broker-only services there (Replication, Controller) require."""
    return with_token(broker_token(CLUSTER_ID, CLUSTER_SECRET))(
        grpc.insecure_channel(f"{broker.host}:{broker.inter_broker_port}"))


def kclient(*args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m client.cli`) and capture its output."""
    return subprocess.run([sys.executable, "-m", "client.cli", *args], input=input, capture_output=True,
                          timeout=timeout, cwd=REPO)


def log_records(broker: BrokerProcess, topic: str, partition: int = 0,
                upto_offset: int | None = None) -> list[tuple[int, bytes | None]]:
    """(offset, value) of every record in the broker's segment files below ``upto_offset``."""
    return [(r.offset, r.value) for r in decode_all(log_bytes(broker, topic, partition, upto_offset))]


def leader_epoch_entries(broker: BrokerProcess, topic: str, partition: int = 0) -> list[tuple[int, int]]:
    """(epoch, start offset) pairs of the replica's leader-epoch-checkpoint ([] if there is none yet)."""
    path = partition_dir(broker, topic, partition) / "leader-epoch-checkpoint"
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    count = int(lines[1])
    return [tuple(int(x) for x in line.split()) for line in lines[2:2 + count]]
