"""The fetcher's watchdog decision (a stream whose answer is overdue is cancelled, no sooner), what its fetch
session names, what a round's refused partitions log, and how only they sit out the backoff."""

from __future__ import annotations

import time

import structlog

from broker.config import BrokerSettings
from broker.logging_setup import PARTITION_EVENTS_PER_CHANGE_UP_TO
from broker.replica_fetcher import ANSWER_GRACE_S, ReplicaFetcherThread
from client.protocol.v1 import common_pb2, kafka_pb2


class RecordingStream:
    """Stands in for the gRPC stream: only its close() is observed."""

    def __init__(self):
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def fetcher() -> ReplicaFetcherThread:
    # Not started: the test drives the check directly with its own clock.
    return ReplicaFetcherThread(2, 1, ("127.0.0.1", 1), None, BrokerSettings(replica_fetch_wait_max_ms=500), None)


def test_nothing_is_cancelled_while_no_request_awaits_an_answer():
    t = fetcher()
    t._stream = RecordingStream()
    assert not t.cancel_if_overdue(now=1e9)
    assert t._stream.closed == 0


def test_a_stream_is_cancelled_only_after_the_long_poll_plus_grace():
    t = fetcher()
    stream = t._stream = RecordingStream()
    t._sent_at = 100.0
    limit = 0.5 + ANSWER_GRACE_S
    assert not t.cancel_if_overdue(now=100.0 + limit - 0.01)
    assert stream.closed == 0
    assert t.cancel_if_overdue(now=100.0 + limit + 0.01)
    assert stream.closed == 1


# ---- the follower's side of a fetch session (KIP-227): what each request names ------------------------------


class Positions:
    """Stands in for the replica manager: each partition's (fetch offset, last fetched epoch), or None."""

    def __init__(self, positions: dict):
        self.positions = positions

    def fetch_position(self, tp, leader_id, leader_epoch):
        return self.positions.get(tp)


def named(request) -> tuple[bool, list, list]:
    return (request.incremental, sorted((p.topic, p.partition, p.fetch_offset) for p in request.partitions),
            sorted((f.topic, f.partition) for f in request.forgotten))


def test_after_a_full_first_request_a_session_names_only_what_moved_and_what_was_dropped():
    positions = Positions({("t", p): (10, 0) for p in range(3)})
    t = ReplicaFetcherThread(2, 1, ("127.0.0.1", 1), positions, BrokerSettings(), None)
    for p in range(3):
        t.set(("t", p), 0)

    def next_request():
        with t._lock:
            partitions, dirty, t._dirty = dict(t._partitions), t._dirty, set()
        return t._build_request(partitions, dirty)

    assert named(next_request()) == (False, [("t", 0, 10), ("t", 1, 10), ("t", 2, 10)], [])
    t._stream = RecordingStream()    # the stream is up: its session holds the three
    assert named(next_request()) == (True, [], [])          # nothing moved: an empty long poll
    positions.positions[("t", 1)] = (12, 0)                  # appended from an answer: marked as it is applied
    t._dirty.add(("t", 1))
    assert named(next_request()) == (True, [("t", 1, 12)], [])
    t.remove(("t", 2))
    t.set(("t", 7), 0)
    positions.positions[("t", 7)] = (0, -1)
    assert named(next_request()) == (True, [("t", 7, 0)], [("t", 2)])
    positions.positions[("t", 0)] = (11, 0)                  # moved unmarked: the periodic full check sends it
    assert named(next_request()) == (True, [], [])
    t._next_full_check = 0.0
    assert named(next_request()) == (True, [("t", 0, 11)], [])
    t._stream, t._session = None, None                       # the stream broke: the next request is full again
    assert named(next_request()) == (False, [("t", 0, 11), ("t", 1, 12), ("t", 7, 0)], [])


# ---- what a round's refused partitions log -------------------------------------------------------------------


class Refusing:
    """Stands in for the replica manager: every fetched partition is refused (on_fetched False)."""

    def __init__(self):
        self.fetched = []

    def on_fetched(self, tp, leader_id, epoch, fetched) -> bool:
        self.fetched.append((tp, fetched.error.name if fetched.error else None))
        return fetched.error is None


def test_a_round_of_many_refused_partitions_is_one_event_per_topic_and_a_few_are_an_event_each():
    """After a leadership moves, thousands of partitions answer NOT_LEADER_OR_FOLLOWER in one round: a line each
    was 5,434 lines on one broker at a controlled shutdown of 10,000 partitions (logging_setup.log_partitions)."""
    manager = Refusing()
    t = ReplicaFetcherThread(2, 1, ("127.0.0.1", 1), manager, BrokerSettings(), None)
    many = PARTITION_EVENTS_PER_CHANGE_UP_TO + 1
    answers = ([("big", p, common_pb2.NOT_LEADER_OR_FOLLOWER) for p in range(many)]
               + [("small", 3, common_pb2.FENCED_LEADER_EPOCH), ("small", 4, common_pb2.NONE)])
    response = kafka_pb2.FetchResponse(partitions=[
        kafka_pb2.FetchPartitionResponse(topic=topic, partition=p, error_code=code) for topic, p, code in answers])
    t._round_trip = lambda request: response
    with structlog.testing.capture_logs() as logs:
        assert t._fetch_once(kafka_pb2.FetchRequest(), {(topic, p): 0 for topic, p, _ in answers})
    assert len(manager.fetched) == many + 2     # every partition still handed on, errors too
    assert [(e["event"], e["topic"], e["partitions"], e["first_error"], e["leader"]) for e in logs] == [
        ("replica_fetch_errors", "big", many, "NOT_LEADER_OR_FOLLOWER", 1),
        ("replica_fetch_errors", "small", 1, "FENCED_LEADER_EPOCH", 1)]
    assert logs[0]["partition_ranges"] == f"0-{many - 1}" and logs[1]["partition_ranges"] == "3"
    del response.partitions[:2]
    with structlog.testing.capture_logs() as logs:   # PARTITION_EVENTS_PER_CHANGE_UP_TO refused in all: the
        t._fetch_once(kafka_pb2.FetchRequest(), {(topic, p): 0 for topic, p, _ in answers})   # per-topic rule
    assert [(e["event"], e.get("partitions")) for e in logs] == [("replica_fetch_errors", many - 2),
                                                                ("replica_fetch_error", None)]
    assert logs[-1] == {"event": "replica_fetch_error", "log_level": "info", "topic": "small", "partition": 3,
                        "error": "FENCED_LEADER_EPOCH", "leader": 1}


# ---- a refused partition sits out replica.fetch.backoff.ms; the others fetch on --------------------------------


class Applying:
    """Stands in for the replica manager: positions as Positions, and an answer is taken unless it is an error."""

    def __init__(self, positions: dict):
        self.positions = positions

    def fetch_position(self, tp, leader_id, leader_epoch):
        return self.positions.get(tp)

    def on_fetched(self, tp, leader_id, epoch, fetched) -> bool:
        return fetched.error is None


def answer(*parts: tuple[int, int]):
    return kafka_pb2.FetchResponse(partitions=[
        kafka_pb2.FetchPartitionResponse(topic="t", partition=p, error_code=code, high_watermark=10,
                                         log_end_offset=10) for p, code in parts])


def session_fetcher(backoff_ms: int, wait_ms: int = 500) -> tuple[ReplicaFetcherThread, Applying]:
    manager = Applying({("t", p): (10, 0) for p in range(3)})
    settings = BrokerSettings(replica_fetch_backoff_ms=backoff_ms, replica_fetch_wait_max_ms=wait_ms)
    t = ReplicaFetcherThread(2, 1, ("127.0.0.1", 1), manager, settings, None)
    for p in range(3):
        t.set(("t", p), 0)
    t._stream = RecordingStream()
    return t, manager


def round_at(t: ReplicaFetcherThread, now: float):
    return t._build_request(*t._take_round(now))


def test_a_refused_partition_sits_out_the_backoff_out_of_the_session_while_the_others_fetch_on():
    """Kafka's delayPartitions: one partition refused (its leader has not applied its new epoch yet) must not
    stop the thread's other partitions, and the leader must not read it again every round meanwhile. Before,
    the whole thread slept replica.fetch.backoff.ms, and the refused partition stayed in the leader's session."""
    t, manager = session_fetcher(backoff_ms=60_000, wait_ms=120_000)
    t._session = {("t", p): (10, 0, 0) for p in range(3)}   # as the full first request left it
    t._round_trip = lambda request: answer((0, common_pb2.NONE), (1, common_pb2.NOT_LEADER_OR_FOLLOWER))
    assert t._fetch_once(kafka_pb2.FetchRequest(), dict(t._partitions))   # the thread does not back off
    now = time.monotonic()
    manager.positions[("t", 0)] = (11, 0)                    # partition 0 took records: asked at its new offset
    assert named(round_at(t, now)) == (True, [("t", 0, 11)], [("t", 1)])
    request = round_at(t, now)
    assert named(request) == (True, [], [])                   # partition 1 is not asked about meanwhile,
    assert 59_000 < request.max_wait_ms <= 60_001             # and the long poll ends when its backoff does
    request = round_at(t, now + 61)
    assert named(request) == (True, [("t", 1, 10)], [])       # its backoff over: named again
    assert request.max_wait_ms == 120_000


def test_a_new_leader_epoch_ends_a_partitions_backoff_and_an_idle_thread_waits_only_until_the_first_ends():
    t, _ = session_fetcher(backoff_ms=60_000)
    t._stream, t._session = None, None                         # no stream: every request is full
    t._round_trip = lambda request: answer(*[(p, common_pb2.UNKNOWN_LEADER_EPOCH) for p in range(3)])
    assert t._fetch_once(kafka_pb2.FetchRequest(), dict(t._partitions))
    now = time.monotonic()
    partitions, dirty, delayed = t._take_round(now)
    assert t._build_request(partitions, dirty, delayed) is None   # all three sit out their backoff
    assert sorted(delayed) == [("t", 0), ("t", 1), ("t", 2)]
    assert all(55 < until - now <= 60 for until in delayed.values())
    t.set(("t", 2), 0)                                         # the same epoch again: still waiting
    assert round_at(t, now) is None
    t.set(("t", 2), 1)                                         # the follower learned a new epoch: asked at once
    assert named(round_at(t, now)) == (False, [("t", 2, 10)], [])
