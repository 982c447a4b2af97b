"""The controller on a real one-node metadata quorum (pysyncobj on loopback): no broker processes, no mocks.

Only broker 1 runs; brokers 2 and 3 exist in the cluster file and register through
the controller's API as their processes would. The controller's clock is a
FakeClock that moves only when a test moves it, so no broker is fenced for
silence unless the test means it. The Raft timers are short (50-100 ms elections)
so that every test gets a fresh quorum quickly.
"""

import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from broker.config import ClusterConfig, parse_cluster_config
from broker.controller import (PREFERRED, UNCLEAN, Controller, ElectionOutcome, HeartbeatReply, IsrChange,
                               TopicOutcome, TopicRequest)
from broker.logging_setup import PARTITION_EVENTS_EACH_UP_TO, PARTITION_EVENTS_PER_CHANGE_UP_TO, parse_partition_ranges
from broker.metadata.image import NO_LEADER
from broker.metadata.quorum import CommitError, MetadataQuorum, QuorumStartError
from broker.metadata.records import (AllocateProducerIds, ChangePartition, CreateTopic, RegisterBroker,
                                     UnfenceBroker)
from broker.request_errors import MalformedRequestError
from broker.servicer import ControllerServicer
from client.errors import (ElectionNotNeededError, FencedLeaderEpochError, InconsistentClusterIdError,
                           IneligibleReplicaError, InvalidConfigError, InvalidPartitionsError,
                           InvalidReplicationFactorError, InvalidRequestError, InvalidTopicError,
                           InvalidUpdateVersionError, KafkaError, NotControllerError, PreferredLeaderNotAvailableError,
                           StaleBrokerEpochError, TopicAlreadyExistsError, UnknownTopicOrPartitionError)
from client.protocol.v1 import common_pb2, controller_pb2
from tests.integration.cluster import free_port, wait_for

CLUSTER_ID = "unit-cluster"
HEARTBEAT_S = 1.0      # broker.heartbeat.interval.ms
SESSION_S = 5.0        # broker.session.timeout.ms
WAIT_S = 10.0          # a deadline for what should take well under a second


def wait_until(predicate, what: str, timeout_s: float = WAIT_S):
    return wait_for(predicate, timeout_s, what, interval=0.01)


def _config(tmp_path: Path, **config: int) -> ClusterConfig:
    raw = {
        "cluster_id": CLUSTER_ID,
        "cluster_secret": "unit-test-secret",
        "broker": [{"id": b, "port": 100 + b, "raft_port": free_port() if b == 1 else 200 + b,
                    "inter_broker_port": 300 + b, "data_dir": f"broker-{b}"} for b in (1, 2, 3)],
        "config": {"broker.heartbeat.interval.ms": int(HEARTBEAT_S * 1000),
                   "broker.session.timeout.ms": int(SESSION_S * 1000),
                   "controller.quorum.election.timeout.ms": 50,
                   "controller.quorum.election.timeout.max.ms": 100,
                   "controller.quorum.heartbeat.interval.ms": 10,
                   "metadata.commit.timeout.ms": 5000, **config},
    }
    return parse_cluster_config(raw, tmp_path / "cluster.toml")


def start_quorum(config: ClusterConfig) -> MetadataQuorum:
    """Broker 1's quorum node, alone (peers={}), ready and Raft leader."""
    b, s = config.broker(1), config.settings
    b.data_dir.mkdir(parents=True, exist_ok=True)
    quorum = MetadataQuorum(config.cluster_id, f"{b.host}:{b.raft_port}", {}, 1, b.data_dir, config.cluster_secret,
                            (s.quorum_election_timeout_ms / 1000, s.quorum_election_timeout_max_ms / 1000),
                            s.quorum_heartbeat_interval_ms / 1000)
    quorum.start()
    try:
        wait_until(lambda: quorum.ready.is_set() and quorum.is_leader(), "the one-node quorum to lead")
    except AssertionError:
        quorum.stop()
        raise
    return quorum


class FakeClock:
    """The controller's clock: moves only when a test moves it; counts reads so a test can wait for a tick."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def wait_for_ticks(self, n: int = 2) -> None:
        target = self.reads + n
        wait_until(lambda: self.reads >= target, f"{n} controller ticks")


@dataclass
class Node:
    config: ClusterConfig
    quorum: MetadataQuorum
    controller: Controller
    clock: FakeClock

    @property
    def image(self):
        return self.quorum.image

    def register(self, broker_id: int, incarnation: str = "") -> int:
        return self.controller.register_broker(broker_id, CLUSTER_ID, incarnation or f"inc-{broker_id}",
                                               "127.0.0.1", 9000 + broker_id)

    def heartbeat(self, broker_id: int, epoch: int, want_shut_down: bool = False) -> HeartbeatReply:
        """A heartbeat from a broker that has applied everything committed so far."""
        return self.controller.heartbeat(broker_id, epoch, self.image.offset, want_shut_down)

    def unfenced(self, *broker_ids: int) -> dict[int, int]:
        """Register each broker and heartbeat it into the live set; their epochs."""
        epochs = {b: self.register(b) for b in broker_ids}
        for b, epoch in epochs.items():
            assert self.heartbeat(b, epoch) == HeartbeatReply(is_caught_up=True, is_fenced=False)
        assert self.image.live_broker_ids() == sorted(broker_ids)
        return epochs

    def create(self, name: str, partitions: int, rf: int, validate_only: bool = False, **configs: str):
        """One topic's CreateTopics: its error, or None once created (validated, with validate_only)."""
        [outcome] = self.controller.create_topics([TopicRequest(name, partitions, rf, dict(configs))], validate_only)
        assert outcome.name == name
        return outcome.error

    def delete(self, name: str):
        """One topic's DeleteTopics: its error, or None once deleted."""
        [outcome] = self.controller.delete_topics([name])
        assert outcome.name == name
        return outcome.error


@contextmanager
def running_node(tmp_path: Path, **config: int):
    cfg = _config(tmp_path, **config)
    for _ in range(3):          # the free port may be taken between the probe and the bind
        try:
            quorum = start_quorum(cfg)
            break
        except QuorumStartError:
            cfg = _config(tmp_path, **config)
    else:
        pytest.fail("no free raft port")
    clock = FakeClock()
    controller = Controller(quorum, cfg, broker_id=1, clock=clock, rng=random.Random(7))
    controller.start()
    try:
        wait_until(controller.is_active, "the controller to activate")
        yield Node(cfg, quorum, controller, clock)
    finally:
        controller.stop()
        quorum.stop()


@pytest.fixture
def node(tmp_path):
    with running_node(tmp_path) as n:
        yield n


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """One node shared by tests that change nothing: broker 1 live, broker 2 registered and fenced, 3 unknown."""
    with running_node(tmp_path_factory.mktemp("read-only")) as n:
        n.unfenced(1)
        n.register(2)
        yield n


@pytest.fixture
def unchanged(read_only):
    """The shared node, checked to be left as it was."""
    before = read_only.image
    yield read_only
    assert read_only.image == before


# ---- registration and heartbeats ----------------------------------------------------


def test_registration_returns_the_epoch_and_the_broker_starts_fenced(node):
    offset = node.image.offset
    epoch = node.register(2)
    reg = node.image.brokers[2]
    assert epoch == reg.broker_epoch == offset         # the offset of the registration batch
    assert (reg.host, reg.port, reg.incarnation_id) == ("127.0.0.1", 9002, "inc-2")
    assert reg.fenced and node.image.live_broker_ids() == []


def test_a_heartbeat_unfences_a_broker_once_it_has_applied_its_registration(node):
    epoch = node.register(2)
    not_yet = node.controller.heartbeat(2, epoch, epoch, False)        # has not applied offset `epoch`
    assert not_yet == HeartbeatReply(is_caught_up=False, is_fenced=True, should_shut_down=False)
    assert node.image.brokers[2].fenced
    caught_up = node.controller.heartbeat(2, epoch, epoch + 1, False)
    assert caught_up == HeartbeatReply(is_caught_up=True, is_fenced=False, should_shut_down=False)
    assert node.image.is_live(2) and node.image.brokers[2].broker_epoch == epoch


def test_registering_the_same_incarnation_again_returns_its_epoch_without_a_commit(node):
    epoch = node.register(2)
    offset = node.image.offset
    assert node.register(2) == epoch
    assert node.image.offset == offset


def test_a_new_incarnation_gets_a_new_epoch_and_the_old_epoch_is_stale(node):
    old = node.unfenced(2)[2]
    new = node.register(2, "inc-2-restarted")
    assert new > old and node.image.brokers[2].fenced
    with pytest.raises(StaleBrokerEpochError) as stale:
        node.heartbeat(2, old)
    assert stale.value.name == "STALE_BROKER_EPOCH"
    assert node.image.brokers[2].fenced
    assert node.heartbeat(2, new) == HeartbeatReply(is_caught_up=True, is_fenced=False)


@pytest.mark.parametrize("broker_id,epoch_delta", [(2, 1), (2, -1), (3, 0)], ids=["ahead", "behind", "unknown"])
def test_a_heartbeat_with_a_wrong_epoch_is_stale_broker_epoch(unchanged, broker_id, epoch_delta):
    epoch = unchanged.image.brokers[2].broker_epoch
    with pytest.raises(StaleBrokerEpochError) as stale:
        unchanged.controller.heartbeat(broker_id, epoch + epoch_delta, unchanged.image.offset, False)
    assert stale.value.name == "STALE_BROKER_EPOCH"
    # On the wire the refusal still says fenced and not shutting down.
    reply = ControllerServicer(unchanged.controller).BrokerHeartbeat(controller_pb2.BrokerHeartbeatRequest(
        broker_id=broker_id, broker_epoch=epoch + epoch_delta, metadata_offset=unchanged.image.offset), None)
    assert reply.error_code == common_pb2.STALE_BROKER_EPOCH
    assert reply.is_fenced and not reply.should_shut_down


def test_a_broker_of_another_cluster_is_refused(unchanged):
    with pytest.raises(InconsistentClusterIdError) as e:
        unchanged.controller.register_broker(3, "other-cluster", "inc-3", "127.0.0.1", 9003)
    assert e.value.name == "INCONSISTENT_CLUSTER_ID"


def test_a_broker_missing_from_the_cluster_file_is_refused(unchanged):
    with pytest.raises(InvalidRequestError):
        unchanged.controller.register_broker(9, CLUSTER_ID, "inc-9", "127.0.0.1", 9009)


def test_the_elections_of_one_batch_name_the_moment_it_committed(node):
    """bench.scale times 'led again' by committed_at_ms: thousands of events take a while to write."""
    epochs = node.unfenced(1, 2, 3)
    assert node.create("t", 6, 3) is None
    with structlog.testing.capture_logs() as logs:
        before_ms = int(time.time() * 1000)
        node.heartbeat(2, epochs[2], want_shut_down=True)
        after_ms = int(time.time() * 1000)
    elected = [e for e in logs if e["event"] == "leader_elected"]
    assert len(elected) == 2 and len({e["committed_at_ms"] for e in elected}) == 1, elected
    assert before_ms <= elected[0]["committed_at_ms"] <= after_ms


def test_a_batch_electing_many_leaders_is_one_event_per_topic_naming_its_partitions_and_commit(node):
    """A failover at 10,000 partitions wrote 3,338 leader_elected lines (1.7 s of the controller's CPU) while every
    broker applied the batch: past PARTITION_EVENTS_PER_CHANGE_UP_TO, one leaders_elected per topic."""
    epochs = node.unfenced(1, 2, 3)
    per_topic = PARTITION_EVENTS_EACH_UP_TO   # under the per-topic limit: only the batch's size makes it bulk
    topics = [f"t{n}" for n in range(3 * PARTITION_EVENTS_PER_CHANGE_UP_TO // per_topic + 3)]
    for t in topics:
        assert node.create(t, per_topic, 3) is None
    led_by_2 = {t: [p for p, reg in enumerate(node.image.topics[t].partitions) if reg.leader == 2] for t in topics}
    assert sum(map(len, led_by_2.values())) > PARTITION_EVENTS_PER_CHANGE_UP_TO
    with structlog.testing.capture_logs() as logs:
        node.heartbeat(2, epochs[2], want_shut_down=True)
    bulk = [e for e in logs if e["event"] == "leaders_elected"]
    assert [e for e in logs if e["event"] == "leader_elected"] == [] and len(bulk) == len(topics)
    assert len({e["committed_at_ms"] for e in bulk}) == 1
    for e in bulk:
        moved = led_by_2[e["topic"]]
        assert parse_partition_ranges(e["partition_ranges"]) == moved and e["partitions"] == len(moved), e
        assert e["first_previous_leader"] == 2 and e["first_leader"] in (1, 3), e
        assert all(node.image.partition(e["topic"], p).leader in (1, 3) for p in moved)


def test_a_controlled_shutdown_fences_the_broker_and_moves_its_leaderships(node):
    epochs = node.unfenced(1, 2, 3)
    assert node.create("t", 3, 3) is None
    before = node.image.topics["t"].partitions
    assert [p.leader for p in before].count(2) == 1
    reply = node.heartbeat(2, epochs[2], want_shut_down=True)
    assert reply == HeartbeatReply(is_caught_up=True, is_fenced=True, should_shut_down=True)
    image = node.image
    assert image.brokers[2].fenced
    for old, new in zip(before, image.topics["t"].partitions):
        assert new.leader != 2 and 2 not in new.isr
        assert image.is_live(new.leader) and new.leader in new.isr
        if old.leader == 2:
            # Kafka's rule: the first live in-sync replica in assignment order.
            assert new.leader == next(r for r in old.replicas if r != 2)
            assert new.leader_epoch == old.leader_epoch + 1
        else:
            assert (new.leader, new.leader_epoch) == (old.leader, old.leader_epoch)


def test_the_controller_fences_a_broker_that_went_silent(node):
    node.unfenced(1, 2)
    assert node.create("t", 2, 2) is None
    assert {p.leader for p in node.image.topics["t"].partitions} == {1, 2}
    # Broker 2 has no Raft link here, so two missed heartbeats are enough (connection lost).
    node.clock.now += 2 * HEARTBEAT_S + 0.1
    wait_until(lambda: node.image.brokers[2].fenced, "the tick to fence broker 2")
    parts = node.image.topics["t"].partitions
    assert [(p.leader, p.isr) for p in parts] == [(1, (1,)), (1, (1,))]
    assert node.image.is_live(1)          # the controller does not fence its own broker


def test_a_broker_a_previous_controller_unfenced_gets_a_grace_period(node):
    # Written as an earlier controller would have: this one never heard from broker 2.
    assert node.quorum.submit([RegisterBroker(2, "127.0.0.1", 9002, "inc-2")], 5.0).applied
    assert node.quorum.submit([UnfenceBroker(2, node.image.brokers[2].broker_epoch)], 5.0).applied
    node.clock.now += 2 * HEARTBEAT_S - 0.1          # since the controller's activation
    node.clock.wait_for_ticks()
    assert node.image.is_live(2)
    node.clock.now += 0.2
    wait_until(lambda: node.image.brokers[2].fenced, "the grace period to end")


# ---- topics -------------------------------------------------------------------------


@pytest.mark.parametrize("name,partitions,rf,configs,error", [
    ("a b", 1, 1, {}, InvalidTopicError),
    ("..", 1, 1, {}, InvalidTopicError),
    ("t", 0, 1, {}, InvalidPartitionsError),
    ("t", 1, 2, {}, InvalidReplicationFactorError),            # one live broker (2 is registered but fenced)
    ("t", 1, 0, {}, InvalidReplicationFactorError),
    ("t", 1, 1, {"no.such.config": "1"}, InvalidConfigError),
    ("t", 1, 1, {"retention.ms": "soon"}, InvalidConfigError),
])
def test_create_topic_validation_errors(unchanged, name, partitions, rf, configs, error):
    assert isinstance(unchanged.create(name, partitions, rf, **configs), error)
    assert isinstance(unchanged.create(name, partitions, rf, validate_only=True, **configs), error)


def test_validate_only_creates_nothing(unchanged):
    assert unchanged.create("t", 1, 1, validate_only=True) is None
    assert "t" not in unchanged.image.topics


def test_create_topic_spreads_leaders_over_the_live_brokers(node):
    node.unfenced(1, 2, 3)
    assert node.create("orders", 3, 3, **{"retention.ms": "60000"}) is None
    topic = node.image.topics["orders"]
    assert len(topic.partitions) == 3
    assert sorted(p.leader for p in topic.partitions) == [1, 2, 3]
    for p in topic.partitions:
        assert sorted(p.replicas) == [1, 2, 3]
        assert p.leader == p.replicas[0] and p.isr == p.replicas
        assert (p.leader_epoch, p.partition_epoch) == (0, 0)
    assert len(topic.topic_id) == 32 and int(topic.topic_id, 16) >= 0
    assert dict(topic.configs) == {"retention.ms": "60000"}


def test_create_topic_places_replicas_on_live_brokers_only(node):
    node.unfenced(1, 3)
    node.register(2)                                             # registered, fenced
    assert node.create("t", 4, 2) is None
    parts = node.image.topics["t"].partitions
    assert all(sorted(p.replicas) == [1, 3] for p in parts)
    assert sorted(p.leader for p in parts) == [1, 1, 3, 3]


def test_creating_a_topic_twice_is_topic_already_exists(node):
    node.unfenced(1, 2)
    assert node.create("t", 2, 1) is None
    first = node.image.topics["t"]
    assert isinstance(node.create("t", 1, 2), TopicAlreadyExistsError)
    assert node.image.topics["t"] == first


def test_one_request_answers_each_topic_on_its_own_in_order(node):
    node.unfenced(1)
    outcomes = node.controller.create_topics([TopicRequest("a", 1, 1, {}), TopicRequest("a", 1, 1, {}),
                                              TopicRequest("b", 0, 1, {})])
    assert [o.name for o in outcomes] == ["a", "a", "b"]
    assert outcomes[0] == TopicOutcome("a", None)
    assert isinstance(outcomes[1].error, TopicAlreadyExistsError)
    assert isinstance(outcomes[2].error, InvalidPartitionsError)
    deleted = node.controller.delete_topics(["a", "b"])
    assert deleted[0] == TopicOutcome("a", None)
    assert deleted[1].name == "b" and isinstance(deleted[1].error, UnknownTopicOrPartitionError)


def test_delete_topic_and_recreate_it_under_a_new_id(node):
    node.unfenced(1)
    assert node.create("t", 1, 1) is None
    old_id = node.image.topics["t"].topic_id
    assert node.delete("t") is None
    assert "t" not in node.image.topics
    assert isinstance(node.delete("t"), UnknownTopicOrPartitionError)
    assert node.create("t", 1, 1) is None
    assert node.image.topics["t"].topic_id != old_id


# ---- elections ----------------------------------------------------------------------


def _move_leader(node: Node, name: str, partition: int, leader: int, isr=None) -> None:
    """Commit a leader change the way another writer would, straight through the quorum."""
    topic = node.image.topics[name]
    reg = topic.partitions[partition]
    change = ChangePartition(name, topic.topic_id, partition, reg.partition_epoch, leader,
                             tuple(reg.isr if isr is None else isr))
    assert node.quorum.submit([change], 5.0).applied


def test_preferred_election_moves_leadership_back_to_the_first_replica(node):
    node.unfenced(1, 2, 3)
    assert node.create("t", 1, 3) is None
    preferred, other = node.image.partition("t", 0).replicas[:2]
    _move_leader(node, "t", 0, other)
    assert node.image.partition("t", 0).leader == other
    outcomes = node.controller.elect_leaders(PREFERRED, [("t", 0), ("t", 5), ("nope", 0)])
    assert outcomes[0] == ElectionOutcome("t", 0, None)
    assert [(o.topic, o.partition, type(o.error)) for o in outcomes[1:]] == [
        ("t", 5, UnknownTopicOrPartitionError), ("nope", 0, UnknownTopicOrPartitionError)]
    reg = node.image.partition("t", 0)
    assert (reg.leader, reg.leader_epoch) == (preferred, 2)


def test_preferred_election_is_not_needed_when_every_first_replica_leads(node):
    node.unfenced(1, 2, 3)
    assert node.create("t", 3, 3) is None
    offset = node.image.offset
    outcomes = node.controller.elect_leaders(PREFERRED, None)
    assert [(o.topic, o.partition) for o in outcomes] == [("t", 0), ("t", 1), ("t", 2)]
    assert all(isinstance(o.error, ElectionNotNeededError) for o in outcomes)
    assert node.image.offset == offset


def test_preferred_election_refuses_a_preferred_replica_that_is_out_of_sync(node):
    node.unfenced(1, 2, 3)
    assert node.create("t", 1, 3) is None
    preferred, other, third = node.image.partition("t", 0).replicas
    _move_leader(node, "t", 0, other, isr=(other, third))
    [outcome] = node.controller.elect_leaders(PREFERRED, [("t", 0)])
    assert isinstance(outcome.error, PreferredLeaderNotAvailableError)
    assert node.image.partition("t", 0).leader == other


def test_unclean_election_revives_an_offline_partition_with_a_live_replica(node):
    epochs = node.unfenced(1, 2, 3)
    assert node.create("t", 1, 2) is None
    first, second = node.image.partition("t", 0).replicas
    _move_leader(node, "t", 0, first, isr=(first,))               # second fell out of sync
    assert node.heartbeat(first, epochs[first], want_shut_down=True).should_shut_down
    assert (node.image.partition("t", 0).leader, node.image.partition("t", 0).isr) == (NO_LEADER, (first,))
    [outcome] = node.controller.elect_leaders(UNCLEAN, [("t", 0)])
    assert outcome == ElectionOutcome("t", 0, None)
    assert (node.image.partition("t", 0).leader, node.image.partition("t", 0).isr) == (second, (second,))
    [again] = node.controller.elect_leaders(UNCLEAN, [("t", 0)])
    assert isinstance(again.error, ElectionNotNeededError)


# ---- ISR changes from partition leaders (AlterPartition) -------------------------------


def _alter(node: Node, broker_id: int | None = None, broker_epoch: int | None = None, leader_epoch: int | None = None,
           partition_epoch: int | None = None, new_isr=None):
    """t-0's leader asks for ``new_isr``; every field defaults to what the committed image says."""
    topic = node.image.topics["t"]
    reg = topic.partitions[0]
    broker_id = reg.leader if broker_id is None else broker_id
    [result] = node.controller.alter_partition(
        broker_id, node.image.brokers[broker_id].broker_epoch if broker_epoch is None else broker_epoch,
        [IsrChange("t", topic.topic_id, 0, reg.leader_epoch if leader_epoch is None else leader_epoch,
                   reg.partition_epoch if partition_epoch is None else partition_epoch,
                   tuple(reg.isr if new_isr is None else new_isr))])
    if isinstance(result, KafkaError):
        raise result
    return result


def test_one_alter_partition_commits_many_isr_changes_in_one_batch_and_refuses_only_the_bad_one(node):
    """Kafka's AlterPartition carries many partitions: the valid changes are one metadata batch, and a
    change the controller refuses costs only itself."""
    node.unfenced(1, 2, 3)
    assert node.create("t", 6, 3) is None
    topic, image = node.image.topics["t"], node.image
    leader = topic.partitions[0].leader
    led = [p for p, reg in enumerate(topic.partitions) if reg.leader == leader]
    other = next(p for p in range(6) if p not in led)
    assert len(led) >= 2, led

    def alone(p: int) -> IsrChange:
        reg = topic.partitions[p]
        return IsrChange("t", topic.topic_id, p, reg.leader_epoch, reg.partition_epoch, (leader,))

    results = node.controller.alter_partition(leader, image.brokers[leader].broker_epoch,
                                              [alone(p) for p in led] + [alone(other)])
    assert all(r == node.image.partition("t", p) and r.isr == (leader,) for r, p in zip(results, led)), results
    assert isinstance(results[-1], InvalidRequestError), results[-1]      # not its leader: refused alone
    assert node.image.partition("t", other) == topic.partitions[other]
    entries, _ = node.quorum.state_machine.journal.read(image.offset, 100)
    batches = [e.offset for e in entries
               if any(r["type"] == "ChangePartition" and r["partition"] in led for r in e.records)]
    assert len(batches) == 1, f"the {len(led)} changes took {len(batches)} commits"
    with pytest.raises(MalformedRequestError):       # one partition twice in one request
        node.controller.alter_partition(leader, node.image.brokers[leader].broker_epoch, [alone(led[0])] * 2)


def test_isr_changes_are_an_event_each_up_to_the_limit_and_one_event_past_it(node):
    """A broker rejoining thousands of ISRs must not cost an event per partition (logging_setup.log_partitions)."""
    node.unfenced(1, 2, 3)
    assert node.create("t", 3 * (PARTITION_EVENTS_EACH_UP_TO + 1), 3) is None
    topic = node.image.topics["t"]
    leader = topic.partitions[0].leader
    led = [p for p, reg in enumerate(topic.partitions) if reg.leader == leader]
    assert len(led) == PARTITION_EVENTS_EACH_UP_TO + 1, led

    def shrink(p: int) -> IsrChange:
        reg = node.image.topics["t"].partitions[p]
        return IsrChange("t", topic.topic_id, p, reg.leader_epoch, reg.partition_epoch, (leader,))

    each = PARTITION_EVENTS_EACH_UP_TO
    for partitions, expected in ((led[:each], ["isr_changed"] * each),
                                 (led, ["isrs_changed"])):
        if partitions is led:   # all back to the full ISR first, then all shrunk again in one request
            node.controller.alter_partition(leader, node.image.brokers[leader].broker_epoch, [
                IsrChange("t", topic.topic_id, p, node.image.partition("t", p).leader_epoch,
                          node.image.partition("t", p).partition_epoch, (1, 2, 3)) for p in led[:-1]])
        with structlog.testing.capture_logs() as logs:
            results = node.controller.alter_partition(leader, node.image.brokers[leader].broker_epoch,
                                                      [shrink(p) for p in partitions])
        assert all(r.isr == (leader,) for r in results), results
        assert [e["event"] for e in logs if "isr" in e["event"]] == expected
    [bulk] = [e for e in logs if e["event"] == "isrs_changed"]
    assert bulk["partitions"] == len(led) and bulk["topic"] == "t" and bulk["first_isr"] == [leader]


def test_alter_partition_commits_the_new_isr_at_the_next_partition_epoch(node):
    node.unfenced(1, 2, 3)
    assert node.create("t", 1, 3) is None
    before = node.image.partition("t", 0)
    leader, dropped = before.leader, before.isr[-1]
    shrunk = tuple(r for r in before.isr if r != dropped)
    after = _alter(node, new_isr=shrunk)
    assert after == node.image.partition("t", 0)
    assert (after.leader, after.leader_epoch, after.isr, after.partition_epoch) == (leader, 0, shrunk, 1)
    grown = _alter(node, new_isr=shrunk + (dropped,))
    assert (grown.isr, grown.partition_epoch, grown.leader_epoch) == (shrunk + (dropped,), 2, 0)
    with pytest.raises(InvalidUpdateVersionError):       # the first request again: decided on an old epoch
        _alter(node, partition_epoch=0, new_isr=shrunk)
    assert node.image.partition("t", 0) == grown


@pytest.fixture(scope="module")
def isr_read_only(tmp_path_factory):
    """One node shared by the AlterPartition refusals: t-0 on brokers 1-3, whose first leader shut down;
    so t-0 is at leader epoch 1 and partition epoch 1, and that broker is fenced and out of the ISR."""
    with running_node(tmp_path_factory.mktemp("isr-read-only")) as n:
        epochs = n.unfenced(1, 2, 3)
        assert n.create("t", 1, 3) is None
        first = n.image.partition("t", 0).leader
        assert n.heartbeat(first, epochs[first], want_shut_down=True).should_shut_down
        reg = n.image.partition("t", 0)
        assert (reg.leader_epoch, reg.partition_epoch, len(reg.isr)) == (1, 1, 2) and first not in reg.isr
        yield n


def _follower(reg) -> int:
    return next(r for r in reg.isr if r != reg.leader)


def _fenced(reg) -> int:
    return next(r for r in reg.replicas if r not in reg.isr)


@pytest.mark.parametrize("request_from,error", [
    (lambda reg: {"partition_epoch": reg.partition_epoch - 1}, InvalidUpdateVersionError),
    (lambda reg: {"leader_epoch": reg.leader_epoch - 1}, FencedLeaderEpochError),
    (lambda reg: {"leader_epoch": reg.leader_epoch + 1}, NotControllerError),
    (lambda reg: {"partition_epoch": reg.partition_epoch + 1}, NotControllerError),
    (lambda reg: {"broker_id": _follower(reg)}, InvalidRequestError),
    (lambda reg: {"new_isr": reg.isr + (_fenced(reg),)}, IneligibleReplicaError),
    (lambda reg: {"broker_epoch": 12345}, StaleBrokerEpochError),
    (lambda reg: {"new_isr": (_follower(reg),)}, InvalidRequestError),          # without the leader
    (lambda reg: {"new_isr": reg.isr + (9,)}, InvalidRequestError),             # not a replica
], ids=["stale_partition_epoch", "stale_leader_epoch", "newer_leader_epoch", "newer_partition_epoch",
        "not_the_leader", "fenced_replica_added", "wrong_broker_epoch", "leader_missing", "not_a_replica"])
def test_alter_partition_refusals_change_nothing(isr_read_only, request_from, error):
    before = isr_read_only.image
    with pytest.raises(error):
        _alter(isr_read_only, **request_from(before.partition("t", 0)))
    assert isr_read_only.image == before


# ---- producer ids -------------------------------------------------------------------


def test_producer_id_blocks_are_consecutive(node):
    start = node.image.next_producer_id
    first = node.controller.allocate_producer_ids(2, 1000)
    second = node.controller.allocate_producer_ids(3, 1000)
    assert (first, second) == (start, start + 1000)
    assert node.image.next_producer_id == start + 2000


# ---- not the controller -------------------------------------------------------------


def test_a_controller_whose_node_stopped_leading_refuses_everything(node):
    epoch = node.unfenced(1)[1]
    node.quorum.stop()
    assert not node.controller.is_active()
    with pytest.raises(NotControllerError):
        node.heartbeat(1, epoch)
    with pytest.raises(NotControllerError):
        node.create("t", 1, 1)
    with pytest.raises(NotControllerError):
        node.delete("t")
    with pytest.raises(NotControllerError):
        node.register(2)
    with pytest.raises(NotControllerError):
        node.controller.elect_leaders(PREFERRED, None)
    with pytest.raises(NotControllerError):
        node.controller.allocate_producer_ids(1, 10)


# ---- the quorum itself --------------------------------------------------------------


def test_the_quorum_replays_its_dump_and_journal_after_a_restart(tmp_path):
    config = _config(tmp_path)
    first = start_quorum(config)
    try:
        assert first.submit([RegisterBroker(1, "127.0.0.1", 9001, "inc-1")], 5.0).applied
        assert first.submit([CreateTopic("t", "id-t", ((1,), (1,)), {"retention.ms": "5"})], 5.0).applied
        assert first.submit([AllocateProducerIds(1, 7)], 5.0).applied
        first._raft.forceLogCompaction()   # pysyncobj's own hook: what follows must come from dump + journal
        dump = config.broker(1).data_dir / "raft.dump"
        wait_until(dump.exists, "the log compaction to write raft.dump")
        assert first.submit([UnfenceBroker(1, 0)], 5.0).applied
        assert not first.submit([AllocateProducerIds(1, 0)], 5.0).applied     # a refused batch moves the offset
        before = first.image
    finally:
        first.stop()
    assert before.offset == 5 and before.next_producer_id == 7 and before.is_live(1)
    second = start_quorum(config)
    try:
        wait_until(lambda: second.image.offset >= before.offset, "the restarted quorum to replay its log")
        assert second.image == before
        outcome = second.submit([AllocateProducerIds(1, 3)], 5.0)
        assert (outcome.applied, outcome.offset, outcome.producer_id_start) == (True, 5, 7)
    finally:
        second.stop()


def test_a_malformed_batch_changes_nothing_and_the_quorum_carries_on(node):
    before = node.image
    answers = []
    node.quorum.state_machine.commit_records([{"type": "NoSuchRecord"}], callback=lambda r, e: answers.append(r))
    wait_until(lambda: answers, "the malformed batch to commit")
    assert not answers[0].applied and "malformed" in answers[0].reason
    assert node.image.offset == before.offset + 1 and node.image.brokers == before.brokers
    assert node.controller.allocate_producer_ids(1, 1) == before.next_producer_id


def test_a_stopped_quorum_refuses_to_submit(node):
    node.quorum.stop()
    with pytest.raises(CommitError):
        node.quorum.submit([AllocateProducerIds(1, 1)], 1.0)


def test_refuse_commits_ends_a_wait_for_a_commit_that_cannot_come(tmp_path):
    """A leader whose peers stopped first cannot commit; a stopping broker must not wait for it
    (metadata.commit.timeout.ms would outlast honcho's 5 s before its SIGKILL)."""
    addresses = {b: f"127.0.0.1:{free_port()}" for b in (1, 2, 3)}   # broker 3 never runs
    nodes = {}
    for b in (1, 2):
        (tmp_path / f"b{b}").mkdir()
        nodes[b] = MetadataQuorum(CLUSTER_ID, addresses[b], {p: a for p, a in addresses.items() if p != b}, b,
                                  tmp_path / f"b{b}", "unit-test-secret", (0.05, 0.1), 0.01)
        nodes[b].start()
    try:
        wait_until(lambda: any(n.is_leader() and n.leader_caught_up() for n in nodes.values()), "a leader of 2 of 3")
        leader = next(n for n in nodes.values() if n.is_leader())
        follower = next(n for n in nodes.values() if n is not leader)
        follower.stop()                                   # 1 of 3 left: nothing can commit now
        outcome: list = []

        def submit():
            try:
                outcome.append(leader.submit([AllocateProducerIds(1, 1)], 60.0))
            except CommitError as e:
                outcome.append(e)
        waiter = threading.Thread(target=submit)
        waiter.start()
        wait_until(lambda: leader._waiting, "the submit to wait for its commit")
        leader.refuse_commits()
        waiter.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], CommitError) and "stopping" in str(outcome[0]), outcome
        with pytest.raises(CommitError, match="stopping"):
            leader.submit([AllocateProducerIds(1, 1)], 60.0)   # and new ones are refused at once
    finally:
        for n in nodes.values():
            n.stop()


def test_a_batch_that_decodes_but_cannot_apply_does_not_wedge_the_quorum(node):
    # Decodes (record_from_dict builds the dataclass) but apply_batch raises TypeError on the str count.
    before = node.image
    node.quorum.state_machine.commit_records([{"type": "AllocateProducerIds", "broker_id": 1, "count": "5"}])
    try:
        outcome = node.quorum.submit([AllocateProducerIds(1, 1)], 1.0)
    except CommitError as e:
        outcome = e
    finally:
        # A wedged tick thread formats a traceback every tick; on CPython 3.11 that parses source with ast
        # and can race pytest's own ast use ("AST constructor recursion depth mismatch"): stop it first.
        node.quorum.stop()
    assert not isinstance(outcome, CommitError), outcome
    assert (outcome.applied, outcome.offset) == (True, before.offset + 1)      # the bad batch took one offset
    assert node.image.next_producer_id == before.next_producer_id + 1
