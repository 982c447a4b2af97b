"""MetadataPublisher with a real ReplicaManager and LogManager: one failing partition (issue 14, defect 5).

A publish in which one partition fails must still host the others, must not delete
their logs (nor any other) as strays, and must retry the failed partition until it
applies; only then are stray logs deleted.
"""

from __future__ import annotations

import threading

from broker.append_notifier import AppendNotifier
from broker.config import BrokerSettings
from broker.log import LogManager
from broker.metadata.image import MetadataImage, apply_batch
from broker.metadata.records import CreateTopic, RegisterBroker, UnfenceBroker
from broker.metadata_publisher import MetadataPublisher
from broker.replica_manager import ReplicaManager
from client.errors import KafkaStorageError
from client.record_batch import build_batch
from raftka_testing.cluster import wait_for


class Quorum:
    """What the publisher reads of the metadata quorum: the committed image and a change listener."""

    def __init__(self, image: MetadataImage):
        self.image = image
        self.listeners = []

    def add_listener(self, listener) -> None:
        self.listeners.append(listener)


class FailingFor:
    """Wraps LogManager.get_or_create: raises for one partition until released (a disk hiccup)."""

    def __init__(self, logs: LogManager, tp: tuple[str, int]):
        self._real = logs.get_or_create
        self.tp = tp
        self.released = threading.Event()
        self.failures = 0

    def __call__(self, topic, partition, *args, **kwargs):
        if (topic, partition) == self.tp and not self.released.is_set():
            self.failures += 1
            raise KafkaStorageError(f"injected: cannot open {topic}-{partition}")
        return self._real(topic, partition, *args, **kwargs)


def test_one_failing_partition_neither_blocks_the_others_nor_gets_logs_deleted_as_strays(tmp_path):
    settings = BrokerSettings()
    logs = LogManager(tmp_path / "broker-1", settings.log)
    logs.open(0)
    # On disk from before a restart: b-0 and b-1 (still assigned here), and gone-0 (a topic deleted meanwhile).
    for topic, partition, topic_id in (("b", 0, "id-b"), ("b", 1, "id-b"), ("gone", 0, "id-gone")):
        logs.get_or_create(topic, partition, None, 0, topic_id).append_as_leader(
            build_batch([(None, b"kept", 1)]), 0, 1)
    image, outcome = apply_batch(MetadataImage("unit"), [
        RegisterBroker(1, "127.0.0.1", 9001, "inc-1"), UnfenceBroker(1, 0),
        CreateTopic("b", "id-b", ((1,), (1,)), {})])
    assert outcome.applied
    fault = FailingFor(logs, ("b", 0))
    logs.get_or_create = fault
    replicas = ReplicaManager(1, logs, Quorum(image), settings, AppendNotifier())
    publisher = MetadataPublisher(Quorum(image), replicas, caught_up=lambda image: True)
    publisher.start()
    try:
        wait_for(lambda: fault.failures >= 2, 10, "b-0 to fail and be retried")
        assert replicas.high_watermarks().keys() == {("b", 1)}, "b-1 was not hosted because b-0 failed"
        assert publisher.first_publish.is_set()
        on_disk = set(logs.all())
        assert {("b", 1), ("gone", 0)} <= on_disk, f"logs deleted while a partition was failing: {on_disk}"
        assert logs.get("b", 1).log_end_offset == 1
        fault.released.set()
        wait_for(lambda: ("b", 0) in replicas.high_watermarks(), 10, "b-0 hosted after the fault cleared")
        wait_for(lambda: ("gone", 0) not in logs.all(), 10, "the stray log deleted once the diff applied whole")
        assert set(replicas.high_watermarks()) == {("b", 0), ("b", 1)}
        assert logs.get("b", 0).log_end_offset == 1 and logs.get("b", 1).log_end_offset == 1
    finally:
        publisher.stop()
        logs.close()
