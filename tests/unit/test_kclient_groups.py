"""kclient groups without a broker: Kafka's ConsumerProtocolAssignment decoding, the tables
kafka-consumer-groups.sh prints (--describe's lag table, --reset-offsets' plan), and the Admin's
coordinator retries against a scripted transport."""

from __future__ import annotations

import struct

import pytest
from kafka.protocol.old.consumer_protocol import ConsumerProtocolMemberAssignment_v0

from client.admin import (Admin, ConsumerProtocolAssignment, GroupDescription, MemberDescription, _assignment_of,
                          decode_consumer_assignment, encode_consumer_assignment)
from client.cli import LagRow, lag_rows, lag_table, main, reset_table, within_log
from client.errors import NonEmptyGroupError, NotCoordinatorError
from client.protocol.v1 import kafka_pb2


def member(member_id: str, partitions: list[tuple[str, int]], client_id: str = "c", host: str = "/127.0.0.1"):
    return MemberDescription(member_id, None, client_id, host, ConsumerProtocolAssignment(0, partitions))


# ---- ConsumerProtocolAssignment -----------------------------------------------------------------------


def test_decodes_an_assignment_byte_by_byte():
    data = (struct.pack(">h", 1) + struct.pack(">i", 2)
            + struct.pack(">h", 6) + b"orders" + struct.pack(">iii", 2, 0, 2)
            + struct.pack(">h", 5) + b"audit" + struct.pack(">ii", 1, 7)
            + struct.pack(">i", 3) + b"u\x00d")
    assert decode_consumer_assignment(data) == ConsumerProtocolAssignment(
        1, [("orders", 0), ("orders", 2), ("audit", 7)], b"u\x00d")


def test_decodes_what_kafka_python_encodes():
    """kafka-python's own ConsumerProtocolMemberAssignment is an encoder independent of ours."""
    theirs = ConsumerProtocolMemberAssignment_v0(0, [("t", [0, 2]), ("u", [1])], b"ud").encode()
    assert decode_consumer_assignment(theirs) == ConsumerProtocolAssignment(0, [("t", 0), ("t", 2), ("u", 1)], b"ud")
    null_user_data = ConsumerProtocolMemberAssignment_v0(3, [("t", [5])], None).encode()
    assert decode_consumer_assignment(null_user_data) == ConsumerProtocolAssignment(3, [("t", 5)], None)
    assert encode_consumer_assignment([("t", 0), ("t", 2), ("u", 1)], b"ud") == theirs


def test_no_bytes_is_no_assignment_and_user_data_may_be_left_out():
    assert decode_consumer_assignment(b"") == ConsumerProtocolAssignment(0, [])
    no_tail = struct.pack(">hi", 0, 1) + struct.pack(">h", 1) + b"t" + struct.pack(">ii", 1, 4)
    assert decode_consumer_assignment(no_tail) == ConsumerProtocolAssignment(0, [("t", 4)], None)
    assert decode_consumer_assignment(struct.pack(">hi", 0, 0) + struct.pack(">i", 0)) == \
        ConsumerProtocolAssignment(0, [], b"")


@pytest.mark.parametrize("data", [
    b"\x00",                                                              # no version
    struct.pack(">hi", -1, 0),                                            # negative version
    struct.pack(">hi", 0, 1),                                             # a topic promised, none there
    struct.pack(">hi", 0, 1) + struct.pack(">h", 9) + b"short",           # name past the end
    struct.pack(">hi", 0, 1) + struct.pack(">h", 1) + b"t" + struct.pack(">i", 3) + struct.pack(">i", 0),
    struct.pack(">hi", 0, -2),                                            # negative topic count
    struct.pack(">hi", 0, 0) + struct.pack(">i", 10) + b"abc",            # user data past the end
    struct.pack(">hi", 0, 1) + struct.pack(">h", 2) + b"\xff\xfe" + struct.pack(">i", 0),   # not UTF-8
])
def test_malformed_assignments_are_refused(data):
    with pytest.raises(ValueError):
        decode_consumer_assignment(data)


def test_only_consumer_groups_have_their_assignment_decoded():
    data = encode_consumer_assignment([("t", 1)])
    assert _assignment_of("consumer", data).partitions == [("t", 1)]
    assert _assignment_of("", data).partitions == [("t", 1)]
    assert _assignment_of("connect", data).partitions == []          # not ConsumerProtocol
    assert _assignment_of("consumer", b"\x00\x01garbage").partitions == []


# ---- --describe: rows and the lag table -------------------------------------------------------------


def test_rows_put_the_busiest_member_first_then_committed_partitions_nobody_owns():
    d = GroupDescription("g", "Stable", "consumer", "range", [
        member("m-small", [("t", 2)], "small"),
        member("m-big", [("t", 1), ("t", 0), ("a", 3)], "big"),
        member("m-idle", [], "idle"),
    ], coordinator=1)
    committed = {("t", 0): 10, ("t", 2): 3, ("z", 0): 5}
    ends = {("t", 0): 14, ("t", 1): 9, ("t", 2): 3, ("a", 3): 1, ("z", 0): 8}
    rows = lag_rows(d, committed, ends)
    assert [(r.topic, r.partition, r.consumer_id, r.current_offset, r.log_end_offset, r.lag) for r in rows] == [
        ("a", 3, "m-big", None, 1, None),
        ("t", 0, "m-big", 10, 14, 4),
        ("t", 1, "m-big", None, 9, None),
        ("t", 2, "m-small", 3, 3, 0),
        ("z", 0, "-", 5, 8, 3),
    ]
    assert rows[-1] == LagRow("g", "z", 0, 5, 8)      # no owner: "-" for consumer id, host and client id


def test_lag_is_unknown_without_a_committed_offset_or_a_log_end():
    assert LagRow("g", "t", 0, 7, 12).lag == 5
    assert LagRow("g", "t", 0, None, 12).lag is None
    assert LagRow("g", "t", 0, -1, 12).lag is None
    assert LagRow("g", "t", 0, 7, None).lag is None
    assert LagRow("g", "t", 0, 9, 7).lag == -2       # Kafka prints what the subtraction gives


def test_the_lag_table_is_kafkas_layout():
    rows = [LagRow("billing", "orders", 0, 10, 14, "billing-0-2a23", "/127.0.0.1", "billing-0"),
            LagRow("billing", "orders", 1, None, 14, "billing-0-2a23", "/127.0.0.1", "billing-0"),
            LagRow("billing", "orders", 2, 10, None)]
    assert lag_table(rows) == (
        "\n"
        "GROUP           TOPIC           PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG             "
        "CONSUMER-ID     HOST            CLIENT-ID\n"
        "billing         orders          0          10              14              4               "
        "billing-0-2a23  /127.0.0.1      billing-0\n"
        "billing         orders          1          -               14              -               "
        "billing-0-2a23  /127.0.0.1      billing-0\n"
        "billing         orders          2          10              -               -               "
        "-               -               -\n")


def test_long_values_widen_their_columns():
    consumer = "rdkafka-5685adfb-0b1c-4f53-9d0e-2f3c4e5a6b7c"
    rows = [LagRow("a-rather-long-group-name", "short", 0, 1, 2, consumer, "/10.0.0.1", "c")]
    header, row = lag_table(rows).splitlines()[1:]
    assert header == ("GROUP" + " " * 20 + "TOPIC           PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG"
                      "             CONSUMER-ID" + " " * (len(consumer) - len("CONSUMER-ID")) + " HOST            "
                      "CLIENT-ID")
    assert row == ("a-rather-long-group-name short           0          1               2               1"
                   f"               {consumer} /10.0.0.1       c")
    assert header.index("HOST") == row.index("/10.0.0.1")


# ---- --reset-offsets: the plan and the log's bounds ---------------------------------------------------


def test_the_reset_plan_is_kafkas_layout_sorted_by_partition():
    assert reset_table("billing", {("orders", 2): 14, ("orders", 0): 0, ("audit", 1): 3}) == (
        "\n"
        "GROUP           TOPIC           PARTITION  NEW-OFFSET\n"
        "billing         audit           1          3\n"
        "billing         orders          0          0\n"
        "billing         orders          2          14\n")
    assert reset_table("g", {}) == "\n"


def test_offsets_outside_the_log_are_moved_to_its_ends(capsys):
    starts = {("t", 0): 5, ("t", 1): 0, ("t", 2): 0}
    ends = {("t", 0): 20, ("t", 1): 9, ("t", 2): 9}
    assert within_log({("t", 0): 2, ("t", 1): 100, ("t", 2): 4}, starts, ends) == {
        ("t", 0): 5, ("t", 1): 9, ("t", 2): 4}
    assert capsys.readouterr().err.splitlines() == [
        "WARN: New offset (2) is lower than earliest offset for topic partition t-0. Value will be set to 5.",
        "WARN: New offset (100) is higher than latest offset for topic partition t-1. Value will be set to 9."]


# ---- flags: refused before any broker is asked ------------------------------------------------------


@pytest.mark.parametrize("argv, says", [
    (["groups", "--describe"], "--group is required"),
    (["groups", "--reset-offsets", "--group", "g", "--to-earliest"], "One of the reset scopes should be defined"),
    (["groups", "--reset-offsets", "--group", "g", "--topic", "t"], "needs one of --to-earliest"),
    (["groups", "--describe", "--group", "g", "--to-latest"], "go with --reset-offsets"),
    (["groups", "--delete", "--group", "g", "--topic", "t"], "--topic goes with"),
])
def test_bad_flag_combinations_are_usage_errors(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--bootstrap", "127.0.0.1:1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


# ---- the Admin's coordinator retries, against a scripted transport --------------------------------------


class ScriptedClient:
    """Stands in for KafkaClient: each call takes the next scripted answer of its API (an exception is
    raised), and every call is recorded as (address, api)."""

    request_timeout_s = 30.0

    def __init__(self, **answers):
        self.answers = {api: list(script) for api, script in answers.items()}
        self.calls: list[tuple[tuple[str, int], str]] = []
        self.metadata = type("Metadata", (), {"brokers": {1: object()}})()

    def call(self, address, api, request, timeout_s=None, detail=""):
        self.calls.append((address, api))
        answer = self.answers[api].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def candidate_addresses(self):
        return [("127.0.0.1", 9092)]

    def refresh_metadata(self, topics=None):
        return None

    def trace(self, *args):
        return None


def coordinator(node: int, error: int = 0) -> kafka_pb2.FindCoordinatorResponse:
    return kafka_pb2.FindCoordinatorResponse(coordinators=[kafka_pb2.Coordinator(
        key="g", node_id=node if not error else -1, host="127.0.0.1", port=9000 + node, error_code=error)])


def group_answer(error: int = 0, by: int = 2) -> kafka_pb2.DescribeGroupsResponse:
    return kafka_pb2.DescribeGroupsResponse(answered_by=by, groups=[kafka_pb2.DescribedGroup(
        group_id="g", error_code=error, group_state="Empty" if not error else "", protocol_type="consumer")])


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr("client.coordinator_lookup.backoff_s", lambda *args: 0.0)

    def make(**answers) -> tuple[Admin, ScriptedClient]:
        admin = Admin("127.0.0.1:9092")
        admin._client = ScriptedClient(**answers)
        return admin, admin._client

    return make


NOT_COORDINATOR, LOADING, NOT_AVAILABLE, NON_EMPTY_GROUP = 16, 14, 15, 68


def test_not_coordinator_sends_the_request_to_the_coordinator_found_again(scripted):
    admin, client = scripted(FindCoordinator=[coordinator(1), coordinator(2)],
                             DescribeGroups=[group_answer(NOT_COORDINATOR, by=1), group_answer(by=2)])
    d = admin.describe_group("g")
    assert (d.state, d.coordinator) == ("Empty", 2)
    assert [(port, api) for (_, port), api in client.calls] == [
        (9092, "FindCoordinator"), (9001, "DescribeGroups"), (9092, "FindCoordinator"), (9002, "DescribeGroups")]


def test_a_loading_or_missing_coordinator_is_waited_for(scripted):
    admin, client = scripted(FindCoordinator=[coordinator(0, NOT_AVAILABLE), coordinator(3), coordinator(3)],
                             OffsetFetch=[kafka_pb2.OffsetFetchResponse(error_code=LOADING),
                                          kafka_pb2.OffsetFetchResponse(topics=[kafka_pb2.OffsetFetchTopic(
                                              name="t", partitions=[kafka_pb2.OffsetFetchPartition(
                                                  partition_index=0, committed_offset=4),
                                                  kafka_pb2.OffsetFetchPartition(partition_index=1,
                                                                                 committed_offset=-1)])])])
    assert admin.committed_offsets("g") == {("t", 0): 4}      # -1: nothing committed, left out
    assert [api for _, api in client.calls] == ["FindCoordinator", "FindCoordinator", "OffsetFetch",
                                                "FindCoordinator", "OffsetFetch"]


def test_a_commit_refused_on_one_partition_by_a_moved_coordinator_is_sent_again_whole(scripted):
    def commit_answer(*codes: int) -> kafka_pb2.OffsetCommitResponse:
        return kafka_pb2.OffsetCommitResponse(topics=[kafka_pb2.OffsetTopicResults(name="t", partitions=[
            kafka_pb2.OffsetPartitionResult(partition_index=p, error_code=c) for p, c in enumerate(codes)])])

    admin, client = scripted(FindCoordinator=[coordinator(1), coordinator(2)],
                             OffsetCommit=[commit_answer(0, NOT_COORDINATOR), commit_answer(0, 0)])
    admin.commit_offsets("g", {("t", 0): 1, ("t", 1): 2})
    assert [api for _, api in client.calls].count("OffsetCommit") == 2


def test_other_errors_raise_their_class_at_once(scripted):
    admin, client = scripted(FindCoordinator=[coordinator(1)], DeleteGroups=[kafka_pb2.DeleteGroupsResponse(
        results=[kafka_pb2.DeletableGroupResult(group_id="g", error_code=NON_EMPTY_GROUP, error_message="busy")])])
    with pytest.raises(NonEmptyGroupError, match="busy"):
        admin.delete_group("g")
    assert len(client.calls) == 2


def test_the_retries_are_bounded(scripted, monkeypatch):
    monkeypatch.setattr("client.coordinator_lookup.MAX_ATTEMPTS", 4)
    admin, client = scripted(FindCoordinator=[coordinator(1)] * 4, DescribeGroups=[group_answer(NOT_COORDINATOR)] * 4)
    with pytest.raises(NotCoordinatorError):
        admin.describe_group("g")
    assert len(client.calls) == 8
