"""The serving gate (broker/readiness.py) on a real in-process gRPC server, and the client's reading of it."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest

from broker.readiness import ServingGate
from client.client import KafkaClient
from client.errors import BrokerNotReadyError, KafkaError
from client.protocol.v1 import kafka_pb2, kafka_pb2_grpc


class AnswersMetadata(kafka_pb2_grpc.KafkaServicer):
    def __init__(self, broker_id: int):
        self.broker_id = broker_id
        self.calls = 0

    def Metadata(self, request, context):
        self.calls += 1
        return kafka_pb2.MetadataResponse(cluster_id="c", controller_id=1, answered_by=self.broker_id,
                                          brokers=[kafka_pb2.BrokerMetadata(broker_id=self.broker_id,
                                                                           host="127.0.0.1", port=1, alive=True)])


@pytest.fixture
def servers():
    started = []

    def start(broker_id: int, caught_up) -> tuple[int, AnswersMetadata]:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                             interceptors=[ServingGate(broker_id, caught_up, lambda: 7)])
        servicer = AnswersMetadata(broker_id)
        kafka_pb2_grpc.add_KafkaServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        started.append(server)
        return port, servicer

    yield start
    for s in started:
        s.stop(None)


def test_calls_are_refused_unavailable_with_one_line_until_caught_up_then_served(servers):
    ready = threading.Event()
    port, servicer = servers(2, ready.is_set)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = kafka_pb2_grpc.KafkaStub(ch)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Metadata(kafka_pb2.MetadataRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == ("not serving yet: broker 2 is catching up with the metadata log "
                                           "(applied offset 7); try another broker or retry")
        assert servicer.calls == 0, "the refused call reached the servicer"
        error = KafkaClient.map_rpc_error(refused.value, ("127.0.0.1", port))
        assert isinstance(error, BrokerNotReadyError) and error.retriable and error.invalid_metadata
        assert "\n" not in str(error)
        ready.set()
        assert stub.Metadata(kafka_pb2.MetadataRequest(), timeout=5).answered_by == 2
        assert servicer.calls == 1


def test_the_client_moves_on_to_the_next_bootstrap_broker(servers):
    gated_port, gated = servers(2, lambda: False)
    open_port, serving = servers(3, lambda: True)
    client = KafkaClient(f"127.0.0.1:{gated_port},127.0.0.1:{open_port}")
    try:
        for _ in range(3):
            assert client.refresh_metadata().answered_by == 3
    finally:
        client.close()
    assert gated.calls == 0 and serving.calls == 3


def test_a_client_with_only_the_starting_broker_gets_a_retriable_error(servers):
    port, _ = servers(2, lambda: False)
    client = KafkaClient(f"127.0.0.1:{port}")
    try:
        with pytest.raises(KafkaError) as e:
            client.refresh_metadata()
        assert e.value.retriable
    finally:
        client.close()
