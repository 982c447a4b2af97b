"""kclient ui without processes: the snapshot, the timeline's sentences, lag, the control rules, request checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.admin import (BrokerDescription, ClusterDescription, ConsumerProtocolAssignment, GroupDescription,
                          MemberDescription, PartitionDescription, TopicDescription)
from client.trace import TraceEvent
from client.ui import controls, snapshot as snap, validation
from client.ui.lesson import hops_of
from client.replica_state import BrokerReplicas, FollowerView, ReplicaView
from client.ui.validation import RequestError

CONTROLS_OFF = snap.ControlsInfo(False, "off")


def cluster(alive=(1, 2, 3), fenced=(), controller=1) -> ClusterDescription:
    brokers = [BrokerDescription(i, "127.0.0.1", 9000 + i, True) for i in alive]
    brokers += [BrokerDescription(i, "127.0.0.1", 9000 + i, False) for i in fenced]
    return ClusterDescription("c1", controller, sorted(brokers, key=lambda b: b.id))


def topic(name="t", leaders=(1, 2), isr=None) -> TopicDescription:
    parts = [PartitionDescription(p, leader, 3, [1, 2, 3], list(isr) if isr is not None else [1, 2, 3])
             for p, leader in enumerate(leaders)]
    return TopicDescription(name, parts)


def replica(broker_id, topic_name, partition, leader, start, hw, leo, followers=()) -> ReplicaView:
    return ReplicaView(topic_name, partition, broker_id, broker_id == leader, leader, 3, (1, 2), start, hw, leo, 100,
                       tuple(followers))


# ---- brokers ---------------------------------------------------------------------------------------------


def test_broker_states_fenced_unreachable_alive_and_leader_counts():
    view = snap.MetadataView(cluster(alive=(1, 2), fenced=(3,), controller=2),
                             [topic(leaders=(1, 1)), topic("u", (2,))])
    replicas = {1: BrokerReplicas(1, "127.0.0.1:9001", None, raft_term=4, controller_id=2, metadata_offset=17),
                2: BrokerReplicas(2, "127.0.0.1:9002", "KAFKA_CONNECTION_ERROR: unreachable")}
    rows = {r.broker_id: r for r in snap.broker_rows(view, replicas, configured={4: "127.0.0.1:9004"})}
    assert [rows[i].state for i in (1, 2, 3, 4)] == ["alive", "unreachable", "fenced", "unregistered"]
    assert (rows[1].raft_term, rows[1].metadata_offset, rows[1].leader_count) == (4, 17, 2)
    assert rows[2].raft_term is None and rows[2].error.startswith("KAFKA_CONNECTION_ERROR")
    assert rows[2].is_controller and not rows[1].is_controller
    assert rows[2].leader_count == 1 and rows[3].leader_count == 0
    assert rows[4].address == "127.0.0.1:9004"


def test_no_broker_answers_is_said_and_every_broker_is_unknown():
    view = snap.MetadataView(None, [], "NO_BROKERS_AVAILABLE: could not reach any broker")
    s = snap.build_snapshot(view, {}, [], None, [], CONTROLS_OFF, {1: "127.0.0.1:9001"}, now_ms=5)
    assert s.status == "no-broker" and "no broker answers" in s.message
    assert [(b.broker_id, b.state) for b in s.brokers] == [(1, "unknown")]
    starting = snap.build_snapshot(None, {}, [], None, [], CONTROLS_OFF, {}, now_ms=5)
    assert starting.status == "starting"


# ---- partitions and the replica bars --------------------------------------------------------------------


def test_bars_come_from_each_replicas_own_broker_and_the_leaders_follower_view():
    followers = (FollowerView(2, 90, 30, 1200, True), FollowerView(3, 40, 80, 9000, False))
    replicas = {
        1: BrokerReplicas(1, "a", None, 2, 1, 5, (replica(1, "t", 0, 1, 10, 88, 120, followers),)),
        2: BrokerReplicas(2, "b", None, 2, 1, 5, (replica(2, "t", 0, 1, 10, 80, 90),)),
        3: BrokerReplicas(3, "c", "REQUEST_TIMED_OUT: no answer"),
    }
    view = snap.MetadataView(cluster(), [topic(leaders=(1,), isr=(1, 2))])
    (row,) = snap.topic_rows(view, replicas)[0].partitions
    assert (row.leader, row.isr, row.under_replicated) == (1, [1, 2], True)
    leader, follower, silent = row.bars
    assert (leader.role, leader.log_start_offset, leader.high_watermark, leader.log_end_offset) == (
        "leader", 10, 88, 120)
    assert (follower.role, follower.high_watermark, follower.log_end_offset, follower.lag) == ("follower", 80, 90, 30)
    assert follower.caught_up_ms_ago == 1200 and follower.in_isr
    # Broker 3 did not answer: only the leader's record of its fetches is left.
    assert (silent.role, silent.log_end_offset, silent.lag, silent.in_isr) == ("offline", 40, 80, False)


def test_internal_topics_come_after_the_users():
    view = snap.MetadataView(cluster(), [topic("__consumer_offsets"), topic("b"), topic("a")])
    assert [(t.name, t.internal) for t in snap.topic_rows(view, {})] == [
        ("a", False), ("b", False), ("__consumer_offsets", True)]


# ---- groups and lag ---------------------------------------------------------------------------------------


def test_group_lag_is_high_watermark_minus_committed_with_owners():
    member = MemberDescription("m-1", None, "raftka", "/127.0.0.1", ConsumerProtocolAssignment(0, [("t", 0), ("t", 1)]))
    group = GroupDescription("g", "Stable", "consumer", "range", [member], 2)
    row = snap.group_row(group, {("t", 0): 5, ("t", 2): 9}, {("t", 0): 8, ("t", 1): 4, ("t", 2): 9})
    lags = {(p.topic, p.partition): (p.committed_offset, p.log_end_offset, p.lag, p.owner) for p in row.partitions}
    assert lags == {("t", 0): (5, 8, 3, "raftka@/127.0.0.1"), ("t", 1): (-1, 4, None, "raftka@/127.0.0.1"),
                    ("t", 2): (9, 9, 0, None)}
    assert (row.total_lag, row.members, row.coordinator, row.state) == (3, 1, 2, "Stable")


# ---- the metadata log, told ----------------------------------------------------------------------------------


def test_timeline_tells_a_kill_as_fencing_election_with_epoch_and_isr_changes():
    story = snap.TimelineStory()
    created = story.items(6, 1, 0, [{"type": "CreateTopic", "name": "email.send", "topic_id": "x",
                                     "assignments": [[1, 2, 3], [2, 3, 1]], "configs": {}}])
    assert created[0].kind == "topic" and created[0].text == \
        "topic email.send created: 2 partitions, replicas 1,2,3 / 2,3,1"
    items = story.items(7, 2, 0, [
        {"type": "FenceBroker", "broker_id": 1, "broker_epoch": 0},
        {"type": "ChangePartition", "topic": "email.send", "topic_id": "x", "partition": 0,
         "partition_epoch": 0, "leader": 2, "isr": [2, 3]},
        {"type": "ChangePartition", "topic": "email.send", "topic_id": "x", "partition": 1,
         "partition_epoch": 0, "leader": 2, "isr": [2, 3]},
        {"type": "AllocateProducerIds", "broker_id": 2, "count": 1000}])
    assert [(i.kind, i.text) for i in items] == [
        ("fence", "broker 1 fenced"),
        ("election", "email.send-0: leader 1 → 2, epoch 1 (ISR 2,3)"),
        ("isr-shrink", "email.send-1: ISR shrank to 2,3 (broker 1 fell behind or left)")]
    back = story.items(9, 2, 0, [{"type": "ChangePartition", "topic": "email.send", "topic_id": "x", "partition": 1,
                                  "partition_epoch": 1, "leader": 2, "isr": [2, 3, 1]}])
    assert (back[0].kind, back[0].text) == ("isr-expand", "email.send-1: ISR expanded to 2,3,1 (broker 1 caught up)")
    again = story.items(10, 2, 0, [{"type": "ChangePartition", "topic": "email.send", "topic_id": "x",
                                    "partition": 0, "partition_epoch": 1, "leader": 3, "isr": [3]}])
    assert again[0].text == "email.send-0: leader 2 → 3, epoch 2 (ISR 3)"


def test_timeline_folds_internal_topics_and_tells_refusals_controllers_and_reasons():
    story = snap.TimelineStory()
    story.items(0, 1, 0, [{"type": "CreateTopic", "name": "__consumer_offsets", "topic_id": "o",
                           "assignments": [[1, 2], [2, 1], [1, 2]]}])
    changes = [{"type": "ChangePartition", "topic": "__consumer_offsets", "topic_id": "o", "partition": p,
                "partition_epoch": 0, "leader": 2, "isr": [2]} for p in range(3)]
    (folded,) = story.items(1, 1, 0, changes)
    assert (folded.kind, folded.text) == ("internal", "__consumer_offsets: 2 leader changes, 1 ISR change")
    assert story.items(2, 3, 0, [])[0].text == "a new controller took over (Raft term 3)"
    refused = story.items(3, 3, 0, [{"type": "FenceBroker"}], applied=False, reason="stale broker epoch")
    assert (refused[0].kind, refused[0].text) == ("refused", "batch refused: stale broker epoch")
    told = story.items(4, 3, 0, [{"type": "FenceBroker", "broker_id": 1, "broker_epoch": 3,
                                  "reason": "connection_lost"}])
    assert told[0].text == "broker 1 fenced: connection lost"
    unknown_start = snap.TimelineStory().items(5, 3, 0, [{"type": "ChangePartition", "topic": "t", "topic_id": "t",
                                                          "partition": 0, "partition_epoch": 4, "leader": 2,
                                                          "isr": [2]}])
    assert unknown_start[0].text == "t-0: leader ? → 2 (ISR 2)"


def test_unreadable_records_are_told_not_dropped_and_the_timeline_is_newest_first():
    assert snap.entry_records(['{"type": "FenceBroker", "broker_id": 1}', "not json", "[1]"]) == [
        {"type": "FenceBroker", "broker_id": 1}, {"type": "Unreadable", "record": "not json"},
        {"type": "Unreadable", "record": "[1]"}]
    items = [snap.TimelineItem(i, 1, 0, "topic", f"t{i}") for i in range(snap.TIMELINE_MAX + 10)]
    s = snap.build_snapshot(snap.MetadataView(cluster(), []), {}, [], None, items, CONTROLS_OFF, {}, now_ms=1)
    assert len(s.timeline) == snap.TIMELINE_MAX and s.timeline[0].offset == snap.TIMELINE_MAX + 9
    picture = s.to_json()
    assert json.loads(json.dumps(picture)) == picture
    assert snap.same_picture(picture, {**picture, "generated_ms": 99})
    assert not snap.same_picture(picture, {**picture, "controller_id": 3})


# ---- the lesson's hops ----------------------------------------------------------------------------------------


def test_hops_name_the_bootstrap_broker_once_any_event_does():
    events = [TraceEvent("request", "Metadata", "127.0.0.1:19092", None, "who leads t?"),
              TraceEvent("response", "Metadata", "127.0.0.1:19092", 2, "brokers ..."),
              TraceEvent("redirect", "Produce", "127.0.0.1:19092", 2, "NOT_LEADER_OR_FOLLOWER ...")]
    assert [(h.kind, h.broker_id) for h in hops_of(events)] == [("request", 2), ("response", 2), ("redirect", 2)]


# ---- broker controls: when they exist, and what they would signal --------------------------------------------


def local(broker_id: int, host="127.0.0.1", data_dir=None) -> controls.ControlledBroker:
    return controls.ControlledBroker(broker_id, host, 9000 + broker_id, data_dir)


def test_controls_need_a_cluster_config_a_loopback_page_and_loopback_brokers():
    assert not controls.control_policy("127.0.0.1", None).enabled
    assert "--cluster-config" in controls.control_policy("127.0.0.1", None).reason
    off = controls.control_policy("0.0.0.0", [local(1)])
    assert not off.enabled and "not on loopback" in off.reason
    remote = controls.control_policy("127.0.0.1", [local(1), local(2, host="10.0.0.7")])
    assert not remote.enabled and "broker 2 is on 10.0.0.7" in remote.reason
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert controls.control_policy(host, [local(1), local(2, host="localhost")]).enabled, host
    with pytest.raises(RequestError) as e:
        controls.control_broker(off, 1, "kill")
    assert e.value.status == 403 and "not on loopback" in e.value.message


def test_a_pid_file_is_trusted_only_for_a_process_running_that_broker(tmp_path):
    assert controls.is_broker_process([sys.executable, "-m", "broker", "--config", "c.toml", "--id", "2"], 2)
    assert controls.is_broker_process(["/x/.venv/bin/kbroker", "--config", "c.toml", "--id=3"], 3)
    assert not controls.is_broker_process([sys.executable, "-m", "broker", "--config", "c.toml", "--id", "21"], 2)
    assert not controls.is_broker_process(["sleep", "--id", "2"], 2)
    policy = controls.control_policy("127.0.0.1", [local(1, data_dir=tmp_path)])
    with pytest.raises(RequestError) as e:
        controls.control_broker(policy, 1, "kill")
    assert e.value.status == 409 and "not running" in e.value.message
    # A stale file naming another process (this sleep): refused, and the sleep is still there.
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        # Until it has exec'd, the child's command line is empty or this Python's, not yet "sleep 30".
        deadline = time.monotonic() + 10
        while Path(f"/proc/{sleeper.pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":
            assert time.monotonic() < deadline, "the sleep process never started"
            time.sleep(0.01)
        (tmp_path / "broker.pid").write_text(f"{sleeper.pid}\n")
        with pytest.raises(RequestError) as e:
            controls.control_broker(policy, 1, "kill")
        assert e.value.status == 409 and "stale" in e.value.message
        assert sleeper.poll() is None
    finally:
        os.kill(sleeper.pid, signal.SIGKILL)
        sleeper.wait()
    for broker_id, action, status in ((7, "kill", 404), (1, "explode", 404)):
        with pytest.raises(RequestError) as e:
            controls.control_broker(policy, broker_id, action)
        assert e.value.status == status


# ---- request checks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, status, words", [
    ({"node": 1, "topic": "t", "value": "v", "extra": 1}, 400, "unknown field"),
    ({"node": "1", "topic": "t", "value": "v"}, 400, "'node' must be an integer"),
    ({"node": True, "topic": "t", "value": "v"}, 400, "'node' must be an integer"),
    ({"node": 1, "topic": "", "value": "v"}, 400, "empty"),
    ({"node": 1, "topic": "..", "value": "v"}, 400, "cannot be '..'"),
    ({"node": 1, "topic": "a/b", "value": "v"}, 400, "may only contain"),
    ({"node": 1, "topic": "x" * 250, "value": "v"}, 400, "longer than 249"),
    ({"node": 1, "topic": "t", "value": 5}, 400, "'value' must be a string"),
    ({"node": 1, "topic": "t", "value": "v" * (64 * 1024 + 1)}, 400, "at most 65536"),
    ({"node": 1, "topic": "t", "key": "\ud800", "value": "v"}, 400, "not valid Unicode"),
    ({"node": 1, "topic": "t", "partition": -1, "value": "v"}, 400, "'partition' must be between"),
    ({"node": 9, "topic": "t", "value": "v"}, 404, "no broker 9"),
])
def test_bad_produce_bodies_are_one_line_refusals(body, status, words):
    with pytest.raises(RequestError) as e:
        validation.parse_produce(body, {1, 2, 3})
    assert e.value.status == status and words in e.value.message
    assert "\n" not in e.value.message and e.value.body()["error"].startswith("INVALID_REQUEST: ")


def test_a_good_produce_body():
    form = validation.parse_produce({"node": 2, "topic": "email.send", "partition": None, "key": None,
                                     "value": "héllo"}, {1, 2, 3})
    assert (form.node, form.topic, form.partition, form.key, form.value) == (2, "email.send", None, None,
                                                                              "héllo".encode())


@pytest.mark.parametrize("raw, words", [
    (b"\xff\xfe", "not UTF-8"), (b"{", "not valid JSON"), (b"[1, 2]", "must be a JSON object"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"), (b'{"node": 1' + b"0" * 5000 + b"}", "not valid JSON"),
])
def test_bodies_that_are_no_json_object(raw, words):
    with pytest.raises(RequestError) as e:
        validation.parse_json_object(raw)
    assert e.value.status == 400 and words in e.value.message


def test_posts_must_come_from_the_page_itself():
    good = {"Host": "127.0.0.1:8080", "Origin": "http://127.0.0.1:8080", "Content-Type": "application/json"}
    validation.check_post_origin(good, "127.0.0.1", 8080)
    validation.check_post_origin({**good, "Host": "localhost:8080", "Origin": "http://localhost:8080"},
                                 "127.0.0.1", 8080)
    for headers, status, words in (
            ({**good, "Host": "evil.example:8080", "Origin": "http://evil.example:8080"}, 403, "DNS rebinding"),
            ({**good, "Origin": "http://evil.example"}, 403, "cross-site"),
            ({**good, "Content-Type": "text/plain"}, 415, "application/json"),
            ({**good, "Host": "127.0.0.1:9999"}, 403, "DNS rebinding")):
        with pytest.raises(RequestError) as e:
            validation.check_post_origin(headers, "127.0.0.1", 8080)
        assert e.value.status == status and words in e.value.message, headers
    # Not on loopback: any Host (the controls are off there), the Origin still checked.
    validation.check_post_origin({**good, "Host": "box:8080", "Origin": "http://box:8080"}, "0.0.0.0", 8080)
