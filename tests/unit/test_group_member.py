"""One consumer's group membership (client/group_coordinator.py, Kafka's ConsumerCoordinator) without a broker.

A scripted stand-in for KafkaClient answers each request with the next protobuf scripted for its API (an
exception scripted is raised) and records every request. The rebalance hooks write into the same log, so a
test can assert the order of hook calls and requests. The heartbeat thread never fires by itself (a heartbeat
interval of an hour): the tests call ``_heartbeat_once`` or run one tick of ``_heartbeat_loop`` themselves.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from client.admin import decode_consumer_assignment, encode_consumer_assignment
from client.assignors import CooperativeStickyAssignor, RangeAssignor, Subscription, decode_subscription, \
    encode_subscription
from client.errors import (CommitFailedError, InconsistentGroupProtocolError, InvalidGroupIdError, KafkaError,
                           NetworkError, RebalanceInProgressError)
from client.group_coordinator import ConsumerCoordinator, GroupSettings
from client.protocol.v1 import kafka_pb2

GROUP = "g"
NEVER_MS = 3_600_000          # a heartbeat interval the test never reaches
T0, T1, T2 = ("t", 0), ("t", 1), ("t", 2)

# Kafka's error codes
LOADING, NOT_COORDINATOR = 14, 16
ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL, INVALID_GROUP_ID, UNKNOWN_MEMBER_ID = 22, 23, 24, 25
REBALANCE_IN_PROGRESS, MEMBER_ID_REQUIRED = 27, 79


# ---- the scripted transport ---------------------------------------------------------------------------


class Unscripted(KafkaError):
    """Nothing was scripted for this request. A KafkaError (close() swallows it), not retriable (a join
    raises it to the test instead of retrying)."""


class ScriptedClient:
    """Stands in for KafkaClient. ``call`` takes the next answer scripted for its API (else the API's default,
    else raises Unscripted); an answer that is an exception is raised, a callable is called with the request.
    Every request is recorded in ``calls`` as (address, api, request) and in the shared ``log`` as
    ("send", api)."""

    request_timeout_s = 30.0

    def __init__(self, log: list, partitions: dict[str, int]):
        self.log = log
        self.scripts: dict[str, list] = {}
        self.defaults: dict[str, object] = {"FindCoordinator": found(1)}
        self.calls: list[tuple[tuple[str, int], str, object]] = []
        self.refreshed: list[list[str]] = []
        self.metadata = SimpleNamespace(brokers={1: object()}, topics={
            t: SimpleNamespace(partitions=list(range(n))) for t, n in partitions.items()})
        self._lock = threading.Lock()

    def script(self, api: str, *answers) -> None:
        self.scripts.setdefault(api, []).extend(answers)

    def call(self, address, api, request, timeout_s=None, detail=""):
        with self._lock:
            self.calls.append((address, api, request))
            self.log.append(("send", api))
            if self.scripts.get(api):
                answer = self.scripts[api].pop(0)
            else:
                answer = self.defaults.get(api, Unscripted(f"nothing scripted for {api}"))
        if callable(answer) and not isinstance(answer, Exception):
            answer = answer(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def candidate_addresses(self):
        return [("127.0.0.1", 9092)]

    def refresh_metadata(self, topics=None):
        self.refreshed.append(list(topics or []))

    def trace(self, *args):
        return None

    # what the tests read
    def apis(self) -> list[str]:
        return [api for _, api, _ in self.calls]

    def sent(self, api: str) -> list:
        return [request for _, a, request in self.calls if a == api]

    def ports(self, api: str) -> list[int]:
        return [port for (_, port), a, _ in self.calls if a == api]

    def forget_calls(self) -> None:
        with self._lock:
            self.calls.clear()
            self.log.clear()


# ---- answers --------------------------------------------------------------------------------------------


def found(node: int) -> kafka_pb2.FindCoordinatorResponse:
    return kafka_pb2.FindCoordinatorResponse(coordinators=[kafka_pb2.Coordinator(
        key=GROUP, node_id=node, host="127.0.0.1", port=9000 + node)])


def subscriber(member_id: str, topics: list[str]) -> kafka_pb2.JoinGroupMember:
    return kafka_pb2.JoinGroupMember(member_id=member_id, metadata=encode_subscription(Subscription(topics)))


def join_answer(member_id: str = "m-1", generation: int = 1, leader: str = "m-0", protocol: str = "range",
                members: list | None = None, error: int = 0) -> kafka_pb2.JoinGroupResponse:
    return kafka_pb2.JoinGroupResponse(error_code=error, generation_id=generation, protocol_type="consumer",
                                       protocol_name=protocol, leader=leader, member_id=member_id,
                                       members=members or [])


def sync_answer(partitions: list[tuple[str, int]], protocol: str = "range", error: int = 0):
    return kafka_pb2.SyncGroupResponse(error_code=error, protocol_type="consumer", protocol_name=protocol,
                                       assignment=encode_consumer_assignment(partitions))


def heartbeat_answer(error: int = 0) -> kafka_pb2.HeartbeatResponse:
    return kafka_pb2.HeartbeatResponse(error_code=error)


def commit_answer(codes: dict[tuple[str, int], int]) -> kafka_pb2.OffsetCommitResponse:
    by_topic: dict[str, list] = {}
    for (topic, partition), code in codes.items():
        by_topic.setdefault(topic, []).append(kafka_pb2.OffsetPartitionResult(partition_index=partition,
                                                                               error_code=code))
    return kafka_pb2.OffsetCommitResponse(topics=[kafka_pb2.OffsetTopicResults(name=t, partitions=ps)
                                                  for t, ps in by_topic.items()])


def soon() -> float:
    return time.monotonic() + 5.0


# ---- the member under test --------------------------------------------------------------------------------


@dataclass
class Member:
    coordinator: ConsumerCoordinator
    client: ScriptedClient
    log: list = field(default_factory=list)

    def hooks(self) -> list[tuple[str, list]]:
        """The hook calls, in order: ("revoke" | "assign" | "lose", sorted partitions)."""
        return [e for e in self.log if e[0] != "send"]

    def join(self, partitions: list[tuple[str, int]], member_id: str = "m-1", generation: int = 1) -> None:
        """Join as a follower with ``partitions``, then start the test's record afresh."""
        protocol = next(iter(self.coordinator.assignors))
        self.client.script("JoinGroup", join_answer(member_id, generation, protocol=protocol))
        self.client.script("SyncGroup", sync_answer(partitions, protocol=protocol))
        assert self.coordinator.ensure_active_group(soon())
        assert (self.coordinator.generation_id, self.coordinator.member_id) == (generation, member_id)
        assert sorted(self.coordinator.assigned) == sorted(partitions)
        self.client.forget_calls()


@pytest.fixture
def group(monkeypatch):
    """make(assignors=None, partitions={"t": 3}, **GroupSettings fields) -> Member; closed at the end."""
    monkeypatch.setattr("client.group_coordinator.backoff_s", lambda *args: 0.0)
    monkeypatch.setattr("client.coordinator_lookup.backoff_s", lambda *args: 0.0)
    made: list[ConsumerCoordinator] = []

    def make(assignors: list | None = None, partitions: dict[str, int] | None = None, **settings) -> Member:
        log: list = []
        client = ScriptedClient(log, partitions or {"t": 3})
        settings.setdefault("heartbeat_interval_ms", NEVER_MS)

        def hook(kind):
            return lambda tps: log.append((kind, sorted(tps)))

        coordinator = ConsumerCoordinator(client, GROUP, ["t"], assignors or [RangeAssignor()],
                                          GroupSettings(**settings), hook("revoke"), hook("assign"), hook("lose"))
        made.append(coordinator)
        return Member(coordinator, client, log)

    yield make
    for coordinator in made:
        coordinator.close()            # idempotent; an unscripted LeaveGroup raises Unscripted, which close swallows
        assert not coordinator._heartbeat.is_alive()


def one_heartbeat_tick(coordinator: ConsumerCoordinator) -> None:
    """Run exactly one iteration of the heartbeat thread's loop on this thread: its wait answers "not closed"
    once, then "closed". The real thread keeps waiting on the real event, which close() sets."""
    real = coordinator._closed
    answers = [False, True]
    coordinator._closed = SimpleNamespace(wait=lambda timeout: answers.pop(0))
    try:
        coordinator._heartbeat_loop()
    finally:
        coordinator._closed = real
    assert answers == []


# ---- 1, 2: joining -----------------------------------------------------------------------------------------


def test_a_new_member_joins_again_with_the_id_it_was_handed_and_as_leader_assigns_by_range(group):
    m = group(session_timeout_ms=10000, max_poll_interval_ms=60000, client_id="cid")
    m.client.script("JoinGroup",
                    join_answer(member_id="m-1", generation=-1, leader="", error=MEMBER_ID_REQUIRED),
                    join_answer(member_id="m-1", generation=4, leader="m-1",
                                members=[subscriber("m-1", ["t"]), subscriber("m-2", ["t"])]))
    m.client.script("SyncGroup", sync_answer([T0, T1]))

    assert m.coordinator.ensure_active_group(soon()) is True

    assert m.client.apis() == ["FindCoordinator", "JoinGroup", "JoinGroup", "SyncGroup"]
    first, second = m.client.sent("JoinGroup")
    assert (first.member_id, second.member_id) == ("", "m-1")
    assert (first.group_id, first.protocol_type, first.session_timeout_ms, first.rebalance_timeout_ms,
            first.client_id) == (GROUP, "consumer", 10000, 60000, "cid")
    assert not first.HasField("group_instance_id")
    [protocol] = first.protocols
    assert protocol.name == "range"
    assert decode_subscription(protocol.metadata).topics == ["t"]
    # the leader read the partition counts of the members' topics and ran the range assignor over them
    assert m.client.refreshed == [["t"]]
    [sync] = m.client.sent("SyncGroup")
    assert (sync.group_id, sync.generation_id, sync.member_id, sync.protocol_type, sync.protocol_name) == (
        GROUP, 4, "m-1", "consumer", "range")
    assert {a.member_id: decode_consumer_assignment(a.assignment).partitions for a in sync.assignments} == {
        "m-1": [T0, T1], "m-2": [T2]}
    assert m.hooks() == [("assign", [T0, T1])]
    assert (m.coordinator.generation_id, m.coordinator.member_id, m.coordinator.protocol) == (4, "m-1", "range")
    assert m.coordinator.assigned == [T0, T1]


def test_a_follower_syncs_with_no_assignments_and_takes_what_the_sync_answer_hands_it(group):
    m = group()
    m.client.script("JoinGroup", join_answer(member_id="m-1", generation=2, leader="m-0",
                                             members=[subscriber("m-0", ["t"]), subscriber("m-1", ["t"])]))
    m.client.script("SyncGroup", sync_answer([T2]))

    assert m.coordinator.ensure_active_group(soon()) is True

    [sync] = m.client.sent("SyncGroup")
    assert (sync.generation_id, sync.member_id) == (2, "m-1")
    assert list(sync.assignments) == []
    assert m.client.refreshed == []                 # only a leader needs the partition counts
    assert m.hooks() == [("assign", [T2])]
    assert m.coordinator.assigned == [T2]


def test_a_joined_member_is_active_without_sending_anything(group):
    m = group()
    m.join([T0])
    assert m.coordinator.ensure_active_group(soon()) is True
    assert m.client.calls == [] and m.hooks() == []


# ---- 3: REBALANCE_IN_PROGRESS ------------------------------------------------------------------------------


def test_heartbeat_sends_the_generation_and_member_id(group):
    m = group()
    m.join([T0], member_id="m-1", generation=3)
    m.client.script("Heartbeat", heartbeat_answer())
    m.coordinator._heartbeat_once()
    [beat] = m.client.sent("Heartbeat")
    assert (beat.group_id, beat.generation_id, beat.member_id) == (GROUP, 3, "m-1")
    assert m.coordinator.ensure_active_group(soon()) is True
    assert m.client.apis() == ["Heartbeat"]        # a good heartbeat asks for no rejoin


def test_eager_rebalance_revokes_everything_before_it_joins_again(group):
    m = group()
    m.join([T0, T1])
    m.client.script("Heartbeat", heartbeat_answer(REBALANCE_IN_PROGRESS))
    m.coordinator._heartbeat_once()
    assert m.hooks() == []                          # the heartbeat thread only raises a flag

    m.client.script("JoinGroup", join_answer(member_id="m-1", generation=2))
    m.client.script("SyncGroup", sync_answer([T1, T2]))
    assert m.coordinator.ensure_active_group(soon()) is True

    assert m.log == [("send", "Heartbeat"), ("revoke", [T0, T1]), ("send", "JoinGroup"), ("send", "SyncGroup"),
                     ("assign", [T1, T2])]
    [join] = m.client.sent("JoinGroup")
    assert join.member_id == "m-1"
    subscription = decode_subscription(join.protocols[0].metadata)
    assert (subscription.owned_partitions, subscription.generation_id) == ([], 1)   # eager: owns nothing now
    assert (m.coordinator.generation_id, sorted(m.coordinator.assigned)) == (2, [T1, T2])


def test_cooperative_rebalance_keeps_its_partitions_and_revokes_only_the_dropped_one_then_rejoins(group):
    m = group(assignors=[CooperativeStickyAssignor()])
    m.join([T0, T1, T2])
    m.client.script("Heartbeat", heartbeat_answer(REBALANCE_IN_PROGRESS))
    m.coordinator._heartbeat_once()

    protocol = "cooperative-sticky"
    m.client.script("JoinGroup", join_answer(member_id="m-1", generation=2, protocol=protocol),
                    join_answer(member_id="m-1", generation=3, protocol=protocol))
    m.client.script("SyncGroup", sync_answer([T0, T1], protocol=protocol), sync_answer([T0, T1], protocol=protocol))
    assert m.coordinator.ensure_active_group(soon()) is True

    assert m.log == [("send", "Heartbeat"),
                     ("send", "JoinGroup"), ("send", "SyncGroup"), ("revoke", [T2]), ("assign", []),
                     ("send", "JoinGroup"), ("send", "SyncGroup"), ("assign", [])]
    first, second = (decode_subscription(j.protocols[0].metadata) for j in m.client.sent("JoinGroup"))
    assert (sorted(first.owned_partitions), first.generation_id) == ([T0, T1, T2], 1)
    assert (sorted(second.owned_partitions), second.generation_id) == ([T0, T1], 2)
    assert (m.coordinator.generation_id, sorted(m.coordinator.assigned)) == (3, [T0, T1])


def test_a_cooperative_sync_that_drops_nothing_needs_no_second_rejoin(group):
    m = group(assignors=[CooperativeStickyAssignor()])
    m.join([T0])
    m.coordinator.request_rejoin("test")
    m.client.script("JoinGroup", join_answer(generation=2, protocol="cooperative-sticky"))
    m.client.script("SyncGroup", sync_answer([T0, T1], protocol="cooperative-sticky"))
    assert m.coordinator.ensure_active_group(soon()) is True
    assert m.client.apis() == ["JoinGroup", "SyncGroup"]
    assert m.hooks() == [("assign", [T1])]
    assert sorted(m.coordinator.assigned) == [T0, T1]


# ---- 4: ILLEGAL_GENERATION and UNKNOWN_MEMBER_ID -------------------------------------------------------------


@pytest.mark.parametrize("code, member_id_kept", [(ILLEGAL_GENERATION, "m-1"), (UNKNOWN_MEMBER_ID, "")])
def test_a_heartbeat_that_ends_the_generation_loses_the_partitions(group, code, member_id_kept):
    m = group()
    m.join([T0, T1])
    m.client.script("Heartbeat", heartbeat_answer(code))
    m.coordinator._heartbeat_once()
    assert (m.coordinator.generation_id, m.coordinator.member_id) == (-1, member_id_kept)
    assert m.hooks() == []                          # the hooks run on the polling thread, not the heartbeat's

    m.client.script("JoinGroup", join_answer(member_id="m-9", generation=5))
    m.client.script("SyncGroup", sync_answer([T1]))
    assert m.coordinator.ensure_active_group(soon()) is True

    assert m.hooks() == [("lose", [T0, T1]), ("assign", [T1])]
    [join] = m.client.sent("JoinGroup")
    assert join.member_id == member_id_kept
    subscription = decode_subscription(join.protocols[0].metadata)
    assert (subscription.owned_partitions, subscription.generation_id) == ([], -1)
    assert (m.coordinator.generation_id, m.coordinator.member_id, m.coordinator.assigned) == (5, "m-9", [T1])


def test_a_heartbeat_error_about_a_generation_already_left_is_ignored(group):
    m = group()
    m.join([T0])

    def answer_after_a_rejoin(request):
        m.coordinator.generation_id = 2             # the polling thread rejoined while this heartbeat was out
        return heartbeat_answer(ILLEGAL_GENERATION)

    m.client.script("Heartbeat", answer_after_a_rejoin)
    m.coordinator._heartbeat_once()
    assert m.client.sent("Heartbeat")[0].generation_id == 1
    assert (m.coordinator.generation_id, m.coordinator.member_id) == (2, "m-1")
    assert m.coordinator.ensure_active_group(soon()) is True
    assert m.hooks() == [] and m.client.apis() == ["Heartbeat"]


# ---- 5: the coordinator moves --------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [heartbeat_answer(NOT_COORDINATOR), NetworkError("connection reset")],
                         ids=["NOT_COORDINATOR", "unreachable"])
def test_a_heartbeat_that_finds_no_coordinator_makes_the_next_request_find_it_again(group, answer):
    m = group()
    m.join([T0])
    m.client.script("Heartbeat", answer)
    m.coordinator._heartbeat_once()
    assert m.coordinator.lookup.coordinator is None
    assert m.coordinator.ensure_active_group(soon()) is True     # the generation itself is fine

    m.client.script("FindCoordinator", found(2))
    m.client.script("OffsetCommit", commit_answer({T0: 0}))
    m.coordinator.commit({T0: 10})
    assert m.client.apis() == ["Heartbeat", "FindCoordinator", "OffsetCommit"]
    assert m.client.ports("Heartbeat") == [9001] and m.client.ports("OffsetCommit") == [9002]


# ---- 6: commits --------------------------------------------------------------------------------------------


def test_a_commit_carries_the_generation_and_member_id(group):
    m = group()
    m.join([T0, T1], member_id="m-1", generation=7)
    m.client.script("OffsetCommit", commit_answer({T0: 0, T1: 0}))
    m.coordinator.commit({T0: 5, T1: 9}, metadata="md")
    [commit] = m.client.sent("OffsetCommit")
    assert (commit.group_id, commit.generation_id, commit.member_id) == (GROUP, 7, "m-1")
    assert [(t.name, p.partition_index, p.committed_offset, p.committed_metadata)
            for t in commit.topics for p in t.partitions] == [("t", 0, 5, "md"), ("t", 1, 9, "md")]


def test_a_commit_refused_for_an_old_generation_fails_and_the_partitions_are_lost(group):
    m = group()
    m.join([T0, T1])
    m.client.script("OffsetCommit", commit_answer({T0: 0, T1: ILLEGAL_GENERATION}))
    with pytest.raises(CommitFailedError):
        m.coordinator.commit({T0: 5, T1: 9})
    assert m.coordinator.generation_id == -1

    m.client.script("JoinGroup", join_answer(member_id="m-1", generation=2))
    m.client.script("SyncGroup", sync_answer([T0]))
    assert m.coordinator.ensure_active_group(soon()) is True
    assert m.hooks() == [("lose", [T0, T1]), ("assign", [T0])]
    assert m.client.sent("JoinGroup")[0].member_id == "m-1"     # ILLEGAL_GENERATION keeps the member id


def test_a_commit_during_a_rebalance_raises_rebalance_in_progress_and_asks_for_a_rejoin(group):
    m = group()
    m.join([T0, T1])
    m.client.script("OffsetCommit", commit_answer({T0: REBALANCE_IN_PROGRESS, T1: REBALANCE_IN_PROGRESS}))
    with pytest.raises(RebalanceInProgressError):
        m.coordinator.commit({T0: 5, T1: 9})
    assert (m.coordinator.generation_id, m.coordinator.member_id) == (1, "m-1")    # the generation stays

    m.client.script("JoinGroup", join_answer(member_id="m-1", generation=2))
    m.client.script("SyncGroup", sync_answer([T0, T1]))
    assert m.coordinator.ensure_active_group(soon()) is True
    assert m.log == [("send", "OffsetCommit"), ("revoke", [T0, T1]), ("send", "JoinGroup"), ("send", "SyncGroup"),
                     ("assign", [T0, T1])]


def test_a_commit_answered_not_coordinator_is_sent_again_to_the_coordinator_found_anew(group):
    m = group()
    m.join([T0])
    m.client.script("FindCoordinator", found(2))
    m.client.script("OffsetCommit", commit_answer({T0: NOT_COORDINATOR}), commit_answer({T0: 0}))
    m.coordinator.commit({T0: 3})
    assert m.client.apis() == ["OffsetCommit", "FindCoordinator", "OffsetCommit"]
    assert m.client.ports("OffsetCommit") == [9001, 9002]
    assert m.coordinator.ensure_active_group(soon()) is True and m.hooks() == []


def test_a_member_that_never_joined_cannot_commit_and_sends_nothing(group):
    m = group()
    with pytest.raises(CommitFailedError):
        m.coordinator.commit({T0: 3})
    assert m.client.calls == []


# ---- 7: JoinGroup errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code, error", [(INVALID_GROUP_ID, InvalidGroupIdError),
                                         (INCONSISTENT_GROUP_PROTOCOL, InconsistentGroupProtocolError)])
def test_a_fatal_join_error_raises_its_class(group, code, error):
    m = group()
    m.client.script("JoinGroup", join_answer(member_id="", error=code))
    with pytest.raises(error):
        m.coordinator.ensure_active_group(soon())
    assert m.client.apis() == ["FindCoordinator", "JoinGroup"]
    assert m.hooks() == []


def test_a_loading_coordinator_is_asked_again_until_the_deadline_then_the_member_is_not_active(group):
    m = group()
    m.client.defaults["JoinGroup"] = join_answer(member_id="", error=LOADING)
    started = time.monotonic()
    assert m.coordinator.ensure_active_group(time.monotonic() + 0.2) is False
    assert time.monotonic() - started < 2.0
    apis = m.client.apis()
    assert apis.count("JoinGroup") >= 2
    assert apis[:4] == ["FindCoordinator", "JoinGroup", "FindCoordinator", "JoinGroup"]   # found again each time
    assert "SyncGroup" not in apis and m.hooks() == []
    assert m.coordinator.generation_id == -1


def test_a_join_that_succeeds_after_a_loading_coordinator_completes(group):
    m = group()
    m.client.script("JoinGroup", join_answer(member_id="", error=LOADING), join_answer(generation=1))
    m.client.script("SyncGroup", sync_answer([T0]))
    assert m.coordinator.ensure_active_group(soon()) is True
    assert m.client.apis() == ["FindCoordinator", "JoinGroup", "FindCoordinator", "JoinGroup", "SyncGroup"]
    assert m.hooks() == [("assign", [T0])]


# ---- 8: close ------------------------------------------------------------------------------------------------


def test_close_revokes_then_leaves_with_the_member_id(group):
    m = group()
    m.join([T0, T1])
    m.client.script("LeaveGroup", kafka_pb2.LeaveGroupResponse())
    m.coordinator.close()
    assert m.log == [("revoke", [T0, T1]), ("send", "LeaveGroup")]
    [leave] = m.client.sent("LeaveGroup")
    assert leave.group_id == GROUP
    assert [(x.member_id, x.HasField("group_instance_id")) for x in leave.members] == [("m-1", False)]
    assert (m.coordinator.member_id, m.coordinator.generation_id, m.coordinator.assigned) == ("", -1, [])
    assert not m.coordinator._heartbeat.is_alive()


def test_a_static_member_revokes_on_close_but_sends_no_leave_group(group):
    m = group(group_instance_id="instance-1")
    m.join([T0])
    m.coordinator.close()
    assert m.log == [("revoke", [T0])]
    assert m.client.calls == []


def test_a_static_member_joins_and_syncs_with_its_instance_id(group):
    m = group(group_instance_id="instance-1")
    m.client.script("JoinGroup", join_answer(generation=1))
    m.client.script("SyncGroup", sync_answer([T0]))
    assert m.coordinator.ensure_active_group(soon()) is True
    assert m.client.sent("JoinGroup")[0].group_instance_id == "instance-1"
    assert m.client.sent("SyncGroup")[0].group_instance_id == "instance-1"


# ---- 9: max.poll.interval.ms ---------------------------------------------------------------------------------


def test_a_member_that_polls_in_time_heartbeats(group):
    m = group(max_poll_interval_ms=60000)
    m.join([T0])
    m.client.script("Heartbeat", heartbeat_answer())
    one_heartbeat_tick(m.coordinator)
    assert m.client.apis() == ["Heartbeat"]


def test_a_member_that_stopped_polling_leaves_and_loses_its_partitions(group):
    m = group(max_poll_interval_ms=1000)
    m.join([T0, T1])
    m.coordinator._last_poll = time.monotonic() - 10
    m.client.script("LeaveGroup", kafka_pb2.LeaveGroupResponse())
    one_heartbeat_tick(m.coordinator)

    assert m.client.apis() == ["LeaveGroup"]        # and no heartbeat
    assert [x.member_id for x in m.client.sent("LeaveGroup")[0].members] == ["m-1"]
    assert (m.coordinator.member_id, m.coordinator.generation_id) == ("", -1)
    assert m.hooks() == []

    assert m.coordinator.ensure_active_group(time.monotonic()) is False     # no time to join again
    assert m.hooks() == [("lose", [T0, T1])]
    assert m.client.apis() == ["LeaveGroup"]


def test_the_heartbeat_thread_itself_leaves_when_polls_stop(group):
    """The same rule through the real thread: heartbeats every 20 ms, a poll interval of 300 ms."""
    m = group(heartbeat_interval_ms=20, max_poll_interval_ms=300)
    m.client.defaults["Heartbeat"] = heartbeat_answer()
    m.client.script("LeaveGroup", kafka_pb2.LeaveGroupResponse())
    m.join([T0, T1])

    deadline = time.monotonic() + 5.0
    while not m.coordinator._generation_lost and time.monotonic() < deadline:
        time.sleep(0.01)
    assert m.coordinator._generation_lost, f"no poll-timeout leave within 5 s: {m.client.apis()}"
    assert [x.member_id for x in m.client.sent("LeaveGroup")[0].members] == ["m-1"]
    assert m.client.apis().count("LeaveGroup") == 1

    assert m.coordinator.ensure_active_group(time.monotonic()) is False
    assert m.hooks() == [("lose", [T0, T1])]


# ---- where the first version differed from Kafka's ConsumerCoordinator (each failed before its fix) -----


def test_a_static_member_whose_polls_stopped_sends_no_leave_group(group):
    m = group(group_instance_id="instance-1", max_poll_interval_ms=1000)
    m.join([T0, T1])
    m.coordinator._last_poll = time.monotonic() - 10
    m.client.script("LeaveGroup", kafka_pb2.LeaveGroupResponse())
    one_heartbeat_tick(m.coordinator)
    assert m.client.apis() == []
    assert m.coordinator.ensure_active_group(time.monotonic()) is False
    assert m.hooks() == [("lose", [T0, T1])]


def test_close_after_the_generation_ended_loses_rather_than_revokes(group):
    m = group()
    m.join([T0, T1])
    m.client.script("Heartbeat", heartbeat_answer(UNKNOWN_MEMBER_ID))
    m.coordinator._heartbeat_once()
    m.coordinator.close()
    assert m.hooks() == [("lose", [T0, T1])]


def test_a_commit_after_the_generation_was_reset_raises_commit_failed(group):
    m = group()
    m.join([T0])
    m.client.script("Heartbeat", heartbeat_answer(ILLEGAL_GENERATION))
    m.coordinator._heartbeat_once()
    with pytest.raises(CommitFailedError):
        m.coordinator.commit({T0: 3})
    assert m.client.apis() == ["Heartbeat"]


def test_a_member_keeps_heartbeating_until_it_rejoins(group):
    m = group()
    m.join([T0])
    m.client.script("Heartbeat", heartbeat_answer(REBALANCE_IN_PROGRESS), heartbeat_answer(REBALANCE_IN_PROGRESS))
    m.coordinator._heartbeat_once()
    m.coordinator._heartbeat_once()
    assert m.client.apis() == ["Heartbeat", "Heartbeat"]


def test_close_stops_the_heartbeat_thread_even_when_the_revoke_hook_raises():
    client = ScriptedClient([], {"t": 3})

    def revoke(tps):
        raise RuntimeError("on_revoke failed")

    c = ConsumerCoordinator(client, GROUP, ["t"], [RangeAssignor()], GroupSettings(heartbeat_interval_ms=NEVER_MS),
                            revoke, lambda tps: None, lambda tps: None)
    client.script("JoinGroup", join_answer())
    client.script("SyncGroup", sync_answer([T0]))
    assert c.ensure_active_group(soon())
    with pytest.raises(RuntimeError):
        c.close()
    try:
        assert c._closed.is_set() and not c._heartbeat.is_alive()
    finally:
        c.close()


def test_a_second_member_id_required_is_not_fatal(group):
    m = group()
    m.client.script("JoinGroup", join_answer("m-1", -1, "", error=MEMBER_ID_REQUIRED),
                    join_answer("m-2", -1, "", error=MEMBER_ID_REQUIRED), join_answer("m-2", 1))
    m.client.script("SyncGroup", sync_answer([T0]))
    assert m.coordinator.ensure_active_group(soon()) is True
    assert [j.member_id for j in m.client.sent("JoinGroup")] == ["", "m-1", "m-2"]
