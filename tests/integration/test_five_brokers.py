"""Five real brokers, of which only 1-3 vote in the metadata quorum (controller_quorum_voters): 4 and 5 observe.

Kafka separates controllers from brokers (process.roles); here every broker embeds a quorum node, and
the ones left out of the voters are pysyncobj read-only nodes (broker/metadata/quorum.py). The test
checks what that must give: the controller is always a voter, the observers bind no Raft port yet
apply the metadata, lead and follow partitions, and take acks=all writes; and when the controller is
killed (-9, by PID), the two voters left elect a new one among themselves while the observers keep
serving. Every wait is a condition polled against a deadline.
"""

from __future__ import annotations

import signal
import socket

import pytest

from client import Admin, Producer
from raftka_testing.cluster import partitions, read_all
from tests.integration.cluster import Cluster, log_events, wait_for, wait_metadata, write_cluster

pytestmark = pytest.mark.integration

VOTERS, OBSERVERS = (1, 2, 3), (4, 5)
# min ISR 2 (acks=all survives one dead replica) and short timers so the dead controller is fenced quickly.
CONFIG = {"min.insync.replicas": 2, "replica.lag.time.max.ms": 2000, "broker.session.timeout.ms": 2000}
TOPIC, PARTITIONS = "five", 5   # five partitions on five brokers: round robin gives each broker one to lead


def produce(cluster: Cluster, via: int, prefix: str, count: int) -> dict[str, tuple[int, int]]:
    """``count`` records sent with acks=all, bootstrapping from broker ``via`` only; value -> (partition, offset)."""
    with Producer(cluster.brokers[via].bootstrap, acks="all", delivery_timeout_ms=30000) as producer:
        futures = {f"{prefix}-{i}": producer.send(TOPIC, f"{prefix}-{i}".encode(), partition=i % PARTITIONS)
                   for i in range(count)}
        producer.flush(30)
    return {value: (f.result(0).partition, f.result(0).offset) for value, f in futures.items()}


def fully_led(response) -> bool:
    """Every partition of TOPIC led, with a full ISR (RF 3)."""
    parts = [p for t in response.topics if t.name == TOPIC for p in t.partitions]
    return len(parts) == PARTITIONS and all(p.leader_id > 0 and len(p.isr) == 3 for p in parts)


def led_by_live(cluster: Cluster, watcher: int, dead: int) -> bool:
    """``watcher`` shows every partition of TOPIC led by a broker other than ``dead``."""
    parts = partitions(cluster.brokers[watcher], TOPIC)
    return parts is not None and all(p.leader_id not in (-1, dead) for p in parts.values())


def fences_of(cluster: Cluster, broker: int) -> list[dict]:
    """The broker_fenced events of ``broker`` (each in the log of the controller that fenced it), oldest first."""
    events = (e for b in cluster.brokers.values() for e in log_events(b, "broker_fenced") if e["broker"] == broker)
    return sorted(events, key=lambda e: e["timestamp"])


def test_five_brokers_three_voters_the_controller_killed_and_the_observers_serving(tmp_path):
    cluster = write_cluster(tmp_path, 5, CONFIG, voters=list(VOTERS))
    try:
        cluster.start_all(timeout=30)
        controller = cluster.wait_controller(timeout=15)
        assert controller in VOTERS
        for i in OBSERVERS:
            assert log_events(cluster.brokers[i], "quorum_observer"), f"broker {i} should run as an observer"
            with pytest.raises(ConnectionRefusedError):   # a read-only node binds no Raft port
                socket.create_connection(("127.0.0.1", cluster.brokers[i].raft_port), timeout=2).close()

        with Admin(cluster.brokers[4].bootstrap) as admin:   # an admin request through an observer
            admin.create_topic(TOPIC, PARTITIONS, 3)
        led = wait_metadata(cluster.brokers[5], fully_led, 20, f"{TOPIC}: {PARTITIONS} partitions led, full ISR",
                            topics=[TOPIC])
        leaders = {p.leader_id for p in led.topics[0].partitions}
        assert set(OBSERVERS) <= leaders, f"observers should lead partitions too: leaders {leaders}"

        sent = produce(cluster, 4, "before", 50)

        cluster.brokers[controller].kill()   # kill -9 of its own PID, and reaped
        survivors = [b for b in cluster.brokers.values() if b.alive()]
        new = cluster.wait_controller(survivors, timeout=20, exclude=(controller,),
                                      alive=set(cluster.brokers) - {controller})
        assert new in VOTERS and new != controller
        # Every partition the dead controller led has a live leader again, as the observers see it.
        wait_for(lambda: led_by_live(cluster, 4, controller) and led_by_live(cluster, 5, controller), 20,
                 f"observers 4 and 5 to show every partition of {TOPIC} led by a live broker")

        sent |= produce(cluster, 4, "after", 50)
        ends = {p: 1 + max(o for q, o in sent.values() if q == p) for p in range(PARTITIONS)}
        got = read_all(cluster.brokers[5].bootstrap, TOPIC, ends)   # consumed bootstrapping from observer 5
        values = [v.decode() for records in got.values() for _, v in records]
        assert sorted(values) == sorted(sent), "every acknowledged record, each once"
        assert log_events(cluster.brokers[new], "controller_activated")
        assert not any(log_events(cluster.brokers[i], "controller_activated") for i in OBSERVERS)

        # The controller watches each observer's own Raft link, as a voter's (ObserverTransport): a paused
        # observer keeps its link up, so only the session timeout fences it; a killed one drops the link and
        # is fenced for that, within heartbeats. Restarted, it is the same observer again.
        observer = cluster.brokers[5]
        earlier = len(fences_of(cluster, 5))
        observer.signal(signal.SIGSTOP)
        try:
            fenced = wait_for(lambda: fences_of(cluster, 5)[earlier:], 10, "the controller to fence paused observer 5")
        finally:
            observer.signal(signal.SIGCONT)
        assert fenced[0]["reason"] == "session_timeout", fenced
        observer.wait_ready()
        # Its own Metadata may still be the one from before its fence: wait until every broker sees it unfenced.
        cluster.wait_controller(survivors, timeout=20, exclude=(controller,), alive=set(cluster.brokers) - {controller})
        observer.kill()
        fenced = wait_for(lambda: fences_of(cluster, 5)[earlier + 1:], 10, "the controller to fence killed observer 5")
        assert fenced[0]["reason"] == "connection_lost", fenced
        observer.start()   # waits until it answers, registered and unfenced
        print(f"[five brokers] controller {controller} killed, {new} elected; {len(sent)} acks=all records "
              f"through observer 4, read back through observer 5")
    finally:
        cluster.stop_all()
