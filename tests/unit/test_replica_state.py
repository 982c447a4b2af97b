"""The replica table of `kclient topics --describe --replicas`, built from brokers' DescribeReplicas answers."""

from __future__ import annotations

from broker.partition import Partition
from broker.partition_state import FollowerState, PartitionState
from client.replica_state import BrokerReplicas, FollowerView, ReplicaView, replica_rows, replica_table


def view(broker: int, leader: int, end: int, hw: int, followers=()) -> ReplicaView:
    return ReplicaView("t", 0, broker, broker == leader, leader, 3, (1, 2), 5, hw, end, 1000 + end, tuple(followers))


def test_rows_take_offsets_from_each_broker_and_lag_from_the_leader():
    answers = [BrokerReplicas(1, "127.0.0.1:1", None, 2, 1, 9, (view(1, 1, 70, 60, [FollowerView(2, 60, 10, 5, True),
                                                                                    FollowerView(3, 40, 30, 900, False)]),)),
               BrokerReplicas(2, "127.0.0.1:2", None, 2, 1, 9, (view(2, 1, 60, 55),)),
               BrokerReplicas(3, "127.0.0.1:3", "KAFKA_CONNECTION_ERROR: unreachable")]
    rows = replica_rows([("t", 0, (1, 2, 3), (1, 2))], answers)
    assert [(r.broker_id, r.role, r.log_start_offset, r.high_watermark, r.log_end_offset, r.lag, r.in_isr)
            for r in rows] == [(1, "leader", 5, 60, 70, 0, True), (2, "follower", 5, 55, 60, 10, True),
                               (3, "offline", None, None, None, 30, False)]
    lines = replica_table(rows).splitlines()
    assert lines[0].split() == ["TOPIC", "PARTITION", "REPLICA", "ROLE", "LOG-START-OFFSET", "HIGH-WATERMARK",
                                "LOG-END-OFFSET", "LAG", "IN-ISR", "SIZE"]
    assert lines[3].split() == ["t", "0", "3", "offline", "-", "-", "-", "30", "no", "-"]
    # Columns line up: every value starts where its header does.
    starts = [lines[0].index(h) for h in ("REPLICA", "LAG", "SIZE")]
    assert all(line[s - 1] == " " for line in lines for s in starts)


def test_without_a_leader_answer_a_follower_has_no_lag():
    rows = replica_rows([("t", 0, (1, 2), (2,))], [BrokerReplicas(2, "a", None, 1, -1, 3, (view(2, 1, 8, 8),))])
    assert [(r.broker_id, r.role, r.lag) for r in rows] == [(1, "offline", None), (2, "follower", None)]


def test_a_leader_snapshot_counts_lag_from_its_own_log_end():
    class FakeLog:      # only the offsets and size a snapshot reads
        log_start_offset, log_end_offset, size_bytes = 2, 50, 4096

    state = PartitionState("t", 0, 1, leader_id=1, leader_epoch=4, replicas=(1, 2, 3), isr=(1, 2),
                           log_end_offset=50, high_watermark=45,
                           followers={2: FollowerState(2, 45, last_caught_up_ms=900),
                                      3: FollowerState(3, -1, last_caught_up_ms=100)})
    snap = Partition(state, FakeLog(), 1 << 20, "id", None).replica_state(lag_now_ms=1000)
    assert (snap.is_leader, snap.log_start_offset, snap.high_watermark, snap.log_end_offset) == (True, 2, 45, 50)
    assert [(f.broker_id, f.log_end_offset, f.lag, f.caught_up_ms_ago, f.in_isr) for f in snap.followers] == [
        (2, 45, 5, 100, True), (3, -1, -1, 900, False)]
