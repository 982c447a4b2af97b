"""AlterPartitionManager against a real in-process gRPC controller that answers as told.

Issue 14, defect 3: a change whose outcome is unknown (no answer, REQUEST_TIMED_OUT:
it may still commit) must stay pending and be resent; only an answer that proves it
was not applied (INELIGIBLE_REPLICA) drops it; one that says the partition moved on
(INVALID_UPDATE_VERSION, FENCED_LEADER_EPOCH) keeps it until metadata brings the newer epoch.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest
import structlog

from broker.alter_partition import AlterOutcome, AlterPartitionManager, outcome_of
from broker.logging_setup import PARTITION_EVENTS_EACH_UP_TO
from client.protocol.v1 import common_pb2, controller_pb2, controller_pb2_grpc

REQUEST = {"topic": "t", "topic_id": "id-t", "partition": 0, "leader_epoch": 3, "partition_epoch": 7,
           "new_isr": [1, 2]}
MARKER = dict(REQUEST, topic="marker")


class ScriptedController(controller_pb2_grpc.ControllerServicer):
    """Answers each change of an AlterPartition with the next error code of its script (the last one repeats),
    or of its partition's own script (``by_partition``); ``gate``, if given, holds the first request until set."""

    def __init__(self, script: list[int], by_partition: dict[int, list[int]] | None = None,
                 gate: threading.Event | None = None):
        self.script = list(script)
        self.by_partition = {p: list(codes) for p, codes in (by_partition or {}).items()}
        self.gate = gate
        self.calls = 0
        self.markers = 0
        self.requests: list[list[int]] = []     # the partitions of each request, in arrival order
        self.changed = threading.Condition()

    def AlterPartition(self, request, context):
        if self.gate is not None and not self.requests:
            self.gate.wait(5)
        with self.changed:
            self.requests.append([p.partition for p in request.partitions])
            results = [self._answer(p) for p in request.partitions]
            self.changed.notify_all()
        return controller_pb2.AlterPartitionResponse(partitions=results)

    def _answer(self, change) -> controller_pb2.PartitionIsrResult:
        if change.topic == MARKER["topic"]:   # not part of the script: tells the test the queue got here
            self.markers += 1
            return controller_pb2.PartitionIsrResult(topic=change.topic, error_code=common_pb2.INVALID_UPDATE_VERSION)
        own = self.by_partition.get(change.partition)
        code = own.pop(0) if own and len(own) > 1 else own[0] if own else self.script[min(self.calls,
                                                                                             len(self.script) - 1)]
        self.calls += 1
        if code == common_pb2.NONE:
            return controller_pb2.PartitionIsrResult(topic=change.topic, partition=change.partition, leader_id=1,
                                                     leader_epoch=3, partition_epoch=8, isr=[1, 2])
        return controller_pb2.PartitionIsrResult(topic=change.topic, partition=change.partition, error_code=code,
                                                 error_message="scripted")

    def wait_calls(self, n: int, timeout: float = 5.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.calls >= n, timeout)

    def settled(self, manager: AlterPartitionManager, timeout: float = 5.0) -> bool:
        """Send a marker through ``manager``: once it is answered, every earlier answer was settled
        (one thread, in order)."""
        with self.changed:
            seen = self.markers
        manager.submit(MARKER, lambda: None, lambda: True)
        with self.changed:
            return self.changed.wait_for(lambda: self.markers > seen, timeout)


@pytest.fixture
def controller():
    servers = []

    def start(script: list[int], **kwargs) -> tuple[ScriptedController, AlterPartitionManager]:
        servicer = ScriptedController(script, **kwargs)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        controller_pb2_grpc.add_ControllerServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        manager = AlterPartitionManager(1, lambda: 5, lambda: ("127.0.0.1", port), timeout_s=2.0)
        manager.start()
        servers.append((server, manager))
        return servicer, manager

    yield start
    for server, manager in servers:
        manager.stop()
        server.stop(None)


class Pending:
    """The replica manager's side: the pending change and its callbacks."""

    def __init__(self) -> None:
        self.pending = True
        self.dropped = 0

    def drop(self) -> None:
        self.dropped += 1
        self.pending = False


def test_outcomes_follow_what_each_answer_proves():
    assert outcome_of(common_pb2.NONE) is AlterOutcome.COMMITTED
    assert outcome_of(common_pb2.INELIGIBLE_REPLICA) is AlterOutcome.NOT_APPLIED
    for code in (common_pb2.INVALID_UPDATE_VERSION, common_pb2.FENCED_LEADER_EPOCH,
                 common_pb2.UNKNOWN_TOPIC_OR_PARTITION, common_pb2.INVALID_REQUEST):
        assert outcome_of(code) is AlterOutcome.AWAIT_METADATA, code
    for code in (common_pb2.REQUEST_TIMED_OUT, common_pb2.NOT_CONTROLLER, common_pb2.STALE_BROKER_EPOCH, None):
        assert outcome_of(code) is AlterOutcome.UNKNOWN, code


def test_a_timed_out_change_stays_pending_and_is_resent_until_it_commits(controller):
    servicer, manager = controller([common_pb2.REQUEST_TIMED_OUT, common_pb2.REQUEST_TIMED_OUT, common_pb2.NONE])
    p = Pending()
    manager.submit(REQUEST, p.drop, lambda: p.pending)
    assert servicer.wait_calls(3), f"resent {servicer.calls} times"
    assert servicer.settled(manager)
    assert servicer.calls == 3 and manager.resends_scheduled == 0   # the third answer committed it
    assert p.pending and p.dropped == 0


def test_a_resend_stops_once_metadata_moved_on(controller):
    servicer, manager = controller([common_pb2.REQUEST_TIMED_OUT])
    p = Pending()
    manager.submit(REQUEST, p.drop, lambda: p.pending)
    assert servicer.wait_calls(2)
    p.pending = False                      # the newer partition epoch arrived: no longer this change
    calls = servicer.calls
    deadline = time.monotonic() + 5        # the scheduled resend comes due, finds it settled, and is dropped
    while manager.resends_scheduled and time.monotonic() < deadline:
        time.sleep(0.01)
    assert manager.resends_scheduled == 0
    assert servicer.calls <= calls + 1 and p.dropped == 0


def test_only_a_proven_refusal_drops_the_pending_change(controller):
    servicer, manager = controller([common_pb2.INELIGIBLE_REPLICA])
    p = Pending()
    manager.submit(REQUEST, p.drop, lambda: p.pending)
    assert servicer.wait_calls(1)
    deadline = time.monotonic() + 5
    while p.dropped == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.dropped == 1 and not p.pending


def test_a_refusal_because_the_partition_moved_on_keeps_it_pending_and_is_not_resent(controller):
    servicer, manager = controller([common_pb2.INVALID_UPDATE_VERSION])
    p = Pending()
    manager.submit(REQUEST, p.drop, lambda: p.pending)
    assert servicer.wait_calls(1)
    assert servicer.settled(manager)
    assert servicer.calls == 1 and manager.resends_scheduled == 0 and p.pending and p.dropped == 0


def test_no_controller_known_is_an_unknown_outcome_and_resent(controller):
    addresses = [None, None]
    manager = AlterPartitionManager(1, lambda: 5, lambda: addresses.pop() if addresses else None, timeout_s=1.0)
    manager.start()
    try:
        p = Pending()
        manager.submit(REQUEST, p.drop, lambda: p.pending)
        deadline = time.monotonic() + 3
        while addresses and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not addresses, "not resent after 'no controller'"
        assert p.pending and p.dropped == 0
    finally:
        manager.stop()


def test_changes_ready_together_go_in_one_request_and_each_settles_by_its_own_answer(controller):
    """Kafka's AlterPartition carries many partitions: a broker rejoining thousands of ISRs must not pay a
    controller round trip (and a metadata commit) per partition. Partition 1 is proven not applied (dropped),
    partition 2's outcome is unknown (resent alone), partition 0 committed (neither)."""
    gate = threading.Event()
    servicer, manager = controller([common_pb2.NONE], gate=gate,
                                   by_partition={1: [common_pb2.INELIGIBLE_REPLICA],
                                                 2: [common_pb2.REQUEST_TIMED_OUT, common_pb2.NONE]})
    pending = {p: Pending() for p in range(40)}
    for p, change in pending.items():
        manager.submit(dict(REQUEST, partition=p), change.drop, lambda change=change: change.pending)
    gate.set()                         # a first request that left early was held: the rest queued meanwhile
    assert servicer.wait_calls(41), servicer.requests
    assert servicer.settled(manager)
    first_sent: dict[int, int] = {}    # partition -> the request that first carried it
    for i, partitions in enumerate(servicer.requests):
        for p in partitions:
            first_sent.setdefault(p, i)
    assert len(set(first_sent.values())) <= 2, f"40 ready changes took {servicer.requests} requests"
    assert max(len(r) for r in servicer.requests) >= 39, servicer.requests
    assert any(r == [2] for r in servicer.requests[first_sent[2] + 1:]), "the unknown outcome was not resent alone"
    assert pending[1].dropped == 1 and not pending[1].pending
    assert all(c.pending and c.dropped == 0 for p, c in pending.items() if p != 1)


def test_many_changes_committed_in_one_answer_are_one_event_and_a_few_an_event_each(controller):
    """logging_setup.log_partitions: a broker rejoining thousands of ISRs logs per request."""
    gate = threading.Event()
    servicer, manager = controller([common_pb2.NONE], gate=gate)
    many = 2 * PARTITION_EVENTS_EACH_UP_TO + 2    # however the first request splits them, one request has more
    with structlog.testing.capture_logs() as logs:
        for p in range(many):
            manager.submit(dict(REQUEST, partition=p), lambda: None, lambda: True)
        gate.set()
        assert servicer.wait_calls(many) and servicer.settled(manager)
    expected = []
    for request in servicer.requests[:-1]:      # the last: settled()'s marker, refused
        expected += (["alter_partitions_committed"] if len(request) > PARTITION_EVENTS_EACH_UP_TO
                     else ["alter_partition_committed"] * len(request))
    committed = [e for e in logs if e["event"].startswith("alter_partition") and "committed" in e["event"]]
    assert [e["event"] for e in committed] == expected and "alter_partitions_committed" in expected, servicer.requests
    assert sum(e.get("partitions", 1) for e in committed) == many
    assert all(e.get("first_isr", e.get("isr")) == [1, 2] for e in committed)
