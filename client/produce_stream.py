"""One pipelined produce connection to one broker (the ProduceStream RPC).

Kafka keeps a producer's requests in order because one TCP connection's
requests are handled one at a time, in order, while several may be in flight.
gRPC unary calls give no such order (each runs on its own server thread), so
the producer opens one bidirectional stream per broker: requests are written
in order, the broker appends them in that order and answers them in that
order. Answers are read on a small thread and handed to the sender through
``on_answer``; a broken stream is reported once, with the error, and every
request still in flight on it has an unknown outcome. The queue-fed call and how
it ends are client/bidi_stream.py's, shared with the follower's fetch stream.
"""

from __future__ import annotations

import threading
from typing import Callable

import grpc

from client.bidi_stream import BidiStream
from client.connection import Address, format_address
from client.errors import KafkaConnectionError, KafkaError
from client.protocol.v1 import kafka_pb2, kafka_pb2_grpc

# (stream, answer or None, error when the stream broke or None)
AnswerHandler = Callable[["ProduceStream", "kafka_pb2.ProduceResponse | None", "KafkaError | None"], None]


class ProduceStream:
    def __init__(self, stub: kafka_pb2_grpc.KafkaStub, address: Address, on_answer: AnswerHandler,
                 map_error: Callable[[grpc.RpcError, Address], KafkaError]):
        self.address = address
        self._on_answer = on_answer
        self._map_error = map_error
        # No deadline on the call: it lives as long as the producer; each request has its own
        # timeout, enforced by the sender (which closes the stream when one runs out).
        self._call = BidiStream(stub.ProduceStream)
        self._reader = threading.Thread(target=self._read, name=f"raftka-produce-{format_address(address)}",
                                        daemon=True)
        self._reader.start()

    def send(self, request: kafka_pb2.ProduceRequest) -> None:
        self._call.send(request)

    def close(self, timeout: float = 5.0) -> None:
        """End the request side and cancel the call; the reader thread then ends."""
        self._call.close()
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout)

    def _read(self) -> None:
        try:
            for response in self._call:
                self._on_answer(self, response, None)
            error: KafkaError = KafkaConnectionError(f"broker at {format_address(self.address)} "
                                                     "ended the produce stream")
        except grpc.RpcError as e:
            error = self._map_error(e, self.address)
        self._call.close()   # the call is over: end its request side too
        self._on_answer(self, None, error)
