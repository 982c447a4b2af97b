"""The sender's verdict on a produce answer (no sockets: answers are handed to ``_complete`` directly).

OUT_OF_ORDER_SEQUENCE_NUMBER is retried, not failed, while a batch numbered before it is unresolved
(in flight, perhaps to a deposed leader, or waiting to be retried), as Kafka's producer does
(TransactionManager.canRetry); once every earlier batch is resolved it is a real gap and fails.
"""

import time

import pytest

from client.accumulator import BATCH_HEADER, RecordAccumulator, record_size
from client.client import KafkaClient
from client.errors import OutOfOrderSequenceNumberError
from client.protocol.v1 import common_pb2, kafka_pb2
from client.sender import InFlightRequest, Sender, SenderConfig, StreamState

OLD_LEADER, NEW_LEADER = ("127.0.0.1", 1), ("127.0.0.1", 2)
FULL = next(b"x" * n for n in range(100) if record_size(None, b"x" * n) == 100)   # one record fills a batch


@pytest.fixture
def sender():
    client = KafkaClient(":1")   # never called: no metadata, no connection
    acc = RecordAccumulator(100 + BATCH_HEADER, 60_000, 1_000_000, 0)
    s = Sender(client, acc, SenderConfig(acks=-1, request_timeout_ms=30_000, delivery_timeout_ms=120_000,
                                         retry_backoff_ms=100, retry_backoff_max_ms=1000, idempotent=True))
    s._producer_id, s._producer_epoch = 7, 0
    yield s
    client.close()


def _sent(sender: Sender, count: int):
    """``count`` full batches of t-0, drained and numbered (built) as the sender sends them."""
    for i in range(count):
        sender._acc.append("t", 0, None, FULL, i)
    batches, _, _ = sender._acc.drain(time.monotonic())
    for b in batches:
        sender._records(b)
    return batches


def _answer(sender: Sender, address, batch, code: int, base_offset: int = -1) -> None:
    response = kafka_pb2.ProduceResponse(correlation_id=1, answered_by=address[1], partitions=[
        kafka_pb2.PartitionProduceResponse(topic="t", partition=0, error_code=code, base_offset=base_offset)])
    sender._complete(address, InFlightRequest(1, [batch], time.monotonic() + 30), response)


def test_out_of_order_behind_a_batch_still_in_flight_to_the_old_leader_is_retried(sender):
    b0, b1 = _sent(sender, 2)    # sequences 0 and 1
    # The leader moved: b0 is still on its way to the old leader (no answer), b1 went to the new one.
    _answer(sender, NEW_LEADER, b1, common_pb2.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert not b1.done_event.is_set() and b1.attempts == 1     # requeued, not failed
    assert sender._producer_id == 7                            # and the producer id is kept
    _answer(sender, OLD_LEADER, b0, common_pb2.NOT_LEADER_OR_FOLLOWER)
    assert [b.records[0][2] for b in sender._acc._queues[("t", 0)]] == [0, 1]   # b0 goes first again


def test_out_of_order_with_every_earlier_batch_acknowledged_is_a_real_gap(sender):
    b0, b1 = _sent(sender, 2)
    _answer(sender, NEW_LEADER, b0, common_pb2.NONE, base_offset=10)
    _answer(sender, NEW_LEADER, b1, common_pb2.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert isinstance(b1.error, OutOfOrderSequenceNumberError)
    assert sender._producer_id == -1      # the sequence cannot continue: a new producer id next time


def test_out_of_order_for_the_first_batch_is_a_real_gap(sender):
    (b0,) = _sent(sender, 1)
    _answer(sender, NEW_LEADER, b0, common_pb2.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert isinstance(b0.error, OutOfOrderSequenceNumberError)


# ---- who settles an answer: the stream's reader thread (plain success) or the sender thread -------------


class _Stream:
    """A produce stream as the sender sees it (no socket): its address, and close()."""

    def __init__(self, address):
        self.address = address

    def close(self) -> None:
        pass


def _in_flight(sender: Sender, count: int):
    """``count`` requests of one batch each, in flight on one stream, correlation ids 1..count."""
    stream = _Stream(NEW_LEADER)
    state = StreamState(stream)
    sender._streams[NEW_LEADER] = state
    batches = _sent(sender, count)
    for i, b in enumerate(batches, 1):
        state.in_flight.append(InFlightRequest(i, [b], time.monotonic() + 30))
    return stream, state, batches


def _response(correlation_id: int, code: int, base_offset: int = -1):
    return kafka_pb2.ProduceResponse(correlation_id=correlation_id, answered_by=2, partitions=[
        kafka_pb2.PartitionProduceResponse(topic="t", partition=0, error_code=code, base_offset=base_offset)])


def test_a_plain_success_is_settled_on_the_reader_thread(sender):
    stream, state, (b0, b1) = _in_flight(sender, 2)
    sender._on_answer(stream, _response(1, common_pb2.NONE, 10), None)
    assert b0.done_event.is_set() and b0.base_offset == 10      # settled at once, no sender round
    assert [r.correlation_id for r in state.in_flight] == [2] and not sender._answers


def test_an_error_goes_to_the_sender_and_the_answers_after_it_wait_their_turn(sender):
    stream, state, (b0, b1) = _in_flight(sender, 2)
    sender._on_answer(stream, _response(1, common_pb2.NOT_LEADER_OR_FOLLOWER), None)
    sender._on_answer(stream, _response(2, common_pb2.NONE, 11), None)   # a success, behind a waiting answer
    assert not b0.done_event.is_set() and not b1.done_event.is_set(), "b1 overtook b0's answer"
    assert [a[1].correlation_id for a in sender._answers] == [1, 2]
    sender._handle_answers(time.monotonic())
    assert b1.done_event.is_set() and b1.base_offset == 11 and not b0.done_event.is_set()   # b0: retried


def test_a_success_for_another_request_or_stream_is_left_to_the_sender(sender):
    stream, state, (b0,) = _in_flight(sender, 1)
    sender._on_answer(stream, _response(5, common_pb2.NONE, 10), None)    # not the oldest request
    sender._on_answer(_Stream(NEW_LEADER), _response(1, common_pb2.NONE, 10), None)   # a stream given up
    assert not b0.done_event.is_set() and len(sender._answers) == 2
