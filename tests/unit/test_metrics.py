"""broker/metrics.py without processes or sockets: the state gauges from a broker's state, the event
counters and histograms, their names as the JMX exporter renders Kafka's, and metrics_port in cluster.toml.

Brokers 1 and 2 of real ReplicaManagers (tests/unit/test_replica_manager_replication.Pair) share
metrics.of(1) / of(2) with every other unit test in the process, so those checks compare deltas.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from broker import metrics
from broker.config import ConfigError, load_cluster_config
from broker.metadata.image import MetadataImage, PartitionRegistration, TopicImage
from broker.metadata.records import ChangePartition, FenceBroker
from broker.metrics import BrokerMetrics, LiveBrokerState, elected_partitions
from broker.partition import FetchResult, ProduceResult
from client.errors import NotEnoughReplicasError, NotLeaderOrFollowerError, RequestTimedOutError
from tests.unit.test_replica_manager_replication import TOPIC, TOPIC_ID, make_pair, pair  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]

GAUGES = ["kafka_server_replicamanager_underreplicatedpartitions", "kafka_server_replicamanager_leadercount",
          "kafka_server_replicamanager_partitioncount", "kafka_controller_kafkacontroller_activecontrollercount",
          "kafka_controller_kafkacontroller_offlinepartitionscount", "kafka_server_replicafetchermanager_maxlag"]


def value(m: BrokerMetrics, name: str, **labels: str) -> float:
    found = m.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


# ---- the state gauges, from fakes of the broker's state ------------------------------------------------


@dataclass
class FakeState:
    is_leader: bool
    isr: tuple[int, ...]
    replicas: tuple[int, ...] = (1, 2, 3)


@dataclass
class FakeLog:
    log_end_offset: int = 0


@dataclass
class FakePartition:
    state: FakeState
    log: FakeLog = field(default_factory=FakeLog)
    following: tuple[int, int] | None = None   # (leader, epoch) it follows

    def follows(self, leader_id: int, leader_epoch: int) -> bool:
        return self.following == (leader_id, leader_epoch)


@dataclass
class FakeSource:
    parts: dict
    active: bool = False
    offline: int = 0
    term: int = 3

    def hosted_partitions(self) -> dict:
        return dict(self.parts)

    def controller_active(self) -> bool:
        return self.active

    def offline_partitions(self) -> int:
        return self.offline

    def raft_term(self) -> int:
        return self.term


def test_state_gauges_are_read_from_the_broker_state_at_each_scrape():
    m = BrokerMetrics(901)
    source = FakeSource({("a", 0): FakePartition(FakeState(True, (1, 2, 3))),
                         ("a", 1): FakePartition(FakeState(True, (1, 2))),
                         ("b", 0): FakePartition(FakeState(False, (2, 1, 3)), following=(2, 4))})
    m.attach(source)
    assert value(m, "kafka_server_replicamanager_leadercount") == 2
    assert value(m, "kafka_server_replicamanager_partitioncount") == 3
    assert value(m, "kafka_server_replicamanager_underreplicatedpartitions") == 1
    assert value(m, "kafka_controller_kafkacontroller_activecontrollercount") == 0
    assert value(m, "raftka_raft_term") == 3
    source.term = 4                            # an election: the next scrape shows it
    assert value(m, "raftka_raft_term") == 4
    source.parts[("a", 0)].state.isr = (1,)   # a change in the state shows at the next scrape, nothing to update
    source.parts[("c", 0)] = FakePartition(FakeState(True, (1,), (1,)))
    assert value(m, "kafka_server_replicamanager_underreplicatedpartitions") == 2
    assert value(m, "kafka_server_replicamanager_leadercount") == 3


def test_offline_partitions_are_the_active_controllers_only():
    m = BrokerMetrics(902)
    source = FakeSource({}, active=False, offline=4)
    m.attach(source)
    assert value(m, "kafka_controller_kafkacontroller_offlinepartitionscount") == 0
    source.active = True
    assert value(m, "kafka_controller_kafkacontroller_offlinepartitionscount") == 4
    assert value(m, "kafka_controller_kafkacontroller_activecontrollercount") == 1


def test_live_state_counts_partitions_without_a_leader_in_the_controllers_image():
    image = MetadataImage("c", topics={"t": TopicImage("t", (
        PartitionRegistration((1, 2), (1,), -1), PartitionRegistration((1, 2), (1, 2), 1),
        PartitionRegistration((2, 1), (2,), -1)), topic_id="id-t")})

    @dataclass
    class Controller:
        image: MetadataImage

        def is_active(self) -> bool:
            return True

    assert LiveBrokerState(None, Controller(image)).offline_partitions() == 2


def test_max_lag_counts_only_partitions_still_followed_from_that_leader_and_epoch():
    m = BrokerMetrics(903)
    followed = FakePartition(FakeState(False, (2, 1)), FakeLog(40), following=(2, 7))
    moved = FakePartition(FakeState(False, (3, 1)), FakeLog(0), following=(3, 8))
    source = FakeSource({("a", 0): followed, ("a", 1): moved})
    m.attach(source)
    lag = "kafka_server_replicafetchermanager_maxlag"
    assert value(m, lag, clientId="Replica") == 0          # no answer yet: nothing known to lag
    m.fetched_from_leader(("a", 0), 2, 7, 100)
    m.fetched_from_leader(("a", 1), 3, 7, 1000)           # an answer from an epoch it no longer follows at
    m.fetched_from_leader(("gone", 0), 2, 7, 5000)        # a partition no longer hosted
    assert value(m, lag, clientId="Replica") == 60
    followed.log.log_end_offset = 100                       # caught up: computed from its log end at the scrape
    assert value(m, lag, clientId="Replica") == 0
    followed.following = None                               # it leads now
    m.fetched_from_leader(("a", 0), 2, 7, 900)
    assert value(m, lag, clientId="Replica") == 0


def test_the_gauges_exist_before_the_broker_is_attached():
    families = {f.name for f in text_string_to_metric_families(generate_latest(BrokerMetrics(904).registry).decode())}
    assert set(GAUGES) <= families


# ---- the events -----------------------------------------------------------------------------------------


def test_names_are_the_jmx_exporters_renderings_of_kafkas_mbeans():
    m = BrokerMetrics(905)
    m.appended_as_leader("t", 3, 300)
    m.produce_answered(-1, 0.0, [ProduceResult("t", 0, RequestTimedOutError("slow"))])
    m.fetch_answered(False, 0.0, [FetchResult("t", 0, records=b"x")])
    m.isr_changed(1, (1, 2), (1,))
    m.isr_changed(1, (1,), (1, 2))
    m.leader_elections.observe(1.0)
    m.metadata_committed(0.0)
    samples = {s.name for f in text_string_to_metric_families(generate_latest(m.registry).decode())
               for s in f.samples}
    assert {"kafka_server_brokertopicmetrics_messagesin_total", "kafka_server_brokertopicmetrics_bytesin_total",
            "kafka_server_brokertopicmetrics_bytesout_total",
            "kafka_server_brokertopicmetrics_failedproducerequests_total",
            "kafka_server_replicamanager_isrshrinks_total", "kafka_server_replicamanager_isrexpands_total",
            "kafka_network_requestmetrics_totaltimems_bucket", "kafka_network_requestmetrics_totaltimems_count",
            "kafka_controller_controllerstats_leaderelectionrateandtimems_count",
            "raftka_raft_commit_latency_seconds_count", *GAUGES} <= samples


def test_produce_answers_time_by_acks_and_count_failures_but_not_stale_metadata():
    m = BrokerMetrics(906)
    count = "kafka_network_requestmetrics_totaltimems_count"
    failed = "kafka_server_brokertopicmetrics_failedproducerequests_total"
    m.produce_answered(-1, 0.0, [ProduceResult("t", 0), ProduceResult("t", 1, NotEnoughReplicasError("isr")),
                                 ProduceResult("u", 0, NotLeaderOrFollowerError("moved"))])
    m.produce_answered(1, 0.0, [ProduceResult("t", 0)])
    assert value(m, count, request="Produce", acks="-1") == 1
    assert value(m, count, request="Produce", acks="1") == 1
    assert value(m, failed, topic="t") == 1
    assert value(m, failed, topic="u") == 0


def test_request_time_is_in_milliseconds():
    m = BrokerMetrics(907)
    m.produce_answered(-1, time.monotonic() - 0.25, [])
    total = value(m, "kafka_network_requestmetrics_totaltimems_sum", request="Produce", acks="-1")
    assert 250 <= total < 1000
    assert value(m, "kafka_network_requestmetrics_totaltimems_bucket", request="Produce", acks="-1", le="100.0") == 0


def test_bytes_out_are_consumers_fetches_only():
    m = BrokerMetrics(908)
    m.fetch_answered(False, 0.0, [FetchResult("t", 0, records=b"12345"), FetchResult("t", 1)])
    m.fetch_answered(True, 0.0, [FetchResult("t", 0, records=b"1234567890")])
    assert value(m, "kafka_server_brokertopicmetrics_bytesout_total", topic="t") == 5
    assert value(m, "kafka_network_requestmetrics_totaltimems_count", request="FetchConsumer", acks="") == 1
    assert value(m, "kafka_network_requestmetrics_totaltimems_count", request="FetchFollower", acks="") == 1


@pytest.mark.parametrize("old_epoch, old, new, shrinks, expands", [
    (3, (1, 2, 3), (1, 2), 1, 0),
    (3, (1, 2, 3), (2, 3), 1, 0),      # a new leader: the dead one left the ISR
    (3, (1, 2), (1, 2, 3), 0, 1),
    (3, (1, 2), (1, 3), 1, 1),
    (3, (1, 2), (2, 1), 0, 0),         # reordered, nothing changed
    (-1, (), (1, 2, 3), 0, 0),         # newly hosted: it knew no ISR before
])
def test_isr_changes_count_once_per_committed_change(old_epoch, old, new, shrinks, expands):
    m = BrokerMetrics(909)
    m.isr_changed(old_epoch, old, new)
    assert value(m, "kafka_server_replicamanager_isrshrinks_total") == shrinks
    assert value(m, "kafka_server_replicamanager_isrexpands_total") == expands


def _image(*regs: PartitionRegistration) -> MetadataImage:
    return MetadataImage("c", topics={"t": TopicImage("t", tuple(regs), topic_id="id-t")})


def test_an_election_is_a_partition_that_got_a_new_live_leader_from_this_batch():
    before = _image(PartitionRegistration((1, 2, 3), (1, 2, 3), 1, 0, 0),
                    PartitionRegistration((1, 2, 3), (1, 2, 3), 2, 0, 0),
                    PartitionRegistration((1,), (1,), 1, 0, 0),
                    PartitionRegistration((1, 2), (1, 2), 1, 0, 0))
    after = _image(PartitionRegistration((1, 2, 3), (2, 3), 2, 1, 1),      # elected: 1 -> 2
                   PartitionRegistration((1, 2, 3), (2, 3), 2, 0, 1),      # ISR only
                   PartitionRegistration((1,), (1,), -1, 1, 1),            # offline, not an election
                   PartitionRegistration((1, 2), (1, 2), 1, 0, 0))         # its record did not apply
    records = [FenceBroker(1, 5), ChangePartition("t", "id-t", 0, 0, 2, (2, 3)),
               ChangePartition("t", "id-t", 1, 0, 2, (2, 3)), ChangePartition("t", "id-t", 2, 0, -1, (1,)),
               ChangePartition("t", "id-t", 3, 7, 2, (2,))]
    assert list(elected_partitions(before, after, records)) == [("t", 0)]
    m = BrokerMetrics(910)
    m.controller_committed(before, after, records, 0.0)
    assert value(m, "kafka_controller_controllerstats_leaderelectionrateandtimems_count") == 1


def test_one_registry_per_broker_never_the_global_one():
    from prometheus_client import REGISTRY
    assert metrics.of(911) is metrics.of(911)
    assert metrics.of(911).registry is not metrics.of(912).registry
    assert metrics.of(911).registry is not REGISTRY
    metrics.of(911).appended_as_leader("t", 1, 10)
    assert value(metrics.of(912), "kafka_server_brokertopicmetrics_messagesin_total", topic="t") == 0


# ---- the hooks, through real ReplicaManagers ------------------------------------------------------------


def test_a_leaders_append_counts_records_and_bytes_in(pair):
    m = metrics.of(1)
    messages, size = "kafka_server_brokertopicmetrics_messagesin_total", "kafka_server_brokertopicmetrics_bytesin_total"
    before = value(m, messages, topic=TOPIC), value(m, size, topic=TOPIC)
    assert pair.produce(1, b"a", b"b", b"c").error is None
    assert value(m, messages, topic=TOPIC) == before[0] + 3
    assert value(m, size, topic=TOPIC) > before[1]
    follower_before = value(metrics.of(2), messages, topic=TOPIC)
    assert pair.produce(2, b"d").error is not None          # not the leader: nothing appended, nothing counted
    assert value(metrics.of(2), messages, topic=TOPIC) == follower_before
    assert value(m, messages, topic=TOPIC) == before[0] + 3


def test_committed_isr_changes_count_on_the_leader_after_the_change(pair):
    shrinks, expands = "kafka_server_replicamanager_isrshrinks_total", "kafka_server_replicamanager_isrexpands_total"
    one, two = metrics.of(1), metrics.of(2)
    start = {b: (value(metrics.of(b), shrinks), value(metrics.of(b), expands)) for b in (1, 2)}
    pair.move(1, (1,))
    assert (value(one, shrinks), value(one, expands)) == (start[1][0] + 1, start[1][1])
    pair.move(1, (1, 2))
    assert (value(one, shrinks), value(one, expands)) == (start[1][0] + 1, start[1][1] + 1)
    pair.move(2, (2,))                                       # broker 1 died: 2 leads, without 1
    assert value(two, shrinks) == start[2][0] + 1
    assert value(one, shrinks) == start[1][0] + 1            # a follower now: not its count


def test_the_live_state_reads_a_real_replica_manager(pair):
    class Controller:
        image = pair.metadata.image

        def is_active(self) -> bool:
            return False

    m = BrokerMetrics(913)
    m.attach(LiveBrokerState(pair.brokers[1].replicas, Controller()))
    assert value(m, "kafka_server_replicamanager_leadercount") == 1
    assert value(m, "kafka_server_replicamanager_partitioncount") == 1
    assert value(m, "kafka_server_replicamanager_underreplicatedpartitions") == 0
    pair.move(1, (1,))
    assert value(m, "kafka_server_replicamanager_underreplicatedpartitions") == 1
    follower = BrokerMetrics(914)
    follower.attach(LiveBrokerState(pair.brokers[2].replicas, Controller()))
    assert value(follower, "kafka_server_replicamanager_leadercount") == 0
    pair.produce(1, b"a", b"b")
    follower.fetched_from_leader((TOPIC, 0), 1, pair.epoch, pair.brokers[1].log.log_end_offset)
    assert value(follower, "kafka_server_replicafetchermanager_maxlag", clientId="Replica") == 2
    pair.replicate()
    assert value(follower, "kafka_server_replicafetchermanager_maxlag", clientId="Replica") == 0


# ---- metrics_port in cluster.toml -----------------------------------------------------------------------


def _toml(tmp_path: Path, broker1_extra: str = "", broker2_extra: str = "") -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text('cluster_secret = "secret-for-tests"\n'
                    f"[[broker]]\nid = 1\nport = 9001\nraft_port = 9002\ninter_broker_port = 9003\n{broker1_extra}\n"
                    f"[[broker]]\nid = 2\nport = 9011\nraft_port = 9012\ninter_broker_port = 9013\n{broker2_extra}\n")
    return path


def test_metrics_port_is_optional_and_zero_means_none(tmp_path):
    cfg = load_cluster_config(_toml(tmp_path, "metrics_port = 9096", "metrics_port = 0"))
    assert [b.metrics_port for b in cfg.brokers] == [9096, 0]
    assert [b.metrics_port for b in load_cluster_config(_toml(tmp_path)).brokers] == [0, 0]


@pytest.mark.parametrize("extra1, extra2, words", [
    ("metrics_port = 70000", "", "metrics_port = 70000 is out of range"),
    ('metrics_port = "web"', "", "metrics_port must be an integer"),
    ("metrics_port = 9001", "", "port = metrics_port = 9001; they must differ"),
    ("metrics_port = 9096", "metrics_port = 9096", "port 127.0.0.1:9096 is used by broker 1 and broker 2"),
    ("metrics_port = 9011", "", "port 127.0.0.1:9011 is used by broker 1 and broker 2"),
])
def test_bad_metrics_port_is_one_line(tmp_path, extra1, extra2, words):
    with pytest.raises(ConfigError) as e:
        load_cluster_config(_toml(tmp_path, extra1, extra2))
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_the_repository_cluster_toml_serves_metrics_on_the_96_ports(monkeypatch):
    monkeypatch.delenv("RAFTKA_CLUSTER_SECRET", raising=False)
    cfg = load_cluster_config(REPO / "cluster.toml")
    assert [b.metrics_port for b in cfg.brokers] == [9096, 19096, 29096]
