"""KIP-392's choice of a replica to read (Kafka's RackAwareReplicaSelector), and what DescribeConfigs
says of where each config comes from."""

from broker.config import BrokerSettings
from broker.describe_configs import DEFAULT_CONFIG, STATIC_BROKER_CONFIG, TOPIC_CONFIG, broker_configs, topic_configs
from broker.partition_state import FollowerState
from broker.replica_selector import ReplicaView, read_candidates, select_read_replica

LEADER = ReplicaView(1, "a", 100, 0)


def test_no_client_rack_or_none_in_it_reads_the_leader():
    followers = [ReplicaView(2, "b", 100, 0)]
    assert select_read_replica(None, LEADER, followers) is LEADER
    assert select_read_replica("", LEADER, followers) is LEADER
    assert select_read_replica("z", LEADER, followers) is LEADER


def test_the_leader_wins_in_its_own_rack():
    assert select_read_replica("a", LEADER, [ReplicaView(2, "a", 100, 0)]) is LEADER


def test_the_most_caught_up_follower_of_the_rack_then_the_most_recently_caught_up():
    behind, ahead, stale = ReplicaView(2, "b", 90, 0), ReplicaView(3, "b", 100, 50), ReplicaView(4, "b", 100, 900)
    assert select_read_replica("b", LEADER, [behind, stale, ahead]) is ahead
    assert select_read_replica("c", LEADER, [behind, stale, ahead]) is LEADER


def test_candidates_are_in_sync_and_hold_the_offset():
    followers = [FollowerState(2, log_end_offset=100, last_caught_up_ms=990),
                 FollowerState(3, log_end_offset=40, last_caught_up_ms=990),      # has not the offset yet
                 FollowerState(4, log_end_offset=100, last_caught_up_ms=0)]       # out of the ISR
    got = read_candidates(followers, (1, 2, 3), 50, lambda b: f"rack-{b}", 1000)
    assert got == [ReplicaView(2, "rack-2", 100, 10)]


def test_a_topic_config_is_its_own_else_the_brokers_setting_else_the_default():
    settings = BrokerSettings(min_insync_replicas=2, set_in_file=frozenset({"min.insync.replicas"}))
    entries = {e.name: e for e in topic_configs({"retention.ms": "5"}, settings, None)}
    assert (entries["retention.ms"].value, entries["retention.ms"].source) == ("5", TOPIC_CONFIG)
    assert [s.source for s in entries["retention.ms"].synonyms] == [TOPIC_CONFIG, DEFAULT_CONFIG]
    assert (entries["min.insync.replicas"].value, entries["min.insync.replicas"].source) == ("2", STATIC_BROKER_CONFIG)
    assert entries["unclean.leader.election.enable"].value == "false"
    assert [e.name for e in topic_configs({}, settings, ["segment.bytes", "nope"])] == ["segment.bytes"]


def test_broker_configs_are_read_only_and_name_the_rack():
    entries = {e.name: e for e in broker_configs(BrokerSettings(), "r1", None)}
    assert all(e.read_only for e in entries.values())
    assert entries["broker.rack"].value == "r1"
    assert entries["message.max.bytes"].source == DEFAULT_CONFIG
    assert "broker.rack" not in {e.name for e in broker_configs(BrokerSettings(), None, None)}
