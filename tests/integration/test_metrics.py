"""Prometheus metrics of real brokers, scraped over HTTP: they move with real traffic and a real kill -9.

A 3-broker cluster with a metrics_port each (write_cluster(metrics=True)); every check scrapes with
urllib and parses with prometheus_client's own parser. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from client.producer import Producer
from raftka_testing.cluster import create_ready, partitions, read_all
from tests.integration.cluster import REPO, BrokerProcess, Cluster, metadata, wait_for, write_cluster

N = 20
VALUE = b"metered-record-%02d"

Samples = dict[tuple[str, frozenset], float]


def scrape(broker: BrokerProcess) -> Samples:
    with urllib.request.urlopen(broker.metrics_url, timeout=3) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(scraped: dict[int, Samples], name: str, **labels: str) -> float:
    return sum(sample(s, name, **labels) for s in scraped.values())


def scrape_all(brokers: list[BrokerProcess]) -> dict[int, Samples]:
    return {b.broker_id: scrape(b) for b in brokers}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three brokers serving metrics; killed at the end, by PID."""
    c = write_cluster(tmp_path_factory.mktemp("metrics"), 3, metrics=True)
    try:
        yield c.start_all()
    finally:
        c.stop_all()


def leader_of(cluster: Cluster, topic: str, partition: int = 0) -> BrokerProcess:
    parts = wait_for(lambda: partitions(cluster.running()[0], topic), 10, f"{topic}'s metadata")
    return cluster.brokers[parts[partition].leader_id]


def test_state_gauges_add_up_across_the_cluster(cluster):
    create_ready(cluster, "gauged", 3)
    brokers = list(cluster.brokers.values())

    def settled() -> dict[int, Samples] | None:
        scraped = scrape_all(brokers)
        ok = (total(scraped, "kafka_server_replicamanager_leadercount") == 3
              and total(scraped, "kafka_server_replicamanager_partitioncount") == 9
              and total(scraped, "kafka_controller_kafkacontroller_activecontrollercount") == 1)
        return scraped if ok else None
    scraped = wait_for(settled, 10, "3 leaders, 9 replicas and one active controller in the brokers' metrics")
    controller = cluster.wait_controller()
    assert sample(scraped[controller], "kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert total(scraped, "kafka_server_replicamanager_underreplicatedpartitions") == 0
    assert total(scraped, "kafka_controller_kafkacontroller_offlinepartitionscount") == 0
    terms = {sample(s, "raftka_raft_term") for s in scraped.values()}
    assert len(terms) == 1 and terms.pop() >= 1, "the brokers disagree on the Raft term"
    # The controller committed the topic's creation through the quorum.
    assert sample(scraped[controller], "raftka_raft_commit_latency_seconds_count") > 0


def test_produce_and_consume_move_the_leaders_topic_counters(cluster):
    topic = "metered"
    create_ready(cluster, topic, 3)
    leader = leader_of(cluster, topic)
    before = scrape(leader)
    with Producer(cluster.bootstrap, acks="all", linger_ms=2) as producer:
        futures = [producer.send(topic, VALUE % i, partition=0) for i in range(N)]
        producer.flush(15)
    assert all(f.result(10).offset >= 0 for f in futures)
    after = scrape(leader)
    # Exactly N: an idempotent producer's resent duplicate is not appended, so not counted.
    assert (sample(after, "kafka_server_brokertopicmetrics_messagesin_total", topic=topic)
            - sample(before, "kafka_server_brokertopicmetrics_messagesin_total", topic=topic)) == N
    assert (sample(after, "kafka_server_brokertopicmetrics_bytesin_total", topic=topic)
            - sample(before, "kafka_server_brokertopicmetrics_bytesin_total", topic=topic)) >= N * len(VALUE % 0)
    produce_count = "kafka_network_requestmetrics_totaltimems_count"
    assert (sample(after, produce_count, request="Produce", acks="-1")
            > sample(before, produce_count, request="Produce", acks="-1"))
    assert sample(after, produce_count, request="FetchFollower", acks="") > 0   # followers pull from it

    got = read_all(cluster.bootstrap, topic, {0: N}, timeout=15)
    assert [v for _, v in got[0]] == [VALUE % i for i in range(N)]
    consumed = scrape(leader)
    assert (sample(consumed, "kafka_server_brokertopicmetrics_bytesout_total", topic=topic)
            - sample(after, "kafka_server_brokertopicmetrics_bytesout_total", topic=topic)) >= N * len(VALUE % 0)
    assert (sample(consumed, produce_count, request="FetchConsumer", acks="")
            > sample(after, produce_count, request="FetchConsumer", acks=""))


def test_garbage_on_the_metrics_port_hurts_nothing(cluster):
    broker = cluster.brokers[1]
    garbage = [b"\x00\xff\xfe GARBAGE \x16\x03\x01\r\n\r\n", b"NOT-HTTP /metrics HTTP/9.9\r\n\r\n",
               b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", os.urandom(4096)]
    for payload in garbage:
        with socket.create_connection(("127.0.0.1", broker.metrics_port), timeout=3) as s:
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
            except OSError:
                pass   # answered or cut as the server pleases: only the broker's health matters
    idle = socket.create_connection(("127.0.0.1", broker.metrics_port), timeout=3)   # half a request, left open
    idle.sendall(b"GET /metr")
    try:
        assert sample(scrape(broker), "kafka_controller_kafkacontroller_activecontrollercount") in (0, 1)
        assert broker.alive()
        assert metadata(broker) is not None   # the client port still answers
        assert "Traceback" not in broker.log()
    finally:
        idle.close()


def test_a_killed_leader_shows_in_the_survivors_metrics(cluster):
    topic = "killed"
    create_ready(cluster, topic, 3)
    victim = leader_of(cluster, topic)
    survivors = [b for b in cluster.brokers.values() if b is not victim]
    before = scrape_all(survivors)
    victim.kill()

    def rose(name: str, **labels: str):
        def check() -> bool:
            now = scrape_all(survivors)
            return any(sample(now[b], name, **labels) > sample(before[b], name, **labels) for b in now)
        return check
    wait_for(rose("kafka_server_replicamanager_leadercount"), 10, "a survivor to lead more partitions")
    wait_for(lambda: total(scrape_all(survivors), "kafka_server_replicamanager_underreplicatedpartitions") > 0,
             10, "a survivor to report under-replicated partitions")
    wait_for(rose("kafka_server_replicamanager_isrshrinks_total"), 10, "a survivor's ISR shrinks to rise")
    wait_for(lambda: (total(scrape_all(survivors), "kafka_controller_controllerstats_leaderelectionrateandtimems_count")
                      > total(before, "kafka_controller_controllerstats_leaderelectionrateandtimems_count")),
             10, "the controller's leader elections to rise")
    after = scrape_all(survivors)
    assert total(after, "kafka_controller_kafkacontroller_activecontrollercount") == 1


def test_a_metrics_port_in_use_is_one_line_and_exit_2(tmp_path):
    broker = write_cluster(tmp_path, 1, metrics=True).brokers[1]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", broker.metrics_port))
        taken.listen()
        done = subprocess.run([sys.executable, "-m", "broker", "--config", str(broker.config_path), "--id", "1"],
                              capture_output=True, timeout=20, cwd=REPO,
                              env=dict(os.environ, LOG_FORMAT="json", GRPC_VERBOSITY="ERROR"))
    lines = [line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, lines)
    assert lines == [f"kbroker: error: cannot listen on 127.0.0.1:{broker.metrics_port} (metrics_port): "
                     "the port is in use"]
    assert not (broker.data_dir / "broker.pid").exists()
