"""Client load cannot starve inter-broker traffic (issue 14, defect 4).

Replica fetches, heartbeats, registration and AlterPartition travel on each broker's
inter_broker_port: a gRPC server of its own, with its own threads, call budget and stream slots
(Kafka's control plane listener). Here every broker's client port is saturated with more idle
producer streams than grpc.max.concurrent.streams, plus long-polling fetches, for three times
replica.lag.time.max.ms and broker.session.timeout.ms. When followers shared the client port's
slots, the fetch streams they open for a new topic were refused RESOURCE_EXHAUSTED and the
followers left the ISR within the lag time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import grpc
import pytest

from broker.config import BrokerSettings
from broker.inter_broker_auth import broker_token, with_token
from client import Admin, record_batch
from client.protocol.v1 import (common_pb2, controller_pb2, controller_pb2_grpc, kafka_pb2, kafka_pb2_grpc,
                                replication_pb2_grpc)
from tests.integration.cluster import (CLUSTER_ID, CLUSTER_SECRET, BrokerProcess, Cluster, broker_channel,
                                       log_events, metadata, read_replica, replica_offsets, wait_for,
                                       wait_metadata)

STREAM_CAP = BrokerSettings().grpc_max_concurrent_streams   # the default, 32: the "32+ producer streams"
STREAMS_PER_BROKER = STREAM_CAP + 8
LONG_POLLS_PER_BROKER = 2
# Short enough that refused fetch streams (the defect) shrink the ISR well within the hold, long enough
# that a follower starved of CPU by a neighbouring test under `make test -n 2` is not (2 s was, once).
LAG_MS = SESSION_MS = 3000
HOLD_S = 3 * LAG_MS / 1000
CONFIG = {"replica.lag.time.max.ms": LAG_MS, "broker.session.timeout.ms": SESSION_MS, "min.insync.replicas": 2}
TOPIC = "isolated"


def produce_request(topic: str, partition: int, value: bytes, acks: int) -> kafka_pb2.ProduceRequest:
    return kafka_pb2.ProduceRequest(acks=acks, timeout_ms=3000, partitions=[kafka_pb2.PartitionProduceData(
        topic=topic, partition=partition, records=record_batch.build_batch([(None, value, 1)]),
        current_leader_epoch=-1)])


class ClientLoad:
    """Long-lived producer streams that send one batch, then idle until released (each on its own
    connection, like many producers), and long-polling consumer fetches retried while refused."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.channels: list[grpc.Channel] = []
        self.streams: list = []
        self.counts: Counter = Counter()

    def open_stream(self, broker: BrokerProcess, topic: str, partition: int) -> bool:
        """True if the broker admitted the stream, False if it refused it (RESOURCE_EXHAUSTED)."""
        channel = grpc.insecure_channel(broker.bootstrap)
        self.channels.append(channel)

        def requests():
            yield produce_request(topic, partition, b"idle", acks=1)
            self.release.wait(120)

        call = kafka_pb2_grpc.KafkaStub(channel).ProduceStream(requests(), timeout=120)
        try:
            next(call)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            return False
        self.streams.append(call)
        return True

    def long_poll(self, broker: BrokerProcess, topic: str, partition: int, offset: int) -> None:
        with grpc.insecure_channel(broker.bootstrap) as channel:
            stub = kafka_pb2_grpc.KafkaStub(channel)
            while not self.release.is_set():
                try:
                    stub.Fetch(kafka_pb2.FetchRequest(replica_id=-1, max_wait_ms=5000, min_bytes=1, partitions=[
                        kafka_pb2.FetchPartition(topic=topic, partition=partition, fetch_offset=offset,
                                                 current_leader_epoch=-1)]), timeout=10)
                    self.counts["long polls held"] += 1
                except grpc.RpcError as e:
                    self.counts[f"long polls {e.code().name}"] += 1
                    self.release.wait(0.1)

    def close(self) -> None:
        self.release.set()
        for call in self.streams:
            call.cancel()
        for channel in self.channels:
            channel.close()


def saturate(cluster: Cluster, load: ClientLoad) -> dict[int, int]:
    """STREAMS_PER_BROKER streams and LONG_POLLS_PER_BROKER long polls on every broker's client port,
    to the partition of topic "load" (RF 1) it leads; the number of streams each admitted."""
    first = cluster.brokers[1]
    Admin(first.bootstrap).create_topic("load", partitions=len(cluster.brokers), replication_factor=1)
    md = wait_metadata(first, lambda r: all(p.leader_id >= 0 for p in r.topics[0].partitions), 10,
                       "a leader for every partition of load", ["load"])
    admitted = {}
    for p in md.topics[0].partitions:
        broker = cluster.brokers[p.leader_id]
        admitted[broker.broker_id] = sum(load.open_stream(broker, "load", p.partition)
                                         for _ in range(STREAMS_PER_BROKER))
        end = replica_offsets(broker, "load", p.partition).log_end_offset
        for _ in range(LONG_POLLS_PER_BROKER):
            threading.Thread(target=load.long_poll, args=(broker, "load", p.partition, end), daemon=True).start()
    return admitted


def still_saturated(broker: BrokerProcess) -> bool:
    """One more ProduceStream is refused: the client port's stream slots are all taken."""
    load = ClientLoad()
    try:
        return not load.open_stream(broker, "load", 0)
    finally:
        load.close()


def hold_and_probe(cluster: Cluster, leaders: dict[int, int], controller: BrokerProcess) -> tuple[dict, list]:
    """For HOLD_S: acks=all produces to each partition's leader, one unary call at a time on a separate
    connection (unary calls are admitted: they keep threads), and the controller's metadata sampled.
    Returns the acknowledged values per partition and the samples (ISR sizes, unfenced brokers)."""
    acked: dict[int, list[bytes]] = {p: [] for p in leaders}
    samples = []
    channels = {b: grpc.insecure_channel(cluster.brokers[b].bootstrap) for b in set(leaders.values())}
    deadline, n = time.monotonic() + HOLD_S, 0
    try:
        while time.monotonic() < deadline:
            for p, leader in leaders.items():
                n += 1
                value = f"acked-{p}-{n}".encode()
                try:
                    r = kafka_pb2_grpc.KafkaStub(channels[leader]).Produce(
                        produce_request(TOPIC, p, value, acks=-1), timeout=10).partitions[0]
                    if r.error_code == common_pb2.NONE:
                        acked[p].append(value)
                except grpc.RpcError:
                    pass   # counted as not acknowledged
            md = metadata(controller, [TOPIC])
            if md is not None:
                samples.append(([len(p.isr) for p in md.topics[0].partitions],
                                {b.broker_id for b in md.brokers if b.alive}))
    finally:
        for channel in channels.values():
            channel.close()
    return acked, samples


def test_client_load_cannot_shrink_the_isr_or_fence_a_broker(running_cluster):
    cluster = running_cluster(3, CONFIG)
    load = ClientLoad()
    try:
        admitted = saturate(cluster, load)
        assert admitted == {b: STREAM_CAP for b in cluster.brokers}, admitted
        controller = cluster.brokers[cluster.wait_controller()]
        fenced_before = sum(len(log_events(b, "broker_fenced")) for b in cluster.brokers.values())
        # Created under load: each follower opens its fetch streams now, while the client ports are full.
        Admin(controller.bootstrap).create_topic(TOPIC, partitions=3, replication_factor=3)
        md = wait_metadata(controller, lambda r: r.topics[0].partitions and all(
            p.leader_id >= 0 and len(p.isr) == 3 for p in r.topics[0].partitions), 10, "leaders, full ISRs", [TOPIC])
        leaders = {p.partition: p.leader_id for p in md.topics[0].partitions}
        acked, samples = hold_and_probe(cluster, leaders, controller)
        saturated = {b.broker_id: still_saturated(b) for b in cluster.brokers.values()}
    finally:
        load.close()
    shrinks = [e for b in cluster.brokers.values() for e in log_events(b, "isr_shrink_requested")
               if e.get("topic") == TOPIC]
    fenced = sum(len(log_events(b, "broker_fenced")) for b in cluster.brokers.values()) - fenced_before
    assert saturated == {1: True, 2: True, 3: True}, f"a client port was not full at the end: {saturated}"
    assert load.counts["long polls RESOURCE_EXHAUSTED"] > 0, load.counts
    assert not shrinks, f"followers left the ISR under client load: {shrinks}"
    assert samples and all(sizes == [3, 3, 3] and alive == {1, 2, 3} for sizes, alive in samples), \
        [s for s in samples if s[0] != [3, 3, 3] or s[1] != {1, 2, 3}][:5]
    assert fenced == 0, f"{fenced} broker_fenced events under client load"
    assert all(len(values) >= 10 for values in acked.values()), {p: len(v) for p, v in acked.items()}
    for p, values in acked.items():
        end = replica_offsets(cluster.brokers[leaders[p]], TOPIC, p).log_end_offset
        for b in cluster.brokers.values():
            wait_for(lambda: (o := replica_offsets(b, TOPIC, p)) and o.high_watermark >= end, 10,
                     f"broker {b.broker_id}'s HW of {TOPIC}-{p} to reach {end}")
            stored = {v for _, v in read_replica(b, TOPIC, p)}
            assert all(v in stored for v in values), f"{TOPIC}-{p} on broker {b.broker_id} lacks acked values"
    print(f"\n[inter-broker isolation] {STREAM_CAP} of {STREAMS_PER_BROKER} producer streams admitted per broker, "
          f"{dict(load.counts)}; held {HOLD_S:.0f} s (lag and session timeouts {LAG_MS} ms): ISR 3/3 in all "
          f"{len(samples)} samples, 0 fenced, 0 ISR shrinks; acks=all acked "
          f"{ {p: len(v) for p, v in acked.items()} }, each found on all 3 replicas")


def test_each_port_serves_only_its_own_services(single_broker):
    """The client port has no broker-only service, even for a caller with the token (UNIMPLEMENTED);
    the inter-broker port refuses every call without the token (UNAUTHENTICATED) and serves no client
    API."""
    fetch = kafka_pb2.FetchRequest(replica_id=2)
    heartbeat = controller_pb2.BrokerHeartbeatRequest(broker_id=1, broker_epoch=10**9)

    def code(call) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as e:
            call()
        return e.value.code()

    def broker_calls(channel: grpc.Channel) -> list[grpc.StatusCode]:
        """How a ReplicaFetch, a ReplicaFetchStream and a BrokerHeartbeat on ``channel`` are refused."""
        replication, controller = (replication_pb2_grpc.ReplicationStub(channel),
                                   controller_pb2_grpc.ControllerStub(channel))
        return [code(lambda: replication.ReplicaFetch(fetch, timeout=5)),
                code(lambda: list(replication.ReplicaFetchStream(iter([fetch]), timeout=5))),
                code(lambda: controller.BrokerHeartbeat(heartbeat, timeout=5))]

    with_cluster_token = with_token(broker_token(CLUSTER_ID, CLUSTER_SECRET))
    with with_cluster_token(grpc.insecure_channel(single_broker.bootstrap)) as client_port:
        assert broker_calls(client_port) == [grpc.StatusCode.UNIMPLEMENTED] * 3
    with grpc.insecure_channel(f"127.0.0.1:{single_broker.inter_broker_port}") as stranger:
        assert broker_calls(stranger) == [grpc.StatusCode.UNAUTHENTICATED] * 3
    with broker_channel(single_broker) as as_broker:
        metadata_call = kafka_pb2_grpc.KafkaStub(as_broker).Metadata
        assert code(lambda: metadata_call(kafka_pb2.MetadataRequest(), timeout=5)) == grpc.StatusCode.UNIMPLEMENTED
        answer = controller_pb2_grpc.ControllerStub(as_broker).BrokerHeartbeat(heartbeat, timeout=5)
        assert answer.error_code == common_pb2.STALE_BROKER_EPOCH   # with the token: served, by the controller
